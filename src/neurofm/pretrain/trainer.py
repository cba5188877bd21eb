"""The pretraining loop: one process or many (``torchrun``), checkpoints, exact resume, export.

A run directory holds

- ``pretrain.yaml``: the resolved config (a rerun with another config refuses to touch it);
- ``checkpoints/step-NNNNNNN.pt``: model, optimizer and step, read back with
  ``torch.load(weights_only=True)``;
- ``history.csv``: loss parts, codebook usage, learning rate and time per step;
- stage 1: ``tokenizer.safetensors`` + ``tokenizer.json``;
- stage 2: ``model.safetensors`` + ``config.json``, the braindecode layout, so
  ``weights="path/to/run"`` loads the backbone in every decoding mode.

Every step draws its masks and dropout from a generator seeded by (seed, rank,
step), and the data stream is replayed up to the checkpoint's step, so a
killed run that resumes ends where an uninterrupted one ends (on the CPU).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..devices import deterministic_algorithms, resolve_precision
from ..embed import autocast
from ..exceptions import ConfigError, WeightsError
from ..policy import load_yaml
from ..sharing import check_trusted_folder
from ..training import OptimizerSteps, warmup_cosine
from ..utils.check import format_choices
from ..utils.files import TMP_MARK, atomic_write, claim_folder, resolve_path
from ..utils.logging import logger
from ..utils.prefetch import prefetched, to_pinned
from .config import PretrainConfig, TokenizerConfig
from .corpus import Corpus

__all__ = ["PretrainResult", "get_recipe", "load_tokenizer", "pretrain"]

_CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class Recipe:
    """What one pretraining recipe needs: its backbone, tokenizer and masked-modelling wrapper."""

    key: str
    backbone_key: str
    default_codebook_size: int
    build_tokenizer: Callable[[TokenizerConfig, int], Any]
    channel_ids: Callable[[tuple[str, ...]], Any]
    masked_model: Callable[[Any, tuple[int, ...]], Any]
    n_codebooks: int
    # braindecode arguments that make the backbone's pretraining heads match the tokenizer.
    head_kwargs: Callable[[TokenizerConfig], dict[str, Any]] = lambda config: {}

    def resolve(self, config: TokenizerConfig) -> TokenizerConfig:
        """The tokenizer config with the recipe's defaults filled in."""
        if config.codebook_size is None:
            config = config.model_copy(update={"codebook_size": self.default_codebook_size})
        return config


def _quantizer_kwargs(config: TokenizerConfig) -> dict[str, Any]:
    return {
        "decay": config.ema_decay,
        "commitment_weight": config.commitment_weight,
        "kmeans_init": config.kmeans_init,
        "dead_after": config.dead_after,
        "restart_dead": config.restart_dead,
    }


def _build_vqnsp(config: TokenizerConfig, n_times: int):
    from .tokenizers import VQNSPTokenizer, labram_token_width

    if config.width is not None and config.width != labram_token_width(config.patch_size):
        raise ConfigError(
            f"LaBraM's token width follows from the patch size ({labram_token_width(config.patch_size)} for "
            f"{config.patch_size} samples); remove tokenizer.width={config.width}."
        )
    return VQNSPTokenizer(
        n_times=n_times,
        patch_size=config.patch_size,
        codebook_size=config.codebook_size,
        code_dim=config.code_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        decoder_depth=config.decoder_depth,
        quantizer_kwargs=_quantizer_kwargs(config),
    )


def _build_tfdual(config: TokenizerConfig, n_times: int):
    from .tokenizers import TFDualTokenizer

    return TFDualTokenizer(
        n_times=n_times,
        patch_size=config.patch_size,
        codebook_size=config.codebook_size,
        code_dim=config.code_dim,
        dim=config.width or 200,
        depth=config.depth,
        num_heads=config.num_heads,
        decoder_depth=config.decoder_depth,
        quantizer_kwargs=_quantizer_kwargs(config),
    )


def _masked_labram(backbone, codebook_sizes):
    from .masked import MaskedLabram

    return MaskedLabram(backbone, codebook_sizes)


def _masked_codebrain(backbone, codebook_sizes):
    from .masked import MaskedCodeBrain

    return MaskedCodeBrain(backbone, codebook_sizes)


_TOKENIZERS = {"vq_nsp": _build_vqnsp, "tf_dual": _build_tfdual}
_MASKED_MODELS = {"labram": _masked_labram, "codebrain": _masked_codebrain}


def _no_channel_ids(ch_names: tuple[str, ...]) -> None:
    return None


def get_recipe(key: str) -> Recipe:
    """The pretraining recipe of backbone ``key``, from its spec in the registry.

    Raises
    ------
    ConfigError
        When neurofm does not pretrain that backbone.
    """
    from ..models.registry import get_model_spec, list_model_keys

    spec = get_model_spec(key)
    known = spec.pretraining
    if known is None:
        choices = [k for k in list_model_keys() if get_model_spec(k).pretraining is not None]
        raise ConfigError(f"neurofm does not pretrain {key!r}; use one of {format_choices(choices)}.")
    return Recipe(
        key=spec.key,
        backbone_key=spec.key,
        default_codebook_size=known.default_codebook_size,
        build_tokenizer=_TOKENIZERS[known.tokenizer],
        channel_ids=known.channel_ids or _no_channel_ids,
        masked_model=_MASKED_MODELS[known.masked_model],
        n_codebooks=known.n_codebooks,
        head_kwargs=lambda config: {name: config.codebook_size for name in known.codebook_head_kwargs},
    )


@dataclass
class PretrainResult:
    """Where a finished run is and what it measured."""

    output_dir: Path
    stage: str
    steps: int
    wall_seconds: float
    peak_memory_mb: float
    final_loss: float
    resumed_from: int


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class _World:
    rank: int
    size: int
    device: Any
    started_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _start_world(config: PretrainConfig) -> _World:
    import torch
    import torch.distributed as dist

    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA device; use device='cpu' or 'auto'.")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    started_here = size > 1 and not dist.is_initialized()
    if started_here:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _World(rank, size, device, started_here)


def _stop_world(world: _World) -> None:
    """End the process group this run started (one the caller started is the caller's to end)."""
    if world.started_here:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _all_finite(local_ok, world: _World) -> bool:
    """Whether the step's losses are finite on every process (``local_ok``: a bool, or this process's loss).

    Decided together, after every process's backward pass (the gradients'
    all-reduce) and before any update: a process that stopped alone would
    leave the others waiting forever in the next all-reduce.
    """
    import torch

    if isinstance(local_ok, torch.Tensor):
        local_ok = bool(torch.isfinite(local_ok.detach()).all())
    finite = torch.tensor([1.0 if local_ok else 0.0], dtype=torch.float32, device=world.device)
    if world.size > 1:
        import torch.distributed as dist

        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def _mean_over_processes(values: dict[str, float], world: _World) -> dict[str, float]:
    if world.size == 1:
        return values
    import torch
    import torch.distributed as dist

    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor)
    return {k: float(v) / world.size for k, v in zip(keys, tensor.tolist(), strict=True)}


def _replicas_identical(model, world: _World) -> bool:
    """Whether every process ends with the same weights and buffers (codebooks included)."""
    if world.size == 1:
        return True
    import torch
    import torch.distributed as dist

    from ..models.weights import state_dict_hash

    digest = bytes.fromhex(state_dict_hash(model))
    mine = torch.tensor(list(digest), dtype=torch.int64, device=world.device)
    gathered = [torch.empty_like(mine) for _ in range(world.size)]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _barrier(world: _World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        dist.barrier()


# --------------------------------------------------------------------------- files


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


def load_tokenizer(run_dir: str | Path, recipe: str | None = None):
    """The frozen tokenizer of a finished stage-1 run, with its metadata.

    Raises
    ------
    WeightsError
        When the directory holds no finished tokenizer or one of another recipe.
    """
    from safetensors.torch import load_file

    run = Path(run_dir).expanduser()
    meta_file, weights_file = run / "tokenizer.json", run / "tokenizer.safetensors"
    if not meta_file.is_file() or not weights_file.is_file():
        hint = " It holds a stage-2 backbone; pass a stage-1 run." if (run / "model.safetensors").is_file() else ""
        raise WeightsError(
            f"{run} holds no finished tokenizer (tokenizer.json + tokenizer.safetensors).{hint} Run stage "
            "'tokenizer' to the end first."
        )
    meta = json.loads(meta_file.read_text())
    if recipe is not None and meta["recipe"] != recipe:
        raise WeightsError(f"The tokenizer in {run} belongs to recipe {meta['recipe']!r}, not {recipe!r}.")
    tokenizer = get_recipe(meta["recipe"]).build_tokenizer(TokenizerConfig(**meta["tokenizer"]), meta["n_times"])
    state = load_file(str(weights_file), device="cpu")
    tokenizer.load_state_dict(state, strict=True)
    tokenizer.eval().requires_grad_(False)
    return tokenizer, meta


# --------------------------------------------------------------------------- the run


def _lr_at(step: int, config: PretrainConfig) -> float:
    opt = config.optimizer
    return warmup_cosine(step, opt.warmup_steps, opt.max_steps, peak=opt.lr, floor=opt.min_lr)


def _step_generator(seed: int, rank: int, step: int):
    import torch

    state = np.random.SeedSequence([seed, rank, step]).generate_state(2)
    torch.manual_seed(int(state[0]))
    return torch.Generator().manual_seed(int(state[1]))


def _peak_memory_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pretrain(config: PretrainConfig | str | Path, *, base_dir: str | Path | None = None) -> PretrainResult:
    """Run (or resume) one pretraining stage.

    Parameters
    ----------
    config : PretrainConfig | str | Path
        The config, or a YAML file (relative paths in it are taken from its folder).
    base_dir : str | Path | None
        Folder relative paths are taken from (default: the YAML's folder, else the working directory).

    Returns
    -------
    result : PretrainResult
    """
    import torch

    if not isinstance(config, PretrainConfig):
        path = Path(config)
        config = PretrainConfig.from_yaml(path)
        base_dir = base_dir if base_dir is not None else path.resolve().parent
    base = Path(base_dir or ".")
    run = resolve_path(config.output_dir, base)
    recipe = get_recipe(config.recipe)

    from ..models.registry import get_model_spec

    spec = get_model_spec(recipe.backbone_key)
    tokenizer_meta = None
    frozen_tokenizer = None
    if config.stage == "masked":
        frozen_tokenizer, tokenizer_meta = load_tokenizer(resolve_path(config.tokenizer_run, base), config.recipe)
        token_config = TokenizerConfig(**tokenizer_meta["tokenizer"])
    else:
        token_config = recipe.resolve(config.tokenizer)
    spec = dataclasses.replace(spec, patch_size=token_config.patch_size)
    corpus = Corpus(config.corpus, spec, token_config.patch_size, base_dir=base)
    if tokenizer_meta is not None:
        _check_tokenizer_fits(tokenizer_meta, token_config, corpus.n_times, config)
    world = _start_world(config)
    # Every step seeds torch's global generator (dropout); the caller's stream continues afterwards as before.
    devices = [world.device] if world.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            return _run(config, run, recipe, spec, corpus, token_config, frozen_tokenizer, world)
    finally:
        _stop_world(world)


def _run(
    config: PretrainConfig,
    run: Path,
    recipe: Recipe,
    spec,
    corpus: Corpus,
    token_config: TokenizerConfig,
    frozen_tokenizer,
    world: _World,
) -> PretrainResult:
    """Train one stage in this process (one of ``world.size``)."""
    import torch

    corpus.shard(world.rank, world.size)  # every process checks its shard before any training
    precision = resolve_precision(config.precision, str(world.device))

    torch.manual_seed(config.seed)
    if config.stage == "tokenizer":
        model = recipe.build_tokenizer(token_config, corpus.n_times)
    else:
        from ..adapt import AdaptedSignal

        ch_example = corpus.check()[0].model_ch_names
        architecture = _backbone_architecture(recipe, token_config, config)
        try:
            backbone = spec.build(AdaptedSignal(corpus.sfreq, ch_example, corpus.n_times), **architecture)
        except TypeError as exc:
            raise ConfigError(
                f"Could not build the {spec.key} backbone with backbone_kwargs {config.backbone_kwargs}: {exc}. "
                f"Use the braindecode {spec.braindecode_class} argument names."
            ) from exc
        model = recipe.masked_model(backbone, (token_config.codebook_size,) * recipe.n_codebooks)
        frozen_tokenizer.to(world.device)
    model.to(world.device)
    # Only now, with the config known to work, is the run directory touched.
    resume = _prepare_run_dir(run, config, _config_identity(config, str(world.device)), world)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.optimizer.lr,
        betas=config.optimizer.betas,
        weight_decay=config.optimizer.weight_decay,
    )
    start_step = 0
    if resume is not None:
        start_step, checkpoint = resume
        try:
            state = torch.load(checkpoint, map_location=world.device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - weights_only refusals and damaged files alike get the fix
            raise WeightsError(
                f"Cannot resume from {checkpoint}: it is not a plain tensor checkpoint ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0]}). Checkpoints are read with weights_only=True, so no pickled code runs. "
                "Delete that file to resume from the one before it, or use a new output_dir."
            ) from exc
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        logger.info("Resuming %s from step %d (%s)", run, start_step, checkpoint.name)
    trained = model
    if world.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, find_unused_parameters=True)

    objective = _Objective(config, recipe, frozen_tokenizer)
    device_name = str(world.device)
    # Recordings are read, filtered and cut by a background thread, a few batches ahead of the model.
    stream = prefetched(
        (to_pinned(windows, device_name), names)
        for windows, names in corpus.batches(config.optimizer.batch_size, config.seed, world.rank, world.size)
    )
    for _ in range(start_step):
        next(stream)  # replay the data the checkpoint has already seen
    started = time.perf_counter()
    try:
        with deterministic_algorithms(config.deterministic, device_name):
            loss_value = _train_steps(
                config, run, world, model, trained, optimizer, objective, stream, start_step, precision, started
            )
    finally:
        stream.close()  # stops the reading thread
    replicas_identical = _replicas_identical(model, world)
    if world.main:
        processes = {
            "world_size": world.size,
            "replicas_identical": replicas_identical,
            "shards": [[str(s.path) for s in corpus.shard(r, world.size)] for r in range(world.size)],
        }
        _export(run, config, model, corpus, token_config, processes)
        _write_curves(run)
    _barrier(world)
    return PretrainResult(
        output_dir=run,
        stage=config.stage,
        steps=config.optimizer.max_steps,
        wall_seconds=time.perf_counter() - started,
        peak_memory_mb=_peak_memory_mb(),
        final_loss=loss_value,
        resumed_from=start_step,
    )


def _train_steps(
    config, run, world, model, trained, optimizer, objective, stream, start_step, precision, started
) -> float:
    """The optimisation steps from ``start_step``; returns the last loss (mean over processes)."""
    history_path = run / "history.csv"
    progress = _progress(config, world, start_step)
    device_name = str(world.device)
    steps = OptimizerSteps(
        model,
        optimizer,
        lambda step: _lr_at(step, config),
        precision=precision,
        device_name=device_name,
        grad_clip=config.optimizer.clip_grad,
        finite_everywhere=lambda local_ok: _all_finite(local_ok, world),
        start_step=start_step,
    )
    loss_value = float("nan")
    model.train()
    for step in range(start_step, config.optimizer.max_steps):
        windows, ch_names = next(stream)
        x = windows.to(world.device, non_blocking=True)
        generator = _step_generator(config.seed, world.rank, step)
        with autocast(device_name, precision):
            loss, parts = objective(trained, x, ch_names, generator)
        steps.backward(loss)
        result = steps.step()
        if result.non_finite is not None:
            raise FloatingPointError(
                f"The pretraining {result.non_finite} became non-finite at step {step} (on "
                f"{'this process' if result.micro_batch is not None or world.size == 1 else 'another process'}). "
                "Lower optimizer.lr, keep clip_grad set, or check the corpus for flat or huge channels "
                "(reject_peak_to_peak)."
            )
        if config.optimizer.clip_grad is not None:
            parts["grad_norm"] = result.grad_norm
        parts = _mean_over_processes({"loss": result.losses[0], **parts}, world)
        loss_value = parts["loss"]
        if world.main:
            row = {"step": step + 1, "lr": result.lr, **parts, "seconds": round(time.perf_counter() - started, 3)}
            _append_history(history_path, row)
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.4f}")
        done = step + 1
        if done % config.checkpoint_every == 0 or done == config.optimizer.max_steps:
            if world.main:
                _save_checkpoint(run, done, model, optimizer, config.keep_checkpoints)
            _barrier(world)
    progress.close()
    return loss_value


class _Objective:
    """The loss of one step for either stage."""

    def __init__(self, config: PretrainConfig, recipe: Recipe, frozen_tokenizer) -> None:
        self.config, self.recipe, self.tokenizer = config, recipe, frozen_tokenizer

    def __call__(self, model, x, ch_names, generator):
        import torch

        if self.config.stage == "tokenizer":
            channel_ids = self.recipe.channel_ids(ch_names)
            out = model(x, list(ch_names), None if channel_ids is None else channel_ids.to(x.device))
            return out.loss, dict(out.parts)
        from .masked import masked_code_loss, random_token_mask

        with torch.no_grad():
            targets = self.tokenizer.get_codebook_indices(x, list(ch_names))
        n_tokens = targets[0].shape[1]
        mask = random_token_mask(x.shape[0], n_tokens, self.config.mask_ratio, generator).to(x.device)
        return masked_code_loss(model, x, list(ch_names), targets, mask, self.config.symmetric_masking)


def _backbone_architecture(recipe: Recipe, token_config: TokenizerConfig, config: PretrainConfig) -> dict[str, Any]:
    """braindecode arguments of the stage-2 backbone: the user's, with the tokenizer's patch and code counts."""
    return {"patch_size": token_config.patch_size, **config.backbone_kwargs, **recipe.head_kwargs(token_config)}


def _check_tokenizer_fits(
    meta: dict[str, Any], token_config: TokenizerConfig, n_times: int, config: PretrainConfig
) -> None:
    patch = token_config.patch_size
    if meta["n_times"] != n_times:
        raise ConfigError(
            f"The tokenizer in {config.tokenizer_run} was trained on windows of {meta['n_times']} samples, this corpus "
            f"gives {n_times}. Use the same corpus.window_seconds in both stages."
        )
    wanted = config.backbone_kwargs.get("patch_size", patch)
    if wanted != patch:
        raise ConfigError(
            f"backbone_kwargs.patch_size={wanted} does not match the tokenizer's patch size {patch}: the codes "
            "describe patches of the tokenizer's length. Remove patch_size from backbone_kwargs."
        )
    heads = get_recipe(config.recipe).head_kwargs(token_config)
    clash = {k: v for k, v in config.backbone_kwargs.items() if k in heads and heads[k] != v}
    if clash:
        raise ConfigError(
            f"backbone_kwargs {clash} do not match the tokenizer's codebooks {heads}: the backbone's heads must "
            "predict the tokenizer's codes. Remove them from backbone_kwargs."
        )


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


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise ConfigError(
            f"{path} is a symbolic link (to {os.readlink(path)}); neurofm writes only its own files in a run folder "
            "and never through a link, which could point at anyone's file. Remove the link, or use a new output_dir."
        )


def _append_history(path: Path, row: dict[str, Any]) -> None:
    import csv

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
    import torch

    folder = run / _CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    atomic_write(folder / f"step-{step:07d}.pt", lambda tmp: torch.save(state, tmp))
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink()


def _export(
    run: Path, config: PretrainConfig, model, corpus: Corpus, token_config: TokenizerConfig, processes: dict[str, Any]
) -> None:
    from safetensors.torch import save_file

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from ..report import pretraining_figure

    figure = pretraining_figure(pd.read_csv(run / "history.csv"))
    atomic_write(run / "loss_curves.png", lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)


def _progress(config: PretrainConfig, world: _World, start: int):
    from tqdm.auto import tqdm

    return tqdm(
        total=config.optimizer.max_steps,
        initial=start,
        disable=not (config.progress and world.main),
        desc=f"pretrain {config.recipe}/{config.stage}",
        unit="step",
    )
