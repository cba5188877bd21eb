"""Classical scikit-learn estimators, by name or as objects, and neurofm's named baselines.

``ClassicalModelConfig.estimator`` is resolved here: a scikit-learn class name
(``"LogisticRegression"``), a named baseline of :data:`NAMED_ESTIMATORS` that
works on raw windows (``"bandpower_lr"``), a pyriemann class name of
:data:`PYRIEMANN_ESTIMATORS` (``"MDM"``), an import path
(``"package.module.ClassName"``), or an estimator object given from Python
(each fold fits a fresh ``sklearn.base.clone`` of it). Whether it gets windows
``(n, channels, times)`` or flattened ones is :func:`window_input`'s answer.
Whether an estimator classifies or regresses is what scikit-learn's tags say
(:func:`estimator_task`), checked against the experiment's task before any
compute (:func:`check_estimator_task`).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone, is_classifier, is_regressor
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import ParameterGrid, StratifiedGroupKFold, StratifiedKFold
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils import all_estimators

from ..adapt import working_unit_scale
from ..exceptions import ConfigError
from ..utils.check import closest_matches, format_choices
from ..utils.objects import class_path

__all__ = [
    "BandPower",
    "HEAD_DEFINITION",
    "RankProjection",
    "SensorScaling",
    "TunedPipeline",
    "NAMED_ESTIMATORS",
    "NamedEstimator",
    "PerLabelClassifier",
    "PYRIEMANN_ESTIMATORS",
    "WINDOW_LIBRARIES",
    "build_estimator",
    "build_window_estimator",
    "check_estimator_object",
    "check_estimator_task",
    "check_window_model",
    "estimator_task",
    "list_estimators",
    "named_definition_version",
    "resolve_estimator_class",
    "standardised_head",
    "takes_groups",
    "uses_randomness",
    "window_input",
]

DEFAULT_BANDS = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}


class BandPower(TransformerMixin, BaseEstimator):
    """Log band power per channel from Welch's periodogram.

    A stateless transform of each window, so fitting it learns nothing.

    Parameters
    ----------
    sfreq : float
        Sampling rate of the windows in Hz.
    bands : dict of str to (float, float) | None
        Frequency bands in Hz; ``None`` uses delta to gamma (1-45 Hz).
    log : bool
        Return ``log10`` of the power.
    """

    def __init__(self, sfreq: float = 250.0, bands: dict[str, tuple[float, float]] | None = None, log: bool = True):
        self.sfreq = sfreq
        self.bands = bands
        self.log = log

    def fit(self, X, y=None):
        X = np.asarray(X)
        if X.ndim != 3:
            raise ValueError(f"BandPower needs windows shaped (n, channels, times), got {X.shape}.")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        from scipy.signal import welch  # start-up: scipy.signal would add ~200 ms to import neurofm

        X = np.asarray(X, dtype=np.float64)
        bands = self.bands or DEFAULT_BANDS
        nper = min(X.shape[-1], int(round(self.sfreq * 2)))
        freqs, psd = welch(X, fs=self.sfreq, nperseg=nper, axis=-1)
        feats = []
        for lo, hi in bands.values():
            mask = (freqs >= lo) & (freqs < hi)
            if not mask.any():
                raise ValueError(
                    f"band {lo}-{hi} Hz has no frequency bin at sfreq={self.sfreq} and {X.shape[-1]} samples."
                )
            power = psd[..., mask].mean(axis=-1)
            feats.append(np.log10(power + np.finfo(float).tiny) if self.log else power)
        return np.concatenate(feats, axis=1)


class SensorScaling(TransformerMixin, BaseEstimator):
    """Multiply each channel by a fixed factor: windows in SI units to one working unit.

    Windows reach the classical baselines in SI units, where EEG (about 1e-5 V),
    magnetometers (1e-13 T) and gradiometers (1e-12 T/m) differ by up to eight
    orders of magnitude; a covariance of such a mix is all EEG, and shrinkage
    toward its mean eigenvalue erases the MEG part. The factors of
    :func:`neurofm.adapt.working_unit_scale` make every sensor type about as
    large as EEG in microvolts, with fixed numbers learned from no data.

    Parameters
    ----------
    scale : sequence of float | None
        One factor per channel; ``None`` leaves the windows as they are.
    """

    def __init__(self, scale=None):
        self.scale = scale

    def fit(self, X, y=None):
        X = np.asarray(X)
        if self.scale is not None and len(self.scale) != X.shape[1]:
            raise ValueError(f"SensorScaling has {len(self.scale)} factors but the windows have {X.shape[1]} channels.")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        if self.scale is None:
            return X
        return np.asarray(X, dtype=np.float64) * np.asarray(self.scale, dtype=np.float64)[None, :, None]


class RankProjection(TransformerMixin, BaseEstimator):
    """Project windows onto the channel subspace that the training windows span.

    After Maxwell filtering (SSS), 306 Neuromag channels carry only about 64-72
    independent signals; an average reference takes one dimension from EEG.
    Covariances of such windows have as many zero eigenvalues: shrinkage hides
    them by pulling every eigenvalue toward the mean, and tangent-space features
    grow with the square of the channel count. Keeping the principal components
    (of the training windows only, so nothing leaks across folds) whose variance
    exceeds ``tol`` times the largest gives full-rank covariances with every
    signal kept. Full-rank windows pass unchanged.

    Parameters
    ----------
    tol : float
        Variance, relative to the largest component's, below which a
        component counts as absent.

    Attributes
    ----------
    rank_ : int
        Number of components kept.
    components_ : ndarray, shape (rank_, n_channels) | None
        The projection; ``None`` when the windows have full rank.
    """

    def __init__(self, tol: float = 1e-8):
        self.tol = tol

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 3:
            raise ValueError(f"RankProjection needs windows shaped (n, channels, times), got {X.shape}.")
        centred = X - X.mean(axis=-1, keepdims=True)
        covariance = np.einsum("nct,ndt->cd", centred, centred) / (X.shape[0] * X.shape[2])
        variance, vectors = np.linalg.eigh(covariance)  # ascending
        kept = variance > self.tol * variance[-1]
        self.rank_ = int(kept.sum())
        self.components_ = None if self.rank_ == X.shape[1] else vectors[:, kept][:, ::-1].T
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        if self.components_ is None:
            return X
        return np.einsum("rc,nct->nrt", self.components_, np.asarray(X, dtype=np.float64))


def _flatten_windows(X):
    X = np.asarray(X)
    return X.reshape(len(X), -1)


#: The grids the named classification pipelines search, in the order ties are broken (the first best wins):
#: logistic regression's inverse penalty on a log grid around scikit-learn's default of 1, Xdawn's filters per
#: class and CSP's components around their usual defaults (4 in pyriemann's and MNE's examples).
LOGISTIC_C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
XDAWN_NFILTER_GRID = (1, 2, 4)
CSP_N_COMPONENTS_GRID = (2, 4, 6)
#: Inner folds of the search; 3 keeps every inner validation part a third of the training partition.
INNER_SPLITS = 3

#: Classes (by import path, so that pyriemann is not imported here) of steps whose fit reads no labels.
_LABEL_FREE_PATHS = frozenset({"pyriemann.estimation.Covariances", "pyriemann.tangentspace.TangentSpace"})


def _learns_no_labels(step: Any) -> bool:
    """Whether fitting ``step`` reads no labels (its state depends on the windows alone)."""
    return isinstance(step, (SensorScaling, RankProjection, BandPower, StandardScaler)) or (
        class_path(step) in _LABEL_FREE_PATHS
    )


def _candidate_label(candidate: dict[str, Any]) -> str:
    """One candidate of a grid as an artifact key: ``"csp__n_components=4"``, several joined by commas."""
    return ", ".join(f"{key}={value!r}" for key, value in sorted(candidate.items())) or "(no parameter)"


def takes_groups(estimator) -> bool:
    """Whether ``estimator.fit`` names a ``groups`` argument of its own (a tuned pipeline's inner CV keeps groups
    apart). A plain pipeline's ``fit(X, y, **params)`` would route ``groups`` to a step: it gets none."""
    try:
        parameter = inspect.signature(estimator.fit).parameters.get("groups")
    except (TypeError, ValueError):  # a fit without a signature Python can read
        return False
    return parameter is not None and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)


class PerLabelClassifier(MultiOutputClassifier):
    """One classifier per label of a multilabel task, each tuned with the experiment's groups kept apart.

    scikit-learn's :class:`~sklearn.multioutput.MultiOutputClassifier`
    passes a ``groups`` fit parameter to every label's estimator, but names
    none itself, so an experiment would not know to give it: a tuned
    pipeline's inner CV then mixed the windows of one subject across its
    inner folds for multilabel targets alone.
    """

    def fit(self, X, Y, groups=None, sample_weight=None, **fit_params):
        """Fit one clone of ``estimator`` per column of ``Y``; ``groups`` reaches those whose fit takes them."""
        if groups is not None and takes_groups(self.estimator):
            fit_params["groups"] = groups
        return super().fit(X, Y, sample_weight=sample_weight, **fit_params)


class TunedPipeline(Pipeline):
    """A classification pipeline that chooses its hyper-parameters by inner cross-validation on its training data.

    ``fit(X, y)`` scores each candidate of ``param_grid`` by balanced
    accuracy over a stratified ``n_splits``-fold split of ``X`` itself
    (shuffled with ``random_state``; ``fit(X, y, groups=...)``: a
    :class:`~sklearn.model_selection.StratifiedGroupKFold`, so that no group
    lies on both sides of an inner split), sets the best one (the first in grid
    order among ties: :class:`sklearn.model_selection.ParameterGrid`'s order)
    and fits every step on all of ``X``: what
    :class:`~sklearn.model_selection.GridSearchCV` with ``refit=True`` does.
    In an experiment ``X`` is one outer training partition, so the test
    windows take no part in the choice, and each fold may choose differently.

    Work is shared where no label can leak: the leading steps that read no
    labels (unit scaling, rank projection, band power, covariances, tangent
    space, standardising) and come before the first tuned step are fitted
    once on all of ``X``, as the final model's are (so their state includes
    the inner validation windows, never their labels, as a
    ``LogisticRegressionCV`` after them would have it); every later step
    is fitted in each inner fold, once per distinct setting of itself and
    the steps before it. With ``k`` settings of the first tuned step and
    ``m`` candidates in all, the steps from the first tuned one up to the
    last are fitted ``n_splits * k + 1`` times and the last step
    ``n_splits * m + 1`` times (e.g. 10 and 46 for ``xdawn_ts_lr``).

    The fitted pipeline implements :class:`~neurofm.protocols.NeuralTrainable`,
    so an experiment records, per fold, the chosen values (artifact type
    ``"tuned"``, one row per parameter) and every candidate's mean inner score
    (``"inner_cv"``).

    Parameters
    ----------
    steps : list of (str, estimator)
        As :class:`~sklearn.pipeline.Pipeline`'s; the last one classifies.
    param_grid : dict of str to list | None
        Candidate values of ``step__param`` parameters, scikit-learn's names
        (as in :class:`~sklearn.model_selection.GridSearchCV`). ``None`` or an
        empty dict: nothing is searched, the pipeline is fitted as it is.
    n_splits : int
        Inner folds; fewer when the smallest class has fewer windows, and no
        search (the parameters as they are) with fewer than 2.
    random_state : int | None
        Shuffles the windows before the inner split.
    transform_input, memory, verbose
        As :class:`~sklearn.pipeline.Pipeline`'s.

    Attributes
    ----------
    best_params_ : dict
        The chosen value of each searched parameter (empty when nothing was searched).
    cv_scores_ : dict of str to float
        Each candidate (``"step__param=value, ..."``) and its mean inner
        balanced accuracy; NaN for one that raised in an inner fold.
    search_splits_ : list of (ndarray, ndarray)
        The inner (train, validation) positions in the ``X`` given to ``fit``.
    inner_cv_ : str
        How they were drawn: ``"StratifiedGroupKFold"`` (groups given, and at
        least ``n_splits`` of them), else ``"StratifiedKFold"``.
    inner_cv_note_ : str | None
        Why groups were given but not kept apart (fewer groups than inner
        folds), if so.
    n_samples_ : int
        Windows the search and the fit saw.
    shared_steps_ : list of str
        The leading label-free steps fitted once on all of ``X``.
    not_tuned_ : str | None
        Why nothing was searched, if so.
    failures_ : dict of str to str
        Candidates that raised in an inner fold, and the error.
    """

    def __init__(
        self,
        steps,
        *,
        param_grid: dict[str, Any] | None = None,
        n_splits: int = INNER_SPLITS,
        random_state: int | None = None,
        transform_input=None,
        memory=None,
        verbose: bool = False,
    ):
        super().__init__(steps, transform_input=transform_input, memory=memory, verbose=verbose)
        self.param_grid = param_grid
        self.n_splits = n_splits
        self.random_state = random_state

    def fit(self, X, y, groups=None):
        """Choose the parameters by inner cross-validation on ``X``, then fit every step on all of ``X``.

        Parameters
        ----------
        X : array-like
            Training windows (in an experiment, one outer training partition).
        y : array-like
            Their class labels.
        groups : array-like | None
            Each window's group (an experiment gives its ``cv.group_key``
            values): the inner splits keep groups apart when there are at
            least as many groups as inner folds; with fewer, they are
            stratified only, and :attr:`inner_cv_note_` says so.

        Returns
        -------
        self : TunedPipeline
        """
        y = np.asarray(y)
        groups = None if groups is None else np.asarray(groups)
        if groups is not None and len(groups) != len(y):
            raise ValueError(f"groups has {len(groups)} values for {len(y)} windows; give one group per window.")
        self.inner_cv_, self.inner_cv_note_ = "StratifiedKFold", None
        grid = dict(self.param_grid or {})
        self.n_samples_ = len(y)
        self.best_params_, self.cv_scores_, self.failures_ = {}, {}, {}
        self.search_splits_, self.shared_steps_, self.not_tuned_ = [], [], None
        candidates = list(ParameterGrid(grid))
        smallest = int(np.unique(y, return_counts=True)[1].min()) if len(y) else 0
        n_splits = min(self.n_splits, smallest)
        if len(candidates) < 2 or n_splits < 2:
            if len(candidates) == 1:
                self.set_params(**candidates[0])  # a grid of single values: those values
            self.not_tuned_ = (
                "no parameter has two or more candidates (param_grid is empty, or every value is fixed)"
                if len(candidates) < 2
                else f"the smallest class has {smallest} window(s): too few for an inner cross-validation"
            )
            return super().fit(X, y)
        self._validate_steps()
        self.steps = list(self.steps)  # a list of our own, as Pipeline.fit makes: the given list stays as it was
        first = min(self._step_index(key) for key in grid)
        shared = 0
        while shared < first and _learns_no_labels(self.steps[shared][1]):
            shared += 1
        Xt = X
        for _, step in self.steps[:shared]:
            Xt = step.fit_transform(Xt, y)  # the final model's own steps: fitted once, as a refit would
        self.shared_steps_ = [name for name, _ in self.steps[:shared]]
        self.search_splits_ = self._inner_splits(y, groups, n_splits)
        scores = np.full((len(candidates), n_splits), np.nan)
        for split, (train, valid) in enumerate(self.search_splits_):
            self._score_candidates(
                shared,
                Xt[train],
                y[train],
                Xt[valid],
                y[valid],
                list(range(len(candidates))),
                candidates,
                scores[:, split],
            )
        means = scores.mean(axis=1)  # NaN where a candidate failed in any inner fold
        self.cv_scores_ = {_candidate_label(c): float(m) for c, m in zip(candidates, means, strict=True)}
        if not np.isfinite(means).any():
            errors = set(self.failures_.values())
            if len(errors) == 1:  # one cause (a parameter the estimator refuses): say it once, as the fit would
                cause = errors.pop().removeprefix("ValueError: ")
                raise ValueError(f"{cause} (every candidate of {grid} failed so in the inner cross-validation)")
            raise ValueError(f"every candidate of {grid} failed in the inner cross-validation: {self.failures_}")
        best = int(np.argmax(np.where(np.isfinite(means), means, -np.inf)))  # argmax: the first best in grid order
        self.best_params_ = dict(candidates[best])
        self.set_params(**self.best_params_)
        for _, step in self.steps[shared:-1]:
            Xt = step.fit_transform(Xt, y)
        self.steps[-1][1].fit(Xt, y)
        return self

    def _inner_splits(self, y: np.ndarray, groups: np.ndarray | None, n_splits: int) -> list:
        """The inner (train, validation) positions: by group where there are enough groups, else stratified."""
        positions = np.zeros((len(y), 1))
        n_groups = 0 if groups is None else len(np.unique(groups))
        if groups is not None and n_groups >= n_splits:
            self.inner_cv_ = "StratifiedGroupKFold"
            splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=self.random_state)
            return list(splitter.split(positions, y, groups))
        if groups is not None:
            self.inner_cv_note_ = (
                f"{n_groups} group(s) in the training windows, fewer than the {n_splits} inner folds: the inner "
                "splits are stratified only, and a group's windows may lie on both sides"
            )
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state)
        return list(splitter.split(positions, y))

    def _step_index(self, key: str) -> int:
        """The position of the step a ``step__param`` name of the grid sets."""
        names = [name for name, _ in self.steps]
        step = key.partition("__")[0]
        if "__" not in key or step not in names:
            raise ValueError(f"param_grid key {key!r} names no step: the steps are {names}; write 'step__param'.")
        return names.index(step)

    def _score_candidates(self, index, X_train, y_train, X_valid, y_valid, members, candidates, out) -> None:
        """Fit step ``index`` once per distinct setting among ``members``, then the steps after it; score the last.

        ``out[j]`` gets candidate ``j``'s balanced accuracy on the validation
        windows, NaN if a fit raised (recorded in :attr:`failures_`).
        """
        name, step = self.steps[index]
        prefix = f"{name}__"
        settings: dict[str, tuple[dict[str, Any], list[int]]] = {}
        for j in members:
            own = {key[len(prefix) :]: value for key, value in candidates[j].items() if key.startswith(prefix)}
            settings.setdefault(repr(sorted(own.items())), (own, []))[1].append(j)
        last = index == len(self.steps) - 1
        for own, group in settings.values():
            try:
                fitted = clone(step).set_params(**own)
                if last:
                    score = balanced_accuracy_score(y_valid, fitted.fit(X_train, y_train).predict(X_valid))
                else:
                    Z_train = fitted.fit_transform(X_train, y_train)
                    Z_valid = fitted.transform(X_valid)
            except Exception as exc:  # noqa: BLE001 - a candidate that cannot fit is out of the running, not the run
                for j in group:
                    self.failures_[_candidate_label(candidates[j])] = f"{type(exc).__name__}: {exc}"
                    out[j] = np.nan
                continue
            if last:
                out[group] = score
            else:
                self._score_candidates(index + 1, Z_train, y_train, Z_valid, y_valid, group, candidates, out)

    # -- NeuralTrainable protocol: the search's record, collected per fold by an experiment -------------------------

    def get_training_history(self) -> list[dict[str, Any]]:
        """No epochs: the search fits each candidate to convergence, so there is no history to give."""
        return []

    def get_checkpoint_manifest(self) -> dict[str, Any]:
        """Nothing is written to disk: an empty manifest."""
        return {}

    def get_model_card_info(self) -> dict[str, Any]:
        """The steps, the grid, and how the search ran."""
        return {
            "steps": [f"{name}: {class_path(step)}" for name, step in self.steps],
            "param_grid": {key: list(values) for key, values in (self.param_grid or {}).items()},
            "search": (
                f"inner {getattr(self, 'inner_cv_', 'StratifiedKFold')}(n_splits="
                f"{len(getattr(self, 'search_splits_', [])) or self.n_splits}, shuffle=True, random_state="
                f"{self.random_state}) on the windows given to fit, balanced accuracy"
            ),
            "n_samples": getattr(self, "n_samples_", None),
            "shared_steps": list(getattr(self, "shared_steps_", [])),
        }

    def get_failure_diagnostics(self) -> dict[str, Any]:
        """Why nothing was searched, and candidates that raised in an inner fold; empty when all went well."""
        diagnostics: dict[str, Any] = {}
        if getattr(self, "not_tuned_", None):
            diagnostics["not_tuned"] = self.not_tuned_
        if getattr(self, "failures_", None):
            diagnostics["failed_candidates"] = dict(self.failures_)
        if getattr(self, "inner_cv_note_", None):
            diagnostics["inner_cv_not_grouped"] = self.inner_cv_note_
        return diagnostics

    def get_artifact_metadata(self) -> dict[str, Any]:
        """The four above, the chosen values (``"tuned"``) and each candidate's mean inner score (``"inner_cv"``)."""
        return {
            "training_history": self.get_training_history(),
            "checkpoints": self.get_checkpoint_manifest(),
            "model_card": self.get_model_card_info(),
            "failure_diagnostics": self.get_failure_diagnostics(),
            "tuned": dict(getattr(self, "best_params_", {})),
            "inner_cv": dict(getattr(self, "cv_scores_", {})),
        }


@dataclass(frozen=True)
class NamedEstimator:
    """A baseline that works on raw windows ``(n, channels, times)``.

    ``factory(sfreq, random_state)`` returns an unfitted pipeline. Params
    named ``step__param`` (scikit-learn's convention, e.g. ``csp__n_components``)
    set that step; plain names go to the final estimator. The classification
    pipelines are each a :class:`TunedPipeline`: a param that names a tuned
    parameter fixes it, and only the others are searched.

    ``version`` numbers the definition: it enters the key of a run's records
    (``Experiment._decisive``), so a run resumed after a definition changed
    recomputes that pipeline rather than serve the old one's scores. Version
    1 is each pipeline's first definition and adds nothing to the key.
    """

    name: str
    description: str
    factory: Callable[[float, int | None], Any]
    version: int = 1

    @property
    def task(self) -> Literal["classification", "regression"] | None:
        """What the pipeline's final step does, as scikit-learn's tags say (the sampling rate changes nothing)."""
        return _task_of(self.factory(250.0, None))


def _logistic(random_state):
    from sklearn.linear_model import LogisticRegression  # start-up: would add ~100 ms to import neurofm

    return LogisticRegression(max_iter=1000, random_state=random_state)


def _ridge():
    from sklearn.linear_model import RidgeCV  # start-up: would add ~100 ms to import neurofm

    # The penalty is chosen per training partition by efficient leave-one-out, so one default fits features
    # of any scale (band powers standardised, tangent vectors not) without a nested CV by hand.
    return RidgeCV(alphas=np.logspace(-3, 5, 17))


def _tuned(pipeline: Pipeline, grid: dict[str, tuple], random_state: int | None) -> TunedPipeline:
    """``pipeline``'s steps (with make_pipeline's names, the public params' names) searching ``grid``."""
    return TunedPipeline(
        pipeline.steps,
        param_grid={key: list(values) for key, values in grid.items()},
        n_splits=INNER_SPLITS,
        random_state=random_state,
    )


def _bandpower_lr(sfreq: float, random_state: int | None):
    return _tuned(
        make_pipeline(BandPower(sfreq=sfreq), StandardScaler(), _logistic(random_state)),
        {"logisticregression__C": LOGISTIC_C_GRID},
        random_state,
    )


def _bandpower_ridge(sfreq: float, random_state: int | None):
    return make_pipeline(BandPower(sfreq=sfreq), StandardScaler(), _ridge())


def _csp_lda(sfreq: float, random_state: int | None):
    from mne.decoding import CSP  # heavy: import neurofm does not load mne
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis  # start-up: ~100 ms on import neurofm

    return _tuned(
        make_pipeline(RankProjection(), CSP(n_components=4, reg="ledoit_wolf", log=True), LinearDiscriminantAnalysis()),
        {"csp__n_components": CSP_N_COMPONENTS_GRID},
        random_state,
    )


def _ts_lr(sfreq: float, random_state: int | None):
    from pyriemann.estimation import Covariances  # heavy: pyriemann loads torch
    from pyriemann.tangentspace import TangentSpace  # heavy: pyriemann loads torch

    # No standardising of the tangent vectors (MOABB's "Tangent Space LR" has none either): with hundreds
    # of sensors it lifts thousands of noise features to the size of the informative ones. On simulated
    # MEG it cost 0.10-0.28 balanced accuracy; on the muse and uci EEG sets it changed nothing beyond noise.
    return _tuned(
        make_pipeline(
            RankProjection(), Covariances(estimator="oas"), TangentSpace(metric="riemann"), _logistic(random_state)
        ),
        {"logisticregression__C": LOGISTIC_C_GRID},
        random_state,
    )


def _ts_ridge(sfreq: float, random_state: int | None):
    from pyriemann.estimation import Covariances  # heavy: pyriemann loads torch
    from pyriemann.tangentspace import TangentSpace  # heavy: pyriemann loads torch

    # Tangent space + ridge: the Riemannian regression of Sabbagh et al. (NeurIPS 2019; NeuroImage 2020).
    return make_pipeline(RankProjection(), Covariances(estimator="oas"), TangentSpace(metric="riemann"), _ridge())


def _xdawn_ts_lr(sfreq: float, random_state: int | None):
    from pyriemann.estimation import XdawnCovariances  # heavy: pyriemann loads torch
    from pyriemann.tangentspace import TangentSpace  # heavy: pyriemann loads torch

    # Xdawn is fitted on the labels, so it is refitted in every inner fold; the filters and the penalty are
    # searched together (on UCI SMNI the best number of filters differs between folds).
    return _tuned(
        make_pipeline(
            RankProjection(),
            XdawnCovariances(nfilter=4, estimator="oas", xdawn_estimator="oas"),
            TangentSpace(metric="riemann"),
            StandardScaler(),
            _logistic(random_state),
        ),
        {"xdawncovariances__nfilter": XDAWN_NFILTER_GRID, "logisticregression__C": LOGISTIC_C_GRID},
        random_state,
    )


_C = "C in {0.01, 0.1, 1, 10, 100}"
_SEARCH = (
    "chosen in each training partition by inner stratified 3-fold CV on balanced accuracy (groups kept apart when "
    "the experiment has them)"
)

NAMED_ESTIMATORS: dict[str, NamedEstimator] = {
    "bandpower_lr": NamedEstimator(
        "bandpower_lr",
        f"log band power (delta..gamma) per channel, standardised, logistic regression; {_C} {_SEARCH} (16 fits)",
        _bandpower_lr,
        version=2,
    ),
    "csp_lda": NamedEstimator(
        "csp_lda",
        "MNE common spatial patterns (log-variance, Ledoit-Wolf) + LDA; oscillatory tasks; n_components in "
        f"{{2, 4, 6}} {_SEARCH} (10 fits)",
        _csp_lda,
        version=2,
    ),
    "ts_lr": NamedEstimator(
        "ts_lr",
        "pyriemann covariances (OAS) + Riemannian tangent space + logistic regression (MOABB's TS+LR, without its "
        f"fixed C=1); {_C} {_SEARCH} (16 fits of the regression, 1 of the rest)",
        _ts_lr,
        version=2,
    ),
    "xdawn_ts_lr": NamedEstimator(
        "xdawn_ts_lr",
        "pyriemann Xdawn-augmented covariances (OAS) + tangent space + standardised logistic regression; for ERPs; "
        f"nfilter in {{1, 2, 4}} x {_C} {_SEARCH} (10 fits of Xdawn, 46 of the regression)",
        _xdawn_ts_lr,
        version=2,
    ),
    "bandpower_ridge": NamedEstimator(
        "bandpower_ridge",
        "log band power (delta..gamma) per channel, standardised, ridge (penalty by leave-one-out); regression",
        _bandpower_ridge,
    ),
    "ts_ridge": NamedEstimator(
        "ts_ridge",
        "pyriemann covariances (OAS) + Riemannian tangent space + ridge (penalty by leave-one-out); regression",
        _ts_ridge,
    ),
}


def named_definition_version(estimator: Any) -> int | None:
    """The definition version of the named pipeline ``estimator`` names (``ClassicalModelConfig.estimator``).

    Returns
    -------
    version : int | None
        :attr:`NamedEstimator.version`; ``None`` for anything else (another
        name, an estimator object).
    """
    named = NAMED_ESTIMATORS.get(estimator) if isinstance(estimator, str) else None
    return None if named is None else named.version


def list_estimators(task: Literal["classification", "regression"] | None = None) -> list[str]:
    """Names of neurofm's raw-window baselines, all of them or those for ``task``."""
    return sorted(name for name, named in NAMED_ESTIMATORS.items() if task is None or named.task == task)


@functools.cache
def _sklearn_estimators() -> dict[str, type]:
    return dict(all_estimators())


#: pyriemann's estimators that make matrices from windows (n, channels, times): all in pyriemann.estimation.
_FROM_WINDOWS = (
    "Covariances",
    "ERPCovariances",
    "XdawnCovariances",
    "BlockCovariances",
    "CrossSpectra",
    "CoSpectra",
    "Coherences",
    "TimeDelayCovariances",
    "Kernels",
)

#: pyriemann's estimators that a config may name by class name alone, as scikit-learn's (``"MDM"``), and the
#: module of pyriemann 0.12 that holds each. scikit-learn's names come first: pyriemann's ``SVC``, ``SVR``,
#: ``MeanShift``, ``GaussianMixture`` and embeddings need their import path, as do the transfer-learning
#: estimators (they need domain labels), and ``CSP`` and ``SPoC`` (:data:`_AMBIGUOUS_NAMES`).
PYRIEMANN_ESTIMATORS: dict[str, str] = {
    **dict.fromkeys(
        ["MDM", "FgMDM", "TSClassifier", "KNearestNeighbor", "MeanField", "NearestConvexHull"],
        "pyriemann.classification",
    ),
    "KNearestNeighborRegressor": "pyriemann.regression",
    **dict.fromkeys([*_FROM_WINDOWS, "Shrinkage"], "pyriemann.estimation"),
    "TangentSpace": "pyriemann.tangentspace",
    "FGDA": "pyriemann.tangentspace",
    "Xdawn": "pyriemann.spatialfilters",
    "BilinearFilter": "pyriemann.spatialfilters",
    "AJDC": "pyriemann.spatialfilters",
    "ElectrodeSelection": "pyriemann.channelselection",
    "FlatChannelRemover": "pyriemann.channelselection",
    "Kmeans": "pyriemann.clustering",
    "KmeansPerClassTransform": "pyriemann.clustering",
    "Potato": "pyriemann.artifact_detection",
    "PotatoField": "pyriemann.artifact_detection",
    "Whitening": "pyriemann.preprocessing",
}

#: The pyriemann estimators of :data:`PYRIEMANN_ESTIMATORS` that read windows ``(n, channels, times)``; all the
#: others read covariance matrices ``(n, channels, channels)``, which a model on raw windows must make first.
_PYRIEMANN_WINDOW_INPUT = frozenset({*_FROM_WINDOWS, "Xdawn", "FlatChannelRemover"})
_PYRIEMANN_MATRIX_INPUT = frozenset(
    f"{module}.{name}" for name, module in PYRIEMANN_ESTIMATORS.items() if name not in _PYRIEMANN_WINDOW_INPUT
)

#: Class names that pyriemann and MNE both use for different estimators: a config names one by import path.
_AMBIGUOUS_NAMES = {
    "CSP": ("pyriemann.spatialfilters.CSP", "mne.decoding.CSP"),
    "SPoC": ("pyriemann.spatialfilters.SPoC", "mne.decoding.SPoC"),
}

#: Libraries whose estimators read windows ``(n, channels, times)`` (a model whose first step comes from one
#: gets the windows by default, see :func:`window_input`).
WINDOW_LIBRARIES = ("pyriemann", "mne")


def resolve_estimator_class(name: str) -> type | NamedEstimator:
    """Find the estimator class (or named baseline) that ``name`` refers to.

    In this order: neurofm's named baselines, scikit-learn's class names,
    pyriemann's class names (:data:`PYRIEMANN_ESTIMATORS`), import paths.

    Raises
    ------
    ConfigError
        When the name is unknown; the message suggests close names. A
        pyriemann name without pyriemann installed says what to install.
    """
    if name in NAMED_ESTIMATORS:
        return NAMED_ESTIMATORS[name]
    sk = _sklearn_estimators()
    if name in sk:
        return sk[name]
    if name in PYRIEMANN_ESTIMATORS:
        path = f"{PYRIEMANN_ESTIMATORS[name]}.{name}"
        try:
            return getattr(importlib.import_module(PYRIEMANN_ESTIMATORS[name]), name)
        except ImportError as exc:
            raise ConfigError(
                f"Estimator {name!r} is pyriemann's {path}, and pyriemann cannot be imported ({exc}): install it "
                f"(pip install pyriemann), then name it {name!r} or {path!r}."
            ) from exc
        except AttributeError as exc:
            raise ConfigError(
                f"Estimator {name!r} is {path} in pyriemann 0.12, which the installed pyriemann does not have: "
                "upgrade pyriemann (pip install -U pyriemann), or name the class by its import path in your version."
            ) from exc
    if name in _AMBIGUOUS_NAMES:
        riemann, mne_path = _AMBIGUOUS_NAMES[name]
        raise ConfigError(
            f"Estimator {name!r} is ambiguous: {riemann!r} works on covariance matrices, {mne_path!r} on windows "
            "(n, channels, times); name the one you mean by its import path."
        )
    if "." in name:
        module_name, _, attr = name.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except ModuleNotFoundError as exc:
            top = module_name.partition(".")[0]
            raise ConfigError(
                f"Could not import estimator {name!r}: {exc}. Check the import path; a package of your own must be "
                f"importable where neurofm runs: installed (pip install -e path/to/{top}) or on the Python path "
                f"(PYTHONPATH=path/to/parent-of-{top} neurofm run ...): the neurofm command does not search the current folder."
            ) from exc
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"Could not import estimator {name!r}: {exc}. Check the import path.") from exc
        if not (inspect.isclass(obj) and hasattr(obj, "fit")):
            raise ConfigError(f"{name!r} is not an estimator class with a fit method.")
        return obj
    close = closest_matches(name, list(sk) + list(NAMED_ESTIMATORS) + list(PYRIEMANN_ESTIMATORS))
    hint = f" Did you mean {format_choices(close)}?" if close else ""
    raise ConfigError(
        f"Unknown estimator {name!r}.{hint} Use a scikit-learn estimator class name, one of neurofm's "
        f"baselines ({format_choices(list_estimators())}), a pyriemann class name ('MDM', 'TangentSpace', ...), "
        "or an import path 'package.module.ClassName'."
    )


def _first_step(estimator: Any) -> Any:
    """The estimator that reads the input first: a pipeline's first step (inside nested pipelines too)."""
    while isinstance(estimator, Pipeline):
        steps = [step for _, step in estimator.steps if not (step is None or isinstance(step, str))]  # "passthrough"
        if not steps:
            break
        estimator = steps[0]
    return estimator


def _from_window_library(target: Any) -> bool:
    module = (target if isinstance(target, type) else type(target)).__module__
    return module.partition(".")[0] in WINDOW_LIBRARIES


def window_input(estimator: Any, input: Literal["windows", "flat"] | None = None) -> Literal["windows", "flat"]:
    """Whether a model on raw windows gets them as they are or flattened, as ``ClassicalModelConfig.input`` says.

    Parameters
    ----------
    estimator : str | estimator
        As in ``ClassicalModelConfig.estimator``.
    input : {"windows", "flat"} | None
        ``None``: ``"windows"`` for neurofm's named baselines and for
        estimators whose first step comes from pyriemann or MNE (for a
        pipeline, its first step), ``"flat"`` for every other.

    Returns
    -------
    input : {"windows", "flat"}
        ``"windows"``: ``(n, channels, times)``; ``"flat"``: each window
        flattened to one vector ``(n, channels * times)``.
    """
    if input is not None:
        return input
    if isinstance(estimator, str):
        target = resolve_estimator_class(estimator)
        if isinstance(target, NamedEstimator):
            return "windows"
        return "windows" if _from_window_library(target) else "flat"
    return "windows" if _from_window_library(_first_step(estimator)) else "flat"


def check_window_model(estimator: Any, input: Literal["windows", "flat"] | None) -> None:
    """Refuse a pyriemann estimator of covariance matrices first in a model on windows, before any compute.

    Only when ``input`` is left automatic: ``input="windows"`` says the
    windows are what the estimator reads (e.g. covariance matrices already).

    Raises
    ------
    ConfigError
        Naming the estimator and the covariance step to put before it.
    """
    if input is not None:
        return
    if isinstance(estimator, str):
        target = resolve_estimator_class(estimator)
        if isinstance(target, NamedEstimator):
            return
        first = target
    else:
        first = _first_step(estimator)
    path = class_path(first)
    if path not in _PYRIEMANN_MATRIX_INPUT:
        return
    short = path.rpartition(".")[2]
    raise ConfigError(
        f"{short!r} ({path}) reads covariance matrices (n, channels, channels), not windows (n, channels, times): "
        f"put a covariance estimator before it, from Python e.g. "
        f"ClassicalModelConfig(estimator=make_pipeline(Covariances('oas'), {short}())), or use neurofm's 'ts_lr'. "
        "If your windows already are covariance matrices, set input='windows'."
    )


def check_estimator_object(value: Any) -> Any:
    """An estimator object given from Python, checked: a fresh clone of it (the config never holds the user's object).

    Raises
    ------
    ConfigError
        When ``value`` is a class rather than an instance, lacks ``fit`` or
        ``get_params``, or cannot be cloned (each fold fits a fresh clone).
    """
    if isinstance(value, type):
        name = value.__name__
        raise ConfigError(
            f"estimator is the class {class_path(value)} itself; pass an instance, estimator={name}(...), or its name."
        )
    if not (hasattr(value, "fit") and hasattr(value, "get_params")):
        raise ConfigError(
            f"estimator must be a name (a scikit-learn class, a neurofm baseline, a pyriemann class or an import path) "
            f"or an estimator object with fit and get_params (scikit-learn's contract), got a {class_path(value)}."
        )
    try:
        return clone(value)
    except Exception as exc:  # noqa: BLE001 - whatever clone meets, the fix is the same: the estimator contract
        raise ConfigError(
            f"The estimator {class_path(value)} cannot be cloned with sklearn.base.clone ({exc}); each fold fits a "
            "fresh clone, so its __init__ must store each argument unchanged, as scikit-learn's estimators do."
        ) from exc


def _label(estimator: Any) -> str:
    """How messages name an estimator: its name, or an object's class path."""
    return estimator if isinstance(estimator, str) else class_path(estimator)


def _task_of(estimator: Any) -> Literal["classification", "regression"] | None:
    """What scikit-learn's tags say ``estimator`` does; ``None``: neither, or no tags to read."""
    try:
        return "classification" if is_classifier(estimator) else "regression" if is_regressor(estimator) else None
    except AttributeError:  # not derived from BaseEstimator: scikit-learn has no tags for it
        return None


def _instance_for_tags(target: type, params: dict) -> Any:
    """``target`` built with ``params`` (tags may depend on them, e.g. a search's estimator), or ``None``."""
    try:
        return target(**params)
    except Exception:  # noqa: BLE001 - wrong params are reported, with their fix, where the estimator is built
        return None


def estimator_task(name: Any, params: dict | None = None) -> Literal["classification", "regression"] | None:
    """Whether the estimator ``name`` classifies or regresses, as scikit-learn's tags say.

    Parameters
    ----------
    name : str | estimator
        As in ``ClassicalModelConfig.estimator``: a name, or an estimator object.
    params : dict | None
        Its constructor's parameters (a name's only).

    Returns
    -------
    task : {"classification", "regression"} | None
        ``None`` when it is neither (a transformer, a clusterer, a class
        without scikit-learn's tags) or cannot be built with ``params``.
    """
    if not isinstance(name, str):
        return _task_of(name)
    target = resolve_estimator_class(name)
    if isinstance(target, NamedEstimator):
        return target.task
    instance = _instance_for_tags(target, params or {})
    return None if instance is None else _task_of(instance)


def check_estimator_task(name: Any, params: dict, task: str, role: str, *, head: bool = False) -> None:
    """Refuse an estimator that does not do ``task`` (a classifier for regression, or the reverse).

    Parameters
    ----------
    name, params : str | estimator, dict
        As in ``ClassicalModelConfig`` (``estimator`` and ``params``).
    task : {"classification", "regression"}
        The experiment's task.
    role : str
        How the message names the estimator (``"model 'bp'"``).
    head : bool
        Whether it decodes embeddings (then the raw-window baselines are no alternative).

    Raises
    ------
    ConfigError
        Naming what the estimator does and the estimators that do ``task``.
    """
    if not isinstance(name, str):
        does = _task_of(name)
        name = class_path(name)
    else:
        target = resolve_estimator_class(name)
        if isinstance(target, NamedEstimator):
            does = target.task
        else:
            instance = _instance_for_tags(target, params)
            if instance is None:
                return  # building it fails anyway, before any compute, naming the bad params
            does = _task_of(instance)
    if does == task:
        return
    wanted = "classifier" if task == "classification" else "regressor"
    example = "LogisticRegression" if task == "classification" else "Ridge"
    counterpart = _counterpart(name, task)
    sklearn_ones = " or ".join(repr(n) for n in [example] + ([counterpart] if counterpart else []))
    if head:
        alternatives = f"a scikit-learn {wanted} such as {sklearn_ones} (e.g. head: {{estimator: {example}}})"
    else:
        alternatives = (
            f"one of neurofm's {task} baselines {format_choices(list_estimators(task))} on raw windows, "
            f"or a scikit-learn {wanted} such as {sklearn_ones}"
        )
    if does is None:
        mixin = "ClassifierMixin" if task == "classification" else "RegressorMixin"
        raise ConfigError(
            f"{role}: scikit-learn does not know {name!r} as a classifier or a regressor (its tags say neither), so "
            f"its predictions cannot be scored for task={task!r}; use {alternatives}, or derive the class from "
            f"sklearn.base.{mixin} and BaseEstimator."
        )
    is_a = "classifier" if does == "classification" else "regressor"
    raise ConfigError(f"{role}: {name!r} is a {is_a}, which cannot do task={task!r}; use {alternatives}.")


def _counterpart(name: str, task: str) -> str | None:
    """scikit-learn's estimator of the same family for ``task`` (RandomForestClassifier -> RandomForestRegressor)."""
    short = name.rpartition(".")[2]
    swapped = (
        short.replace("Regressor", "Classifier")
        if task == "classification"
        else short.replace("Classifier", "Regressor")
    )
    candidate = _sklearn_estimators().get(swapped) if swapped != short else None
    return swapped if candidate is not None and estimator_task(swapped) == task else None


def _with_seed(cls: type, params: dict, random_state: int | None) -> dict:
    if (
        random_state is not None
        and "random_state" not in params
        and "random_state" in inspect.signature(cls).parameters
    ):
        return {**params, "random_state": random_state}
    return params


def _seed_object(estimator: Any, random_state: int | None) -> Any:
    """``estimator`` with the run's seed in each ``random_state`` parameter left at ``None`` (steps' too)."""
    if random_state is None:
        return estimator
    unset = {
        key: random_state
        for key, value in estimator.get_params(deep=True).items()
        if key.rpartition("__")[2] == "random_state" and value is None
    }
    return estimator.set_params(**unset) if unset else estimator


#: Estimators whose ``random_state`` only some solvers read (scikit-learn's documentation of each), and those solvers.
_SOLVERS_THAT_DRAW = {
    "LogisticRegression": ("sag", "saga", "liblinear"),
    "Ridge": ("sag", "saga"),
    "RidgeClassifier": ("sag", "saga"),
}


def uses_randomness(estimator: Any) -> bool:
    """Whether fitting ``estimator`` draws random numbers: a ``random_state`` that it or one of its steps reads.

    A logistic regression or ridge whose solver ignores its ``random_state``,
    and a :class:`TunedPipeline` with nothing to search (no inner split to
    shuffle), draw nothing: refitting them with another seed repeats them.
    """
    nested = (value for value in estimator.get_params(deep=True).values() if hasattr(value, "get_params"))
    for part in (estimator, *nested):
        params = part.get_params(deep=False)
        if "random_state" not in params:
            continue
        solvers = _SOLVERS_THAT_DRAW.get(type(part).__name__)
        if solvers is not None and params.get("solver") not in solvers:
            continue
        if isinstance(part, TunedPipeline) and not part.param_grid:
            continue
        return True
    return False


#: How a frozen backbone's classical head is built; it enters the key of a run's records (``Experiment._decisive``),
#: so records of an earlier definition are recomputed. 2: the embeddings are standardised first.
HEAD_DEFINITION = 2


def standardised_head(head: Any) -> Any:
    """``head`` after a :class:`~sklearn.preprocessing.StandardScaler` (a pipeline), for a frozen backbone's
    embeddings.

    Each fold fits a clone, so the scaler learns the mean and spread of the
    training partition's embeddings only. Embeddings come in the backbone's
    own scale (often far from unit variance), on which a logistic regression
    takes many iterations to converge. A pipeline whose first step is a
    ``StandardScaler`` already is returned as it is (a second one would
    change nothing but the fit time).
    """
    if isinstance(head, Pipeline) and head.steps and isinstance(head.steps[0][1], StandardScaler):
        return head
    return make_pipeline(StandardScaler(), head)


def build_estimator(name: Any, params: dict, random_state: int | None = None):
    """Build an unfitted estimator on feature vectors (e.g. embeddings).

    Parameters
    ----------
    name : str | estimator
        As in ``ClassicalModelConfig.estimator``. An object is cloned (never
        fitted itself), and each of its ``random_state`` parameters left at
        ``None`` gets ``random_state``, as a named estimator's does.
    params : dict
        Constructor parameters of a named estimator (an object has its own).
    random_state : int | None
        The run's seed.
    """
    if not isinstance(name, str):
        return check_estimator_params(_seed_object(clone(name), random_state), class_path(name))
    target = resolve_estimator_class(name)
    if isinstance(target, NamedEstimator):
        raise ConfigError(
            f"{name!r} works on raw windows and cannot be a head on embeddings; "
            "use a scikit-learn estimator such as 'LogisticRegression' as the head."
        )
    try:
        estimator = target(**_with_seed(target, params, random_state))
    except TypeError as exc:
        raise ConfigError(f"Invalid params for estimator {name!r}: {exc}.") from exc
    return check_estimator_params(estimator, name)


def check_estimator_params(estimator, name: str):
    """Validate constructor parameters now, as ``fit`` would, so bad values fail before any compute.

    scikit-learn checks parameters only when fitting; estimators that declare
    their constraints are checked here instead (pipelines step by step).
    """
    steps = [step for _, step in estimator.steps] if hasattr(estimator, "steps") else [estimator]
    for step in steps:
        validate = getattr(step, "_validate_params", None)
        if validate is None or not hasattr(step, "_parameter_constraints"):
            continue
        try:
            validate()
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"Invalid params for estimator {name!r}: {exc}") from exc
    return estimator


def build_window_estimator(
    name: Any,
    params: dict,
    sfreq: float,
    random_state: int | None = None,
    *,
    units: list[str] | tuple[str, ...] | None = None,
    input: Literal["windows", "flat"] | None = None,
):
    """Build an unfitted estimator on raw windows ``(n, channels, times)``.

    Named baselines get the sampling rate; any other estimator (a name or a
    clone of an object) gets the windows as they are or flattened to one
    vector each, as :func:`window_input` says for ``input``. With ``units``
    (one per channel, as :class:`neurofm.data.SignalInfo` holds them), a first
    ``units`` step brings every channel to (EEG-equivalent) microvolts, so EEG
    and MEG enter on one scale; covariance baselines then project onto the
    windows' rank.
    """
    target = resolve_estimator_class(name) if isinstance(name, str) else None
    check_window_model(name, input)
    if isinstance(target, NamedEstimator):
        estimator = target.factory(sfreq, random_state)
        final = estimator.steps[-1][0]
        routed = {(key if "__" in key else f"{final}__{key}"): value for key, value in params.items()}
        try:
            estimator.set_params(**routed)
        except ValueError as exc:
            steps = [s for s, _ in estimator.steps]
            raise ConfigError(
                f"Invalid params for estimator {name!r}: {exc}. Its steps are {steps}; name a step's parameter as "
                f"'step__param' (e.g. '{steps[0]}__...'), or give the final estimator's parameters plainly."
            ) from exc
        if isinstance(estimator, TunedPipeline) and estimator.param_grid:
            # A param the user gives fixes that parameter: the search keeps to the others.
            grid = {key: values for key, values in estimator.param_grid.items() if key not in routed}
            estimator.set_params(param_grid=grid)
        estimator = check_estimator_params(estimator, name)
    elif window_input(name, input) == "flat":
        estimator = make_pipeline(FunctionTransformer(_flatten_windows), build_estimator(name, params, random_state))
    else:
        # One step of a pipeline of its own (a pipeline stays whole), so the units step goes before it.
        estimator = make_pipeline(build_estimator(name, params, random_state))
    if units is not None:
        scale = tuple(float(v) for v in working_unit_scale(units))
        estimator.steps.insert(0, ("units", SensorScaling(scale)))
    return estimator
