"""Metrics by name: every scikit-learn scorer, neurofm's own, and per-class scores."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    average_precision_score,
    cohen_kappa_score,
    f1_score,
    get_scorer,
    get_scorer_names,
    make_scorer,
    precision_recall_fscore_support,
    precision_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline

from neurofm import Experiment
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig
from neurofm.exceptions import ConfigError
from neurofm.metrics import (
    METRIC_FUNCTIONS,
    PER_CLASS_METRICS,
    check_metrics_for_classes,
    expand_metrics,
    metric_names,
    metric_task,
    score,
    score_all,
)
from neurofm.training.finetune import _scores


def _classification(n_classes: int, labels=None):
    """A fitted LogisticRegression and a held-out set it did not see; ``labels`` renames the classes."""
    rng = np.random.default_rng(n_classes)
    X = rng.standard_normal((240, 5))
    latent = X[:, 0] + 0.7 * rng.standard_normal(len(X))
    y = np.digitize(latent, np.quantile(latent, np.linspace(0, 1, n_classes + 1)[1:-1]))
    if labels is not None:
        y = np.asarray(labels)[y]
    estimator = LogisticRegression(max_iter=1000).fit(X[:120], y[:120])
    return estimator, X[120:], y[120:]


def _neurofm_score(name, estimator, X, y):
    """neurofm's value from the predictions and probabilities a fold keeps (columns in sorted-class order)."""
    return score(name, y, estimator.predict(X), estimator.predict_proba(X), estimator.classes_)


BINARY_SCORERS = [
    "f1_weighted",
    "average_precision",
    "matthews_corrcoef",
    "precision",
    "recall",
    "f1",
    "recall_macro",
    "neg_log_loss",
    "neg_brier_score",
    "roc_auc",
    "balanced_accuracy",
    "positive_likelihood_ratio",
]
MULTICLASS_SCORERS = [
    "f1_weighted",
    "matthews_corrcoef",
    "recall_macro",
    "precision_weighted",
    "neg_log_loss",
    "neg_brier_score",
    "top_k_accuracy",  # k=2 of 3 classes; on two it is 1 by definition
    "roc_auc_ovr",
    "jaccard_macro",
    "d2_log_loss_score",
]
REGRESSION_SCORERS = [
    "r2",
    "neg_mean_absolute_error",
    "neg_root_mean_squared_error",
    "neg_median_absolute_error",
    "explained_variance",
    "neg_max_error",
]


@pytest.mark.parametrize("name", BINARY_SCORERS)
def test_binary_scorer_equals_scikit_learns_on_the_same_fold(name):
    estimator, X, y = _classification(2)
    assert _neurofm_score(name, estimator, X, y) == get_scorer(name)(estimator, X, y)


@pytest.mark.parametrize("name", MULTICLASS_SCORERS)
def test_multiclass_scorer_equals_scikit_learns_on_the_same_fold(name):
    estimator, X, y = _classification(3)
    assert _neurofm_score(name, estimator, X, y) == get_scorer(name)(estimator, X, y)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_cohen_kappa_equals_scikit_learns(n_classes):
    # cohen_kappa is neurofm's name (scikit-learn has no scorer of that name): the same score made a scorer.
    estimator, X, y = _classification(n_classes)
    assert _neurofm_score("cohen_kappa", estimator, X, y) == make_scorer(cohen_kappa_score)(estimator, X, y)


@pytest.mark.parametrize("name", REGRESSION_SCORERS)
def test_regression_scorer_equals_scikit_learns_in_its_sign(name):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    y = 2.0 * X[:, 0] + rng.standard_normal(len(X))
    estimator = Ridge().fit(X[:100], y[:100])
    value = score(name, y[100:], estimator.predict(X[100:]))
    assert value == get_scorer(name)(estimator, X[100:], y[100:])
    if name.startswith("neg_"):
        assert value < 0  # reported as scikit-learn reports it, not as the positive error


@pytest.mark.parametrize("name", ["precision", "recall", "f1", "average_precision", "neg_brier_score", "neg_log_loss"])
def test_binary_scores_take_the_second_sorted_class_as_positive_whatever_the_labels(name):
    named, X, y = _classification(2, labels=["left", "right"])
    coded, _, y_coded = _classification(2)  # the same data and fit, classes 0 and 1
    assert list(y == "right") == list(y_coded == 1)
    assert _neurofm_score(name, named, X, y) == get_scorer(name)(coded, X, y_coded)


def test_binary_positive_class_is_the_second_sorted_one_for_any_labels():
    named, X, y = _classification(2, labels=["left", "right"])
    y_pred, proba = named.predict(X), named.predict_proba(X)
    assert score("precision", y, y_pred, proba, named.classes_) == precision_score(y, y_pred, pos_label="right")
    assert score("average_precision", y, y_pred, proba, named.classes_) == average_precision_score(
        y == "right", proba[:, 1]
    )


def test_probability_scores_are_nan_without_probabilities():
    estimator, X, y = _classification(2)
    y_pred = estimator.predict(X)
    assert np.isnan(score("neg_log_loss", y, y_pred, None, estimator.classes_))
    # Decision values (what neurofm keeps for an estimator without predict_proba) are not probabilities.
    decision = estimator.decision_function(X)
    scores = np.column_stack([-decision, decision])
    assert np.isnan(score("neg_brier_score", y, y_pred, scores, estimator.classes_))
    # A scorer that takes decision values still scores them.
    assert score("average_precision", y, y_pred, scores, estimator.classes_) == get_scorer("average_precision")(
        estimator, X, y
    )


def test_roc_auc_of_three_classes_on_a_test_fold_holding_two_of_them():
    classes = np.array(["a", "b", "c"])
    y = np.array(["a", "b", "a", "b", "a"])
    # A ridge's outputs on one-hot targets sum to 1 but are no probabilities: each present class's own column ranks.
    ridge = np.array([[1.2, -0.1, -0.1], [0.1, 0.8, 0.1], [0.3, 0.4, 0.3], [-0.2, 1.1, 0.1], [0.5, 0.6, -0.1]])
    expected = np.mean([roc_auc_score(y == "a", ridge[:, 0]), roc_auc_score(y == "b", ridge[:, 1])])
    assert score("roc_auc", y, None, ridge, classes) == expected
    # Probabilities: renormalised over the two present classes, then a binary AUC.
    proba = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.4, 0.3], [0.3, 0.5, 0.2], [0.5, 0.2, 0.3]])
    two = proba[:, :2] / proba[:, :2].sum(axis=1, keepdims=True)
    assert score("roc_auc", y, None, proba, classes) == roc_auc_score(y == "b", two[:, 1])


def test_a_scorer_scikit_learn_refuses_on_a_folds_values_is_nan_with_its_reason():
    y_true = np.array([-1.0, 0.5, 2.0])
    with pytest.warns(UserWarning, match="'neg_mean_squared_log_error' is NaN on this fold: scikit-learn says"):
        assert np.isnan(score("neg_mean_squared_log_error", y_true, y_true + 0.1))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_per_class_scores_equal_precision_recall_fscore_support(n_classes):
    estimator, X, y = _classification(n_classes, labels=["a", "b", "c"][:n_classes])
    y_pred, proba = estimator.predict(X), estimator.predict_proba(X)
    classes = estimator.classes_
    got = score_all(PER_CLASS_METRICS, y, y_pred, proba, classes)
    precision, recall, f1, _ = precision_recall_fscore_support(y, y_pred, average=None, labels=classes)
    expected = {}
    for base, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        expected |= {f"{base}[{label}]": float(v) for label, v in zip(classes, values, strict=True)}
    assert got == expected


def test_per_class_score_of_a_class_the_fold_lacks_is_nan():
    classes = np.array([0, 1, 2])
    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    got = score_all(["recall_per_class", "precision_per_class"], y_true, y_pred, None, classes)
    assert got["recall[0]"] == 0.5 and got["recall[1]"] == 1.0 and got["precision[1]"] == 2 / 3
    assert np.isnan(got["recall[2]"]) and np.isnan(got["precision[2]"])  # undefined, not a zero


def test_per_class_requests_expand_to_one_name_per_class_in_order():
    names = expand_metrics(["accuracy", "f1_per_class", "cohen_kappa"], np.array(["left", "right"]))
    assert names == ["accuracy", "f1[left]", "f1[right]", "cohen_kappa"]
    with pytest.raises(ValueError, match="one score per class"):
        score("recall_per_class", [0, 1], [0, 1], None, np.array([0, 1]))


@pytest.mark.parametrize("name", get_scorer_names())
def test_every_scikit_learn_scorer_name_is_accepted_for_its_task(name):
    task = metric_task(name)
    cfg = ExperimentConfig(
        task=task,
        models={"m": {"estimator": "LogisticRegression" if task == "classification" else "Ridge"}},
        metrics=[name],
        cv=CVConfig(strategy="kfold"),
    )
    assert cfg.resolved_metrics == [name]


def test_neurofm_names_keep_their_task():
    assert set(metric_names("classification")) >= {"accuracy", "balanced_accuracy", "roc_auc", "f1_macro"}
    assert set(metric_names("regression")) >= {"r2", "mae", "rmse", "pearson"}
    assert {metric_task(name) for name in METRIC_FUNCTIONS} == {"classification", "regression"}
    assert set(PER_CLASS_METRICS) <= set(metric_names("classification"))
    assert not set(PER_CLASS_METRICS) & set(metric_names("regression"))


def test_an_unknown_metric_is_refused_with_the_list():
    with pytest.raises(ValidationError) as info:
        ExperimentConfig(models={"m": {"estimator": "LogisticRegression"}}, metrics=["f1_wieghted"])
    message = str(info.value)
    assert "'f1_wieghted' is not available for task='classification'" in message
    assert all(repr(name) in message for name in metric_names("classification")), message
    assert "Did you mean 'f1_weighted'" in message


@pytest.mark.parametrize(
    "name, task, other",
    [("neg_mean_absolute_error", "classification", "regression"), ("f1_weighted", "regression", "classification")],
)
def test_a_metric_of_the_other_task_is_refused(name, task, other):
    with pytest.raises(ValidationError, match=f"'{name}' is not available for task='{task}' \\(it scores {other}\\)"):
        ExperimentConfig(
            task=task, models={"m": {"estimator": "LogisticRegression"}}, metrics=[name], cv=CVConfig(strategy="kfold")
        )
    with pytest.raises(ValidationError, match="'recall_per_class' is not available for task='regression'"):
        ExperimentConfig(task="regression", models={"m": {"estimator": "Ridge"}}, metrics=["recall_per_class"])


def test_binary_only_scores_are_refused_for_more_classes_naming_the_averaged_ones():
    classes = np.array(["a", "b", "c"])
    with pytest.raises(ConfigError, match="'precision' cannot score a task with 3 classes") as info:
        check_metrics_for_classes(["f1_weighted", "precision"], classes)
    assert "'precision_macro'" in str(info.value) and "'precision_weighted'" in str(info.value)
    with pytest.raises(ConfigError, match="'recall_samples' cannot score"):
        check_metrics_for_classes(["recall_samples"], classes[:2])
    check_metrics_for_classes(["precision", "neg_log_loss", "recall_per_class"], classes[:2])  # binary: all fine


def _no_fit(*args, **kwargs):
    raise AssertionError("a model was fitted for a refused metric")


def test_experiment_refuses_a_binary_only_score_on_three_classes_before_any_fit(small_dataset, tmp_path, monkeypatch):
    X, y, meta, info = small_dataset
    three = np.array(["a", "b", "c"])[np.arange(len(y)) % 3]
    monkeypatch.setattr(Pipeline, "fit", _no_fit)  # bandpower_lr is a pipeline
    cfg = ExperimentConfig(
        models={"m": ClassicalModelConfig(estimator="bandpower_lr")},
        metrics=["f1"],
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),
        cache_dir=str(tmp_path),
        verbose=False,
    )
    with pytest.raises(ConfigError, match="'f1' cannot score a task with 3 classes.*'f1_macro'"):
        Experiment(cfg).run(X, three, sample_metadata=meta, **info)


def test_experiment_scores_scorer_names_and_per_class_scores_per_fold(small_dataset, tmp_path):
    X, y, meta, info = small_dataset
    cfg = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        metrics=["f1_weighted", "cohen_kappa", "recall_per_class"],
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),
        n_permutations=2,
        cache_dir=str(tmp_path),
        verbose=False,
    )
    result = Experiment(cfg).run(X, y, sample_metadata=meta, **info)
    classes = np.unique(y)
    names = ["f1_weighted", "cohen_kappa", *(f"recall[{c}]" for c in classes)]
    scores = result.get_detailed_scores()
    predictions = result.get_predictions()
    assert list(dict.fromkeys(scores["Metric"])) == names
    for fold in (0, 1):
        table = scores[scores["Fold"] == fold].set_index("Metric")["Value"]
        rows = predictions[predictions["Fold"] == fold]
        y_true, y_pred = rows["y_true"].to_numpy(), rows["y_pred"].to_numpy()
        recall = precision_recall_fscore_support(y_true, y_pred, average=None, labels=classes)[1]
        expected = {
            "f1_weighted": f1_score(y_true, y_pred, average="weighted"),
            "cohen_kappa": cohen_kappa_score(y_true, y_pred),
            **{f"recall[{c}]": r for c, r in zip(classes, recall, strict=True)},
        }
        assert table.to_dict() == {name: float(value) for name, value in expected.items()}
    summary = result.summary()
    assert list(summary["Metric"]) == names and (summary["n_folds"] == 2).all()
    statistics = result.get_statistics()
    assert list(statistics["Metric"]) == names  # the permutation test scores each class too
    assert statistics["p_value"].between(0, 1).all()


def test_fine_tuning_validation_scores_accept_the_same_names():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((30, 3)).astype(np.float32)
    y_index = np.arange(30) % 3
    got = _scores("classification", y_index, logits, ["f1_weighted", "neg_log_loss", "recall_per_class"])
    y_pred = logits.argmax(axis=1)
    recall = precision_recall_fscore_support(y_index, y_pred, average=None)[1]
    assert list(got) == ["f1_weighted", "neg_log_loss", "recall[0]", "recall[1]", "recall[2]"]
    assert got["f1_weighted"] == f1_score(y_index, y_pred, average="weighted")
    assert got["neg_log_loss"] < 0 and np.isfinite(got["neg_log_loss"])  # softmax probabilities are probabilities
    assert [got[f"recall[{k}]"] for k in range(3)] == recall.tolist()
    regression = _scores("regression", rng.standard_normal(30), logits[:, :1], ["neg_mean_absolute_error", "r2"])
    assert list(regression) == ["neg_mean_absolute_error", "r2"] and regression["neg_mean_absolute_error"] < 0


def test_checkpoint_monitors_follow_the_scorers_sign_and_per_class_names():
    from neurofm.configs import CheckpointConfig

    assert CheckpointConfig(monitor="val_neg_log_loss").resolved_mode == "max"  # grows as it improves
    assert CheckpointConfig(monitor="val_neg_mean_absolute_error").resolved_mode == "max"
    assert CheckpointConfig(monitor="val_log_loss").resolved_mode == "min"
    assert CheckpointConfig(monitor="val_recall[1]").resolved_mode == "max"


@pytest.mark.parametrize(("monitor", "accepted"), [("val_recall[1]", True), ("val_recall_per_class", False)])
def test_a_per_class_metric_is_monitored_by_class_index(monitor, accepted):
    from neurofm.configs import CheckpointConfig, NeuralFineTuneConfig, TrainerConfig
    from neurofm.estimators.neural import NeuralFineTuner
    from neurofm.exceptions import ConfigError
    from neurofm.models import get_model_spec
    from neurofm.simulate import STANDARD_1020_19

    config = NeuralFineTuneConfig(
        model_key="cbramod",
        weights="random",
        train_mode="frozen",
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        trainer=TrainerConfig(max_epochs=1, batch_size=8, validation_fraction=0.25),
        checkpoints=CheckpointConfig(save="none", monitor=monitor),
    )
    tuner = NeuralFineTuner(
        config=config, sfreq=160.0, ch_names=list(STANDARD_1020_19), metrics=["recall_per_class"], verbose=False
    )
    y = np.tile([0, 1], 8)
    if accepted:
        tuner.check_input((16, 19, 640), y)
    else:
        with pytest.raises(ConfigError, match=r"val_recall\[<class index>\]"):
            tuner.check_input((16, 19, 640), y)
