"""Outer cross-validation: groups never leak, impossible splits fail early, nothing sees all windows."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from sklearn.base import BaseEstimator, ClassifierMixin

import neurofm.cv
from neurofm import Experiment
from neurofm.configs import CV_STRATEGIES, GROUP_AWARE_STRATEGIES, ClassicalModelConfig, CVConfig, ExperimentConfig
from neurofm.cv import make_splits
from neurofm.estimators.classical import BandPower
from neurofm.exceptions import ConfigError, CVSplitError, DataValidationError
from neurofm.policy import allow_imports

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
    assert message.endswith("); pass sample_metadata with that column or set group_key to one of the columns.")


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
    assert "Lower n_splits to 2 or collect more data." in message


def test_stratified_group_kfold_fails_when_a_class_is_in_too_few_groups(data):
    _, y, meta, _ = data
    subjects = meta["Subject"].to_numpy()
    keep = ~((y == "right_hand") & np.isin(subjects, ["sub-03", "sub-04"]))
    with pytest.raises(CVSplitError) as err:
        _splits(CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"), y[keep], meta[keep])
    message = str(err.value)
    assert "right_hand" in message and "only 2 group(s)" in message and "3 folds" in message
    assert "Lower n_splits to 2 or use group_kfold." in message
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


# -- every strategy x {group_key given, not} x {windows, recordings labelled whole} --------------------------------

# What each (strategy, group_key given?) does with windows given as arrays and with continuous recordings that
# carry one label each: "accepted" (and then no group is on both sides of any fold), "refused" when the config is
# made (a group_key the strategy would ignore, or a group strategy without one), or "refused at run" (labels per
# recording with a CV that does not keep recordings apart), before any window is cut or fitted.
OUTCOMES = {
    ("kfold", True): ("refused", "refused"),
    ("kfold", False): ("accepted", "refused at run"),
    ("stratified_kfold", True): ("refused", "refused"),
    ("stratified_kfold", False): ("accepted", "refused at run"),
    ("group_kfold", True): ("accepted", "accepted"),
    ("group_kfold", False): ("refused", "refused"),
    ("stratified_group_kfold", True): ("accepted", "accepted"),
    ("stratified_group_kfold", False): ("refused", "refused"),
    ("leave_one_group_out", True): ("accepted", "accepted"),
    ("leave_one_group_out", False): ("refused", "refused"),
    ("train_test_split", True): ("accepted", "accepted"),
    ("train_test_split", False): ("accepted", "refused at run"),
}


def _recordings(small_dataset):
    """Each subject's windows back to back as two continuous recordings, one 'patient' and one 'control'."""
    import mne

    X, _, meta, info = small_dataset
    subjects = meta["Subject"].to_numpy()
    raws = [
        mne.io.RawArray(
            np.concatenate(list(half), axis=-1),
            mne.create_info(list(info["ch_names"]), info["sfreq"], "eeg"),
            verbose=False,
        )
        for subject in np.unique(subjects)
        for half in np.array_split(X[subjects == subject], 2)
    ]
    return raws, ["patient", "control"] * (len(raws) // 2)


def _no_compute(*args, **kwargs):
    raise AssertionError("a refused experiment cut or fitted something")


@pytest.mark.parametrize("kind", ["windows", "recordings"])
@pytest.mark.parametrize("grouped", [True, False], ids=["group_key", "no_group_key"])
@pytest.mark.parametrize("strategy", CV_STRATEGIES)
def test_no_group_is_ever_on_both_sides_of_a_fold(small_dataset, cache_dir, monkeypatch, strategy, grouped, kind):
    outcome = OUTCOMES[strategy, grouped][kind == "recordings"]  # a new strategy must be added to the table
    cv = {"strategy": strategy, "n_splits": 2, "test_size": 0.5}
    if grouped:
        cv["group_key"] = "Subject" if kind == "windows" else "recording"
    config = {
        "models": {"bp": {"estimator": "bandpower_lr"}},
        "metrics": ["accuracy"],
        "cv": cv,
        "cache_dir": cache_dir,
        "verbose": False,
    }
    if kind == "recordings":
        config["windows"] = {"window": 4.0}
    text = yaml.safe_dump(config)

    if outcome == "refused":
        # At load time, from YAML and from Python, naming the fix.
        fix = "group-aware strategies" if grouped else "no group_key was given; set group_key"
        with pytest.raises(ConfigError, match=fix) as err:
            ExperimentConfig.from_yaml(text)
        with pytest.raises(ValidationError, match=fix):
            CVConfig(**cv)
        if grouped:
            assert all(repr(name) in str(err.value) for name in GROUP_AWARE_STRATEGIES)
            # A CVConfig that skipped validation cannot leak either.
            _, y, meta, _ = small_dataset
            with pytest.raises(ConfigError, match=fix):
                make_splits(CVConfig.model_construct(**cv), y, meta, "classification", 0)
        return

    experiment = Experiment(ExperimentConfig.from_yaml(text))
    if outcome == "refused at run":
        monkeypatch.setattr("neurofm.windows.windows_from_recordings", _no_compute)
        monkeypatch.setattr(BandPower, "fit", _no_compute)
        raws, labels = _recordings(small_dataset)
        with pytest.raises(ConfigError, match="keep each recording's windows together") as err:
            experiment.run(raws, labels)
        assert all(repr(name) in str(err.value) for name in GROUP_AWARE_STRATEGIES)
        return

    if kind == "windows":
        X, y, meta, info = small_dataset
        groups = meta["Subject"].to_numpy()
        warns = contextlib.nullcontext() if grouped else pytest.warns(UserWarning, match="ignores column 'Subject'")
        with warns:
            result = experiment.run(X, y, meta, **info)
    else:
        raws, labels = _recordings(small_dataset)
        result = experiment.run(raws, labels)
        assert result.meta["recordings"]["windows_per_recording"] == [6] * 8
        groups = np.repeat(np.arange(8), 6)
    splits = result.get_splits()
    assert splits["Fold"].nunique() >= 1
    for _, table in splits.groupby("Fold"):
        train = table.loc[table["Set"] == "train", "SampleIndex"].to_numpy()
        test = table.loc[table["Set"] == "test", "SampleIndex"].to_numpy()
        assert len(train) and len(test)
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(groups)))
        if grouped:
            assert not set(groups[train]) & set(groups[test])


def test_labels_per_recording_refuse_a_group_key_that_splits_a_recording(small_dataset, cache_dir, monkeypatch):
    # Event-locked windows labelled per recording keep their event in an 'event' column: one recording, many values.
    import mne

    X, _, meta, info = small_dataset
    raws, labels = _recordings(small_dataset)
    for raw in raws:
        onsets = np.arange(6) * X.shape[-1] / info["sfreq"]
        raw.set_annotations(mne.Annotations(onsets, 0.0, ["left", "right"] * 3))
    config = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        cache_dir=cache_dir,
        windows={"tmax": 1.0},
        verbose=False,
        cv=CVConfig(strategy="group_kfold", n_splits=2, group_key="event"),
    )
    monkeypatch.setattr(BandPower, "fit", _no_compute)
    with pytest.raises(
        ConfigError,
        match=r"group_key='event' puts the windows of recording\(s\) \[0, 1, 2, 3, 4, 5, "
        r"6, 7\] in several groups.*group_key='recording'",
    ):
        Experiment(config).run(raws, labels)


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
    for _, test in _splits(CVConfig(strategy="stratified_kfold", n_splits=4), y, meta[["Trial"]]):
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
    with allow_imports(RECORDING_PATH.partition(".")[0]):  # a test module: configs may not import it unasked
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
        np.testing.assert_array_equal(
            np.sort(predictions.loc[predictions["Fold"] == fold, "SampleIndex"]), np.sort(test)
        )
    assert all(f.shape[0] != len(X) for f in FITTED_ON)
    FITTED_ON.clear()


# -- every refusal says what is wrong and what to do; the folds are checked whatever the splitter did -----------


def test_a_single_class_is_refused_naming_it(data):
    _, y, meta, _ = data
    with pytest.raises(
        CVSplitError, match=r"^y holds a single class \('left_hand'\); classification needs at least two\.$"
    ):
        _splits(CVConfig(strategy="kfold", n_splits=3), np.full(len(y), "left_hand"), meta[["Trial"]])


def test_a_class_with_as_many_windows_as_folds_is_stratified_one_per_fold(data):
    _, y, meta, _ = data
    y = y.astype(object)
    y[[0, 10, 30]] = "rare"
    splits = _splits(CVConfig(strategy="stratified_kfold", n_splits=3), y.astype(str), meta[["Trial"]])
    assert [int((y[test] == "rare").sum()) for _, test in splits] == [1, 1, 1]


def test_too_few_groups_name_the_fix(data):
    _, y, meta, _ = data
    with pytest.raises(
        CVSplitError,
        match=r"needs at least 2 groups in column 'Subject', but the data hold 1; "
        r"collect data from more groups\.$",
    ):
        _splits(CVConfig(strategy="leave_one_group_out", group_key="Subject"), y, meta.assign(Subject="sub-01"))
    two = meta.assign(Subject=np.where(np.arange(len(y)) % 2, "sub-01", "sub-02"))
    with pytest.raises(
        CVSplitError,
        match=r"needs at least 3 groups in column 'Subject', but the data hold 2; "
        r"lower n_splits to at most 2\.$",
    ):
        _splits(CVConfig(strategy="group_kfold", n_splits=3, group_key="Subject"), y, two)


def test_an_unvalidated_group_key_that_the_strategy_ignores_is_refused_naming_both(data):
    _, y, meta, _ = data
    cv = CVConfig.model_construct(strategy="kfold", n_splits=2, shuffle=True, group_key="Subject", test_size=0.2)
    with pytest.raises(ConfigError, match=r"^CV strategy 'kfold' ignores groups, so with group_key='Subject'"):
        _splits(cv, y, meta)


def test_a_split_scikit_learn_cannot_make_is_refused_naming_the_strategy(data):
    _, y, meta, _ = data
    with pytest.raises(
        CVSplitError,
        match=r"^scikit-learn could not split the data with 'train_test_split': "
        r"The test_size = 1 should be greater or equal to the number of classes",
    ):
        _splits(CVConfig(strategy="train_test_split", test_size=0.01), y, meta[["Trial"]])


def test_a_training_partition_of_one_class_is_refused_for_classification_only(data):
    _, _, meta, _ = data
    n = len(meta)
    cv = CVConfig(strategy="kfold", n_splits=2, shuffle=False)  # sorted labels: each fold trains on one class
    with pytest.raises(
        CVSplitError,
        match=r"^Fold 0's training partition holds a single class, so no classifier can "
        r"be fitted; use a stratified strategy or fewer folds\.$",
    ):
        _splits(cv, np.repeat(["left_hand", "right_hand"], n // 2), meta[["Trial"]])
    # A regression target that is constant on a training partition has no classes to miss: not refused.
    assert len(_splits(cv, np.repeat([0.0, 1.0], n // 2), meta[["Trial"]], task="regression")) == 2


class _GivenFolds:
    """A splitter that returns the folds it was given, sound or not."""

    def __init__(self, folds):
        self.folds = folds

    def split(self, X, y=None, groups=None):
        yield from self.folds


def test_folds_that_leak_are_caught_whatever_the_splitter_returned(data, monkeypatch):
    _, y, meta, _ = data
    idx = np.arange(len(y))
    half = len(y) // 2
    monkeypatch.setattr(neurofm.cv, "_splitter", lambda *args: _GivenFolds([(idx[: half + 1], idx[half:])]))
    with pytest.raises(AssertionError, match=r"^fold 0: a window is on both sides of the split$"):
        _splits(CVConfig(strategy="kfold", n_splits=2), y, meta[["Trial"]])
    groups = idx % 8  # fold 0 keeps group 0 apart; fold 1 has all eight groups on both sides
    folds = [(idx[groups != 0], idx[groups == 0]), (idx[:half], idx[half:])]
    monkeypatch.setattr(neurofm.cv, "_splitter", lambda *args: _GivenFolds(folds))
    with pytest.raises(AssertionError, match=r"^fold 1: groups \[0 1 2 3 4\] on both sides$"):
        _splits(CVConfig(strategy="group_kfold", n_splits=2, group_key="g"), y, pd.DataFrame({"g": groups}))


@pytest.mark.parametrize(
    ("task", "group_key"), [("classification", None), ("regression", None), ("classification", "Subject")]
)
def test_train_test_split_makes_one_split_of_the_asked_size(data, task, group_key):
    _, y, meta, _ = data
    target = y if task == "classification" else np.linspace(0, 1, len(y))
    meta = meta[["Subject"]] if group_key else meta[["Trial"]]
    cv = CVConfig(strategy="train_test_split", test_size=0.5, group_key=group_key)  # not the default 0.2
    splits = _splits(cv, target, meta, task=task, random_state=0)
    assert len(splits) == 1
    _assert_partition(splits, len(y))
    test = splits[0][1]
    if group_key:
        assert len(set(meta["Subject"].to_numpy()[test])) == 2  # half of the four subjects
    else:
        assert len(test) == len(y) // 2
    if task == "classification" and not group_key:  # stratified: both classes exactly halved
        assert (y[test] == "left_hand").sum() == (y[test] == "right_hand").sum() == len(y) // 4
    again = _splits(cv, target, meta, task=task, random_state=0)[0][1]
    other = _splits(cv, target, meta, task=task, random_state=3)[0][1]
    assert np.array_equal(again, test) and not np.array_equal(np.sort(other), np.sort(test))


def test_the_subject_warning_says_why_and_what_to_do_and_is_logged(data, caplog):
    _, y, meta, _ = data
    two = meta.assign(Subject=np.where(np.arange(len(y)) % 2, "sub-01", "sub-02"))  # two subjects can leak already
    with caplog.at_level("WARNING", logger="neurofm"), pytest.warns(UserWarning) as caught:
        _splits(CVConfig(strategy="kfold", n_splits=3), y, two)
    message = (
        "CV strategy 'kfold' ignores column 'Subject': windows of one subject will be on both sides of a split, "
        "which inflates scores for cross-subject claims. Use strategy='stratified_group_kfold' with "
        "group_key='Subject' for honest cross-subject scores."
    )
    assert [str(w.message) for w in caught] == [message]
    assert message in caplog.text


@pytest.mark.parametrize(
    ("n_groups", "fraction", "held"), [(2, 0.6, 1), (2, 0.2, 1), (5, 0.9, 4), (10, 0.25, 3), (4, 0.5, 2)]
)
def test_a_grouped_holdout_keeps_whole_groups_and_never_empties_a_side(n_groups, fraction, held):
    from neurofm.cv import grouped_holdout  # lazy: the one test of it alone

    groups = np.repeat([f"sub-{g}" for g in range(n_groups)], 3)
    train, held_out = grouped_holdout(groups, fraction, random_state=0)
    assert len(set(groups[held_out])) == held  # ceil(fraction * groups), inside 1 .. groups - 1
    assert not set(groups[train]) & set(groups[held_out])
    assert np.array_equal(np.sort(np.r_[train, held_out]), np.arange(len(groups)))
    assert grouped_holdout(np.zeros(6), fraction, random_state=0) is None  # one group: nothing to keep apart
