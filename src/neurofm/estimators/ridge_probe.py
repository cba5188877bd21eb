"""A closed-form ridge probe on embeddings, and its permutation test from the same decompositions.

The probe standardises the features on its training data, takes one singular
value decomposition of them and of each inner training fold, and from those
alone solves ridge for every penalty of its grid and every target: choosing
the penalty by inner cross-validation costs a few small matrix products, not
a refit per penalty. Nothing it decomposes depends on the labels (the inner
folds are plain shuffled K-folds, not stratified), so the same decompositions
serve every label permutation: :func:`ridge_permutation_scores` gives each
permutation's scores as a refit would, from the very same computations.

Permutations are solved in stacks: a fold's permutations' targets go through
each product together, one matrix product per permutation inside one numpy
call, so the Python work is per stack rather than per permutation. A fit on
its own is a stack of one and runs the same code, which is why the bits agree
(:class:`RidgePath`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold
from sklearn.utils import ClassifierTags
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

    Targets come as a stack, ``(n_sets, n_outputs, n)``: one or many target
    sets (a fit, or every label permutation) solved with the same arithmetic.
    Each set's products are matrix products of their own, of the same shapes
    whatever the stack holds, so a set solved among many gets the very bits it
    gets alone (one wide product over all sets would not promise that: BLAS may
    sum a wide and a narrow product's terms in different orders).

    Parameters
    ----------
    X : ndarray, shape (n, d)
        The training partition's features.
    inner_splits : int
        Folds of the inner cross-validation that chooses the penalty; fewer
        (``n_windows // 2``, at least 2) for fewer than ``2 * inner_splits``
        windows.
    random_state : int | None
        Seeds the inner folds' shuffle.
    """

    def __init__(self, X: np.ndarray, inner_splits: int, random_state: int | None):
        X = np.asarray(X, dtype=np.float64)
        # A small training partition (a learning curve's smallest fraction) gets fewer inner folds, each of two
        # windows at least, rather than a failed fold.
        self.n_splits = min(inner_splits, len(X) // 2)
        if self.n_splits < 2:
            raise ConfigError(
                f"The ridge probe's inner cross-validation needs at least 4 training windows (2 folds of 2), got "
                f"{len(X)}; give it more training windows."
            )
        self.full = _Decomposition.of(X)
        folds = KFold(self.n_splits, shuffle=True, random_state=random_state).split(X)
        self.inner = []
        for train, test in folds:
            decomposition = _Decomposition.of(X[train])
            projected = decomposition.project(X[test])
            self.inner.append((train, test, decomposition, projected, projected.T @ projected))

    def solve(self, targets: np.ndarray, alphas: Sequence[float]) -> tuple[float, np.ndarray, np.ndarray]:
        """The penalty the inner folds choose for ``targets`` and the fit with it on the whole partition.

        The penalty minimises the squared error summed over the inner test
        folds (on a tie, the larger penalty). Returns ``(alpha, coef, offset)``:
        predictions are ``project(X) @ coef + offset``. ``targets`` is
        ``(n,)`` or ``(n, n_outputs)``; this is :meth:`solve_stack` on a stack of one.
        """
        targets = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
        chosen, coefs, offsets = self.solve_stack(np.ascontiguousarray(targets.T[None]), alphas)
        return float(chosen[0]), coefs[0], offsets[0]

    def solve_stack(self, targets: np.ndarray, alphas: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`solve` for each target set of a stack, each exactly as it would be alone.

        Parameters
        ----------
        targets : ndarray, shape (n_sets, n_outputs, n)
            Each set's targets, one row per output, C-contiguous.
        alphas : sequence of float
            The penalties to choose from.

        Returns
        -------
        alphas : ndarray, shape (n_sets,)
            Each set's penalty.
        coefs : ndarray, shape (n_sets, r, n_outputs)
            Each set's fit in the basis of ``full.right`` (C-contiguous per set).
        offsets : ndarray, shape (n_sets, n_outputs)
            Each set's intercepts.
        """
        alphas = np.asarray(alphas, dtype=float)
        errors = np.zeros((len(targets), len(alphas)))
        for train, test, decomposition, projected, gram in self.inner:
            errors += _inner_errors(decomposition, projected, gram, targets[:, :, train], targets[:, :, test], alphas)
        # Larger penalties last in the grid order below: the reversed argmin keeps the largest of equal errors.
        order = np.argsort(alphas, kind="stable")
        best = order[len(order) - 1 - np.argmin(errors[:, order][:, ::-1], axis=1)]
        coefs, offsets = _fit_stack(self.full, targets, alphas[best])
        return alphas[best], coefs, offsets


def _centred_rotation(decomposition: _Decomposition, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each set's output means ``(n_sets, k)`` and its centred targets in the left singular basis ``(n_sets, k, r)``.

    The means run along contiguous rows and the product is one ``(k, n) @ (n, r)`` per set: neither depends on how
    many sets the stack holds.
    """
    offset = targets.mean(axis=2)
    return offset, (targets - offset[:, :, None]) @ decomposition.left


def _inner_errors(
    decomposition: _Decomposition,
    projected: np.ndarray,
    gram: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    alphas: np.ndarray,
) -> np.ndarray:
    """One inner fold's squared test error for each set (rows) and penalty (columns), less a per-set constant.

    With ``P`` the test rows projected (``projected``, ``gram = P'P``), ``c``
    a penalty's coefficients and ``e`` the test targets less the training
    mean, the error is ``|Pc - e|^2 = c'(P'P)c - 2(P'e)'c + |e|^2``. The last
    term is the same for every penalty and is left out: the products then run
    over the ``r`` components instead of the test windows, and need no
    ``(n_alphas, n_test)`` outputs per set.
    """
    offset, rotated = _centred_rotation(decomposition, train)
    n_sets, k, r = rotated.shape
    coefs = decomposition.shrink(alphas)[None, :, None, :] * rotated[:, None]  # (n_sets, n_alphas, k, r)
    correlation = (test - offset[:, :, None]) @ projected  # (P'e)' per set: one (k, n_test) @ (n_test, r) product
    # Every penalty's c'(P'P) for one set in one (n_alphas * k, r) @ (r, r) product.
    spread = (coefs.reshape(n_sets, len(alphas) * k, r) @ gram).reshape(coefs.shape)
    return (coefs * (spread - 2.0 * correlation[:, None])).reshape(n_sets, len(alphas), -1).sum(axis=2)


def _fit_stack(decomposition: _Decomposition, targets: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each set's fit on the whole partition with its own penalty: coefficients ``(n_sets, r, k)`` and offsets."""
    offset, rotated = _centred_rotation(decomposition, targets)
    coefs = decomposition.shrink(alphas)[:, None, :] * rotated
    # C-contiguous (r, k) per set, like a fitted probe's coef_: the output products then read the same layout.
    return np.ascontiguousarray(coefs.transpose(0, 2, 1)), offset


def _target_stack(labels: np.ndarray, classes: np.ndarray | None, class_weight: str | None) -> np.ndarray:
    """What ridge regresses on, for each set of labels ``(n_sets, n)`` or ``(n_sets, n, n_labels)``: ``(n_sets, k, n)``.

    Regression: the target itself; multilabel: each label's 0/1 as it is.
    Classification: one indicator row per class of ``classes`` (every set
    holds exactly these), scaled with ``class_weight="balanced"`` so that each
    class's row sums to ``n / n_classes``: a rare class pulls the fit as hard
    as a frequent one.
    """
    if labels.ndim == 3:
        return np.ascontiguousarray(np.asarray(labels, dtype=np.float64).transpose(0, 2, 1))
    if classes is None:
        return np.ascontiguousarray(np.asarray(labels, dtype=np.float64)[:, None, :])
    onehot = (labels[:, None, :] == classes[None, :, None]).astype(np.float64)
    if class_weight == "balanced":
        counts = onehot.sum(axis=2)  # sums of zeros and ones: exact in any order
        onehot *= (labels.shape[1] / (len(classes) * np.maximum(counts, 1.0)))[:, :, None]
    return onehot


class RidgeProbe(TaskEstimator):
    """Ridge regression in closed form on standardised features, its penalty chosen by inner cross-validation.

    Classification regresses class-indicator targets (scaled so that each
    class weighs alike with ``class_weight="balanced"``) and predicts the
    class of the largest output; regression regresses the target itself.
    Multilabel (``y`` of shape (n, n_labels) of 0/1) regresses every label's
    0/1 in one solve, one penalty for all labels, and predicts 1 where a
    label's output exceeds 0.5; its outputs are the labels' scores
    (:meth:`decision_function`; there is no ``predict_proba``: the outputs are
    not probabilities). The features are standardised with the training
    data's statistics. The penalty minimises the squared error of the
    outputs on the inner test folds, summed over them and over the outputs
    (multilabel: the mean over labels of each label's squared error, a Brier
    score of its 0/1 target, gives the same choice).

    Parameters
    ----------
    task : {"classification", "regression", "multilabel"}
        What the probe predicts.
    alphas : sequence of float
        Penalties to choose from (on standardised features).
    inner_splits : int
        Folds of the inner cross-validation inside the training data. They are
        shuffled K-folds, not stratified, so that they do not depend on the
        labels: :func:`ridge_permutation_scores` relies on it.
    class_weight : {"balanced"} | None
        Classification only: ``None`` regresses plain one-hot targets. Regression
        and multilabel ignore it.
    random_state : int | None
        Seeds the inner folds' shuffle.

    Attributes
    ----------
    alpha_ : float
        The penalty chosen.
    classes_ : ndarray | None
        The classes (``None`` for regression and multilabel).
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
        [(_, classes, chosen, coefs, offsets)] = self.fit_sets(path, np.asarray(y)[None])
        return self._fitted(path, classes, chosen[0], coefs[0], offsets[0])

    def fit_sets(self, path: RidgePath, labels: np.ndarray, chunk: int = 64):
        """Fit each row of ``labels`` on ``path``, in stacks: each row gets what :meth:`fit_path` gives it alone.

        Parameters
        ----------
        path : RidgePath
            ``self.path(X)``.
        labels : ndarray, shape (n_sets, n) or (n_sets, n, n_labels)
            One set of training labels per row (e.g. each label permutation's);
            multilabel: each set's (n, n_labels) 0/1.
        chunk : int
            Sets solved in one stack (bounds the memory, not the result).

        Yields
        ------
        rows : ndarray of int
            The rows of ``labels`` fitted in this stack; they share their classes.
        classes : ndarray | None
            Those rows' classes (``classes_``), ``None`` for regression and multilabel.
        alphas, coefs, offsets : ndarray
            Each row's fit, as :meth:`RidgePath.solve_stack` returns it.
        """
        labels = np.asarray(labels)
        if self.task == "classification":
            universe, codes = np.unique(labels, return_inverse=True)
            codes = codes.reshape(labels.shape)
            present = np.zeros((len(labels), len(universe)), dtype=bool)
            present[np.arange(len(labels))[:, None], codes] = True
            # A class absent from some rows' training labels changes their outputs: rows are stacked by classes.
            patterns, which = np.unique(present, axis=0, return_inverse=True)
            groups = [(np.flatnonzero(which.ravel() == g), np.flatnonzero(p)) for g, p in enumerate(patterns)]
        else:
            universe, codes, groups = None, labels, [(np.arange(len(labels)), None)]
        for rows, class_codes in groups:
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                targets = _target_stack(codes[part], class_codes, self.class_weight)
                chosen, coefs, offsets = path.solve_stack(targets, self.alphas)
                yield part, None if universe is None else universe[class_codes], chosen, coefs, offsets

    def _fitted(self, path: RidgePath, classes, alpha, coef, offset) -> RidgeProbe:
        """This probe holding one fit (a set's ``alpha, coef, offset`` from :meth:`fit_sets`) on ``path``."""
        self.classes_ = classes
        self.alpha_, self.coef_, self.offset_ = float(alpha), coef, offset
        # Plain arrays, so that the fitted probe is written and read back as a linear head (safetensors + JSON).
        self.mean_, self.scale_, self.components_ = path.full.mean, path.full.scale, path.full.right
        self.n_features_in_ = self.components_.shape[1]
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        if self.task == "multilabel":  # several 0/1 labels: a classifier of each, as scikit-learn's tags say it
            tags.estimator_type = "classifier"
            tags.classifier_tags, tags.regressor_tags = ClassifierTags(multi_label=True), None
        return tags

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        # The operations of _Decomposition.project, in its order: closed-form permutations reproduce them exactly.
        projected = ((np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_) @ self.components_.T
        return projected @ self.coef_ + self.offset_

    def outputs_to_predictions(self, outputs: np.ndarray) -> np.ndarray:
        """Class labels (the largest output), regression values, or each label's 0/1 (its output over 0.5)."""
        if self.task == "multilabel":
            return (outputs > 0.5).astype(np.int64)
        if self.classes_ is None:
            return outputs[:, 0]
        return self.classes_[np.argmax(outputs, axis=1)]

    def decision_function(self, X) -> np.ndarray:
        """One output per class (classification) or label (multilabel), or the prediction (regression)."""
        outputs = self._outputs(X)
        return outputs if self.classes_ is not None or self.task == "multilabel" else outputs[:, 0]

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
    depend on the labels), the same penalty choice and the same outputs. A
    fold's permutations are fitted in stacks (:meth:`RidgeProbe.fit_sets`);
    only ``scorer`` runs once per permutation and fold, so it is what to keep
    cheap.

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
    if not permuted:
        return []
    per_permutation: list[dict[str, list[float]]] = [{} for _ in permuted]
    labels = np.stack([np.asarray(y) for y in permuted])
    for train, test in splits:
        path = probe.path(features[train])
        projected = path.full.project(np.asarray(features[test], dtype=np.float64))
        for rows, classes, chosen, coefs, offsets in probe.fit_sets(path, labels[:, train]):
            # One (n_test, r) @ (r, k) product per permutation, as a fitted probe's _outputs makes it.
            outputs = projected @ coefs + offsets[:, None, :]
            for j, row in enumerate(rows):
                fitted = copy.copy(probe)._fitted(path, classes, chosen[j], coefs[j], offsets[j])
                for metric, value in scorer(fitted, outputs[j], test, permuted[row]).items():
                    per_permutation[row].setdefault(metric, []).append(value)
    return [
        {metric: float(np.nanmean(values)) for metric, values in collected.items()} for collected in per_permutation
    ]
