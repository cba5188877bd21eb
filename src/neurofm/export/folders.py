"""``ExperimentResult.export_model``: a model of a result written as a folder in one of the layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from ..configs import ExperimentConfig
from ..configs.models import _model_kind
from ..exceptions import ConfigError
from ..models.registry import get_model_spec
from ..utils.files import atomic_write, jsonable
from .braindecode_layout import _write_braindecode, _write_scratch_braindecode, braindecode_refusal, written_as
from .files import _FORMAT_VERSION, _PROBE_FORMAT, EXPORT_JSON, REFIT_RECORD
from .heads import head_description
from .model_card import model_card
from .probes import FrozenProbe, _write_probe
from .refit import load_fine_tuned, refit_kind

if TYPE_CHECKING:
    from ..results import ExperimentResult


#: What a trained network's outputs are, by task, as its export says.
_OUTPUT_KINDS = {
    "classification": "logits",
    "regression": "regression values",
    "multilabel": "logits, one per label (a sigmoid gives each label's probability)",
}


def _model_config(result: ExperimentResult, name: str) -> Any:
    """The model's config, rebuilt from the result; for a model holding an estimator object given from Python
    (written as its description, which no config reads back), its kind alone."""
    models = result.config.get("models", {})
    if name not in models:
        raise ConfigError(f"No model {name!r} in this result; its models are {list(models)}.")
    try:
        return ExperimentConfig.model_validate({**result.config, "models": {name: models[name]}}).models[name]
    except ValidationError:
        kind = _model_kind(models[name])
        if kind not in ("frozen_backbone", "classical") or "python_object" not in json.dumps(models[name]):
            raise
        # Only a fine-tuner's export reads its config further; these need their kind.
        return SimpleNamespace(kind=kind)


def _check_fold(result: ExperimentResult, name: str, fold: int) -> None:
    folds = sorted(int(f) for f in result.scores.loc[result.scores["Model"] == name, "Fold"].unique())
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or int(fold) not in folds:
        raise ConfigError(f"fold={fold!r} is not a fold of model {name!r}; its folds are {folds}.")


def _fold_checkpoint(result: ExperimentResult, name: str, fold: int) -> Path:
    rows = result.get_model_artifacts(artifact_type="checkpoints", model=name)
    rows = rows[(rows["Fold"] == fold) & (rows["ArtifactKey"] == "directory")]
    if rows.empty:
        raise ConfigError(
            f"Fold {fold} of model {name!r} saved no checkpoint (checkpoints.save='none'): set "
            "checkpoints=CheckpointConfig(save='best') in its NeuralFineTuneConfig (or ScratchModelConfig) and run again, or export the "
            "refit model (ExperimentConfig(refit=True), fold=None)."
        )
    folder = Path(rows["ArtifactValue"].iloc[0])
    if not (folder / "config.json").is_file():
        raise ConfigError(f"The checkpoint of fold {fold} of model {name!r} is no longer at {folder}.")
    return folder


def _empty_folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} is not an empty folder; export into a new or empty one.")
    return folder


def export_model(
    result: ExperimentResult, name: str, path: str | Path, fold: int | None = None, format: str | None = None
) -> Path:
    """Write one model of ``result`` to ``path``; see :meth:`ExperimentResult.export_model`."""
    model_cfg = _model_config(result, name)
    kind = refit_kind(model_cfg).kind
    formats = {
        "fine_tuned": ("braindecode", "checkpoint"),
        "scratch": ("braindecode", "checkpoint"),  # the braindecode class as trained, or neurofm's checkpoint
        "frozen_probe": (_PROBE_FORMAT,),
    }.get(kind, ())
    if not formats:
        raise ConfigError(
            f"Model {name!r} is a classical window estimator (a scikit-learn pipeline): neurofm exports fine-tuned "
            "and frozen foundation backbones only, and writes nothing with pickle."
        )
    format = formats[0] if format is None else format
    if format not in formats:
        raise ConfigError(f"Model {name!r} exports as {' or '.join(repr(f) for f in formats)}, not {format!r}.")
    if fold is not None:
        _check_fold(result, name, fold)
        if kind == "frozen_probe":
            raise ConfigError(
                f"The heads that model {name!r} fitted in each fold are not kept: export its refit model "
                "(run with ExperimentConfig(refit=True), then fold=None)."
            )
    elif name not in result.refit_names():
        raise ConfigError(
            f"fold=None exports the model refitted on all windows, but model {name!r} has none (the run had "
            "refit=False): export a fold's model with fold=<k>, or run again with ExperimentConfig(refit=True)."
        )
    if format == "braindecode" and kind == "fine_tuned":
        reason = braindecode_refusal(model_cfg)
        if reason is not None:
            raise ConfigError(
                f"Model {name!r} ({model_cfg.model_key}) cannot be written for plain braindecode: {reason}. neurofm "
                f"can write its own checkpoint folder instead, reloadable with NeuralFineTuner.from_checkpoint: "
                f"result.export_model({name!r}, path, format='checkpoint')."
            )
    folder = _empty_folder(path)
    if kind == "frozen_probe":
        note = result.meta.get("refit", {}).get(name, {}).get("note")
        if note is not None:
            raise ConfigError(f"The refit of frozen probe {name!r} cannot be exported: it was {note}.")
        probe = result.get_refit_model(name)
        folder.mkdir(parents=True, exist_ok=True)
        _write_probe(folder, probe, {"source": _source(name, fold)})
        card_info = _probe_card(probe)
    else:
        estimator = (
            result.get_refit_model(name, device="cpu")
            if fold is None
            else load_fine_tuned(_fold_checkpoint(result, name, fold), device="cpu")
        )
        folder.mkdir(parents=True, exist_ok=True)
        scratch = kind == "scratch"
        info = (_scratch_info if scratch else _fine_tuned_info)(estimator, result, name, fold, format)
        if format == "braindecode":
            info |= (_write_scratch_braindecode if scratch else _write_braindecode)(folder, estimator)
        else:
            source = _refit_or_fold_folder(result, name, fold)
            for file in (p for p in source.iterdir() if p.is_file() and p.name not in (REFIT_RECORD, "README.md")):
                atomic_write(folder / file.name, lambda tmp, file=file: shutil.copyfile(file, tmp))
        text = json.dumps(jsonable(info), indent=2)
        atomic_write(folder / EXPORT_JSON, lambda tmp: tmp.write_text(text))
        card_info = info
    card = model_card(result, name, fold, card_info)
    atomic_write(folder / "README.md", lambda tmp: tmp.write_text(card))
    return folder


def _refit_or_fold_folder(result: ExperimentResult, name: str, fold: int | None) -> Path:
    return result.refit_folder(name) if fold is None else _fold_checkpoint(result, name, fold)


def _source(name: str, fold: int | None) -> dict[str, Any]:
    return {"experiment_model": name, "fitted_on": "all windows (refit)" if fold is None else f"fold {fold}"}


def _fine_tuned_info(estimator: Any, result: ExperimentResult, name: str, fold: int | None, format: str) -> dict:

    cfg = estimator.config
    spec = get_model_spec(cfg.model_key)
    target = estimator.plan_.target
    classes = getattr(estimator, "classes_", None)
    classes = None if classes is None else classes.tolist()
    return {
        "format": format,
        "format_version": _FORMAT_VERSION,
        "model_key": cfg.model_key,
        "class": spec.braindecode_class,
        "train_mode": cfg.train_mode,
        "source": _source(name, fold),
        "input": {
            "shape": ["n_windows", target.n_chans, target.n_times],
            "sfreq": target.sfreq,
            "ch_names": list(target.ch_names),
            "note": "adapted windows: apply the input_adaptation steps to raw windows first",
        },
        "input_adaptation": estimator.plan_.describe(),
        "outputs": {
            "task": estimator.task,
            "kind": _OUTPUT_KINDS[estimator.task],
            "classes": classes,
        },
        "head": {"pooling": None if cfg.trainer.head == "native" else cfg.pooling, "kind": cfg.trainer.head},
        "written_as": written_as(cfg) if format == "braindecode" else "neurofm checkpoint",
        "weights_origin": _weights_origin(result, name, cfg),
        "neurofm_config": cfg.model_dump(mode="json"),
    }


def _scratch_info(estimator: Any, result: ExperimentResult, name: str, fold: int | None, format: str) -> dict:
    """What an export of a from-scratch network says about itself (``model_key`` None: no registry backbone)."""
    cfg = estimator.config
    source = estimator.plan_.source
    classes = getattr(estimator, "classes_", None)
    return {
        "format": format,
        "format_version": _FORMAT_VERSION,
        "model_key": None,
        "scratch": True,
        "class": cfg.model,
        "train_mode": "scratch",
        "source": _source(name, fold),
        "input": {
            "shape": ["n_windows", len(source.ch_names), int(estimator.plan_.n_times_in)],
            "sfreq": float(source.sfreq),
            "ch_names": list(source.ch_names),
            "note": "windows in working units: apply the input_adaptation steps to raw windows first",
        },
        "input_adaptation": {"steps": estimator.plan_.steps},
        "outputs": {
            "task": estimator.task,
            "kind": _OUTPUT_KINDS[estimator.task],
            "classes": None if classes is None else classes.tolist(),
        },
        "written_as": f"braindecode's {cfg.model} as trained" if format == "braindecode" else "neurofm checkpoint",
        "weights_origin": {
            "weights": "random initialisation",
            "identity": {"kind": "random", "seed": estimator.random_state},
        },
        "neurofm_config": cfg.model_dump(mode="json"),
    }


def _weights_origin(result: ExperimentResult, name: str, cfg: Any) -> dict[str, Any]:
    identity = result.meta.get("refit", {}).get(name, {}).get("weights")
    if identity is None:
        cards = result.get_model_artifacts(artifact_type="model_card", model=name)
        weights = cards[cards["ArtifactKey"] == "weights"]["ArtifactValue"]
        identity = weights.iloc[0] if len(weights) else None
    return {"weights": cfg.weights, "identity": identity}


def _probe_card(probe: FrozenProbe) -> dict[str, Any]:
    params = probe.embedder.get_params()
    return {
        "format": _PROBE_FORMAT,
        "model_key": params["model_key"],
        "input_adaptation": probe.adaptation,
        "weights_origin": {"weights": params["weights"], "identity": probe.weights},
        "head": {"pooling": params["pooling"], "kind": head_description(probe.head)},
        "written_as": head_description(probe.head)
        + (
            " (the scaler's statistics from the embeddings the head was fitted on)" if _standardised(probe.head) else ""
        ),
        "outputs": {"classes": None if probe.classes_ is None else probe.classes_.tolist()},
    }


def _standardised(head: Any) -> bool:
    """Whether the head's pipeline starts with a StandardScaler (as an experiment builds a frozen probe's head)."""
    steps = getattr(head, "steps", None)
    return bool(steps) and type(steps[0][1]).__name__ == "StandardScaler"
