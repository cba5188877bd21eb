"""Chance level by label permutation and paired comparison of models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import neurofm.experiment
from neurofm import Experiment, ExperimentResult
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig
from neurofm.simulate import simulate_eeg_dataset


def _run(X, y, meta, info, tmp_path, n_permutations=19):
    models = {
        "bandpower_lr": ClassicalModelConfig(estimator="bandpower_lr"),
        "prior_dummy": ClassicalModelConfig(estimator="DummyClassifier", params={"strategy": "prior"}),
    }
    cfg = ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy", "roc_auc"],
        cache_dir=str(tmp_path),
        verbose=False,
        n_permutations=n_permutations,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=4, group_key="Subject"),
    )
    return Experiment(cfg).run(X, y, sample_metadata=meta, **info)


def test_permutation_p_values_separate_signal_from_chance(tmp_path):
    X, y, meta, info = simulate_eeg_dataset(n_subjects=4, n_windows_per_class=12, effect_size=0.9, random_state=5)
    result = _run(X, y, meta, info, tmp_path)
    stats = result.get_statistics().set_index(["Model", "Metric"])
    assert stats.loc[("bandpower_lr", "balanced_accuracy"), "p_value"] == 1 / 20  # beats all 19 shuffles
    assert abs(stats.loc[("bandpower_lr", "balanced_accuracy"), "chance_mean"] - 0.5) < 0.1
    # A constant predictor scores exactly 0.5 on every fold, shuffled or not: all 19 shuffles tie it, p = 20 / 20.
    assert stats.loc[("prior_dummy", "balanced_accuracy"), ["observed", "chance_mean", "p_value"]].tolist() == [
        0.5,
        0.5,
        1.0,
    ]
    saved = ExperimentResult.load(result.save(tmp_path / "out"))
    pd.testing.assert_frame_equal(saved.get_statistics(), result.get_statistics(), check_exact=True)


def test_paired_comparison_on_the_same_folds(tmp_path):
    X, y, meta, info = simulate_eeg_dataset(n_subjects=4, n_windows_per_class=12, effect_size=0.9, random_state=5)
    result = _run(X, y, meta, info, tmp_path, n_permutations=0)
    cmp = result.compare("bandpower_lr", "prior_dummy", "balanced_accuracy")
    scores = (
        result.get_detailed_scores()
        .query("Metric == 'balanced_accuracy'")
        .pivot(index="Fold", columns="Model", values="Value")
    )
    np.testing.assert_allclose(cmp["differences"], (scores["bandpower_lr"] - scores["prior_dummy"]).to_numpy())
    assert cmp["n_folds"] == 4 and cmp["mean_difference"] > 0.2
    assert 0 < cmp["corrected_t_p"] < 0.05
    # The comparison prints as a table saying what each number is; it stays a dict of them.
    assert isinstance(cmp, dict) and "Nadeau and Bengio" in repr(cmp) and "bandpower_lr vs prior_dummy" in repr(cmp)
    assert cmp.to_frame().set_index("quantity").loc["n_folds", "value"] == 4
    # Without permutations the chance level is the label-blind predictor's, said so, without a p-value.
    stats = result.get_statistics()
    # (balanced accuracy 1/2 and ROC AUC 1/2 for two classes, whatever the model)
    assert len(stats) == 4 and stats["chance_mean"].tolist() == [0.5] * 4 and stats["p_value"].isna().all()
    assert stats["method"].str.startswith("label-blind predictor").all()


def test_trainable_models_are_permuted_only_when_asked(tmp_path):
    from neurofm.configs import NeuralFineTuneConfig, TrainerConfig
    from neurofm.models import get_model_spec

    X, y, meta, info = simulate_eeg_dataset(n_subjects=3, n_windows_per_class=4, random_state=2)
    tuner = NeuralFineTuneConfig(
        model_key="cbramod",
        weights="random",
        train_mode="frozen",
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        trainer=TrainerConfig(max_epochs=1, batch_size=8, early_stopping_patience=None),
    )
    base = {
        "models": {"tuned": tuner},
        "metrics": ["balanced_accuracy"],
        "cache_dir": str(tmp_path),
        "verbose": False,
        "n_permutations": 2,
        "cv": CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
    }
    skipped = Experiment(ExperimentConfig(**base)).run(X, y, sample_metadata=meta, **info)
    blind = skipped.get_statistics()  # not permuted: the label-blind chance level, no p-value, and why
    assert blind["p_value"].isna().all() and "permute_trainable" in blind["method"].iloc[0]
    note = skipped.get_model_artifacts(artifact_type="permutation_test")
    assert list(note["ArtifactKey"]) == ["skipped"] and "permute_trainable=True" in note["ArtifactValue"].iloc[0]
    permuted = Experiment(ExperimentConfig(**base, permute_trainable=True)).run(X, y, sample_metadata=meta, **info)
    stats = permuted.get_statistics().set_index("Model")
    assert 1 / 3 <= stats.loc["tuned", "p_value"] <= 1 and np.isfinite(stats.loc["tuned", "chance_mean"])
    assert stats.loc["tuned", "method"].startswith("label permutation (2 permutations)")


# -- p-values against hand computation --------------------------------------------------------------------------

# Scores of the 9 label permutations relative to the observed score: 3 of them (+0.1, +0.05 and the tie) are at
# least as high, 7 (the tie and the 6 below) at least as low.
OFFSETS = [-0.3, 0.1, -0.2, 0.0, -0.1, 0.05, -0.05, -0.15, -0.25]


def _rigged_permutations(monkeypatch, observed: dict[str, float], y):
    """Every permutation refit returns observed + the next offset: the null distribution is known in advance."""
    seen = []

    def rigged(task, shared):
        assert sorted(task.y.tolist()) == sorted(y.tolist()) and len(task.splits) > 0  # shuffled labels, the same folds
        offset = OFFSETS[len(seen)]
        seen.append(offset)
        return {metric: observed[metric] + offset for metric in task.metrics}

    monkeypatch.setattr(neurofm.experiment, "run_permutation", rigged)
    return seen


@pytest.mark.parametrize(
    ("task", "metrics", "expected_p"),
    [
        ("classification", ["balanced_accuracy"], {"balanced_accuracy": (1 + 3) / (1 + 9)}),
        # Lower is better for mae: the 7 offsets <= 0 count; higher is better for r2: the 3 offsets >= 0.
        ("regression", ["r2", "mae"], {"r2": (1 + 3) / (1 + 9), "mae": (1 + 7) / (1 + 9)}),
    ],
)
def test_the_permutation_p_value_is_one_plus_the_shuffles_as_good_over_one_plus_their_number(
    task, metrics, expected_p, tmp_path, monkeypatch
):
    X, y, meta, info = simulate_eeg_dataset(n_subjects=3, n_windows_per_class=6, random_state=3)
    if task == "regression":
        y = np.random.default_rng(0).uniform(0.0, 1.0, len(X))
    model = {"classification": "bandpower_lr", "regression": "Ridge"}[task]
    cv = CVConfig(
        strategy="stratified_group_kfold" if task == "classification" else "group_kfold",
        n_splits=3,
        group_key="Subject",
    )

    def run(n_permutations):
        cfg = ExperimentConfig(
            task=task,
            models={"m": ClassicalModelConfig(estimator=model)},
            metrics=metrics,
            cache_dir=str(tmp_path),
            verbose=False,
            n_permutations=n_permutations,
            cv=cv,
        )
        return Experiment(cfg).run(X, y, sample_metadata=meta, **info)

    observed = run(0).summary().set_index("Metric")["mean"].to_dict()
    seen = _rigged_permutations(monkeypatch, observed, y)
    stats = run(len(OFFSETS)).get_statistics().set_index("Metric")
    assert seen == OFFSETS  # every permutation ran, once
    for metric in metrics:
        assert stats.loc[metric, "observed"] == observed[metric]
        assert stats.loc[metric, "p_value"] == pytest.approx(expected_p[metric], abs=1e-12)
        assert stats.loc[metric, "chance_mean"] == pytest.approx(observed[metric] + np.mean(OFFSETS), abs=1e-12)


def _fixed_result(a_scores, b_scores, n_windows=100):
    """An ExperimentResult with given fold scores of models a and b and k folds of n_windows / k test windows."""
    k = len(a_scores)
    scores = pd.DataFrame(
        [
            {"Model": m, "Fold": f, "Metric": "balanced_accuracy", "Value": v}
            for m, values in (("a", a_scores), ("b", b_scores))
            for f, v in enumerate(values)
        ]
    )
    folds = np.arange(n_windows) % k
    splits = pd.DataFrame(
        [
            {"Model": m, "Fold": f, "SampleIndex": i, "Set": "test" if folds[i] == f else "train"}
            for m in ("a", "b")
            for f in range(k)
            for i in range(n_windows)
        ]
    )
    empty = pd.DataFrame(columns=["Model", "Fold", "ArtifactType", "ArtifactKey", "ArtifactValue"])
    return ExperimentResult(scores, pd.DataFrame(), splits, empty, config={})


def test_paired_comparison_matches_the_formulas_computed_by_hand():
    # Five folds of 100 windows: 20 tested, 80 trained on in each. Differences a - b without ties or zeros.
    b = np.array([0.60, 0.55, 0.70, 0.65, 0.50])
    d = np.array([0.05, 0.12, -0.02, 0.08, 0.15])
    out = _fixed_result((b + d).tolist(), b.tolist()).compare("a", "b", "balanced_accuracy")
    np.testing.assert_allclose(out["differences"], d, rtol=0, atol=1e-15)
    assert out["n_folds"] == 5 and out["mean_difference"] == pytest.approx(0.076, abs=1e-15)

    # Wilcoxon signed rank, exact: |d| ranks 2, 4, 1, 3, 5; the one negative difference has rank 1, so W = 1.
    # Of the 2^5 sign patterns, 2 give W <= 1 ({} and {1}); two-sided p = 2 * 2 / 32.
    assert out["wilcoxon_p"] == pytest.approx(4 / 32, abs=1e-12)
    assert out["wilcoxon_p"] == pytest.approx(sps.wilcoxon(d).pvalue, abs=1e-12)

    # Nadeau and Bengio's corrected resampled t-test: the variance is inflated by n_test / n_train for the
    # training sets the folds share, and t has k - 1 degrees of freedom.
    k, n_test, n_train = 5, 20, 80
    var = np.sum((d - d.mean()) ** 2) / (k - 1)  # 0.01732 / 4
    assert var == pytest.approx(0.00433, abs=1e-15)
    t = d.mean() / np.sqrt((1 / k + n_test / n_train) * var)  # 0.076 / sqrt(0.45 * 0.00433) = 1.7217234
    assert t == pytest.approx(1.7217234, abs=1e-6)
    assert out["corrected_t"] == pytest.approx(t, abs=1e-12)
    assert out["corrected_t_p"] == pytest.approx(2 * sps.t.sf(t, df=k - 1), abs=1e-12)
    # The uncorrected t (variance / k alone) would be 2.58 with p = 0.061: the correction must be there.
    assert out["corrected_t_p"] == pytest.approx(0.1602, abs=5e-4)

    swapped = _fixed_result(b.tolist(), (b + d).tolist()).compare("a", "b", "balanced_accuracy")
    assert swapped["corrected_t"] == pytest.approx(-t, abs=1e-12) and swapped["corrected_t_p"] == out["corrected_t_p"]


def test_paired_comparison_of_identical_models_has_no_p_value():
    same = [0.6, 0.7, 0.65]
    out = _fixed_result(same, same, n_windows=30).compare("a", "b", "balanced_accuracy")
    assert out["differences"] == [0.0, 0.0, 0.0] and out["mean_difference"] == 0.0
    assert np.isnan(out["wilcoxon_p"]) and np.isnan(out["corrected_t"]) and np.isnan(out["corrected_t_p"])


def test_paired_comparison_names_what_it_compares_and_what_it_cannot_compare():
    import warnings

    out = _fixed_result([0.7, 0.9], [0.6, 0.6], n_windows=40).compare("a", "b", "balanced_accuracy")
    assert (out["metric"], out["model_a"], out["model_b"], out["n_folds"]) == ("balanced_accuracy", "a", "b", 2)
    # Two folds are enough for both tests. Exact Wilcoxon on two positive differences: of the 4 sign patterns,
    # 1 is as extreme on each side, p = 2 / 4. With 20 windows tested and 20 trained on, n_test / n_train = 1.
    d = np.array(out["differences"])
    assert out["wilcoxon_p"] == pytest.approx(0.5, abs=1e-12)
    t = d.mean() / np.sqrt((1 / 2 + 1) * np.sum((d - d.mean()) ** 2) / (2 - 1))
    assert out["corrected_t"] == pytest.approx(t, abs=1e-12)
    # One degree of freedom: Student's t is the Cauchy distribution, two-sided p = 1 - 2 arctan(|t|) / pi.
    assert out["corrected_t_p"] == pytest.approx(1 - 2 * np.arctan(t) / np.pi, abs=1e-12)

    # The same gain on every fold: no variance, so no t statistic (not an infinite one).
    steady = _fixed_result([0.75, 0.5, 0.625], [0.5, 0.25, 0.375], n_windows=30).compare("a", "b", "balanced_accuracy")
    assert steady["differences"] == [0.25, 0.25, 0.25]
    assert np.isnan(steady["corrected_t"]) and np.isnan(steady["corrected_t_p"])

    # One common fold: a mean difference and no test; none: not even that. Either way without a numpy warning.
    one_fold = _fixed_result([0.7], [0.5], n_windows=10)
    one_fold.splits.loc[one_fold.splits["SampleIndex"] >= 2, "Set"] = "train"  # a held-out split: 2 tested, 8 trained
    apart = _fixed_result([0.7, 0.8], [0.6, 0.5], n_windows=20)
    apart.scores = apart.scores[apart.scores["Model"].eq("a") == apart.scores["Fold"].eq(0)]  # a on fold 0, b on 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = one_fold.compare("a", "b", "balanced_accuracy")
        none = apart.compare("a", "b", "balanced_accuracy")
    assert one["n_folds"] == 1 and one["mean_difference"] == pytest.approx(0.2, abs=1e-15)
    assert none["n_folds"] == 0 and none["differences"] == [] and np.isnan(none["mean_difference"])
    for result in (one, none):
        assert all(np.isnan(result[key]) for key in ("wilcoxon_p", "corrected_t", "corrected_t_p"))

    with pytest.raises(KeyError, match=r"No 'balanced_accuracy' scores for \['c'\]; models are \['a', 'b'\]\."):
        _fixed_result([0.7], [0.5]).compare("a", "c", "balanced_accuracy")


def test_the_statistics_table_reads_the_permutation_artifacts_of_each_model_and_nothing_else():
    columns = ["Model", "Fold", "ArtifactType", "ArtifactKey", "ArtifactValue"]
    artifacts = pd.DataFrame(
        [
            ("a", -1, "permutation_test", "balanced_accuracy_observed", 0.8),
            ("a", -1, "permutation_test", "balanced_accuracy_chance_mean", 0.5),
            ("a", -1, "permutation_test", "balanced_accuracy_p_value", 0.05),
            ("a", -1, "input_adaptation", "sfreq_observed", 250.0),  # another kind of artifact, whatever its key
            ("b", -1, "permutation_test", "roc_auc_observed", 0.6),
            ("b", -1, "permutation_test", "roc_auc_chance_mean", 0.55),
            ("b", -1, "permutation_test", "roc_auc_p_value", 0.4),
        ],
        columns=columns,
    )
    result = ExperimentResult(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), artifacts, config={})
    expected = pd.DataFrame(
        {
            "Model": ["a", "b"],
            "Metric": ["balanced_accuracy", "roc_auc"],
            "observed": [0.8, 0.6],
            "chance_mean": [0.5, 0.55],
            "p_value": [0.05, 0.4],
            "method": ["label permutation: the mean score over permuted labels, and the p-value of the observed score"]
            * 2,
        }
    )
    pd.testing.assert_frame_equal(result.get_statistics(), expected, check_exact=True)
    pd.testing.assert_frame_equal(
        result.get_model_artifacts("permutation_test", "b"), artifacts.iloc[4:].reset_index(drop=True), check_exact=True
    )
    assert result.get_model_artifacts(model="a")["ArtifactKey"].tolist() == [
        "balanced_accuracy_observed",
        "balanced_accuracy_chance_mean",
        "balanced_accuracy_p_value",
        "sfreq_observed",
    ]
    # Without permutations or predictions: no rows, the same columns.
    empty = ExperimentResult(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), artifacts.iloc[3:4], config={})
    assert empty.get_statistics().empty and list(empty.get_statistics().columns) == list(expected.columns)
