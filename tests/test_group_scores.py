"""Metadata travels: predictions and splits keep the windows' metadata, folds name their held-out groups, scores
per subject or recording come from the result alone, and all of it survives saving."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from neurofm import Experiment, ExperimentResult
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig
from neurofm.exceptions import ConfigError
from neurofm.simulate import simulate_eeg_dataset


@pytest.fixture(scope="module")
def dataset():
    X, y, meta, info = simulate_eeg_dataset(n_subjects=4, n_windows_per_class=5, random_state=3)
    meta = meta.assign(Session=np.where(meta["Trial"] % 2 == 0, "a", "b"), Fold=7)  # "Fold" clashes with a column
    return X, y, meta, info


def config(**cv) -> ExperimentConfig:
    return ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        cv=CVConfig(**({"strategy": "group_kfold", "n_splits": 2, "group_key": "Subject"} | cv)),
        metrics=["balanced_accuracy", "roc_auc"],
        verbose=False,
    )


@pytest.fixture(scope="module")
def result(dataset):
    X, y, meta, info = dataset
    return Experiment(config()).run(X, y, sample_metadata=meta, **info)


def test_predictions_and_splits_carry_each_windows_metadata(result, dataset):
    meta = dataset[2]
    predictions = result.get_predictions()
    expected = meta["Subject"].to_numpy()[predictions["SampleIndex"].to_numpy()]
    assert np.array_equal(predictions["Subject"].to_numpy(), expected)
    assert np.array_equal(predictions["Session"], meta["Session"].to_numpy()[predictions["SampleIndex"]])
    # A metadata column named like one of the result's own is kept beside it, not over it.
    assert set(predictions["Fold"]) == {0, 1} and set(predictions["metadata_Fold"]) == {7}
    splits = result.get_splits()
    assert len(splits) == len(result.splits) and np.array_equal(
        splits["Subject"].to_numpy(), meta["Subject"].to_numpy()[splits["SampleIndex"].to_numpy()]
    )


def test_folds_are_labelled_with_the_groups_they_held_out(result):
    scores = result.get_detailed_scores()
    test = result.get_splits().query("Set == 'test'")
    for (fold, held_out), _ in scores.groupby(["Fold", "HeldOut"]):
        subjects = sorted(test.loc[test["Fold"] == fold, "Subject"].unique())
        assert held_out == ", ".join(subjects)
    assert scores["HeldOut"].notna().all() and scores["HeldOut"].nunique() == 2


def test_group_scores_are_the_metrics_of_each_groups_test_predictions(result, dataset):
    table = result.get_group_scores(by="Subject")
    assert list(table.columns) == ["Model", "Subject", "Metric", "Value", "n_windows"]
    predictions = result.get_predictions()
    for subject, part in predictions.groupby("Subject"):
        row = table[(table["Subject"] == subject) & (table["Metric"] == "balanced_accuracy")]
        assert row["Value"].item() == balanced_accuracy_score(part["y_true"], part["y_pred"])
        assert row["n_windows"].item() == len(part) == 10
        auc = table[(table["Subject"] == subject) & (table["Metric"] == "roc_auc")]["Value"].item()
        positive = sorted(part["y_true"].unique())[1]
        assert auc == pytest.approx(roc_auc_score(part["y_true"] == positive, part[f"proba_{positive}"]))
    # Per recording: several columns; chosen metrics.
    per_session = result.get_group_scores(by=["Subject", "Session"], metrics=["accuracy"])
    assert len(per_session) == 8 and set(per_session["Metric"]) == {"accuracy"}
    assert per_session["n_windows"].sum() == len(predictions)
    with pytest.raises(ConfigError, match=r"No metadata column 'Run'.*'Subject', 'Trial', 'Session'"):
        result.get_group_scores(by="Run")


def test_metadata_survives_saving(result, tmp_path):
    folder = result.save(tmp_path / "out")
    assert (folder / "metadata.parquet").is_file()
    loaded = ExperimentResult.load(folder)
    pd.testing.assert_frame_equal(loaded.get_predictions(), result.get_predictions(), check_dtype=False)
    pd.testing.assert_frame_equal(loaded.get_detailed_scores(), result.get_detailed_scores(), check_dtype=False)
    pd.testing.assert_frame_equal(loaded.get_group_scores(), result.get_group_scores(), check_dtype=False)


def test_without_metadata_the_tables_are_as_before_and_grouping_says_what_is_missing(dataset):
    X, y, _, info = dataset
    plain = Experiment(config(strategy="stratified_kfold", group_key=None)).run(X, y, **info)
    assert list(plain.get_predictions().columns) == list(plain.predictions.columns)
    assert "HeldOut" not in plain.get_detailed_scores()
    with pytest.raises(ConfigError, match="no columns.*sample_metadata"):
        plain.get_group_scores()
