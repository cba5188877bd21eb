"""ExperimentConfig(n_seeds=k): every stochastic model runs k times on the same folds, deterministic ones once."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score

from neurofm import Experiment
from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
)
from neurofm.cv import make_splits
from neurofm.estimators.classical import build_window_estimator, uses_randomness
from neurofm.models import get_model_spec
from neurofm.report import write_report
from neurofm.tasks import permute_labels
from neurofm.utils.logging import logger

FOREST = {"n_estimators": 5, "max_depth": 2}


def models():
    return {
        "forest": ClassicalModelConfig(estimator="RandomForestClassifier", params=FOREST, input="flat"),
        "lda": ClassicalModelConfig(estimator="LinearDiscriminantAnalysis", input="flat"),
    }


def config(cache_dir, **kw):
    return ExperimentConfig(
        models=kw.pop("models", None) or models(),
        metrics=["balanced_accuracy"],
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),
        cache_dir=cache_dir,
        verbose=kw.pop("verbose", False),
        **kw,
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n, y = 48, np.repeat(["a", "b"], 24)
    X = rng.standard_normal((n, 4, 32)) * 1e-5
    X[y == "b", 0] *= 1.6  # learnable, not perfectly: seeds of a forest then disagree
    meta = pd.DataFrame({"Subject": np.tile(["S1", "S2", "S3", "S4"], 12)})
    return X, y, meta, {"sfreq": 32.0, "ch_names": ["C3", "Cz", "C4", "Pz"]}


def run(data, cache_dir, **kw):
    X, y, meta, info = data
    out = kw.pop("out", None)
    return Experiment(config(cache_dir, **kw)).run(X, y, sample_metadata=meta, output_dir=out, **info)


def test_stochastic_models_run_once_per_seed_on_the_same_folds_and_deterministic_ones_once(data, cache_dir):
    X, y, meta, _ = data
    result = run(data, cache_dir, n_seeds=3)
    seeds = result.scores.groupby("Model")["Seed"].unique().map(sorted).to_dict()
    assert seeds == {"forest": [0, 1, 2], "lda": [0]}
    assert set(result.predictions.groupby("Model")["Seed"].unique().map(sorted).map(tuple)) == {(0, 1, 2), (0,)}
    # Seed s is the estimator with random_state + s, fitted on the folds of the experiment's random_state.
    splits = make_splits(config(cache_dir).cv, y, meta, "classification", 0)
    flat = X.reshape(len(X), -1) * 1e6  # what a flat estimator sees: EEG in microvolts
    for seed in range(3):
        for fold, (train, test) in enumerate(splits):
            forest = clone(RandomForestClassifier(**FOREST, random_state=seed)).fit(flat[train], y[train])
            expected = balanced_accuracy_score(y[test], forest.predict(flat[test]))
            scores = result.scores
            got = scores[(scores["Model"] == "forest") & (scores["Seed"] == seed) & (scores["Fold"] == fold)]
            got = got["Value"].item()
            assert got == expected
    artifacts = result.get_model_artifacts(artifact_type="seeds")
    assert dict(zip(artifacts["Model"], artifacts["ArtifactValue"], strict=True)) == {"forest": [0, 1, 2], "lda": [0]}


def test_one_seed_is_the_run_without_seeds_and_seed_zero_of_more(data, cache_dir):
    one = run(data, cache_dir)
    three = run(data, cache_dir, n_seeds=3)
    first = three.scores[three.scores["Seed"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(one.scores, first)
    assert set(one.scores["Seed"]) == {0}


def test_summary_is_over_seeds_and_folds_and_says_how_much_the_seed_moves_the_score(data, cache_dir):
    result = run(data, cache_dir, n_seeds=3)
    summary = result.summary().set_index("Model")
    forest = result.scores[result.scores["Model"] == "forest"]["Value"]
    # pandas' grouped and plain std sum in another order: equal up to rounding
    assert summary.loc["forest", "mean"] == pytest.approx(forest.mean(), rel=1e-12)
    assert summary.loc["forest", "std"] == pytest.approx(forest.std(), rel=1e-12)
    assert (summary.loc["forest", "n_folds"], summary.loc["forest", "n_seeds"]) == (2, 3)
    per_seed = result.scores[result.scores["Model"] == "forest"].groupby("Seed")["Value"].mean()
    assert summary.loc["forest", "seed_std"] == pytest.approx(per_seed.std(), rel=1e-12) and per_seed.std() > 0
    assert summary.loc["lda", "n_seeds"] == 1 and np.isnan(summary.loc["lda", "seed_std"])


def test_comparisons_pair_folds_on_the_mean_over_seeds(data, cache_dir):
    result = run(data, cache_dir, n_seeds=3)
    comparison = result.compare("forest", "lda", "balanced_accuracy")
    scores = result.scores.groupby(["Model", "Fold"])["Value"].mean()
    assert comparison["n_folds"] == 2
    assert comparison["differences"] == [scores["forest", k] - scores["lda", k] for k in (0, 1)]


def test_a_permutation_is_scored_as_observed_the_mean_over_seeds_and_folds(data, cache_dir):
    X, y, meta, _ = data
    result = run(data, cache_dir, n_seeds=2, n_permutations=3, models={"forest": models()["forest"]})
    stats = result.get_statistics().set_index("Metric")
    assert stats.loc["balanced_accuracy", "observed"] == result.scores["Value"].mean()
    # The same labellings for every seed, each seed refitted on them; the null score is their mean.
    splits = make_splits(config(cache_dir).cv, y, meta, "classification", 0)
    flat = X.reshape(len(X), -1) * 1e6
    rng = np.random.default_rng(0)
    groups = meta["Subject"].to_numpy()
    null = []
    for _ in range(3):
        permuted = permute_labels(y, groups, rng)
        per_seed = []
        for seed in range(2):
            folds = []
            for train, test in splits:
                forest = RandomForestClassifier(**FOREST, random_state=seed).fit(flat[train], permuted[train])
                folds.append(balanced_accuracy_score(permuted[test], forest.predict(flat[test])))
            per_seed.append(np.mean(folds))
        null.append(np.mean(per_seed))
    assert stats.loc["balanced_accuracy", "chance_mean"] == pytest.approx(np.mean(null), rel=0, abs=1e-12)
    better = np.sum(np.asarray(null) >= stats.loc["balanced_accuracy", "observed"] - 1e-12)
    assert stats.loc["balanced_accuracy", "p_value"] == (better + 1) / 4
    rows = result.get_model_artifacts(artifact_type="permutation_test")
    assert "mean over 2 seeds x 2 folds" in set(rows["ArtifactValue"].astype(str))


def test_seeds_resume_from_their_own_records(data, cache_dir, tmp_path, record_times):
    out = tmp_path / "out"
    first = run(data, cache_dir, n_seeds=2, out=out)
    folders = sorted(p.name for p in (out / "progress").iterdir() if p.is_dir())
    assert len(folders) == 3  # forest seeds 0 and 1, lda once
    again = run(data, cache_dir, n_seeds=2, out=out)
    pd.testing.assert_frame_equal(first.scores, again.scores)
    # A one-seed run into the same folder reads seed 0 back: the same records, nothing new written.
    before = record_times(out, "fold-*.json")
    one = run(data, cache_dir, out=out)
    assert record_times(out, "fold-*.json") == before
    pd.testing.assert_frame_equal(one.scores, first.scores[first.scores["Seed"] == 0].reset_index(drop=True))


def test_which_models_draw_random_numbers():
    assert not uses_randomness(LogisticRegression())  # lbfgs reads no random_state
    assert uses_randomness(LogisticRegression(solver="saga"))
    assert not uses_randomness(Ridge()) and not uses_randomness(LinearDiscriminantAnalysis())
    assert uses_randomness(RandomForestClassifier())
    # A tuned baseline shuffles its inner split with random_state: another seed may choose otherwise.
    assert uses_randomness(build_window_estimator("ts_lr", {}, 128.0, 0))


def test_random_backbone_weights_are_drawn_per_seed(small_dataset, cache_dir):
    X, y, meta, info = small_dataset
    spec = get_model_spec("cbramod")
    backbone = {"model_key": "cbramod", "model_kwargs": spec.tiny_kwargs}
    frozen = {
        "random": FrozenBackboneDecoderConfig(
            backbone=FoundationEmbeddingModelConfig(weights="random", **backbone),
            head=ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 300}),
        ),
    }
    cfg = config(cache_dir, models=frozen, n_seeds=2)
    result = Experiment(cfg).run(X, y, sample_metadata=meta, **info)
    assert sorted(set(result.scores["Seed"])) == [0, 1]
    proba = result.predictions.pivot_table(index=["Fold", "SampleIndex"], columns="Seed", values="proba_" + str(y[0]))
    assert not np.allclose(proba[0], proba[1])  # other weights, other embeddings, other predictions


def test_the_plan_counts_every_seed(data, cache_dir, tmp_path, monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(logger, "handlers", [logging.Handler()])
    logger.handlers[0].emit = lambda record: said.append(record.getMessage())
    run(data, cache_dir, n_seeds=3, n_permutations=2, out=tmp_path / "out", verbose=True)
    plan = next(m for m in said if m.startswith("Plan: "))
    # forest x 3 seeds + lda once = 4 runs of 2 folds; 2 permutations of each run
    assert "2 models (forest x 3 seeds) x 2 folds = 8 fits" in plan
    assert "2 label permutations x 2 folds for 2 of them (every seed) = 16 more fits" in plan
    assert "nothing on record yet" in plan
    said.clear()
    run(data, cache_dir, n_seeds=3, n_permutations=2, out=tmp_path / "out", verbose=True)
    plan = next(m for m in said if m.startswith("Plan: "))
    assert "16 of 16 fold and permutation records already in the output folder" in plan


def test_the_report_says_the_scores_are_over_seeds_and_plots_one_prediction_per_window(data, cache_dir, tmp_path):
    out = tmp_path / "out"
    run(data, cache_dir, n_seeds=3, out=out)
    html = write_report(out).read_text()
    assert "a model with n_seeds 3 ran once per seed on the same folds" in html
    assert "seeds of each stochastic model: 3" in html
    one = tmp_path / "one"
    run(data, cache_dir, out=one)
    assert "ran once per seed" not in write_report(one).read_text()
