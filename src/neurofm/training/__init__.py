"""Training: optimiser steps, the loop and its callbacks, and fine-tuning on them.

- :mod:`.steps`: :class:`OptimizerSteps`, one optimiser step at a time (loss
  scaling, accumulation, the non-finite guard, clipping, the schedule).
- :mod:`.loop`: :class:`TrainingLoop`, rounds of micro-batches with callbacks
  (non-finite guard, gradient norms, history, progress, best state, early
  stopping, periodic checkpoints); fine-tuning and pretraining both run on it.
- :mod:`.finetune`: :func:`train_network` (epochs, validation, best-epoch
  restore) and :func:`predict_network`.
"""

from .finetune import TrainingOutcome, predict_network, train_network
from .loop import (
    BestCheckpoint,
    Callback,
    EarlyStopping,
    GradNormLog,
    History,
    NonFiniteGuard,
    PeriodicCheckpoint,
    ProgressBar,
    TrainingLoop,
)
from .steps import OptimizerSteps, StepResult, warmup_cosine

__all__ = [
    "BestCheckpoint",
    "Callback",
    "EarlyStopping",
    "GradNormLog",
    "History",
    "NonFiniteGuard",
    "OptimizerSteps",
    "PeriodicCheckpoint",
    "ProgressBar",
    "StepResult",
    "TrainingLoop",
    "TrainingOutcome",
    "predict_network",
    "train_network",
    "warmup_cosine",
]
