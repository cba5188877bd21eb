"""Regression end to end: a learnable simulated target is decoded well above chance and the same target shuffled
is not; spearman, folds stratified on binned targets, MSE/Huber training, and scores of one prediction per
recording or subject."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from neurofm import Experiment
from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
    NeuralFineTuneConfig,
    RidgeProbeConfig,
    TrainerConfig,
)
from neurofm.cv import make_splits, target_bins
from neurofm.estimators.neural import NeuralFineTuner
from neurofm.exceptions import ConfigError
from neurofm.group_scores import aggregate_predictions, aggregate_scores
from neurofm.metrics import metric_names, score
from neurofm.models import get_model_spec
from neurofm.simulate import STANDARD_1020_19, simulate_eeg_dataset
from neurofm.training.finetune import loss_name

REGRESSION = ["r2", "pearson", "spearman", "mae"]


@pytest.fixture(scope="module")
def learnable():
    """Simulated EEG with a 20 Hz rhythm over C3 whose log amplitude is the target (one value per window)."""
    X, _, meta, info = simulate_eeg_dataset(n_subjects=4, n_windows_per_class=12, random_state=5)
    rng = np.random.default_rng(0)
    target = rng.uniform(0.0, 1.0, len(X))
    t = np.arange(X.shape[-1]) / info["sfreq"]
    c3 = STANDARD_1020_19.index("C3")
    phases = rng.uniform(0, 2 * np.pi, len(X))
    X = X.copy()
    X[:, c3, :] += 10e-6 * np.exp(2.0 * target)[:, None] * np.sin(2 * np.pi * 20.0 * t[None, :] + phases[:, None])
    return X, target, meta, info


def _probe() -> FrozenBackboneDecoderConfig:
    return FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key="cbramod", weights="random", model_kwargs=get_model_spec("cbramod").tiny_kwargs
        ),
        head=RidgeProbeConfig(inner_splits=3),
    )


def _run(X, y, meta, info, cache_dir):
    cfg = ExperimentConfig(
        task="regression",
        models={"bandpower": ClassicalModelConfig(estimator="bandpower_ridge"), "probe": _probe()},
        metrics=REGRESSION,
        cv=CVConfig(strategy="group_kfold", n_splits=4, group_key="Subject"),
        cache_dir=cache_dir,
        verbose=False,
    )
    return Experiment(cfg).run(X, y, sample_metadata=meta, **info)


@pytest.fixture(scope="module")
def learned(learnable, tmp_path_factory):
    X, y, meta, info = learnable
    return _run(X, y, meta, info, str(tmp_path_factory.mktemp("cache")))


def test_spearman_is_a_regression_metric():
    assert "spearman" in metric_names("regression") and "spearman" not in metric_names("classification")
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert score("spearman", y, y**3) == pytest.approx(1.0)  # monotone, not linear: pearson is below 1
    assert score("pearson", y, y**3) < 1.0
    assert np.isnan(score("spearman", y, np.ones(4)))


def test_a_learnable_target_is_decoded_well_above_chance(learned):
    summary = learned.summary().set_index(["Model", "Metric"])["mean"]
    assert summary["bandpower", "r2"] > 0.5
    assert summary["bandpower", "pearson"] > 0.7 and summary["bandpower", "spearman"] > 0.7
    # A tiny backbone with random weights: its features carry the rhythm's power, less directly.
    assert summary["probe", "r2"] > 0.1
    assert summary["probe", "pearson"] > 0.4 and summary["probe", "spearman"] > 0.4


def test_the_same_target_shuffled_scores_at_chance(learnable, tmp_path):
    X, y, meta, info = learnable
    shuffled = np.random.default_rng(1).permutation(y)
    summary = _run(X, shuffled, meta, info, str(tmp_path / "cache")).summary().set_index(["Model", "Metric"])["mean"]
    for model in ("bandpower", "probe"):
        assert summary[model, "r2"] < 0.05
        assert abs(summary[model, "pearson"]) < 0.25 and abs(summary[model, "spearman"]) < 0.25


def test_a_regression_report_draws_predicted_against_true(learned, tmp_path):
    from neurofm.report import write_report

    page = write_report(learned.save(tmp_path / "out")).read_text()
    assert '<figure id="fig-regression">' in page


# -- folds stratified on binned targets --------------------------------------------------------------------------


def test_stratified_group_folds_balance_binned_targets_and_keep_groups_apart():
    rng = np.random.default_rng(0)
    levels = np.linspace(0, 10, 24)  # each group's windows sit around its own level
    groups = np.repeat([f"g{i:02d}" for i in range(24)], 5)
    y = np.repeat(levels, 5) + rng.normal(0, 0.3, len(groups))
    meta = pd.DataFrame({"Subject": groups})
    cv = CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject", stratify_bins=4)
    splits = make_splits(cv, y, meta, "regression", random_state=0)
    bins = target_bins(y, 4)
    assert sorted(np.bincount(bins)) == [30, 30, 30, 30]
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert abs(y[test].mean() - y.mean()) < 0.15 * y.std()
        assert set(bins[test]) == {0, 1, 2, 3}  # every quartile of the target in every test fold


def test_stratify_bins_is_asked_for_and_checked():
    model = {"bp": ClassicalModelConfig(estimator="bandpower_ridge")}
    with pytest.raises(ValueError, match="stratifies by class.*stratify_bins"):
        ExperimentConfig(task="regression", models=model, cv=CVConfig(strategy="stratified_kfold"))
    ok = ExperimentConfig(task="regression", models=model, cv=CVConfig(strategy="stratified_kfold", stratify_bins=5))
    assert ok.cv.stratify_bins == 5
    with pytest.raises(ValueError, match="does not stratify"):
        CVConfig(strategy="kfold", stratify_bins=5)
    with pytest.raises(ValueError, match="stratify_bins bins a regression target"):
        ExperimentConfig(models={"lr": ClassicalModelConfig(estimator="bandpower_lr")}, cv=CVConfig(stratify_bins=3))


# -- training losses ---------------------------------------------------------------------------------------------


def _tuner(loss: str, info, **trainer) -> NeuralFineTuner:
    settings = {"max_epochs": 2, "batch_size": 8, "early_stopping_patience": None, "huber_delta": 0.5} | trainer
    cfg = NeuralFineTuneConfig(
        model_key="cbramod",
        weights="random",
        train_mode="frozen",
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        trainer=TrainerConfig(loss=loss, **settings),
    )
    return NeuralFineTuner(
        cfg, task="regression", sfreq=info["sfreq"], ch_names=info["ch_names"], metrics=["r2"], verbose=False
    )


def test_a_trainable_model_trains_on_regression_with_huber_and_mse(learnable, tmp_path):
    X, y, meta, info = learnable
    X, y, groups = X[:24], y[:24], meta["Subject"].to_numpy()[:24]
    huber = _tuner("huber", info).set_params(cache_dir=str(tmp_path)).fit(X, y, groups=groups)
    history = huber.get_training_history()
    assert len(history) == 2 and all(r["loss"] == "huber" for r in history)
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in history)
    assert huber.predict(X).shape == (24,)
    # "auto" is MSE for regression: the same training, step for step.
    auto = _tuner("auto", info).set_params(cache_dir=str(tmp_path)).fit(X, y, groups=groups).get_training_history()
    mse = _tuner("mse", info).set_params(cache_dir=str(tmp_path)).fit(X, y, groups=groups).get_training_history()
    assert [r["loss"] for r in auto] == ["mse", "mse"]
    assert [r["train_loss"] for r in auto] == [r["train_loss"] for r in mse]
    assert [r["val_loss"] for r in auto] == [r["val_loss"] for r in mse]


def test_huber_training_keeps_to_the_clean_windows_where_mse_follows_a_few_outlying_targets(learnable, tmp_path):
    X, y, meta, info = learnable
    train_y = y[:24].copy()
    train_y[::6] += 50.0  # 4 of 24 targets recorded 50 units off (the others lie in [0, 1])
    groups = meta["Subject"].to_numpy()[:24]
    errors = {}
    for loss in ("mse", "huber"):
        tuner = _tuner(loss, info, lr=1e-2, max_epochs=5).set_params(cache_dir=str(tmp_path), random_state=0)
        predicted = tuner.fit(X[:24], train_y, groups=groups).predict(X[24:48])
        errors[loss] = np.median(np.abs(predicted - y[24:48]))  # windows never trained on, targets all clean
    # MSE is pulled toward the outliers (its optimum, the mean, sits ~8 units up); Huber's gradient is capped.
    assert errors["huber"] < 1.0 < errors["mse"]
    assert errors["huber"] < errors["mse"] / 3


def test_regression_losses_are_refused_for_classification():
    assert loss_name("classification", TrainerConfig()) == "cross_entropy"
    assert loss_name("regression", TrainerConfig()) == "mse"
    with pytest.raises(ConfigError, match="regression loss"):
        loss_name("classification", TrainerConfig(loss="huber"))
    tuned = NeuralFineTuneConfig(model_key="cbramod", weights="random", trainer=TrainerConfig(loss="huber"))
    with pytest.raises(ValueError, match="model 'ft': trainer.loss='huber' is a regression loss"):
        ExperimentConfig(models={"ft": tuned})
    assert ExperimentConfig(task="regression", models={"ft": tuned}, cv=CVConfig(strategy="kfold"))


# -- one prediction per recording or subject ---------------------------------------------------------------------


def _table():
    """Two folds; fold 0 tests recordings r1 (three windows) and r2 (two); fold 1 tests r3 (two) and r4 (two)."""
    predictions = pd.DataFrame(
        {
            "Model": "m",
            "Fold": [0, 0, 0, 0, 0, 1, 1, 1, 1],
            "SampleIndex": np.arange(9),
            "y_true": ["a", "a", "a", "b", "b", "b", "b", "a", "a"],
            "y_pred": ["a", "b", "b", "b", "a", "b", "b", "a", "b"],
            "proba_a": [0.9, 0.4, 0.45, 0.3, 0.6, 0.2, 0.1, 0.8, 0.45],
        }
    ).assign(proba_b=lambda f: 1 - f["proba_a"])
    metadata = pd.DataFrame(
        {"SampleIndex": np.arange(9), "Recording": ["r1", "r1", "r1", "r2", "r2", "r3", "r3", "r4", "r4"]}
    )
    test = predictions[["Model", "Fold", "SampleIndex"]].assign(Set="test")
    train = pd.DataFrame({"Model": "m", "Fold": [0] * 4 + [1] * 5, "SampleIndex": [5, 6, 7, 8, 0, 1, 2, 3, 4]})
    splits = pd.concat([test, train.assign(Set="train")], ignore_index=True)
    return predictions, metadata, splits


def test_aggregated_predictions_by_hand():
    predictions, metadata, splits = _table()
    mean = aggregate_predictions(predictions, metadata, splits, "Recording", "mean_proba", True)
    assert list(mean.columns) == ["Model", "Fold", "Recording", "y_true", "y_pred", "proba_a", "proba_b", "n_windows"]
    assert list(mean["Recording"]) == ["r1", "r2", "r3", "r4"] and list(mean["n_windows"]) == [3, 2, 2, 2]
    # r1: mean P(a) = (0.9 + 0.4 + 0.45) / 3 = 0.583 -> a, though two of its three windows voted b.
    assert mean["proba_a"].tolist() == pytest.approx([1.75 / 3, 0.45, 0.15, 0.625])
    assert mean["y_pred"].tolist() == ["a", "b", "b", "a"]
    vote = aggregate_predictions(predictions, metadata, splits, "Recording", "vote", True)
    # r1: b twice, a once -> b; r2 and r4: one vote each -> a tie, which goes to the first class, a.
    assert vote["y_pred"].tolist() == ["b", "a", "b", "a"]
    assert vote["proba_b"].tolist() == pytest.approx([2 / 3, 0.5, 1.0, 0.5])
    scores = aggregate_scores(predictions, metadata, splits, "Recording", "vote", ["accuracy", "roc_auc"], True)
    by_fold = scores.set_index(["Fold", "Metric"])["Value"]
    # fold 0: r1 (a) predicted b, r2 (b) predicted a -> 0; fold 1: r3 (b) -> b, r4 (a) -> a -> 1.
    assert by_fold[0, "accuracy"] == 0.0 and by_fold[1, "accuracy"] == 1.0
    assert by_fold[1, "roc_auc"] == skm.roc_auc_score([1, 0], [1.0, 0.5])
    assert scores["n_groups"].tolist() == [2, 2, 2, 2] and scores["n_windows"].tolist() == [5, 5, 4, 4]


def test_aggregation_refuses_what_it_cannot_score():
    predictions, metadata, splits = _table()
    with pytest.raises(ConfigError, match="'mean' is not one for classification"):
        aggregate_predictions(predictions, metadata, splits, "Recording", "mean", True)
    leaky = splits.copy()
    leaky.loc[(leaky["Set"] == "train") & (leaky["SampleIndex"] == 2), "Fold"] = 0  # r1's window 2 trains fold 0
    leaky = pd.concat([leaky, leaky.iloc[[2]].assign(Set="train")], ignore_index=True)
    with pytest.raises(ConfigError, match=r"fold 0: the windows of Recording='r1' are in both"):
        aggregate_predictions(predictions, metadata, leaky, "Recording", "vote", True)
    mixed = metadata.assign(Recording=["r1"] * 5 + ["r3"] * 4)
    with pytest.raises(ConfigError, match="different targets"):
        aggregate_predictions(predictions, mixed, splits, "Recording", "vote", True)
    with pytest.raises(ConfigError, match="no class probabilities.*method='vote'"):
        aggregate_predictions(
            predictions.drop(columns=["proba_a", "proba_b"]), metadata, splits, "Recording", None, True
        )


def test_subject_scores_of_a_run(small_dataset, learnable):
    X, y, meta, info = small_dataset
    cfg = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        cv=CVConfig(strategy="group_kfold", n_splits=2, group_key="Subject"),
        metrics=["accuracy"],
        verbose=False,
    )
    # One label per subject, as a clinical benchmark has one diagnosis per patient.
    subject_label = np.where(meta["Subject"].isin(["sub-01", "sub-03"]), "left_hand", "right_hand")
    result = Experiment(cfg).run(X, subject_label, sample_metadata=meta, **info)
    table = result.get_aggregate_scores(by="Subject", method="vote")
    assert list(table.columns) == ["Model", "Fold", "Seed", "Metric", "Value", "n_groups", "n_windows"]
    assert table["n_groups"].tolist() == [2, 2] and table["n_windows"].sum() == len(X)
    predictions = result.get_predictions()
    for fold, part in predictions.groupby("Fold"):
        votes = part.groupby("Subject").agg(truth=("y_true", "first"), pred=("y_pred", lambda v: v.mode().min()))
        expected = float((votes["truth"] == votes["pred"]).mean())
        assert table.loc[table["Fold"] == fold, "Value"].item() == expected
    averaged = result.get_aggregate_scores(by="Subject", average=True)  # mean_proba by default
    assert list(averaged.columns) == ["Model", "Metric", "mean", "std", "n_folds", "n_seeds"]
    assert averaged["n_folds"].item() == 2 and averaged["n_seeds"].item() == 1
    with pytest.raises(ConfigError, match="Trial"):
        result.get_aggregate_scores(by="Trial")  # the group CV split by subject, so trials are on both sides
    # Regression: the mean prediction per subject.
    Xr, yr, meta_r, info_r = learnable
    level = meta_r["Subject"].map({"sub-01": 0.1, "sub-02": 0.4, "sub-03": 0.6, "sub-04": 0.9}).to_numpy()
    reg = Experiment(
        ExperimentConfig(
            task="regression",
            models={"bp": ClassicalModelConfig(estimator="bandpower_ridge")},
            cv=CVConfig(strategy="group_kfold", n_splits=2, group_key="Subject"),
            metrics=["mae"],
            verbose=False,
        )
    ).run(Xr, level, sample_metadata=meta_r, **info_r)
    scores = reg.get_aggregate_scores(by="Subject")
    for fold, part in reg.get_predictions().groupby("Fold"):
        means = part.groupby("Subject").agg(truth=("y_true", "first"), pred=("y_pred", "mean"))
        assert scores.loc[scores["Fold"] == fold, "Value"].item() == pytest.approx(
            skm.mean_absolute_error(means["truth"], means["pred"])
        )
