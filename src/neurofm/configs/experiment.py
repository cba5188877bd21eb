"""The experiment: cross-validation, metrics, where the work runs, how recordings are cut, and the models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ..metrics import metric_names, metric_task
from ..policy import check_submitit_parameters
from ..sharing import check_key_file_declared
from ..utils.check import closest_matches, format_choices
from .base import BaseConfig
from .models import (
    AttentiveProbeConfig,
    ClassicalModelConfig,
    FrozenBackboneDecoderConfig,
    ModelConfig,
    RidgeProbeConfig,
)

CV_STRATEGIES = (
    "kfold",
    "stratified_kfold",
    "group_kfold",
    "stratified_group_kfold",
    "leave_one_group_out",
    "train_test_split",
)
GROUP_STRATEGIES = ("group_kfold", "stratified_group_kfold", "leave_one_group_out")
# The strategies that keep a group_key's groups apart: the group strategies, and train_test_split, which
# splits by group when a group_key is given. The others (kfold, stratified_kfold) would ignore it.
GROUP_AWARE_STRATEGIES = GROUP_STRATEGIES + ("train_test_split",)
STRATIFIED_STRATEGIES = ("stratified_kfold", "stratified_group_kfold")


class CVConfig(BaseConfig):
    """Outer cross-validation.

    Parameters
    ----------
    strategy : str
        One of ``kfold``, ``stratified_kfold``, ``group_kfold``,
        ``stratified_group_kfold``, ``leave_one_group_out``, ``train_test_split``.
    n_splits : int
        Number of folds (ignored by ``leave_one_group_out`` and ``train_test_split``).
    group_key : str | None
        Column of ``sample_metadata`` holding the group (e.g. subject) of each
        window; no group is then ever on both sides of a fold. Required by the
        group strategies; with ``train_test_split`` it makes the split
        group-aware; ``kfold`` and ``stratified_kfold`` would ignore it, so
        they refuse it.
    shuffle : bool
        Shuffle before splitting (seeded by the experiment's ``random_state``).
    test_size : float
        Test fraction for ``train_test_split``.
    stratify_bins : int | None
        Regression only: stratify a ``stratified_kfold`` or
        ``stratified_group_kfold`` split on this many quantile bins of the
        target, so every fold sees the whole range of targets. The bin
        edges are computed on all windows' targets: label information, but
        used only to balance the folds (as scikit-learn users do with
        ``StratifiedKFold`` on binned targets), never seen by a model.
        ``None`` (default): regression refuses the stratified strategies.
    """

    strategy: Literal[CV_STRATEGIES] = "stratified_kfold"  # type: ignore[valid-type]
    n_splits: int = Field(5, ge=2)
    group_key: str | None = None
    shuffle: bool = True
    test_size: float = Field(0.2, gt=0.0, lt=1.0)
    stratify_bins: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _group_key_for_group_strategies(self) -> CVConfig:
        if self.strategy in GROUP_STRATEGIES and not self.group_key:
            raise ValueError(
                f"CV strategy {self.strategy!r} splits by group but no group_key was given; "
                "set group_key to the sample_metadata column that holds the group (e.g. group_key='Subject')."
            )
        if self.group_key and self.strategy not in GROUP_AWARE_STRATEGIES:
            raise ValueError(group_key_ignored_message(self.strategy, self.group_key))
        if self.stratify_bins is not None and self.strategy not in STRATIFIED_STRATEGIES:
            raise ValueError(
                f"stratify_bins stratifies a regression target, but CV strategy {self.strategy!r} does not "
                f"stratify; use one of {format_choices(STRATIFIED_STRATEGIES)}, or remove stratify_bins."
            )
        return self

    @property
    def keeps_groups_apart(self) -> bool:
        """Whether no group of ``group_key`` can be on both sides of a fold."""
        return bool(self.group_key) and self.strategy in GROUP_AWARE_STRATEGIES


def group_key_ignored_message(strategy: str, group_key: str) -> str:
    """Why a group_key with a strategy that ignores groups is refused, and what to use instead."""
    return (
        f"CV strategy {strategy!r} ignores groups, so with group_key={group_key!r} windows of one group would be "
        f"in the training and the test partition of every fold; use one of the group-aware strategies "
        f"{format_choices(GROUP_AWARE_STRATEGIES)} (train_test_split splits by group when group_key is set), "
        "or remove group_key."
    )


CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "f1_macro", "cohen_kappa")
REGRESSION_METRICS = ("r2", "mae", "rmse", "pearson")
#: task="multilabel" without ``metrics``: macro ROC AUC over the labels, macro F1, Hamming loss.
MULTILABEL_DEFAULT_METRICS = ("roc_auc", "f1_macro", "hamming_loss")


class ExecutionConfig(BaseConfig):
    """Where embedding extraction, the (model, fold) fits and the permutation refits run.

    Units of work: one extraction shard (a contiguous range of windows,
    embedded by a frozen backbone and written to the shared cache), one
    (model, fold) fit, one label permutation. Every backend runs the same
    units with the same seeds, so scores do not depend on it (for
    scikit-learn estimators exactly; trainable backbones are exact only for
    the same number of torch threads per worker).

    Parameters
    ----------
    backend : {"sequential", "joblib", "dask", "ray", "submitit"}
        ``joblib``: local processes; ``dask``: a Dask cluster (``address``) or
        a local one; ``ray``: a Ray cluster (``address``) or a local one;
        ``submitit``: Slurm jobs (or local processes where there is no Slurm).
    n_jobs : int
        Processes of the local pools (joblib, local Dask or Ray).
    address : str | None
        Scheduler address of a running Dask cluster (``tcp://host:8786``) or
        Ray cluster (``ray://host:10001`` or ``auto``).
    submitit_folder : str | None
        Where submitit writes job scripts, logs and the pickles of tasks and
        results (``None``: ``<cache_dir>/submitit-<uid>`` of the experiment).
        It must be this user's and closed to others: neurofm makes it with
        mode 0700 and refuses a link, another user's folder or one others may
        open. Each call's jobs are deleted once their results are read.
    scratch_folder : str | None
        Where the local engines keep their scratch files, each in its own
        subfolder: joblib's memory maps (``joblib/``), a local Dask
        cluster's spill and locks (``dask/``), a local Ray runtime's session:
        logs, sockets, spilled objects (``ray/``). ``None``: the experiment's
        ``cache_dir`` (``<cache_dir>/scratch-<uid>`` when it is declared
        shared). Ray's socket paths must fit the system's 107 bytes,
        which leaves this folder at most 39 characters for a local Ray
        runtime. An engine given by ``address`` keeps its own folders.
    submitit_cluster : {"slurm", "local", "debug"} | None
        ``None`` picks Slurm when ``sbatch`` is found, local processes otherwise.
    submitit_parameters : dict
        Resource requests passed to ``executor.update_parameters``
        (``slurm_partition``, ``timeout_min``, ``cpus_per_task``,
        ``gpus_per_node`` ..., see :data:`neurofm.policy.SUBMITIT_PARAMETERS`);
        set-up lines, ``srun`` arguments and free-form sbatch directives are
        refused.
    extraction_shards : int | None
        Extraction shards per frozen backbone on a parallel backend
        (``None``: ``n_jobs``). Each shard loads the backbone once, so a
        few large shards beat many small ones. With ``sequential`` the caller
        extracts.
    gpus_per_task : float | "auto"
        GPUs each task of a model that runs on a GPU (an extraction shard, a
        fine-tuning fold; not a scikit-learn head) asks its engine for. Ray
        hides the GPUs from a task that asks for none, so ``"auto"``
        (default) asks Ray for one GPU per such task when the cluster has
        GPUs. Dask workers offer GPUs only as declared resources
        (``dask worker --resources GPU=1``): a number asks for that many,
        ``"auto"`` for none. On Slurm a number becomes ``gpus_per_node`` of
        each job unless ``submitit_parameters`` sets it.
    """

    backend: Literal["sequential", "joblib", "dask", "ray", "submitit"] = "sequential"
    n_jobs: int = Field(2, ge=1)
    address: str | None = None
    submitit_folder: str | None = None
    scratch_folder: str | None = None
    submitit_cluster: Literal["slurm", "local", "debug"] | None = None
    submitit_parameters: dict[str, Any] = Field(default_factory=dict)
    extraction_shards: int | None = Field(None, ge=1)
    gpus_per_task: Annotated[float, Field(ge=0)] | Literal["auto"] = "auto"

    @field_validator("submitit_parameters")
    @classmethod
    def _resource_requests_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_submitit_parameters(value)
        return value


class WindowConfig(BaseConfig):
    """How windows are cut from continuous recordings given to :meth:`Experiment.run`.

    Either event-locked windows (``tmin`` to ``tmax`` around each event) or
    fixed-length windows (``window`` seconds every ``stride`` seconds).

    Parameters
    ----------
    tmin, tmax : float
        Start and end of each window relative to its event, in seconds. A
        window holds ``(tmax - tmin) * sfreq`` samples. Events come from the
        recording's annotations or, when it has none, from its stim channel.
        Each window's label is its event's name.
    window, stride : float | None
        Fixed-length windows of ``window`` seconds every ``stride`` seconds
        (default: ``stride = window``, no overlap). Such windows carry no
        event, so their labels are given per recording.
    event_id : list of str | dict of str to int | None
        Events to keep, hence the classes: a list of annotation descriptions,
        or a mapping ``{name: code}`` whose codes are the stim-channel values
        to look for in a recording without annotations (otherwise they only
        number the events). Each window's label is the name. ``None`` keeps
        every event.
    reject_peak_to_peak : float | None
        Drop windows whose peak-to-peak amplitude on any EEG channel exceeds
        this many volts (e.g. ``150e-6``).
    """

    tmin: float = 0.0
    tmax: float | None = None
    window: float | None = Field(None, gt=0)
    stride: float | None = Field(None, gt=0)
    event_id: Annotated[list[str], Field(min_length=1)] | Annotated[dict[str, int], Field(min_length=1)] | None = None
    reject_peak_to_peak: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_way_to_cut(self) -> WindowConfig:
        if (self.tmax is None) == (self.window is None):
            raise ValueError(
                "say how to cut windows: tmax (event-locked, with tmin) or window (fixed length, with stride), "
                "not both and not neither."
            )
        if self.tmax is not None and self.tmax <= self.tmin:
            raise ValueError(f"tmax ({self.tmax}) must be after tmin ({self.tmin}).")
        if self.window is not None:
            if self.event_id is not None or self.tmin != 0.0:
                raise ValueError(
                    "event_id and tmin apply to event-locked windows (tmax); fixed-length windows use neither."
                )
            if self.stride is not None and self.stride > self.window:
                raise ValueError(
                    f"stride ({self.stride}) longer than window ({self.window}) would skip data; use stride <= window."
                )
        if self.stride is not None and self.window is None:
            raise ValueError("stride applies to fixed-length windows; set window as well.")
        return self

    @property
    def event_locked(self) -> bool:
        """Whether windows are cut around events (and labelled by them)."""
        return self.tmax is not None


class SweepsConfig(BaseConfig):
    """Label-budget and channel-coverage sweeps: every model again on less data, on the same folds.

    Each level runs every model (every seed) on the run's outer folds and
    scores the same test partitions; only what the models may learn from
    changes. The scores are in :meth:`ExperimentResult.get_sweep_scores` and
    plotted in the report, one line per model with a band over seeds. A
    level's fits are recorded and resumed like the main folds'.

    Parameters
    ----------
    train_fractions : list of float
        Learning curve: each fraction (0 < f < 1) of every training
        partition, drawn within each class (stratified: each class keeps
        ``ceil(f * n)`` of its ``n`` training windows, at least one) and
        nested: the windows of a smaller fraction are among those of a larger
        one, in every fold. The draw depends on ``random_state`` and the
        fold only, so every model (and seed) trains on the same windows.
        Regression and multilabel draw from all training windows alike.
    channel_counts : list of int
        Channel coverage: keep this many of the windows' channels (fewer
        than they have), drawn at random ``channel_draws`` times per count
        with ``random_state``, the same subsets for every model. The other
        channels are dropped before anything sees the windows; a backbone
        whose montage needs them interpolates or zero-fills them as its
        adaptation plan does for any recording lacking them.
    channel_draws : int
        Random subsets per count in ``channel_counts``.
    channel_regions : dict of str to list of str
        Named subsets of channels to keep (e.g. ``{"central": ["C3", "Cz",
        "C4"]}``); every name must be a channel of the windows.
    """

    train_fractions: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(default_factory=list)
    channel_counts: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    channel_draws: int = Field(1, ge=1, le=100)
    channel_regions: dict[str, Annotated[list[str], Field(min_length=1)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _something_to_sweep(self) -> SweepsConfig:
        if not (self.train_fractions or self.channel_counts or self.channel_regions):
            raise ValueError(
                "sweeps names nothing to sweep: give train_fractions (e.g. [0.1, 0.25, 0.5]), channel_counts "
                "(e.g. [4, 8]) or channel_regions (e.g. {'central': ['C3', 'Cz', 'C4']})."
            )
        for name, values in (("train_fractions", self.train_fractions), ("channel_counts", self.channel_counts)):
            if len(set(values)) != len(values):
                raise ValueError(f"sweeps.{name} repeats a value ({values}); give each level once.")
        return self


class ExperimentConfig(BaseConfig):
    """A whole cross-validated decoding experiment.

    Parameters
    ----------
    task : {"classification", "regression", "multilabel"}
        What ``y`` is. Classical models and frozen decoders' heads must do
        it, as scikit-learn's tags say: a classifier (``bandpower_lr``,
        ``LogisticRegression`` ...) for classification, a regressor
        (``bandpower_ridge``, ``ts_ridge``, ``Ridge`` ...) for regression;
        anything else is refused when the config is made. ``"multilabel"``:
        ``y`` is (n_windows, n_labels) of 0/1, several binary targets per
        window; a classifier is fitted per label (scikit-learn's
        ``MultiOutputClassifier``), a fine-tuned network gets one output per
        label and a binary cross-entropy loss. Its metrics are
        ``roc_auc``, ``average_precision`` (both macro over labels),
        ``f1_macro``, ``f1_micro``, ``hamming_loss`` (lower is better),
        ``subset_accuracy`` and the per-label ``roc_auc_per_class``,
        ``f1_per_class``, ``precision_per_class``, ``recall_per_class``
        (``roc_auc[<label>]`` ...); default ``roc_auc``, ``f1_macro``,
        ``hamming_loss``. Stratified CV strategies stratify on each window's
        combination of labels.
    models : dict of str to model config
        Named models to evaluate on the same folds.
    metrics : list of str | None
        Scores per fold. ``None`` uses ``accuracy``, ``balanced_accuracy`` and
        ``roc_auc`` (classification) or ``r2``, ``mae``, ``rmse``, ``pearson``.
        Also accepted: ``f1_macro``, ``cohen_kappa``, ``spearman``, every scikit-learn
        scorer name of the task (``f1_weighted``, ``average_precision``,
        ``neg_mean_absolute_error`` ..., in scikit-learn's sign), and
        ``precision_per_class``, ``recall_per_class``, ``f1_per_class`` (one
        score per class, ``recall[<class>]``); see :mod:`neurofm.metrics`.
        Other names are refused with the list.
    cv : CVConfig
        The outer cross-validation.
    cache_dir : str
        Root of the on-disk embedding cache (``~`` is expanded). Like the
        output folder, it must be private (yours, not writable by group or
        others) unless ``shared_folders`` says otherwise.
    shared_folders : bool
        The cache and output folders may be written by others (a lab's shared
        cache): every embedding, weight digest and progress record neurofm
        reads back from them must then carry a checksum keyed with your key
        (or the group's, ``shared_key_file``); others' entries are not read
        and are left as they are; the local engines' scratch files default
        to ``<cache_dir>/scratch-<uid>``. See :mod:`neurofm.sharing`.
    shared_key_file : str | None
        With ``shared_folders``: a group's key file, readable by its members
        and nobody else. ``None``: your own key
        (``~/.config/neurofm/shared-folders.key``, made on first use).
    execution : ExecutionConfig
        Where the fits run (default: one after the other in this process).
    random_state : int
        Seed for splits, heads and random initialisation of backbones.
    n_seeds : int
        Run every stochastic model this many times on the same folds, seed
        ``s`` with ``random_state + s`` for everything it draws: the weights
        of a random backbone (``weights="random"``) or a from-scratch
        network, training order, dropout, an attentive probe's
        initialisation, the inner-CV shuffle of a ridge probe or a tuned
        baseline, any ``random_state`` of a classical estimator or head that
        reads it. The folds stay those of ``random_state``. A deterministic
        model (a pretrained backbone with a logistic-regression head, a
        classical estimator that draws nothing, such as an LDA) runs
        once, as seed 0: more seeds would repeat its scores. Scores have a ``Seed`` column;
        :meth:`ExperimentResult.summary` gives mean and sd over seeds x
        folds, and the sd of the per-seed means; comparisons pair folds on
        the mean over seeds; a permutation test refits every seed on each
        permuted labelling and compares the mean over seeds x folds, as
        observed (see :meth:`ExperimentResult.compare`,
        :meth:`ExperimentResult.get_statistics`). Seed 0 alone is refitted
        (``refit``) and described by the artifacts.
    n_permutations : int
        Chance level by label permutation: refit every model on the same folds
        this many times with shuffled labels (within groups when the CV has a
        ``group_key``) and report p-values. 0 skips it; at most 100 000 (a
        p-value's resolution is 1 / (n + 1): beyond that, more permutations
        only cost time and record space).
    permute_trainable : bool
        Also permute trainable models (``NeuralFineTuneConfig``): that is
        ``n_permutations`` x folds trainings, so it is off by default and the
        result records that their permutation test was skipped.
    verbose : bool
        Progress bars and info logs.
    sensor_types : list of {"eeg", "meg", "mag", "grad"} | None
        Sensors every model sees (``"meg"`` = magnetometers and
        gradiometers). ``None`` (default) keeps every EEG and MEG channel of
        the windows; the channels kept per type are recorded in the result's
        ``meta["signal"]["sensor_types"]``.
    windows : WindowConfig | None
        How to cut windows when :meth:`Experiment.run` receives continuous
        recordings (``mne.io.Raw`` or a list of them); must be ``None`` when it
        receives windows.
    sweeps : SweepsConfig | None
        Learning curves (fractions of each training partition) and channel
        coverage (subsets of the channels) on the same folds, after the main
        run; see :class:`SweepsConfig`.
    refit : bool
        After the outer folds, fit every model once more on all windows (a
        fine-tuner takes its validation split from them, as in each fold)
        and keep it in the result (:meth:`ExperimentResult.get_refit_model`),
        ready for :meth:`ExperimentResult.export_model`. Scores, predictions
        and statistics still come from the folds alone: the refit model has
        seen every window, so nothing scores it. With an output folder it is
        saved there (``models/``), and a resumed run reads it back instead of
        fitting it again.
    """

    task: Literal["classification", "regression", "multilabel"] = "classification"
    models: dict[str, ModelConfig]
    metrics: list[str] | None = None
    cv: CVConfig = Field(default_factory=CVConfig)
    cache_dir: str = "~/.cache/neurofm"
    shared_folders: bool = False
    shared_key_file: str | None = None
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    random_state: int = 0
    n_seeds: int = Field(1, ge=1, le=1000)
    n_permutations: int = Field(0, ge=0, le=100_000)
    permute_trainable: bool = False
    verbose: bool = True
    sensor_types: list[Literal["eeg", "meg", "mag", "grad"]] | None = Field(None, min_length=1)
    windows: WindowConfig | None = None
    refit: bool = False
    sweeps: SweepsConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if not self.models:
            raise ValueError("models is empty; name at least one model, e.g. {'lr': ClassicalModelConfig(...)}.")
        check_key_file_declared(self.shared_folders, self.shared_key_file)
        allowed = metric_names(self.task)
        for metric in self.metrics or []:
            if metric not in allowed:
                other = metric_task(metric)
                scores = f" (it scores {other})" if other else ""
                close = closest_matches(metric, allowed)
                hint = f" Did you mean {format_choices(close)}?" if close else ""
                raise ValueError(
                    f"metric {metric!r} is not available for task={self.task!r}{scores}; "
                    f"allowed metrics are {format_choices(allowed)}.{hint}"
                )
        if self.task == "regression" and self.cv.strategy in STRATIFIED_STRATEGIES and not self.cv.stratify_bins:
            raise ValueError(
                f"CV strategy {self.cv.strategy!r} stratifies by class and cannot be used for regression; "
                "use 'kfold' or 'group_kfold', or stratify on quantile bins of the target with "
                "CVConfig(stratify_bins=...) (e.g. 5)."
            )
        for name, model in self.models.items():
            trainer = getattr(model, "trainer", None)
            if self.task == "classification" and getattr(trainer, "loss", "auto") != "auto":
                raise ValueError(
                    f"model {name!r}: trainer.loss={trainer.loss!r} is a regression loss, and the task is "
                    "classification; use loss='auto' (cross-entropy), or set task='regression'."
                )
        if self.task == "classification" and self.cv.stratify_bins is not None:
            raise ValueError(
                "CVConfig.stratify_bins bins a regression target; a classification split stratifies by class "
                "already: remove stratify_bins (or set task='regression')."
            )
        if self.task == "multilabel":
            _check_multilabel(self.cv.stratify_bins)
        from ..estimators.attentive_probe import check_probe_loss  # import cycle: it imports configs
        from ..estimators.classical import check_estimator_task  # import cycle: classical imports adapt, then configs

        for name, model in self.models.items():
            head = getattr(model, "head", None)
            if isinstance(head, AttentiveProbeConfig):
                try:
                    check_probe_loss(head.loss, self.task)
                except ValueError as exc:
                    raise ValueError(f"model {name!r}: {exc}") from None

        estimator_task = "classification" if self.task == "multilabel" else self.task
        # A classifier fitted on a regression target predicts only the values it saw (and the reverse fails
        # late, or scores nonsense): refuse it now. Trainable models build their head for the task themselves.
        for name, model in self.models.items():
            if isinstance(model, ClassicalModelConfig):
                # multilabel: a classifier, fitted once per label (MultiOutputClassifier)
                check_estimator_task(model.estimator, model.params, estimator_task, f"model {name!r}")
            elif isinstance(model, FrozenBackboneDecoderConfig) and isinstance(
                model.head, (RidgeProbeConfig, AttentiveProbeConfig)
            ):
                if self.task == "regression" and "class_weight" in model.head.model_fields_set:
                    raise ValueError(
                        f"model {name!r}: {type(model.head).__name__}.class_weight weighs classes, and a regression "
                        "target has none; remove class_weight from the head (or set task='classification')."
                    )
            elif isinstance(model, FrozenBackboneDecoderConfig):
                which = "the head" if "head" in model.model_fields_set else "the default head"
                check_estimator_task(
                    model.head.estimator, model.head.params, estimator_task, f"{which} of model {name!r}", head=True
                )
        return self

    @property
    def resolved_metrics(self) -> list[str]:
        """The metrics to compute, with the task's defaults filled in."""
        if self.metrics:
            return list(self.metrics)
        if self.task == "multilabel":
            return list(MULTILABEL_DEFAULT_METRICS)
        return list(CLASSIFICATION_METRICS[:3] if self.task == "classification" else REGRESSION_METRICS)


def _check_multilabel(stratify_bins: int | None) -> None:
    """Refuse, for task="multilabel", what does not apply to several binary targets."""
    if stratify_bins is not None:
        raise ValueError(
            "CVConfig.stratify_bins bins a regression target; a multilabel split stratifies on each window's "
            "combination of labels already: remove stratify_bins."
        )
