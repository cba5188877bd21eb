"""The files of a pretraining run folder: what a run writes, resumes from and exports.

A run directory holds

- ``pretrain.yaml``: the resolved config (a rerun with another config refuses to touch it);
- ``checkpoints/step-NNNNNNN.pt``: model, optimizer and step, read back with
  ``torch.load(weights_only=True)``;
- ``history.csv``: loss parts, codebook usage, learning rate and time per step;
- stage 1: ``tokenizer.safetensors`` + ``tokenizer.json``;
- stage 2: ``model.safetensors`` + ``config.json``, the braindecode layout, so
  ``weights="path/to/run"`` loads the backbone in every decoding mode.

neurofm writes only its own names in it, never through a symbolic link.
Stage 2 also takes, instead of a stage-1 run, LaBraM's released ``vqnsp.pth``
(or a folder holding it) as its tokenizer (:func:`load_tokenizer`).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..devices import resolve_precision
from ..exceptions import ConfigError, WeightsError
from ..models.labram_original import ORIGINAL_PATCH_SIZE, ORIGINAL_TOKENIZER_N_TIMES, vqnsp_tokenizer_state
from ..models.weights import _read_state_dict
from ..policy import load_yaml
from ..report import pretraining_figure
from ..sharing import check_trusted_folder
from ..utils.files import TMP_MARK, atomic_write, claim_folder
from ..utils.logging import logger
from .config import PretrainConfig, TokenizerConfig
from .corpus import Corpus
from .recipes import _backbone_architecture, get_recipe
from .tokenizers import VQNSPTokenizer
from .world import _barrier, _World

__all__ = ["RUN_NAMES", "load_tokenizer", "tokenizer_patch_size"]

_CHECKPOINTS = "checkpoints"

#: What a pretraining run writes directly in its output_dir.
RUN_NAMES = frozenset(
    {
        "pretrain.yaml",
        "history.csv",
        _CHECKPOINTS,
        "tokenizer.safetensors",
        "tokenizer.json",
        "model.safetensors",
        "config.json",
        "pretrain.json",
        "loss_curves.png",
        "report.html",
    }
)


#: The file name of LaBraM's released tokenizer, looked for in a folder given as a tokenizer.
ORIGINAL_TOKENIZER_FILE = "vqnsp.pth"


def load_tokenizer(run_dir: str | Path, recipe: str | None = None, *, n_times: int | None = None):
    """The frozen tokenizer of a finished stage-1 run, or LaBraM's released ``vqnsp.pth``, with its metadata.

    Parameters
    ----------
    run_dir : str | Path
        A stage-1 run directory; or the authors' ``vqnsp.pth`` (any ``.pth``/``.pt``
        file in its layout), or a folder holding ``vqnsp.pth`` and no stage-1 run.
    recipe : str | None
        The recipe the tokenizer must belong to (``"labram"`` for the authors' file).
    n_times : int | None
        Only for the authors' file: the window to tokenize (a multiple of 200
        samples, at most 15 patches; stage 2 gives its corpus's). ``None``:
        1600 samples, the window of the original tokenizer's training and
        stage 2 (8 s at 200 Hz).

    Returns
    -------
    tokenizer : torch.nn.Module
        In eval mode, without gradients.
    meta : dict
        ``recipe``, ``n_times`` and ``tokenizer`` (a :class:`TokenizerConfig`); for
        the authors' file also ``original``: the file, its digest and what the
        mapping renamed, dropped and filled.

    Raises
    ------
    WeightsError
        When the directory holds no finished tokenizer or one of another recipe,
        or the authors' file does not map exactly onto neurofm's tokenizer.
    """
    run = Path(run_dir).expanduser()
    original = _original_tokenizer_file(run)
    if original is not None:
        return _load_original_tokenizer(original, recipe, n_times)
    meta = _stage_one_meta(run)
    if recipe is not None and meta["recipe"] != recipe:
        raise WeightsError(f"The tokenizer in {run} belongs to recipe {meta['recipe']!r}, not {recipe!r}.")
    tokenizer = get_recipe(meta["recipe"]).build_tokenizer(TokenizerConfig(**meta["tokenizer"]), meta["n_times"])
    state = load_file(str(run / "tokenizer.safetensors"), device="cpu")
    tokenizer.load_state_dict(state, strict=True)
    tokenizer.eval().requires_grad_(False)
    return tokenizer, meta


def tokenizer_patch_size(run_dir: str | Path) -> int:
    """The patch length (samples) of the tokenizer :func:`load_tokenizer` would load, read without its weights.

    Stage 2 cuts its corpus into patches of this length before it loads the tokenizer for the corpus's windows.
    """
    run = Path(run_dir).expanduser()
    if _original_tokenizer_file(run) is not None:
        return ORIGINAL_PATCH_SIZE
    return int(_stage_one_meta(run)["tokenizer"]["patch_size"])


def _stage_one_meta(run: Path) -> dict[str, Any]:
    """``tokenizer.json`` of a finished stage-1 run; an error naming what to give instead."""
    meta_file, weights_file = run / "tokenizer.json", run / "tokenizer.safetensors"
    if not meta_file.is_file() or not weights_file.is_file():
        hint = " It holds a stage-2 backbone; pass a stage-1 run." if (run / "model.safetensors").is_file() else ""
        raise WeightsError(
            f"{run} holds no finished tokenizer (tokenizer.json + tokenizer.safetensors).{hint} Run stage "
            f"'tokenizer' to the end first, or give LaBraM's released {ORIGINAL_TOKENIZER_FILE}."
        )
    return json.loads(meta_file.read_text())


def _original_tokenizer_file(path: Path) -> Path | None:
    """The authors' tokenizer file ``path`` names: itself, or the ``vqnsp.pth`` of a folder without a stage-1 run."""
    if path.is_file():
        return path if path.suffix in (".pth", ".pt") else None
    if path.is_dir() and not (path / "tokenizer.json").exists() and (path / ORIGINAL_TOKENIZER_FILE).is_file():
        return path / ORIGINAL_TOKENIZER_FILE
    return None


def _load_original_tokenizer(path: Path, recipe: str | None, n_times: int | None):
    """LaBraM's released VQ-NSP tokenizer as neurofm's, its encoder and codebook loaded tensor for tensor."""
    if recipe not in (None, "labram"):
        raise WeightsError(f"{path} is LaBraM's VQ-NSP tokenizer: it serves recipe 'labram', not {recipe!r}.")
    state, digest = _read_state_dict(path)  # torch.load(weights_only=True): no pickled code runs
    n_times = ORIGINAL_TOKENIZER_N_TIMES if n_times is None else n_times
    try:
        original = vqnsp_tokenizer_state(state, n_times)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from exc
    architecture = original.architecture
    tokenizer = VQNSPTokenizer(
        n_times=n_times,
        patch_size=architecture["patch_size"],
        codebook_size=architecture["codebook_size"],
        code_dim=architecture["code_dim"],
        depth=architecture["depth"],
        num_heads=architecture["num_heads"],
        encoder_kwargs=original.encoder_kwargs,
        decoder=False,
    )
    own = tokenizer.state_dict()
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs neurofm {tuple(own[k].shape)}"
        for k, v in original.state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = sorted(set(own) - set(original.state) - set(original.kept_as_built))
    unexpected = sorted(set(original.state) - set(own))
    if mismatched or missing or unexpected:
        # The tokenizer is built from the file's own shapes: only an incomplete file gets here.
        raise WeightsError(
            f"{path} does not map exactly onto neurofm's VQ-NSP tokenizer: shapes {mismatched[:5]}, not filled "
            f"{missing[:5]}, without a place {unexpected[:5]}. Refusing to load it partly."
        )
    tokenizer.load_state_dict({**{k: own[k] for k in original.kept_as_built}, **original.state}, strict=True)
    tokenizer.eval().requires_grad_(False)
    config = TokenizerConfig(
        **{k: architecture[k] for k in ("patch_size", "codebook_size", "code_dim", "depth", "num_heads")},
        decoder_depth=architecture["decoder_depth"],
    )
    meta = {
        "recipe": "labram",
        "n_times": n_times,
        "tokenizer": config.model_dump(mode="json"),
        "original": {"file": str(path), "digest": digest, **original.record},
    }
    logger.info(
        "Loaded LaBraM's original tokenizer %s (%d codes of %d values)", path, config.codebook_size, config.code_dim
    )
    return tokenizer, meta


# --------------------------------------------------------------------------- resuming


def _latest_checkpoint(run: Path) -> tuple[int, Path] | None:
    found = sorted((int(p.stem.split("-")[1]), p) for p in (run / _CHECKPOINTS).glob("step-*.pt"))
    return found[-1] if found else None


def _config_identity(config: PretrainConfig, device: str) -> dict[str, Any]:
    """The settings a resumed run must share with the run it continues (precision as resolved on ``device``)."""
    data = config.model_dump(mode="json")
    # deterministic changes how the GPU sums, not what is computed: a run may resume with it switched.
    for key in ("progress", "checkpoint_every", "keep_checkpoints", "output_dir", "deterministic"):
        data.pop(key, None)
    data["precision"] = resolve_precision(config.precision, device)  # "auto" and "fp32" are the same run on a CPU
    return data


def _prepare_run_dir(run: Path, config: PretrainConfig, identity: dict, world: _World) -> tuple[int, Path] | None:
    # The checkpoints a run resumes from are read back as its own: nobody else may have been able to write them.
    check_trusted_folder(run / _CHECKPOINTS, run, None, "The pretraining output_dir", shareable=False)
    if world.main:  # only into a folder of neurofm's own: a config cannot aim the run (and its clean-up) at a home
        claim_folder(run, "The pretraining output_dir", RUN_NAMES)
    _barrier(world)
    saved = run / "pretrain.yaml"
    if saved.is_file() and _latest_checkpoint(run) is not None:
        previous = PretrainConfig.model_validate(load_yaml(saved.read_text()))
        earlier = _config_identity(previous, str(world.device))
        if earlier != identity:
            changed = sorted(k for k in identity if identity.get(k) != earlier.get(k))
            raise ConfigError(
                f"{run} holds a pretraining run with another config (differs in {changed}). Use a new output_dir, "
                "or restore the original config to resume it."
            )
    elif world.main:
        # A directory without a checkpoint holds nothing computed: the new config takes it over.
        run.mkdir(parents=True, exist_ok=True)
        atomic_write(saved, lambda tmp: tmp.write_text(config.to_yaml()))
        (run / "history.csv").unlink(missing_ok=True)  # unlink removes a link itself, never its target
    _barrier(world)
    latest = _latest_checkpoint(run) if run.is_dir() else None
    if world.main:
        # A run killed while writing leaves its temporary file behind; the file it was for is intact.
        for leftover in [*run.glob(f".*{TMP_MARK}*"), *(run / _CHECKPOINTS).glob(f".*{TMP_MARK}*")]:
            leftover.unlink(missing_ok=True)
        if latest is not None:
            _truncate_history(run / "history.csv", latest[0])
    _barrier(world)
    return latest


def _load_checkpoint(checkpoint: Path, device) -> dict[str, Any]:
    """A checkpoint's step, model and optimizer state, read without running any pickled code."""
    try:
        return torch.load(checkpoint, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - weights_only refusals and damaged files alike get the fix
        raise WeightsError(
            f"Cannot resume from {checkpoint}: it is not a plain tensor checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]}). Checkpoints are read with weights_only=True, so no pickled code runs. "
            "Delete that file to resume from the one before it, or use a new output_dir."
        ) from exc


# --------------------------------------------------------------------------- writing


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise ConfigError(
            f"{path} is a symbolic link (to {os.readlink(path)}); neurofm writes only its own files in a run folder "
            "and never through a link, which could point at anyone's file. Remove the link, or use a new output_dir."
        )


def _append_history(path: Path, row: dict[str, Any]) -> None:
    _refuse_link(path)
    # O_NOFOLLOW: a link planted between the check and the open is refused too (ELOOP), never written through.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if os.fstat(fd).st_size == 0:
            writer.writeheader()
        writer.writerow(row)


def _truncate_history(path: Path, step: int) -> None:
    """Drop rows written after the checkpoint a run resumes from (they will be recomputed).

    A row that is not one of this file's rows (a line cut short by a kill, or edited) is dropped with a warning
    rather than stopping the resume: the history is a log of the run, and the checkpoint is what resumes.
    """
    _refuse_link(path)
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    n_fields = lines[0].count(",") + 1 if lines else 0
    kept, malformed = lines[:1], 0
    for line in lines[1:]:
        first, _, _ = line.partition(",")
        if line.endswith("\n") and line.count(",") + 1 == n_fields and first.strip().isdigit():
            if int(first) <= step:
                kept.append(line)
        elif line.strip():
            malformed += 1
    if malformed:
        logger.warning("%s: %d line(s) that are not rows of this history were dropped on resuming.", path, malformed)
    atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))


def _save_checkpoint(run: Path, step: int, model, optimizer, keep: int) -> None:
    folder = run / _CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    atomic_write(folder / f"step-{step:07d}.pt", lambda tmp: torch.save(state, tmp))
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink()


def _export(
    run: Path, config: PretrainConfig, model, corpus: Corpus, token_config: TokenizerConfig, processes: dict[str, Any]
) -> None:
    def tensors(module) -> dict:
        return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}

    recipe = get_recipe(config.recipe)
    summary = {
        "recipe": config.recipe,
        "stage": config.stage,
        "steps": config.optimizer.max_steps,
        "n_times": corpus.n_times,
        "sfreq": corpus.sfreq,
        "recordings": len(corpus.check()),
        **processes,
    }
    if config.stage == "tokenizer":
        meta = {**summary, "tokenizer": token_config.model_dump(mode="json")}
        atomic_write(run / "tokenizer.safetensors", lambda tmp: save_file(tensors(model), str(tmp)))
        atomic_write(run / "tokenizer.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
        return
    backbone = model.backbone
    architecture = _backbone_architecture(recipe, token_config, config)
    atomic_write(run / "model.safetensors", lambda tmp: save_file(tensors(backbone), str(tmp)))
    atomic_write(run / "config.json", lambda tmp: tmp.write_text(json.dumps(architecture, indent=2)))
    meta = {**summary, "backbone_key": recipe.backbone_key, "tokenizer_run": str(config.tokenizer_run)}
    atomic_write(run / "pretrain.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))


def _write_curves(run: Path) -> None:
    """The loss curves as a figure beside history.csv (``neurofm report RUN_DIR`` shows them too)."""
    import matplotlib  # heavy, and only for this figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the Agg backend

    figure = pretraining_figure(pd.read_csv(run / "history.csv"))
    atomic_write(run / "loss_curves.png", lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)
