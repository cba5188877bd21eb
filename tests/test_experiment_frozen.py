"""Frozen-backbone decoding through Experiment.run, end to end."""

from __future__ import annotations

import numpy as np
import pytest

from neurofm import Experiment, ExperimentResult
from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
)
from neurofm.models import get_model_spec


def probe(key="cbramod", estimator="LogisticRegression", **backbone):
    return FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key=key, weights="random", model_kwargs=get_model_spec(key).tiny_kwargs, **backbone
        ),
        head=ClassicalModelConfig(
            estimator=estimator, params={"max_iter": 500} if estimator == "LogisticRegression" else {}
        ),
    )


def config(models, cache_dir, **kw):
    return ExperimentConfig(
        task="classification",
        models=models,
        metrics=["balanced_accuracy", "roc_auc"],
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),
        cache_dir=cache_dir,
        verbose=False,
        **kw,
    )


def cache_stats(result, model):
    rows = result.get_model_artifacts(artifact_type="embedding_cache", model=model)
    return dict(zip(rows["ArtifactKey"], rows["ArtifactValue"], strict=True))


def test_frozen_probe_runs_and_reuses_embeddings_across_heads_and_runs(small_dataset, cache_dir, tmp_path):
    X, y, meta, info = small_dataset
    models = {
        "cbramod_lr": probe(),
        "cbramod_lda": probe(estimator="LinearDiscriminantAnalysis"),
        "bandpower": ClassicalModelConfig(estimator="bandpower_lr"),
    }
    result = Experiment(config(models, cache_dir)).run(X, y, sample_metadata=meta, **info)
    n = len(X)
    assert (cache_stats(result, "cbramod_lr")["hits"], cache_stats(result, "cbramod_lr")["misses"]) == (0, n)
    assert (cache_stats(result, "cbramod_lda")["hits"], cache_stats(result, "cbramod_lda")["misses"]) == (n, 0)

    again = Experiment(config(models, cache_dir)).run(X, y, sample_metadata=meta, **info)
    assert cache_stats(again, "cbramod_lr")["misses"] == 0
    scores = result.get_detailed_scores().sort_values(["Model", "Fold", "Metric"]).reset_index(drop=True)
    scores2 = again.get_detailed_scores().sort_values(["Model", "Fold", "Metric"]).reset_index(drop=True)
    np.testing.assert_array_equal(scores["Value"], scores2["Value"])  # embeddings from the cache: the same bits

    summary = result.summary()
    assert set(summary["Model"]) == set(models)
    adaptation = result.get_model_artifacts(artifact_type="input_adaptation", model="cbramod_lr")
    assert {"units", "resample"} <= set(adaptation["ArtifactKey"])
    backbone = result.get_model_artifacts(artifact_type="backbone", model="cbramod_lr")
    assert dict(zip(backbone["ArtifactKey"], backbone["ArtifactValue"], strict=True))["random_init"] is True

    out = result.save(tmp_path / "out")
    loaded = ExperimentResult.load(out)
    assert cache_stats(loaded, "cbramod_lr") == cache_stats(result, "cbramod_lr")
    assert loaded.config["models"]["cbramod_lr"]["backbone"]["weights"] == "random"


def test_mne_epochs_input(small_dataset, cache_dir):
    import mne

    X, y, meta, info = small_dataset
    mne_info = mne.create_info(info["ch_names"], info["sfreq"], ch_types="eeg")
    epochs = mne.EpochsArray(X, mne_info, metadata=meta, verbose=False)
    result = Experiment(config({"p": probe()}, cache_dir)).run(epochs, y)
    assert result.get_predictions()["SampleIndex"].nunique() == len(X)


def test_integer_labels_and_heads_without_probabilities(small_dataset, cache_dir):
    X, y, meta, info = small_dataset
    y_int = (y == "right_hand").astype(int)
    result = Experiment(config({"svm": probe(estimator="LinearSVC")}, cache_dir)).run(
        X, y_int, sample_metadata=meta, **info
    )
    auc = result.get_detailed_scores().query("Metric == 'roc_auc'")["Value"]
    assert auc.notna().all()  # decision_function stands in for probabilities
    assert set(result.get_predictions()["y_pred"]) <= {0, 1}


def test_adaptation_error_happens_before_any_backbone_runs(small_dataset, cache_dir, monkeypatch):
    from neurofm.exceptions import AdaptationError

    X, y, meta, info = small_dataset
    calls = []
    monkeypatch.setattr("neurofm.estimators.frozen.embed_windows", lambda *a, **k: calls.append(1))
    models = {"fine": probe(), "impossible": probe(key="bendr")}
    with pytest.raises(
        AdaptationError,
        match=r"'bendr' expects the electrodes .* only 3 of its 19 electrodes are present, "
        r"missing .* Record or rename these channels .* or choose a model that accepts",
    ):
        Experiment(config(models, cache_dir)).run(
            X[:, :3], y, sample_metadata=meta, sfreq=info["sfreq"], ch_names=info["ch_names"][:3]
        )
    assert calls == []


def test_a_frozen_probe_with_a_ridge_head_learns_a_continuous_target(small_dataset, cache_dir):
    """The regression path end to end on a target it can learn: the amplitude of a 10 Hz rhythm of random phase.

    A linear model of the raw samples cannot follow an amplitude whose phase changes from window to window; the
    backbone's nonlinear features can, so the Ridge head on them explains most of the variance of held-out subjects.
    """
    X, _, meta, info = small_dataset
    rng = np.random.default_rng(0)
    amplitude = rng.uniform(0.0, 1.0, len(X))
    t = np.arange(X.shape[-1]) / info["sfreq"]
    pattern = rng.standard_normal((1, X.shape[1], 1))
    phase = rng.uniform(0.0, 2 * np.pi, (len(X), 1, 1))
    X = X + 20e-6 * amplitude[:, None, None] * pattern * np.sin(2 * np.pi * 10.0 * t + phase)
    models = {"probe": probe(estimator="Ridge"), "raw_ridge": ClassicalModelConfig(estimator="Ridge")}
    cfg = ExperimentConfig(
        task="regression",
        models=models,
        metrics=["r2", "mae"],
        cache_dir=cache_dir,
        verbose=False,
        cv=CVConfig(strategy="group_kfold", n_splits=4, group_key="Subject"),
    )
    result = Experiment(cfg).run(X, amplitude, sample_metadata=meta, **info)
    r2 = result.get_detailed_scores().query("Metric == 'r2'").pivot(index="Fold", columns="Model", values="Value")
    # Measured 0.85-0.93 per held-out subject; a probe that predicted the mean (or the training targets) scores <= 0.
    assert (r2["probe"] > 0.5).all() and r2["probe"].mean() > 0.7, r2["probe"].tolist()
    assert r2["raw_ridge"].mean() < 0.3  # the same head on raw samples cannot: the probe's features carry it
    predictions = result.get_predictions().query("Model == 'probe'")
    assert predictions["y_pred"].nunique() == len(X)  # a continuous prediction per window
    np.testing.assert_array_equal(predictions["y_true"].to_numpy(), amplitude[predictions["SampleIndex"].to_numpy()])
