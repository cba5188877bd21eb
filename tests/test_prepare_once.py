"""Prepare once: a run plans each model's adaptation once, checks it once, and adapts trainable windows once."""

from __future__ import annotations

import numpy as np
import pytest

import neurofm.estimators.frozen as frozen_module
import neurofm.estimators.neural as neural_module
from neurofm import Experiment
from neurofm.adapt import AdaptationPlan
from neurofm.configs import (
    CheckpointConfig,
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
    LoRAConfig,
    NeuralFineTuneConfig,
    TrainerConfig,
)
from neurofm.estimators.frozen import FoundationEmbedder
from neurofm.estimators.neural import NeuralFineTuner
from neurofm.estimators.prepared import AdaptedWindows, PreparedInput
from neurofm.exceptions import ConfigError
from neurofm.models import get_model_spec
from neurofm.simulate import simulate_eeg_dataset

N_SPLITS = 3


@pytest.fixture(scope="module")
def data():
    return simulate_eeg_dataset(n_subjects=3, n_windows_per_class=4, random_state=5)


def _fine_tune(key="labram", **kw):
    return NeuralFineTuneConfig(
        model_key=key,
        weights="random",
        train_mode=kw.pop("train_mode", "lora"),
        model_kwargs=get_model_spec(key).tiny_kwargs,
        trainer=TrainerConfig(max_epochs=1, batch_size=8),
        checkpoints=CheckpointConfig(save="none"),
        lora=LoRAConfig(r=4),
        **kw,
    )


def _tuner(cfg, info, tmp_path):
    return NeuralFineTuner(
        cfg,
        sfreq=info["sfreq"],
        ch_names=info["ch_names"],
        metrics=["balanced_accuracy"],
        cache_dir=str(tmp_path),
        verbose=False,
    )


def _counting(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_a_run_plans_and_checks_each_model_once_whatever_the_number_of_folds(data, tmp_path, monkeypatch):
    X, y, meta, info = data
    plans = _counting(monkeypatch, neural_module, "plan_adaptation")
    frozen_plans = _counting(monkeypatch, frozen_module, "plan_adaptation")
    checks = _counting(monkeypatch, NeuralFineTuner, "check_input")
    adapted_by_tuner = []
    apply = AdaptationPlan.apply

    def counted_apply(plan, windows, statistics=None):
        if plan.model_key == "labram":
            adapted_by_tuner.append(len(windows))
        return apply(plan, windows, statistics)

    monkeypatch.setattr(AdaptationPlan, "apply", counted_apply)
    config = ExperimentConfig(
        models={
            "labram_lora": _fine_tune(),
            "cbramod_lr": FrozenBackboneDecoderConfig(
                backbone=FoundationEmbeddingModelConfig(
                    model_key="cbramod", weights="random", model_kwargs=get_model_spec("cbramod").tiny_kwargs
                ),
                head=ClassicalModelConfig(estimator="LogisticRegression"),
            ),
        },
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=N_SPLITS, group_key="Subject"),
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    result = Experiment(config).run(X, y, sample_metadata=meta, **info)
    assert result.scores["Fold"].nunique() == N_SPLITS
    # One plan per backbone model for the whole run, none per fold (the previous code planned each fold again).
    assert len(plans) == 1 and len(frozen_plans) == 1
    assert len(checks) == 1  # with it the LoRA targets' check, which builds the backbone (on meta)
    # Every window reaches the fine-tuned backbone's input once per run, not once per fold.
    assert sum(adapted_by_tuner) == len(X)


@pytest.mark.parametrize("key", ["labram", "biot"])  # a square channel map; a bipolar montage with normalisation
def test_windows_adapted_once_train_and_predict_to_the_same_bits_as_raw_windows(key, data, tmp_path):
    X, y, meta, info = data
    train, test = np.arange(len(X)) % 4 != 0, np.arange(len(X)) % 4 == 0
    groups = meta["Subject"].to_numpy()
    cfg = _fine_tune(key, train_mode="full")
    raw = _tuner(cfg, info, tmp_path).fit(X[train], y[train], groups=groups[train])
    estimator = _tuner(cfg, info, tmp_path)
    prepared = estimator.check_input(X.shape, y)
    adapted = prepared.adapt(X)
    assert isinstance(adapted, AdaptedWindows) and adapted.shape == X.shape
    estimator.fit(adapted[train], y[train], groups=groups[train], prepared=prepared)
    timeless = [[{k: v for k, v in epoch.items() if k != "seconds"} for epoch in e.history_] for e in (estimator, raw)]
    assert timeless[0] == timeless[1]
    np.testing.assert_array_equal(estimator.predict_proba(adapted[test]), raw.predict_proba(X[test]))
    np.testing.assert_array_equal(estimator.predict_proba(X[test]), raw.predict_proba(X[test]))


def test_fit_refuses_a_prepared_input_checked_for_other_settings_or_windows(data, tmp_path):
    X, y, _, info = data
    estimator = _tuner(_fine_tune(), info, tmp_path)
    prepared = estimator.check_input(X.shape, y)
    assert isinstance(prepared, PreparedInput) and prepared.weights == estimator.identify_weights()
    with pytest.raises(ConfigError, match="shape"):
        estimator.fit(X[:, :, :320], y, prepared=prepared)
    changed = _tuner(_fine_tune(), info, tmp_path).set_params(random_state=1)
    with pytest.raises(ConfigError, match="other estimator parameters"):
        changed.fit(X, y, prepared=prepared)
    with pytest.raises(ConfigError, match="prepared="):
        changed.fit(prepared.adapt(X), y)
    # The identity an experiment sets afterwards is not a setting the check depended on.
    estimator.set_params(expected_weights=prepared.weights, verbose=True)
    estimator.set_params(verbose=False).fit(X, y, prepared=prepared)
    assert estimator.plan_ is prepared.plan


def test_windows_adapted_for_another_plan_are_refused(data, tmp_path):
    X, y, _, info = data
    labram = _tuner(_fine_tune(), info, tmp_path)
    labram.fit(X, y)
    other = _tuner(_fine_tune("cbramod"), info, tmp_path).check_input(X.shape, y).adapt(X)
    with pytest.raises(ConfigError, match="another plan"):
        labram.predict(other)


def test_a_recording_level_plan_is_not_adapted_ahead_and_asks_for_a_new_check_when_recordings_change(data, tmp_path):
    X, y, _, info = data
    recordings = np.arange(len(X)) // 4
    estimator = _tuner(_fine_tune("reve", train_mode="full"), info, tmp_path)
    prepared = estimator.check_input(X.shape, y, recordings_known=True)
    assert prepared.plan.recording_statistics
    with pytest.raises(ConfigError, match="recording's statistics"):
        prepared.adapt(X)
    with pytest.raises(ConfigError, match="recordings_known=False"):
        estimator.fit(X, y, prepared=prepared)
    estimator.fit(X, y, recordings=recordings, prepared=prepared)
    # A model whose plan does not depend on recordings takes one check for both.
    labram = _tuner(_fine_tune(), info, tmp_path)
    labram.fit(X, y, recordings=recordings, prepared=labram.check_input(X.shape, y))


def test_the_frozen_embedder_reuses_its_check(data, tmp_path, monkeypatch):
    X, _, _, info = data
    embedder = FoundationEmbedder(
        "cbramod",
        weights="random",
        sfreq=info["sfreq"],
        ch_names=info["ch_names"],
        cache_dir=str(tmp_path),
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        verbose=False,
    )
    prepared = embedder.check_input(X.shape)
    plans = _counting(monkeypatch, frozen_module, "plan_adaptation")
    embedder.fit(X, prepared=prepared)
    assert plans == [] and embedder.plan_ is prepared.plan
    assert embedder.manifest_["weights"] == prepared.weights
    with pytest.raises(ConfigError, match="other estimator parameters"):
        embedder.set_params(pooling="cls" if embedder.pooling != "cls" else "mean").fit(X, prepared=prepared)


def test_a_run_takes_each_recordings_statistics_once_for_the_plan_and_the_extraction(data, tmp_path, monkeypatch):
    X, y, meta, info = data
    statistics = _counting(monkeypatch, frozen_module, "recording_statistics")
    probe = FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key="reve", weights="random", model_kwargs=get_model_spec("reve").tiny_kwargs
        ),
        head=ClassicalModelConfig(estimator="LogisticRegression"),
    )
    config = ExperimentConfig(
        models={"reve": probe},
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=N_SPLITS, group_key="Subject"),
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    recorded = meta.assign(recording=np.arange(len(X)) // 4)
    # With an output folder the plan counts the cached embeddings, which needs the fitted embedder: one fit serves
    # the count and the extraction, so every window is read once for its recording's statistics.
    Experiment(config).run(X, y, sample_metadata=recorded, output_dir=tmp_path / "out", **info)
    assert len(statistics) == 1
