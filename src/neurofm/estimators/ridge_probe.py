"""A closed-form ridge probe on embeddings, and its permutation test from the same decompositions.

The probe standardises the features on its training data, takes one singular
value decomposition of them and of each inner training fold, and from those
alone solves ridge for every penalty of its grid and every target: choosing
the penalty by inner cross-validation costs a few small matrix products, not
a refit per penalty. Nothing it decomposes depends on the labels (the inner
folds are plain shuffled K-folds, not stratified), so the same decompositions
serve every label permutation: :func:`ridge_permutation_scores` gives each
permutation's scores as a refit would, from the very same computations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted

from ..configs.models import RIDGE_ALPHAS
from ..exceptions import ConfigError
from .task_tags import TaskEstimator

__all__ = ["RidgePath", "RidgeProbe", "ridge_permutation_scores"]


@dataclass
class _Decomposition:
    """One set of training rows: its standardisation and the thin SVD of the standardised rows."""

    mean: np.ndarray
    scale: np.ndarray
    left: np.ndarray  # U, (n, r)
    singular: np.ndarray  # s, (r,)
    right: np.ndarray  # V^T, (r, d)

    @classmethod
    def of(cls, X: np.ndarray) -> _Decomposition:
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale == 0] = 1.0  # a constant feature carries nothing; left as it is rather than divided by zero
        left, singular, right = np.linalg.svd((X - mean) / scale, full_matrices=False)
        return cls(mean, scale, left, singular, right)

    def project(self, X: np.ndarray) -> np.ndarray:
        """Rows standardised with the training statistics, in the basis of the right singular vectors."""
        return ((X - self.mean) / self.scale) @ self.right.T

    def shrink(self, alphas: np.ndarray) -> np.ndarray:
        """``s / (s^2 + alpha)`` for each penalty: ``(n_alphas, r)``."""
        s = self.singular
        return s / (s**2 + np.asarray(alphas, dtype=float)[:, None])


class RidgePath:
    """Everything a ridge probe computes from a training partition's features alone.

    Parameters
    ----------
    X : ndarray, shape (n, d)
        The training partition's features.
    inner_splits : int
        Folds of the inner cross-validation that chooses the penalty.
    random_state : int | None
        Seeds the inner folds' shuffle.
    """

    def __init__(self, X: np.ndarray, inner_splits: int, random_state: int | None):
        X = np.asarray(X, dtype=np.float64)
        if len(X) < 2 * inner_splits:
            raise ConfigError(
                f"The ridge probe's inner cross-validation needs at least {2 * inner_splits} training windows "
                f"(inner_splits={inner_splits}), got {len(X)}; lower inner_splits or give more windows."
            )
        self.full = _Decomposition.of(X)
        folds = KFold(inner_splits, shuffle=True, random_state=random_state).split(X)
        self.inner = []
        for train, test in folds:
            decomposition = _Decomposition.of(X[train])
            self.inner.append((train, test, decomposition, decomposition.project(X[test])))

    def solve(self, targets: np.ndarray, alphas: Sequence[float]) -> tuple[float, np.ndarray, np.ndarray]:
        """The penalty the inner folds choose for ``targets`` and the fit with it on the whole partition.

        The penalty minimises the squared error summed over the inner test
        folds (on a tie, the larger penalty). Returns ``(alpha, coef, offset)``:
        predictions are ``project(X) @ coef + offset``.
        """
        alphas = np.asarray(alphas, dtype=float)
        errors = np.zeros(len(alphas))
        for train, test, decomposition, projected in self.inner:
            offset = targets[train].mean(axis=0)
            rotated = decomposition.left.T @ (targets[train] - offset)  # (r, k)
            coefs = decomposition.shrink(alphas)[:, :, None] * rotated[None]  # (n_alphas, r, k)
            residuals = projected @ coefs + offset - targets[test]  # (n_alphas, n_test, k)
            errors += (residuals**2).sum(axis=(1, 2))
        # Larger penalties last in the grid order below: the reversed argmin keeps the largest of equal errors.
        order = np.argsort(alphas, kind="stable")
        best = order[len(order) - 1 - int(np.argmin(errors[order][::-1]))]
        offset = targets.mean(axis=0)
        rotated = self.full.left.T @ (targets - offset)
        coef = self.full.shrink(alphas[best : best + 1])[0][:, None] * rotated
        return float(alphas[best]), coef, offset


def _targets(y: np.ndarray, classes: np.ndarray | None, class_weight: str | None) -> np.ndarray:
    """What ridge regresses on: ``y`` as a column, or one column per class (balanced: each class weighs alike)."""
    if classes is None:
        return np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    onehot = (np.asarray(y)[:, None] == classes[None, :]).astype(np.float64)
    if class_weight == "balanced":
        counts = onehot.sum(axis=0)
        # Each class's column sums to n / n_classes: a rare class pulls the fit as hard as a frequent one.
        onehot *= len(y) / (len(classes) * np.maximum(counts, 1.0))
    return onehot


class RidgeProbe(TaskEstimator):
    """Ridge regression in closed form on standardised features, its penalty chosen by inner cross-validation.

    Classification regresses class-indicator targets (scaled so that each
    class weighs alike with ``class_weight="balanced"``) and predicts the
    class of the largest output; regression regresses the target itself.
    The features are standardised with the training data's statistics.

    Parameters
    ----------
    task : {"classification", "regression"}
        What the probe predicts.
    alphas : sequence of float
        Penalties to choose from (on standardised features).
    inner_splits : int
        Folds of the inner cross-validation inside the training data. They are
        shuffled K-folds, not stratified, so that they do not depend on the
        labels: :func:`ridge_permutation_scores` relies on it.
    class_weight : {"balanced"} | None
        Classification only: ``None`` regresses plain one-hot targets.
    random_state : int | None
        Seeds the inner folds' shuffle.

    Attributes
    ----------
    alpha_ : float
        The penalty chosen.
    classes_ : ndarray | None
        The classes (``None`` for regression).
    mean_, scale_ : ndarray, shape (d,)
        The training data's standardisation.
    components_ : ndarray, shape (r, d)
        Right singular vectors of the standardised training data.
    coef_ : ndarray, shape (r, n_outputs)
        The fit in the basis of ``components_``; ``offset_`` its intercept.
    """

    def __init__(
        self,
        task: str = "classification",
        alphas: Sequence[float] = RIDGE_ALPHAS,
        inner_splits: int = 5,
        class_weight: str | None = "balanced",
        random_state: int | None = None,
    ):
        self.task = task
        self.alphas = alphas
        self.inner_splits = inner_splits
        self.class_weight = class_weight
        self.random_state = random_state

    def path(self, X) -> RidgePath:
        """The label-free part of :meth:`fit` on ``X`` (shared by every target fitted on it)."""
        return RidgePath(X, self.inner_splits, self.random_state)

    def fit(self, X, y) -> RidgeProbe:
        """Standardise, decompose, choose the penalty by inner CV and fit on all of ``X``."""
        return self.fit_path(self.path(X), y)

    def fit_path(self, path: RidgePath, y) -> RidgeProbe:
        """:meth:`fit` with the decompositions of ``X`` already made (``path = self.path(X)``)."""
        y = np.asarray(y)
        self.classes_ = np.unique(y) if self.task == "classification" else None
        targets = _targets(y, self.classes_, self.class_weight)
        self.alpha_, self.coef_, self.offset_ = path.solve(targets, self.alphas)
        # Plain arrays, so that the fitted probe is written and read back as a linear head (safetensors + JSON).
        self.mean_, self.scale_, self.components_ = path.full.mean, path.full.scale, path.full.right
        self.n_features_in_ = self.components_.shape[1]
        return self

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        # The operations of _Decomposition.project, in its order: closed-form permutations reproduce them exactly.
        projected = ((np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_) @ self.components_.T
        return projected @ self.coef_ + self.offset_

    def outputs_to_predictions(self, outputs: np.ndarray) -> np.ndarray:
        """Class labels (the largest output) or regression values from :meth:`decision_function`'s outputs."""
        if self.classes_ is None:
            return outputs[:, 0]
        return self.classes_[np.argmax(outputs, axis=1)]

    def decision_function(self, X) -> np.ndarray:
        """One output per class (classification) or the prediction (regression)."""
        outputs = self._outputs(X)
        return outputs if self.classes_ is not None else outputs[:, 0]

    def predict(self, X) -> np.ndarray:
        return self.outputs_to_predictions(self._outputs(X))


def ridge_permutation_scores(
    probe: RidgeProbe,
    features: np.ndarray,
    permuted: Sequence[np.ndarray],
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    scorer,
) -> list[dict[str, float]]:
    """Each permutation's mean fold scores, from one set of decompositions per fold.

    What refitting ``probe`` on each permutation's training labels would give,
    computed as that refit computes it: the same decompositions (they do not
    depend on the labels), the same penalty choice and the same outputs.

    Parameters
    ----------
    probe : RidgeProbe
        Unfitted; its parameters are used.
    features : ndarray, shape (n, d)
    permuted : sequence of ndarray
        Each permutation's labels for all ``n`` windows.
    splits : sequence of (train, test)
    scorer : callable
        ``scorer(fitted_probe, outputs, test, y) -> dict[str, float]``: one
        fold's scores from the fitted probe's outputs on the test windows.

    Returns
    -------
    list of dict
        Per permutation, each metric's mean over folds (NaN folds left out).
    """
    per_permutation: list[dict[str, list[float]]] = [{} for _ in permuted]
    for train, test in splits:
        path = probe.path(features[train])
        projected = path.full.project(np.asarray(features[test], dtype=np.float64))
        for collected, y in zip(per_permutation, permuted, strict=True):
            fitted = probe.__class__(**probe.get_params()).fit_path(path, y[train])
            outputs = projected @ fitted.coef_ + fitted.offset_
            for metric, value in scorer(fitted, outputs, test, y).items():
                collected.setdefault(metric, []).append(value)
    return [
        {metric: float(np.nanmean(values)) for metric, values in collected.items()} for collected in per_permutation
    ]
