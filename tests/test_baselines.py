"""Classical EEG baselines as named estimators, side by side with the rest."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import SHARED_DATA
from pydantic import ValidationError
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from neurofm import Experiment
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig
from neurofm.estimators.classical import build_window_estimator, list_estimators
from neurofm.exceptions import ConfigError
from neurofm.simulate import simulate_eeg_dataset

BASELINES = ["bandpower_lr", "csp_lda", "ts_lr", "xdawn_ts_lr"]


REGRESSION_BASELINES = ["bandpower_ridge", "ts_ridge"]


def test_all_four_baselines_are_registered():
    assert set(BASELINES) <= set(list_estimators())


def test_every_baseline_is_a_classifier_or_a_regressor_as_scikit_learn_says():
    # A new baseline must be placed in one of the two lists, so the task tests below cover it.
    assert sorted(BASELINES + REGRESSION_BASELINES) == list_estimators()
    assert list_estimators("classification") == sorted(BASELINES)
    assert list_estimators("regression") == sorted(REGRESSION_BASELINES)


def _no_fit(*args, **kwargs):
    raise AssertionError("a refused model was fitted")


@pytest.mark.parametrize(
    "name, task",
    [(name, "regression") for name in BASELINES] + [(name, "classification") for name in REGRESSION_BASELINES],
)
def test_a_baseline_given_the_other_task_is_refused_before_any_compute(
    name, task, small_dataset, tmp_path, monkeypatch
):
    X, y, meta, info = small_dataset
    # The audit's case for regression: a target of three distinct values, which a classifier would echo back.
    target = y if task == "classification" else (np.arange(len(y)) % 3).astype(float)
    monkeypatch.setattr(Pipeline, "fit", _no_fit)  # every baseline is a pipeline
    text = yaml.safe_dump(
        {
            "task": task,
            "models": {"m": {"estimator": name}},
            "cv": {"strategy": "kfold", "n_splits": 2},
            "cache_dir": str(tmp_path),
            "verbose": False,
        }
    )
    is_a = "classifier" if task == "regression" else "regressor"
    with pytest.raises(ConfigError, match=f"model 'm': '{name}' is a {is_a}, which cannot do task='{task}'") as err:
        Experiment(ExperimentConfig.from_yaml(text)).run(X, target, meta, **info)
    alternatives = REGRESSION_BASELINES + ["Ridge"] if task == "regression" else BASELINES + ["LogisticRegression"]
    assert all(repr(alternative) in str(err.value) for alternative in alternatives), str(err.value)
    with pytest.raises(ValidationError, match=f"'{name}' is a {is_a}"):
        ExperimentConfig(task=task, models={"m": ClassicalModelConfig(estimator=name)}, cv=CVConfig(strategy="kfold"))


@pytest.mark.parametrize("name", REGRESSION_BASELINES)
def test_regression_baselines_learn_an_oscillations_amplitude(name, small_dataset, tmp_path):
    X, _, meta, info = small_dataset
    rng = np.random.default_rng(0)
    amplitude = rng.uniform(0.0, 1.0, len(X))
    t = np.arange(X.shape[-1]) / info["sfreq"]
    phase = rng.uniform(0.0, 2 * np.pi, (len(X), 1, 1))
    pattern = rng.standard_normal((1, X.shape[1], 1))  # one source, the same topography in every subject
    X = X + 10e-6 * amplitude[:, None, None] * pattern * np.sin(2 * np.pi * 10.0 * t + phase)
    cfg = ExperimentConfig(
        task="regression",
        models={name: ClassicalModelConfig(estimator=name)},
        metrics=["r2"],
        cv=CVConfig(strategy="group_kfold", n_splits=4, group_key="Subject"),
        cache_dir=str(tmp_path),
        verbose=False,
    )
    result = Experiment(cfg).run(X, amplitude, meta, **info)
    r2 = result.get_detailed_scores()["Value"]
    assert (r2 > 0.3).all() and r2.mean() > 0.5, r2.tolist()  # measured: 0.78-0.95 (bandpower), 0.57-0.84 (ts)
    assert result.get_predictions()["y_pred"].nunique() == len(X)  # continuous predictions, not the targets seen


@pytest.fixture(scope="module")
def strong_effect():
    return simulate_eeg_dataset(n_subjects=4, n_windows_per_class=15, effect_size=0.9, random_state=3)


def _run(models, X, y, meta, info, cv, tmp_path):
    cfg = ExperimentConfig(models=models, metrics=["balanced_accuracy"], cache_dir=str(tmp_path), verbose=False, cv=cv)
    return Experiment(cfg).run(X, y, sample_metadata=meta, **info).summary().set_index("Model")["mean"]


def test_baselines_decode_a_clear_effect(strong_effect, tmp_path):
    import mne

    X, y, meta, info = strong_effect
    across = CVConfig(strategy="stratified_group_kfold", n_splits=4, group_key="Subject")
    assert (
        _run({"bandpower_lr": ClassicalModelConfig(estimator="bandpower_lr")}, X, y, meta, info, across, tmp_path)[
            "bandpower_lr"
        ]
        > 0.6
    )
    # Covariance methods see the mu rhythm once the data are band-passed, as users preprocess for them.
    mu = mne.filter.filter_data(X, info["sfreq"], 8.0, 13.0, verbose=False)
    assert _run({"ts_lr": ClassicalModelConfig(estimator="ts_lr")}, mu, y, meta, info, across, tmp_path)["ts_lr"] > 0.6
    # CSP filters are subject-specific (each simulated subject mixes channels differently): judge it within subjects.
    within = CVConfig(strategy="stratified_kfold", n_splits=3)
    scores = []
    for subject in meta["Subject"].unique():
        one = (meta["Subject"] == subject).to_numpy()
        scores.append(
            _run(
                {"csp_lda": ClassicalModelConfig(estimator="csp_lda")},
                mu[one],
                y[one],
                meta[one].drop(columns="Subject"),
                info,
                within,
                tmp_path,
            )["csp_lda"]
        )
    assert np.mean(scores) > 0.6, scores


def test_xdawn_decodes_an_event_related_potential(tmp_path):
    """Targets carry a P300-like deflection over parietal sites; non-targets do not."""
    import pandas as pd

    rng = np.random.default_rng(0)
    n, sfreq, names = 120, 128.0, ["Fz", "Cz", "Pz", "P3", "P4", "Oz", "C3", "C4"]
    t = np.arange(int(sfreq)) / sfreq
    p300 = 7e-6 * np.exp(-((t - 0.35) ** 2) / (2 * 0.05**2))
    topography = np.array([0.2, 0.5, 1.0, 0.8, 0.8, 0.4, 0.3, 0.3])
    y = np.array(["target", "nontarget"] * (n // 2))
    X = rng.standard_normal((n, len(names), len(t))) * 8e-6
    X[y == "target"] += topography[:, None] * p300[None, :]
    meta = pd.DataFrame({"Subject": np.repeat(["s1", "s2", "s3", "s4"], n // 4)})
    cv = CVConfig(strategy="stratified_group_kfold", n_splits=4, group_key="Subject")
    info = {"sfreq": sfreq, "ch_names": names}
    assert (
        _run({"xdawn_ts_lr": ClassicalModelConfig(estimator="xdawn_ts_lr")}, X, y, meta, info, cv, tmp_path)[
            "xdawn_ts_lr"
        ]
        > 0.7
    )


def test_step_params_route_to_their_step():
    est = build_window_estimator("csp_lda", {"csp__n_components": 6, "solver": "lsqr"}, sfreq=160.0)
    assert est.get_params()["csp__n_components"] == 6
    assert est.steps[-1][1].solver == "lsqr"
    assert clone(est).get_params()["csp__n_components"] == 6


def test_unknown_step_param_names_the_steps():
    from neurofm.exceptions import ConfigError

    with pytest.raises(ConfigError, match="csp"):
        build_window_estimator("csp_lda", {"csp__no_such": 1}, sfreq=160.0)


EEGMMI = SHARED_DATA / "eegmmi" / "S001"


@pytest.mark.skipif(not EEGMMI.is_dir(), reason=f"real recordings not found at {EEGMMI} (../shared/data is absent)")
def test_baselines_on_physionet_motor_imagery(tmp_path):
    import mne

    raws = [mne.io.read_raw_edf(EEGMMI / f"S001R{run:02d}.edf", preload=True, verbose=False) for run in (4, 8, 12)]
    raw = mne.concatenate_raws(raws, verbose=False)
    raw.filter(7.0, 30.0, verbose=False)
    events, ids = mne.events_from_annotations(raw, verbose=False)
    epochs = mne.Epochs(
        raw,
        events,
        {"left": ids["T1"], "right": ids["T2"]},
        tmin=0.5,
        tmax=2.5,
        baseline=None,
        preload=True,
        verbose=False,
    )
    y = epochs.events[:, 2]
    models = {name: ClassicalModelConfig(estimator=name) for name in ("csp_lda", "ts_lr", "bandpower_lr")}
    cfg = ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy"],
        cache_dir=str(tmp_path),
        verbose=False,
        cv=CVConfig(strategy="stratified_kfold", n_splits=5),
    )
    result = Experiment(cfg).run(epochs, y)
    scores = result.get_detailed_scores()
    assert len(scores) == 15 and scores["Value"].between(0, 1).all()
    assert np.isfinite(result.summary()["mean"]).all()


def _meg_effect_beside_eeg(seed=0, n=80, n_times=200):
    """EEG noise in volts beside magnetometers in tesla whose two first channels carry the class in their variance."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    eeg = rng.standard_normal((n, 10, n_times)) * 10e-6
    mag = rng.standard_normal((n, 10, n_times)) * 100e-15
    mag[y == 1, :2] *= 1.6
    return np.concatenate([eeg, mag], axis=1), y, ["V"] * 10 + ["T"] * 10


@pytest.mark.parametrize("name", ["ts_lr", "csp_lda"])
def test_unit_scaling_keeps_meg_visible_to_covariance_baselines(name):
    """In SI units EEG is 1e8 times larger than MEG: shrinkage and rank estimates erase MEG unless units are scaled."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    X, y, units = _meg_effect_beside_eeg()
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    scaled = cross_val_score(build_window_estimator(name, {}, 200.0, 0, units=units), X, y, cv=cv).mean()
    unscaled = cross_val_score(build_window_estimator(name, {}, 200.0, 0), X, y, cv=cv).mean()
    assert scaled > 0.85 and unscaled < 0.65, (scaled, unscaled)


def test_rank_projection_keeps_the_signals_and_passes_full_rank_windows_unchanged():
    from neurofm.estimators.classical import RankProjection

    rng = np.random.default_rng(4)
    sources = rng.standard_normal((30, 7, 100))
    X = np.einsum("cs,nst->nct", rng.standard_normal((20, 7)), sources)  # 20 channels, 7 signals (as after SSS)
    projection = RankProjection().fit(X[:20])  # fitted on training windows only
    assert projection.rank_ == 7
    reduced = projection.transform(X[20:])
    assert reduced.shape == (10, 7, 100)
    back = np.einsum("rc,nrt->nct", projection.components_, reduced)
    np.testing.assert_allclose(back, X[20:], atol=1e-9 * np.abs(X).max())  # nothing of the signals is lost

    full = rng.standard_normal((10, 5, 100))
    identity = RankProjection().fit(full)
    assert identity.rank_ == 5 and identity.components_ is None and identity.transform(full) is full
