"""The named classification baselines choose their hyper-parameters by inner CV inside each training partition."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import neurofm.experiment
from neurofm import Experiment
from neurofm.configs import ClassicalModelConfig, CVConfig, ExecutionConfig, ExperimentConfig
from neurofm.estimators import classical
from neurofm.estimators.classical import (
    LOGISTIC_C_GRID,
    XDAWN_NFILTER_GRID,
    TunedPipeline,
    build_window_estimator,
    list_estimators,
)

SMNI = SHARED_DATA / "uci-eeg-smni"


def _erp(seed=0, n=96, sfreq=64.0):
    """Windows (µV) where targets carry a P300-like deflection over parietal sites; four subjects."""
    rng = np.random.default_rng(seed)
    names = ["Fz", "Cz", "Pz", "P3", "P4", "Oz", "C3", "C4"]
    t = np.arange(int(sfreq)) / sfreq
    p300 = 4.0 * np.exp(-((t - 0.35) ** 2) / (2 * 0.05**2))
    topography = np.array([0.2, 0.5, 1.0, 0.8, 0.8, 0.4, 0.3, 0.3])
    y = np.array(["target", "nontarget"] * (n // 2))
    X = rng.standard_normal((n, len(names), len(t))) * 8.0
    X[y == "target"] += topography[:, None] * p300[None, :]
    meta = pd.DataFrame({"Subject": np.repeat(["s1", "s2", "s3", "s4"], n // 4)})
    return X, y, meta, {"sfreq": sfreq, "ch_names": names}


def test_every_named_classifier_tunes_and_the_regressors_keep_their_leave_one_out_ridge():
    for name in list_estimators("classification"):
        estimator = build_window_estimator(name, {}, 128.0, 0)
        assert isinstance(estimator, TunedPipeline) and len(estimator.param_grid) >= 1, name
        assert estimator.random_state == 0 and estimator.n_splits == 3
        assert classical.NAMED_ESTIMATORS[name].version == 2
        assert "inner stratified 3-fold CV" in classical.NAMED_ESTIMATORS[name].description
    for name in list_estimators("regression"):
        estimator = build_window_estimator(name, {}, 128.0, 0)
        assert not isinstance(estimator, TunedPipeline) and type(estimator.steps[-1][1]).__name__ == "RidgeCV"
        assert classical.NAMED_ESTIMATORS[name].version == 1  # unchanged definitions keep their records


def test_the_search_runs_on_the_fit_windows_alone_and_scores_as_grid_search_does():
    X, y, _, _ = _erp()
    part = slice(0, 60)  # fitted on the first 60 windows: the other 36 play the test partition
    estimator = build_window_estimator("xdawn_ts_lr", {}, 64.0, 0).fit(X[part], y[part])
    assert estimator.n_samples_ == 60 and len(estimator.search_splits_) == 3
    validated = np.concatenate([valid for _, valid in estimator.search_splits_])
    assert sorted(validated) == list(range(60))  # every fit window validated once, no other window ever
    for train, valid in estimator.search_splits_:
        assert not set(train) & set(valid) and max(train.max(), valid.max()) < 60
    assert set(estimator.best_params_) == {"xdawncovariances__nfilter", "logisticregression__C"}
    assert estimator.get_params()["xdawncovariances__nfilter"] == estimator.best_params_["xdawncovariances__nfilter"]

    # The shared-work search scores each candidate as scikit-learn's GridSearchCV does on the same inner splits
    # (the rank projection fitted once changes nothing: these windows have full rank).
    plain = Pipeline(clone(build_window_estimator("xdawn_ts_lr", {}, 64.0, 0)).steps)
    search = GridSearchCV(
        plain, estimator.param_grid, cv=estimator.search_splits_, scoring="balanced_accuracy", refit=False
    ).fit(X[part], y[part])
    by_label = {
        classical._candidate_label(params): score
        for params, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True)
    }
    assert by_label.keys() == estimator.cv_scores_.keys() and len(by_label) == 15
    np.testing.assert_allclose([estimator.cv_scores_[k] for k in by_label], list(by_label.values()), atol=1e-12)
    assert estimator.best_params_ == search.cv_results_["params"][int(np.argmax(search.cv_results_["mean_test_score"]))]

    # Reproducible: a fresh clone on the same windows chooses the same, with the same scores.
    again = clone(build_window_estimator("xdawn_ts_lr", {}, 64.0, 0)).fit(X[part], y[part])
    assert again.best_params_ == estimator.best_params_ and again.cv_scores_ == estimator.cv_scores_
    np.testing.assert_array_equal(again.predict_proba(X[60:]), estimator.predict_proba(X[60:]))


def test_a_param_the_user_gives_is_fixed_and_only_the_others_are_searched():
    X, y, _, _ = _erp()
    estimator = build_window_estimator("xdawn_ts_lr", {"xdawncovariances__nfilter": 1}, 64.0, 0)
    assert estimator.param_grid == {"logisticregression__C": list(LOGISTIC_C_GRID)}
    estimator = clone(estimator).fit(X, y)  # as each fold does
    assert estimator.get_params()["xdawncovariances__nfilter"] == 1
    assert list(estimator.best_params_) == ["logisticregression__C"] and len(estimator.cv_scores_) == 5
    assert all("nfilter" not in label for label in estimator.cv_scores_)

    # A plain name goes to the final estimator, and fixes it too.
    plain_c = build_window_estimator("xdawn_ts_lr", {"C": 0.5}, 64.0, 0)
    assert plain_c.param_grid == {"xdawncovariances__nfilter": list(XDAWN_NFILTER_GRID)}
    assert plain_c.fit(X, y).steps[-1][1].C == 0.5

    # Every tuned parameter fixed: no search at all, and the run's record says so.
    fixed = build_window_estimator("csp_lda", {"csp__n_components": 6}, 64.0, 0)
    assert fixed.param_grid == {}
    fixed = clone(fixed).fit(X, y)
    assert fixed.get_params()["csp__n_components"] == 6 and fixed.best_params_ == {} and fixed.search_splits_ == []
    assert "param_grid is empty" in fixed.get_artifact_metadata()["failure_diagnostics"]["not_tuned"]


def test_too_few_windows_of_a_class_fit_without_a_search_and_say_why():
    X, y, _, _ = _erp(n=24)
    few = np.r_[np.flatnonzero(y == "target")[:1], np.flatnonzero(y == "nontarget")]
    estimator = build_window_estimator("bandpower_lr", {}, 64.0, 0).fit(X[few], y[few])
    assert estimator.best_params_ == {} and "smallest class has 1 window" in estimator.not_tuned_
    assert estimator.steps[-1][1].C == 1.0  # the parameters as they are


def test_the_experiment_records_each_folds_choice_made_on_its_training_partition(tmp_path):
    X, y, meta, info = _erp()
    cfg = ExperimentConfig(
        models={
            "xdawn": ClassicalModelConfig(estimator="xdawn_ts_lr"),
            "csp": ClassicalModelConfig(estimator="csp_lda"),
        },
        metrics=["balanced_accuracy"],
        cache_dir=str(tmp_path),
        verbose=False,
        random_state=0,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
    )
    result = Experiment(cfg).run(X * 1e-6, y, sample_metadata=meta, **info)  # volts in, as from a loader
    tuned = result.get_model_artifacts(artifact_type="tuned")
    splits = result.get_splits()
    cards = result.get_model_artifacts(artifact_type="model_card")
    for model, names in {
        "xdawn": {"xdawncovariances__nfilter", "logisticregression__C"},
        "csp": {"csp__n_components"},
    }.items():
        rows = tuned[tuned["Model"] == model]
        assert sorted(rows["Fold"].unique()) == [0, 1, 2]
        for fold, part in rows.groupby("Fold"):
            chosen = dict(zip(part["ArtifactKey"], part["ArtifactValue"], strict=True))
            assert set(chosen) == names
            rows_of = splits[(splits["Model"] == model) & (splits["Fold"] == fold)]
            train = rows_of.loc[rows_of["Set"] == "train", "SampleIndex"].to_numpy()
            card = cards[(cards["Model"] == model) & (cards["Fold"] == fold)]
            n_samples = card.loc[card["ArtifactKey"] == "n_samples", "ArtifactValue"].item()
            assert n_samples == len(train) < len(X)  # the search saw this fold's training windows, not the test ones
            if model == "xdawn":  # the same choice from a direct fit on those training windows (and groups) alone
                groups = meta["Subject"].to_numpy()[train]
                direct = build_window_estimator("xdawn_ts_lr", {}, info["sfreq"], 0).fit(X[train], y[train], groups)
                assert direct.best_params_ == chosen, fold
                search = card.loc[card["ArtifactKey"] == "search", "ArtifactValue"].item()
                grouped = len(set(groups)) >= 3  # as many subjects as inner folds: the inner splits keep them apart
                assert search.startswith("inner StratifiedGroupKFold" if grouped else "inner StratifiedKFold"), fold
    inner = result.get_model_artifacts(artifact_type="inner_cv")
    assert (inner[(inner["Model"] == "xdawn") & (inner["Fold"] == 0)].shape[0]) == 15


def _old_fixed_definition(named):
    """The definition before tuning: the same steps at their fixed values, in a plain pipeline."""
    return dataclasses.replace(named, version=1, factory=lambda sfreq, seed: Pipeline(named.factory(sfreq, seed).steps))


def test_records_of_the_fixed_definition_are_not_resumed_as_the_tuned_ones(tmp_path, monkeypatch):
    X, y, meta, info = _erp(n=48)
    X = X * 1e-6  # volts, as from a loader
    folds = []
    run_fold = neurofm.experiment.run_fold

    def counting(task, shared):
        folds.append(task.fold)
        return run_fold(task, shared)

    monkeypatch.setattr(neurofm.experiment, "run_fold", counting)
    cfg = ExperimentConfig(
        models={"xdawn": ClassicalModelConfig(estimator="xdawn_ts_lr")},
        metrics=["balanced_accuracy"],
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),
    )
    out = tmp_path / "out"
    with monkeypatch.context() as old:
        old.setitem(
            classical.NAMED_ESTIMATORS, "xdawn_ts_lr", _old_fixed_definition(classical.NAMED_ESTIMATORS["xdawn_ts_lr"])
        )
        first = Experiment(cfg).run(X, y, sample_metadata=meta, **info, output_dir=out)
    assert len(folds) == 2 and first.get_model_artifacts(artifact_type="tuned").empty
    folds.clear()
    tuned = Experiment(cfg).run(X, y, sample_metadata=meta, **info, output_dir=out)
    assert len(folds) == 2  # recomputed: the old definition's records are not served
    assert len(tuned.get_model_artifacts(artifact_type="tuned")) == 2 * 2
    folds.clear()
    again = Experiment(cfg).run(X, y, sample_metadata=meta, **info, output_dir=out)
    assert folds == []  # the tuned definition's own records are resumed
    pd.testing.assert_frame_equal(again.get_detailed_scores(), tuned.get_detailed_scores())


@pytest.mark.skipif(not SMNI.is_dir(), reason=f"real recordings not found at {SMNI} (../shared/data is absent)")
def test_tuned_xdawn_is_at_least_as_good_as_four_fixed_filters_on_uci_smni(tmp_path):
    """All 20 subjects, stimulus condition (3 classes), subject-wise 5-fold CV as benchmarks/real_data.py runs it."""
    from neurofm.configs import PreprocessingConfig
    from neurofm.loaders import load_uci_smni

    epochs = load_uci_smni(SMNI, preprocessing=PreprocessingConfig(l_freq=1.0, h_freq=40.0))
    models = {
        "fixed": ClassicalModelConfig(estimator="xdawn_ts_lr", params={"xdawncovariances__nfilter": 4, "C": 1.0}),
        "tuned": ClassicalModelConfig(estimator="xdawn_ts_lr"),
    }
    cfg = ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy"],
        cache_dir=str(tmp_path),
        verbose=False,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=5, group_key="subject"),
        execution=ExecutionConfig(backend="joblib", n_jobs=2),  # both cores: the tuned folds are the test's time
    )
    result = Experiment(cfg).run(epochs, epochs.metadata["label"].to_numpy())
    mean = result.summary().set_index("Model")["mean"]
    chosen = result.get_model_artifacts(artifact_type="tuned")
    print(f"uci-eeg-smni, 20 subjects: fixed 4 filters {mean['fixed']:.3f}, tuned {mean['tuned']:.3f}")
    print(chosen[["Fold", "ArtifactKey", "ArtifactValue"]].to_string(index=False))
    assert result.get_model_artifacts(artifact_type="tuned").query("Model == 'fixed'").empty
    assert mean["tuned"] >= mean["fixed"] - 0.02, mean.to_dict()
