"""Scores computed per fold from predictions."""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn import metrics as skm

__all__ = ["score", "METRIC_FUNCTIONS"]


def _roc_auc(y_true, y_pred, proba, classes):
    if proba is None:
        return float("nan")
    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")  # undefined on a single-class test fold
    if len(classes) == 2:
        return float(skm.roc_auc_score(y_true == classes[1], proba[:, 1]))
    if len(present) < len(classes):
        cols = np.searchsorted(classes, present)
        sub = proba[:, cols]
        sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
        return float(skm.roc_auc_score(y_true, sub, multi_class="ovr", labels=present))
    return float(skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes))


def _pearson(y_true, y_pred, proba, classes):
    if np.std(y_true) == 0 or np.std(y_pred) == 0:
        return float("nan")
    return float(stats.pearsonr(y_true, y_pred).statistic)


METRIC_FUNCTIONS = {
    "accuracy": lambda t, p, pr, c: float(skm.accuracy_score(t, p)),
    "balanced_accuracy": lambda t, p, pr, c: float(skm.balanced_accuracy_score(t, p)),
    "roc_auc": _roc_auc,
    "f1_macro": lambda t, p, pr, c: float(skm.f1_score(t, p, average="macro", zero_division=0)),
    "cohen_kappa": lambda t, p, pr, c: float(skm.cohen_kappa_score(t, p)),
    "r2": lambda t, p, pr, c: float(skm.r2_score(t, p)),
    "mae": lambda t, p, pr, c: float(skm.mean_absolute_error(t, p)),
    "rmse": lambda t, p, pr, c: float(np.sqrt(skm.mean_squared_error(t, p))),
    "pearson": _pearson,
}


def score(metric: str, y_true, y_pred, proba=None, classes=None) -> float:
    """Compute one metric.

    Parameters
    ----------
    metric : str
        A key of :data:`METRIC_FUNCTIONS`.
    y_true, y_pred : ndarray
        True and predicted targets.
    proba : ndarray, shape (n, n_classes) | None
        Class probabilities (or scores) in the order of ``classes``.
    classes : ndarray | None
        Sorted class labels.
    """
    return METRIC_FUNCTIONS[metric](np.asarray(y_true), np.asarray(y_pred), proba, classes)
