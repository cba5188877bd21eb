"""Scores computed per fold from predictions.

A metric is named in one of three ways:

* neurofm's own names, :data:`METRIC_FUNCTIONS`: ``accuracy``,
  ``balanced_accuracy``, ``roc_auc``, ``f1_macro``, ``cohen_kappa``, ``ece``,
  ``brier`` (classification) and ``r2``, ``mae``, ``rmse``, ``pearson``,
  ``spearman`` (regression; the correlations are NaN when the truth or the
  predictions of a fold are constant). They take precedence over scikit-learn's scorers of the same
  name. ``mae``, ``rmse``, ``ece`` and ``brier`` are lower-is-better
  (:data:`LOWER_IS_BETTER`, :func:`greater_is_better`); the others grow as
  the model improves.
* any scikit-learn scorer name (:func:`sklearn.metrics.get_scorer_names`):
  ``f1_weighted``, ``average_precision``, ``neg_log_loss``,
  ``neg_mean_absolute_error`` ... The scorer's function, keyword arguments,
  sign and response method (predictions, probabilities or decision values)
  are applied to the predictions the fold already has; the estimator is
  neither refitted nor called again. Values keep scikit-learn's sign, so
  higher is always better: ``neg_mean_absolute_error`` is reported negative,
  as scikit-learn reports it.
* per-class scores, :data:`PER_CLASS_METRICS`: ``precision_per_class``,
  ``recall_per_class`` and ``f1_per_class`` yield one score per class, named
  ``recall[<class>]`` (:func:`expand_metrics`), the values of
  :func:`sklearn.metrics.precision_recall_fscore_support` with ``average=None``.
* multilabel scores (``y`` of shape (n, n_labels) of 0/1; :func:`score`
  sees the 2-D truth): :data:`MULTILABEL_METRICS` and the per-label
  :data:`MULTILABEL_PER_LABEL` (``roc_auc[<label>]``, ``f1[<label>]`` ...),
  with each label's probability of 1 as ``proba``'s column.

Calibration (``ece``, ``brier``) needs class probabilities: a model without
``predict_proba`` (its fold holds decision values, or nothing) scores NaN.

* ``ece``, the expected calibration error of the top label: each window's
  confidence is its largest class probability and it counts as correct when
  that class (the argmax of the probabilities) is its true class. The
  confidences fall in 15 equal-width bins of [0, 1] (bin ``b`` holds
  ``(b/15, (b+1)/15]``, the first also 0), and
  ``ece = sum_b n_b / n * |accuracy_b - confidence_b|``, the mean confidence
  and the accuracy of each non-empty bin weighted by its share of the windows
  (Guo et al. 2017, "On calibration of modern neural networks").
  :func:`reliability_bins` gives the bins themselves.
* ``brier``, the multi-class Brier score (Brier 1950):
  ``mean over windows of sum over classes of (p_c - 1[y = c])^2``, between 0
  and 2. On two classes this is twice scikit-learn's
  :func:`~sklearn.metrics.brier_score_loss` (which scores the positive
  class's probability only); scikit-learn's scorer ``neg_brier_score``
  remains available in its own convention and sign.

A predictor that ignores the windows and gives every window the class
frequencies as probabilities is perfectly calibrated (``ece`` 0), so ``ece``
says how far probabilities can be trusted, not whether a model decodes
anything; ``brier`` rewards both.
"""

from __future__ import annotations

import functools
import inspect
import re
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

from .exceptions import ConfigError
from .utils.check import format_choices

__all__ = [
    "LOWER_IS_BETTER",
    "METRIC_FUNCTIONS",
    "MULTILABEL_METRICS",
    "MULTILABEL_PER_LABEL",
    "PER_CLASS_METRICS",
    "check_metrics_for_classes",
    "expand_metrics",
    "greater_is_better",
    "metric_names",
    "metric_task",
    "needs_probabilities",
    "reliability_bins",
    "score",
    "score_all",
]

#: Bins of the expected calibration error and of the report's reliability diagrams.
CALIBRATION_BINS = 15

#: The prediction table's column prefix of class (label) scores: probabilities, or decision values standing in
#: for them (a model without ``predict_proba``), so that nothing reads decision values as probabilities.
SCORE_PREFIXES = {True: "proba", False: "decision"}
#: The prediction table's class-score column names start with one of these (``proba_left``, ``decision_left``).
SCORE_COLUMN_STARTS = tuple(f"{prefix}_" for prefix in SCORE_PREFIXES.values())


def _roc_auc(y_true, y_pred, proba, classes):
    if proba is None:
        return float("nan")
    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")  # undefined on a single-class test fold
    if len(classes) == 2:
        return float(skm.roc_auc_score(y_true == classes[1], proba[:, 1]))
    probabilities = np.all((proba >= 0) & (proba <= 1)) and np.allclose(proba.sum(axis=1), 1.0)
    if not probabilities:
        # Decision values (a ridge probe, a linear SVM; a ridge's outputs may even sum to 1 yet fall outside
        # [0, 1]): one-vs-rest per present class on its own column, averaged, which is what scikit-learn's "ovr"
        # macro computes from probabilities but refuses on other scores.
        cols = np.searchsorted(classes, present)
        return float(np.mean([skm.roc_auc_score(y_true == classes[c], proba[:, c]) for c in cols]))
    if len(present) < len(classes):
        cols = np.searchsorted(classes, present)
        sub = proba[:, cols]
        sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
        if len(present) == 2:  # scikit-learn reads two columns as a binary problem, which takes one score
            return float(skm.roc_auc_score(y_true == present[1], sub[:, 1]))
        return float(skm.roc_auc_score(y_true, sub, multi_class="ovr", labels=present))
    return float(skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes))


def _pearson(y_true, y_pred, proba, classes):
    if np.std(y_true) == 0 or np.std(y_pred) == 0:
        return float("nan")
    return float(stats.pearsonr(y_true, y_pred).statistic)


def _spearman(y_true, y_pred, proba, classes):
    if np.std(y_true) == 0 or np.std(y_pred) == 0:
        return float("nan")
    return float(stats.spearmanr(y_true, y_pred).statistic)


def reliability_bins(y_true, proba, classes, n_bins: int = CALIBRATION_BINS) -> pd.DataFrame | None:
    """The top-label calibration of these predictions, bin by bin: what ``ece`` averages and a reliability diagram draws.

    Parameters
    ----------
    y_true : array-like, shape (n,)
        True labels.
    proba : ndarray, shape (n, n_classes) | None
        Class probabilities in the order of ``classes``.
    classes : array-like
        Sorted class labels of the task.
    n_bins : int
        Equal-width bins of [0, 1]; bin ``b`` holds the confidences in
        ``(b / n_bins, (b + 1) / n_bins]``, the first also 0.

    Returns
    -------
    bins : DataFrame | None
        One row per non-empty bin: ``lower, upper, n`` (windows),
        ``confidence`` (their mean largest probability) and ``accuracy``
        (the share whose most probable class is the true one). ``None`` when
        ``proba`` holds no probabilities (``None``, decision values, or NaN).
    """
    if proba is None or classes is None:
        return None
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or not len(proba) or not _are_probabilities(proba):
        return None
    confidence = proba.max(axis=1)
    correct = np.asarray(classes)[proba.argmax(axis=1)] == np.asarray(y_true)
    # Right-closed bins, as in Guo et al.: a confidence of exactly 1/3 joins the bin below it, and 1.0 the last.
    index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    frame = pd.DataFrame({"bin": index, "confidence": confidence, "accuracy": correct.astype(float)})
    grouped = frame.groupby("bin", sort=True)
    bins = grouped[["confidence", "accuracy"]].mean().assign(n=grouped.size())
    bins.insert(0, "upper", (bins.index + 1) / n_bins)
    bins.insert(0, "lower", bins.index / n_bins)
    return bins.reset_index(drop=True)[["lower", "upper", "n", "confidence", "accuracy"]]


def _ece(y_true, y_pred, proba, classes):
    bins = reliability_bins(y_true, proba, classes)
    if bins is None:
        return float("nan")
    weights = bins["n"].to_numpy() / bins["n"].sum()
    return float(np.sum(weights * np.abs(bins["accuracy"].to_numpy() - bins["confidence"].to_numpy())))


def _brier(y_true, y_pred, proba, classes):
    if proba is None or classes is None:
        return float("nan")
    proba = np.asarray(proba, dtype=float)
    if not len(proba) or not _are_probabilities(proba):
        return float("nan")
    truth = np.asarray(y_true)[:, None] == np.asarray(classes)[None, :]
    return float(np.mean(np.sum((proba - truth) ** 2, axis=1)))


METRIC_FUNCTIONS = {
    "accuracy": lambda t, p, pr, c: float(skm.accuracy_score(t, p)),
    "balanced_accuracy": lambda t, p, pr, c: float(skm.balanced_accuracy_score(t, p)),
    "roc_auc": _roc_auc,
    "f1_macro": lambda t, p, pr, c: float(skm.f1_score(t, p, average="macro", zero_division=0)),
    "cohen_kappa": lambda t, p, pr, c: float(skm.cohen_kappa_score(t, p)),
    "ece": _ece,
    "brier": _brier,
    "r2": lambda t, p, pr, c: float(skm.r2_score(t, p)),
    "mae": lambda t, p, pr, c: float(skm.mean_absolute_error(t, p)),
    "rmse": lambda t, p, pr, c: float(np.sqrt(skm.mean_squared_error(t, p))),
    "pearson": _pearson,
    "spearman": _spearman,
}
_OWN_REGRESSION = ("r2", "mae", "rmse", "pearson", "spearman")

#: neurofm's names that fall as the model improves; scikit-learn's scorers and the per-class scores all grow.
LOWER_IS_BETTER = frozenset({"mae", "rmse", "ece", "brier", "hamming_loss"})


def greater_is_better(metric: str) -> bool:
    """Whether a higher value of ``metric`` is the better one.

    ``False`` for :data:`LOWER_IS_BETTER` (``mae``, ``rmse``, ``ece``,
    ``brier``, ``hamming_loss``); ``True`` for every other name: neurofm's other scores, the
    per-class scores, and scikit-learn's scorers, whose sign already makes
    higher better (``neg_mean_absolute_error``, ``neg_brier_score``).
    Comparisons against chance (permutation p-values) read it.

    Parameters
    ----------
    metric : str
        A metric name as the score tables carry it (``recall[left]`` too).
    """
    return metric not in LOWER_IS_BETTER


#: The scores of precision_recall_fscore_support, one value per class, and the suffix that asks for them.
_PER_CLASS_FUNCTIONS = {
    "precision": skm.precision_score,
    "recall": skm.recall_score,
    "f1": skm.f1_score,
}
PER_CLASS_SUFFIX = "_per_class"
PER_CLASS_METRICS = tuple(f"{base}{PER_CLASS_SUFFIX}" for base in _PER_CLASS_FUNCTIONS)
_ONE_CLASS = re.compile(rf"^({'|'.join(_PER_CLASS_FUNCTIONS)})\[(.*)\]$", re.DOTALL)


#: task="multilabel" (``y`` of shape (n, n_labels) of 0/1): the scores over all labels. ``roc_auc`` and
#: ``average_precision`` are the mean of the labels' own (macro; a label without both values in a test fold is
#: left out of that fold's mean), ``f1_macro`` and ``f1_micro`` scikit-learn's averages, ``hamming_loss`` the share
#: of wrong (window, label) pairs (lower is better), ``subset_accuracy`` the share of windows with every label right.
MULTILABEL_METRICS = ("roc_auc", "average_precision", "f1_macro", "f1_micro", "hamming_loss", "subset_accuracy")
#: Per-label scores of task="multilabel", expanded like the per-class ones: ``roc_auc[<label>]``, ``f1[<label>]`` ...
MULTILABEL_PER_LABEL = ("roc_auc_per_class", *PER_CLASS_METRICS)
_MULTILABEL_ONLY = frozenset({"hamming_loss", "subset_accuracy", "roc_auc_per_class"})
_ONE_LABEL = re.compile(rf"^(roc_auc|{'|'.join(_PER_CLASS_FUNCTIONS)})\[(.*)\]$", re.DOTALL)


def _label_score(base: str, truth: np.ndarray, predicted: np.ndarray, scores: np.ndarray | None) -> float:
    """One label's score; NaN when undefined in this fold (a label with a single value, no scores)."""
    if base in ("roc_auc", "average_precision"):
        if scores is None or len(np.unique(truth)) < 2 or not np.all(np.isfinite(scores)):
            return float("nan")
        function = skm.roc_auc_score if base == "roc_auc" else skm.average_precision_score
        return float(function(truth, scores))
    return float(_PER_CLASS_FUNCTIONS[base](truth, predicted, zero_division=np.nan))


def _multilabel_value(metric: str, y_true, y_pred, proba, labels) -> float:
    """A multilabel score: ``y_true``, ``y_pred`` (n, n_labels) of 0/1, ``proba`` each label's P(1) (or scores)."""
    y_true, y_pred = y_true.astype(int), y_pred.astype(int)
    names = [str(name) for name in labels] if labels is not None else [f"label_{k}" for k in range(y_true.shape[1])]
    proba = None if proba is None else np.asarray(proba, dtype=float)
    one = _ONE_LABEL.match(metric)
    if one:
        base, label = one.groups()
        if label not in names:
            raise ValueError(f"no label {label!r} to score {base!r} on; the labels are {format_choices(names)}.")
        k = names.index(label)
        return _label_score(base, y_true[:, k], y_pred[:, k], None if proba is None else proba[:, k])
    if metric in ("roc_auc", "average_precision"):
        values = [
            _label_score(metric, y_true[:, k], y_pred[:, k], None if proba is None else proba[:, k])
            for k in range(y_true.shape[1])
        ]
        return float(np.mean([v for v in values if np.isfinite(v)])) if np.isfinite(values).any() else float("nan")
    if metric in ("f1_macro", "f1_micro"):
        return float(skm.f1_score(y_true, y_pred, average=metric.removeprefix("f1_"), zero_division=0))
    if metric == "hamming_loss":
        return float(skm.hamming_loss(y_true, y_pred))
    if metric == "subset_accuracy":
        return float(skm.accuracy_score(y_true, y_pred))
    raise ValueError(
        f"metric {metric!r} does not score a multilabel task; use one of "
        f"{format_choices([*MULTILABEL_METRICS, *MULTILABEL_PER_LABEL])}."
    )


@functools.cache
def _scorer(name: str):
    return skm.get_scorer(name)


@functools.cache
def _scorer_tasks() -> dict[str, str]:
    """Each scikit-learn scorer name and the task it scores.

    Regression scorers are exactly those whose function lives in
    ``sklearn.metrics._regression``; the rest compare labels, probabilities or
    labelings (the clustering scores), so they score classification.
    """
    return {
        name: "regression" if _scorer(name)._score_func.__module__.endswith("._regression") else "classification"
        for name in skm.get_scorer_names()
    }


def metric_task(metric: str) -> str | None:
    """The task a metric name scores: ``"classification"``, ``"regression"``, ``"multilabel"`` (the names only
    multilabel has: ``hamming_loss``, ``subset_accuracy``, ``roc_auc_per_class``), or ``None`` when unknown."""
    if metric in _MULTILABEL_ONLY:
        return "multilabel"
    if metric in METRIC_FUNCTIONS:
        return "regression" if metric in _OWN_REGRESSION else "classification"
    if metric in PER_CLASS_METRICS:
        return "classification"
    return _scorer_tasks().get(metric)


def metric_names(task: str) -> tuple[str, ...]:
    """Every metric name accepted for ``task``: neurofm's own, then the per-class ones, then scikit-learn's scorers.

    Parameters
    ----------
    task : {"classification", "regression"}
        The experiment's task.
    """
    if task == "multilabel":
        return MULTILABEL_METRICS + MULTILABEL_PER_LABEL
    own = tuple(m for m in METRIC_FUNCTIONS if metric_task(m) == task)
    per_class = PER_CLASS_METRICS if task == "classification" else ()
    scorers = tuple(n for n, t in _scorer_tasks().items() if t == task and n not in METRIC_FUNCTIONS)
    return own + per_class + scorers


def expand_metrics(metrics: Iterable[str], classes: Sequence | np.ndarray | None) -> list[str]:
    """The metrics with every per-class request replaced by one name per class.

    ``recall_per_class`` on classes ``["left", "right"]`` becomes
    ``recall[left]`` and ``recall[right]`` (the class as ``str`` renders it);
    these are the names the score tables carry, one row each. Other names are
    kept as they are, in order.

    Parameters
    ----------
    metrics : iterable of str
        Metric names.
    classes : array-like | None
        Sorted class labels; a per-class request without them is refused.
    """
    out = []
    for metric in metrics:
        if metric in PER_CLASS_METRICS or metric in MULTILABEL_PER_LABEL:
            if classes is None:
                raise ValueError(f"metric {metric!r} scores each class of a classification task; none were given.")
            base = metric.removesuffix(PER_CLASS_SUFFIX)
            out += [f"{base}[{label}]" for label in classes]
        else:
            out.append(metric)
    return out


def _one_class(base: str, label: str, y_true, y_pred, classes) -> float:
    """One class's precision, recall or F1 score.

    A score undefined in this fold (e.g. the recall of a class the test fold
    lacks) is NaN, not 0: the summary's fold means then skip it instead of
    counting an absent class as a failure.
    """
    names = [] if classes is None else [str(c) for c in classes]
    if label not in names:
        raise ValueError(f"no class {label!r} to score {base!r} on; the classes are {format_choices(names)}.")
    function = _PER_CLASS_FUNCTIONS[base]
    label_value = classes[names.index(label)]
    return float(function(y_true, y_pred, labels=[label_value], average=None, zero_division=np.nan)[0])


def _are_probabilities(proba: np.ndarray) -> bool:
    """Whether ``proba`` holds probabilities, not the decision values neurofm falls back on without them."""
    if not len(proba):
        return True
    return bool(np.all(proba >= 0) and np.all(proba <= 1) and np.allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-4))


def _scorer_arguments(name: str, y_pred, proba, classes) -> tuple[object, dict] | None:
    """What a scorer's function receives besides ``y_true``: the response and the keyword arguments.

    ``None`` when the response the scorer needs is missing (no probabilities).
    """
    scorer = _scorer(name)
    kwargs = dict(scorer._kwargs)
    params = inspect.signature(scorer._score_func).parameters
    response = scorer._response_method
    methods = (response,) if isinstance(response, str) else tuple(response)
    binary = classes is not None and len(classes) == 2
    if "predict" in methods:
        y_score = y_pred
    else:
        # Probabilities, or decision values where the scorer takes them ("decision_function" among its methods).
        if proba is None or (methods == ("predict_proba",) and not _are_probabilities(proba)):
            return None
        # scikit-learn hands binary scorers the positive class's column only; proba's columns follow ``classes``.
        y_score = proba[:, 1] if binary else proba
        if "labels" in params and "labels" not in kwargs and classes is not None:
            # The columns are the task's classes, which a test fold may not all hold: say which they are.
            kwargs["labels"] = np.asarray(classes)
    if binary and "pos_label" in params:
        default_average = params["average"].default if "average" in params else None
        # Precision, recall, F1 and Jaccard use pos_label only with average="binary" (and warn when it is given
        # otherwise); the other scores (average precision, Brier) use it on any binary target.
        if default_average != "binary" or kwargs.get("average", default_average) == "binary":
            # The second of the sorted classes is the positive one, as for roc_auc: any label values work.
            kwargs["pos_label"] = classes[1]
    return y_score, kwargs


def _scorer_value(name: str, y_true, y_pred, proba, classes) -> float:
    """A scikit-learn scorer's value on these predictions, in its sign; raises what scikit-learn raises."""
    arguments = _scorer_arguments(name, y_pred, proba, classes)
    if arguments is None:
        return float("nan")
    y_score, kwargs = arguments
    scorer = _scorer(name)
    return float(scorer._sign * scorer._score_func(y_true, y_score, **kwargs))


def _value(metric: str, y_true, y_pred, proba, classes) -> float:
    if metric in METRIC_FUNCTIONS:
        return METRIC_FUNCTIONS[metric](y_true, y_pred, proba, classes)
    one_class = _ONE_CLASS.match(metric)
    if one_class:
        return _one_class(*one_class.groups(), y_true, y_pred, classes)
    if metric in PER_CLASS_METRICS:
        raise ValueError(
            f"metric {metric!r} gives one score per class: score the names expand_metrics gives "
            f"(e.g. {metric.removesuffix(PER_CLASS_SUFFIX)!r}[<class>]), or use score_all."
        )
    if metric not in _scorer_tasks():
        allowed = [*METRIC_FUNCTIONS, *PER_CLASS_METRICS, *(n for n in _scorer_tasks() if n not in METRIC_FUNCTIONS)]
        raise ValueError(f"unknown metric {metric!r}; use one of {format_choices(allowed)}.")
    return _scorer_value(metric, y_true, y_pred, proba, classes)


def score(metric: str, y_true, y_pred, proba=None, classes=None, *, probabilities: bool | None = None) -> float:
    """Compute one metric.

    Parameters
    ----------
    metric : str
        A key of :data:`METRIC_FUNCTIONS`, a scikit-learn scorer name, or one
        class's score as :func:`expand_metrics` names it (``recall[left]``).
        Scorer values keep scikit-learn's sign: ``neg_mean_absolute_error``
        and ``neg_log_loss`` are negative, so higher is better for every
        scorer name (neurofm's ``mae``, ``rmse``, ``ece`` and ``brier`` are
        positive, lower better: :func:`greater_is_better`).
    y_true, y_pred : ndarray
        True and predicted targets.
    proba : ndarray, shape (n, n_classes) | None
        Class probabilities (or decision values) in the order of ``classes``.
    classes : ndarray | None
        Sorted class labels of the task.
    probabilities : bool | None
        Whether ``proba`` holds probabilities (``predict_proba``'s) or
        decision values. ``False``: the metrics that read probabilities
        (``ece``, ``brier``, ``neg_log_loss`` ...) are NaN, however the values
        look (a ridge probe's one-hot outputs can lie in [0, 1] and sum to
        1). ``None``: judged from the values (in [0, 1], each row summing to
        1), for predictions saved without saying.

    Returns
    -------
    value : float
        NaN where the metric cannot be computed from what the fold has: a
        scorer (or ``ece``, ``brier``) that needs probabilities when there are
        none (``proba`` is ``None`` or holds decision values), ``roc_auc`` on a
        single-class test fold, a per-class score undefined in the fold, or
        a scorer that scikit-learn refuses on this fold's values (e.g.
        ``neg_log_loss`` on a single-class fold,
        ``neg_mean_squared_log_error`` on negative targets: then with a
        warning, as scikit-learn's cross-validation does with its default
        ``error_score``).

    Notes
    -----
    On a binary task, scores that need a positive class (``precision``,
    ``recall``, ``f1``, ``average_precision``, ``neg_brier_score`` ...) take
    the second of the sorted ``classes``, whatever the label values. On more
    than two classes, the binary-only ones (``precision``, ``f1``,
    ``positive_likelihood_ratio`` ...) cannot be computed:
    :func:`check_metrics_for_classes` refuses them before an experiment
    computes anything; called here they give NaN with scikit-learn's reason
    as a warning.

    The value equals ``sklearn.metrics.get_scorer(metric)(estimator, X, y)``
    on the same fold, with one exception: the scorers that prefer decision
    values (``average_precision``, ``top_k_accuracy``) receive the
    probabilities where the estimator has them. On two classes, and for
    ``top_k_accuracy`` on any number, both rank the windows alike and the
    values agree; multiclass ``average_precision`` can differ from
    scikit-learn's on an estimator that has ``decision_function`` too.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if probabilities is False and needs_probabilities(metric):
        return float("nan")
    if y_true.ndim == 2:  # task="multilabel": one 0/1 column per label
        return _multilabel_value(metric, y_true, y_pred, proba, classes)
    if metric in METRIC_FUNCTIONS or _ONE_CLASS.match(metric) or metric not in _scorer_tasks():
        return _value(metric, y_true, y_pred, proba, classes)
    try:
        return _scorer_value(metric, y_true, y_pred, proba, classes)
    except ValueError as exc:
        # A scorer scikit-learn refuses on this fold's values scores NaN, as cross_validate's error_score does:
        # one fold without a class must not discard the others.
        warnings.warn(f"metric {metric!r} is NaN on this fold: scikit-learn says: {exc}", UserWarning, stacklevel=2)
        return float("nan")


def score_all(
    metrics: Iterable[str], y_true, y_pred, proba=None, classes=None, *, probabilities: bool | None = None
) -> dict[str, float]:
    """Every metric by name, per-class requests expanded (:func:`expand_metrics`); arguments as :func:`score`."""
    return {
        metric: score(metric, y_true, y_pred, proba, classes, probabilities=probabilities)
        for metric in expand_metrics(metrics, classes)
    }


def needs_probabilities(metric: str) -> bool:
    """Whether ``metric`` reads class probabilities, so that decision values cannot stand in for them."""
    if metric in ("ece", "brier"):
        return True
    if metric in METRIC_FUNCTIONS or _ONE_CLASS.match(metric) or metric not in _scorer_tasks():
        return False
    response = _scorer(metric)._response_method
    return (response,) == ("predict_proba",) if isinstance(response, str) else tuple(response) == ("predict_proba",)


def check_metrics_for_classes(metrics: Iterable[str], classes: Sequence | np.ndarray) -> None:
    """Refuse, before any compute, the metrics that cannot score a task with these classes.

    Each metric is computed on a small made-up fold of these classes (each
    class three times, a third of the predictions wrong): what scikit-learn
    refuses there (a binary-only score such as ``precision`` on three
    classes, a ``*_samples`` score, which needs multilabel targets) it would
    refuse on every fold.

    Parameters
    ----------
    metrics : iterable of str
        The experiment's metric names (per-class requests included).
    classes : array-like
        Sorted class labels of the task.

    Raises
    ------
    ConfigError
        Naming the metric, scikit-learn's reason and, for a binary-only
        score, its averaged forms.
    """
    classes = np.asarray(classes)
    k = len(classes)
    y_true = np.tile(classes, 3)
    y_pred = np.concatenate([classes, np.roll(classes, 1), classes])
    proba = np.full((3 * k, k), 0.4 / max(k - 1, 1))
    proba[np.arange(3 * k), np.searchsorted(classes, y_pred)] = 0.6
    for metric in expand_metrics(metrics, classes):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # undefined values are not the question here
                _value(metric, y_true, y_pred, proba, classes)
        except ValueError as exc:
            averaged = [
                f"{metric}_{avg}" for avg in ("macro", "weighted", "micro") if f"{metric}_{avg}" in _scorer_tasks()
            ]
            hint = f" Use {format_choices(averaged)} instead." if averaged else ""
            raise ConfigError(
                f"metric {metric!r} cannot score a task with {k} classes ({format_choices(classes.tolist())}): "
                f"scikit-learn says: {str(exc).rstrip('.')}.{hint}"
            ) from exc
