"""Statistics of a result that explain themselves: chance levels (by permutation, else of a label-blind predictor),
paired comparisons, and the warnings a reader of fold scores needs (tiny test folds, more features than windows)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .group_scores import score_columns
from .metrics import SCORE_COLUMN_STARTS, score_all

__all__ = ["Comparison", "chance_table", "label_blind_scores", "score_warnings"]

#: Fewer test windows than this in a fold make its scores coarse (one window moves accuracy by more than 5 %).
SMALL_TEST_FOLD = 20

_PERMUTATION = "label permutation{n}: the mean score over permuted labels, and the p-value of the observed score"
_LABEL_BLIND = (
    "label-blind predictor (this model's labels were not permuted; set n_permutations, and permute_trainable for "
    "trainable models, for a p-value): the score of always predicting the most frequent class with the class "
    "frequencies as probabilities (regression: the mean)"
)


def label_blind_scores(predictions: pd.DataFrame, metrics: list[str]) -> dict[str, float]:
    """The metrics of a predictor that never looks at the windows, on these test predictions.

    Classification: always the most frequent class, with the classes'
    frequencies as probabilities (balanced accuracy ``1/k``, ROC AUC 0.5,
    accuracy the majority's share, kappa 0). Regression: always the mean of
    the targets (R2 0, MAE and RMSE of the spread).
    """
    y_true = predictions["y_true"].to_numpy()
    proba_columns = [c for c in predictions.columns if c.startswith(SCORE_COLUMN_STARTS)]
    # Regression targets are numbers and have no probability columns; a classifier's may lack them too (no
    # predict_proba), so the labels' type decides, not the columns.
    if not proba_columns and y_true.dtype.kind in "fc":
        constant = np.full(len(y_true), float(np.mean(y_true)))
        return score_all(metrics, y_true, constant)
    classes, counts = np.unique(y_true, return_counts=True)
    y_pred = np.full(len(y_true), classes[np.argmax(counts)], dtype=classes.dtype)
    # Scored as the model is: a model of decision values has no calibration to compare with.
    proba_columns, probabilities = score_columns(predictions, len(classes))
    proba = np.tile(counts / counts.sum(), (len(y_true), 1)) if proba_columns else None
    return score_all(metrics, y_true, y_pred, proba, classes, probabilities=probabilities)


def chance_table(
    scores: pd.DataFrame, predictions: pd.DataFrame, permutations: pd.DataFrame, metrics: list[str], n: int
) -> pd.DataFrame:
    """``Model, Metric, observed, chance_mean, p_value, method``: by permutation for the models the run permuted,
    else the label-blind predictor's score (p-value NaN); each row's ``method`` says which."""
    columns = ["Model", "Metric", "observed", "chance_mean", "p_value", "method"]
    method = _PERMUTATION.format(n=f" ({n} permutations)" if n else "")
    parts = [permutations.assign(method=method)] if not permutations.empty else []
    permuted = set(permutations["Model"])
    rows = []
    if "Model" in predictions:
        for model, part in predictions.groupby("Model", sort=False):
            if model in permuted:
                continue
            observed = scores[scores["Model"] == model].groupby("Metric", sort=False)["Value"].mean()
            rows += [
                {"Model": model, "Metric": metric, "observed": observed.get(metric, np.nan), "chance_mean": value}
                | {"p_value": np.nan, "method": _LABEL_BLIND}
                for metric, value in label_blind_scores(part, metrics).items()
            ]
    parts.append(pd.DataFrame(rows, columns=columns))
    return pd.concat([part[columns] for part in parts if not part.empty] or [parts[-1]], ignore_index=True)


class Comparison(dict):
    """A paired comparison of two models on the same folds: a dict of its numbers that prints as an explained table.

    Keys: ``metric, model_a, model_b, n_folds, differences, mean_difference,
    wilcoxon_p, corrected_t, corrected_t_p`` (see
    :meth:`neurofm.ExperimentResult.compare`).
    """

    _MEANINGS = {
        "n_folds": "folds both models were scored on",
        "mean_difference": "mean over folds of a - b (positive: a scores higher)",
        "wilcoxon_p": "Wilcoxon signed-rank test of the fold differences (two-sided)",
        "corrected_t": "t of the corrected resampled t-test (Nadeau and Bengio 2003), for overlapping training sets",
        "corrected_t_p": "its two-sided p-value",
    }

    def to_frame(self) -> pd.DataFrame:
        """``quantity, value, meaning``: one row per number, what it is in words."""
        return pd.DataFrame(
            [{"quantity": key, "value": self[key], "meaning": meaning} for key, meaning in self._MEANINGS.items()],
            columns=["quantity", "value", "meaning"],
        )

    def __repr__(self) -> str:
        head = f"{self['model_a']} vs {self['model_b']} on {self['metric']}, paired over folds"
        return head + "\n" + self.to_frame().to_string(index=False)


def score_warnings(splits: pd.DataFrame, artifacts: pd.DataFrame) -> list[str]:
    """What a reader of these fold scores should know: test folds too small to score finely, heads fitted on more
    features than training windows."""
    warnings = []
    test = splits[splits["Set"] == "test"].groupby(["Model", "Fold"]).size()
    if len(test) and test.min() < SMALL_TEST_FOLD:
        smallest = int(test.min())
        warnings.append(
            f"Test folds hold as few as {smallest} windows: one window moves a fold's accuracy by "
            f"{100 / smallest:.0f} points, so fold scores are coarse and their spread large. Prefer fewer, larger "
            "folds, or read the pooled per-group scores."
        )
    train = splits[splits["Set"] == "train"].groupby("Model")["Fold"].value_counts().groupby("Model").mean()
    dims = artifacts[(artifacts["ArtifactType"] == "backbone") & (artifacts["ArtifactKey"] == "embedding_dim")]
    for model, dim in zip(dims["Model"], dims["ArtifactValue"], strict=True):
        n_train = train.get(model)
        if n_train is not None and dim is not None and float(dim) > n_train:
            warnings.append(
                f"The head of {model} was fitted on {int(dim)} features from about {int(n_train)} training windows "
                "per fold: more features than windows, which a head overfits without strong regularisation. Pool "
                "to fewer features (pooling='mean') or regularise the head."
            )
    return warnings
