"""The refit models of ``ExperimentConfig(refit=True)``: which kind each is, how it is saved and read back."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError
from ..progress import read_record, write_record
from ..utils.files import atomic_write
from .files import _CHECKPOINT_TAG, REFIT_RECORD
from .heads import head_unsaved_reason
from .probes import FrozenProbe, _read_probe, _write_probe

if TYPE_CHECKING:
    pass


@dataclass
class RefitKind:
    """What a model config's refit is and whether it can be saved."""

    kind: str  # "fine_tuned", "frozen_probe", "scratch" or "classical"
    unsaved: str | None  # why it stays in memory only (None: saved)


def refit_kind(model_config: Any, head: Any = None) -> RefitKind:
    """The kind of a model's refit and why it would not be saved, from its config (before any compute)."""

    kind = getattr(model_config, "kind", None)  # a config's tag (a model holding an object may give only that)
    if kind == "neural_finetune":
        return RefitKind("fine_tuned", None)
    if kind == "frozen_backbone":
        reason = head_unsaved_reason(head) if head is not None else None
        return RefitKind("frozen_probe", None if reason is None else f"kept in memory only: {reason}")
    if kind == "scratch":
        return RefitKind("scratch", None)  # a checkpoint folder, as a fine-tuner's
    return RefitKind(
        "classical",
        "kept in memory only: a classical window estimator (a scikit-learn pipeline) has no format neurofm "
        "writes without pickle",
    )


def refit_checkpoint_folder(estimator: Any) -> Path:
    """Where a fine-tuner's (or a from-scratch network's) refit is written when the run has no output folder: its
    checkpoints folder."""
    cfg = estimator.config
    name = f"{cfg.model}-scratch" if _is_scratch(cfg) else cfg.model_key
    return estimator._checkpoint_root(cfg) / f"{name}-refit-{uuid.uuid4().hex[:12]}"


def _is_scratch(config: Any) -> bool:
    return getattr(config, "kind", None) == "scratch"


def save_fine_tuned(estimator: Any, folder: Path) -> dict[str, Any]:
    """Write a fitted fine-tuner as a checkpoint folder (state ``best``; PEFT adapters merged); what it trained on.

    Runs where the model was fitted (a worker), so the weights never travel
    through the engine. A quantised backbone keeps only what training
    changed (rebuilt from its source weights on reload, as its fold
    checkpoints are). A from-scratch network (``ScratchTrainer``) is written
    as its own checkpoint folder (``ScratchTrainer.save_checkpoint``).
    """
    if _is_scratch(estimator.config):
        estimator.save_checkpoint(folder)
        return _trained_on(estimator)
    from ..adapters import PEFT_MODES  # heavy: torch
    from ..estimators.checkpoints import write_checkpoints  # heavy: torch and braindecode load on use

    cfg = estimator.config
    update: dict[str, Any] = {"checkpoints": cfg.checkpoints.model_copy(update={"save": "best", "directory": None})}
    if cfg.train_mode in PEFT_MODES and not cfg.quantized:
        # Merged, as the export writes it: the refit model kept in memory, saved, reloaded and exported is one model.
        update["lora"] = cfg.lora.model_copy(update={"save": "merged"})
    outcome = SimpleNamespace(
        states={"best": None},
        history=estimator.history_,
        best_epoch=estimator.best_epoch_,
        best_value=estimator.best_value_,
    )
    write_checkpoints(estimator, outcome, cfg.model_copy(update=update), Path(folder))
    return _trained_on(estimator)


def _trained_on(estimator: Any) -> dict[str, Any]:
    return {
        "failed": bool(estimator.failed_),
        "n_train": int(estimator.n_train_),
        "n_validation": int(estimator.n_val_),
        "best_epoch": estimator.best_epoch_,
    }


def _holds_scratch(folder: Path) -> bool:
    """Whether a checkpoint folder holds a from-scratch network (its ``config.json`` names a scratch config)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(config, dict) and config.get("kind") == "scratch"


def load_fine_tuned(folder: Path, device: str | None = None) -> Any:
    """A fine-tuner (or a from-scratch network) rebuilt from a refit or fold checkpoint folder (``device=None``:
    its config's, else the CPU)."""
    if _holds_scratch(folder):
        from ..estimators.scratch import ScratchTrainer as cls  # heavy: torch and braindecode load on use
    else:
        from ..estimators.neural import NeuralFineTuner as cls  # heavy: torch and braindecode load on use

    paths = {p.stem for p in Path(folder).glob("*.safetensors")}
    tag = _CHECKPOINT_TAG if _CHECKPOINT_TAG in paths or not paths else sorted(paths)[-1]
    try:
        return cls.from_checkpoint(folder, tag=tag, device=device)
    except ConfigError:
        if device is not None:
            raise
        return cls.from_checkpoint(folder, tag=tag, device="cpu")  # trained on a GPU this machine lacks


def _digests(folder: Path, names: list[str]) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sorted(names)}


def write_refit_record(folder: Path, name: str, kind: str, key: Any = None) -> None:
    """Mark a saved refit model complete: the digests of its files, written last (with the run's key)."""
    files = [p.name for p in folder.iterdir() if p.is_file() and p.name not in (REFIT_RECORD, "README.md")]
    write_record(folder / REFIT_RECORD, {"model": name, "kind": kind, "files": _digests(folder, files)}, key)


def refit_on_record(folder: Path, name: str, kind: str, key: Any = None) -> bool:
    """Whether ``folder`` holds a complete saved refit of model ``name`` whose files are intact."""
    record = read_record(folder / REFIT_RECORD, key) if (folder / REFIT_RECORD).is_file() else None
    if record is None or record.get("model") != name or record.get("kind") != kind:
        return False
    try:
        return _digests(folder, list(record["files"])) == record["files"]
    except OSError:
        return False


def save_probe(folder: Path, probe: FrozenProbe) -> None:
    """Write a frozen probe's refit into ``folder`` (the ``frozen-probe`` layout, without a model card)."""
    _write_probe(folder, probe)


def load_probe(folder: Path, embedder: Any = None, **options: Any) -> FrozenProbe:
    """A saved frozen probe; ``embedder``: this run's parameters (resuming), else those written."""
    return _read_probe(Path(folder), embedder=embedder, **options)


def copy_refit(source: Path, target: Path) -> None:
    """Copy a saved refit folder's files (record last, so a copy cut short is never taken for complete)."""
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in source.iterdir() if p.is_file())
    for path in sorted(files, key=lambda p: p.name == REFIT_RECORD):
        atomic_write(target / path.name, lambda tmp, path=path: shutil.copyfile(path, tmp))
