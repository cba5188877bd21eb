"""ExperimentConfig(sweeps=...): learning curves and channel coverage on the run's own folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import balanced_accuracy_score

from neurofm import Experiment, ExperimentResult
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig, SweepsConfig
from neurofm.cv import make_splits
from neurofm.exceptions import ConfigError
from neurofm.experiment import nested_fraction
from neurofm.report import write_report

CHANNELS = ["C3", "Cz", "C4", "Pz"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    y = np.repeat(["a", "b"], 30)
    X = rng.standard_normal((60, 4, 32)) * 1e-5
    X[y == "b", 0] *= 1.5
    X[y == "b", 2] *= 1.3
    meta = pd.DataFrame({"Subject": np.tile(["S1", "S2", "S3"], 20)})
    return X, y, meta, {"sfreq": 32.0, "ch_names": CHANNELS}


def config(cache_dir, sweeps, **kw):
    models = {
        "forest": ClassicalModelConfig(
            estimator="RandomForestClassifier", params={"n_estimators": 5, "max_depth": 2}, input="flat"
        ),
        "lda": ClassicalModelConfig(estimator="LinearDiscriminantAnalysis", input="flat"),
    }
    return ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy"],
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
        cache_dir=cache_dir,
        verbose=False,
        sweeps=sweeps,
        **kw,
    )


def test_a_learning_curve_keeps_nested_stratified_fractions_of_each_training_partition():
    y = np.array(["a"] * 30 + ["b"] * 10)
    train = np.arange(40)[::-1].copy()  # any order, any indices
    kept = {f: nested_fraction(train, y, f, "classification", 0, fold=1) for f in (0.1, 0.25, 0.5)}
    assert set(kept[0.1]) <= set(kept[0.25]) <= set(kept[0.5]) <= set(train)
    for fraction, windows in kept.items():
        counts = pd.Series(y[windows]).value_counts()
        assert counts["a"] == np.ceil(fraction * 30) and counts["b"] == max(1, np.ceil(fraction * 10))
    assert np.array_equal(kept[0.25], nested_fraction(train, y, 0.25, "classification", 0, fold=1))
    assert not np.array_equal(kept[0.25], nested_fraction(train, y, 0.25, "classification", 0, fold=2))
    # a regression target: quantile bins of the partition's targets, each kept in proportion
    target = np.linspace(0, 1, 40)[::-1].copy()  # target[i] decreases with i; train lists the windows backwards
    kept_windows = nested_fraction(train, target, 0.25, "regression", 0, fold=0)
    assert len(kept_windows) == 10
    assert np.bincount(np.digitize(target[kept_windows], [0.2, 0.4, 0.6, 0.8]), minlength=5).tolist() == [2] * 5
    # multilabel: each combination of labels in proportion (combinations of one window pooled in one stratum)
    labels = np.array([[0, 1]] * 24 + [[1, 0]] * 8 + [[1, 1]] * 7 + [[0, 0]])
    kept_rows = nested_fraction(np.arange(40), labels, 0.25, "multilabel", 0, fold=0)
    combos = pd.Series([tuple(row) for row in labels[kept_rows]]).value_counts()
    assert combos.to_dict() == {(0, 1): 6, (1, 0): 2, (1, 1): 2, (0, 0): 1}  # one stratum: at least one window


def test_every_model_is_scored_at_each_level_on_the_same_test_windows(data, cache_dir):
    X, y, meta, info = data
    sweeps = SweepsConfig(train_fractions=[0.25, 0.5], channel_counts=[2], channel_regions={"left": ["C3"]})
    cfg = config(cache_dir, sweeps, n_seeds=2)
    result = Experiment(cfg).run(X, y, sample_metadata=meta, **info)
    table = result.get_sweep_scores()
    assert list(table.columns) == ["Sweep", "Level", "x", "Model", "Fold", "Seed", "Metric", "Value"]
    levels = table.groupby("Sweep")["Level"].unique().map(list).to_dict()
    assert levels == {"train_fraction": ["0.25", "0.5"], "channels": ["2 random", "left"]}
    assert sorted(table[table["Model"] == "forest"]["Seed"].unique()) == [0, 1]
    assert list(table[table["Model"] == "lda"]["Seed"].unique()) == [0]

    # The LDA at each level is the LDA fitted on what the level keeps, scored on the fold's whole test partition.
    splits = make_splits(cfg.cv, y, meta, "classification", 0)
    micro = X * 1e6

    def lda_score(fold, train, channels):
        flat = micro[:, channels].reshape(len(X), -1)
        lda = LinearDiscriminantAnalysis().fit(flat[train], y[train])
        return balanced_accuracy_score(y[splits[fold][1]], lda.predict(flat[splits[fold][1]]))

    lda = table[table["Model"] == "lda"].set_index(["Level", "Fold"])["Value"]
    for fold, (train, _) in enumerate(splits):
        kept = nested_fraction(train, y, 0.25, "classification", 0, fold)
        assert lda["0.25", fold] == lda_score(fold, kept, [0, 1, 2, 3])
        assert lda["left", fold] == lda_score(fold, train, [0])
    two = table[(table["Level"] == "2 random")]["x"].unique()
    assert list(two) == [2.0]

    averaged = result.get_sweep_scores("train_fraction", average=True).set_index(["Level", "Model"])
    assert averaged.loc[("0.5", "forest"), "n_seeds"] == 2 and np.isnan(averaged.loc[("0.5", "lda"), "seed_std"])


def test_sweeps_resume_save_and_draw(data, cache_dir, tmp_path, record_times):
    X, y, meta, info = data
    out = tmp_path / "out"
    cfg = config(cache_dir, SweepsConfig(train_fractions=[0.5], channel_counts=[3]), n_seeds=2)
    first = Experiment(cfg).run(X, y, sample_metadata=meta, output_dir=out, **info)
    records = record_times(out)
    again = Experiment(cfg).run(X, y, sample_metadata=meta, output_dir=out, **info)
    assert record_times(out) == records  # all read back
    pd.testing.assert_frame_equal(first.get_sweep_scores(), again.get_sweep_scores())
    loaded = ExperimentResult.load(out)
    pd.testing.assert_frame_equal(loaded.get_sweep_scores(), first.get_sweep_scores())
    html = write_report(out).read_text()
    assert 'id="fig-sweep-train_fraction"' in html and 'id="fig-sweep-channels"' in html


def test_bad_sweeps_are_refused_before_any_compute(data, cache_dir):
    X, y, meta, info = data
    with pytest.raises(ConfigError, match=r"channel_regions\['front'\].*\['Fp1'\]"):
        Experiment(config(cache_dir, SweepsConfig(channel_regions={"front": ["Fp1", "Cz"]}))).run(
            X, y, sample_metadata=meta, **info
        )
    with pytest.raises(ConfigError, match="asks for 4 channels, and the windows have 4"):
        Experiment(config(cache_dir, SweepsConfig(channel_counts=[4]))).run(X, y, sample_metadata=meta, **info)
    with pytest.raises(ValidationError, match="names nothing to sweep"):
        SweepsConfig()
    with pytest.raises(ValidationError):
        SweepsConfig(train_fractions=[1.0])


def test_named_regions_are_drawn_on_their_own_never_averaged_with_draws_of_their_size(data, cache_dir, tmp_path):
    from neurofm.report import _sweep_points

    X, y, meta, info = data
    regions = {"left": ["C3", "Cz"], "right": ["C4", "Pz"]}  # both of the random draw's size
    cfg = config(cache_dir, SweepsConfig(channel_counts=[2], channel_regions=regions))
    cfg = cfg.model_copy(update={"models": {"lda": cfg.models["lda"]}})
    Experiment(cfg).run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    result = ExperimentResult.load(tmp_path / "out")
    fold_means = result.get_sweep_scores("channels").groupby("Level")["Value"].mean()
    assert fold_means["left"] != fold_means["right"]  # else a mix-up could not show

    curve, named = _sweep_points(result, "channels", "balanced_accuracy")
    assert sorted(curve["x"]) == [2.0, 4.0]
    assert curve.set_index("x").loc[2.0, "Value"] == fold_means["2 random"]
    assert curve.set_index("x").loc[4.0, "Value"] == result.scores["Value"].mean()
    assert named.set_index("Level")["Value"].to_dict() == {"left": fold_means["left"], "right": fold_means["right"]}
    assert set(named["x"]) == {2.0}
    html = write_report(tmp_path / "out").read_text()
    assert "the right panel holds the named channel regions" in html


def test_a_sweep_level_records_folds_alone_and_leaves_the_main_run_its_permutations_and_refit(
    data, cache_dir, tmp_path, record_times
):
    X, y, meta, info = data
    out = tmp_path / "out"
    cfg = config(cache_dir, SweepsConfig(train_fractions=[0.5]), n_permutations=3, refit=True)
    cfg = cfg.model_copy(update={"models": {"lda": cfg.models["lda"]}})
    result = Experiment(cfg).run(X, y, sample_metadata=meta, output_dir=out, **info)

    folders = {p.parent for p in (out / "progress").rglob("*.json")}
    kinds = sorted(sorted({p.name.split("-")[0] for p in folder.glob("*.json")}) for folder in folders)
    assert kinds == [["fold"], ["fold", "permutation"]]  # the level's folder: folds; the main run's: permutations too
    permutation = result.get_model_artifacts(artifact_type="permutation_test", model="lda")
    assert not permutation.empty and "lda" in result.refit_models
    assert sorted(result.get_sweep_scores()["Fold"].unique()) == [0, 1, 2]

    records = record_times(out)
    again = Experiment(cfg).run(X, y, sample_metadata=meta, output_dir=out, **info)
    assert record_times(out) == records  # all read back
    pd.testing.assert_frame_equal(again.get_sweep_scores(), result.get_sweep_scores())
    pd.testing.assert_frame_equal(again.get_model_artifacts(artifact_type="permutation_test", model="lda"), permutation)
