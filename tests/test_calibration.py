"""Calibration: the ece and brier metrics, their direction, and the report's reliability diagrams."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import brier_score_loss

import neurofm.experiment
from neurofm import Experiment
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig
from neurofm.metrics import LOWER_IS_BETTER, greater_is_better, metric_names, reliability_bins, score
from neurofm.report import write_report

BINARY = np.array([0, 1])


def _calibrated_binary():
    """Two confidence levels, each as often right as it is confident: 0.6 on 5 windows (3 right), 0.75 on 4 (3 right)."""
    proba = np.array([[0.6, 0.4]] * 5 + [[0.25, 0.75]] * 4)
    y_true = np.array([0, 0, 0, 1, 1] + [1, 1, 1, 0])
    return y_true, proba


def _naive_ece(y_true, proba, classes, n_bins=15):
    """ECE written out bin by bin, independently of reliability_bins."""
    confidence = proba.max(axis=1)
    correct = classes[proba.argmax(axis=1)] == y_true
    total = 0.0
    for b in range(n_bins):
        lower, upper = b / n_bins, (b + 1) / n_bins
        inside = (confidence > lower) & (confidence <= upper) if b else confidence <= upper
        if inside.any():
            total += inside.sum() / len(y_true) * abs(correct[inside].mean() - confidence[inside].mean())
    return total


# -- the metrics against hand computations -------------------------------------------------------------------


def test_perfectly_calibrated_predictions_have_zero_ece():
    y_true, proba = _calibrated_binary()
    assert score("ece", y_true, proba.argmax(axis=1), proba, BINARY) == pytest.approx(0.0, abs=1e-12)


def test_brier_sums_the_squared_errors_over_classes_twice_scikit_learns_binary_score():
    y_true, proba = _calibrated_binary()
    # Per window, sum over both classes of (p_c - 1[y=c])^2: 0.6 right 0.4^2 + 0.4^2 = 0.32, 0.6 wrong
    # 0.6^2 + 0.6^2 = 0.72, 0.75 right 2 * 0.25^2 = 0.125, 0.75 wrong 2 * 0.75^2 = 1.125.
    expected = (3 * 0.32 + 2 * 0.72 + 3 * 0.125 + 1 * 1.125) / 9
    value = score("brier", y_true, proba.argmax(axis=1), proba, BINARY)
    assert value == pytest.approx(expected, abs=1e-12)
    # scikit-learn scores the positive class only: (p_1 - y)^2, which is half the two-class sum.
    assert value == pytest.approx(2 * brier_score_loss(y_true, proba[:, 1]), abs=1e-12)


def test_overconfident_predictions_have_the_ece_and_brier_computed_by_hand():
    classes = np.array(["a", "b", "c"])
    proba = np.array([[0.9, 0.05, 0.05]] * 4 + [[0.5, 0.3, 0.2]] * 2)
    y_true = np.array(["a", "a", "b", "c", "a", "a"])
    # Confidence 0.9 but half right: |0.5 - 0.9| on 4 of 6 windows; confidence 0.5 and both right: |1 - 0.5| on 2.
    assert score("ece", y_true, None, proba, classes) == pytest.approx(4 / 6 * 0.4 + 2 / 6 * 0.5, abs=1e-12)
    # Right at 0.9: 0.1^2 + 2 * 0.05^2 = 0.015; wrong at 0.9: 0.9^2 + 0.95^2 + 0.05^2 = 1.715;
    # right at 0.5: 0.5^2 + 0.3^2 + 0.2^2 = 0.38.
    expected = (2 * 0.015 + 2 * 1.715 + 2 * 0.38) / 6
    assert score("brier", y_true, None, proba, classes) == pytest.approx(expected, abs=1e-12)


def test_ece_matches_a_bin_by_bin_computation_on_random_probabilities():
    rng = np.random.default_rng(0)
    classes = np.arange(4)
    logits = 3 * rng.standard_normal((500, 4))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y_true = rng.integers(0, 4, 500)
    value = score("ece", y_true, proba.argmax(axis=1), proba, classes)
    assert value == pytest.approx(_naive_ece(y_true, proba, classes), abs=1e-12)
    assert value > 0.2  # random labels with confident probabilities: far from calibrated


def test_the_bins_are_right_closed_fifteenths_of_the_unit_interval():
    proba = np.array([[0.5, 0.5], [0.0, 1.0], [0.6, 0.4]])
    bins = reliability_bins(np.array([0, 1, 1]), proba, BINARY)
    # 0.5 lies in (7/15, 8/15], 0.6 = 9/15 closes (8/15, 9/15], 1.0 closes the last bin.
    assert bins["lower"].tolist() == pytest.approx([7 / 15, 8 / 15, 14 / 15])
    assert bins["n"].tolist() == [1, 1, 1]
    assert bins["accuracy"].tolist() == [1.0, 0.0, 1.0]  # the tie goes to the first class, as argmax does


@pytest.mark.parametrize("metric", ["ece", "brier"])
def test_without_probabilities_calibration_is_nan(metric):
    y_true, proba = _calibrated_binary()
    assert np.isnan(score(metric, y_true, proba.argmax(axis=1), None, BINARY))
    decision = np.column_stack([-proba[:, 1] * 3, proba[:, 1] * 3])  # what a model without predict_proba leaves
    assert np.isnan(score(metric, y_true, proba.argmax(axis=1), decision, BINARY))


@pytest.mark.parametrize("metric", ["ece", "brier", "neg_log_loss"])
def test_decision_values_that_look_like_probabilities_are_never_scored_as_probabilities(metric):
    y_true, proba = _calibrated_binary()  # rows in [0, 1] summing to 1, as a ridge probe's one-hot outputs can be
    assert np.isfinite(score(metric, y_true, proba.argmax(axis=1), proba, BINARY))
    assert np.isnan(score(metric, y_true, proba.argmax(axis=1), proba, BINARY, probabilities=False))
    assert score("roc_auc", y_true, proba.argmax(axis=1), proba, BINARY, probabilities=False) == score(
        "roc_auc", y_true, proba.argmax(axis=1), proba, BINARY
    )  # a ranking reads decision values as well as probabilities


def test_a_ridge_probes_outputs_are_decision_values_in_its_scores_predictions_and_report(tmp_path):
    from neurofm.estimators.ridge_probe import RidgeProbe
    from neurofm.tasks import FoldTask, SharedInputs, run_fold

    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 4))
    y = np.where(X[:, 0] + 0.5 * rng.standard_normal(80) > 0, "b", "a")
    # Plain one-hot targets: the two outputs sum to 1 exactly, and a strong penalty keeps them inside [0, 1].
    probe = RidgeProbe(alphas=[1e3], class_weight=None)
    classes = np.array(["a", "b"])
    task = FoldTask("ridge", 0, probe, False, np.arange(60), np.arange(60, 80), classes, ("ece", "brier", "roc_auc"))
    outcome = run_fold(task, SharedInputs({"ridge": X}, y, None))
    outputs = outcome.predictions[["decision_a", "decision_b"]].to_numpy()
    assert np.all((outputs >= 0) & (outputs <= 1)) and np.allclose(outputs.sum(axis=1), 1)  # they look like it
    assert not any(c.startswith("proba_") for c in outcome.predictions.columns)
    assert np.isnan(outcome.scores["ece"]) and np.isnan(outcome.scores["brier"])
    assert outcome.scores["roc_auc"] > 0.7


def test_calibration_metrics_are_lower_is_better_and_the_others_are_not():
    assert {"ece", "brier", "mae", "rmse", "hamming_loss"} == LOWER_IS_BETTER
    assert not greater_is_better("ece") and not greater_is_better("brier")
    for name in ("accuracy", "roc_auc", "r2", "neg_brier_score", "neg_log_loss", "recall[left]"):
        assert greater_is_better(name), name


# -- in an experiment --------------------------------------------------------------------------------------------


def _config(tmp_path, models, metrics, task="classification", n_permutations=0):
    strategy = "stratified_group_kfold" if task == "classification" else "group_kfold"
    return ExperimentConfig(
        task=task,
        models=models,
        metrics=metrics,
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
        n_permutations=n_permutations,
        cv=CVConfig(strategy=strategy, n_splits=2, group_key="Subject"),
    )


@pytest.fixture(scope="module")
def classification_dir(small_dataset, tmp_path_factory):
    """bandpower_lr (probabilities) and a RidgeClassifier (decision values only), 2 folds, saved."""
    tmp = tmp_path_factory.mktemp("calibration")
    X, y, meta, info = small_dataset
    models = {
        "bandpower_lr": ClassicalModelConfig(estimator="bandpower_lr"),
        "ridge": ClassicalModelConfig(estimator="RidgeClassifier"),
    }
    cfg = _config(tmp, models, ["roc_auc", "ece", "brier"])
    return Experiment(cfg).run(X, y, sample_metadata=meta, **info).save(tmp / "results")


def test_the_names_are_accepted_for_classification_only(tmp_path):
    assert {"ece", "brier"} <= set(metric_names("classification"))
    assert not {"ece", "brier"} & set(metric_names("regression"))
    with pytest.raises(ValidationError, match=r"'brier' is not available for task='regression' \(it scores classif"):
        _config(tmp_path, {"m": ClassicalModelConfig(estimator="Ridge")}, ["brier"], task="regression")


def test_each_folds_scores_are_those_of_its_test_predictions(classification_dir):
    from neurofm import ExperimentResult

    result = ExperimentResult.load(classification_dir)
    summary = result.summary().set_index(["Model", "Metric"])
    assert {("bandpower_lr", "ece"), ("bandpower_lr", "brier")} <= set(summary.index)
    preds = result.predictions
    columns = sorted(c for c in preds.columns if c.startswith("proba_"))
    classes = np.array([c.removeprefix("proba_") for c in columns])
    scores = result.scores.set_index(["Model", "Fold", "Metric"])["Value"]
    for fold, part in preds[preds["Model"] == "bandpower_lr"].groupby("Fold"):
        proba, truth = part[columns].to_numpy(), part["y_true"].astype(str).to_numpy()
        onehot = truth[:, None] == classes[None, :]
        assert scores[("bandpower_lr", fold, "brier")] == pytest.approx(np.mean(((proba - onehot) ** 2).sum(1)))
        assert scores[("bandpower_lr", fold, "ece")] == pytest.approx(_naive_ece(truth, proba, classes))
    # RidgeClassifier has no predict_proba: its decision values rank windows (roc_auc) but are not probabilities.
    assert np.isfinite(summary.loc[("ridge", "roc_auc"), "mean"])
    assert np.isnan(summary.loc[("ridge", "ece"), "mean"]) and np.isnan(summary.loc[("ridge", "brier"), "mean"])


def test_a_permutation_p_value_counts_the_shuffles_as_low_for_calibration(small_dataset, tmp_path, monkeypatch):
    """Shuffles scoring observed + offset: 3 of the 9 are as high or higher, 7 as low or lower (the tie both)."""
    offsets = [-0.3, 0.1, -0.2, 0.0, -0.1, 0.05, -0.05, -0.15, -0.25]
    X, y, meta, info = small_dataset
    models = {"m": ClassicalModelConfig(estimator="bandpower_lr")}
    metrics = ["balanced_accuracy", "ece", "brier"]
    observed = Experiment(_config(tmp_path, models, metrics)).run(X, y, sample_metadata=meta, **info)
    observed = observed.summary().set_index("Metric")["mean"].to_dict()
    seen = []

    def rigged(task, shared):
        seen.append(offsets[len(seen)])
        return {metric: observed[metric] + seen[-1] for metric in task.metrics}

    monkeypatch.setattr(neurofm.experiment, "run_permutation", rigged)
    cfg = _config(tmp_path, models, metrics, n_permutations=len(offsets))
    stats = Experiment(cfg).run(X, y, sample_metadata=meta, **info).get_statistics().set_index("Metric")
    assert seen == offsets
    assert stats.loc["balanced_accuracy", "p_value"] == pytest.approx((1 + 3) / (1 + 9), abs=1e-12)
    for metric in ("ece", "brier"):
        assert stats.loc[metric, "p_value"] == pytest.approx((1 + 7) / (1 + 9), abs=1e-12)


# -- the report -----------------------------------------------------------------------------------------------------


def test_the_report_draws_a_reliability_diagram_and_names_the_model_without_probabilities(classification_dir):
    page = write_report(classification_dir).read_text()
    block = re.search(r'<figure id="fig-reliability">.*?src="data:image/png;base64,([^"]+)"(.*?)</figure>', page, re.S)
    assert block, "no reliability diagram"
    assert base64.b64decode(block.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pooled over folds" in block.group(2)
    note = re.search(r'<p class="figure-note" data-topic="reliability">(.*?)</p>', page, re.S)
    assert note and "ridge" in note.group(1) and "bandpower_lr" not in note.group(1)


def test_a_regression_report_says_it_has_no_reliability_diagram(small_dataset, tmp_path):
    X, _, meta, info = small_dataset
    y = np.random.default_rng(0).normal(size=len(X))
    cfg = _config(tmp_path, {"ridge": ClassicalModelConfig(estimator="bandpower_ridge")}, ["r2"], task="regression")
    folder = Experiment(cfg).run(X, y, sample_metadata=meta, **info).save(tmp_path / "out")
    page = write_report(folder).read_text()
    assert 'id="fig-reliability"' not in page
    assert "No reliability diagram: a regression run predicts no class probabilities." in page
