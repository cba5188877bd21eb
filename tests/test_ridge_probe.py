"""The closed-form ridge probe: what it fits, how it chooses its penalty, and its permutation test in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurofm import Experiment
from neurofm.configs import (
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
    RidgeProbeConfig,
)
from neurofm.estimators.ridge_probe import RidgeProbe
from neurofm.models import get_model_spec
from neurofm.tasks import PermutationTask, SharedInputs, permute_labels, ridge_permutations, run_permutation


def _features(n=120, d=30, seed=0, classes=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    y = np.asarray(classes)[rng.integers(0, len(classes), n)]
    means = rng.standard_normal((len(classes), d))
    X = rng.standard_normal((n, d)) * 3.0 + means[np.searchsorted(np.asarray(classes), y)] + 5.0
    return X.astype(np.float32), y


def test_with_one_penalty_it_is_ridge_on_standardised_features():
    X, _ = _features()
    target = X[:, :3].sum(axis=1) + np.random.default_rng(1).standard_normal(len(X))
    probe = RidgeProbe(task="regression", alphas=[7.0]).fit(X, target)
    reference = make_pipeline(StandardScaler(), Ridge(alpha=7.0)).fit(X.astype(np.float64), target)
    np.testing.assert_allclose(probe.predict(X), reference.predict(X.astype(np.float64)), rtol=0, atol=1e-9)


def test_classes_are_balanced_indicator_targets_and_the_largest_output_wins():
    X, y = _features()
    y[:80] = "a"  # a frequent class: balanced targets weigh it as much as each rare one
    classes = np.unique(y)
    counts = np.array([(y == c).sum() for c in classes])
    targets = (y[:, None] == classes[None]).astype(float) * len(y) / (len(classes) * counts)
    probe = RidgeProbe(alphas=[3.0]).fit(X, y)
    reference = make_pipeline(StandardScaler(), Ridge(alpha=3.0)).fit(X.astype(np.float64), targets)
    outputs = reference.predict(X.astype(np.float64))
    np.testing.assert_allclose(probe.decision_function(X), outputs, rtol=0, atol=1e-9)
    assert (probe.predict(X) == classes[np.argmax(outputs, axis=1)]).all()


def test_the_penalty_is_the_one_inner_folds_of_the_training_data_choose():
    X, y = _features(n=90)
    alphas = [0.01, 1.0, 100.0, 1e4, 1e6]
    probe = RidgeProbe(alphas=alphas, inner_splits=4, random_state=3).fit(X, y)
    classes = np.unique(y)
    counts = np.array([(y == c).sum() for c in classes])
    errors = []
    for alpha in alphas:  # by hand: the same shuffled K-folds, the targets as the probe codes them
        error = 0.0
        for train, test in KFold(4, shuffle=True, random_state=3).split(X):
            yt = y[train]
            inner_counts = np.array([(yt == c).sum() for c in classes])
            coded = (yt[:, None] == classes[None]).astype(float) * len(yt) / (len(classes) * inner_counts)
            model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X[train].astype(np.float64), coded)
            true = (y[test][:, None] == classes[None]).astype(float) * len(yt) / (len(classes) * inner_counts)
            error += ((model.predict(X[test].astype(np.float64)) - true) ** 2).sum()
        errors.append(error)
    assert counts.min() > 0
    assert probe.alpha_ == alphas[int(np.argmin(errors))]
    # Only the data given to fit decides: the same rows with other rows appended change nothing fitted on them.
    again = RidgeProbe(alphas=alphas, inner_splits=4, random_state=3).fit(X, y)
    assert again.alpha_ == probe.alpha_ and np.array_equal(again.coef_, probe.coef_)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_closed_form_permutations_equal_refitting_on_the_same_permutations_exactly(task):
    X, y = _features(n=150, d=40)
    if task == "regression":
        y = X[:, 0].astype(np.float64) * 2.0 + np.random.default_rng(2).standard_normal(len(X))
    classes = np.unique(y) if task == "classification" else None
    metrics = ("balanced_accuracy", "roc_auc") if task == "classification" else ("r2", "mae")
    groups = np.repeat(np.arange(5), 30)
    splits = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, groups))
    rng = np.random.default_rng(0)
    permuted = [permute_labels(y, groups, rng) for _ in range(6)]
    probe = RidgeProbe(task=task, inner_splits=3, random_state=0)
    closed = ridge_permutations(probe, X, permuted, splits, classes, metrics)
    shared = SharedInputs({"probe": X}, y, groups)
    refitted = [run_permutation(PermutationTask(probe, False, p, splits, classes, metrics), shared) for p in permuted]
    assert closed == refitted  # every score of every permutation, bit for bit


def _probe_config(**head):
    return FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key="cbramod", weights="random", model_kwargs=get_model_spec("cbramod").tiny_kwargs
        ),
        head=RidgeProbeConfig(inner_splits=3, **head),
    )


def test_an_experiment_tests_a_ridge_probe_against_chance_in_closed_form_and_resumes_it(small_dataset, tmp_path):
    X, y, meta, info = small_dataset
    cfg = ExperimentConfig(
        models={"ridge": _probe_config()},
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),
        n_permutations=20,
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    first = Experiment(cfg).run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    rows = first.get_model_artifacts(artifact_type="permutation_test")
    tested = dict(zip(rows["ArtifactKey"], rows["ArtifactValue"], strict=True))
    assert tested["method"].startswith("closed form") and tested["n_permutations"] == 20
    assert 0 < tested["balanced_accuracy_p_value"] <= 1
    again = Experiment(cfg).run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    rows = again.get_model_artifacts(artifact_type="permutation_test")
    assert dict(zip(rows["ArtifactKey"], rows["ArtifactValue"], strict=True)) == tested  # read back from records


def test_the_head_round_trips_through_yaml_and_class_weight_is_refused_for_regression(tmp_path):
    cfg = ExperimentConfig(models={"ridge": _probe_config(alphas=[0.1, 10.0])}, cache_dir=str(tmp_path))
    cfg.to_yaml(tmp_path / "c.yaml")
    back = ExperimentConfig.from_yaml(tmp_path / "c.yaml")
    assert isinstance(back.models["ridge"].head, RidgeProbeConfig) and back.models["ridge"].head.alphas == [0.1, 10.0]
    assert back == cfg
    with pytest.raises(ValidationError, match="class_weight weighs classes"):
        ExperimentConfig(
            task="regression", models={"ridge": _probe_config(class_weight="balanced")}, cv=CVConfig(strategy="kfold")
        )
    regression = ExperimentConfig(task="regression", models={"ridge": _probe_config()}, cv=CVConfig(strategy="kfold"))
    assert regression.models["ridge"].head.class_weight == "balanced"  # the default, unused for regression
