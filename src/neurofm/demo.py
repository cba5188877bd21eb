"""The built-in demo: two frozen backbones and a classical baseline on simulated EEG."""

from __future__ import annotations

from pathlib import Path

from .configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
)
from .experiment import Experiment
from .results import ExperimentResult
from .simulate import simulate_eeg_dataset

__all__ = ["demo_config", "run_demo"]

DEMO_BACKBONES = ("cbramod", "labram")


def demo_config(
    cache_dir: str = "~/.cache/neurofm", verbose: bool = True, pretrained: bool = False
) -> ExperimentConfig:
    """The demo's experiment: CBraMod and LaBraM probes and a band-power baseline.

    Parameters
    ----------
    cache_dir : str
        The embedding cache.
    verbose : bool
        Progress bars and logs.
    pretrained : bool
        The backbones with their published weights (downloaded once into the
        Hugging Face cache: :mod:`neurofm.models.hub`); ``False`` (default):
        randomly initialised, offline.
    """
    head = ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 2000, "C": 0.1})
    weights, label = (None, "pretrained") if pretrained else ("random", "random")
    models = {
        f"{key}_{label}_probe": FrozenBackboneDecoderConfig(
            backbone=FoundationEmbeddingModelConfig(model_key=key, weights=weights, pooling="mean"),
            head=head,
        )
        for key in DEMO_BACKBONES
    }
    models["bandpower_lr"] = ClassicalModelConfig(estimator="bandpower_lr")
    return ExperimentConfig(
        task="classification",
        models=models,
        metrics=["balanced_accuracy", "roc_auc"],
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
        cache_dir=cache_dir,
        verbose=verbose,
    )


def run_demo(
    out_dir: str | Path | None = None,
    cache_dir: str = "~/.cache/neurofm",
    verbose: bool = True,
    pretrained: bool = False,
) -> ExperimentResult:
    """Simulate 6 subjects of motor imagery and cross-validate the demo models across subjects.

    ``pretrained``: the backbones' published weights (see :func:`demo_config`).
    """
    X, y, meta, info = simulate_eeg_dataset(n_subjects=6, n_windows_per_class=20)
    result = Experiment(demo_config(cache_dir, verbose, pretrained)).run(X, y, sample_metadata=meta, **info)
    if out_dir is not None:
        result.save(out_dir)
    return result
