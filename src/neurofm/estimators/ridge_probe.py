"""A closed-form ridge probe on embeddings, and its permutation test from the same decompositions.

The probe standardises the features on its training data, takes one symmetric
eigendecomposition of a Gram matrix of them and of each inner training fold,
and from those alone solves ridge for every penalty of its grid and every
target: choosing the penalty by inner cross-validation costs a few small
matrix products, not a refit per penalty. Which Gram matrix depends on the
shape of the training partition (:class:`RidgePath`): with at least as many
windows as features, the ``(d, d)`` feature Gram ``Z'Z``, accumulated over
chunks of rows so that no standardised copy of the embeddings is made; with
fewer (flattened tokens), the ``(n, n)`` kernel ``ZZ'``. Nothing it
decomposes depends on the labels (the inner folds are shuffled K-folds, or
group K-folds when groups are given, never stratified), so the same
decompositions serve every label permutation: :func:`ridge_permutation_scores`
gives each permutation's scores as a refit would, from the very same
computations.

Permutations are solved in stacks: a fold's permutations' targets go through
each product together, so the Python work is per stack rather than per
permutation. A fit on its own is a stack of one and runs the same code. What
makes a fit (its rotated targets, coefficients and outputs) is one matrix
product per permutation inside one numpy call, so the bits agree with a fit
alone; the inner errors, which only choose the penalty, come from one product
over the whole stack, and a set whose choice their rounding could change is
computed again alone (:class:`RidgePath`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, KFold
from sklearn.utils import ClassifierTags
from sklearn.utils.validation import check_is_fitted

from ..configs.models import RIDGE_ALPHAS
from ..exceptions import ConfigError
from .task_tags import TaskEstimator

__all__ = ["RidgePath", "RidgeProbe", "output_predictions", "ridge_permutation_scores"]

#: Rows read at a time where the feature Gram streams over the training rows: 16 MB of float64 for
#: 512-dimensional embeddings, whatever the number of windows.
CHUNK_ROWS = 4096


@dataclass
class _Basis:
    """One set of training rows: its standardisation and an eigenbasis of the standardised rows.

    ``components`` (r, d) and ``eigenvalues`` (r,) are such that a ridge
    fit's coefficients in the basis are ``diag(1 / (eigenvalues + alpha))``
    times the centred targets carried into it: the eigenvectors ``V'`` of
    ``Z'Z`` (r = d), or ``U'Z`` with ``U`` the eigenvectors of ``ZZ'`` (r = n,
    the right singular vectors scaled by their singular values). No
    singular value is ever divided by: a null direction gets a zero
    coefficient rather than a NaN.
    """

    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    components: np.ndarray  # (r, d)
    eigenvalues: np.ndarray  # (r,), at least 0

    def project(self, X: np.ndarray) -> np.ndarray:
        """Rows standardised with the training statistics, in the basis: ``(n_rows, r)``."""
        return ((X - self.mean) / self.scale) @ self.components.T

    def shrink(self, alphas: np.ndarray) -> np.ndarray:
        """``1 / (e + alpha)`` for each penalty: ``(n_alphas, r)``."""
        return 1.0 / (self.eigenvalues + np.asarray(alphas, dtype=float)[:, None])


def _scale(variance: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """Standard deviations, 1 for a feature constant up to round-off (scikit-learn's ``StandardScaler`` rule).

    A constant feature carries nothing: it is left as it is rather than divided by a deviation that is only
    the rounding of its mean.
    """
    eps = np.finfo(np.float64).eps
    # A variance from a Gram less its mean correction can round to just below 0 for a constant feature.
    variance = np.maximum(variance, 0.0)
    scale = np.sqrt(variance)
    scale[variance <= n * eps * variance + (n * mean * eps) ** 2] = 1.0
    return scale


def _eigen(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (negative round-off clipped to 0) and eigenvectors (columns) of a symmetric Gram matrix."""
    eigenvalues, vectors = np.linalg.eigh(gram)
    return np.maximum(eigenvalues, 0.0), vectors


def _rows(X: np.ndarray, index: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """Rows ``index`` of ``X`` as a fresh float64 array, less ``shift`` (in place: indexing already copied)."""
    rows = np.asarray(X[index], dtype=np.float64)
    if shift is not None:
        rows -= shift
    return rows


def _chunks(index: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(index), CHUNK_ROWS):
        yield index[start : start + CHUNK_ROWS]


def _columns(targets: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Each set's targets of windows ``index``, C-contiguous: ``targets[:, :, index]`` is laid out index first,
    and a sum along a strided axis is added in another order than along a contiguous one, so the bits would
    depend on the stack's size."""
    return np.ascontiguousarray(np.take(targets, index, axis=2))


def _kernel_basis(rows: np.ndarray) -> tuple[_Basis, np.ndarray]:
    """Standardise ``rows`` (a fresh float64 array, overwritten) and decompose their kernel ``ZZ'``.

    Returns the basis and the kernel's eigenvectors ``U`` (n, n), which carry targets into it.
    """
    n = len(rows)
    mean = rows.mean(axis=0)
    rows -= mean
    scale = _scale(np.einsum("ij,ij->j", rows, rows) / n, mean, n)
    rows /= scale
    eigenvalues, left = _eigen(rows @ rows.T)
    return _Basis(mean, scale, left.T @ rows, eigenvalues), left


@dataclass
class _Block:
    """One inner test fold's rows and their sums about the partition's mean ``mu``."""

    rows: np.ndarray  # sorted, so that chunks read the embeddings in order
    deviation: np.ndarray  # sum of (x - mu), (d,)
    scatter: np.ndarray | None  # sum of (x - mu)(x - mu)', (d, d); dropped once the Grams are made


@dataclass
class _GramSet:
    """A set of blocks (an inner training fold, or the whole partition) and its standardised feature Gram's basis.

    ``shift`` is the set's mean less the partition's ``mu``: sums about ``mu`` become sums about the set's
    own mean by ``sum_A (x - m_A)(x - m_A)' = sum_A (x - mu)(x - mu)' - n_A (m_A - mu)(m_A - mu)'``.
    """

    blocks: list[int]
    n: int
    shift: np.ndarray
    basis: _Basis
    test: int | None = None  # the block an inner fold tests on
    test_gram: np.ndarray | None = None  # P'P of the test rows P in the basis, (r, r)


def _gram_set(blocks: list[_Block], chosen: list[int], mu: np.ndarray) -> _GramSet:
    """The standardisation and feature-Gram eigenbasis of the rows of ``chosen`` blocks, from their sums alone."""
    n = sum(len(blocks[b].rows) for b in chosen)
    shift = sum(blocks[b].deviation for b in chosen) / n
    scatter = sum(blocks[b].scatter for b in chosen) - n * np.outer(shift, shift)
    mean = mu + shift
    scale = _scale(np.diag(scatter) / n, mean, n)
    eigenvalues, vectors = _eigen(scatter / scale[:, None] / scale[None, :])
    return _GramSet(chosen, n, shift, _Basis(mean, scale, np.ascontiguousarray(vectors.T), eigenvalues))


def _test_gram(fold: _GramSet, block: _Block) -> np.ndarray:
    """``P'P`` for the test block's rows standardised with the fold's statistics, in the fold's basis."""
    deviation, shift, n_test = block.deviation, fold.shift, len(block.rows)
    about_fold = (
        block.scatter - np.outer(deviation, shift) - np.outer(shift, deviation) + n_test * np.outer(shift, shift)
    )
    standardised = about_fold / fold.basis.scale[:, None] / fold.basis.scale[None, :]
    components = fold.basis.components
    return components @ standardised @ components.T


class RidgePath:
    """Everything a ridge probe computes from a training partition's features alone.

    Targets come as a stack, ``(n_sets, n_outputs, n)``: one or many target
    sets (a fit, or every label permutation) solved with the same arithmetic.
    The products that make a set's fit are matrix products of their own, of
    the same shapes whatever the stack holds, so a set solved among many gets
    the very bits it gets alone (one wide product over all sets would not
    promise that: BLAS may sum a wide and a narrow product's terms in
    different orders). The inner errors that choose the penalty are the
    exception, for speed: one wide product, the stack's largest, gives every
    set's errors, each with a bound on its rounding in any order of additions
    (:func:`_inner_errors`); where another penalty's error comes within the
    bounds of the best one's, the set's errors are computed again as it alone
    computes them (:func:`_certain`). The choice is then the one the set makes
    alone, proven rather than hoped for.

    The decompositions are of whichever Gram matrix is smaller. With ``n >= d``
    (embeddings: many windows, a few hundred features) each inner test fold's
    rows are summed once, in chunks of :data:`CHUNK_ROWS`, about the
    partition's mean (their sum and scatter); every inner training fold's and
    the partition's centred Gram ``Z'Z`` (d, d) follow from those sums, each
    with its own standardisation, and each takes one ``eigh``. Solving a stack
    reads the rows again, in the same chunks, for the per-block products of the
    targets with the rows; nothing of size ``(n, d)`` or ``(n, r)`` is kept,
    and the features are held by reference. With ``n < d`` (flattened tokens:
    fewer windows than features) each set of rows is standardised and its
    kernel ``ZZ'`` (n, n) takes one ``eigh``: the same fits as a singular value
    decomposition of ``Z``.

    Parameters
    ----------
    X : ndarray, shape (n, d)
        The training partition's features (not copied; any float dtype, read
        in float64).
    inner_splits : int
        Folds of the inner cross-validation that chooses the penalty; fewer
        (``n_windows // 2``, at least 2) for fewer than ``2 * inner_splits``
        windows, and no more than the number of groups when grouped.
    random_state : int | None
        Seeds the inner folds' shuffle.
    groups : ndarray, shape (n,), optional
        Each window's group (subject). With two groups or more, the inner folds
        are group K-folds (shuffled, seeded by ``random_state``): no group has
        windows on both sides of an inner split, so the penalty is chosen for
        unseen groups, as the outer folds test it. Otherwise shuffled K-folds.
        Either way the folds do not depend on the labels.

    Attributes
    ----------
    n_splits : int
        The inner folds.
    kernel : bool
        Whether the decompositions are of the kernel (``n < d``) rather than
        of the feature Gram.
    inner : list of tuple
        Per inner fold, ``(train, test, ...)``: its row indices first.
    full : _Basis
        The partition's standardisation (``mean``, ``scale``) and basis
        (``components``, (r, d)), as a fitted probe holds them.
    """

    def __init__(self, X: np.ndarray, inner_splits: int, random_state: int | None, groups: np.ndarray | None = None):
        X = np.asarray(X)
        # A small training partition (a learning curve's smallest fraction) gets fewer inner folds, each of two
        # windows at least, rather than a failed fold.
        self.n_splits = min(inner_splits, len(X) // 2)
        if self.n_splits < 2:
            raise ConfigError(
                f"The ridge probe's inner cross-validation needs at least 4 training windows (2 folds of 2), got "
                f"{len(X)}; give it more training windows."
            )
        n_groups = 0 if groups is None else len(np.unique(groups))
        if n_groups >= 2:
            self.n_splits = min(self.n_splits, n_groups)
            folds = GroupKFold(self.n_splits, shuffle=True, random_state=random_state).split(X, groups=groups)
        else:  # one group only (a partition of one subject) cannot be split by group
            folds = KFold(self.n_splits, shuffle=True, random_state=random_state).split(X)
        folds = list(folds)
        self.kernel = len(X) < X.shape[1]
        if self.kernel:
            self._kernel_init(X, folds)
        else:
            self._gram_init(X, folds)

    def _kernel_init(self, X: np.ndarray, folds: list) -> None:
        self.full, self._left = _kernel_basis(np.array(X, dtype=np.float64))
        self.inner = []
        for train, test in folds:
            basis, left = _kernel_basis(_rows(X, train))
            projected = basis.project(_rows(X, test))
            self.inner.append((train, test, basis, left, projected, projected.T @ projected))

    def _gram_init(self, X: np.ndarray, folds: list) -> None:
        self._X = X
        n, d = X.shape
        total = np.zeros(d)
        for start in range(0, n, CHUNK_ROWS):
            total += np.asarray(X[start : start + CHUNK_ROWS], dtype=np.float64).sum(axis=0)
        self._mu = total / n  # every sum below is about it: rows far from the origin lose no digits
        self._blocks = []
        for _, test in folds:
            block = _Block(np.sort(test), np.zeros(d), np.zeros((d, d)))
            for index in _chunks(block.rows):
                rows = _rows(X, index, self._mu)
                block.deviation += rows.sum(axis=0)
                block.scatter += rows.T @ rows
                del rows  # else the next chunk is read while this one is still held: two chunks' memory
            self._blocks.append(block)
        everything = list(range(len(folds)))
        self._full = _gram_set(self._blocks, everything, self._mu)
        self.full = self._full.basis
        self.inner = []
        for b, (train, test) in enumerate(folds):
            fold = _gram_set(self._blocks, [c for c in everything if c != b], self._mu)
            fold.test, fold.test_gram = b, _test_gram(fold, self._blocks[b])
            self.inner.append((train, test, fold))
        for block in self._blocks:
            block.scatter = None  # only the Grams above needed it: (d, d) per block is not kept

    def solve(self, targets: np.ndarray, alphas: Sequence[float]) -> tuple[float, np.ndarray, np.ndarray]:
        """The penalty the inner folds choose for ``targets`` and the fit with it on the whole partition.

        The penalty minimises the squared error summed over the inner test
        folds (on a tie, the larger penalty). Returns ``(alpha, coef, offset)``:
        predictions are ``full.project(X) @ coef + offset``. ``targets`` is
        ``(n,)`` or ``(n, n_outputs)``; this is :meth:`solve_stack` on a stack of one.
        """
        targets = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
        chosen, coefs, offsets = self.solve_stack(np.ascontiguousarray(targets.T[None]), alphas)
        return float(chosen[0]), coefs[0], offsets[0]

    def solve_stack(
        self, targets: np.ndarray, alphas: Sequence[float], decisive: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`solve` for each target set of a stack, each exactly as it would be alone.

        Parameters
        ----------
        targets : ndarray, shape (n_sets, n_outputs, n)
            Each set's targets, one row per output, C-contiguous.
        alphas : sequence of float
            The penalties to choose from.
        decisive : int, optional
            Only the first ``decisive`` outputs' inner errors choose the
            penalty (all outputs' when ``None``). Two classes' indicator
            targets are affine in each other (``y_2 = w_2 - (w_2 / w_1) y_1``),
            so every penalty's error on the second is the first's times the
            same constant: the first alone makes the same choice, at half
            the cost.

        Returns
        -------
        alphas : ndarray, shape (n_sets,)
            Each set's penalty.
        coefs : ndarray, shape (n_sets, r, n_outputs)
            Each set's fit in the basis of ``full.components`` (C-contiguous per set).
        offsets : ndarray, shape (n_sets, n_outputs)
            Each set's intercepts.
        """
        # Ascending and each penalty once: a penalty listed twice is one choice, whatever its errors' last bits.
        alphas = np.unique(np.asarray(alphas, dtype=float))
        errors, magnitudes, rotated, offsets = self._stack(targets, alphas, decisive)
        best = _choice(errors)
        if len(targets) > 1:
            # The stack's errors come from one product over all its sets; a set's own errors may differ from them in
            # the last bits. Where that could change the choice, the set's errors are computed again as it alone.
            margins = magnitudes * _tolerance(len(self.full.eigenvalues), rotated.shape[1], self.n_splits)
            for s in np.flatnonzero(~_certain(errors, margins, best)):
                best[s] = _choice(self._stack(targets[s : s + 1], alphas, decisive)[0])[0]
        coefs = self.full.shrink(alphas[best])[:, None, :] * rotated
        # C-contiguous (r, k) per set, like a fitted probe's coef_: the output products then read the same layout.
        return alphas[best], np.ascontiguousarray(coefs.transpose(0, 2, 1)), offsets

    def _stack(self, targets: np.ndarray, alphas: np.ndarray, decisive: int | None) -> tuple[np.ndarray, ...]:
        """Inner errors and their magnitudes ``(n_sets, n_alphas)``, rotated targets ``(n_sets, k, r)``, offsets."""
        stack = self._kernel_stack if self.kernel else self._gram_stack
        return stack(targets, alphas, slice(decisive))

    def _kernel_stack(self, targets: np.ndarray, alphas: np.ndarray, decisive: slice) -> tuple[np.ndarray, ...]:
        """:meth:`_stack` in the kernel's eigenbases."""
        errors, magnitudes = np.zeros((2, len(targets), len(alphas)))
        deciding = targets[:, decisive]
        for train, test, basis, left, projected, gram in self.inner:
            offset, rotated = _centred_rotation(left, _columns(deciding, train))
            # One (k, n_test) @ (n_test, r) product per set.
            correlation = (_columns(deciding, test) - offset[:, :, None]) @ projected
            fold_errors, fold_magnitudes = _inner_errors(basis.shrink(alphas), rotated, correlation, gram)
            errors += fold_errors
            magnitudes += fold_magnitudes
        offsets, rotated = _centred_rotation(self._left, targets)
        return errors, magnitudes, rotated, offsets

    def _gram_stack(self, targets: np.ndarray, alphas: np.ndarray, decisive: slice) -> tuple[np.ndarray, ...]:
        """:meth:`_kernel_stack` from per-block sums of the targets and their products with the rows.

        With ``y`` the targets less their partition mean ``m`` (per set), each
        block's ``sum (x - mu)(y)'`` and ``sum y`` give every fold's
        ``Z'(y - m_fold)`` and the test rows' ``P'(y - m_fold)`` by the same
        mean corrections as the Grams; each set's product with the rows is one
        ``(k, rows) @ (rows, d)`` per chunk.
        """
        mean = targets.mean(axis=2)  # along contiguous rows: each set's own, whatever the stack
        n_sets, k, _ = targets.shape
        products, sums = [], []
        for block in self._blocks:
            product, total = np.zeros((n_sets, k, len(self._mu))), np.zeros((n_sets, k))
            for index in _chunks(block.rows):
                centred = _columns(targets, index) - mean[:, :, None]
                product += centred @ _rows(self._X, index, self._mu)
                total += centred.sum(axis=2)
            products.append(product)
            sums.append(total)
        errors, magnitudes = np.zeros((2, n_sets, len(alphas)))
        decisive_products, decisive_sums = [p[:, decisive] for p in products], [t[:, decisive] for t in sums]
        for _, _, fold in self.inner:
            shift, rotated = _gram_rotation(fold, decisive_products, decisive_sums)
            block, b = self._blocks[fold.test], fold.test
            # The test rows' sum of (x - m_fold)(y - mean_fold)' from the block's sums about (mu, m).
            about_fold = (
                decisive_products[b]
                - shift[:, :, None] * block.deviation
                - decisive_sums[b][:, :, None] * fold.shift
                + len(block.rows) * shift[:, :, None] * fold.shift
            )
            correlation = (about_fold / fold.basis.scale) @ fold.basis.components.T
            fold_errors, fold_magnitudes = _inner_errors(
                fold.basis.shrink(alphas), rotated, correlation, fold.test_gram
            )
            errors += fold_errors
            magnitudes += fold_magnitudes
        shift, rotated = _gram_rotation(self._full, products, sums)
        return errors, magnitudes, rotated, mean + shift


def _gram_rotation(fold: _GramSet, products: list, sums: list) -> tuple[np.ndarray, np.ndarray]:
    """A set of blocks' target mean less the partition's ``(n_sets, k)`` and its ``Z'y`` in its basis ``(n_sets, k, r)``.

    Summed block by block in a fixed order, elementwise: no sum depends on how many sets the stack holds.
    """
    shift = sum(sums[b] for b in fold.blocks) / fold.n
    about_fold = sum(products[b] for b in fold.blocks) - fold.n * shift[:, :, None] * fold.shift
    return shift, (about_fold / fold.basis.scale) @ fold.basis.components.T


def _centred_rotation(left: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each set's output means ``(n_sets, k)`` and its centred targets in the kernel's eigenbasis ``(n_sets, k, r)``.

    The means run along contiguous rows and the product is one ``(k, n) @ (n, r)`` per set: neither depends on how
    many sets the stack holds.
    """
    offset = targets.mean(axis=2)
    return offset, (targets - offset[:, :, None]) @ left


def _inner_errors(
    shrink: np.ndarray, rotated: np.ndarray, correlation: np.ndarray, gram: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One inner fold's squared test error for each set (rows) and penalty (columns), less a per-set constant.

    With ``P`` the test rows in the fold's basis (``gram = P'P``), ``c`` a
    penalty's coefficients (``shrink * rotated``) and ``e`` the test targets
    less the training mean (``correlation = (P'e)'``), the error is
    ``|Pc - e|^2 = c'(P'P)c - 2(P'e)'c + |e|^2``. The last term is the same
    for every penalty and is left out: the products then run over the ``r``
    components instead of the test windows, and need no
    ``(n_alphas, n_test)`` outputs per set.

    Also returns each error's magnitude: a bound on the sums of absolute
    terms that any order of the error's additions adds up, so that
    ``magnitude * r * eps`` bounds its rounding (:func:`_certain`). With
    ``|c_i (Gc)_i| <= |c_i| |G_i| |c|`` (Cauchy-Schwarz on the rows of
    ``G``) and again over ``i``, it is ``|c| (|c| |G| + |Gc| + 2 |P'e|)``
    per output, in Euclidean and Frobenius norms: a few sums of squares,
    none of the size of the product.
    """
    n_sets, k, r = rotated.shape
    coefs = shrink[None, :, None, :] * rotated[:, None]  # (n_sets, n_alphas, k, r)
    # Every set's and penalty's c'(P'P) in one (n_sets * n_alphas * k, r) @ (r, r) product.
    spread = (coefs.reshape(-1, r) @ gram).reshape(coefs.shape)
    quadratic = np.einsum("sakr,sakr->sa", coefs, spread)
    linear = np.einsum("ar,skr->sa", shrink, rotated * correlation)
    # |c|^2 per set, penalty and output from the squares: (shrink^2) against (rotated^2), no pass over coefs.
    size = np.sqrt(np.einsum("ar,skr->sak", shrink**2, rotated**2))
    spread_size = np.sqrt(np.einsum("sakr,sakr->sak", spread, spread))
    reach = np.sqrt(np.einsum("skr,skr->sk", correlation, correlation))[:, None, :]
    magnitudes = (size * (size * np.linalg.norm(gram) + spread_size + 2.0 * reach)).sum(axis=2)
    return quadratic - 2.0 * linear, magnitudes


def _tolerance(r: int, k: int, n_splits: int) -> float:
    """Relative rounding allowed to an inner error summed over ``n_splits`` folds of ``k`` outputs in ``r`` components.

    Each term of an error is a product of ``r`` terms, then ``k * r`` such
    terms are summed, then the folds: ``(r + k r + n_splits) u`` bounds the
    relative rounding of each sum in any order (``u`` the unit round-off, to
    first order), with a factor 8 to spare for the bounds' own rounding.
    """
    return 8.0 * (r * (k + 1) + n_splits + 8) * np.finfo(np.float64).eps


def _choice(errors: np.ndarray) -> np.ndarray:
    """Each set's penalty (its column, penalties ascending): the least error, on a tie the larger penalty."""
    return errors.shape[1] - 1 - np.argmin(errors[:, ::-1], axis=1)


def _certain(errors: np.ndarray, margins: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Whether each set's ``best`` column stays the choice whatever its errors' rounding, ``margins`` at most.

    Two computations of the same errors in other orders of additions (a stack's product and a set's own) differ
    by at most ``margins``; if every other penalty's error exceeds the best one by more than both margins, both
    computations choose the same penalty, and no tie can arise.
    """
    rows = np.arange(len(errors))
    gap = errors - errors[rows, best][:, None]
    clear = gap > margins + margins[rows, best][:, None]
    clear[rows, best] = True
    return clear.all(axis=1)


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
    data's statistics (a feature constant up to round-off is left unscaled,
    as scikit-learn's ``StandardScaler`` leaves it); the fit is exact ridge,
    solved from one eigendecomposition of the standardised features' Gram
    matrix (feature Gram or kernel, whichever is smaller:
    :class:`RidgePath`). The penalty minimises the squared error of the
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
        shuffled K-folds, or group K-folds when :meth:`fit` gets ``groups``
        (an experiment with groups, e.g. subject-wise outer folds, passes
        them: no subject is then on both sides of an inner split). Never
        stratified, so that they do not depend on the labels:
        :func:`ridge_permutation_scores` relies on it.
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
        The basis of the fit: with at least as many training windows as
        features, the eigenvectors of the standardised features' Gram matrix
        (r = d); with fewer, the right singular vectors scaled by their
        singular values (r = n). Predictions are
        ``((X - mean_) / scale_) @ components_.T @ coef_ + offset_``.
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

    def path(self, X, groups=None) -> RidgePath:
        """The label-free part of :meth:`fit` on ``X`` (shared by every target fitted on it)."""
        return RidgePath(X, self.inner_splits, self.random_state, groups=groups)

    def fit(self, X, y, groups=None) -> RidgeProbe:
        """Standardise, decompose, choose the penalty by inner CV and fit on all of ``X``.

        Parameters
        ----------
        X : array-like, shape (n, d)
        y : array-like, shape (n,) or (n, n_labels)
        groups : array-like, shape (n,), optional
            Each window's group: with two groups or more the inner folds keep
            groups apart (:class:`RidgePath`).

        Returns
        -------
        RidgeProbe
            This probe, fitted.
        """
        return self.fit_path(self.path(X, groups), y)

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
            # The inverse by a search: np.unique's own return_inverse sorts every label again, at several times the cost.
            universe = np.unique(labels)
            codes = np.searchsorted(universe, labels)
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
                # Two classes: the first indicator's errors choose as both would (RidgePath.solve_stack).
                decisive = 1 if class_codes is not None and len(class_codes) == 2 else None
                chosen, coefs, offsets = path.solve_stack(targets, self.alphas, decisive)
                yield part, None if universe is None else universe[class_codes], chosen, coefs, offsets

    def _fitted(self, path: RidgePath, classes, alpha, coef, offset) -> RidgeProbe:
        """This probe holding one fit (a set's ``alpha, coef, offset`` from :meth:`fit_sets`) on ``path``."""
        self.classes_ = classes
        self.alpha_, self.coef_, self.offset_ = float(alpha), coef, offset
        # Plain arrays, so that the fitted probe is written and read back as a linear head (safetensors + JSON).
        self.mean_, self.scale_, self.components_ = path.full.mean, path.full.scale, path.full.components
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
        # The operations of _Basis.project, in its order: closed-form permutations reproduce them exactly.
        projected = ((np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_) @ self.components_.T
        return projected @ self.coef_ + self.offset_

    def outputs_to_predictions(self, outputs: np.ndarray) -> np.ndarray:
        """Class labels (the largest output), regression values, or each label's 0/1 (its output over 0.5)."""
        return output_predictions(self.task, self.classes_, outputs)

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
    groups: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Each permutation's mean fold scores, from one set of decompositions per fold.

    What refitting ``probe`` on each permutation's training labels would give,
    computed as that refit computes it: the same decompositions (they do not
    depend on the labels), the same penalty choice and the same outputs. A
    fold's permutations are fitted in stacks (:meth:`RidgeProbe.fit_sets`)
    and scored a stack at a time, so that the Python work is per stack.

    Parameters
    ----------
    probe : RidgeProbe
        Unfitted; its parameters are used.
    features : ndarray, shape (n, d)
    permuted : ndarray, shape (n_permutations, n) or (n_permutations, n, n_labels), or a sequence of them
        Each permutation's labels for all ``n`` windows (for classification,
        class codes are cheapest: the fits' classes are then codes too).
    splits : sequence of (train, test)
    scorer : callable
        ``scorer(rows, classes, outputs, test) -> dict[str, sequence of float]``:
        one fold's scores of the permutations ``rows`` (positions in
        ``permuted``), one value per row, from the outputs of their fits on the
        test windows, ``(len(rows), n_test, n_outputs)``, fitted with
        ``classes`` (the fits' ``classes_``; ``None`` for regression and
        multilabel).
    groups : ndarray, shape (n,), optional
        Each window's group, as a refit gets those of its training windows:
        the inner folds are then grouped alike.

    Returns
    -------
    list of dict
        Per permutation, each metric's mean over folds (NaN folds left out).
    """
    if len(permuted) == 0:
        return []
    per_permutation: list[dict[str, list[float]]] = [{} for _ in permuted]
    labels = permuted if isinstance(permuted, np.ndarray) else np.stack([np.asarray(y) for y in permuted])
    for train, test in splits:
        path = probe.path(features[train], None if groups is None else np.asarray(groups)[train])
        projected = path.full.project(np.asarray(features[test], dtype=np.float64))
        for rows, classes, _, coefs, offsets in probe.fit_sets(path, labels[:, train]):
            # One (n_test, r) @ (r, k) product per permutation, as a fitted probe's _outputs makes it.
            outputs = projected @ coefs + offsets[:, None, :]
            for metric, values in scorer(rows, classes, outputs, test).items():
                for row, value in zip(rows, values, strict=True):
                    per_permutation[row].setdefault(metric, []).append(float(value))
    return [
        {metric: float(np.nanmean(values)) for metric, values in collected.items()} for collected in per_permutation
    ]


def output_predictions(task: str, classes: np.ndarray | None, outputs: np.ndarray) -> np.ndarray:
    """A ridge probe's predictions from its outputs ``(..., n_outputs)``, for one fit or a stack of them.

    Classification: the entry of ``classes`` of the largest output; regression:
    the output; multilabel: each label's 0/1, 1 where its output exceeds 0.5.
    """
    if task == "multilabel":
        return (outputs > 0.5).astype(np.int64)
    if classes is None:
        return outputs[..., 0]
    return classes[np.argmax(outputs, axis=-1)]
