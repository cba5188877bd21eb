"""ExperimentResult tables, their consistency, and saving in open formats."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm

from neurofm import Experiment, ExperimentResult
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig

METRICS = ["balanced_accuracy", "roc_auc", "accuracy", "f1_macro", "cohen_kappa"]


@pytest.fixture(scope="module")
def config():
    return ExperimentConfig(
        models={
            "bandpower_lr": ClassicalModelConfig(estimator="bandpower_lr"),
            "flat_lr": ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 200}),
        },
        metrics=METRICS,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
        random_state=0,
        verbose=False,
    )


@pytest.fixture(scope="module")
def result(small_dataset, config):
    X, y, meta, info = small_dataset
    return Experiment(config).run(X, y, meta, **info)


def test_summary_has_mean_and_std_per_model_and_metric(result, config):
    summary = result.summary()
    assert {"Model", "Metric", "mean", "std"} <= set(summary.columns)
    assert len(summary) == 2 * len(METRICS)
    assert set(zip(summary["Model"], summary["Metric"], strict=True)) == {
        (m, k) for m in config.models for k in METRICS
    }
    scores = result.get_detailed_scores()
    for row in summary.itertuples():
        values = scores.loc[(scores["Model"] == row.Model) & (scores["Metric"] == row.Metric), "Value"]
        assert len(values) == 3
        assert row.mean == pytest.approx(values.mean())
        assert row.std == pytest.approx(values.std(ddof=1))
    table = result.summary_table()
    assert list(table.index) == ["bandpower_lr", "flat_lr"] and list(table.columns) == METRICS
    assert "±" in table.loc["bandpower_lr", "accuracy"]


def test_bandpower_beats_chance_on_simulated_data(result):
    summary = result.summary().set_index(["Model", "Metric"])
    assert summary.loc[("bandpower_lr", "balanced_accuracy"), "mean"] > 0.7
    assert summary.loc[("bandpower_lr", "roc_auc"), "mean"] > 0.8


def test_detailed_scores_columns(result):
    scores = result.get_detailed_scores()
    # HeldOut: the subjects each fold tested on (the CV split by Subject).
    assert list(scores.columns) == ["Model", "Fold", "Seed", "Metric", "Value", "HeldOut"]
    assert len(scores) == 2 * 3 * len(METRICS)
    assert set(scores["Fold"]) == {0, 1, 2}
    assert scores["Value"].between(-1, 1).all()
    scores.loc[0, "Value"] = 99.0  # a copy: the result is not changed
    assert result.get_detailed_scores().loc[0, "Value"] != 99.0


def test_scores_agree_with_predictions(result):
    scores = result.get_detailed_scores().set_index(["Model", "Fold", "Metric"])["Value"]
    predictions = result.get_predictions()
    for (model, fold), frame in predictions.groupby(["Model", "Fold"]):
        t, p = frame["y_true"], frame["y_pred"]
        assert scores[(model, fold, "accuracy")] == pytest.approx(skm.accuracy_score(t, p))
        assert scores[(model, fold, "balanced_accuracy")] == pytest.approx(skm.balanced_accuracy_score(t, p))
        assert scores[(model, fold, "f1_macro")] == pytest.approx(skm.f1_score(t, p, average="macro", zero_division=0))
        assert scores[(model, fold, "cohen_kappa")] == pytest.approx(skm.cohen_kappa_score(t, p))
        if model == "bandpower_lr":
            auc = skm.roc_auc_score(t == "right_hand", frame["proba_right_hand"])
            assert scores[(model, fold, "roc_auc")] == pytest.approx(auc)


def test_predictions_table(result, small_dataset):
    _, y, _, _ = small_dataset
    predictions = result.get_predictions()
    assert list(predictions.columns[:6]) == ["Model", "Fold", "Seed", "SampleIndex", "y_true", "y_pred"]
    proba_cols = [c for c in predictions.columns if c.startswith("proba_")]
    assert proba_cols == ["proba_left_hand", "proba_right_hand"]
    bp = predictions[predictions["Model"] == "bandpower_lr"]
    np.testing.assert_allclose(bp[proba_cols].sum(axis=1), 1.0, atol=1e-6)
    assert ((bp[proba_cols] >= 0) & (bp[proba_cols] <= 1)).all().all()
    # y_true is the label of the window named by SampleIndex.
    np.testing.assert_array_equal(predictions["y_true"].to_numpy(), y[predictions["SampleIndex"].to_numpy()])
    # The predicted class is the most probable one.
    argmax = np.where(bp["proba_right_hand"] > 0.5, "right_hand", "left_hand")
    np.testing.assert_array_equal(bp["y_pred"].to_numpy(), argmax)


def test_every_window_is_tested_exactly_once_per_model(result, small_dataset):
    n = len(small_dataset[1])
    predictions = result.get_predictions()
    for _, frame in predictions.groupby("Model"):
        assert sorted(frame["SampleIndex"]) == list(range(n))


def test_splits_table(result, small_dataset):
    X, _, meta, _ = small_dataset
    n = len(X)
    splits = result.get_splits()
    assert list(splits.columns) == ["Model", "Fold", "SampleIndex", "Set", "Subject", "Trial"]  # + the metadata
    assert set(splits["Set"]) == {"train", "test"}
    subjects = meta["Subject"].to_numpy()
    for _, per_model in splits.groupby("Model"):
        tested = per_model.loc[per_model["Set"] == "test", "SampleIndex"]
        assert sorted(tested) == list(range(n))  # each sample is test exactly once per model
        for _, fold in per_model.groupby("Fold"):
            assert sorted(fold["SampleIndex"]) == list(range(n))  # train and test partition the windows
            train = fold.loc[fold["Set"] == "train", "SampleIndex"]
            test = fold.loc[fold["Set"] == "test", "SampleIndex"]
            assert not set(subjects[train]) & set(subjects[test])
    # Both models were evaluated on the same folds.
    a = splits[splits["Model"] == "bandpower_lr"].drop(columns="Model").reset_index(drop=True)
    b = splits[splits["Model"] == "flat_lr"].drop(columns="Model").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    # Test rows of the splits table are the predicted rows.
    pred = result.get_predictions()
    for (model, fold), frame in splits[splits["Set"] == "test"].groupby(["Model", "Fold"]):
        got = pred.loc[(pred["Model"] == model) & (pred["Fold"] == fold), "SampleIndex"]
        assert sorted(got) == sorted(frame["SampleIndex"])


def test_artifacts_and_meta(result):
    artifacts = result.get_model_artifacts()
    assert list(artifacts.columns) == ["Model", "Fold", "ArtifactType", "ArtifactKey", "ArtifactValue"]
    timing = result.get_model_artifacts("timing", model="flat_lr")
    wall = timing[timing["ArtifactKey"] == "wall_seconds"].reset_index(drop=True)
    assert len(wall) == 1 and wall.loc[0, "Fold"] == -1 and wall.loc[0, "ArtifactValue"] >= 0
    fits = timing[timing["ArtifactKey"] == "fit_seconds"]  # each fold's fit
    assert sorted(fits["Fold"]) == [0, 1, 2] and (fits["ArtifactValue"] >= 0).all()
    assert result.meta["n_windows"] == 48
    assert result.meta["signal"]["sfreq"] == 160.0 and result.meta["signal"]["n_times"] == 640
    assert "2 model(s)" in repr(result) and "3 fold(s)" in repr(result)


def test_save_and_load_round_trip(result, config, tmp_path):
    out = result.save(tmp_path / "run")
    loaded = ExperimentResult.load(out)
    # Parquet keeps every float bit: what loads back is the result itself, not something close to it.
    pd.testing.assert_frame_equal(loaded.get_detailed_scores(), result.get_detailed_scores(), check_exact=True)
    pd.testing.assert_frame_equal(loaded.get_predictions(), result.get_predictions(), check_exact=True)
    pd.testing.assert_frame_equal(loaded.get_splits(), result.get_splits(), check_exact=True)
    pd.testing.assert_frame_equal(loaded.get_model_artifacts(), result.get_model_artifacts(), check_exact=True)
    pd.testing.assert_frame_equal(loaded.summary(), result.summary(), check_exact=True)
    assert loaded.config == result.config
    assert ExperimentConfig.model_validate(loaded.config) == config
    assert loaded.meta == result.meta


def test_saved_files_are_open_formats(result, tmp_path):
    out = result.save(tmp_path / "run")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "scores.parquet",
            "predictions.parquet",
            "splits.parquet",
            "artifacts.parquet",
            "metadata.parquet",
            "config.yaml",
            "meta.json",
            ".neurofm",
        ]  # the marker of a folder of neurofm's own (JSON)
    )
    for path in out.iterdir():
        raw = path.read_bytes()
        assert not raw.startswith(b"\x80"), f"{path.name} looks like a pickle"
        if path.suffix == ".parquet":
            assert raw[:4] == b"PAR1" and raw[-4:] == b"PAR1"
    assert isinstance(yaml.safe_load((out / "config.yaml").read_text()), dict)
    assert json.loads((out / "meta.json").read_text())["n_windows"] == 48


def test_load_of_a_wrong_directory_names_the_missing_files(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"is not a saved neurofm result: missing \['scores\.parquet', 'predictions\.parquet'"
    ):
        ExperimentResult.load(tmp_path)


# -- multiclass and regression ------------------------------------------------------


def test_multiclass_roc_auc(small_dataset):
    X, y, meta, info = small_dataset
    X3 = X.copy()
    y3 = y.astype(object).copy()
    rest = (meta["Trial"] % 3 == 0).to_numpy()
    y3[rest] = "rest"
    y3 = y3.astype(str)
    X3[rest] *= 3.0  # a louder third class that band power can tell apart
    cfg = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        metrics=["roc_auc", "balanced_accuracy"],
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
        verbose=False,
    )
    result = Experiment(cfg).run(X3, y3, meta, **info)
    predictions = result.get_predictions()
    proba_cols = ["proba_left_hand", "proba_rest", "proba_right_hand"]
    assert [c for c in predictions.columns if c.startswith("proba_")] == proba_cols
    np.testing.assert_allclose(predictions[proba_cols].sum(axis=1), 1.0, atol=1e-6)
    scores = result.get_detailed_scores()
    auc = scores[scores["Metric"] == "roc_auc"].set_index("Fold")["Value"]
    assert len(auc) == 3 and auc.notna().all() and auc.between(0, 1).all()
    for fold, frame in predictions.groupby("Fold"):
        expected = skm.roc_auc_score(
            frame["y_true"], frame[proba_cols].to_numpy(), multi_class="ovr", labels=["left_hand", "rest", "right_hand"]
        )
        assert auc[fold] == pytest.approx(expected)
    assert auc.mean() > 0.7  # proba columns aligned with the classes


def test_regression_with_kfold_and_ridge(small_dataset):
    X, _, _, info = small_dataset
    rng = np.random.default_rng(0)
    target = rng.uniform(0.5, 2.0, len(X))
    # A learnable target: a fixed spatio-temporal pattern scaled by it, which a linear model of the samples can read.
    pattern = rng.standard_normal((1, X.shape[1], 1)) * np.sin(
        2 * np.pi * 10.0 * np.arange(X.shape[-1]) / info["sfreq"]
    )
    X = X + 20e-6 * target[:, None, None] * pattern
    cfg = ExperimentConfig(
        task="regression",
        models={"ridge": ClassicalModelConfig(estimator="Ridge", params={"alpha": 1.0})},
        metrics=["r2", "mae", "rmse", "pearson"],
        cv=CVConfig(strategy="kfold", n_splits=3),
        verbose=False,
    )
    result = Experiment(cfg).run(X, target, None, **info)
    scores = result.get_detailed_scores()
    assert set(scores["Metric"]) == {"r2", "mae", "rmse", "pearson"}
    assert len(scores) == 3 * 4 and scores["Value"].notna().all()
    predictions = result.get_predictions()
    assert not any(c.startswith("proba_") for c in predictions.columns)
    assert predictions["y_true"].dtype.kind == "f"
    assert sorted(predictions["SampleIndex"]) == list(range(len(X)))
    by = scores.set_index(["Fold", "Metric"])["Value"]
    for fold, frame in predictions.groupby("Fold"):
        t, p = frame["y_true"].to_numpy(), frame["y_pred"].to_numpy()
        assert by[(fold, "mae")] == pytest.approx(np.mean(np.abs(t - p)))
        assert by[(fold, "rmse")] == pytest.approx(np.sqrt(np.mean((t - p) ** 2)))
        assert by[(fold, "r2")] == pytest.approx(skm.r2_score(t, p))
        assert by[(fold, "pearson")] == pytest.approx(np.corrcoef(t, p)[0, 1])
        assert by[(fold, "rmse")] >= by[(fold, "mae")]
        assert by[(fold, "r2")] > 0.5 and by[(fold, "pearson")] > 0.7  # measured: r2 0.98-0.99, pearson 0.999


def test_regression_default_metrics(small_dataset):
    X, _, _, info = small_dataset
    target = np.linspace(0.0, 1.0, len(X))
    cfg = ExperimentConfig(
        task="regression",
        models={"ridge": ClassicalModelConfig(estimator="Ridge")},
        cv=CVConfig(strategy="kfold", n_splits=2),
        verbose=False,
    )
    result = Experiment(cfg).run(X, target, None, **info)
    assert list(dict.fromkeys(result.get_detailed_scores()["Metric"])) == ["r2", "mae", "rmse", "pearson"]
