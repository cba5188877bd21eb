"""Classical baselines: BandPower, named pipelines and plain scikit-learn estimators on windows."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from neurofm import Experiment
from neurofm.configs import ExperimentConfig
from neurofm.estimators import BandPower, build_estimator, build_window_estimator, list_estimators
from neurofm.estimators.classical import DEFAULT_BANDS, estimator_task
from neurofm.exceptions import ConfigError


def test_bandpower_output_shape(windows_19ch):
    feats = BandPower(sfreq=160.0).fit(windows_19ch).transform(windows_19ch)
    assert feats.shape == (3, 19 * len(DEFAULT_BANDS))
    assert np.isfinite(feats).all()
    custom = BandPower(sfreq=160.0, bands={"alpha": (8.0, 13.0), "beta": (13.0, 30.0)})
    assert custom.fit_transform(windows_19ch).shape == (3, 19 * 2)


def test_bandpower_features_are_band_major_and_find_the_rhythm():
    sfreq, n_times = 160.0, 640
    t = np.arange(n_times) / sfreq
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 4, n_times)) * 1e-7
    X[:, 2] += np.sin(2 * np.pi * 10.0 * t) * 1e-5  # a 10 Hz alpha rhythm on channel 2
    bands = {"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0)}
    feats = BandPower(sfreq=sfreq, bands=bands).fit_transform(X)
    assert feats.shape == (2, 3 * 4)
    alpha = feats[:, 4:8]  # band-major: [theta ch0..3, alpha ch0..3, beta ch0..3]
    assert (alpha.argmax(axis=1) == 2).all()
    assert (feats[:, 4 + 2] > feats[:, 0 + 2] + 2).all()  # alpha >> theta on that channel (log10 units)


def test_bandpower_log_flag(windows_19ch):
    log = BandPower(sfreq=160.0).fit_transform(windows_19ch)
    lin = BandPower(sfreq=160.0, log=False).fit_transform(windows_19ch)
    assert (lin > 0).all()
    np.testing.assert_allclose(log, np.log10(lin), rtol=1e-10)


def test_bandpower_is_stateless(small_dataset):
    X, y, _, _ = small_dataset
    probe = X[:5]
    reference = BandPower(sfreq=160.0).transform(probe)  # never fitted
    a = BandPower(sfreq=160.0).fit(X[:10], y[:10])
    b = BandPower(sfreq=160.0).fit(X[10:], y[::-1][10:])
    c = BandPower(sfreq=160.0).fit(X)  # no labels at all
    for est in (a, b, c):
        np.testing.assert_array_equal(est.transform(probe), reference)
    learned = {k for k in vars(a) if k.endswith("_") and not k.startswith("_")}
    assert learned == {"n_features_in_"}  # nothing learned from labels or values
    assert a.n_features_in_ == 19


def test_bandpower_rejects_flat_input_and_bands_without_bins(windows_19ch):
    with pytest.raises(ValueError, match=r"\(n, channels, times\)"):
        BandPower(sfreq=160.0).fit(windows_19ch.reshape(3, -1))
    with pytest.raises(ValueError, match="no frequency bin"):
        BandPower(sfreq=160.0, bands={"tiny": (10.1, 10.2)}).transform(windows_19ch)


def test_bandpower_clone_keeps_params_and_drops_state(windows_19ch):
    bands = {"alpha": (8.0, 13.0)}
    est = BandPower(sfreq=200.0, bands=bands, log=False).fit(windows_19ch)
    copy = clone(est)
    assert copy is not est
    assert copy.get_params() == {"sfreq": 200.0, "bands": bands, "log": False}
    assert not hasattr(copy, "n_features_in_")
    np.testing.assert_array_equal(copy.transform(windows_19ch), est.transform(windows_19ch))
    copy.set_params(sfreq=160.0)
    assert est.sfreq == 200.0


def test_list_estimators():
    assert "bandpower_lr" in list_estimators()


def test_named_bandpower_lr_pipeline(small_dataset):
    X, y, _, _ = small_dataset
    est = build_window_estimator("bandpower_lr", {"C": 0.5}, sfreq=160.0, random_state=3)
    steps = [type(s).__name__ for _, s in est.steps]
    assert steps == ["BandPower", "StandardScaler", "LogisticRegression"]
    assert est.steps[0][1].sfreq == 160.0
    lr = est.steps[-1][1]
    assert lr.C == 0.5 and lr.random_state == 3 and lr.max_iter == 1000
    est.fit(X, y)
    assert set(est.classes_) == {"left_hand", "right_hand"}
    assert est.score(X, y) > 0.8
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # clone of the whole pipeline works (what the experiment does per fold)
    refit = clone(est).fit(X, y)
    np.testing.assert_array_equal(refit.predict_proba(X), proba)  # a fold's refit is the same model, bit for bit


def test_plain_sklearn_estimator_gets_flattened_windows(windows_19ch):
    est = build_window_estimator("LogisticRegression", {"C": 2.0}, sfreq=160.0, random_state=1)
    assert isinstance(est, Pipeline)
    flatten, final = est.steps[0][1], est.steps[-1][1]
    assert isinstance(flatten, FunctionTransformer)
    assert isinstance(final, LogisticRegression) and final.C == 2.0 and final.random_state == 1
    flat = flatten.fit_transform(windows_19ch)
    assert flat.shape == (3, 19 * 640)
    np.testing.assert_array_equal(flat[1], windows_19ch[1].ravel())
    y = np.array([0, 1, 0])
    est.fit(windows_19ch, y)
    assert final.n_features_in_ == 19 * 640


def test_estimator_without_random_state_is_built(windows_19ch):
    est = build_window_estimator("KNeighborsClassifier", {"n_neighbors": 1}, sfreq=160.0, random_state=0)
    est.fit(windows_19ch, np.array(["a", "b", "a"]))
    np.testing.assert_array_equal(est.predict(windows_19ch), ["a", "b", "a"])


def test_import_path_estimator_is_built():
    from sklearn.svm import SVC

    est = build_estimator("sklearn.svm.SVC", {"C": 3.0}, random_state=4)
    assert isinstance(est, SVC) and est.C == 3.0 and est.random_state == 4


def test_named_window_estimator_cannot_be_a_head():
    with pytest.raises(ConfigError, match="raw windows"):
        build_estimator("bandpower_lr", {})


def test_invalid_params_for_plain_estimator_are_a_config_error():
    with pytest.raises(ConfigError, match="Invalid params for estimator 'LogisticRegression'"):
        build_window_estimator("LogisticRegression", {"not_a_param": 1}, sfreq=160.0)


def test_invalid_params_for_named_estimator_are_a_config_error():
    with pytest.raises(ConfigError, match="not_a_param"):
        build_window_estimator("bandpower_lr", {"not_a_param": 1}, sfreq=160.0)


def test_unknown_estimator_name_suggests_close_names():
    with pytest.raises(ConfigError, match="Did you mean 'bandpower_lr'"):
        build_window_estimator("bandpower_rl", {}, sfreq=160.0)


# -- the task: a classifier for classification, a regressor for regression, checked before any compute ------------


def test_the_task_is_read_from_scikit_learns_tags_of_the_built_estimator():
    from sklearn.linear_model import Ridge

    assert estimator_task("LogisticRegression") == "classification"
    assert estimator_task("sklearn.svm.SVR") == "regression"
    assert estimator_task("PCA") is None  # a transformer does neither
    # A search is what its estimator is: only the built estimator's tags can tell.
    assert (
        estimator_task("GridSearchCV", {"estimator": LogisticRegression(), "param_grid": {"C": [1.0]}})
        == "classification"
    )
    assert estimator_task("GridSearchCV", {"estimator": Ridge(), "param_grid": {"alpha": [1.0]}}) == "regression"
    assert estimator_task("LogisticRegression", {"not_a_param": 1}) is None  # its build names the bad param


def _no_compute(*args, **kwargs):
    raise AssertionError("a refused model was fitted or embedded")


@pytest.mark.parametrize(
    "name, task, fix",
    [
        (
            "LogisticRegression",
            "regression",
            r"is a classifier, which cannot do task='regression'; use one of neurofm's "
            r"regression baselines 'bandpower_ridge' and 'ts_ridge'.*'Ridge'",
        ),
        ("RandomForestClassifier", "regression", "is a classifier.*'Ridge' or 'RandomForestRegressor'"),
        ("sklearn.svm.SVC", "regression", "is a classifier.*'Ridge'"),
        (
            "Ridge",
            "classification",
            r"is a regressor, which cannot do task='classification'.*'bandpower_lr', "
            r"'csp_lda', 'ts_lr', and 'xdawn_ts_lr'.*'LogisticRegression'",
        ),
        (
            "GradientBoostingRegressor",
            "classification",
            "is a regressor.*'LogisticRegression' or 'GradientBoostingClassifier'",
        ),
        (
            "KMeans",
            "classification",
            "does not know 'KMeans' as a classifier or a regressor.*sklearn.base.ClassifierMixin",
        ),
        ("PCA", "regression", "does not know 'PCA' as a classifier or a regressor.*sklearn.base.RegressorMixin"),
    ],
)
def test_a_scikit_learn_estimator_of_the_other_task_is_refused_before_any_compute(
    name, task, fix, small_dataset, tmp_path, monkeypatch
):
    X, y, meta, info = small_dataset
    target = y if task == "classification" else np.linspace(0.0, 1.0, len(y))
    monkeypatch.setattr(Pipeline, "fit", _no_compute)  # a raw-window estimator is a pipeline
    text = yaml.safe_dump(
        {
            "task": task,
            "models": {"m": {"estimator": name}},
            "cv": {"strategy": "kfold", "n_splits": 2},
            "cache_dir": str(tmp_path),
            "verbose": False,
        }
    )
    with pytest.raises(ConfigError, match=f"model 'm': '{name}' {fix}" if "does not" not in fix else fix):
        Experiment(ExperimentConfig.from_yaml(text)).run(X, target, meta, **info)


@pytest.mark.parametrize(
    "task, head, fix",
    [
        (
            "regression",
            None,
            r"the default head of model 'fm': 'LogisticRegression' is a classifier, which cannot do "
            r"task='regression'; use a scikit-learn regressor such as 'Ridge' \(e.g. head: \{estimator: Ridge\}\)",
        ),
        ("regression", "SVC", "the head of model 'fm': 'SVC' is a classifier.*'Ridge'"),
        ("classification", "Ridge", "the head of model 'fm': 'Ridge' is a regressor.*'LogisticRegression'"),
    ],
)
def test_a_frozen_decoders_head_of_the_other_task_is_refused_before_any_embedding(
    task, head, fix, small_dataset, tmp_path, monkeypatch
):
    from neurofm.estimators.frozen import FoundationEmbedder

    X, y, meta, info = small_dataset
    target = y if task == "classification" else np.linspace(0.0, 1.0, len(y))
    for method in ("fit", "transform"):
        monkeypatch.setattr(FoundationEmbedder, method, _no_compute)
    model = {"backbone": {"model_key": "cbramod", "weights": "random"}}
    if head is not None:
        model["head"] = {"estimator": head}
    text = yaml.safe_dump(
        {
            "task": task,
            "models": {"fm": model},
            "cv": {"strategy": "kfold", "n_splits": 2},
            "cache_dir": str(tmp_path),
            "verbose": False,
        }
    )
    with pytest.raises(ConfigError, match=fix) as err:
        Experiment(ExperimentConfig.from_yaml(text)).run(X, target, meta, **info)
    assert "bandpower" not in str(err.value)  # raw-window baselines cannot decode embeddings
    # The same model with a head of the task is accepted.
    right = {**model, "head": {"estimator": "Ridge" if task == "regression" else "LogisticRegression"}}
    assert ExperimentConfig(task=task, models={"fm": right}, cv={"strategy": "kfold"}).models["fm"].head.estimator


def test_trainable_models_take_either_task():
    # Fine-tuned models build a classification or a regression head from the task: nothing to refuse.
    model = {"model_key": "cbramod", "train_mode": "frozen", "weights": "random"}
    for task in ("classification", "regression"):
        assert ExperimentConfig(task=task, models={"nn": model}, cv={"strategy": "kfold"}).task == task
