"""The one training loop that fine-tuning and pretraining share, and its callbacks."""

from __future__ import annotations

import math

import pytest
import torch

from neurofm.training import (
    BestCheckpoint,
    Callback,
    EarlyStopping,
    GradNormLog,
    History,
    NonFiniteGuard,
    OptimizerSteps,
    PeriodicCheckpoint,
    TrainingLoop,
)


def _steps(accumulation: int = 1, lr: float = 0.1) -> tuple[torch.nn.Linear, OptimizerSteps]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    steps = OptimizerSteps(
        model,
        optimizer,
        lambda step: lr,
        precision="fp32",
        device_name="cpu",
        grad_clip=None,
        accumulation=accumulation,
    )
    return model, steps


def _rounds(model, n_micro: int, poison: tuple[int, int] | None = None):
    """``micro_batches(index)``: ``n_micro`` squared-output losses; ``poison=(round, micro)`` makes one NaN."""
    x = torch.ones(2, 3)

    def micro_batches(index: int):
        for micro in range(n_micro):
            loss = model(x).pow(2).mean()
            if poison == (index, micro):
                loss = loss * float("nan")
            yield loss, {"micro": micro}

    return micro_batches


def _describe(loop: TrainingLoop) -> dict:
    return {"round": loop.index, "n_losses": len(loop.losses), "steps": loop.steps.step_number}


class _Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_round_start(self, loop):
        self.events.append(("start", loop.index))

    def on_step(self, loop, result):
        self.events.append(("step", loop.index, loop.micro_batch))

    def on_round_end(self, loop, record):
        self.events.append(("end", loop.index))

    def on_train_end(self, loop):
        self.events.append(("train_end",))


def test_a_round_steps_every_accumulation_micro_batches_and_once_more_for_its_leftovers():
    model, steps = _steps(accumulation=2)
    rows, recorder = [], _Recorder()
    loop = TrainingLoop(steps, _rounds(model, 5), _describe, [recorder, NonFiniteGuard(), History(rows.append)])
    loop.run(0, 2)
    # 5 micro-batches, 2 per step: steps after micro-batches 1, 3 and (the leftover) 4, in each round.
    assert [e for e in recorder.events if e[0] == "step"] == [("step", r, m) for r in (0, 1) for m in (1, 3, 4)]
    assert recorder.events[0] == ("start", 0) and recorder.events[-1] == ("train_end",)
    assert [(r["round"], r["n_losses"], r["steps"]) for r in rows] == [(0, 5, 3), (1, 5, 6)]
    assert all(r["seconds"] >= 0 for r in rows)
    assert loop.parts == {"micro": 4} and loop.stop_reason is None


def test_the_guard_abandons_the_round_with_a_non_finite_loss_and_names_its_micro_batch():
    model, steps = _steps(accumulation=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    diagnostics, rows = {}, []
    loop = TrainingLoop(
        steps, _rounds(model, 4, poison=(1, 2)), _describe, [NonFiniteGuard(diagnostics), History(rows.append)]
    )
    with pytest.warns(RuntimeWarning, match="Non-finite loss at epoch 1"):
        loop.run(0, 5)
    assert [r["round"] for r in rows] == [0]  # the diverged round leaves no record; rounds 2-4 never ran
    assert diagnostics["non_finite"] == {"what": "loss", "epoch": 1, "step": 3, "batch": 2}
    assert diagnostics["stopped_early"] == "non-finite loss" == loop.stop_reason
    # Three steps were applied (two in round 0, one in round 1), none with the NaN.
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(before["weight"], model.weight)


def test_the_guard_can_raise_instead_and_a_loop_without_a_guard_refuses_to_train_on():
    model, steps = _steps()
    guard = NonFiniteGuard(error=lambda loop, result: FloatingPointError(f"{result.non_finite} at {loop.index}"))
    with pytest.raises(FloatingPointError, match="loss at 2"):
        TrainingLoop(steps, _rounds(model, 1, poison=(2, 0)), _describe, [guard]).run(0, 4)
    model, steps = _steps()
    with pytest.raises(RuntimeError, match="no callback stopped training"):
        TrainingLoop(steps, _rounds(model, 1, poison=(0, 0)), _describe, []).run(0, 1)


def test_early_stopping_and_the_best_checkpoint_follow_the_monitor():
    values = iter([3.0, 2.0, 2.5, float("nan"), 2.0, 1.0])
    model, steps = _steps()
    snapshots = []

    def snapshot(on_host):
        snapshots.append(on_host)
        return {"step": steps.step_number}

    best = BestCheckpoint("val", "min", snapshot, keep_every=True)
    diagnostics = {}
    stopping = EarlyStopping("val", "min", patience=3, diagnostics=diagnostics)

    def describe(loop):
        return {"val": next(values)}

    loop = TrainingLoop(steps, _rounds(model, 1), describe, [NonFiniteGuard(), best, stopping])
    loop.run(0, 10)
    # 2.0 at round 1 is best; 2.5, NaN and an equal 2.0 are not improvements: stopped after round 4.
    assert loop.index == 4 and loop.stop_reason == diagnostics["stopped_early"]
    assert "did not improve for 3 epochs" in loop.stop_reason
    assert (best.best_index, best.best_value) == (1, 2.0)
    assert best.states["best"] == {"step": 2} and sorted(k for k in best.states if k != "best") == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="checkpoint monitor 'val_auc' is not logged"):
        TrainingLoop(steps, _rounds(model, 1), describe, [BestCheckpoint("val_auc", "max", snapshot)]).run(0, 1)


def test_gradient_norms_and_periodic_checkpoints():
    model, steps = _steps(accumulation=1)
    steps.grad_clip = 1e-3  # clipped, but the norm logged is the one before clipping
    rows, saved, last = [], [], []

    class LastNorm(Callback):
        def on_step(self, loop, result):
            last.append(result.grad_norm)

    callbacks = [
        NonFiniteGuard(),
        LastNorm(),
        GradNormLog(diagnostics=(diagnostics := {})),
        GradNormLog(column="grad_norm"),
        History(rows.append),
        PeriodicCheckpoint(every=2, last=5, save=saved.append),
    ]
    TrainingLoop(steps, _rounds(model, 3), _describe, callbacks).run(0, 5)
    assert saved == [2, 4, 5]
    for index, row in enumerate(rows):
        norms = last[3 * index : 3 * index + 3]
        assert row["grad_norm_mean"] == pytest.approx(sum(norms) / 3, rel=1e-12)
        assert row["grad_norm_max"] == max(norms) and row["grad_norm"] == norms[-1]
        assert diagnostics["grad_norms"][index] == {"epoch": index, "mean": row["grad_norm_mean"], "max": max(norms)}
    assert all(math.isfinite(n) and n > 1e-3 for n in last)
