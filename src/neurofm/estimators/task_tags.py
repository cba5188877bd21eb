"""Estimators whose ``task`` parameter says whether they classify or regress, as scikit-learn's tags tell."""

from __future__ import annotations

from sklearn.base import BaseEstimator

__all__ = ["TaskEstimator"]


class TaskEstimator(BaseEstimator):
    """A scikit-learn estimator that classifies or regresses as its ``task`` parameter says.

    scikit-learn (``is_classifier``, the cross-validation helpers) and neurofm's
    task checks read the estimator type from the tags; one class serving both
    tasks reports the one it was made for.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier" if self.task == "classification" else "regressor"
        return tags
