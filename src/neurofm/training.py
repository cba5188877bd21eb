"""The optimisation loops: fine-tuning's epochs, and the optimiser steps it shares with pretraining.

:class:`OptimizerSteps` takes one optimiser step at a time for both (loss
scaling, the non-finite guard, clipping and gradient norms, the warm-up +
cosine schedule). Fine-tuning runs it in epochs: one pass over the training
windows in shuffled micro-batches, the optimiser (AdamW) stepping every
``grad_accumulation`` of them. After each epoch the validation windows are
scored; the best epoch by the checkpoint monitor is kept in memory and
restored before prediction, so the reported scores come from the checkpoint
the user would reload, not from the last epoch.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .configs import CheckpointConfig, DeviceConfig, TrainerConfig
from .embed import autocast, full_batch
from .metrics import score
from .utils.logging import logger
from .utils.prefetch import prefetched, to_pinned

__all__ = ["OptimizerSteps", "StepResult", "TrainingOutcome", "predict_network", "train_network", "warmup_cosine"]


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
    out = {}
    if task == "classification":
        proba = _softmax(logits)
        classes = np.arange(logits.shape[1])
        y_pred = proba.argmax(axis=1)
        for metric in metrics:
            out[metric] = score(metric, y_true, y_pred, proba, classes)
    else:
        for metric in metrics:
            out[metric] = score(metric, y_true, logits[:, 0])
    return out


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
    # torch picks its fused attention kernels by the parameters' requires_grad flags even
    # without autograd; predicting with all flags off makes the outputs independent of
    # which parameters were being trained, so a reloaded checkpoint predicts bit for bit alike.
    flags = [(p, p.requires_grad) for p in net.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with torch.inference_mode(), autocast(device, precision):
            for start in range(0, len(X), batch_size):
                rows, n_real = full_batch(X, start, batch_size)
                # From page-locked memory on a GPU, so the copy overlaps; outputs stay there until one copy back.
                out.append(net(to_pinned(rows, device).to(device, non_blocking=True))[:n_real].float())
            return torch.cat(out).cpu().numpy() if out else np.zeros((0, 1), np.float32)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


#: Consecutive fp16 overflow steps (each halving the loss scale) after which training counts as diverged.
MAX_OVERFLOWS_IN_A_ROW = 32


def warmup_cosine(step: int, warmup: int, total: int, peak: float = 1.0, floor: float = 0.0) -> float:
    """The learning rate at optimiser step ``step``: linear warm-up to ``peak``, then cosine decay to ``floor``.

    The one schedule of fine-tuning (as a factor of the learning rate) and
    of pretraining (with its peak and minimum rates).
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


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


def _grad_scaler(precision: str, device_name: str):
    """The loss scaler fp16 training needs on CUDA (``None`` elsewhere: bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda") if precision == "fp16" and device_name.startswith("cuda") else None


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
        n_micro = math.ceil(len(X_t) / trainer.batch_size)
        steps_per_epoch = max(1, math.ceil(n_micro / trainer.grad_accumulation))
        total, warmup = steps_per_epoch * trainer.max_epochs, int(round(trainer.warmup_epochs * steps_per_epoch))

        def new_optimizer():
            params = [p for p in net.parameters() if p.requires_grad]
            return torch.optim.AdamW(params, lr=trainer.lr, weight_decay=trainer.weight_decay)

        steps = OptimizerSteps(
            net,
            new_optimizer(),
            lambda step: trainer.lr * warmup_cosine(step, warmup, total),
            precision=device.precision,
            device_name=device_name,
            grad_clip=trainer.grad_clip,
            accumulation=trainer.grad_accumulation,
            after_update=step_hook,
        )
        loss_fn = _loss_function(task, class_weights, device_name)
        epochs = _Epochs(net, steps, task, trainer, device.precision, device_name, loss_fn)
        best = _BestEpoch(checkpoints, trainer.early_stopping_patience)
        bar = tqdm(total=trainer.max_epochs, desc="Training", unit="epoch", disable=not verbose, leave=False)
        for epoch in range(trainer.max_epochs):
            if stage_hook is not None and stage_hook(epoch):
                steps.new_optimizer(new_optimizer())  # the trainable set changed
            started = time.perf_counter()
            net.train()
            order = torch.randperm(len(X_t), generator=generator)
            record = epochs.train(epoch, X_t, y_t, order, outcome)
            if record is None:
                _warn_stopped(outcome)
                break
            if X_val is not None and len(X_val):
                record.update(epochs.validate(X_val, y_val, metrics))
            record["seconds"] = time.perf_counter() - started
            outcome.history.append(record)
            bar.update(1)
            if best.update(record, epoch, net, outcome, keep_every=checkpoints.save == "all"):
                break
        bar.close()
        outcome.diagnostics["overflow_steps"] = steps.overflow_steps
        outcome.states["last"] = _trainable_state(net)
        if "best" in outcome.states:
            net.load_state_dict(outcome.states["best"], strict=False)
        return outcome


def _loss_function(task: str, class_weights: np.ndarray | None, device_name: str):
    if task != "classification":
        return torch.nn.MSELoss()
    weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32, device=device_name)
    return torch.nn.CrossEntropyLoss(weight=weight)


def _warn_stopped(outcome: TrainingOutcome) -> None:
    what = outcome.diagnostics["non_finite"]
    msg = f"Non-finite {what['what']} at epoch {what['epoch']}, optimiser step {what['step']}: training of this fold stopped"
    logger.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    outcome.diagnostics["stopped_early"] = f"non-finite {what['what']}"


@dataclass
class StepResult:
    """What one optimiser step did.

    Attributes
    ----------
    losses : list of float
        The losses of its micro-batches (read once per step).
    lr : float
        The learning rate the step used.
    grad_norm : float | None
        The gradients' norm before clipping; ``None`` for an fp16 overflow
        step (skipped by the loss scaler) or a non-finite step.
    non_finite : {"loss", "gradient"} | None
        What was not finite; the update was then not applied.
    micro_batch : int | None
        With a non-finite loss on this process, the first such micro-batch of the step.
    """

    losses: list[float]
    lr: float
    grad_norm: float | None = None
    non_finite: str | None = None
    micro_batch: int | None = None


class OptimizerSteps:
    """One optimiser step at a time: the steps of fine-tuning and of pretraining alike.

    Micro-batch losses go through :meth:`backward` (scaled for fp16 on CUDA,
    divided for gradient accumulation); :meth:`step` then guards against
    non-finite losses and gradients (the update is not applied, and the caller
    decides: a fold stops, a pretraining run raises), clips the gradients and
    logs their norm, counts fp16 overflow steps (which the loss scaler skips
    by design), and applies the update at the schedule's learning rate.

    Parameters
    ----------
    model : torch.nn.Module
        Its parameters with ``requires_grad`` (and a gradient) are clipped.
    optimizer : torch.optim.Optimizer
        The optimiser (:meth:`new_optimizer` replaces it).
    lr_at : callable
        ``lr_at(step) -> float``: the learning rate of optimiser step ``step``.
    precision : str
        Resolved precision; ``fp16`` on CUDA scales the loss.
    device_name : str
        Resolved device.
    grad_clip : float | None
        Gradient-norm clipping threshold (``None``: not clipped, norm still logged).
    accumulation : int
        Micro-batches per optimiser step.
    finite_everywhere : callable | None
        ``finite_everywhere(local_ok) -> bool``: whether every process's
        losses are finite (a data-parallel run decides together, so that no
        process stops alone); ``None``: this process's say.
    after_update : callable | None
        ``after_update(step)`` after each applied update, before the
        gradients are cleared (AdaLoRA's rank allocation reads them).
    start_step : int
        The first step's number (a resumed run's).
    """

    def __init__(
        self,
        model,
        optimizer,
        lr_at,
        *,
        precision: str,
        device_name: str,
        grad_clip: float | None,
        accumulation: int = 1,
        finite_everywhere=None,
        after_update=None,
        start_step: int = 0,
    ):
        self.model, self.lr_at, self.grad_clip, self.accumulation = model, lr_at, grad_clip, accumulation
        self.finite_everywhere = finite_everywhere or (lambda local_ok: local_ok)
        self.after_update = after_update
        self.scaler = _grad_scaler(precision, device_name)
        self.step_number = start_step
        self.overflows_in_a_row = 0
        self.overflow_steps = 0
        self._pending: list = []
        self.new_optimizer(optimizer)

    def new_optimizer(self, optimizer) -> None:
        """Step ``optimizer`` from now on (a new trainable set), at the schedule's current learning rate."""
        self.optimizer = optimizer
        self._set_lr()
        optimizer.zero_grad(set_to_none=True)

    def _set_lr(self) -> None:
        lr = self.lr_at(self.step_number)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.optimizer.param_groups[0]["lr"])

    def backward(self, loss) -> None:
        """Accumulate the gradients of one micro-batch's loss (kept on the device until :meth:`step`)."""
        scaled = loss / self.accumulation
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        self._pending.append(loss.detach())

    def step(self) -> StepResult:
        """Apply the accumulated gradients, unless a loss or the gradient is not finite."""
        scaler, optimizer = self.scaler, self.optimizer
        lr = self.lr
        if scaler:
            scaler.unscale_(optimizer)
        params = [p for p in self.model.parameters() if p.requires_grad and p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip or float("inf"))
        # The losses and the norm are read once per optimiser step, not after every forward: each read
        # makes the CPU wait for the GPU, which then idles while the next kernels are queued. A
        # non-finite loss leaves non-finite gradients, which are never applied.
        losses = [float(v) for v in self._pending]
        self._pending = []
        bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
        if not self.finite_everywhere(bad is None):
            return StepResult(losses, lr, non_finite="loss", micro_batch=bad)
        norm_value = float(norm)
        finite = math.isfinite(norm_value)
        # With fp16 loss scaling an inf gradient is an overflow: the scaler skips the step and lowers its
        # scale, by design. Only a run of them that no scale cures (or any without a scaler) is divergence.
        if not finite and (scaler is None or self.overflows_in_a_row >= MAX_OVERFLOWS_IN_A_ROW):
            return StepResult(losses, lr, non_finite="gradient")
        if finite:
            self.overflows_in_a_row = 0
        else:
            self.overflows_in_a_row += 1
            self.overflow_steps += 1
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        self.step_number += 1
        if self.after_update is not None:
            self.after_update(self.step_number)
        optimizer.zero_grad(set_to_none=True)
        self._set_lr()
        return StepResult(losses, lr, grad_norm=norm_value if finite else None)


class _Epochs:
    """Fine-tuning's epochs: shuffled micro-batches through :class:`OptimizerSteps`, and validation."""

    def __init__(self, net, steps: OptimizerSteps, task, trainer, precision, device_name, loss_fn):
        self.net, self.steps, self.task, self.trainer = net, steps, task, trainer
        self.precision, self.device_name, self.loss_fn = precision, device_name, loss_fn

    def train(self, epoch: int, X_t, y_t, order, outcome: TrainingOutcome) -> dict[str, Any] | None:
        """One pass over the training windows in ``order``; its history record, or ``None`` when it diverged."""
        steps, accumulation = self.steps, self.trainer.grad_accumulation
        n_micro = math.ceil(len(order) / self.trainer.batch_size)
        losses, norms = [], []
        batches = _micro_batches(X_t, y_t, order, self.trainer.batch_size, self.device_name)
        try:
            for micro, (xb, yb) in enumerate(batches):
                steps.backward(self._loss(xb, yb))
                if (micro + 1) % accumulation == 0 or micro == n_micro - 1:
                    result = steps.step()
                    if result.non_finite is not None:
                        first = (
                            micro if result.micro_batch is None else micro - len(result.losses) + 1 + result.micro_batch
                        )
                        outcome.diagnostics["non_finite"] = {
                            "what": result.non_finite,
                            "epoch": epoch,
                            "step": steps.step_number,
                            "batch": first,
                        }
                        return None
                    losses.extend(result.losses)
                    if result.grad_norm is not None:
                        norms.append(result.grad_norm)
        finally:
            batches.close()  # a loop left early stops the gathering thread
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": steps.lr,
            "grad_norm_mean": float(np.mean(norms)) if norms else float("nan"),
            "grad_norm_max": float(np.max(norms)) if norms else float("nan"),
        }
        outcome.diagnostics["grad_norms"].append(
            {"epoch": epoch, "mean": record["grad_norm_mean"], "max": record["grad_norm_max"]}
        )
        return record

    def _loss(self, xb, yb):
        xb, yb = xb.to(self.device_name, non_blocking=True), yb.to(self.device_name, non_blocking=True)
        with autocast(self.device_name, self.precision):
            out = self.net(xb)
            return (
                self.loss_fn(out.float(), yb) if self.task == "classification" else self.loss_fn(out.float()[:, 0], yb)
            )

    def validate(self, X_val, y_val, metrics) -> dict[str, float]:
        """Validation loss and metrics of the network as it is now."""
        val_out = predict_network(self.net, X_val, self.trainer.batch_size, self.device_name, self.precision)
        val_target = torch.from_numpy(y_val.astype(np.int64 if self.task == "classification" else np.float32))
        scores: dict[str, float] = {}
        with torch.no_grad():
            val_logits = torch.from_numpy(val_out)
            if self.task == "classification":
                scores["val_loss"] = float(self.loss_fn.cpu()(val_logits, val_target))
                self.loss_fn.to(self.device_name)
            else:
                scores["val_loss"] = float(torch.nn.functional.mse_loss(val_logits[:, 0], val_target))
        scores.update({f"val_{k}": v for k, v in _scores(self.task, y_val, val_out, metrics).items()})
        return scores


class _BestEpoch:
    """Keeps the best epoch by the checkpoint monitor, and says when early stopping ends the run."""

    def __init__(self, checkpoints: CheckpointConfig, patience: int | None):
        self.monitor, self.mode, self.patience = checkpoints.monitor, checkpoints.resolved_mode, patience
        self.best = None
        self.patience_left = patience

    def update(self, record: dict[str, Any], epoch: int, net, outcome: TrainingOutcome, keep_every: bool) -> bool:
        """Take this epoch's record; ``True`` when training should stop early."""
        monitor = self.monitor
        if monitor not in record:
            available = sorted(k for k in record if k not in ("epoch", "seconds"))
            raise ValueError(
                f"checkpoint monitor {monitor!r} is not logged; logged values are {available}"
                + (" (validation metrics need validation_fraction > 0)" if monitor.startswith("val_") else "")
            )
        value = record[monitor]
        improved = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if keep_every:
            outcome.states[epoch] = _trainable_state(net, on_host=True)
        if improved and np.isfinite(value):
            self.best = value
            outcome.best_epoch, outcome.best_value = epoch, float(value)
            outcome.states["best"] = _trainable_state(net)
            self.patience_left = self.patience
        elif self.patience is not None:
            self.patience_left -= 1
            if self.patience_left <= 0:
                outcome.diagnostics["stopped_early"] = (
                    f"early stopping: {monitor} did not improve for {self.patience} epochs"
                )
                return True
        return False
