"""Fine-tuning: a decoder trained in epochs on the shared loop, and its predictions.

Each epoch is one round of :class:`~neurofm.training.loop.TrainingLoop`: the
training windows in shuffled micro-batches, the optimiser (AdamW) stepping
every ``grad_accumulation`` of them. After each epoch the validation windows
are scored; the best epoch by the checkpoint monitor is kept in memory and
restored before prediction, so the reported scores come from the checkpoint
the user would reload, not from the last epoch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..configs import CheckpointConfig, DeviceConfig, TrainerConfig
from ..embed import autocast, full_batch
from ..exceptions import ConfigError
from ..metrics import score_all
from ..utils.prefetch import prefetched, to_pinned
from .loop import (
    BestCheckpoint,
    Callback,
    EarlyStopping,
    GradNormLog,
    History,
    NonFiniteGuard,
    ProgressBar,
    TrainingLoop,
)
from .steps import OptimizerSteps, warmup_cosine

__all__ = ["TrainingOutcome", "loss_function", "loss_name", "predict_network", "train_network"]


@dataclass
class TrainingOutcome:
    """What a training run produced besides the trained network."""

    history: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    best_epoch: int | None = None
    best_value: float | None = None
    states: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch -> trainable state (for "all")


def _trainable_state(net, on_host: bool = False) -> dict[str, Any]:
    """What training can change: trainable parameters and buffers (e.g. normalisation statistics).

    ``on_host``: copied to the CPU's memory. The per-epoch states of
    ``save="all"`` grow with the epochs, and would fill a GPU's memory; the
    best and last states (one copy each) stay on the device.
    """
    keep = {n for n, p in net.named_parameters() if p.requires_grad} | {n for n, _ in net.named_buffers()}
    return {
        k: v.detach().to("cpu", copy=True) if on_host else v.detach().clone()
        for k, v in net.state_dict().items()
        if k in keep
    }


def _scores(task: str, y_true, logits, metrics) -> dict[str, float]:
    """The validation metrics of one epoch, named as the experiment names them (``neurofm.metrics``).

    The targets here are class indices, so per-class scores are named by index (``recall[0]`` is the first of the
    sorted classes).
    """
    if task == "classification":
        proba = _softmax(logits)
        classes = np.arange(logits.shape[1])
        return score_all(metrics, y_true, proba.argmax(axis=1), proba, classes)
    if task == "multilabel":  # one logit per label; labels named by index, as classes are above
        proba = 1.0 / (1.0 + np.exp(-logits))
        return score_all(metrics, y_true, (proba >= 0.5).astype(int), proba, np.arange(logits.shape[1]))
    return score_all(metrics, y_true, logits[:, 0])


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_network(net, X: np.ndarray, batch_size: int, device: str, precision: str = "fp32") -> np.ndarray:
    """Raw outputs (logits or regression values) of ``net`` on adapted windows.

    Every forward sees ``batch_size`` windows (a short last batch is padded
    with copies of its own windows, :func:`neurofm.embed.full_batch`), so a
    window's output does not depend on how many windows are predicted with
    it; at most one batch of extra compute per call.
    """
    net.to(device).eval()  # the batches go to device: so must the net (a reloaded one starts on the CPU)
    out = []
    # torch picks kernels by the parameters' requires_grad flags even without autograd (nn.MultiheadAttention's
    # fused path, matmul's folding of batch dimensions). Predicting with every flag on makes the outputs
    # independent of which parameters were being trained, so a reloaded checkpoint predicts bit for bit alike,
    # and equal to a module freshly built by braindecode (every flag on) under no_grad or inference_mode.
    flags = [(p, p.requires_grad) for p in net.parameters() if p.is_floating_point()]
    # Flags set and put back inside inference_mode: peft remakes the weights of an adapted MultiheadAttention in
    # each forward, so after one prediction they are inference tensors, whose flag can only be set in there.
    with torch.inference_mode(), autocast(device, precision):
        for p, _ in flags:
            p.requires_grad_(True)
        try:
            for start in range(0, len(X), batch_size):
                rows, n_real = full_batch(X, start, batch_size)
                # From page-locked memory on a GPU, so the copy overlaps; outputs stay there until one copy back.
                out.append(net(to_pinned(rows, device).to(device, non_blocking=True))[:n_real].float())
            return torch.cat(out).cpu().numpy() if out else np.zeros((0, 1), np.float32)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


def _micro_batches(X_t, y_t, order, batch_size: int, device_name: str):
    """The epoch's ``(windows, targets)`` micro-batches in ``order``.

    Bound for a GPU, a background thread gathers the next ones into
    page-locked memory while the device trains on the current one (the
    copies then run asynchronously); elsewhere they are gathered in turn.
    The batches are the same either way.
    """
    pin = device_name.startswith("cuda")

    def gathered():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = X_t[idx], y_t[idx]
            yield (xb.pin_memory(), yb.pin_memory()) if pin else (xb, yb)

    return prefetched(gathered()) if pin else gathered()


def train_network(
    net,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray | None,
    y_val: np.ndarray | None,
    *,
    task: str,
    trainer: TrainerConfig,
    checkpoints: CheckpointConfig,
    device: DeviceConfig,
    device_name: str,
    class_weights: np.ndarray | None,
    metrics: list[str],
    seed: int,
    stage_hook=None,
    step_hook=None,
    verbose: bool = True,
) -> TrainingOutcome:
    """Train ``net`` in place and restore its best epoch.

    Parameters
    ----------
    net : torch.nn.Module
        The decoder; parameters with ``requires_grad`` are trained.
    X_train, y_train, X_val, y_val : ndarray
        Adapted windows (float32) and targets (class indices or floats).
    task : str
        ``classification`` or ``regression``.
    trainer, checkpoints, device : configs
        Loop, checkpoint and precision settings.
    device_name : str
        Resolved torch device.
    class_weights : ndarray | None
        Per-class loss weights.
    metrics : list of str
        Metrics logged on the validation set each epoch.
    seed : int
        Seed of shuffling and dropout.
    stage_hook : callable | None
        ``stage_hook(epoch)`` before each epoch (two-stage training switches
        what trains); returns True when the trainable set changed.
    step_hook : callable | None
        ``step_hook(global_step)`` after each optimiser step (AdaLoRA's rank allocation).
    verbose : bool
        Progress bar.
    """
    # The loop seeds torch's global generator (dropout draws from it); the caller's stream continues afterwards
    # as if training had not run.
    devices = [torch.device(device_name)] if device_name.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        net.to(device_name)
        outcome = TrainingOutcome(
            diagnostics={"non_finite": None, "grad_norms": [], "stopped_early": None, "overflow_steps": 0}
        )
        X_t = torch.from_numpy(X_train)
        y_t = torch.from_numpy(y_train.astype(np.int64 if task == "classification" else np.float32))

        def new_optimizer():
            params = [p for p in net.parameters() if p.requires_grad]
            return torch.optim.AdamW(params, lr=trainer.lr, weight_decay=trainer.weight_decay)

        steps = OptimizerSteps(
            net,
            new_optimizer(),
            _learning_rates(trainer, len(X_t)),
            precision=device.precision,
            device_name=device_name,
            grad_clip=trainer.grad_clip,
            accumulation=trainer.grad_accumulation,
            after_update=step_hook,
        )
        loss_fn = loss_function(task, class_weights, device_name, trainer)
        epochs = _Epochs(net, X_t, y_t, generator, loss_fn, task, trainer.batch_size, device_name, device.precision)
        best = BestCheckpoint(
            checkpoints.monitor,
            checkpoints.resolved_mode,
            lambda on_host: _trainable_state(net, on_host),
            keep_every=checkpoints.save == "all",
        )
        callbacks = [
            None if stage_hook is None else _TrainingStages(stage_hook, new_optimizer),
            NonFiniteGuard(outcome.diagnostics),
            GradNormLog(diagnostics=outcome.diagnostics),
            None
            if X_val is None or not len(X_val)
            else _Validation(net, X_val, y_val, task, trainer, device, device_name, loss_fn, metrics),
            History(outcome.history.append),
            ProgressBar(
                tqdm(total=trainer.max_epochs, desc="Training", unit="epoch", disable=not verbose, leave=False)
            ),
            best,
            None
            if trainer.early_stopping_patience is None
            else EarlyStopping(
                checkpoints.monitor, checkpoints.resolved_mode, trainer.early_stopping_patience, outcome.diagnostics
            ),
        ]
        describe = functools.partial(_describe_epoch, loss=loss_name(task, trainer))
        TrainingLoop(steps, epochs, describe, [c for c in callbacks if c is not None]).run(0, trainer.max_epochs)
        outcome.best_epoch, outcome.best_value = best.best_index, best.best_value
        outcome.states = best.states
        outcome.diagnostics["overflow_steps"] = steps.overflow_steps
        outcome.states["last"] = _trainable_state(net)
        if "best" in outcome.states:
            net.load_state_dict(outcome.states["best"], strict=False)
        return outcome


def _learning_rates(trainer: TrainerConfig, n_windows: int):
    """``lr_at(step)``: warm-up over ``warmup_epochs``, then cosine decay to zero at the last epoch's last step."""
    n_micro = math.ceil(n_windows / trainer.batch_size)
    steps_per_epoch = max(1, math.ceil(n_micro / trainer.grad_accumulation))
    total, warmup = steps_per_epoch * trainer.max_epochs, int(round(trainer.warmup_epochs * steps_per_epoch))
    return lambda step: trainer.lr * warmup_cosine(step, warmup, total)


class _Epochs:
    """``epochs(index)``: one epoch's micro-batch losses, the windows shuffled by the training's own generator."""

    def __init__(self, net, X_t, y_t, generator, loss_fn, task, batch_size, device_name, precision):
        self.net, self.X_t, self.y_t, self.generator, self.loss_fn = net, X_t, y_t, generator, loss_fn
        self.task, self.batch_size, self.device_name, self.precision = task, batch_size, device_name, precision

    def __call__(self, index: int):
        self.net.train()
        order = torch.randperm(len(self.X_t), generator=self.generator)
        batches = _micro_batches(self.X_t, self.y_t, order, self.batch_size, self.device_name)
        try:
            for xb, yb in batches:
                yield self._loss(xb, yb), {}
        finally:
            batches.close()  # a loop left early stops the gathering thread

    def _loss(self, xb, yb):
        xb, yb = xb.to(self.device_name, non_blocking=True), yb.to(self.device_name, non_blocking=True)
        with autocast(self.device_name, self.precision):
            out = self.net(xb).float()
            return self.loss_fn(out, yb) if self.task != "regression" else self.loss_fn(out[:, 0], yb)


def _describe_epoch(loop: TrainingLoop, loss: str) -> dict[str, Any]:
    losses = loop.losses
    return {
        "epoch": loop.index,
        "train_loss": float(np.mean(losses)) if losses else float("nan"),
        "lr": loop.steps.lr,
        "loss": loss,
    }


def loss_name(task: str, trainer: TrainerConfig) -> str:
    """The loss ``trainer.loss`` names for ``task``: ``"cross_entropy"``, ``"mse"`` or ``"huber"``.

    Raises
    ------
    ConfigError
        When a regression loss (``"mse"``, ``"huber"``) is asked for a classification task.
    """
    if task == "multilabel":
        if trainer.loss != "auto":
            raise ConfigError(
                f"TrainerConfig(loss={trainer.loss!r}) is a regression loss, and the task is multilabel; use "
                "loss='auto' (binary cross-entropy per label)."
            )
        return "binary_cross_entropy"
    if trainer.loss == "auto":
        return "cross_entropy" if task == "classification" else "mse"
    if task == "classification":
        raise ConfigError(
            f"TrainerConfig(loss={trainer.loss!r}) is a regression loss, and the task is classification; use "
            "loss='auto' (cross-entropy), or set task='regression'."
        )
    return trainer.loss


def loss_function(task: str, class_weights: np.ndarray | None, device_name: str, trainer: TrainerConfig):
    name = loss_name(task, trainer)
    if name == "huber":
        return torch.nn.HuberLoss(delta=trainer.huber_delta)
    if name == "mse":
        return torch.nn.MSELoss()
    weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32, device=device_name)
    if name == "binary_cross_entropy":  # multilabel: class_weights are each label's pos_weight
        return torch.nn.BCEWithLogitsLoss(pos_weight=weight)
    return torch.nn.CrossEntropyLoss(weight=weight)


class _TrainingStages(Callback):
    """Two-stage training: before each epoch, ``stage_hook(epoch)`` may change what trains (a new optimiser then)."""

    def __init__(self, stage_hook, new_optimizer):
        self.stage_hook, self.new_optimizer = stage_hook, new_optimizer

    def on_round_start(self, loop: TrainingLoop) -> None:
        if self.stage_hook(loop.index):
            loop.steps.new_optimizer(self.new_optimizer())


class _Validation(Callback):
    """Each epoch's validation loss and metrics, of the network as it is after the epoch."""

    def __init__(self, net, X_val, y_val, task, trainer, device, device_name, loss_fn, metrics):
        self.net, self.X_val, self.y_val, self.task = net, X_val, y_val, task
        self.batch_size, self.precision, self.device_name = trainer.batch_size, device.precision, device_name
        self.loss_fn, self.metrics = loss_fn, metrics

    def on_round_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        val_out = predict_network(self.net, self.X_val, self.batch_size, self.device_name, self.precision)
        val_target = torch.from_numpy(self.y_val.astype(np.int64 if self.task == "classification" else np.float32))
        with torch.no_grad():
            val_logits = torch.from_numpy(val_out)
            if self.task != "regression":  # cross-entropy, or multilabel's binary cross-entropy
                record["val_loss"] = float(self.loss_fn.cpu()(val_logits, val_target))
                self.loss_fn.to(self.device_name)
            else:
                record["val_loss"] = float(self.loss_fn(val_logits[:, 0], val_target))  # MSE or Huber: no weights
        record.update({f"val_{k}": v for k, v in _scores(self.task, self.y_val, val_out, self.metrics).items()})
