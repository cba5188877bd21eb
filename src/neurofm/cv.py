"""Outer cross-validation splits that cannot leak, checked before any compute."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from sklearn import model_selection as ms

from .configs import GROUP_AWARE_STRATEGIES, STRATIFIED_STRATEGIES, CVConfig, group_key_ignored_message
from .exceptions import ConfigError, CVSplitError
from .utils.logging import logger

__all__ = ["make_splits", "SUBJECT_LIKE_COLUMNS", "grouped_holdout", "label_combinations", "target_bins"]

# Columns that usually hold the recording's subject; splitting their windows across
# train and test inflates scores, so a non-group CV over them gets a warning.
SUBJECT_LIKE_COLUMNS = ("subject", "subject_id", "participant", "participant_id", "patient", "patient_id")


def make_splits(
    cv: CVConfig,
    y: np.ndarray,
    metadata: pd.DataFrame,
    task: str,
    random_state: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Compute the outer folds and prove they are sound.

    Parameters
    ----------
    cv : CVConfig
        The requested strategy.
    y : ndarray, shape (n_windows,)
        Targets (used for stratification only). A regression target with
        ``cv.stratify_bins`` is stratified on its quantile bins
        (:func:`target_bins`), computed on all windows' targets: label
        information, used only to balance the folds, never by a model.
    metadata : DataFrame
        Sample metadata; holds ``cv.group_key`` for group strategies.
    task : str
        ``"classification"``, ``"regression"`` or ``"multilabel"`` (``y`` of
        shape (n_windows, n_labels); the stratified strategies stratify on
        each window's combination of labels, :func:`label_combinations`).
    random_state : int
        Seed for shuffled strategies.

    Returns
    -------
    splits : list of (train_indices, test_indices)
    """
    n = len(y)
    if cv.group_key and cv.strategy not in GROUP_AWARE_STRATEGIES:
        # CVConfig refuses this; a config built without validation (model_construct) must not leak either.
        raise ConfigError(group_key_ignored_message(cv.strategy, cv.group_key))
    groups = _groups(cv, metadata)
    stratify = task == "classification"
    if stratify:
        _check_classes(cv, y, groups)
    if groups is None:
        _warn_if_subject_column(cv, metadata)
    else:
        n_groups = len(np.unique(groups))
        needed = 2 if cv.strategy in ("leave_one_group_out", "train_test_split") else cv.n_splits
        if n_groups < needed:
            fix = f"lower n_splits to at most {n_groups}" if n_groups >= 2 else "collect data from more groups"
            raise CVSplitError(
                f"CV strategy {cv.strategy!r} needs at least {needed} groups in column {cv.group_key!r}, "
                f"but the data hold {n_groups}; {fix}."
            )

    splitter = _splitter(cv, stratify, random_state, groups is not None)
    idx = np.arange(n)
    strata = y if stratify else None
    if task == "regression" and cv.stratify_bins and cv.strategy in STRATIFIED_STRATEGIES:
        strata = target_bins(y, cv.stratify_bins)
    if task == "multilabel" and cv.strategy in STRATIFIED_STRATEGIES:
        strata = label_combinations(y, cv.n_splits)
    try:
        splits = [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(idx, strata, groups)]
    except ValueError as exc:
        raise CVSplitError(f"scikit-learn could not split the data with {cv.strategy!r}: {exc}") from exc
    _check_splits(splits, y if stratify else None, groups, cv)
    if task == "multilabel":
        _check_label_values(splits, y)
    return splits


def label_combinations(y: np.ndarray, n_splits: int) -> np.ndarray:
    """The stratum of each window of a multilabel ``y``: its combination of labels, the rare ones pooled.

    A combination held by fewer than ``n_splits`` windows cannot reach every
    fold; those windows share one stratum, so that stratifying on the
    combinations stays possible (and the common ones stay balanced).

    Parameters
    ----------
    y : ndarray, shape (n_windows, n_labels)
        0/1 labels.
    n_splits : int
        Folds the strata are spread over.
    """
    _, code, counts = np.unique(np.asarray(y), axis=0, return_inverse=True, return_counts=True)
    code = np.ravel(code)
    return np.where(counts[code] >= n_splits, code, -1)


def _check_label_values(splits, y: np.ndarray) -> None:
    """Refuse folds whose training windows hold a label with a single value: no classifier can learn it."""
    for fold, (train, _) in enumerate(splits):
        constant = [k for k in range(y.shape[1]) if len(np.unique(y[train, k])) < 2]
        if constant:
            raise CVSplitError(
                f"Fold {fold}'s training partition holds label column(s) {constant} with a single value, so no "
                "classifier can learn them; use fewer folds, a stratified strategy, or drop those rare labels."
            )


def target_bins(y: np.ndarray, n_bins: int) -> np.ndarray:
    """Each window's quantile bin of a regression target (0 to at most ``n_bins - 1``), to stratify folds on.

    Equal-count bins of all windows' targets; ties at an edge merge bins, so
    a target of few distinct values gets fewer bins.

    Parameters
    ----------
    y : ndarray, shape (n_windows,)
        The regression target.
    n_bins : int
        Number of quantile bins asked for.
    """
    values = np.asarray(y, dtype=float)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right")


def _groups(cv: CVConfig, metadata: pd.DataFrame) -> np.ndarray | None:
    if cv.group_key is None:
        return None
    if cv.group_key not in metadata.columns:
        cols = list(metadata.columns)
        raise CVSplitError(
            f"group_key {cv.group_key!r} is not a column of sample_metadata (columns: {cols}); "
            "pass sample_metadata with that column or set group_key to one of the columns."
        )
    groups = metadata[cv.group_key].to_numpy()
    if pd.isna(groups).any():
        raise CVSplitError(f"Column {cv.group_key!r} has missing values; every window needs a group.")
    return groups


def _check_classes(cv: CVConfig, y: np.ndarray, groups: np.ndarray | None) -> None:
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise CVSplitError(f"y holds a single class ({classes[0].item()!r}); classification needs at least two.")
    if cv.strategy not in STRATIFIED_STRATEGIES:
        return
    # np.unique gives one count per class, so strict=True never raises: mutating it changes nothing.
    for cls, count in zip(classes.tolist(), counts.tolist(), strict=True):  # pragma: no mutate
        if count < cv.n_splits:
            raise CVSplitError(
                f"Stratified {cv.n_splits}-fold CV cannot hold: class {cls!r} has only {count} window(s), "
                f"fewer than the {cv.n_splits} folds. Lower n_splits to {max(2, int(count))} or collect more data."
            )
        if groups is not None:
            n_groups_with_class = len(np.unique(groups[y == cls]))
            if n_groups_with_class < cv.n_splits:
                raise CVSplitError(
                    f"Stratified group CV cannot hold: class {cls!r} occurs in only {n_groups_with_class} group(s) "
                    f"of {cv.group_key!r}, fewer than the {cv.n_splits} folds, so some test folds would lack it. "
                    f"Lower n_splits to {max(2, n_groups_with_class)} or use group_kfold."
                )


def _warn_if_subject_column(cv: CVConfig, metadata: pd.DataFrame) -> None:
    subject_cols = [c for c in metadata.columns if str(c).lower() in SUBJECT_LIKE_COLUMNS]
    if subject_cols and metadata[subject_cols[0]].nunique() > 1:
        msg = (
            f"CV strategy {cv.strategy!r} ignores column {subject_cols[0]!r}: windows of one subject will be "
            "on both sides of a split, which inflates scores for cross-subject claims. "
            f"Use strategy='stratified_group_kfold' with group_key={subject_cols[0]!r} for honest cross-subject scores."
        )
        _warn(msg)


def _warn(msg: str) -> None:
    logger.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=4)


def _splitter(cv: CVConfig, stratify: bool, random_state: int, grouped: bool):
    seed = random_state if cv.shuffle else None
    match cv.strategy:
        case "kfold":
            return ms.KFold(cv.n_splits, shuffle=cv.shuffle, random_state=seed)
        case "stratified_kfold":
            return ms.StratifiedKFold(cv.n_splits, shuffle=cv.shuffle, random_state=seed)
        case "group_kfold":
            if cv.shuffle:
                return ms.GroupKFold(cv.n_splits, shuffle=True, random_state=random_state)
            return ms.GroupKFold(cv.n_splits)
        case "stratified_group_kfold":
            return ms.StratifiedGroupKFold(cv.n_splits, shuffle=cv.shuffle, random_state=seed)
        case "leave_one_group_out":
            return ms.LeaveOneGroupOut()
        case "train_test_split":
            if grouped:
                return ms.GroupShuffleSplit(n_splits=1, test_size=cv.test_size, random_state=random_state)
            if stratify:
                return ms.StratifiedShuffleSplit(n_splits=1, test_size=cv.test_size, random_state=random_state)
            return ms.ShuffleSplit(n_splits=1, test_size=cv.test_size, random_state=random_state)
    raise AssertionError(cv.strategy)  # pragma: no cover, no mutate - CVConfig restricts the strategy


def _check_splits(splits, y, groups, cv: CVConfig) -> None:
    for fold, (train, test) in enumerate(splits):
        if len(np.intersect1d(train, test)):
            raise AssertionError(f"fold {fold}: a window is on both sides of the split")  # pragma: no cover
        if groups is not None:
            shared = np.intersect1d(groups[train], groups[test])
            if len(shared):
                raise AssertionError(f"fold {fold}: groups {shared[:5]} on both sides")  # pragma: no cover
        if y is not None and len(np.unique(y[train])) < 2:
            raise CVSplitError(
                f"Fold {fold}'s training partition holds a single class, so no classifier can be fitted; "
                "use a stratified strategy or fewer folds."
            )


def grouped_holdout(groups, fraction: float, random_state: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Training and held-out rows with every group on one side, about ``fraction`` of the groups held out.

    What a network's (or a probe's) early stopping validates on inside one
    training partition: a subject on both sides would make it judge windows of
    subjects it trains on, and pick a later, more overfitted epoch than the test
    subjects warrant. ``None`` with fewer than two groups (nothing to keep
    apart); the caller then splits windows. At least one group is held out
    and at least one trained on, whatever ``fraction`` (0.6 of two groups
    holds out one, not both).
    """
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        return None
    # A count of groups, as GroupShuffleSplit rounds a fraction (up), kept inside 1 .. n_groups - 1.
    held_out = min(max(math.ceil(fraction * n_groups), 1), n_groups - 1)
    splitter = ms.GroupShuffleSplit(n_splits=1, test_size=held_out, random_state=random_state)
    train, held_out = next(splitter.split(np.arange(len(groups)), groups=groups))
    return np.sort(train), np.sort(held_out)
