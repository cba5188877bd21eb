"""Chance level by label permutation and paired comparison of models."""

from __future__ import annotations

import numpy as np

from neurofm import Experiment, ExperimentResult
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig
from neurofm.simulate import simulate_eeg_dataset


def _run(X, y, meta, info, tmp_path, n_permutations=19):
    models = {"bandpower_lr": ClassicalModelConfig(estimator="bandpower_lr"),
              "prior_dummy": ClassicalModelConfig(estimator="DummyClassifier", params={"strategy": "prior"})}
    cfg = ExperimentConfig(models=models, metrics=["balanced_accuracy", "roc_auc"], cache_dir=str(tmp_path), verbose=False,
                           n_permutations=n_permutations,
                           cv=CVConfig(strategy="stratified_group_kfold", n_splits=4, group_key="Subject"))
    return Experiment(cfg).run(X, y, sample_metadata=meta, **info)


def test_permutation_p_values_separate_signal_from_chance(tmp_path):
    X, y, meta, info = simulate_eeg_dataset(n_subjects=4, n_windows_per_class=12, effect_size=0.9, random_state=5)
    result = _run(X, y, meta, info, tmp_path)
    stats = result.get_statistics().set_index(["Model", "Metric"])
    assert stats.loc[("bandpower_lr", "balanced_accuracy"), "p_value"] == 1 / 20  # beats all 19 shuffles
    assert abs(stats.loc[("bandpower_lr", "balanced_accuracy"), "chance_mean"] - 0.5) < 0.1
    assert stats.loc[("prior_dummy", "balanced_accuracy"), "p_value"] > 0.2  # a constant predictor is at chance
    saved = ExperimentResult.load(result.save(tmp_path / "out"))
    assert saved.get_statistics().equals(result.get_statistics())


def test_paired_comparison_on_the_same_folds(tmp_path):
    X, y, meta, info = simulate_eeg_dataset(n_subjects=4, n_windows_per_class=12, effect_size=0.9, random_state=5)
    result = _run(X, y, meta, info, tmp_path, n_permutations=0)
    cmp = result.compare("bandpower_lr", "prior_dummy", "balanced_accuracy")
    scores = result.get_detailed_scores().query("Metric == 'balanced_accuracy'").pivot(index="Fold", columns="Model",
                                                                                       values="Value")
    np.testing.assert_allclose(cmp["differences"], (scores["bandpower_lr"] - scores["prior_dummy"]).to_numpy())
    assert cmp["n_folds"] == 4 and cmp["mean_difference"] > 0.2
    assert 0 < cmp["corrected_t_p"] < 0.05
    assert result.get_statistics().empty


def test_trainable_models_are_permuted_only_when_asked(tmp_path):
    from neurofm.configs import NeuralFineTuneConfig, TrainerConfig
    from neurofm.models import get_model_spec

    X, y, meta, info = simulate_eeg_dataset(n_subjects=3, n_windows_per_class=4, random_state=2)
    tuner = NeuralFineTuneConfig(model_key="cbramod", weights="random", train_mode="frozen",
                                 model_kwargs=get_model_spec("cbramod").tiny_kwargs,
                                 trainer=TrainerConfig(max_epochs=1, batch_size=8, early_stopping_patience=None))
    base = {"models": {"tuned": tuner}, "metrics": ["balanced_accuracy"], "cache_dir": str(tmp_path), "verbose": False,
            "n_permutations": 2, "cv": CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject")}
    skipped = Experiment(ExperimentConfig(**base)).run(X, y, sample_metadata=meta, **info)
    assert skipped.get_statistics().empty
    note = skipped.get_model_artifacts(artifact_type="permutation_test")
    assert list(note["ArtifactKey"]) == ["skipped"] and "permute_trainable=True" in note["ArtifactValue"].iloc[0]
    permuted = Experiment(ExperimentConfig(**base, permute_trainable=True)).run(X, y, sample_metadata=meta, **info)
    stats = permuted.get_statistics().set_index("Model")
    assert 1 / 3 <= stats.loc["tuned", "p_value"] <= 1 and np.isfinite(stats.loc["tuned", "chance_mean"])
