"""The optimisation loop of trainable decoders: history, diagnostics and checkpoints.

One epoch = one pass over the training windows in shuffled micro-batches;
the optimiser (AdamW) steps every ``grad_accumulation`` micro-batches under a
linear warm-up then cosine decay. After each epoch the validation windows are
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

from .configs import CheckpointConfig, DeviceConfig, TrainerConfig
from .embed import autocast, full_batch
from .utils.logging import logger
from .utils.prefetch import prefetched, to_pinned

__all__ = ["TrainingOutcome", "predict_network", "train_network", "warmup_cosine"]


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
    from .metrics import score

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
    import torch

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


def _step_schedule(scheduler) -> None:
    """Advance the learning-rate schedule by one optimiser step.

    torch warns when a schedule steps before its optimiser has: here that is
    by design, when two-stage training fast-forwards a new schedule and when
    fp16 loss scaling skips an overflowing first step.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        scheduler.step()


def _grad_scaler(precision: str, device_name: str):
    """The loss scaler fp16 training needs on CUDA (``None`` elsewhere: bf16 and fp32 need none)."""
    import torch

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
    import torch
    from tqdm.auto import tqdm

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
        loop = _Steps(
            net,
            task,
            trainer,
            device.precision,
            device_name,
            _loss_function(task, class_weights, device_name),
            len(X_t),
            outcome,
            step_hook,
        )
        best = _BestEpoch(checkpoints, trainer.early_stopping_patience)
        bar = tqdm(total=trainer.max_epochs, desc="Training", unit="epoch", disable=not verbose, leave=False)
        for epoch in range(trainer.max_epochs):
            if stage_hook is not None and stage_hook(epoch):
                loop.new_optimizer()  # the trainable set changed
            started = time.perf_counter()
            net.train()
            order = torch.randperm(len(X_t), generator=generator)
            record = loop.epoch(epoch, X_t, y_t, order)
            if record is None:
                _warn_stopped(outcome)
                break
            if X_val is not None and len(X_val):
                record.update(loop.validate(X_val, y_val, metrics))
            record["seconds"] = time.perf_counter() - started
            outcome.history.append(record)
            bar.update(1)
            if best.update(record, epoch, net, outcome, keep_every=checkpoints.save == "all"):
                break
        bar.close()
        outcome.states["last"] = _trainable_state(net)
        if "best" in outcome.states:
            net.load_state_dict(outcome.states["best"], strict=False)
        return outcome


def _loss_function(task: str, class_weights: np.ndarray | None, device_name: str):
    import torch

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


class _Steps:
    """The optimisation steps of one training run: micro-batches, loss scaling, clipping, the schedule.

    It guards against non-finite losses and gradients (recorded in the
    outcome's diagnostics, which stop the run) and counts fp16 overflow
    steps, which the loss scaler skips by design.
    """

    def __init__(self, net, task, trainer, precision, device_name, loss_fn, n_train, outcome, step_hook):
        self.net, self.task, self.trainer, self.precision = net, task, trainer, precision
        self.device_name, self.loss_fn, self.outcome, self.step_hook = device_name, loss_fn, outcome, step_hook
        self.n_micro = math.ceil(n_train / trainer.batch_size)
        steps_per_epoch = max(1, math.ceil(self.n_micro / trainer.grad_accumulation))
        self.total_steps = steps_per_epoch * trainer.max_epochs
        self.warmup = int(round(trainer.warmup_epochs * steps_per_epoch))
        self.scaler = _grad_scaler(precision, device_name)
        self.overflows_in_a_row = 0
        self.global_step = 0
        self.optimizer, self.scheduler = self._make_optimizer()

    def _make_optimizer(self):
        import torch

        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.trainer.lr, weight_decay=self.trainer.weight_decay)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor)

    def _lr_factor(self, step: int) -> float:
        return warmup_cosine(step, self.warmup, self.total_steps)

    def new_optimizer(self) -> None:
        """A new optimiser for a new trainable set, its schedule where the old one was."""
        self.optimizer, self.scheduler = self._make_optimizer()
        for _ in range(self.global_step):  # the new schedule, fast-forwarded before its optimiser ever stepped
            _step_schedule(self.scheduler)

    def epoch(self, epoch: int, X_t, y_t, order) -> dict[str, Any] | None:
        """One pass over the training windows in ``order``; its history record, or ``None`` when it diverged."""
        losses, norms = [], []
        self.optimizer.zero_grad(set_to_none=True)
        batches = _micro_batches(X_t, y_t, order, self.trainer.batch_size, self.device_name)
        step_losses: list = []  # this optimiser step's micro-batch losses, still on the device
        try:
            for micro, (xb, yb) in enumerate(batches):
                step_losses.append(self._forward_backward(xb, yb))
                if (micro + 1) % self.trainer.grad_accumulation == 0 or micro == self.n_micro - 1:
                    if not self._step(epoch, micro, step_losses, losses, norms):
                        return None
                    step_losses = []
        finally:
            batches.close()  # a loop left early stops the gathering thread
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "grad_norm_mean": float(np.mean(norms)) if norms else float("nan"),
            "grad_norm_max": float(np.max(norms)) if norms else float("nan"),
        }
        self.outcome.diagnostics["grad_norms"].append(
            {"epoch": epoch, "mean": record["grad_norm_mean"], "max": record["grad_norm_max"]}
        )
        return record

    def _forward_backward(self, xb, yb):
        xb, yb = xb.to(self.device_name, non_blocking=True), yb.to(self.device_name, non_blocking=True)
        with autocast(self.device_name, self.precision):
            out = self.net(xb)
            loss = (
                self.loss_fn(out.float(), yb) if self.task == "classification" else self.loss_fn(out.float()[:, 0], yb)
            )
        scaled = loss / self.trainer.grad_accumulation
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return loss.detach()

    def _step(self, epoch: int, micro: int, step_losses: list, losses: list, norms: list) -> bool:
        """Clip and apply the accumulated gradients; ``False`` when the loss or gradient is not finite."""
        import torch

        scaler, optimizer = self.scaler, self.optimizer
        if scaler:
            scaler.unscale_(optimizer)
        params = [p for p in self.net.parameters() if p.requires_grad and p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.trainer.grad_clip or float("inf"))
        # The losses and the norm are read once per optimiser step, not after every forward: each read
        # makes the CPU wait for the GPU, which then idles while the next kernels are queued. A
        # non-finite loss leaves non-finite gradients, which are never applied.
        values = [float(v) for v in step_losses]
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            self._diverged("loss", epoch, micro - len(values) + 1 + bad[0])
            return False
        losses.extend(values)
        norm_value = float(norm)
        finite = math.isfinite(norm_value)
        # With fp16 loss scaling an inf gradient is an overflow: the scaler skips the step and lowers its
        # scale, by design. Only a run of them that no scale cures (or any without a scaler) is divergence.
        if not finite and (scaler is None or self.overflows_in_a_row >= MAX_OVERFLOWS_IN_A_ROW):
            self._diverged("gradient", epoch, micro)
            return False
        if finite:
            norms.append(norm_value)
            self.overflows_in_a_row = 0
        else:
            self.overflows_in_a_row += 1
            self.outcome.diagnostics["overflow_steps"] += 1
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        self.global_step += 1
        if self.step_hook is not None:
            self.step_hook(self.global_step)  # before zero_grad: AdaLoRA scores ranks from the gradients
        optimizer.zero_grad(set_to_none=True)
        _step_schedule(self.scheduler)
        return True

    def _diverged(self, what: str, epoch: int, batch: int) -> None:
        self.outcome.diagnostics["non_finite"] = {
            "what": what,
            "epoch": epoch,
            "step": self.global_step,
            "batch": batch,
        }

    def validate(self, X_val, y_val, metrics) -> dict[str, float]:
        """Validation loss and metrics of the network as it is now."""
        import torch

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
