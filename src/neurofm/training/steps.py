"""One optimiser step at a time, for fine-tuning and pretraining alike.

:class:`OptimizerSteps` owns what happens between a micro-batch's loss and the
update: loss scaling for fp16, gradient accumulation, the non-finite guard,
clipping and the gradients' norm, and the learning rate of the one schedule
both use (:func:`warmup_cosine`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["MAX_OVERFLOWS_IN_A_ROW", "OptimizerSteps", "StepResult", "warmup_cosine"]


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


def _grad_scaler(precision: str, device_name: str):
    """The loss scaler fp16 training needs on CUDA (``None`` elsewhere: bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda") if precision == "fp16" and device_name.startswith("cuda") else None


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

    @property
    def pending(self) -> int:
        """Micro-batches whose gradients wait for the next :meth:`step`."""
        return len(self._pending)

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
