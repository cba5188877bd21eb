"""The windows' metadata in a result: joined to predictions and splits, folds named by their held-out groups,
scores per group (subject, session, recording).

A result keeps the metadata table the experiment was given (``sample_metadata``,
or ``epochs.metadata``), one row per window, keyed by ``SampleIndex`` like its
predictions and splits, so per-subject analyses never need the data reloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .exceptions import ConfigError
from .metrics import score_all

__all__ = ["group_scores", "held_out_groups", "metadata_table", "with_metadata"]

#: Columns of the result's own tables; a metadata column of the same name is kept as ``metadata_<name>``.
_RESULT_COLUMNS = frozenset({"Model", "Fold", "SampleIndex", "Set", "y_true", "y_pred", "Metric", "Value", "HeldOut"})


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
    keys = [by] if isinstance(by, str) else list(by)
    missing = [k for k in keys if k not in metadata.columns or k == "SampleIndex"]
    if missing:
        present = [c for c in metadata.columns if c != "SampleIndex"]
        raise ConfigError(
            f"No metadata column {', '.join(map(repr, missing))} to group scores by; the windows' metadata has "
            f"{present or 'no columns (pass sample_metadata=... to the run, or load with a loader that sets it)'}."
        )
    joined = with_metadata(predictions, metadata[["SampleIndex", *keys]])
    rows = []
    for model, part in joined.groupby("Model", sort=False):
        proba_columns = [c for c in part.columns if c.startswith("proba_")] if classification else []
        # The classes in the order of the proba columns: every class of the task is some window's truth.
        classes = np.unique(part["y_true"].to_numpy()) if classification else None
        if classes is not None and len(classes) != len(proba_columns):
            proba_columns = []
        for values, group in part.groupby(keys, sort=True, dropna=False):
            proba = group[proba_columns].to_numpy() if proba_columns else None
            scores = score_all(metrics, group["y_true"].to_numpy(), group["y_pred"].to_numpy(), proba, classes)
            labels = dict(zip(keys, values if isinstance(values, tuple) else (values,), strict=True))
            rows += [
                {"Model": model, **labels, "Metric": metric, "Value": value, "n_windows": len(group)}
                for metric, value in scores.items()
            ]
    return pd.DataFrame(rows, columns=["Model", *keys, "Metric", "Value", "n_windows"])
