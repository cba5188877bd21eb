"""The pretraining loop: one process or many (``torchrun``), checkpoints, exact resume, export.

The loop is this module; what it stands on has a module each: the recipes
(:mod:`.recipes`: tokenizer, masked-modelling wrapper and heads of each
backbone), the processes (:mod:`.world`) and the run folder's files
(:mod:`.run_folder`: config, checkpoints, history, the exported weights).

Every step draws its masks and dropout from a generator seeded by (seed, rank,
step), and the data stream is replayed up to the checkpoint's step, so a
killed run that resumes ends where an uninterrupted one ends (on the CPU).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..adapt import AdaptedSignal
from ..devices import deterministic_algorithms, resolve_precision
from ..embed import autocast
from ..exceptions import ConfigError
from ..models.registry import get_model_spec
from ..training import (
    Callback,
    GradNormLog,
    History,
    NonFiniteGuard,
    OptimizerSteps,
    PeriodicCheckpoint,
    ProgressBar,
    TrainingLoop,
    warmup_cosine,
)
from ..utils.files import resolve_path
from ..utils.logging import logger
from ..utils.prefetch import prefetched, to_pinned
from .config import PretrainConfig, TokenizerConfig
from .corpus import Corpus
from .masked import masked_code_loss, random_token_mask
from .recipes import Recipe, _backbone_architecture, get_recipe
from .run_folder import (
    _append_history,
    _config_identity,
    _export,
    _load_checkpoint,
    _prepare_run_dir,
    _save_checkpoint,
    _write_curves,
    load_tokenizer,
    tokenizer_patch_size,
)
from .world import (
    _all_finite,
    _barrier,
    _mean_over_processes,
    _replicas_identical,
    _start_world,
    _stop_world,
    _World,
)

# get_recipe and load_tokenizer live in .recipes and .run_folder; importable from here as before.
__all__ = ["PretrainResult", "get_recipe", "load_tokenizer", "pretrain"]


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


# --------------------------------------------------------------------------- the run


def _lr_at(step: int, config: PretrainConfig) -> float:
    opt = config.optimizer
    return warmup_cosine(step, opt.warmup_steps, opt.max_steps, peak=opt.lr, floor=opt.min_lr)


def _step_generator(seed: int, rank: int, step: int):
    state = np.random.SeedSequence([seed, rank, step]).generate_state(2)
    torch.manual_seed(int(state[0]))
    return torch.Generator().manual_seed(int(state[1]))


def _peak_memory_mb() -> float:
    import resource  # Unix only: no such module on Windows

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
    if not isinstance(config, PretrainConfig):
        path = Path(config)
        config = PretrainConfig.from_yaml(path)
        base_dir = base_dir if base_dir is not None else path.resolve().parent
    base = Path(base_dir or ".")
    run = resolve_path(config.output_dir, base)
    recipe = get_recipe(config.recipe)
    spec = get_model_spec(recipe.backbone_key)
    tokenizer_meta = None
    frozen_tokenizer = None
    if config.stage == "masked":
        tokenizer_path = resolve_path(config.tokenizer_run, base)
        patch_size = tokenizer_patch_size(tokenizer_path)
    else:
        token_config = recipe.resolve(config.tokenizer)
        patch_size = token_config.patch_size
    spec = dataclasses.replace(spec, patch_size=patch_size)
    corpus = Corpus(config.corpus, spec, patch_size, base_dir=base)
    if config.stage == "masked":
        # LaBraM's released tokenizer is built for the corpus's windows; a stage-1 run's holds its own.
        frozen_tokenizer, tokenizer_meta = load_tokenizer(tokenizer_path, config.recipe, n_times=corpus.n_times)
        token_config = TokenizerConfig(**tokenizer_meta["tokenizer"])
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
    corpus.shard(world.rank, world.size)  # every process checks its shard before any training
    device_name = str(world.device)
    precision = resolve_precision(config.precision, device_name)
    model = _build_model(config, recipe, spec, corpus, token_config)
    if frozen_tokenizer is not None:
        frozen_tokenizer.to(world.device)
    model.to(world.device)
    # Only now, with the config known to work, is the run directory touched.
    resume = _prepare_run_dir(run, config, _config_identity(config, device_name), world)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.optimizer.lr,
        betas=config.optimizer.betas,
        weight_decay=config.optimizer.weight_decay,
    )
    start_step = _resume(run, resume, model, optimizer, world.device)
    trained = DistributedDataParallel(model, find_unused_parameters=True) if world.size > 1 else model
    objective = _Objective(config, recipe, frozen_tokenizer)
    stream = _data_stream(config, corpus, world, start_step)
    started = time.perf_counter()
    try:
        with deterministic_algorithms(config.deterministic, device_name):
            loss_value = _train_steps(
                config, run, world, model, trained, optimizer, objective, stream, start_step, precision, started
            )
    finally:
        stream.close()  # stops the reading thread
    _finish(run, config, model, corpus, token_config, world)
    return PretrainResult(
        output_dir=run,
        stage=config.stage,
        steps=config.optimizer.max_steps,
        wall_seconds=time.perf_counter() - started,
        peak_memory_mb=_peak_memory_mb(),
        final_loss=loss_value,
        resumed_from=start_step,
    )


def _build_model(config: PretrainConfig, recipe: Recipe, spec, corpus: Corpus, token_config: TokenizerConfig):
    """The stage's model, on the CPU, its weights drawn from ``config.seed``.

    Stage 1 trains the recipe's tokenizer; stage 2 the backbone inside its masked-modelling wrapper.
    """
    torch.manual_seed(config.seed)
    if config.stage == "tokenizer":
        return recipe.build_tokenizer(token_config, corpus.n_times)
    ch_example = corpus.check()[0].model_ch_names
    architecture = _backbone_architecture(recipe, token_config, config)
    try:
        backbone = spec.build(AdaptedSignal(corpus.sfreq, ch_example, corpus.n_times), **architecture)
    except TypeError as exc:
        raise ConfigError(
            f"Could not build the {spec.key} backbone with backbone_kwargs {config.backbone_kwargs}: {exc}. "
            f"Use the braindecode {spec.braindecode_class} argument names."
        ) from exc
    return recipe.masked_model(backbone, (token_config.codebook_size,) * recipe.n_codebooks)


def _resume(run: Path, resume: tuple[int, Path] | None, model, optimizer, device) -> int:
    """Load the checkpoint ``resume`` (step, file) into the model and optimizer; returns the step to start from."""
    if resume is None:
        return 0
    start_step, checkpoint = resume
    state = _load_checkpoint(checkpoint, device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    logger.info("Resuming %s from step %d (%s)", run, start_step, checkpoint.name)
    return start_step


def _data_stream(config: PretrainConfig, corpus: Corpus, world: _World, start_step: int):
    """This process's batches from step ``start_step`` on (the ones before are read and dropped).

    Recordings are read, filtered and cut by a background thread, a few batches ahead of the model; the
    caller closes the stream to stop it.
    """
    device_name = str(world.device)
    stream = prefetched(
        (to_pinned(windows, device_name), names)
        for windows, names in corpus.batches(config.optimizer.batch_size, config.seed, world.rank, world.size)
    )
    for _ in range(start_step):
        next(stream)  # replay the data the checkpoint has already seen
    return stream


def _finish(
    run: Path, config: PretrainConfig, model, corpus: Corpus, token_config: TokenizerConfig, world: _World
) -> None:
    """Check that the replicas agree, write the weights and loss curves (main process), then wait for it."""
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


def _train_steps(
    config, run, world, model, trained, optimizer, objective, stream, start_step, precision, started
) -> float:
    """The optimisation steps from ``start_step`` (one round of the loop each); returns the last loss.

    The loss is the mean over processes, as is every value in the history row.
    """
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

    def one_step(step: int):
        windows, ch_names = next(stream)
        x = windows.to(world.device, non_blocking=True)
        generator = _step_generator(config.seed, world.rank, step)
        with autocast(device_name, precision):
            loss_and_parts = objective(trained, x, ch_names, generator)
        yield loss_and_parts  # outside autocast: the backward pass runs in the loop

    def save(done: int) -> None:
        if world.main:
            _save_checkpoint(run, done, model, optimizer, config.keep_checkpoints)
        _barrier(world)

    history_path = run / "history.csv"
    callbacks = [
        NonFiniteGuard(error=lambda loop, result: _diverged(loop, result, world)),
        None if config.optimizer.clip_grad is None else GradNormLog(column="grad_norm"),
        _MeanOverProcesses(world),
        History(
            (lambda row: _append_history(history_path, row)) if world.main else (lambda row: None),
            since="run",
            digits=3,
        ),
        ProgressBar(_progress(config, world, start_step), postfix="loss"),
        PeriodicCheckpoint(config.checkpoint_every, config.optimizer.max_steps, save),
    ]
    loop = TrainingLoop(steps, one_step, _describe_step, [c for c in callbacks if c is not None])
    loop.started = started
    model.train()
    loop.run(start_step, config.optimizer.max_steps)
    return float("nan") if loop.last_record is None else loop.last_record["loss"]


def _describe_step(loop: TrainingLoop) -> dict[str, Any]:
    result = loop.last_result
    return {"step": loop.index + 1, "lr": result.lr, "loss": result.losses[0], **loop.parts}


def _diverged(loop: TrainingLoop, result, world: _World) -> FloatingPointError:
    where = "this process" if result.micro_batch is not None or world.size == 1 else "another process"
    return FloatingPointError(
        f"The pretraining {result.non_finite} became non-finite at step {loop.index} (on {where}). "
        "Lower optimizer.lr, keep clip_grad set, or check the corpus for flat or huge channels "
        "(reject_peak_to_peak)."
    )


class _MeanOverProcesses(Callback):
    """The record's losses and norms averaged over the processes (the step and learning rate are everyone's)."""

    def __init__(self, world: _World):
        self.world = world

    def on_round_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        values = {k: record.pop(k) for k in list(record) if k not in ("step", "lr")}
        record.update(_mean_over_processes(values, self.world))


class _Objective:
    """The loss of one step for either stage."""

    def __init__(self, config: PretrainConfig, recipe: Recipe, frozen_tokenizer) -> None:
        self.config, self.recipe, self.tokenizer = config, recipe, frozen_tokenizer

    def __call__(self, model, x, ch_names, generator):
        if self.config.stage == "tokenizer":
            channel_ids = self.recipe.channel_ids(ch_names)
            out = model(x, list(ch_names), None if channel_ids is None else channel_ids.to(x.device))
            return out.loss, dict(out.parts)
        with torch.no_grad():
            targets = self.tokenizer.get_codebook_indices(x, list(ch_names))
        n_tokens = targets[0].shape[1]
        mask = random_token_mask(x.shape[0], n_tokens, self.config.mask_ratio, generator).to(x.device)
        return masked_code_loss(model, x, list(ch_names), targets, mask, self.config.symmetric_masking)


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


def _progress(config: PretrainConfig, world: _World, start: int):
    return tqdm(
        total=config.optimizer.max_steps,
        initial=start,
        disable=not (config.progress and world.main),
        desc=f"pretrain {config.recipe}/{config.stage}",
        unit="step",
    )
