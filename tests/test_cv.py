"""Outer cross-validation: groups never leak, impossible splits fail early, nothing sees all windows."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from neurofm import Experiment
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig
from neurofm.cv import make_splits
from neurofm.exceptions import CVSplitError, DataValidationError


# A classifier that remembers every matrix it was fitted on. It is found by the
# experiment through its import path, which is built from ``__module__`` so it
# works whatever name pytest gave this module (``test_cv`` or ``tests.test_cv``).
FITTED_ON: list[np.ndarray] = []


class RecordingClassifier(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        FITTED_ON.append(np.array(X, copy=True))
        self.classes_, counts = np.unique(y, return_counts=True)
        self.majority_ = self.classes_[np.argmax(counts)]
        return self

    def predict(self, X):
        return np.full(len(X), self.majority_)


RECORDING_PATH = f"{RecordingClassifier.__module__}.{RecordingClassifier.__qualname__}"


@pytest.fixture()
def data(small_dataset):
    X, y, meta, info = small_dataset
    return X, y, meta, info


def _splits(cv: CVConfig, y, meta, task="classification", random_state=0):
    return make_splits(cv, np.asarray(y), meta, task, random_state)


def _assert_partition(splits, n):
    for train, test in splits:
        assert len(test) > 0 and len(train) > 0
        assert not np.intersect1d(train, test).size
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(n))


GROUP_CVS = [
    CVConfig(strategy="group_kfold", n_splits=3, group_key="Subject"),
    CVConfig(strategy="group_kfold", n_splits=4, group_key="Subject", shuffle=False),
    CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
    CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject", shuffle=False),
    CVConfig(strategy="leave_one_group_out", group_key="Subject"),
    CVConfig(strategy="train_test_split", group_key="Subject", test_size=0.5),
]


@pytest.mark.parametrize("cv", GROUP_CVS, ids=lambda c: f"{c.strategy}-{c.n_splits}-{c.shuffle}")
def test_group_strategies_never_share_a_group(data, cv):
    X, y, meta, _ = data
    groups = meta["Subject"].to_numpy()
    splits = _splits(cv, y, meta)
    expected = {"leave_one_group_out": 4, "train_test_split": 1}.get(cv.strategy, cv.n_splits)
    assert len(splits) == expected
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert not np.intersect1d(train, test).size
    if cv.strategy != "train_test_split":
        _assert_partition(splits, len(y))
        tested = np.concatenate([te for _, te in splits])
        assert np.array_equal(np.sort(tested), np.arange(len(y)))  # every window tested once


def test_leave_one_group_out_tests_one_subject_per_fold(data):
    _, y, meta, _ = data
    splits = _splits(CVConfig(strategy="leave_one_group_out", group_key="Subject"), y, meta)
    tested_subjects = [set(meta["Subject"].to_numpy()[te]) for _, te in splits]
    assert all(len(s) == 1 for s in tested_subjects)
    assert set().union(*tested_subjects) == set(meta["Subject"])


def test_group_strategy_through_experiment_keeps_subjects_apart(data):
    X, y, meta, info = data
    cfg = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        metrics=["accuracy"],
        cv=CVConfig(strategy="group_kfold", n_splits=4, group_key="Subject"),
        verbose=False,
    )
    splits = Experiment(cfg).run(X, y, meta, **info).get_splits()
    subjects = meta["Subject"].to_numpy()
    assert splits["Fold"].nunique() == 4
    for _, fold in splits.groupby("Fold"):
        train = set(subjects[fold.loc[fold["Set"] == "train", "SampleIndex"]])
        test = set(subjects[fold.loc[fold["Set"] == "test", "SampleIndex"]])
        assert len(test) == 1 and not train & test


def test_missing_group_column_names_the_available_columns(data):
    _, y, meta, _ = data
    with pytest.raises(CVSplitError) as err:
        _splits(CVConfig(strategy="group_kfold", n_splits=3, group_key="subject_id"), y, meta)
    message = str(err.value)
    assert "'subject_id'" in message
    assert "['Subject', 'Trial']" in message
    assert isinstance(err.value, DataValidationError)


def test_missing_group_column_through_experiment(data):
    X, y, meta, info = data
    cfg = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Patient"),
        verbose=False,
    )
    with pytest.raises(CVSplitError, match=r"columns: \['Subject', 'Trial'\]"):
        Experiment(cfg).run(X, y, meta, **info)
    with pytest.raises(CVSplitError, match=r"columns: \[\]"):
        Experiment(cfg).run(X, y, None, **info)


def test_missing_group_values_are_rejected(data):
    _, y, meta, _ = data
    meta = meta.copy()
    meta.loc[3, "Subject"] = None
    with pytest.raises(CVSplitError, match="missing values"):
        _splits(CVConfig(strategy="group_kfold", n_splits=3, group_key="Subject"), y, meta)


@pytest.mark.parametrize(
    ("cv", "fragments"),
    [
        (
            CVConfig(strategy="group_kfold", n_splits=5, group_key="Subject"),
            ["needs at least 5 groups", "hold 4", "n_splits to at most 4"],
        ),
        (
            CVConfig(strategy="stratified_group_kfold", n_splits=6, group_key="Subject"),
            ["only 4 group(s)", "6 folds", "n_splits to 4"],
        ),
    ],
    ids=["group_kfold", "stratified_group_kfold"],
)
def test_fewer_groups_than_folds(data, cv, fragments):
    _, y, meta, _ = data
    with pytest.raises(CVSplitError) as err:
        _splits(cv, y, meta)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message


def test_fewer_groups_than_folds_for_regression(data):
    _, _, meta, _ = data
    target = np.linspace(0, 1, len(meta))
    with pytest.raises(CVSplitError, match="needs at least 5 groups.*hold 4"):
        _splits(CVConfig(strategy="group_kfold", n_splits=5, group_key="Subject"), target, meta, task="regression")


def test_a_single_group_cannot_be_left_out(data):
    _, y, meta, _ = data
    one = meta.assign(Subject="sub-01")
    with pytest.raises(CVSplitError, match="needs at least 2 groups"):
        _splits(CVConfig(strategy="leave_one_group_out", group_key="Subject"), y, one)


def test_stratification_fails_for_a_rare_class(data):
    _, y, meta, _ = data
    y = y.copy().astype(object)
    y[[0, 30]] = "rare"  # two windows of a third class
    with pytest.raises(CVSplitError) as err:
        _splits(CVConfig(strategy="stratified_kfold", n_splits=3), y.astype(str), meta.drop(columns="Subject"))
    message = str(err.value)
    assert "rare" in message and "2 window(s)" in message and "3 folds" in message


def test_stratified_group_kfold_fails_when_a_class_is_in_too_few_groups(data):
    _, y, meta, _ = data
    subjects = meta["Subject"].to_numpy()
    keep = ~((y == "right_hand") & np.isin(subjects, ["sub-03", "sub-04"]))
    with pytest.raises(CVSplitError) as err:
        _splits(CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"), y[keep], meta[keep])
    message = str(err.value)
    assert "right_hand" in message and "only 2 group(s)" in message and "3 folds" in message
    # Two folds can hold it.
    splits = _splits(CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"), y[keep], meta[keep])
    assert len(splits) == 2


def test_stratification_message_shows_the_plain_class(data):
    _, y, meta, _ = data
    y = y.copy().astype(object)
    y[[0, 30]] = "rare"
    with pytest.raises(CVSplitError) as err:
        _splits(CVConfig(strategy="stratified_kfold", n_splits=3), y.astype(str), meta.drop(columns="Subject"))
    assert "class 'rare'" in str(err.value)


@pytest.mark.parametrize("strategy", ["kfold", "stratified_kfold", "train_test_split"])
def test_non_group_strategy_warns_about_a_subject_column(data, strategy):
    _, y, meta, _ = data
    with pytest.warns(UserWarning, match="ignores column 'Subject'"):
        _splits(CVConfig(strategy=strategy, n_splits=3), y, meta)


def test_non_group_strategy_warns_through_experiment(data):
    X, y, meta, info = data
    cfg = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        metrics=["accuracy"],
        cv=CVConfig(strategy="stratified_kfold", n_splits=3),
        verbose=False,
    )
    with pytest.warns(UserWarning, match="stratified_group_kfold"):
        Experiment(cfg).run(X, y, meta, **info)


def test_no_warning_without_subject_column_or_with_group_cv(data):
    _, y, meta, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _splits(CVConfig(strategy="stratified_kfold", n_splits=3), y, meta[["Trial"]])
        _splits(CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"), y, meta)
        # A single subject cannot leak across subjects.
        _splits(CVConfig(strategy="stratified_kfold", n_splits=3), y, meta.assign(Subject="sub-01"))


@pytest.mark.parametrize("strategy", ["kfold", "stratified_kfold"])
def test_non_group_strategy_with_group_key_warns_about_leaking_subjects(data, strategy):
    _, y, meta, _ = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = _splits(CVConfig(strategy=strategy, n_splits=3, group_key="Subject"), y, meta)
    groups = meta["Subject"].to_numpy()
    leaks = any(set(groups[tr]) & set(groups[te]) for tr, te in splits)
    assert leaks  # the groups were indeed ignored
    assert any("'Subject'" in str(w.message) for w in caught)


@pytest.mark.parametrize(
    "cv",
    [
        CVConfig(strategy="kfold", n_splits=3),
        CVConfig(strategy="stratified_kfold", n_splits=4),
        CVConfig(strategy="group_kfold", n_splits=3, group_key="Subject"),
        CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
        CVConfig(strategy="train_test_split", test_size=0.25),
        CVConfig(strategy="train_test_split", group_key="Subject", test_size=0.25),
    ],
    ids=lambda c: f"{c.strategy}-{c.group_key}",
)
def test_splits_are_reproducible(data, cv):
    _, y, meta, _ = data
    meta = meta[["Subject"]] if cv.group_key else meta[["Trial"]]
    a = _splits(cv, y, meta, random_state=3)
    b = _splits(cv, y, meta, random_state=3)
    assert len(a) == len(b)
    for (tr_a, te_a), (tr_b, te_b) in zip(a, b, strict=True):
        np.testing.assert_array_equal(tr_a, tr_b)
        np.testing.assert_array_equal(te_a, te_b)


def test_random_state_changes_shuffled_splits(data):
    _, y, meta, _ = data
    cv = CVConfig(strategy="stratified_kfold", n_splits=4)
    a = _splits(cv, y, meta[["Trial"]], random_state=0)
    b = _splits(cv, y, meta[["Trial"]], random_state=1)
    assert any(not np.array_equal(te_a, te_b) for (_, te_a), (_, te_b) in zip(a, b, strict=True))


def test_stratified_kfold_keeps_class_balance(data):
    _, y, meta, _ = data
    for train, test in _splits(CVConfig(strategy="stratified_kfold", n_splits=4), y, meta[["Trial"]]):
        assert (y[test] == "left_hand").sum() == (y[test] == "right_hand").sum() == 6


def test_regression_splits_ignore_classes(data):
    _, _, meta, _ = data
    target = np.linspace(0, 1, len(meta))
    splits = _splits(CVConfig(strategy="kfold", n_splits=4), target, meta[["Trial"]], task="regression")
    assert len(splits) == 4
    _assert_partition(splits, len(target))


# -- nothing is fitted on the whole data set ------------------------------------------


@pytest.mark.parametrize(
    "cv",
    [
        CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
        CVConfig(strategy="leave_one_group_out", group_key="Subject"),
        CVConfig(strategy="train_test_split", group_key="Subject", test_size=0.5),
    ],
    ids=lambda c: c.strategy,
)
def test_every_fit_sees_only_its_training_partition(data, cv):
    X, y, meta, info = data
    FITTED_ON.clear()
    cfg = ExperimentConfig(
        models={"rec": ClassicalModelConfig(estimator=RECORDING_PATH)},
        metrics=["accuracy"],
        cv=cv,
        random_state=5,
        verbose=False,
    )
    result = Experiment(cfg).run(X, y, meta, **info)

    expected = make_splits(cfg.cv, y, meta, cfg.task, cfg.random_state)
    assert len(FITTED_ON) == len(expected)  # one fit per fold, no final refit on all windows
    # Window estimators see microvolts, the working unit of every model (the windows are in volts).
    flat = X.reshape(len(X), -1).astype(np.float32).astype(np.float64) * 1e6
    splits = result.get_splits()
    for fold, ((train, test), fitted) in enumerate(zip(expected, FITTED_ON, strict=True)):
        assert fitted.shape[0] == len(train) < len(X)
        np.testing.assert_array_equal(fitted, flat[train])  # exactly the training windows, in order
        table = splits[splits["Fold"] == fold]
        np.testing.assert_array_equal(np.sort(table.loc[table["Set"] == "train", "SampleIndex"]), np.sort(train))
        np.testing.assert_array_equal(np.sort(table.loc[table["Set"] == "test", "SampleIndex"]), np.sort(test))
    predictions = result.get_predictions()
    for fold, (_, test) in enumerate(expected):
        np.testing.assert_array_equal(np.sort(predictions.loc[predictions["Fold"] == fold, "SampleIndex"]), np.sort(test))
    assert all(f.shape[0] != len(X) for f in FITTED_ON)
    FITTED_ON.clear()
