"""The training loop fine-tuning and pretraining share, and the callbacks that give it its duties.

A run is a sequence of *rounds*: an epoch of fine-tuning, one step of
pretraining. Each round feeds micro-batch losses to :class:`OptimizerSteps`,
which steps every ``accumulation`` of them and once more for a round's
leftovers; the round is then described by one record (a row of history).
What happens around that (the non-finite guard, gradient-norm logging,
history, progress, keeping the best state, early stopping, periodic
checkpoints) is a :class:`Callback` each, called in the order given, so the
same duty is written once for both kinds of training.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..utils.logging import logger
from .steps import OptimizerSteps, StepResult

__all__ = [
    "BestCheckpoint",
    "Callback",
    "EarlyStopping",
    "GradNormLog",
    "History",
    "NonFiniteGuard",
    "PeriodicCheckpoint",
    "ProgressBar",
    "TrainingLoop",
]


class Callback:
    """A duty of the training loop; each hook does nothing unless overridden.

    Hooks run in the order the callbacks were given; a later callback sees
    what an earlier one wrote into the record.
    """

    def on_round_start(self, loop: TrainingLoop) -> None:
        """Before a round's first micro-batch is drawn."""

    def on_step(self, loop: TrainingLoop, result: StepResult) -> None:
        """After each optimiser step (applied or not: ``result.non_finite`` says)."""

    def on_round_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        """After a round that finished, with its record (callbacks may add to it)."""

    def on_train_end(self, loop: TrainingLoop) -> None:
        """When the loop ends, however it ended (not when a callback raised)."""


class TrainingLoop:
    """Rounds of micro-batches through one :class:`OptimizerSteps`, with callbacks.

    Parameters
    ----------
    steps : OptimizerSteps
        Takes the optimiser steps (its ``accumulation`` says how many micro-batches make one).
    micro_batches : callable
        ``micro_batches(index)``: the round's ``(loss, parts)`` pairs, ``parts`` a dict of
        named loss components (empty when there are none). Drawn lazily, after the
        round's ``on_round_start``; closed when the round ends early.
    describe : callable
        ``describe(loop) -> dict``: the finished round's record, from what the loop
        holds (``index``, ``losses``, ``parts``, ``last_result``, ``steps``).
    callbacks : sequence of Callback

    Attributes
    ----------
    index : int
        The current round.
    micro_batch : int
        The current round's last micro-batch so far (0-based).
    losses : list of float
        The losses of the round's applied steps' micro-batches.
    parts : dict
        The components of the round's last micro-batch's loss.
    last_result : StepResult | None
        The last optimiser step's result.
    last_record : dict | None
        The last finished round's record.
    stop_reason : str | None
        Why training stopped before its last round, once a callback said so.
    started : float
        When the run started (``time.perf_counter``): the loop's creation unless set.
    """

    def __init__(
        self,
        steps: OptimizerSteps,
        micro_batches: Callable[[int], Iterable[tuple[Any, dict[str, Any]]]],
        describe: Callable[[TrainingLoop], dict[str, Any]],
        callbacks: Sequence[Callback] = (),
    ):
        self.steps, self.micro_batches, self.describe = steps, micro_batches, describe
        self.callbacks = list(callbacks)
        self.index = 0
        self.micro_batch = 0
        self.losses: list[float] = []
        self.parts: dict[str, Any] = {}
        self.last_result: StepResult | None = None
        self.last_record: dict[str, Any] | None = None
        self.stop_reason: str | None = None
        self.round_started = self.started = time.perf_counter()

    def stop(self, reason: str) -> None:
        """End training: at once from ``on_step`` (the round is abandoned), else after this round's callbacks."""
        self.stop_reason = reason

    def run(self, start: int, stop: int) -> None:
        """Rounds ``start`` to ``stop - 1``, unless a callback stops the loop first."""
        for index in range(start, stop):
            self.index, self.round_started = index, time.perf_counter()
            for callback in self.callbacks:
                callback.on_round_start(self)
            if not self._train_round(self.micro_batches(index)):
                break
            record = self.describe(self)
            for callback in self.callbacks:
                callback.on_round_end(self, record)
            self.last_record = record
            if self.stop_reason is not None:
                break
        for callback in self.callbacks:
            callback.on_train_end(self)

    def _train_round(self, batches: Iterable[tuple[Any, dict[str, Any]]]) -> bool:
        """The round's micro-batches and steps; ``False`` when a callback stopped training during it."""
        self.losses, self.parts = [], {}
        iterator: Iterator = iter(batches)
        try:
            for self.micro_batch, (loss, parts) in enumerate(iterator):
                self.parts = parts
                self.steps.backward(loss)
                if self.steps.pending == self.steps.accumulation and not self._step():
                    return False
            return not self.steps.pending or self._step()
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a round left early stops whatever gathers its batches

    def _step(self) -> bool:
        result = self.last_result = self.steps.step()
        for callback in self.callbacks:
            callback.on_step(self, result)
        if self.stop_reason is not None:
            return False
        if result.non_finite is not None:
            raise RuntimeError(  # a loop without a NonFiniteGuard would train on as if nothing happened
                f"A non-finite {result.non_finite} at step {self.steps.step_number} and no callback stopped training"
            )
        self.losses.extend(result.losses)
        return True


class NonFiniteGuard(Callback):
    """Ends training at the first non-finite loss or gradient (whose update was not applied).

    Parameters
    ----------
    diagnostics : dict | None
        Where the event is recorded (``non_finite``: what, round, step, first
        micro-batch; ``stopped_early``) before the loop stops with a
        ``RuntimeWarning``. Used when ``error`` is ``None``.
    error : callable | None
        ``error(loop, result) -> Exception``: raised instead of stopping.
    """

    def __init__(self, diagnostics: dict[str, Any] | None = None, error=None):
        self.diagnostics = diagnostics if diagnostics is not None else {}
        self.error = error

    def on_step(self, loop: TrainingLoop, result: StepResult) -> None:
        if result.non_finite is None:
            return
        if self.error is not None:
            raise self.error(loop, result)
        last = loop.micro_batch
        first = last if result.micro_batch is None else last - len(result.losses) + 1 + result.micro_batch
        event = {"what": result.non_finite, "epoch": loop.index, "step": loop.steps.step_number, "batch": first}
        self.diagnostics["non_finite"] = event
        message = (
            f"Non-finite {event['what']} at epoch {event['epoch']}, optimiser step {event['step']}: "
            "training of this fold stopped"
        )
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        self.diagnostics["stopped_early"] = f"non-finite {event['what']}"
        loop.stop(self.diagnostics["stopped_early"])


class GradNormLog(Callback):
    """The gradients' norm (before clipping) in each round's record.

    Parameters
    ----------
    column : str | None
        ``None``: the mean and maximum over the round's applied steps, as
        ``grad_norm_mean`` and ``grad_norm_max`` (NaN without any); a name: the
        round's last step's norm under that name (``None`` for an overflow step).
    diagnostics : dict | None
        With ``column=None``, each round's mean and maximum are also appended to its ``grad_norms`` list.
    """

    def __init__(self, column: str | None = None, diagnostics: dict[str, Any] | None = None):
        self.column, self.diagnostics = column, diagnostics
        self._norms: list[float] = []

    def on_round_start(self, loop: TrainingLoop) -> None:
        self._norms = []

    def on_step(self, loop: TrainingLoop, result: StepResult) -> None:
        if result.non_finite is None and result.grad_norm is not None:
            self._norms.append(result.grad_norm)

    def on_round_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        if self.column is not None:
            record[self.column] = loop.last_result.grad_norm
            return
        norms = self._norms
        record["grad_norm_mean"] = float(np.mean(norms)) if norms else float("nan")
        record["grad_norm_max"] = float(np.max(norms)) if norms else float("nan")
        if self.diagnostics is not None:
            self.diagnostics.setdefault("grad_norms", []).append(
                {"epoch": loop.index, "mean": record["grad_norm_mean"], "max": record["grad_norm_max"]}
            )


class History(Callback):
    """Each round's record, with its time in seconds, handed to ``write``.

    Parameters
    ----------
    write : callable
        ``write(record)``: keeps the row (a list's ``append``, a CSV writer).
    since : {"round", "run"}
        ``seconds`` counts from the round's start, or from the loop's.
    digits : int | None
        ``seconds`` rounded to this many decimals (``None``: as measured).
    """

    def __init__(self, write: Callable[[dict[str, Any]], None], since: str = "round", digits: int | None = None):
        self.write, self.since, self.digits = write, since, digits

    def on_round_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        seconds = time.perf_counter() - (loop.round_started if self.since == "round" else loop.started)
        record["seconds"] = seconds if self.digits is None else round(seconds, self.digits)
        self.write(record)


class ProgressBar(Callback):
    """Advances a tqdm bar by one per round (showing ``postfix`` from the record), closed at the end."""

    def __init__(self, bar, postfix: str | None = None):
        self.bar, self.postfix = bar, postfix

    def on_round_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        self.bar.update(1)
        if self.postfix is not None:
            self.bar.set_postfix({self.postfix: f"{record[self.postfix]:.4f}"})

    def on_train_end(self, loop: TrainingLoop) -> None:
        self.bar.close()


class _Monitor:
    """A logged value that is followed for improvement (lower for ``min``, higher for ``max``)."""

    def __init__(self, name: str, mode: str):
        self.name, self.mode = name, mode
        self.best: float | None = None

    def improved(self, record: dict[str, Any]) -> bool:
        """Whether the record's value is finite and better than any before (then it is the new best)."""
        if self.name not in record:
            available = sorted(k for k in record if k not in ("epoch", "seconds"))
            raise ValueError(
                f"checkpoint monitor {self.name!r} is not logged; logged values are {available}"
                + (" (validation metrics need validation_fraction > 0)" if self.name.startswith("val_") else "")
            )
        value = record[self.name]
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better and np.isfinite(value):
            self.best = value
            return True
        return False


class BestCheckpoint(Callback):
    """Keeps the state of the best round by a monitored value (and, optionally, of every round).

    Parameters
    ----------
    monitor, mode : str
        The record's value to follow, and which way is better (``min`` or ``max``).
    snapshot : callable
        ``snapshot(on_host) -> state``: the state to keep (``on_host``: copied to the CPU's memory).
    keep_every : bool
        Keep every round's state as well (on the host), under its index.

    Attributes
    ----------
    states : dict
        ``"best"`` and, with ``keep_every``, each round's index -> state.
    best_index : int | None
    best_value : float | None
    """

    def __init__(self, monitor: str, mode: str, snapshot, keep_every: bool = False):
        self._monitor = _Monitor(monitor, mode)
        self.snapshot, self.keep_every = snapshot, keep_every
        self.states: dict[Any, Any] = {}
        self.best_index: int | None = None
        self.best_value: float | None = None

    def on_round_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        improved = self._monitor.improved(record)
        if self.keep_every:
            self.states[loop.index] = self.snapshot(True)
        if improved:
            self.best_index, self.best_value = loop.index, float(self._monitor.best)
            self.states["best"] = self.snapshot(False)


class EarlyStopping(Callback):
    """Stops training when a monitored value has not improved for ``patience`` rounds.

    Parameters
    ----------
    monitor, mode : str
        As for :class:`BestCheckpoint`.
    patience : int
    diagnostics : dict | None
        Where the reason is recorded (``stopped_early``).
    """

    def __init__(self, monitor: str, mode: str, patience: int, diagnostics: dict[str, Any] | None = None):
        self._monitor, self.patience = _Monitor(monitor, mode), patience
        self.patience_left = patience
        self.diagnostics = diagnostics if diagnostics is not None else {}

    def on_round_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        if self._monitor.improved(record):
            self.patience_left = self.patience
            return
        self.patience_left -= 1
        if self.patience_left <= 0:
            reason = f"early stopping: {self._monitor.name} did not improve for {self.patience} epochs"
            self.diagnostics["stopped_early"] = reason
            loop.stop(reason)


class PeriodicCheckpoint(Callback):
    """Saves every ``every`` rounds and after round ``last``: ``save(rounds_done)``."""

    def __init__(self, every: int, last: int, save: Callable[[int], None]):
        self.every, self.last, self.save = every, last, save

    def on_round_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        done = loop.index + 1
        if done % self.every == 0 or done == self.last:
            self.save(done)
