"""What an experiment returns, and how it is saved in open formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

__all__ = ["ExperimentResult"]

_TABLES = ("scores", "predictions", "splits", "artifacts")
SCORE_COLUMNS = ["Model", "Fold", "Metric", "Value"]
ARTIFACT_COLUMNS = ["Model", "Fold", "ArtifactType", "ArtifactKey", "ArtifactValue"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class ExperimentResult:
    """Per-fold scores, predictions, splits and artifacts of an experiment.

    Parameters
    ----------
    scores : DataFrame
        Columns ``Model, Fold, Metric, Value``.
    predictions : DataFrame
        Columns ``Model, Fold, SampleIndex, y_true, y_pred`` and, for
        classifiers, one ``proba_<class>`` column per class.
    splits : DataFrame
        Columns ``Model, Fold, SampleIndex, Set`` (``train`` or ``test``).
    artifacts : DataFrame
        Columns ``Model, Fold, ArtifactType, ArtifactKey, ArtifactValue``.
        ``Fold == -1`` marks a label-free step run once on all windows
        (embedding extraction, input adaptation).
    config : dict
        The resolved experiment config.
    meta : dict
        Software versions, timings, signal info.
    """

    def __init__(self, scores, predictions, splits, artifacts, config: dict, meta: dict | None = None):
        self.scores = scores
        self.predictions = predictions
        self.splits = splits
        self.artifacts = artifacts
        self.config = config
        self.meta = meta or {}

    def __repr__(self) -> str:
        models = list(dict.fromkeys(self.scores["Model"])) if len(self.scores) else []
        n_folds = self.scores["Fold"].nunique() if len(self.scores) else 0
        return f"<ExperimentResult | {len(models)} model(s) {models}, {n_folds} fold(s)>"

    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation across folds, one row per model and metric."""
        grouped = self.scores.groupby(["Model", "Metric"], sort=False)["Value"]
        table = grouped.agg(mean="mean", std="std", n_folds="count").reset_index()
        return table

    def summary_table(self) -> pd.DataFrame:
        """Readable wide table: one row per model, ``mean ± std`` per metric."""
        summ = self.summary()
        summ["value"] = [f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}" for m, s in zip(summ["mean"], summ["std"])]
        wide = summ.pivot(index="Model", columns="Metric", values="value")
        order = list(dict.fromkeys(summ["Model"]))
        metrics = list(dict.fromkeys(summ["Metric"]))
        return wide.loc[order, metrics]

    def get_detailed_scores(self) -> pd.DataFrame:
        """Every score: columns ``Model, Fold, Metric, Value``."""
        return self.scores.copy()

    def get_predictions(self) -> pd.DataFrame:
        """Test-set predictions of every fold."""
        return self.predictions.copy()

    def get_splits(self) -> pd.DataFrame:
        """Which window was in train or test, per model and fold."""
        return self.splits.copy()

    def get_model_artifacts(self, artifact_type: str | None = None, model: str | None = None) -> pd.DataFrame:
        """Artifacts of the models (embedding cache statistics, adaptations, ...).

        Parameters
        ----------
        artifact_type : str | None
            Keep one type, e.g. ``"embedding_cache"`` or ``"input_adaptation"``.
        model : str | None
            Keep one model.
        """
        table = self.artifacts
        if artifact_type is not None:
            table = table[table["ArtifactType"] == artifact_type]
        if model is not None:
            table = table[table["Model"] == model]
        return table.reset_index(drop=True).copy()

    def save(self, directory: str | Path) -> Path:
        """Write tables as Parquet, the config as YAML and metadata as JSON."""
        out = Path(directory).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        for name in _TABLES:
            table = getattr(self, name).copy()
            if name == "artifacts":
                table["ArtifactValue"] = [json.dumps(_jsonable(v)) for v in table["ArtifactValue"]]
            table.to_parquet(out / f"{name}.parquet", index=False)
        (out / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        (out / "meta.json").write_text(json.dumps(_jsonable(self.meta), indent=2))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> ExperimentResult:
        """Read a directory written by :meth:`save`."""
        src = Path(directory).expanduser()
        missing = [f"{n}.parquet" for n in _TABLES if not (src / f"{n}.parquet").exists()]
        if missing:
            raise FileNotFoundError(f"{src} is not a saved neurofm result: missing {missing}.")
        tables = {n: pd.read_parquet(src / f"{n}.parquet") for n in _TABLES}
        tables["artifacts"]["ArtifactValue"] = [json.loads(v) for v in tables["artifacts"]["ArtifactValue"]]
        config = yaml.safe_load((src / "config.yaml").read_text())
        meta = json.loads((src / "meta.json").read_text()) if (src / "meta.json").exists() else {}
        return cls(config=config, meta=meta, **tables)
