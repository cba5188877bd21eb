"""The cross-validated experiment: every model on the same leak-free folds.

Order of work in :meth:`Experiment.run`:

1. cut continuous recordings into windows as ``config.windows`` says
   (:func:`neurofm.windows.windows_from_recordings`), then validate windows,
   labels and metadata (:func:`neurofm.data.prepare_inputs`);
2. compute and check the outer folds (:func:`neurofm.cv.make_splits`);
3. prepare every model: plan input adaptations, resolve weights, build the
   estimators (all errors about the input surface here, before any compute);
4. run: a frozen backbone embeds all windows once (a label-free, deterministic
   function, served from the content-addressed cache when possible); heads
   and classical estimators are then fitted on each training partition only
   and scored on its test partition;
5. with ``refit``, after every fold and permutation: each model fitted once
   more on all windows, kept in the result and saved with it, never scored.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from .cache import stable_hash
from .configs import (
    AttentiveProbeConfig,
    ClassicalModelConfig,
    ExperimentConfig,
    FrozenBackboneDecoderConfig,
    NeuralFineTuneConfig,
    RidgeProbeConfig,
    ScratchModelConfig,
)
from .configs.models import attentive_heads_refusal
from .cv import label_combinations, make_splits, target_bins
from .data import Inputs, pick_channels, prepare_inputs
from .estimators.classical import (
    HEAD_DEFINITION,
    PerLabelClassifier,
    TunedPipeline,
    build_estimator,
    build_window_estimator,
    named_definition_version,
    standardised_head,
    uses_randomness,
)
from .estimators.ridge_probe import RidgeProbe
from .exceptions import ConfigError
from .execution import check_backend, computes_here, engine_session, map_tasks
from .metrics import check_metrics_for_classes, expand_metrics, greater_is_better
from .output_versions import keep_previous_result
from .progress import RunProgress, RunRecords, data_fingerprint, round_trip, write_record
from .refit_step import RefitStep
from .results import ARTIFACT_COLUMNS, OUTPUT_NAMES, SCORE_COLUMNS, ExperimentResult, run_metadata
from .run_summary import describe_data, describe_plan
from .sharing import check_trusted_folder, entry_key
from .sources import as_window_source
from .tasks import (
    ExtractionTask,
    FoldOutcome,
    FoldTask,
    PermutationTask,
    SharedInputs,
    computes_on_gpu,
    decode_means,
    encode_outcome,
    permute_labels,
    ridge_permutations,
    run_extraction,
    run_fold,
    run_permutation,
    split_frame,
    variant_key,
)
from .utils.check import validate_type
from .utils.files import claim_folder
from .utils.logging import log_level, logger
from .windows import experiment_windows, rejected_windows

__all__ = ["Experiment"]


@dataclass
class _PreparedModel:
    name: str
    config: Any
    estimator: Any  # unfitted estimator (head or window estimator)
    embedder: Any = None  # FoundationEmbedder for frozen backbones
    artifacts: list[tuple[int, str, str, Any]] = field(default_factory=list)
    weights: dict[str, Any] | None = None  # identity of the loaded weights (content, not path); None: no weights
    prepared: Any = None  # a backbone's checked plan (PreparedInput), made once per run and handed to every fit
    seed: int = 0  # which of the experiment's n_seeds runs of the model (random_state + seed) this is
    embedder_fitted: bool = False  # the plan fitted the embedder on the run's windows: extraction reuses that fit

    @property
    def trainable(self) -> bool:
        """Whether the model trains a backbone inside each fold (it gets raw windows, not features)."""
        return isinstance(self.config, (NeuralFineTuneConfig, ScratchModelConfig))

    @property
    def key(self) -> str:
        """This seed's name where a run keeps things per model: features, records, timings."""
        return variant_key(self.name, self.seed)

    @property
    def random_weights(self) -> bool:
        """Whether the model embeds with a randomly initialised frozen backbone (each seed draws its own)."""
        return self.embedder is not None and self.config.backbone.weights == "random"

    @property
    def stochastic(self) -> bool:
        """Whether another seed would give other scores: a network trained, random backbone weights, a probe
        initialised at random, an estimator (or head) that reads its ``random_state`` (an inner-CV shuffle
        included: a ridge probe's or a tuned pipeline's choice of hyper-parameter may change with it)."""
        if self.trainable:
            return True
        if self.random_weights:
            return True
        return isinstance(getattr(self.config, "head", None), AttentiveProbeConfig) or uses_randomness(self.estimator)


#: What neurofm writes directly in a cache folder: embeddings, weight digests, fine-tuning checkpoints, submitit
#: jobs (per user; "submitit" before they were), the local engines' scratch.
CACHE_NAMES = frozenset(
    {"embeddings", "weight-digests", "checkpoints", "submitit", "submitit-*", "joblib", "dask", "ray", "scratch-*"}
)


def fold_checkpoint_folder(model_name: str, fold: int, seed: int = 0) -> str:
    """Where a fold's checkpoints go in an output folder: ``checkpoints/<model name>/fold-<k>``, and
    ``checkpoints/<model name>/seed-<s>/fold-<k>`` for seed ``s > 0`` of ``n_seeds``.

    A name that is not a plain file name (a slash, ``..``, spaces) is made one,
    with a hash of the name, so that no model name points a write elsewhere.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_name)[:64].lstrip(".")
    if safe != model_name or not safe:
        safe = f"{safe}-{stable_hash(model_name)[:8]}"
    return f"checkpoints/{safe}/fold-{fold}" if seed == 0 else f"checkpoints/{safe}/seed-{seed}/fold-{fold}"


class Experiment:
    """Evaluate models by cross-validation on the same folds.

    Parameters
    ----------
    config : ExperimentConfig
        What to run.

    Examples
    --------
    >>> result = Experiment(config).run(epochs, y, sample_metadata=meta)  # doctest: +SKIP
    >>> result.summary()  # doctest: +SKIP
    """

    def __init__(self, config: ExperimentConfig):
        self.config = validate_type(config, ExperimentConfig, "config")

    def run(
        self,
        X: Any,
        y: Any,
        sample_metadata: pd.DataFrame | dict | None = None,
        *,
        sfreq: float | None = None,
        ch_names: list[str] | None = None,
        units: str | list[str] | None = None,
        positions: Any = None,
        output_dir: str | Path | None = None,
    ) -> ExperimentResult:
        """Run every model of the config on the outer folds.

        Parameters
        ----------
        X : mne.Epochs | array, shape (n_windows, n_channels, n_times) | mne.io.Raw | list of mne.io.Raw
            The windows. A numpy array needs ``sfreq`` and ``ch_names``.
            Continuous recordings are cut into windows as ``config.windows``
            says (every window keeps its recording's index in a ``recording``
            metadata column); MEG and EEG keep their units.
        y : array-like, shape (n_windows,) | None
            Class labels (strings or integers) or regression targets. With
            continuous recordings: ``None`` labels each event-locked window by
            its event, or one label per recording labels all of its windows
            (the CV must then keep recordings apart: a group-aware strategy
            with a ``group_key`` of one value per recording).
        sample_metadata : DataFrame | dict | None
            One row per window; must hold ``cv.group_key`` for group strategies.
            With continuous recordings, one row per recording (e.g. its
            ``subject``).
        sfreq : float | None
            Sampling rate of a numpy ``X`` in Hz.
        ch_names : list of str | None
            Channel names of a numpy ``X``.
        units : str | list of str | None
            Units of a numpy ``X`` (default ``"V"``; e.g. ``"uV"``).
        positions : sequence of (x, y, z) | None
            Sensor positions of a numpy ``X`` in metres, head frame, one per
            channel (``None`` for an unknown one), for backbones that place
            sensors (LUNA, REVE); ``mne.Epochs`` carry theirs in ``info``.
        output_dir : str | Path | None
            Where to save the results. Every finished (model, fold) and label
            permutation is also written there the moment it finishes; running
            the same experiment into the same folder again skips that work
            and gives the same results, so a run that crashed or was killed
            resumes where it stopped. One run at a time may write to a folder.

        Returns
        -------
        result : ExperimentResult
        """
        import mne  # heavy: import neurofm does not load mne

        # MNE's estimators (CSP, filters) log every fit at INFO; one local cluster serves the whole run.
        with mne.utils.use_log_level("warning"), log_level(self.config.verbose), engine_session():
            return ExperimentRun(self.config).execute(
                X,
                y,
                sample_metadata,
                sfreq=sfreq,
                ch_names=ch_names,
                units=units,
                positions=positions,
                output_dir=output_dir,
            )


class ExperimentRun:
    """One run of an experiment: its windows, folds, prepared models, records and engine.

    :meth:`Experiment.run` makes one per call, so nothing of a run outlives it
    and an :class:`Experiment` holds only its config.

    Parameters
    ----------
    config : ExperimentConfig
        What to run.
    """

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self._execution = config.execution
        self._key = None  # the key of shared folders (set when the run checks its folders)
        self._records = RunRecords()  # what is on record, with output_dir
        self._recordings: np.ndarray | None = None  # each window's recording, when known
        self._refits: RefitStep | None = None  # with config.refit: the models to fit once more on all windows
        self._data_hash: str | None = None  # the windows' fingerprint, with an output folder (records are keyed on it)
        self._in_sweep = False  # while the levels of a sweep run: folds only
        self._main_features: dict[str, Any] = {}  # what the main folds read, by model and seed

    def execute(self, X, y, sample_metadata, *, sfreq, ch_names, units, positions, output_dir) -> ExperimentResult:
        """Run every model on the outer folds (see :meth:`Experiment.run`)."""
        cfg = self.config
        # Every file a run writes lives in its output or cache folder, the engines' scratch files too.
        # In a cache shared with others, each user's engines keep their scratch in a folder of their own.
        cache_root = Path(cfg.cache_dir).expanduser()
        defaults = {
            "submitit_folder": str(cache_root / f"submitit-{os.getuid()}"),
            "scratch_folder": str(cache_root / f"scratch-{os.getuid()}" if cfg.shared_folders else cache_root),
        }
        self._execution = cfg.execution.model_copy(
            update={key: value for key, value in defaults.items() if getattr(cfg.execution, key) is None}
        )
        check_backend(self._execution)
        started = time.perf_counter()
        # Epochs from neurofm's loaders, or windows cut here, carry how many windows rejection dropped per file.
        rejected = rejected_windows(X)
        X, y, sample_metadata, recordings = experiment_windows(X, y, sample_metadata, cfg)
        rejected = rejected or rejected_windows(X)
        inputs = prepare_inputs(
            X,
            y,
            sample_metadata,
            sfreq=sfreq,
            ch_names=ch_names,
            units=units,
            task=cfg.task,
            sensor_types=cfg.sensor_types,
            positions=positions,
        )
        splits = make_splits(cfg.cv, inputs.y, inputs.metadata, cfg.task, cfg.random_state)
        # Each window's recording, where known (windows cut here from recordings, or a 'recording' column):
        # models pretrained on recording-level normalisation use its statistics (label-free, as in pretraining).
        self._recordings = (
            inputs.metadata["recording"].to_numpy()
            if inputs.metadata is not None and "recording" in inputs.metadata.columns
            else None
        )
        # Only into folders of neurofm's own (a config from someone else cannot aim the run at a home folder),
        # checked once the input is known good and before anything is written (weight digests, records).
        # Others may write a shared folder: what is read back from one must carry this key.
        self._key = entry_key(cfg.shared_folders, cfg.shared_key_file)
        check_trusted_folder(cfg.cache_dir, cfg.cache_dir, self._key, "The cache folder (cache_dir)")
        if output_dir is not None:
            check_trusted_folder(output_dir, output_dir, self._key, "The output folder")
        cache = claim_folder(cfg.cache_dir, "The cache folder (cache_dir)", CACHE_NAMES, self._key)
        out = None if output_dir is None else claim_folder(output_dir, "The output folder", OUTPUT_NAMES, self._key)
        if out is not None:  # before any compute: what changed since the result there, which is kept
            keep_previous_result(out, cfg.model_dump(mode="json"))
        logger.info("neurofm writes into %s%s", cache, "" if out is None else f" (cache) and {out} (results)")
        classes = np.unique(inputs.y) if cfg.task == "classification" else None
        if cfg.task == "multilabel":
            classes = np.asarray(inputs.label_names)  # the label names: per-label scores and prediction columns
        elif classes is not None:
            check_metrics_for_classes(cfg.resolved_metrics, classes)  # a binary-only score on 3 classes: refused now
        prepared = self._prepare_seeds(inputs)
        # Channel subsets checked (names, counts) before any compute, like the rest of the config.
        channel_levels = channel_subsets(cfg.sweeps, inputs.info.ch_names, cfg.random_state) if cfg.sweeps else []
        # Said before any compute: what the run was given and what it is about to do.
        logger.info("%s", describe_data(inputs, cfg.cv.group_key, rejected))

        groups = inputs.metadata[cfg.cv.group_key].to_numpy() if cfg.cv.group_key else None
        with contextlib.ExitStack() as stack:
            self._records = RunRecords()
            if output_dir is not None:
                progress = stack.enter_context(RunProgress(Path(output_dir).expanduser(), self._key).session())
                data_hash = data_fingerprint(inputs.X, inputs.y, groups, inputs.info.to_dict())
                self._data_hash = data_hash
                folders = {model.key: progress.model_folder(self._decisive(model, data_hash)) for model in prepared}
                self._records = RunRecords(progress, folders)
            logger.info("%s", self._plan(prepared, inputs, len(splits), output_dir is not None))
            result = self._compute(inputs, splits, prepared, classes, groups, started)
            if cfg.sweeps is not None:
                result.sweeps = self._sweeps(inputs, splits, prepared, classes, groups, channel_levels)
            if recordings is not None:
                result.meta["recordings"] = recordings
            if rejected:
                result.meta["rejected"] = rejected
            if output_dir is not None:
                result.save(output_dir)
        return result

    def _plan(self, prepared: list[_PreparedModel], inputs: Inputs, n_folds: int, recorded: bool) -> str:
        """The plan, with what the output folder and the embedding cache already hold."""
        on_record = (
            {m.key: self._records.count_recorded(m.key, n_folds, self._permutations_run(m)) for m in prepared}
            if recorded
            else None
        )
        cached: dict[str, tuple[int, int]] = {}
        for model in prepared:
            done = self._records.all_recorded(model.key, n_folds, self._permutations_run(model))
            if model.embedder is None or done or not model.embedder.cache_embeddings:
                continue
            # fit plans and identifies the weights only: the backbone is not loaded.
            fitted = model.embedder.fit(inputs.X, recordings=self._recordings, prepared=model.prepared)
            model.embedder_fitted = True  # a recording-statistics plan (REVE) read every window: not twice
            cached[model.name if model.seed == 0 else f"{model.name} (seed {model.seed})"] = fitted.count_cached(
                inputs.X, recordings=self._recordings
            )
        return describe_plan(self.config, prepared, n_folds, on_record, cached, len(inputs.X))

    def _decisive(self, model: _PreparedModel, data_hash: str, sweep: dict[str, Any] | None = None) -> dict[str, Any]:
        """What decides a model's fold and permutation results (not where or how fast they run); ``sweep``: the
        level of a sweep (its training fraction or channels) the results are of."""
        cfg = self.config
        # pragma: no mutate start - mutation testing: a key renamed or another dump mode renames every folder alike,
        # in every run, so it cannot change what is resumed (tests/mutation.py)
        decisive = {
            "name": model.name,
            "model": model.config.model_dump(mode="json"),
            "task": cfg.task,
            "metrics": list(cfg.resolved_metrics),
            "cv": cfg.cv.model_dump(mode="json"),
            "random_state": cfg.random_state,
            "data": data_hash,
        }
        # pragma: no mutate end
        # Seed s > 0 of a stochastic model (n_seeds) is a run of its own; seed 0 keeps the key of a one-seed run.
        if model.seed:
            decisive["seed"] = model.seed
        if sweep is not None:
            decisive["sweep"] = sweep
        # The config names the weights by path or hub id, which new bytes can take over; their content decides.
        # Models without weights keep the key (and the records) they had.
        if model.weights is not None:
            decisive["weights"] = model.weights
        # A named pipeline is defined by neurofm's code, not by the config: its definition's version decides too,
        # so records of an older definition are recomputed. Version 1 (the first definitions) keeps the key it had.
        version = named_definition_version(getattr(model.config, "estimator", None))
        if version is not None and version > 1:
            decisive["definition"] = version
        # Likewise a frozen backbone's classical head (standardised since definition 2): its records of the bare
        # head are recomputed. Other models (and the ridge probe head, unchanged) keep their keys.
        if isinstance(getattr(model.config, "head", None), ClassicalModelConfig):
            decisive["head_definition"] = HEAD_DEFINITION
        # A tuned pipeline's inner CV keeps the experiment's groups apart (it mixed them before): records of
        # grouped runs are recomputed; runs without groups split as before and keep theirs.
        # So do a multilabel task's per-label tuned pipelines and the probes' inner CV (ridge) and validation split
        # (attentive), grouped since the second part of issue 25.
        tuned = model.estimator.estimator if isinstance(model.estimator, PerLabelClassifier) else model.estimator
        head = getattr(model.config, "head", None)
        grouped_inside = (isinstance(tuned, TunedPipeline) and tuned.param_grid) or isinstance(
            head, (RidgeProbeConfig, AttentiveProbeConfig)
        )
        if cfg.cv.group_key and grouped_inside:
            decisive["inner_cv"] = "grouped"
        # A ridge probe's outputs were once scored as probabilities where they looked like ones (ece, brier):
        # its records are recomputed, now that they are decision values wherever they are read.
        if isinstance(head, RidgeProbeConfig):
            decisive["outputs"] = "decision_values"
        return decisive

    def _sweeps(self, inputs, splits, prepared, classes, groups, channel_levels) -> pd.DataFrame:
        """Every model (every seed) on less data, on the same folds: training fractions, then channel subsets."""
        cfg = self.config
        tables = []
        for fraction in cfg.sweeps.train_fractions:
            fewer = [
                (nested_fraction(train, inputs.y, fraction, cfg.task, cfg.random_state, fold), test)
                for fold, (train, test) in enumerate(splits)
            ]
            level = {"train_fraction": fraction}
            if cfg.task != "classification":  # stratified since the second part of issue 25: records made anew
                level["strata"] = "label combinations" if cfg.task == "multilabel" else "target bins"
            scores = self._sweep_level(inputs, fewer, prepared, classes, groups, level, self._main_features)
            tables.append(scores.assign(Sweep="train_fraction", Level=f"{fraction:g}", x=fraction))
        for label, keep in channel_levels:
            X, picked = pick_channels(inputs.X, inputs.info, keep)
            subset = Inputs(X, inputs.y, inputs.metadata, picked, label_names=inputs.label_names)
            # The models built anew for the subset's montage: a backbone's plan interpolates what it lacks.
            models = self._prepare_seeds(subset)
            level = {"channels": list(picked.ch_names)}
            scores = self._sweep_level(subset, splits, models, classes, groups, level)
            tables.append(scores.assign(Sweep="channels", Level=label, x=float(len(keep))))
        columns = ["Sweep", "Level", "x", *SCORE_COLUMNS]
        return pd.concat([table[columns] for table in tables], ignore_index=True)

    def _sweep_level(self, inputs, splits, prepared, classes, groups, level: dict[str, Any], known=None):
        """Every model's folds at one level of a sweep, recorded in folders of the level's own, as a score table.

        ``known``: features already made for these inputs (the main run's), used where they are.
        """
        # The same run on the level's records: a copy, so that the main run's records and refits stay as they are
        # whatever the level does. A sweep scores; nothing of it is refitted or permuted.
        level_run = copy.copy(self)
        level_run._refits, level_run._in_sweep = None, True
        progress = self._records.progress
        if progress is not None:
            folders = {m.key: progress.model_folder(self._decisive(m, self._data_hash, level)) for m in prepared}
            level_run._records = RunRecords(progress, folders)
        tag = stable_hash(level)[:12]
        known = {key: value for key, value in (known or {}).items() if value is not None}
        missing = [model for model in prepared if model.key not in known]
        features = {**known, **level_run._features(inputs, splits, missing, {})}
        tasks = level_run._fold_tasks(prepared, splits, classes, sweep=tag)
        shared = SharedInputs(features, inputs.y, groups, self._recordings)
        paths = [level_run._records.path(task.features_key, "fold", task.fold) for task in tasks]
        logger.info("Sweep %s: %d fits", json.dumps(level)[:200], len(tasks))
        outcomes = level_run._map_resumable(run_fold, tasks, shared, paths, FoldOutcome.from_record)
        rows = [
            (task.model_name, task.fold, task.seed, metric, value)
            for task, outcome in zip(tasks, outcomes, strict=True)
            for metric, value in outcome.scores.items()
        ]
        return pd.DataFrame(rows, columns=SCORE_COLUMNS)

    def _fold_tasks(self, prepared: list[_PreparedModel], splits, classes, sweep: str = "") -> list[FoldTask]:
        """One task per model, seed and fold (``sweep``: the level's tag, where its checkpoints go)."""
        metrics = tuple(expand_metrics(self.config.resolved_metrics, classes))  # one name per class where per class
        return [
            FoldTask(
                model.name,
                fold,
                self._fold_estimator(model, fold, sweep),
                model.trainable,
                train,
                test,
                classes,
                metrics,
                model.prepared if model.trainable else None,
                model.seed,
            )
            for model in prepared
            for fold, (train, test) in enumerate(splits)
        ]

    def _fold_estimator(self, model: _PreparedModel, fold: int, sweep: str = "") -> Any:
        """A fresh estimator for one fold: a fine-tuned model's checkpoints go into the output folder, if any
        (a sweep level's into a folder of its own)."""
        estimator = clone(model.estimator)
        progress = self._records.progress
        if model.trainable and progress is not None and model.config.checkpoints.directory is None:
            folder = fold_checkpoint_folder(model.name, fold, model.seed)
            if sweep:
                folder = folder.replace("checkpoints/", f"checkpoints/sweeps/{sweep}/", 1)
            estimator.set_params(checkpoint_dir=str(progress.output_dir / folder))
        return estimator

    def _permutations_run(self, model: _PreparedModel) -> int:
        """How many label permutations of ``model`` this run computes (trainable ones only when asked; none at the
        level of a sweep, whose records are those of folds alone)."""
        cfg = self.config
        if self._in_sweep:
            return 0
        return cfg.n_permutations if cfg.permute_trainable or not model.trainable else 0

    def _map_resumable(self, function, tasks: list, shared: Any, paths: list, decode) -> list:
        """``map_tasks`` that reads finished tasks from their records and records the others as they finish."""
        results, todo = self._records.resume(paths, decode)
        call = self._records.recording(function, encode_outcome)
        items = [(tasks[i], paths[i]) for i in todo]
        on_gpu = [computes_on_gpu(tasks[i]) for i in todo]
        for i, fresh in zip(todo, map_tasks(self._execution, call, items, shared, on_gpu), strict=True):
            results[i] = fresh if paths[i] is None else decode(round_trip(encode_outcome(fresh)))
        return results

    def _compute(self, inputs, splits, prepared, classes, groups, started) -> ExperimentResult:
        """Features first, then every (model, fold) fit as one task, then the permutations; one result."""
        cfg = self.config
        timings: dict[str, float] = {}
        first_seeds = [model for model in prepared if model.seed == 0]
        if cfg.refit:  # seed 0 alone: one model per name to keep, export and share
            self._refits = RefitStep(self._records, self._execution, self._recordings, first_seeds)
        features = self._features(inputs, splits, prepared, timings)
        self._main_features = features  # a learning curve's levels read the same windows and embeddings
        tasks = self._fold_tasks(prepared, splits, classes)
        logger.info("%d model(s) x %d folds on %s", len(first_seeds), len(splits), cfg.execution.backend)
        by_key = {model.key: model for model in prepared}
        # Features, labels and groups go to each worker once; a task names its model and fold.
        shared = SharedInputs(features, inputs.y, groups, self._recordings)
        paths = [self._records.path(task.features_key, "fold", task.fold) for task in tasks]
        outcomes = self._map_resumable(run_fold, tasks, shared, paths, FoldOutcome.from_record)
        scores, predictions, split_rows = [], [], []
        for task, outcome in zip(tasks, outcomes, strict=True):
            by_key[task.features_key].artifacts.extend(outcome.artifacts)
            scores.extend(
                (task.model_name, task.fold, task.seed, metric, value) for metric, value in outcome.scores.items()
            )
            if outcome.predictions is not None:
                # after the record is read: records of seed 0 from before seeds existed have no Seed column
                outcome.predictions.insert(2, "Seed", task.seed)
                predictions.append(outcome.predictions)
            if task.seed == 0:  # every seed runs on the same folds
                split_rows.append(split_frame(task.model_name, task.fold, task.train, task.test))
            timings[task.model_name] += outcome.seconds
        artifacts = []
        for model in first_seeds:
            seeds = [m for m in prepared if m.name == model.name]
            self._chance_level(seeds, features, inputs.y, groups, splits, classes, scores, timings)
            # Artifacts describe seed 0's run (its embedding, adaptation, per-fold training); the seeds are listed.
            artifacts.extend((model.name, *row) for row in model.artifacts)
            if cfg.n_seeds > 1:
                artifacts.append((model.name, -1, "seeds", "random_states", [cfg.random_state + m.seed for m in seeds]))
            artifacts.append((model.name, -1, "timing", "wall_seconds", round(timings[model.name], 3)))
        # After every fold and permutation, so that nothing scored depends on whether the run refits.
        refit_models, refit_folders, refit_meta = (
            self._refits.run(first_seeds, features, inputs, groups) if self._refits is not None else ({}, {}, None)
        )
        meta = run_metadata(inputs, time.perf_counter() - started, timings)
        if refit_meta is not None:
            meta["refit"] = refit_meta
        return ExperimentResult(
            scores=pd.DataFrame(scores, columns=SCORE_COLUMNS),
            predictions=pd.concat(predictions, ignore_index=True),
            splits=pd.concat(split_rows, ignore_index=True),
            artifacts=pd.DataFrame(artifacts, columns=ARTIFACT_COLUMNS),
            config=cfg.model_dump(mode="json"),
            meta=meta,
            refit_models=refit_models,
            refit_folders=refit_folders,
            metadata=inputs.metadata,
        )

    def _features(self, inputs, splits, prepared, timings: dict[str, float]) -> dict[str, Any]:
        """What each model's folds read: embeddings (as extraction shards into the shared cache; models that share a
        backbone config share one extraction), windows adapted once for a trainable model, or the windows."""
        extracted: dict[str, tuple[str, np.ndarray, Any]] = {}
        adapted: dict[str, Any] = {}  # trainable models' windows, adapted once per plan
        features: dict[str, Any] = {}
        for model in prepared:
            t0 = time.perf_counter()
            if self._records.all_recorded(model.key, len(splits), self._permutations_run(model)) and (
                self._refits is None or model.seed > 0 or model.name not in self._refits.todo
            ):
                features[model.key] = None  # nothing of this model will run: its windows need no embedding
                if model.embedder is not None:
                    fitted = model.embedder.fit(inputs.X, recordings=self._recordings, prepared=model.prepared)
                    model.artifacts.extend(fitted.get_artifacts())
                    model.artifacts.append(
                        (-1, "embedding_cache", "skipped", "every fold and permutation was on record")
                    )
            elif model.embedder is not None:
                features[model.key] = self._embed(model, inputs.X, extracted)
            elif model.trainable:
                features[model.key] = _trainable_windows(inputs, model, adapted)
            else:
                features[model.key] = _in_memory(inputs, model.name)
            timings[model.name] = timings.get(model.name, 0.0) + time.perf_counter() - t0
        return features

    def _chance_level(self, seeds, features, y, groups, splits, classes, scores, timings) -> None:
        """A model's permutation test over its seeds (or why it is skipped), into seed 0's artifacts."""
        cfg = self.config
        model = seeds[0]
        if cfg.n_permutations and model.trainable and not cfg.permute_trainable:
            model.artifacts.append(
                (
                    -1,
                    "permutation_test",
                    "skipped",
                    f"trainable model: {cfg.n_permutations} x {len(splits)} x {len(seeds)} trainings (permutations "
                    "x folds x seeds); set permute_trainable=True to run them",
                )
            )
        elif cfg.n_permutations:
            t0 = time.perf_counter()
            # The mean over every seed and fold: the statistic each permutation is scored with, too.
            observed = {
                m: float(np.nanmean([s[4] for s in scores if s[0] == model.name and s[3] == m]))
                for m in expand_metrics(cfg.resolved_metrics, classes)
            }
            model.artifacts.extend(self._permutation_test(seeds, features, y, groups, splits, classes, observed))
            timings[model.name] += time.perf_counter() - t0

    def _signal_and_run_args(self, inputs: Inputs, random_state: int) -> dict[str, Any]:
        """What every backbone estimator is told about the windows and the run (``random_state``: its seed's)."""
        cfg = self.config
        return {
            "sfreq": inputs.info.sfreq,
            "ch_names": list(inputs.info.ch_names),
            "units": list(inputs.info.units),
            "sensor_positions": None if inputs.info.positions is None else list(inputs.info.positions),
            "passband": inputs.info.passband,  # what the windows were filtered to: the passband note reads it
            "cache_dir": cfg.cache_dir,
            "shared_folders": cfg.shared_folders,
            "shared_key_file": cfg.shared_key_file,
            "random_state": random_state,
            "verbose": cfg.verbose,
        }

    def _head(self, head_cfg: Any, backbone_cfg: Any, random_state: int) -> Any:
        """The estimator a frozen backbone's embeddings go to in each fold, seeded with ``random_state``."""
        cfg = self.config
        if isinstance(head_cfg, AttentiveProbeConfig):
            from .estimators.attentive_probe import AttentiveProbe  # lazy: training loads torch
            from .models.registry import get_model_spec  # lazy: as the frozen branch's, the backbone stack on use

            spec = get_model_spec(backbone_cfg.model_key)
            if backbone_cfg.pooling != "flatten":
                raise ConfigError(
                    f"head AttentiveProbeConfig pools the backbone's tokens itself, so the tokens are what is embedded "
                    f"and cached: set the backbone's pooling='flatten' (got {backbone_cfg.pooling!r}); the result "
                    "records the pooling as 'attentive'."
                )
            token_dim = head_cfg.token_dim or spec.embedding_dim
            if token_dim % head_cfg.n_heads:
                raise ConfigError(attentive_heads_refusal(head_cfg.n_heads, token_dim, spec.key))
            return AttentiveProbe(
                task=cfg.task,
                token_dim=token_dim,
                n_queries=head_cfg.n_queries,
                n_heads=head_cfg.n_heads,
                max_epochs=head_cfg.max_epochs,
                lr=head_cfg.lr,
                weight_decay=head_cfg.weight_decay,
                batch_size=head_cfg.batch_size,
                early_stopping_patience=head_cfg.early_stopping_patience,
                validation_fraction=head_cfg.validation_fraction,
                class_weight=head_cfg.class_weight if cfg.task != "regression" else None,  # multilabel: per label
                loss=head_cfg.loss,
                huber_delta=head_cfg.huber_delta,
                random_state=random_state,
            )
        if isinstance(head_cfg, RidgeProbeConfig):
            return RidgeProbe(
                task=cfg.task,
                alphas=tuple(head_cfg.alphas),
                inner_splits=head_cfg.inner_splits,
                class_weight=head_cfg.class_weight if cfg.task == "classification" else None,
                random_state=random_state,
            )
        # Standardised embeddings (the scaler fitted in each fold, on its training partition): a logistic
        # regression on the backbone's raw scale spends most of a run converging.
        head = standardised_head(build_estimator(head_cfg.estimator, head_cfg.params, random_state))
        return PerLabelClassifier(head) if cfg.task == "multilabel" else head  # one classifier per label

    def _prepare_seeds(self, inputs: Inputs) -> list[_PreparedModel]:
        """Every model, prepared once per seed it runs: ``n_seeds`` times when stochastic, else once (seed 0)."""
        prepared = []
        for name, model_cfg in self.config.models.items():
            first = self._prepare(name, model_cfg, inputs)
            prepared.append(first)
            if first.stochastic:
                prepared += [self._prepare(name, model_cfg, inputs, seed) for seed in range(1, self.config.n_seeds)]
        return prepared

    def _prepare(self, name: str, model_cfg: Any, inputs: Inputs, seed: int = 0) -> _PreparedModel:
        """One model of the config, built for the windows with the seed's ``random_state``, every input checked."""
        cfg = self.config
        random_state = cfg.random_state + seed
        model = self._build(name, model_cfg, inputs, random_state)
        model.seed = seed
        return model

    def _build(self, name: str, model_cfg: Any, inputs: Inputs, random_state: int) -> _PreparedModel:
        cfg = self.config
        if isinstance(model_cfg, ClassicalModelConfig):
            estimator = build_window_estimator(
                model_cfg.estimator,
                model_cfg.params,
                inputs.info.sfreq,
                random_state,
                units=inputs.info.units,
                input=model_cfg.input,
            )
            if cfg.task == "multilabel":
                estimator = PerLabelClassifier(estimator)  # one classifier (and its own tuning) per label
            return _PreparedModel(name, model_cfg, estimator)
        if isinstance(model_cfg, FrozenBackboneDecoderConfig):
            from .estimators.frozen import FoundationEmbedder  # lazy: keeps the backbone stack out of import neurofm

            head = self._head(model_cfg.head, model_cfg.backbone, random_state)
            embedder = FoundationEmbedder.from_config(
                model_cfg.backbone, **self._signal_and_run_args(inputs, random_state)
            )
            # Adaptation plan and weights resolved before any compute; the device where it will be computed.
            prepared = embedder.check_input(
                inputs.X.shape,
                device_here=computes_here(self._execution),
                recordings_known=self._recordings is not None,
            )
            model = _PreparedModel(
                name, model_cfg, head, embedder=embedder, weights=prepared.weights, prepared=prepared
            )
            if isinstance(model_cfg.head, AttentiveProbeConfig):
                # The backbone's row says what is cached (the tokens, pooling='flatten'); the head pools them.
                model.artifacts += [(-1, "head", "pooling", "attentive"), (-1, "head", "token_dim", head.token_dim)]
            return model
        if isinstance(model_cfg, (NeuralFineTuneConfig, ScratchModelConfig)):
            return self._build_trainable(name, model_cfg, inputs, random_state)
        raise ConfigError(f"Model {name!r} has an unsupported config type {type(model_cfg).__name__}.")

    def _build_trainable(self, name: str, model_cfg: Any, inputs: Inputs, random_state: int) -> _PreparedModel:
        """A network trained in each fold (fine-tuned or from scratch), built for these windows and run once before
        any compute, on the device where it will train."""
        cfg = self.config
        if isinstance(model_cfg, NeuralFineTuneConfig):
            from .estimators.neural import NeuralFineTuner as Trainer  # heavy: loads torch
        else:
            from .estimators.scratch import ScratchTrainer as Trainer  # heavy: loads torch
        trainer = Trainer(
            config=model_cfg,
            task=cfg.task,
            metrics=cfg.resolved_metrics,
            **self._signal_and_run_args(inputs, random_state),
        )
        prepared = trainer.check_input(
            inputs.X.shape,
            inputs.y,
            device_here=computes_here(self._execution),
            recordings_known=self._recordings is not None,
        )
        if isinstance(model_cfg, ScratchModelConfig):
            # Its starting weights are its seed, which the records' key holds already (random_state, seed).
            return _PreparedModel(name, model_cfg, trainer, prepared=prepared)
        # Trained in a worker later: the bytes it loads must be those the records are keyed on.
        trainer.set_params(expected_weights=prepared.weights)
        return _PreparedModel(name, model_cfg, trainer, weights=prepared.weights, prepared=prepared)

    def _embed(self, model: _PreparedModel, X, extracted: dict[str, tuple[str, np.ndarray, Any]]) -> np.ndarray:
        key = model.config.backbone.model_dump_json()
        if model.random_weights:  # each seed draws its own weights, hence its own embeddings
            key += f"\x00random_state={model.embedder.random_state}"
        recordings = self._recordings
        if key in extracted:
            # The same backbone config on the same windows: the owner's fitted embedder is this model's too.
            owner, features, fitted = extracted[key]
            for fold, kind, name, value in fitted.get_artifacts():
                if kind == "embedding_cache" and name in ("hits", "misses"):
                    value = len(X) if name == "hits" else 0
                model.artifacts.append((fold, kind, name, value))
            model.artifacts.append((-1, "embedding_cache", "shared_with", owner))
            return features
        embedder = (
            model.embedder
            if model.embedder_fitted
            else model.embedder.fit(X, recordings=recordings, prepared=model.prepared)
        )
        features = (
            embedder.transform(X, recordings=recordings)
            if self.config.execution.backend == "sequential"
            else self._extract_in_shards(embedder, X, recordings)
        )
        model.artifacts.extend(embedder.get_artifacts())
        extracted[key] = (model.name, features, embedder)
        return features

    def _extract_in_shards(self, embedder, X, recordings=None) -> np.ndarray:
        """Embed contiguous ranges of windows on the workers; each writes its own cache packs."""
        execution = self._execution
        source = as_window_source(X)
        n_shards = min(execution.extraction_shards or execution.n_jobs, max(1, -(-len(source) // embedder.batch_size_)))
        per_shard = -(-len(source) // n_shards)
        per_shard = -(-per_shard // embedder.batch_size_) * embedder.batch_size_  # whole batches per shard
        bounds = [(start, min(start + per_shard, len(source))) for start in range(0, len(source), per_shard)]
        worker = copy.copy(embedder)  # the fitted plan and fingerprint travel; __getstate__ drops the backbone
        worker.verbose = False
        tasks = [
            ExtractionTask(worker, source.block(start, stop), None if recordings is None else recordings[start:stop])
            for start, stop in bounds
        ]
        logger.info("Extracting %s embeddings in %d shard(s) on %s", embedder.model_key, len(tasks), execution.backend)
        outcomes = map_tasks(execution, run_extraction, tasks, on_gpu=[embedder.device != "cpu"] * len(tasks))
        features = np.concatenate([embeddings for embeddings, *_ in outcomes], axis=0)
        embedder.record_extraction(
            features,
            *(sum(outcome[i] for outcome in outcomes) for i in (1, 2, 3)),
            made_on=[outcome[4] for outcome in outcomes],
        )
        return features

    def _permutation_test(self, seeds, features, y, groups, splits, classes, observed) -> list[tuple]:
        """Chance level: the same folds and estimator, labels shuffled (within groups when grouped).

        With several seeds, every seed is refitted on each permuted labelling
        (the same labellings for all) and the permutation's score is the mean
        over seeds and folds, as the observed score is: both are the same
        statistic, so the p-value is exact for it.
        """
        cfg = self.config
        null = {metric: np.zeros(cfg.n_permutations) for metric in observed}
        for model in seeds:
            # The same seed for every seed's shuffles: each seed meets the same permuted labellings.
            rng = np.random.default_rng(cfg.random_state)
            trainable = model.trainable
            tasks = [
                PermutationTask(
                    model.estimator,
                    trainable,
                    permute_labels(y, groups, rng),
                    splits,
                    classes,
                    tuple(observed),
                    model.prepared if trainable else None,
                )
                for _ in range(cfg.n_permutations)
            ]
            shared = SharedInputs({model.key: features[model.key]}, y, groups, self._recordings)
            paths = [self._records.path(model.key, "permutation", i) for i in range(len(tasks))]
            if isinstance(model.estimator, RidgeProbe):
                permutations = self._closed_form_permutations(model, features[model.key], tasks, paths, groups)
            else:
                permutations = self._map_resumable(run_permutation, tasks, shared, paths, decode_means)
            for i, means in enumerate(permutations):
                for metric in observed:
                    null[metric][i] += means[metric] / len(seeds)
        rows = [(-1, "permutation_test", "n_permutations", cfg.n_permutations)]
        if len(seeds) > 1:
            rows.append((-1, "permutation_test", "statistic", f"mean over {len(seeds)} seeds x {len(splits)} folds"))
        if isinstance(seeds[0].estimator, RidgeProbe):
            rows.append((-1, "permutation_test", "method", "closed form (one decomposition per fold)"))
        for metric, values in null.items():
            better = values >= observed[metric] if greater_is_better(metric) else values <= observed[metric]
            rows += [
                (-1, "permutation_test", f"{metric}_observed", observed[metric]),
                (-1, "permutation_test", f"{metric}_chance_mean", float(np.mean(values))),
                (-1, "permutation_test", f"{metric}_p_value", float((better.sum() + 1) / (len(values) + 1))),
            ]
        return rows

    def _closed_form_permutations(self, model, features, tasks: list, paths: list, groups) -> list[dict[str, float]]:
        """A ridge probe's permutations from one set of decompositions per fold; recorded as refitted ones are.

        The scores equal those :func:`run_permutation` gives on the same
        permuted labels (tests/test_ridge_probe.py), so a record written
        either way serves both.
        """
        results, todo = self._records.resume(paths, decode_means)
        if todo:
            first = tasks[todo[0]]
            fresh = ridge_permutations(
                model.estimator,
                features,
                [tasks[i].y for i in todo],
                first.splits,
                first.classes,
                first.metrics,
                groups,  # the inner folds grouped as a refit's fit groups them
            )
            key = None if self._records.progress is None else self._records.progress.key
            for i, means in zip(todo, fresh, strict=True):
                if paths[i] is not None:
                    write_record(paths[i], means, key)
                results[i] = decode_means(round_trip(means))
        return results


def _in_memory(inputs: Inputs, model_name: str) -> np.ndarray:
    """The windows as one array, for models that need them all (raw-window baselines, fine-tuning)."""
    if isinstance(inputs.X, np.ndarray):
        return inputs.X
    if "in_memory" not in inputs.extra:
        gigabytes = len(inputs.X) * inputs.X.window_bytes / 2**30
        logger.warning(
            "%s needs every window in memory: loading %s (%.2f GB). Frozen backbones stream instead.",
            model_name,
            inputs.X.describe(),
            gigabytes,
        )
        inputs.extra["in_memory"] = inputs.X.to_array()
    return inputs.extra["in_memory"]


def _trainable_windows(inputs: Inputs, model: _PreparedModel, adapted: dict[str, Any]) -> Any:
    """A trainable model's windows: adapted once per run (shared by models of one plan), unless its recording
    statistics depend on the windows each fold's fit sees, which then adapts them itself."""
    windows = _in_memory(inputs, model.name)
    plan = model.prepared.plan
    if plan.recording_statistics:
        return windows
    key = json.dumps(plan.describe(), sort_keys=True, default=str)
    if key not in adapted:
        adapted[key] = model.prepared.adapt(windows)
    return adapted[key]


def nested_fraction(
    train: np.ndarray, y: np.ndarray, fraction: float, task: str, random_state: int, fold: int, bins: int = 5
):
    """The training windows a learning curve keeps at ``fraction`` of one fold's training partition.

    Within each stratum, the windows are put in one random order that
    depends on ``random_state`` and the fold alone, and the first
    ``ceil(fraction * n)`` (at least one) are kept: a smaller fraction's
    windows are among a larger one's, and every model gets the same ones.
    Returned in the partition's order. The strata: each class; for
    multilabel, each combination of labels (those held by one window pooled);
    for regression, ``bins`` quantile bins of the partition's targets, so that
    a small fraction keeps the target's spread.
    """
    rng = np.random.default_rng([random_state, fold])
    if task == "classification":
        strata = y[train]
    elif task == "multilabel":
        strata = label_combinations(y[train], 2)
    else:
        strata = target_bins(y[train], bins)
    kept = []
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        order = rng.permutation(members)
        kept.append(order[: max(1, int(np.ceil(fraction * len(members) - 1e-9)))])
    return train[np.sort(np.concatenate(kept))]


def channel_subsets(sweeps, ch_names, random_state: int) -> list[tuple[str, list[int]]]:
    """The channel-coverage levels: ``(label, channel indices)``, drawn counts first, then named regions.

    Raises a :class:`ConfigError` naming the problem for a count not below the
    number of channels or a region naming a channel the windows lack.
    """
    names = list(ch_names)
    rng = np.random.default_rng(random_state)
    levels = []
    for count in sweeps.channel_counts:
        if count >= len(names):
            raise ConfigError(
                f"sweeps.channel_counts asks for {count} channels, and the windows have {len(names)}: a coverage "
                f"level keeps fewer than all; use counts below {len(names)}."
            )
        for draw in range(sweeps.channel_draws):
            keep = sorted(rng.choice(len(names), size=count, replace=False).tolist())
            label = f"{count} random" if sweeps.channel_draws == 1 else f"{count} random (draw {draw + 1})"
            levels.append((label, keep))
    for region, members in sweeps.channel_regions.items():
        missing = [name for name in members if name not in names]
        if missing:
            raise ConfigError(
                f"sweeps.channel_regions[{region!r}] names channels the windows lack: {missing}; the windows have "
                f"{names}. Use those names (they are matched exactly)."
            )
        levels.append((region, sorted(names.index(name) for name in dict.fromkeys(members))))
    return levels
