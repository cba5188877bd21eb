"""The windows' metadata in a result: joined to predictions and splits, folds named by their held-out groups,
scores per group (subject, session, recording), and scores of one aggregated prediction per recording or subject.

A result keeps the metadata table the experiment was given (``sample_metadata``,
or ``epochs.metadata``), one row per window, keyed by ``SampleIndex`` like its
predictions and splits, so per-subject analyses never need the data reloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .exceptions import ConfigError
from .metrics import SCORE_PREFIXES, score_all

__all__ = [
    "AGGREGATE_METHODS",
    "aggregate_predictions",
    "aggregate_scores",
    "group_scores",
    "held_out_groups",
    "metadata_table",
    "with_metadata",
]

#: How the windows of one recording (or subject) become one prediction: see :func:`aggregate_predictions`.
AGGREGATE_METHODS = ("mean_proba", "vote", "mean")

#: Columns of the result's own tables; a metadata column of the same name is kept as ``metadata_<name>``.
_RESULT_COLUMNS = frozenset(
    {"Model", "Fold", "Seed", "SampleIndex", "Set", "y_true", "y_pred", "Metric", "Value", "HeldOut"}
)


def metadata_table(metadata: pd.DataFrame | None) -> pd.DataFrame:
    """The windows' metadata as a result keeps it: ``SampleIndex`` first, then every column (renamed where it
    would clash with the result's own), types Parquet can store."""
    if metadata is None:
        return pd.DataFrame({"SampleIndex": pd.Series([], dtype=np.int64)})
    table = metadata.reset_index(drop=True).copy()
    table.columns = [f"metadata_{c}" if str(c) in _RESULT_COLUMNS else str(c) for c in table.columns]
    for column in table.columns:
        values = table[column]
        # Parquet stores one type per column: mixed objects (a user's dicts, tuples) are kept as their text.
        if values.dtype == object and not all(v is None or isinstance(v, str) for v in values):
            table[column] = values.map(lambda v: None if v is None else str(v))
    table.insert(0, "SampleIndex", np.arange(len(table), dtype=np.int64))
    return table


def with_metadata(frame: pd.DataFrame, metadata: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (rows keyed by ``SampleIndex``) with each window's metadata columns appended."""
    if len(metadata.columns) <= 1:
        return frame.copy()
    return frame.merge(metadata, on="SampleIndex", how="left", validate="many_to_one")


def held_out_groups(splits: pd.DataFrame, metadata: pd.DataFrame, group_key: str | None) -> pd.DataFrame:
    """``Model, Fold, HeldOut``: the groups (values of ``group_key``) each fold tested on, as text."""
    columns = ["Model", "Fold", "HeldOut"]
    if group_key is None or group_key not in metadata.columns or splits.empty:
        return pd.DataFrame(columns=columns)
    test = with_metadata(splits[splits["Set"] == "test"][["Model", "Fold", "SampleIndex"]], metadata)
    labels = test.groupby(["Model", "Fold"], sort=False)[group_key].agg(
        lambda values: ", ".join(str(v) for v in sorted(pd.unique(values), key=_natural))
    )
    return labels.rename("HeldOut").reset_index()[columns]


def _natural(value) -> tuple:
    """Sort key putting S2 before S10 and 2 before 10, whatever the type."""
    text = str(value)
    digits = "".join(ch for ch in text if ch.isdigit())
    return (text.rstrip("0123456789"), int(digits) if digits else -1, text)


def _group_keys(metadata: pd.DataFrame, by: str | Sequence[str], purpose: str) -> list[str]:
    """The metadata columns of ``by`` as a list, or a :class:`ConfigError` naming the missing ones and those there."""
    keys = [by] if isinstance(by, str) else list(by)
    missing = [k for k in keys if k not in metadata.columns or k == "SampleIndex"]
    if missing:
        present = [c for c in metadata.columns if c != "SampleIndex"]
        raise ConfigError(
            f"No metadata column {', '.join(map(repr, missing))} to {purpose}; the windows' metadata has "
            f"{present or 'no columns (pass sample_metadata=... to the run, or load with a loader that sets it)'}."
        )
    return keys


def group_scores(
    predictions: pd.DataFrame,
    metadata: pd.DataFrame,
    by: str | Sequence[str],
    metrics: Sequence[str],
    classification: bool,
) -> pd.DataFrame:
    """Each model's metrics on the test predictions of each group of windows, pooled over folds.

    Returns ``Model, <by...>, Metric, Value, n_windows``. Every window is
    tested once per model (in the fold that held it out), so a group's score
    reads all its windows.

    Raises
    ------
    ConfigError
        When a column of ``by`` is not in the metadata (the columns there are listed).
    """
    keys = _group_keys(metadata, by, "group scores by")
    joined = with_metadata(predictions, metadata[["SampleIndex", *keys]])
    rows = []
    for model, part in joined.groupby("Model", sort=False):
        classes, proba_columns, probabilities = _classes_and_proba(part, classification)
        for values, group in part.groupby(keys, sort=True, dropna=False):
            truth, predicted, proba = _truth_prediction_scores(group, proba_columns)
            scores = score_all(metrics, truth, predicted, proba, classes, probabilities=probabilities)
            labels = dict(zip(keys, values if isinstance(values, tuple) else (values,), strict=True))
            rows += [
                {"Model": model, **labels, "Metric": metric, "Value": value, "n_windows": len(group)}
                for metric, value in scores.items()
            ]
    return pd.DataFrame(rows, columns=["Model", *keys, "Metric", "Value", "n_windows"])


def _labels(part: pd.DataFrame) -> list[str]:
    """A multilabel run's label names, from its prediction columns ``y_true[<label>]``; none for other tasks."""
    return [c[len("y_true[") : -1] for c in part.columns if c.startswith("y_true[") and c.endswith("]")]


def _truth_prediction_scores(rows: pd.DataFrame, proba_columns: list[str]) -> tuple:
    """``y_true, y_pred, proba`` of some prediction rows: one column each, or one per label (multilabel)."""
    proba = rows[proba_columns].to_numpy(float) if proba_columns else None
    labels = _labels(rows)
    if not labels:
        return rows["y_true"].to_numpy(), rows["y_pred"].to_numpy(), proba
    truth = rows[[f"y_true[{label}]" for label in labels]].to_numpy(int)
    return truth, rows[[f"y_pred[{label}]" for label in labels]].to_numpy(int), proba


def _classes_and_proba(part: pd.DataFrame, classification: bool) -> tuple[np.ndarray | None, list[str], bool]:
    """One model's classes, its score columns in their order and whether they hold probabilities.

    The ``proba_<class>`` columns where the model filled them, else its
    ``decision_<class>`` ones (decision values: ``False``); none when they do
    not match the classes. A multilabel run: its label names and its
    ``proba[<label>]`` (or ``decision[<label>]``) columns, none when a label
    has none.
    """
    labels = _labels(part)
    if labels:
        for probabilities, prefix in SCORE_PREFIXES.items():
            columns = [f"{prefix}[{label}]" for label in labels]
            if all(c in part.columns for c in columns) and not part[columns].isna().any(axis=None):
                return np.asarray(labels), columns, probabilities
        return np.asarray(labels), [], True
    if not classification:
        return None, [], True
    # The classes in the order of the score columns: every class of the task is some window's truth.
    classes = np.unique(part["y_true"].to_numpy())
    columns, probabilities = score_columns(part, len(classes))
    return classes, columns, probabilities


def score_columns(part: pd.DataFrame, n_classes: int) -> tuple[list[str], bool]:
    """A classifier's score columns (one per class) and whether they are probabilities: see :func:`_classes_and_proba`."""
    for probabilities, prefix in SCORE_PREFIXES.items():
        columns = [c for c in part.columns if c.startswith(f"{prefix}_")]
        # A model fills the columns of its kind; the other kind's are empty where another model filled them.
        if len(columns) == n_classes and part[columns].notna().any(axis=None):
            return columns, probabilities
    columns = [c for c in part.columns if c.startswith("proba_")]
    return (columns if len(columns) == n_classes else []), True


def _check_groups_held_out(splits: pd.DataFrame, metadata: pd.DataFrame, keys: list[str]) -> None:
    """Refuse to aggregate a group that some fold tested on while training on other windows of it."""
    if splits.empty:
        return
    sides = with_metadata(splits[["Model", "Fold", "SampleIndex", "Set"]], metadata[["SampleIndex", *keys]])
    both = sides.groupby(["Model", "Fold", *keys], sort=True, dropna=False)["Set"].nunique()
    leaked = both[both > 1]
    if len(leaked):
        model, fold, *values = leaked.index[0]
        group = ", ".join(f"{k}={v!r}" for k, v in zip(keys, values, strict=True))
        raise ConfigError(
            f"Model {model!r}, fold {fold}: the windows of {group} are in both its training and its test partition "
            f"({len(leaked)} such group(s) over all models and folds), so a prediction per group would score "
            "what the model was trained on. Aggregate by groups the CV keeps apart: run with a group strategy "
            "whose group_key holds these groups (e.g. group_key='Subject' for per-recording or per-subject scores)."
        )


def aggregate_predictions(
    predictions: pd.DataFrame,
    metadata: pd.DataFrame,
    splits: pd.DataFrame,
    by: str | Sequence[str],
    method: str | None,
    classification: bool,
) -> pd.DataFrame:
    """One prediction per model, fold and group of windows (recording, subject), from its windows' predictions.

    Aggregation stays within each fold: a group is predicted from the
    windows one model tested in one fold. A group whose windows a fold used
    both for training and for testing (a CV that does not keep these groups
    apart) is refused, since its prediction would score training data.

    Parameters
    ----------
    predictions, metadata, splits : DataFrame
        The result's test predictions, windows' metadata and splits.
    by : str | list of str
        Metadata column(s) defining the groups (``"Subject"``, ``["Subject", "Session", "Run"]``).
    method : {"mean_proba", "vote", "mean"} | None
        ``"mean_proba"``: the mean of the windows' class probabilities
        (decision values for a model without probabilities), predicting
        their argmax. ``"vote"``: the class most windows predict, a tie
        going to the first of the tied classes in sorted order; the
        ``proba_`` columns then hold each class's share of the votes.
        ``"mean"`` (regression): the mean predicted value. ``None``:
        ``"mean_proba"`` for classification, ``"mean"`` for regression.
        Multilabel predictions (``y_true[<label>]`` columns) are aggregated
        label by label, as binary targets: the mean of a label's probabilities
        (or decision values) predicts 1 from 0.5 up; a vote predicts 1 where
        more than half of the windows do.
    classification : bool
        Whether the targets are classes (multilabel included).

    Returns
    -------
    DataFrame
        ``Model, Fold, <by...>, y_true, y_pred, [proba_<class> ...], n_windows``.

    Raises
    ------
    ConfigError
        For an unknown method or one of the other task, a missing column,
        a group with windows on both sides of a fold, a group whose windows
        have different targets, or ``"mean_proba"`` for a model without
        probabilities.
    """
    method = method or ("mean_proba" if classification else "mean")
    allowed = ("mean_proba", "vote") if classification else ("mean",)
    if method not in allowed:
        task = "classification" if classification else "regression"
        raise ConfigError(
            f"Aggregation method {method!r} is not one for {task}; use one of {', '.join(map(repr, allowed))}."
        )
    keys = _group_keys(metadata, by, "aggregate predictions by")
    _check_groups_held_out(splits, metadata, keys)
    joined = with_metadata(predictions, metadata[["SampleIndex", *keys]])
    if _labels(joined):
        return _aggregate_labels(joined, keys, method)
    frames = []
    for model, part in joined.groupby("Model", sort=False):
        classes, proba_columns, _ = _classes_and_proba(part, classification)
        if method == "mean_proba" and (not proba_columns or part[proba_columns].isna().any(axis=None)):
            raise ConfigError(
                f"Model {model!r} has no class probabilities (or decision values) for every window, so "
                "method='mean_proba' cannot average them; use method='vote'."
            )
        grouped = part.groupby(["Fold", *keys], sort=True, dropna=False)
        truth = grouped["y_true"].agg(["first", "nunique"])
        if (truth["nunique"] > 1).any():
            where = truth.index[truth["nunique"] > 1][0]
            group = ", ".join(f"{k}={v!r}" for k, v in zip(keys, where[1:], strict=True))
            raise ConfigError(
                f"The windows of {group} have different targets, and one prediction per group is scored against "
                "one target; aggregate by a column the target is constant in (a per-recording or per-subject label)."
            )
        table = pd.DataFrame({"y_true": truth["first"]})
        if method == "mean":
            table["y_pred"] = grouped["y_pred"].mean()
        elif method == "mean_proba":
            mean = grouped[proba_columns].mean()
            table["y_pred"] = classes[mean.to_numpy().argmax(axis=1)]
            table[proba_columns] = mean
        else:
            votes = pd.DataFrame(
                {f"proba_{c}": (part["y_pred"] == c).astype(float) for c in classes}, index=part.index
            ).groupby([part[k] for k in ["Fold", *keys]], sort=True, dropna=False)
            shares = votes.mean()
            # argmax takes the first of the largest counts: ties go to the first of the sorted classes.
            table["y_pred"] = classes[shares.to_numpy().argmax(axis=1)]
            table[list(shares.columns)] = shares
        table["n_windows"] = grouped.size()
        frames.append(table.reset_index().assign(Model=model))
    columns = ["Model", "Fold", *keys]
    if not frames:
        return pd.DataFrame(columns=[*columns, "y_true", "y_pred", "n_windows"])
    out = pd.concat(frames, ignore_index=True)
    return out[columns + [c for c in out.columns if c not in columns]]


def _aggregate_labels(joined: pd.DataFrame, keys: list[str], method: str) -> pd.DataFrame:
    """:func:`aggregate_predictions` of a multilabel run: label by label, as a binary target each.

    ``"mean_proba"`` averages each label's probability (or decision value)
    and predicts 1 from 0.5 up, as the window-level prediction does;
    ``"vote"`` predicts 1 where more than half of the windows do (a tie goes
    to 0, the first of the sorted values), each label's ``proba[<label>]``
    then holding its share of votes for 1.
    """
    labels = _labels(joined)
    truth_columns = [f"y_true[{label}]" for label in labels]
    predicted_columns = [f"y_pred[{label}]" for label in labels]
    frames = []
    for model, part in joined.groupby("Model", sort=False):
        # Probabilities, else decision values: a mean keeps their kind; a vote's shares go to proba[<label>].
        _, proba_columns, _ = _classes_and_proba(part, True)
        grouped = part.groupby(["Fold", *keys], sort=True, dropna=False)
        varying = grouped[truth_columns].nunique().max(axis=1) > 1
        if varying.any():
            group = ", ".join(f"{k}={v!r}" for k, v in zip(keys, varying.index[varying][0][1:], strict=True))
            raise ConfigError(
                f"The windows of {group} have different labels, and one prediction per group is scored against one "
                "set of labels; aggregate by a column the labels are constant in (a per-recording or per-subject "
                "label)."
            )
        table = grouped[truth_columns].first()
        if method == "mean_proba":
            if not proba_columns:
                raise ConfigError(
                    f"Model {model!r} has no label probabilities (or decision values) for every window, so "
                    "method='mean_proba' cannot average them; use method='vote'."
                )
            mean = grouped[proba_columns].mean()
            table[proba_columns] = mean
            table[predicted_columns] = (mean.to_numpy() >= 0.5).astype(int)
        else:
            shares = grouped[predicted_columns].mean()
            table[[f"proba[{label}]" for label in labels]] = shares.to_numpy()
            table[predicted_columns] = (shares.to_numpy() > 0.5).astype(int)
        table["n_windows"] = grouped.size()
        frames.append(table.reset_index().assign(Model=model))
    out = pd.concat(frames, ignore_index=True)
    columns = ["Model", "Fold", *keys]
    return out[columns + [c for c in out.columns if c not in columns]]


def aggregate_scores(
    predictions: pd.DataFrame,
    metadata: pd.DataFrame,
    splits: pd.DataFrame,
    by: str | Sequence[str],
    method: str | None,
    metrics: Sequence[str],
    classification: bool,
) -> pd.DataFrame:
    """The metrics of the aggregated predictions (:func:`aggregate_predictions`) of each model and fold.

    Returns ``Model, Fold, Metric, Value, n_groups, n_windows``: each fold
    scored on one prediction per group it tested, as clinical benchmarks
    score per recording or subject.
    """
    table = aggregate_predictions(predictions, metadata, splits, by, method, classification)
    rows = []
    for model, part in table.groupby("Model", sort=False):
        # The columns from what the aggregation wrote: mean probabilities or decision values, or a vote's shares.
        if _labels(part) or not classification:
            classes, proba_columns, probabilities = _classes_and_proba(part, classification)
        else:
            # The classes from every window: a fold may test groups of some classes only.
            classes = np.unique(predictions.loc[predictions["Model"] == model, "y_true"].to_numpy())
            proba_columns, probabilities = score_columns(part, len(classes))
        for fold, rows_of_fold in part.groupby("Fold", sort=True):
            truth, predicted, proba = _truth_prediction_scores(rows_of_fold, proba_columns)
            scores = score_all(metrics, truth, predicted, proba, classes, probabilities=probabilities)
            rows += [
                {
                    "Model": model,
                    "Fold": fold,
                    "Metric": metric,
                    "Value": value,
                    "n_groups": len(rows_of_fold),
                    "n_windows": int(rows_of_fold["n_windows"].sum()),
                }
                for metric, value in scores.items()
            ]
    return pd.DataFrame(rows, columns=["Model", "Fold", "Metric", "Value", "n_groups", "n_windows"])
