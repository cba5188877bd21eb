"""The units of work of an experiment, picklable for any engine: extraction shards, (model, fold) fits, permutations.

Each task carries what it needs (an estimator, index arrays); what every task
reads (features, labels, groups) travels once per worker as
:class:`SharedInputs`. A fold's outcome is recorded as JSON the moment it
finishes (:class:`FoldOutcome`), so a resumed run reads it back instead of
fitting again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from .estimators.classical import takes_groups
from .estimators.ridge_probe import output_predictions, ridge_permutation_scores
from .exceptions import ModelFitError, NeuroFMError
from .export import save_fine_tuned
from .metrics import SCORE_PREFIXES, score
from .protocols import TRAINABLE_METHODS, NeuralTrainable
from .utils.files import jsonable

__all__ = [
    "ExtractionTask",
    "FoldOutcome",
    "FoldTask",
    "PermutationTask",
    "RefitTask",
    "SharedInputs",
    "computes_on_gpu",
    "decode_means",
    "encode_outcome",
    "permute_labels",
    "ridge_permutations",
    "run_extraction",
    "run_fold",
    "run_permutation",
    "run_refit",
    "split_frame",
    "trainable_artifacts",
    "trainable_estimator",
]


@dataclass
class ExtractionTask:
    """One extraction shard: a fitted embedder (without its backbone) and a range of windows. Picklable."""

    embedder: Any
    source: Any
    recordings: Any = None


def computes_on_gpu(task: Any) -> bool:
    """Whether a fold or permutation task trains a backbone that takes a GPU where it finds one."""
    return bool(getattr(task, "trainable", False)) and task.estimator.config.device.device != "cpu"


def run_extraction(task: ExtractionTask) -> tuple[np.ndarray, int, int, int, tuple[str, str]]:
    """Embed a shard where it runs; also says on which device, under which cache key (both resolved there)."""
    embedder = task.embedder
    return (*embedder.embed_source(task.source, task.recordings), (embedder.device_, embedder.fingerprint_))


def variant_key(model_name: str, seed: int) -> str:
    """How one seed of a model is named where runs keep things per model (features, records): seed 0 by the
    model's name alone, as before seeds existed, so its records and cache keys stay those of a one-seed run."""
    return model_name if seed == 0 else f"{model_name}\x00seed-{seed}"


@dataclass
class SharedInputs:
    """What every fold and permutation task reads: features by model name (:func:`variant_key` for a seed other
    than 0), labels, groups. Sent once per worker."""

    features: dict[str, np.ndarray]
    y: np.ndarray
    groups: np.ndarray | None
    recordings: np.ndarray | None = None  # each window's recording, where known (trainable models normalise by it)


@dataclass
class FoldTask:
    """One (model, fold): fit on the training partition, score the test partition. Picklable."""

    model_name: str
    fold: int
    estimator: Any
    trainable: bool
    train: np.ndarray
    test: np.ndarray
    classes: np.ndarray | None
    metrics: tuple[str, ...]
    prepared: Any = None  # a trainable model's checked plan (PreparedInput): its fit plans nothing again
    seed: int = 0  # which of the experiment's n_seeds runs of the model this is

    @property
    def features_key(self) -> str:
        """The key of this task's features in :class:`SharedInputs`."""
        return variant_key(self.model_name, self.seed)


@dataclass
class FoldOutcome:
    scores: dict[str, float]
    predictions: pd.DataFrame | None
    artifacts: list[tuple[int, str, str, Any]]
    seconds: float

    def to_record(self) -> dict[str, Any]:
        """JSON-ready: a progress record (floats keep every bit; columns keep their dtype)."""
        frame = self.predictions
        columns = None if frame is None else [[name, str(frame[name].dtype), frame[name].tolist()] for name in frame]
        return {
            "scores": self.scores,
            "predictions": columns,
            "artifacts": [list(a) for a in self.artifacts],
            "seconds": self.seconds,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FoldOutcome:
        frame = None
        if record["predictions"] is not None:
            frame = pd.DataFrame(
                {name: pd.Series(values, dtype=dtype) for name, dtype, values in record["predictions"]}
            )
        return cls(
            {k: float(v) for k, v in record["scores"].items()},
            frame,
            [tuple(a) for a in record["artifacts"]],
            float(record["seconds"]),
        )


def encode_outcome(result: Any) -> Any:
    """A fold outcome or a permutation's mean scores as a JSON-ready record."""
    return result.to_record() if isinstance(result, FoldOutcome) else result


def decode_means(record: dict[str, Any]) -> dict[str, float]:
    return {metric: float(value) for metric, value in record.items()}


def _fit(estimator, trainable: bool, X, y, groups, recordings=None, prepared=None):
    """Fit on one training partition; a trainable model's validation split comes from it, by group, as does the
    inner CV of an estimator whose fit takes ``groups``."""
    if trainable:
        return estimator.fit(X, y, groups=groups, recordings=recordings, prepared=prepared)
    if groups is not None and takes_groups(estimator):
        return estimator.fit(X, y, groups=groups)
    return estimator.fit(X, y)


def fit_and_score(
    estimator,
    trainable,
    features,
    y,
    groups,
    train,
    test,
    classes,
    metrics,
    recordings=None,
    prepared=None,
    timings: dict[str, float] | None = None,
):
    """Fit on ``train``, score ``test``: ``(estimator, scores, y_pred, proba)``, with NaN scores for a failed training.

    A trainable model gets the windows' ``recordings`` (each side's own: see ``NeuralFineTuner.fit``) and its
    checked plan (``prepared``); its ``features`` are its windows, adapted once per run where they can be.
    ``timings``, when given, gets the seconds of the fit (``"fit_seconds"``)."""
    recordings = recordings if trainable else None
    fit_started = time.perf_counter()
    estimator = _fit(
        estimator,
        trainable,
        features[train],
        y[train],
        None if groups is None else groups[train],
        None if recordings is None else recordings[train],
        prepared,
    )
    if timings is not None:
        timings["fit_seconds"] = time.perf_counter() - fit_started
    if trainable and estimator.failed_:
        return estimator, dict.fromkeys(metrics, float("nan")), None, None, False
    y_pred, proba, probabilities = _predict(
        estimator, features[test], classes, None if recordings is None else recordings[test]
    )
    scores = {metric: score(metric, y[test], y_pred, proba, classes, probabilities=probabilities) for metric in metrics}
    return estimator, scores, y_pred, proba, probabilities


def run_fold(task: FoldTask, shared: SharedInputs) -> FoldOutcome:
    started = time.perf_counter()
    y = shared.y
    timings: dict[str, float] = {}
    try:
        estimator, scores, y_pred, proba, probabilities = fit_and_score(
            task.estimator,
            task.trainable,
            shared.features[task.features_key],
            y,
            shared.groups,
            task.train,
            task.test,
            task.classes,
            task.metrics,
            shared.recordings,
            task.prepared,
            timings,
        )
    except NeuroFMError:
        raise
    except Exception as exc:
        where = f"on fold {task.fold}" + (f" (seed {task.seed})" if task.seed else "")
        raise _fit_failed(task.model_name, where, "Folds that finished are kept", exc) from exc
    # Any estimator that reports its training gets its artifacts recorded, whatever config brought it.
    artifacts = trainable_artifacts(estimator, task.fold, task.model_name)
    # What the fit itself took (a frozen backbone's head, a classical pipeline, a training), for every model.
    artifacts.append((task.fold, "timing", "fit_seconds", round(timings["fit_seconds"], 4)))
    frame = None
    if y_pred is not None:
        frame = prediction_frame(
            task.model_name, task.fold, task.test, y[task.test], y_pred, proba, task.classes, probabilities
        )
    return FoldOutcome(scores, frame, artifacts, time.perf_counter() - started)


@dataclass
class PermutationTask:
    """Every fold of one label permutation. Picklable."""

    estimator: Any
    trainable: bool
    y: np.ndarray  # the shuffled labels
    splits: list[tuple[np.ndarray, np.ndarray]]
    classes: np.ndarray | None
    metrics: tuple[str, ...]
    prepared: Any = None  # as in FoldTask


def run_permutation(task: PermutationTask, shared: SharedInputs) -> dict[str, float]:
    """Mean score over folds of the estimator refitted on shuffled labels."""
    [features] = shared.features.values()
    fold_scores: dict[str, list[float]] = {metric: [] for metric in task.metrics}
    for train, test in task.splits:
        _, scores, *_ = fit_and_score(
            clone(task.estimator),
            task.trainable,
            features,
            task.y,
            shared.groups,
            train,
            test,
            task.classes,
            task.metrics,
            shared.recordings,
            task.prepared,
        )
        for metric, value in scores.items():
            fold_scores[metric].append(value)
    return {metric: float(np.nanmean(values)) for metric, values in fold_scores.items()}


@dataclass
class RefitTask:
    """One model fitted once more on every window, after the folds (``ExperimentConfig.refit``). Picklable."""

    model_name: str
    estimator: Any  # unfitted
    trainable: bool
    prepared: Any = None  # as in FoldTask
    folder: str | None = None  # where a trainable model's checkpoint is written, by the worker that trains it


def run_refit(task: RefitTask, shared: SharedInputs) -> Any:
    """The estimator fitted on every window (a trainable model takes its validation split from them, by group).

    Nothing is scored: the model has seen every window. Scores stay those of the folds. A trainable model is
    written to ``task.folder`` where it trained (its weights never travel through the engine, and may live on a
    GPU the caller lacks); what it trained on is returned instead.
    """
    features = shared.features[task.model_name]
    try:
        estimator = _fit(
            task.estimator,
            task.trainable,
            features,
            shared.y,
            shared.groups,
            shared.recordings if task.trainable else None,
            task.prepared,
        )
        if task.trainable and task.folder is not None:
            return save_fine_tuned(estimator, Path(task.folder))
        return estimator
    except NeuroFMError:
        raise
    except Exception as exc:
        raise _fit_failed(task.model_name, "in its refit on all windows", "Its folds are kept", exc) from exc


def _fit_failed(model_name: str, where: str, kept: str, exc: Exception) -> ModelFitError:
    """An estimator's own error, named with the model and where it failed; neurofm's errors pass as they are."""
    cause = f"{type(exc).__name__}: {str(exc).rstrip('.')}"
    return ModelFitError(
        f"Model {model_name!r} failed {where}: {cause}. {kept}; with output_dir set, running again resumes after them."
    )


def _predict(estimator, X, classes, recordings=None):
    """``(y_pred, scores, probabilities)``: the predictions, the class (or label) scores in the task's columns
    and whether these are ``predict_proba``'s probabilities (``False``: decision values standing in for them)."""
    given = {} if recordings is None else {"recordings": recordings}  # only trainable models take them
    y_pred = estimator.predict(X, **given)
    if classes is None:
        return y_pred, None, False
    if np.ndim(y_pred) == 2:  # task="multilabel": ``classes`` are the label names
        return np.asarray(y_pred).astype(np.int64), *_label_outputs(estimator, X, given)
    proba = None
    est_classes = getattr(estimator, "classes_", None)
    if hasattr(estimator, "predict_proba"):
        try:
            proba_raw = estimator.predict_proba(X, **given)
        except (AttributeError, NotImplementedError):
            proba_raw = None
    else:
        proba_raw = None
    probabilities = proba_raw is not None
    if proba_raw is None and hasattr(estimator, "decision_function"):
        dec = np.asarray(estimator.decision_function(X))
        proba_raw = np.column_stack([-dec, dec]) if dec.ndim == 1 else dec
    if proba_raw is not None and est_classes is not None:
        proba = class_columns(proba_raw, est_classes, classes)
    return y_pred, proba, probabilities and proba is not None


def label_scores(estimator, X, given: dict | None = None) -> np.ndarray | None:
    """A multilabel model's (n, n_labels) scores: each label's probability of 1, else its decision values.

    A ``MultiOutputClassifier`` gives one (n, 2) probability array per label
    (columns in its ``classes_``); a label whose training windows held one
    value only gets that value's certainty (0 or 1) in every window.
    """
    return _label_outputs(estimator, X, given)[0]


def _label_outputs(estimator, X, given: dict | None = None) -> tuple[np.ndarray | None, bool]:
    """:func:`label_scores` and whether they are probabilities (``False``: decision values)."""
    given = given or {}
    if hasattr(estimator, "predict_proba"):
        try:
            raw = estimator.predict_proba(X, **given)
        except (AttributeError, NotImplementedError):
            raw = None
        if isinstance(raw, list):
            fitted = getattr(estimator, "classes_", None)
            fitted = fitted if isinstance(fitted, list) and len(fitted) == len(raw) else [None] * len(raw)
            columns = []
            for values, seen in zip(raw, fitted, strict=True):
                seen = np.asarray([0, 1] if seen is None else seen).astype(int).tolist()
                columns.append(values[:, seen.index(1)] if 1 in seen else np.zeros(len(values)))
            return np.column_stack(columns), True
        if raw is not None:
            return np.asarray(raw, dtype=float), True
    if hasattr(estimator, "decision_function"):
        return np.asarray(estimator.decision_function(X), dtype=float), False
    return None, False


def class_columns(values: np.ndarray, fitted_classes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per-class columns of a model fitted on ``fitted_classes``, in the task's ``classes`` (absent ones zero)."""
    out = np.zeros((len(values), len(classes)))
    out[:, np.searchsorted(classes, fitted_classes)] = values
    return out


def ridge_permutations(
    probe: Any,
    features: np.ndarray,
    permuted: list[np.ndarray],
    splits: list[tuple[np.ndarray, np.ndarray]],
    classes: np.ndarray | None,
    metrics: tuple[str, ...],
    groups: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Each permutation's mean fold scores for a ridge probe, in closed form (what :func:`run_permutation` gives).

    The fitted probe's outputs are scored as :func:`fit_and_score` scores a
    refitted probe's (predictions from the outputs, the outputs as decision
    values in the task's class columns, or as each label's score for
    task="multilabel"). ``accuracy``, ``balanced_accuracy`` and a binary
    task's ``roc_auc`` are computed here for a whole stack of permutations
    on class codes, to the bit what :func:`~neurofm.metrics.score` gives
    (:func:`_label_metrics`, :func:`_binary_roc_aucs`), without
    scikit-learn's input checks, which would cost more than the fit; every
    other metric goes through :func:`~neurofm.metrics.score`, one
    permutation at a time. ``groups`` (the run's, all windows) group the
    inner folds of each fold's training windows, as a refit's ``fit`` gets them.
    """
    if not permuted:
        return []
    labels = np.stack([np.asarray(y) for y in permuted])
    classification = probe.task == "classification"
    # Classification is fitted and scored on codes of the task's classes: the same fits (targets only compare
    # labels with classes), without sorting strings in every fold.
    fitted = np.searchsorted(classes, labels) if classification else labels
    if classification and not np.array_equal(classes[np.minimum(fitted, len(classes) - 1)], labels):
        strangers = sorted(set(np.unique(labels).tolist()) - set(classes.tolist()))
        raise NeuroFMError(
            f"Permuted labels {strangers[:5]} are not among the classes {classes.tolist()}: pass the task's classes."
        )

    # A ridge probe's outputs are decision values (it has no predict_proba), as its refit's predictions say.
    def scorer(rows, fitted_classes, outputs, test):
        truth = fitted[rows][:, test]
        if not classification:  # multilabel: each label's output is its score, as label_scores reads it
            y_pred = output_predictions(probe.task, None, outputs)
            given = outputs if probe.task == "multilabel" else [None] * len(rows)
            return {
                metric: [
                    score(metric, t, p, g, classes, probabilities=False)
                    for t, p, g in zip(truth, y_pred, given, strict=True)
                ]
                for metric in metrics
            }
        columns = np.zeros(outputs.shape[:-1] + (len(classes),))
        columns[..., fitted_classes] = outputs  # class_columns, on codes
        predicted = output_predictions(probe.task, fitted_classes, outputs)  # the largest output's class code
        result = {}
        for metric in metrics:
            if metric in ("accuracy", "balanced_accuracy"):
                result[metric] = _label_metrics(metric, truth, predicted, len(classes))
            elif metric == "roc_auc" and len(classes) == 2:
                result[metric] = _binary_roc_aucs(truth == 1, columns[:, :, 1])
            else:
                result[metric] = [
                    score(metric, classes[t], classes[p], column, classes, probabilities=False)
                    for t, p, column in zip(truth, predicted, columns, strict=True)
                ]
        return result

    return ridge_permutation_scores(probe, features, fitted, splits, scorer, groups)


def _label_metrics(metric: str, truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """``accuracy`` or ``balanced_accuracy`` of each row of a stack of test folds, as scikit-learn computes them.

    ``truth`` and ``predicted`` are class codes, ``(n_sets, n_test)``. The
    same operations on the same numbers as scikit-learn's: the share of
    right labels (a count over ``n_test``), and the mean, over the classes
    present in a row's truth in class order, of each one's recall (its count
    of right labels over its count). Classes only predicted are left out, as
    scikit-learn leaves them out (with a warning there). Counts are sums of
    ones: exact, in any order.
    """
    right = truth == predicted
    if metric == "accuracy":
        return right.sum(axis=1) / truth.shape[1]
    cells = (np.arange(len(truth))[:, None] * n_classes + truth).ravel()
    counts = np.bincount(cells, minlength=len(truth) * n_classes).reshape(len(truth), n_classes)
    hits = np.bincount(cells, weights=right.ravel(), minlength=counts.size).reshape(counts.shape)
    # The mean of each row's present classes on their own (zeros for the absent ones would regroup the additions).
    return np.asarray([np.mean(h[c > 0] / c[c > 0]) for h, c in zip(hits, counts, strict=True)])


def _binary_roc_aucs(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each row's binary ROC AUC, ``(n_sets,)``, as scikit-learn's ``roc_auc_score`` computes it, without its checks.

    scikit-learn's steps, on the same numbers, for a stack of test folds
    (``positive`` and ``scores`` of shape ``(n_sets, n_test)``): windows
    sorted by decreasing score; at the last window of each run of equal
    scores, the counts of true and false positives so far; the points where
    the curve does not turn dropped; rates from the counts; the trapezoidal
    area. Counts are sums of ones, exact whatever the order among equal
    scores. Every step but the last runs on the whole stack, each row's
    points packed to its front; the area is each row's own sum of its own
    points, as ``np.trapezoid`` adds them (padding would regroup numpy's
    pairwise additions). NaN for a fold of one class, as
    :func:`~neurofm.metrics.score` gives.
    """
    n_sets, n = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    ordered = np.take_along_axis(scores, order, axis=1)
    true_positives = np.cumsum(np.take_along_axis(positive, order, axis=1), axis=1, dtype=np.float64)
    # The last window of each run of equal scores, packed to the front of its row (the rest point past the end).
    last = np.ones((n_sets, n), dtype=bool)
    last[:, :-1] = np.diff(ordered, axis=1) != 0
    thresholds, counted = _packed(last)
    tps = np.take_along_axis(true_positives, np.minimum(thresholds, n - 1), axis=1)
    fps = 1 + thresholds.astype(np.float64) - tps
    # Points where the curve turns (non-zero second differences), and each row's first and last: kept.
    turns = np.ones_like(last)
    turns[:, 1:-1] = ((fps[:, 2:] - fps[:, 1:-1]) - (fps[:, 1:-1] - fps[:, :-2]) != 0) | (
        (tps[:, 2:] - tps[:, 1:-1]) - (tps[:, 1:-1] - tps[:, :-2]) != 0
    )
    position = np.arange(n)
    turns |= position == (counted - 1)[:, None]
    turns &= position < counted[:, None]
    kept, n_kept = _packed(turns)
    fps = np.take_along_axis(fps, np.minimum(kept, n - 1), axis=1)
    tps = np.take_along_axis(tps, np.minimum(kept, n - 1), axis=1)
    rows = np.arange(n_sets)
    with np.errstate(invalid="ignore", divide="ignore"):  # a one-class row divides by 0; it is NaN below
        fpr = np.concatenate([np.zeros((n_sets, 1)), fps], axis=1) / fps[rows, n_kept - 1][:, None]
        tpr = np.concatenate([np.zeros((n_sets, 1)), tps], axis=1) / tps[rows, n_kept - 1][:, None]
        terms = np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2.0
    one_class = positive.all(axis=1) | ~positive.any(axis=1)
    return np.asarray(
        [
            np.nan if single else float(np.add.reduce(row[:length]))
            for row, length, single in zip(terms, n_kept, one_class, strict=True)
        ]
    )


def _packed(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's positions where ``mask`` holds, in order, at the front (``mask.shape[1]`` after), and their count."""
    n = mask.shape[1]
    positions = np.sort(np.where(mask, np.arange(n), n), axis=1)
    return positions, mask.sum(axis=1)


def prediction_frame(name, fold, test, y_true, y_pred, proba, classes, probabilities: bool = True) -> pd.DataFrame:
    """One row per test window: truth, prediction and each class's ``proba_<class>``.

    A multilabel task (2-D ``y_true``, ``classes`` the label names) has one
    column per label for each: ``y_true[<label>]``, ``y_pred[<label>]`` and
    ``proba[<label>]`` (the label's probability of 1). Decision values
    (``probabilities=False``: a model without ``predict_proba``) go into
    ``decision_<class>`` (``decision[<label>]``) columns instead, so that
    nothing reads them as probabilities later.
    """
    if np.ndim(y_true) == 2:
        frame = pd.DataFrame({"Model": name, "Fold": fold, "SampleIndex": test})
        for k, label in enumerate(classes):
            frame[f"y_true[{label}]"] = np.asarray(y_true)[:, k]
            frame[f"y_pred[{label}]"] = np.asarray(y_pred)[:, k]
            if proba is not None:
                frame[f"{SCORE_PREFIXES[probabilities]}[{label}]"] = np.asarray(proba, dtype=float)[:, k]
        return frame
    frame = pd.DataFrame({"Model": name, "Fold": fold, "SampleIndex": test, "y_true": y_true, "y_pred": y_pred})
    if proba is not None:
        for k, cls in enumerate(classes):
            frame[f"{SCORE_PREFIXES[probabilities]}_{cls}"] = proba[:, k]
    return frame


def permute_labels(y: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Shuffle labels, within each group when groups are given (keeps subject-level structure).

    A multilabel ``y`` (n, n_labels) is shuffled by whole rows: the labels of a window move together, so their
    co-occurrence is kept and only their link to the windows is broken.
    """
    if groups is None:
        return rng.permutation(y)
    out = y.copy()
    for group in np.unique(groups):
        idx = np.flatnonzero(groups == group)
        out[idx] = y[rng.permutation(idx)]
    return out


#: Artifact types the experiment writes itself for a model (and reads back): an estimator's would mix with them.
RESERVED_ARTIFACT_TYPES = ("permutation_test", "timing")


def trainable_estimator(estimator) -> NeuralTrainable | None:
    """The estimator that implements :class:`~neurofm.protocols.NeuralTrainable`, or ``None``.

    Raw-window models wrap a user's estimator in a pipeline (flattening, unit
    scaling): its final step is then the one that trained.
    """
    if isinstance(estimator, NeuralTrainable):
        return estimator
    if isinstance(estimator, Pipeline) and isinstance(estimator.steps[-1][1], NeuralTrainable):
        return estimator.steps[-1][1]
    return None


def trainable_artifacts(estimator, fold: int, model_name: str = "model") -> list[tuple[int, str, str, Any]]:
    """The NeuralTrainable protocol's outputs as artifact rows of one fold; none for other estimators.

    Values are made JSON-ready here (numpy to Python, tuples to lists, keys to
    strings), as saving the result and a run's records would: a fresh result
    then holds what a saved or resumed one reads back.

    Raises
    ------
    ModelFitError
        When a protocol method raises, or returns what cannot be recorded (not
        a dict keyed by artifact type, a value JSON cannot hold), naming the
        estimator's class and the method. A silent skip would hand back a
        result without the diagnostics its author asked for.
    """
    trainable = trainable_estimator(estimator)
    if trainable is None:
        return []
    owner = f"Model {model_name!r} on fold {fold}: {type(trainable).__name__}"
    try:
        metadata = trainable.get_artifact_metadata()
    except Exception as exc:
        method = _raising_method(exc, trainable)
        via = "" if method == "get_artifact_metadata" else " (called by get_artifact_metadata())"
        cause = f"{type(exc).__name__}: {str(exc).rstrip('.')}"
        raise ModelFitError(
            f"{owner}.{method}(){via} raised {cause}. An estimator with the five NeuralTrainable methods has "
            "its artifacts recorded for every fold: fix the method (one without all five records none)."
        ) from exc
    if not isinstance(metadata, Mapping):
        raise ModelFitError(
            f"{owner}.get_artifact_metadata() returned {type(metadata).__name__}, not a dict keyed by artifact type "
            "(e.g. {'training_history': [...], 'checkpoints': {...}})."
        )
    rows: list[tuple[int, str, str, Any]] = []
    for kind, content in metadata.items():
        where = f"{owner}.get_artifact_metadata()[{kind!r}]"
        if kind in RESERVED_ARTIFACT_TYPES:
            raise ModelFitError(f"{where}: {kind!r} is an artifact type the experiment records itself; rename it.")
        if kind == "training_history":
            if not isinstance(content, (list, tuple)):
                raise ModelFitError(f"{where} is {type(content).__name__}, not a list of one dict per epoch.")
            for position, record in enumerate(content):
                if not isinstance(record, Mapping):
                    raise ModelFitError(f"{where}[{position}] is {type(record).__name__}, not a dict of one epoch.")
                epoch = record.get("epoch", position)
                number = int(epoch) if isinstance(epoch, (int, np.integer)) else position
                rows.append((fold, str(kind), f"epoch_{number:03d}", _recordable(record, f"{where}[{position}]")))
        elif isinstance(content, Mapping):
            rows += [
                (fold, str(kind), str(key), _recordable(value, f"{where}[{key!r}]")) for key, value in content.items()
            ]
        else:
            raise ModelFitError(f"{where} is {type(content).__name__}, not a dict (one artifact row per key).")
    return rows


def _recordable(value: Any, where: str) -> Any:
    """``value`` as a saved result reads it back, or a :class:`ModelFitError` saying what JSON cannot hold."""
    try:
        ready = jsonable(value)
        json.dumps(ready, allow_nan=True)
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: a container that holds itself
        raise ModelFitError(
            f"{where} cannot be recorded: {exc}. Artifacts are saved as JSON; return numbers, strings, booleans, "
            "None, or lists and dicts of them (e.g. str() of a path)."
        ) from exc
    return ready


def _raising_method(exc: BaseException, estimator: Any) -> str:
    """The innermost protocol method of ``estimator`` that ``exc`` passed through (``get_artifact_metadata`` calls
    the others: the one that failed is what its author needs to fix)."""
    method = "get_artifact_metadata"
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name in TRAINABLE_METHODS and tb.tb_frame.f_locals.get("self") is estimator:
            method = code.co_name
        tb = tb.tb_next
    return method


def split_frame(name: str, fold: int, train: np.ndarray, test: np.ndarray) -> pd.DataFrame:
    idx = np.concatenate([train, test])
    sets = np.array(["train"] * len(train) + ["test"] * len(test))
    order = np.argsort(idx, kind="stable")
    return pd.DataFrame({"Model": name, "Fold": fold, "SampleIndex": idx[order], "Set": sets[order]})
