"""The closed-form ridge probe: what it fits, how it chooses its penalty, and its permutation test in closed form."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurofm import Experiment
from neurofm.configs import (
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
    RidgeProbeConfig,
)
from neurofm.configs.models import RIDGE_ALPHAS
from neurofm.estimators.classical import takes_groups
from neurofm.estimators.ridge_probe import RidgePath, RidgeProbe
from neurofm.exceptions import ConfigError
from neurofm.models import get_model_spec
from neurofm.tasks import (
    PermutationTask,
    SharedInputs,
    permute_labels,
    ridge_permutations,
    run_permutation,
)


def _features(n=120, d=30, seed=0, classes=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    y = np.asarray(classes)[rng.integers(0, len(classes), n)]
    means = rng.standard_normal((len(classes), d))
    X = rng.standard_normal((n, d)) * 3.0 + means[np.searchsorted(np.asarray(classes), y)] + 5.0
    return X.astype(np.float32), y


def test_with_one_penalty_it_is_ridge_on_standardised_features():
    X, _ = _features()
    target = X[:, :3].sum(axis=1) + np.random.default_rng(1).standard_normal(len(X))
    probe = RidgeProbe(task="regression", alphas=[7.0]).fit(X, target)
    reference = make_pipeline(StandardScaler(), Ridge(alpha=7.0)).fit(X.astype(np.float64), target)
    np.testing.assert_allclose(probe.predict(X), reference.predict(X.astype(np.float64)), rtol=0, atol=1e-9)


def test_classes_are_balanced_indicator_targets_and_the_largest_output_wins():
    X, y = _features()
    y[:80] = "a"  # a frequent class: balanced targets weigh it as much as each rare one
    classes = np.unique(y)
    counts = np.array([(y == c).sum() for c in classes])
    targets = (y[:, None] == classes[None]).astype(float) * len(y) / (len(classes) * counts)
    probe = RidgeProbe(alphas=[3.0]).fit(X, y)
    reference = make_pipeline(StandardScaler(), Ridge(alpha=3.0)).fit(X.astype(np.float64), targets)
    outputs = reference.predict(X.astype(np.float64))
    np.testing.assert_allclose(probe.decision_function(X), outputs, rtol=0, atol=1e-9)
    assert (probe.predict(X) == classes[np.argmax(outputs, axis=1)]).all()


def test_the_penalty_is_the_one_inner_folds_of_the_training_data_choose():
    X, y = _features(n=90)
    alphas = [0.01, 1.0, 100.0, 1e4, 1e6]
    probe = RidgeProbe(alphas=alphas, inner_splits=4, random_state=3).fit(X, y)
    classes = np.unique(y)
    counts = np.array([(y == c).sum() for c in classes])
    errors = []
    for alpha in alphas:  # by hand: the same shuffled K-folds, the targets as the probe codes them
        error = 0.0
        for train, test in KFold(4, shuffle=True, random_state=3).split(X):
            yt = y[train]
            inner_counts = np.array([(yt == c).sum() for c in classes])
            coded = (yt[:, None] == classes[None]).astype(float) * len(yt) / (len(classes) * inner_counts)
            model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X[train].astype(np.float64), coded)
            true = (y[test][:, None] == classes[None]).astype(float) * len(yt) / (len(classes) * inner_counts)
            error += ((model.predict(X[test].astype(np.float64)) - true) ** 2).sum()
        errors.append(error)
    assert counts.min() > 0
    assert probe.alpha_ == alphas[int(np.argmin(errors))]
    # Only the data given to fit decides: the same rows with other rows appended change nothing fitted on them
    # (the fit reads its rows by reference, in chunks: never past the end of the view it is given).
    appended = np.concatenate([X, _features(n=40, seed=9)[0]])
    again = RidgeProbe(alphas=alphas, inner_splits=4, random_state=3).fit(appended[: len(X)], y)
    assert again.alpha_ == probe.alpha_ and np.array_equal(again.coef_, probe.coef_)


def test_a_small_training_partition_gets_fewer_inner_folds_and_too_small_a_one_a_clear_error():
    X, y = _features(n=90)
    # 7 windows, inner_splits=5: 3 folds (of 2 or 3 windows), split as KFold(3) splits them
    path = RidgePath(X[:7].astype(np.float64), inner_splits=5, random_state=0)
    assert path.n_splits == 3
    expected = [test for _, test in KFold(3, shuffle=True, random_state=0).split(X[:7])]
    assert all(np.array_equal(fold[1], test) for fold, test in zip(path.inner, expected, strict=True))
    assert RidgePath(X[:10].astype(np.float64), inner_splits=5, random_state=0).n_splits == 5
    with pytest.raises(ConfigError, match="at least 4 training windows .* got 3"):
        RidgeProbe(inner_splits=5).fit(X[:3], y[:3])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_closed_form_permutations_equal_refitting_on_the_same_permutations_exactly(task):
    X, y = _features(n=150, d=40)
    if task == "regression":
        y = X[:, 0].astype(np.float64) * 2.0 + np.random.default_rng(2).standard_normal(len(X))
    classes = np.unique(y) if task == "classification" else None
    metrics = ("balanced_accuracy", "roc_auc") if task == "classification" else ("r2", "mae")
    groups = np.repeat(np.arange(5), 30)
    splits = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, groups))
    rng = np.random.default_rng(0)
    permuted = [permute_labels(y, groups, rng) for _ in range(6)]
    probe = RidgeProbe(task=task, inner_splits=3, random_state=0)
    # The refits get each fold's groups (their inner folds keep groups apart): the closed form gets them too.
    closed = ridge_permutations(probe, X, permuted, splits, classes, metrics, groups)
    shared = SharedInputs({"probe": X}, y, groups)
    refitted = [run_permutation(PermutationTask(probe, False, p, splits, classes, metrics), shared) for p in permuted]
    assert closed == refitted  # every score of every permutation, bit for bit


def _closed_and_refitted(probe, X, permuted, splits, classes, metrics, groups):
    closed = ridge_permutations(probe, X, permuted, splits, classes, metrics, groups)
    shared = SharedInputs({"probe": X}, permuted[0], groups)
    refitted = [run_permutation(PermutationTask(probe, False, p, splits, classes, metrics), shared) for p in permuted]
    return closed, refitted


def test_closed_form_equals_refitting_where_classes_go_missing_unweighted_and_on_tied_penalties():
    X, y = _features(n=90, d=12, seed=4)
    classes = np.unique(y)
    splits = list(KFold(3, shuffle=True, random_state=1).split(X))
    first_test = splits[0][1]
    rng = np.random.default_rng(5)
    permuted = [rng.permutation(y) for _ in range(4)]
    # No "c" in fold 0's training windows: that fold's fit knows two classes, the other permutations' three.
    lacking = np.where(np.isin(np.arange(len(y)), first_test), y, np.where(y == "c", "a", y))
    lacking[first_test[:5]] = "c"
    # One class only in fold 1's training windows: every penalty fits a constant, all tie, the largest is taken.
    constant = np.full(len(y), "b")
    constant[splits[1][1][:10]] = "a"
    permuted += [lacking, constant]
    # No roc_auc here (the tests above score it): on a fold whose outputs sum to 1 (a one-class fit) and whose test
    # windows lack a class, metrics.score hands scikit-learn what it refuses, in both paths alike.
    metrics = ("accuracy", "balanced_accuracy", "f1_macro")
    for class_weight in ("balanced", None):
        probe = RidgeProbe(alphas=[0.1, 10.0, 1e3, 10.0], inner_splits=3, class_weight=class_weight, random_state=2)
        closed, refitted = _closed_and_refitted(probe, X, permuted, splits, classes, metrics, None)
        assert closed == refitted  # bit for bit
    one_class = RidgeProbe(alphas=[0.1, 10.0, 1e3, 10.0], inner_splits=3).fit(X[splits[1][0]], constant[splits[1][0]])
    assert one_class.alpha_ == 1e3 and not one_class.coef_.any()


def test_a_stack_of_label_sets_fits_each_set_to_the_bit_as_it_is_fitted_alone():
    X, y = _features(n=80, d=15, seed=6)
    rng = np.random.default_rng(7)
    labels = np.stack([rng.permutation(y) for _ in range(5)])
    labels[3, :40] = "a"  # other classes' counts: other balanced weights
    probe = RidgeProbe(alphas=[0.01, 1.0, 100.0], inner_splits=4, random_state=0)
    path = probe.path(X)
    fitted = 0
    for rows, classes, alphas, coefs, offsets in probe.fit_sets(path, labels, chunk=2):  # stacks of 2, 2 and 1
        for j, row in enumerate(rows):
            alone = RidgeProbe(alphas=[0.01, 1.0, 100.0], inner_splits=4, random_state=0).fit(X, labels[row])
            assert np.array_equal(alone.classes_, classes) and alone.alpha_ == alphas[j]
            assert np.array_equal(alone.coef_, coefs[j]) and np.array_equal(alone.offset_, offsets[j])
            fitted += 1
    assert fitted == len(labels)


def _regime(regime, n=None, seed=13):
    """Features with at least as many windows as features (the feature Gram) or fewer (the kernel), a constant
    and a duplicated feature among them (null directions of the Gram: zero eigenvalues), and a noisy target."""
    n, d = (150, 24) if regime == "gram" else (40, 96)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 4.0, d) + 5.0
    X[:, 1] = 7.0
    X[:, 2] = X[:, 3]
    y = X[:, 0] - 0.5 * X[:, 4] + rng.standard_normal(n) * 2.0
    return X, y


@pytest.mark.parametrize("regime", ["gram", "kernel"])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_it_is_ridge_with_the_chosen_penalty_whether_it_decomposes_the_feature_gram_or_the_kernel(regime, task):
    X, y = _regime(regime)
    if task == "classification":
        y = np.asarray(["a", "b", "c"])[np.digitize(y, np.quantile(y, [0.3, 0.7]))]
    probe = RidgeProbe(task=task, inner_splits=4, random_state=1).fit(X, y)
    assert probe.path(X).kernel == (regime == "kernel")
    assert probe.components_.shape == ((24, 24) if regime == "gram" else (40, 96))
    assert np.isfinite(probe.coef_).all()  # the null directions get no NaN: nothing is divided by an eigenvalue
    targets = y
    if task == "classification":
        classes = np.unique(y)
        counts = np.array([(y == c).sum() for c in classes])
        targets = (y[:, None] == classes[None]).astype(float) * len(y) / (len(classes) * counts)
    reference = make_pipeline(StandardScaler(), Ridge(alpha=probe.alpha_)).fit(X, targets)
    X_new = _regime(regime, seed=14)[0]
    outputs = probe.decision_function(X_new)
    np.testing.assert_allclose(outputs, reference.predict(X_new), rtol=0, atol=1e-10 * np.abs(outputs).max())


def _brute_force_alpha(X, y, alphas, folds):
    """The penalty an inner CV of scikit-learn refits chooses: the smallest summed squared test error, the larger
    penalty on a tie, and how far the runner-up's error is from it (relative)."""
    errors = []
    for alpha in alphas:
        error = 0.0
        for train, test in folds:
            model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X[train], y[train])
            error += ((model.predict(X[test]) - y[test]) ** 2).sum()
        errors.append(error)
    errors = np.asarray(errors)
    best = max(np.flatnonzero(errors == errors.min()), key=lambda i: alphas[i])
    return alphas[best], np.partition(errors, 1)[1] / errors.min() - 1.0


@pytest.mark.parametrize("regime", ["gram", "kernel"])
@pytest.mark.parametrize("grouped", [False, True])
def test_the_penalty_is_the_one_scikit_learn_refits_of_the_same_inner_folds_choose(regime, grouped):
    X, y = _regime(regime)
    alphas = list(RIDGE_ALPHAS)
    groups = np.arange(len(X)) % 7 if grouped else None
    if grouped:
        folds = list(GroupKFold(4, shuffle=True, random_state=2).split(X, groups=groups))
    else:
        folds = list(KFold(4, shuffle=True, random_state=2).split(X))
    expected, margin = _brute_force_alpha(X, y, alphas, folds)
    assert margin > 1e-6  # no near-tie that round-off alone could settle either way
    probe = RidgeProbe(task="regression", alphas=alphas, inner_splits=4, random_state=2).fit(X, y, groups=groups)
    assert probe.alpha_ == expected
    assert all(
        np.array_equal(fold[1], test) for fold, (_, test) in zip(probe.path(X, groups).inner, folds, strict=True)
    )


@pytest.mark.parametrize("regime", ["gram", "kernel"])
def test_with_two_classes_the_penalty_is_the_one_refits_choose_on_both_indicator_targets(regime):
    # The probe lets the first class's indicator alone choose (the second's errors are a constant multiple of the
    # first's); the reference sums both outputs' errors, as the rule says.
    X, y = _regime(regime, seed=21)
    y = np.where(y > np.quantile(y, 0.35), "high", "low")
    counts = np.array([(y == c).sum() for c in np.unique(y)])
    targets = (y[:, None] == np.unique(y)[None]).astype(float) * len(y) / (2 * counts)
    alphas = list(RIDGE_ALPHAS)
    folds = list(KFold(4, shuffle=True, random_state=5).split(X))
    expected, margin = _brute_force_alpha(X, targets, alphas, folds)
    assert margin > 1e-6
    assert RidgeProbe(alphas=alphas, inner_splits=4, random_state=5).fit(X, y).alpha_ == expected


def test_an_inner_errors_magnitude_bounds_its_rounding_and_a_near_tie_is_not_certain():
    from neurofm.estimators.ridge_probe import _certain, _inner_errors, _tolerance  # lazy: private, tested here only

    if np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps:
        pytest.skip("numpy's longdouble is float64 on this platform: no wider sums to compare with")
    rng = np.random.default_rng(22)
    n_sets, k, r, n_test = 5, 2, 30, 40
    shrink = 1.0 / (rng.random(r) * 50 + np.logspace(-2, 3, 7)[:, None])
    rotated, correlation = rng.standard_normal((2, n_sets, k, r)) * 100.0
    rows = rng.standard_normal((n_test, r))
    errors, magnitudes = _inner_errors(shrink, rotated, correlation, rows.T @ rows)
    # The same sums in extended precision (x87's 64-bit mantissa here): float64's rounding is far inside the margin.
    wide = [np.asarray(a, dtype=np.longdouble) for a in (shrink, rotated, correlation, rows)]
    coefs = wide[0][None, :, None, :] * wide[1][:, None]
    exact = (coefs * (coefs @ (wide[3].T @ wide[3]) - 2 * wide[2][:, None])).sum(axis=(2, 3))
    slack = np.abs(errors - exact.astype(np.float64))
    assert (slack > 0).any()  # rounding there is, and the bound covers it with room
    assert (slack <= magnitudes * _tolerance(r, k, 1) / 16).all()
    # A runner-up within the margins is not certain; one clear of both is.
    best = np.zeros(2, dtype=int)
    margins = np.full((2, 3), 1e-9)
    assert _certain(np.array([[1.0, 1.0 + 1e-9, 2.0], [1.0, 1.0 + 3e-9, 2.0]]), margins, best).tolist() == [False, True]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_fit_reads_the_embeddings_in_chunks_and_never_copies_them_whole(dtype):
    # 40000 x 64: one float64 copy is 20 MB. The rows are read 4096 at a time (a tenth of that), and the inner
    # folds' index arrays cost about as much; a standardised copy, a float64 conversion of float32 embeddings or a
    # left singular factor U (n x 64) would each cost a whole copy, so half of one is a bound that only a fit
    # holding none of them keeps.
    n, d = 40000, 64
    rng = np.random.default_rng(15)
    X = (rng.standard_normal((n, d)) + 3.0).astype(dtype)
    y = np.where(X[:, 0] + rng.standard_normal(n) > 3.0, "a", "b")
    tracemalloc.start()
    try:
        probe = RidgeProbe(inner_splits=5, random_state=0).fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * n * d * 8
    assert probe.components_.shape == (d, d)


def test_grouped_inner_folds_never_put_a_group_on_both_sides_and_one_group_falls_back_to_k_folds():
    X, y = _features(n=120, d=10)
    groups = np.repeat(np.arange(8), 15)
    path = RidgeProbe(inner_splits=5, random_state=4).path(X, groups)
    assert path.n_splits == 5
    for train, test, *_ in path.inner:
        assert not set(groups[train]) & set(groups[test])
    assert np.array_equal(np.sort(np.concatenate([fold[1] for fold in path.inner])), np.arange(len(X)))
    assert RidgePath(X, inner_splits=5, random_state=4, groups=np.repeat(np.arange(3), 40)).n_splits == 3
    # A partition of one subject cannot be split by subject: its folds are those of no groups.
    alone = RidgePath(X, inner_splits=5, random_state=4, groups=np.zeros(len(X)))
    ungrouped = RidgePath(X, inner_splits=5, random_state=4)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(alone.inner, ungrouped.inner, strict=True))
    # What an experiment hands the fit of an estimator whose fit names groups: the ridge probe's is one.
    assert takes_groups(RidgeProbe())
    fitted = RidgeProbe(inner_splits=5, random_state=4).fit(X, y, groups=groups)
    via_path = RidgeProbe(inner_splits=5, random_state=4).fit_path(path, y)
    assert fitted.alpha_ == via_path.alpha_ and np.array_equal(fitted.coef_, via_path.coef_)


@pytest.mark.parametrize("regime", ["gram", "kernel"])
def test_closed_form_permutations_with_groups_equal_refits_with_groups_exactly(regime):
    X, y = _regime(regime, seed=16)
    y = np.where(y > np.median(y), "high", "low")
    groups = np.arange(len(X)) % 6
    splits = list(GroupKFold(3).split(X, groups=groups))
    rng = np.random.default_rng(17)
    permuted = [permute_labels(y, groups, rng) for _ in range(5)]
    probe = RidgeProbe(inner_splits=4, random_state=3)
    metrics = ("balanced_accuracy", "roc_auc", "f1_macro")
    closed, refitted = _closed_and_refitted(probe, X, permuted, splits, np.unique(y), metrics, groups)
    assert closed == refitted  # bit for bit, the inner folds grouped alike
    ungrouped = ridge_permutations(probe, X, permuted, splits, np.unique(y), metrics)
    assert ungrouped != closed  # the groups did reach the inner folds


@pytest.mark.parametrize(
    ("truth", "predicted"),
    [
        (["a", "b", "b", "c", "c", "c"], ["a", "a", "b", "c", "b", "c"]),
        (["b", "b", "c", "c", "c", "c", "c"], ["a", "b", "c", "a", "c", "b", "c"]),  # "a" only predicted
        (["c", "c", "c"], ["c", "a", "c"]),  # one class in the fold
    ],
)
def test_label_metrics_counted_without_scikit_learn_are_its_values_to_the_bit(truth, predicted):
    from neurofm.metrics import score  # lazy: the one test that compares against it
    from neurofm.tasks import _label_metrics  # lazy: private, tested here only

    truth, predicted = np.asarray(truth), np.asarray(predicted)
    classes = np.unique(np.r_[truth, predicted])
    # A stack of three rows: the fold, its reverse and the fold again, each scored as scikit-learn scores it alone.
    stack_truth, stack_predicted = (
        np.stack([truth, truth[::-1], truth]),
        np.stack([predicted, predicted[::-1], predicted]),
    )
    codes = np.searchsorted(classes, stack_truth), np.searchsorted(classes, stack_predicted)
    for metric in ("accuracy", "balanced_accuracy"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's "y_pred contains classes not in y_true"
            expected = [score(metric, t, p) for t, p in zip(stack_truth, stack_predicted, strict=True)]
        assert _label_metrics(metric, *codes, len(classes)).tolist() == expected


@pytest.mark.parametrize("decimals", [None, 1, 0])  # distinct scores, some ties, mostly ties
def test_a_binary_roc_auc_computed_without_scikit_learn_is_its_value_to_the_bit(decimals):
    from neurofm.metrics import score  # lazy: the one test that compares against it
    from neurofm.tasks import _binary_roc_aucs  # lazy: private, tested here only

    rng = np.random.default_rng(11)
    classes = np.asarray(["a", "b"])
    for n in (2, 7, 60, 301):
        # A stack of folds: random ones, one of a single class, and one whose scores all tie.
        truth = classes[rng.integers(0, 2, (6, n))]
        truth[4] = "b"
        outputs = rng.standard_normal((6, n)) + (truth == "b") * 0.7
        outputs[5] = 0.25
        if decimals is not None:
            outputs = np.round(outputs, decimals)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a fold of one class: NaN, with scikit-learn's warning
            expected = [score("roc_auc", t, None, np.c_[-o, o], classes) for t, o in zip(truth, outputs, strict=True)]
        got = _binary_roc_aucs(truth == "b", outputs)
        assert np.array_equal(got, expected, equal_nan=True)


def _multilabel(n=180, d=20, seed=8):
    """Three 0/1 labels, each driven by its own direction of the features (one weakly), so all are learnable."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * 2.0 + 3.0
    drive = X[:, :3] - 3.0 + rng.standard_normal((n, 3)) * np.array([0.5, 1.0, 2.0])
    return X.astype(np.float32), (drive > 0).astype(np.int64)


def test_multilabel_regresses_every_label_in_one_solve_and_predicts_outputs_over_one_half():
    X, Y = _multilabel()
    probe = RidgeProbe(task="multilabel", alphas=[5.0]).fit(X, Y)
    reference = make_pipeline(StandardScaler(), Ridge(alpha=5.0)).fit(X.astype(np.float64), Y.astype(np.float64))
    outputs = reference.predict(X.astype(np.float64))
    np.testing.assert_allclose(probe.decision_function(X), outputs, rtol=0, atol=1e-9)
    assert probe.decision_function(X).shape == Y.shape and probe.classes_ is None
    assert np.array_equal(probe.predict(X), (outputs > 0.5).astype(np.int64))
    assert probe.__sklearn_tags__().estimator_type == "classifier"


def test_multilabel_labels_that_follow_the_features_score_above_chance_and_shuffled_ones_at_it():
    from neurofm.tasks import fit_and_score  # lazy: the experiment's own fit, predict and score of one fold

    X, Y = _multilabel(n=300)
    names = np.asarray(["x", "y", "z"])
    metrics = ("roc_auc", "roc_auc[z]", "f1_macro")
    shuffled = Y[np.random.default_rng(9).permutation(len(Y))]
    scores = {"learned": [], "shuffled": []}
    for train, test in KFold(3, shuffle=True, random_state=0).split(X):
        for name, labels in (("learned", Y), ("shuffled", shuffled)):
            probe = RidgeProbe(task="multilabel", inner_splits=3, random_state=0)
            _, fold, y_pred, *_ = fit_and_score(probe, False, X, labels, None, train, test, names, metrics)
            assert y_pred.shape == (len(test), 3) and set(np.unique(y_pred)) <= {0, 1}
            scores[name].append(fold)
    learned = {m: np.mean([fold[m] for fold in scores["learned"]]) for m in metrics}
    chance = {m: np.mean([fold[m] for fold in scores["shuffled"]]) for m in metrics}
    assert learned["roc_auc"] > 0.85 and learned["roc_auc[z]"] > 0.7 and learned["f1_macro"] > 0.7
    assert abs(chance["roc_auc"] - 0.5) < 0.08


def test_multilabel_closed_form_permutations_equal_refitting_exactly():
    X, Y = _multilabel(n=120, d=15)
    names = np.asarray(["x", "y", "z"])
    groups = np.repeat(np.arange(4), 30)
    splits = list(KFold(3, shuffle=True, random_state=0).split(X))
    rng = np.random.default_rng(3)
    permuted = [permute_labels(Y, groups, rng) for _ in range(5)]
    metrics = ("roc_auc", "f1_macro", "hamming_loss", "subset_accuracy")
    probe = RidgeProbe(task="multilabel", inner_splits=3, random_state=0)
    closed, refitted = _closed_and_refitted(probe, X, permuted, splits, names, metrics, groups)
    assert closed == refitted  # bit for bit
    assert len({means["roc_auc"] for means in closed}) == len(closed)  # the permutations do differ


def _probe_config(**head):
    return FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key="cbramod", weights="random", model_kwargs=get_model_spec("cbramod").tiny_kwargs
        ),
        head=RidgeProbeConfig(inner_splits=3, **head),
    )


def test_an_experiment_tests_a_ridge_probe_against_chance_in_closed_form_and_resumes_it(small_dataset, tmp_path):
    X, y, meta, info = small_dataset
    cfg = ExperimentConfig(
        models={"ridge": _probe_config()},
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),
        n_permutations=20,
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    first = Experiment(cfg).run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    rows = first.get_model_artifacts(artifact_type="permutation_test")
    tested = dict(zip(rows["ArtifactKey"], rows["ArtifactValue"], strict=True))
    assert tested["method"].startswith("closed form") and tested["n_permutations"] == 20
    assert 0 < tested["balanced_accuracy_p_value"] <= 1
    again = Experiment(cfg).run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    rows = again.get_model_artifacts(artifact_type="permutation_test")
    assert dict(zip(rows["ArtifactKey"], rows["ArtifactValue"], strict=True)) == tested  # read back from records


def test_the_head_round_trips_through_yaml_and_class_weight_is_refused_for_regression(tmp_path):
    cfg = ExperimentConfig(models={"ridge": _probe_config(alphas=[0.1, 10.0])}, cache_dir=str(tmp_path))
    cfg.to_yaml(tmp_path / "c.yaml")
    back = ExperimentConfig.from_yaml(tmp_path / "c.yaml")
    assert isinstance(back.models["ridge"].head, RidgeProbeConfig) and back.models["ridge"].head.alphas == [0.1, 10.0]
    assert back == cfg
    with pytest.raises(ValidationError, match="class_weight weighs classes"):
        ExperimentConfig(
            task="regression", models={"ridge": _probe_config(class_weight="balanced")}, cv=CVConfig(strategy="kfold")
        )
    regression = ExperimentConfig(task="regression", models={"ridge": _probe_config()}, cv=CVConfig(strategy="kfold"))
    assert regression.models["ridge"].head.class_weight == "balanced"  # the default, unused for regression


def test_closed_form_permutations_refuse_labels_outside_the_classes_given():
    from neurofm.exceptions import NeuroFMError  # lazy: this test only

    X, y = _features(n=60, d=8, seed=23)
    splits = list(KFold(3, shuffle=True, random_state=0).split(X))
    with pytest.raises(NeuroFMError, match=r"\['c'\] are not among the classes \['a', 'b'\]"):
        ridge_permutations(RidgeProbe(inner_splits=3), X, [y], splits, np.asarray(["a", "b"]), ("accuracy",))
