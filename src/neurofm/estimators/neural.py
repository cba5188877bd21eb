"""Trainable decoders: a backbone plus a neural head, trained inside the training partition.

:class:`NeuralFineTuner` is a scikit-learn estimator: ``__init__`` stores the
config and signal arguments, ``fit`` builds the backbone, applies the train
mode (frozen, full, or a PEFT method), trains, keeps the best epoch and writes
checkpoints; ``predict``/``predict_proba`` use the restored best state. It
implements the :class:`~neurofm.protocols.NeuralTrainable` protocol:
``get_training_history``, ``get_checkpoint_manifest``, ``get_model_card_info``,
``get_failure_diagnostics`` and ``get_artifact_metadata``.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
from sklearn.utils.validation import check_is_fitted

from ..adapt import (
    check_recordings,
    plan_adaptation,
    recording_statistics,
    uses_recording_statistics,
    window_statistics,
)
from ..adapters import (
    PEFT_MODES,
    check_quantization,
    describe_quantization,
    match_targets,
    resolve_targets,
)
from ..configs import NeuralFineTuneConfig
from ..cv import grouped_holdout
from ..data import check_multilabel_targets, prepare_inputs
from ..devices import check_device, check_precision, deterministic_algorithms, resolve_device, resolve_precision
from ..embed import warn_slow_precision
from ..exceptions import ConfigError, DataValidationError
from ..metrics import PER_CLASS_SUFFIX
from ..models.hf import check_hf_checkpoint, encoder_skeleton
from ..models.registry import get_model_spec
from ..models.weights import resolve_weights, weights_identity
from ..protocols import NeuralTrainable
from ..sharing import entry_key
from ..training import predict_network, train_network
from ..utils.check import format_choices
from ..utils.files import claim_folder
from .checkpoints import (
    CHECKPOINT_NAMES,
    checkpoint_manifest,
    mha_base_parameters,
    rebuild_from_checkpoint,
    write_checkpoints,
)
from .decoder_net import DecoderNet, build_decoder_net
from .prepared import AdaptedWindows, PreparedInput, adapt_in_batches, estimator_settings

__all__ = ["NeuralFineTuner", "DecoderNet", "TrainedNetwork"]

#: Parameters a check does not depend on: the weights' expected identity is set from the check's own result.
_UNCHECKED_PARAMS = ("expected_weights", "verbose", "checkpoint_dir")


class TrainedNetwork:
    """What every network trained on :func:`~neurofm.training.train_network` shares, whatever built it.

    The validation split, the class weights, the monitor and checkpoint
    folder checks, prediction and the training reports, written once for
    :class:`NeuralFineTuner` (a pretrained backbone) and
    :class:`~neurofm.estimators.scratch.ScratchTrainer` (a braindecode
    network from random weights), so both train and are judged alike. A
    subclass provides ``_config()`` (its config, with ``trainer``,
    ``checkpoints`` and ``device``), ``_adapt(X, recordings)`` and the
    attributes its ``fit`` sets (``net_``, ``device_``, ``precision_``,
    ``history_``, ``checkpoint_manifest_``, ``diagnostics_``).
    """

    def _check_device(self, cfg, device_here: bool) -> None:
        """The device and precision: where the device is known, everything about it; elsewhere its name only."""
        check_device(cfg.device.device, here=device_here)
        device = resolve_device(cfg.device.device) if device_here else cfg.device.device
        if device_here or device != "auto":
            if cfg.device.precision == "fp16" and not device.startswith("cuda"):
                raise ConfigError("precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU.")
        if device_here:
            check_precision(cfg.device.precision, device)

    def _check_monitor(self, cfg) -> None:
        monitor = cfg.checkpoints.monitor
        has_val = cfg.trainer.validation_fraction > 0
        allowed = ["train_loss", "lr", "grad_norm_mean", "grad_norm_max"]
        per_class = []
        if has_val:
            allowed += ["val_loss"] + [f"val_{m}" for m in (self.metrics or []) if not m.endswith(PER_CLASS_SUFFIX)]
            # A per-class metric is logged once per class, by class index: val_recall[0], val_recall[1] ...
            per_class = [m.removesuffix(PER_CLASS_SUFFIX) for m in (self.metrics or []) if m.endswith(PER_CLASS_SUFFIX)]
            allowed += [f"val_{base}[<class index>]" for base in per_class]
        if monitor not in allowed and not any(re.fullmatch(rf"val_{b}\[\d+\]", monitor) for b in per_class):
            hint = (
                " (validation metrics need trainer.validation_fraction > 0)"
                if monitor.startswith("val_") and not has_val
                else ""
            )
            raise ConfigError(
                f"checkpoint monitor {monitor!r} is not logged; use one of {format_choices(allowed)}{hint}."
            )

    def _checkpoint_root(self, cfg) -> Path:
        """Where checkpoints go: a folder of neurofm's own (a config cannot aim them into a home or project folder).

        ``checkpoints.directory`` when set, else ``checkpoint_dir`` (the
        run's output folder), else ``<cache_dir>/checkpoints``.

        Raises
        ------
        ConfigError
            When the folder holds files neurofm did not write and no marker.
        """
        root = cfg.checkpoints.directory or self.checkpoint_dir or Path(self.cache_dir) / "checkpoints"
        return claim_folder(
            root, "checkpoints.directory", CHECKPOINT_NAMES, entry_key(self.shared_folders, self.shared_key_file)
        )

    def _targets(self, y: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray | None]:
        """Training targets (class indices, or floats) and, with ``class_weight``, each class's loss weight."""
        if self.task == "multilabel":
            # (n, n_labels) of 0/1 for BCEWithLogitsLoss; class_weight: each label's pos_weight, negatives / positives
            y = check_multilabel_targets(y).astype(np.float32)
            self.classes_ = np.arange(y.shape[1])
            positives = y.sum(axis=0)
            weights = (len(y) - positives) / np.maximum(positives, 1) if cfg.trainer.class_weight else None
            return y, weights
        if self.task != "classification":
            return y.astype(np.float32), None
        self.classes_, y_index = np.unique(y, return_inverse=True)
        counts = np.bincount(y_index, minlength=len(self.classes_))
        weights = len(y_index) / (len(self.classes_) * np.maximum(counts, 1)) if cfg.trainer.class_weight else None
        return y_index, weights

    def _validation_split(self, y_index, groups, cfg) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(len(y_index))
        fraction = cfg.trainer.validation_fraction
        if fraction <= 0:
            return idx, idx[:0]
        grouped = None if groups is None else grouped_holdout(groups, fraction, self.random_state)
        if grouped is not None:
            return grouped
        if self.task == "classification" and np.bincount(y_index).min() >= 2:
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=self.random_state)
            train, val = next(splitter.split(idx, y_index))
        else:
            train, val = next(ShuffleSplit(n_splits=1, test_size=fraction, random_state=self.random_state).split(idx))
        return np.sort(train), np.sort(val)

    def _outputs(self, X, recordings=None) -> np.ndarray:
        check_is_fitted(self, "net_")
        cfg = self._config()
        with deterministic_algorithms(cfg.device.deterministic, self.device_):
            return predict_network(
                self.net_, self._adapt(X, recordings), cfg.trainer.batch_size, self.device_, self.precision_
            )

    def predict(self, X, recordings=None):
        """Predictions for windows ``X`` (``recordings``: as in :meth:`fit`, when it took them)."""
        out = self._outputs(X, recordings)
        if self.task == "classification":
            return self.classes_[out.argmax(axis=1)]
        if self.task == "multilabel":  # each label on where its probability is at least 0.5
            return (out >= 0).astype(np.int64)
        return out[:, 0]

    def predict_proba(self, X, recordings=None):
        """Class probabilities for windows ``X`` (``recordings``: as in :meth:`fit`, when it took them)."""
        if self.task not in ("classification", "multilabel"):
            raise AttributeError("predict_proba is only available for classification.")
        out = self._outputs(X, recordings)
        if self.task == "multilabel":  # each label's probability of 1, (n, n_labels)
            return 1.0 / (1.0 + np.exp(-out))
        z = out - out.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def get_training_history(self) -> list[dict[str, Any]]:
        """Per epoch: train/val loss and metrics, learning rate, gradient norms, seconds."""
        check_is_fitted(self, "net_")
        return [dict(r) for r in self.history_]

    def get_checkpoint_manifest(self) -> dict[str, Any]:
        """Saved checkpoint paths, best epoch and monitored value."""
        check_is_fitted(self, "net_")
        return dict(self.checkpoint_manifest_)

    def get_failure_diagnostics(self) -> dict[str, Any]:
        """Non-finite loss or gradients (with the step), gradient norms per epoch, why training stopped."""
        check_is_fitted(self, "net_")
        return json.loads(json.dumps(self.diagnostics_, default=str))


class NeuralFineTuner(TrainedNetwork, BaseEstimator, NeuralTrainable):
    """Train a foundation backbone with a neural head (frozen, full or PEFT).

    Implements :class:`~neurofm.protocols.NeuralTrainable` (declared, so a
    type checker holds its five methods to the protocol): an experiment
    records its training history, checkpoints, model card and failure
    diagnostics for every fold.

    Parameters
    ----------
    config : NeuralFineTuneConfig
        Model, train mode, adapters, trainer, checkpoints and device.
    sfreq, ch_names, units, sensor_positions
        Signal metadata of the windows (positions: metres, head frame, one
        per channel or ``None``; used by models that place sensors).
    passband : (float, float) | None
        The band in Hz the windows were already filtered to (``None``:
        unknown), as ``mne.Epochs`` record it; the adaptation plan's passband
        note says from it what remains outside the model's band.
    task : {"classification", "regression", "multilabel"}
        What ``y`` is. ``"multilabel"``: ``y`` of shape (n, n_labels) of 0/1,
        one output per label, a binary cross-entropy loss
        (``BCEWithLogitsLoss``; with ``trainer.class_weight`` each label's
        ``pos_weight`` is its negatives over its positives in the training
        windows), sigmoid probabilities.
    metrics : list of str | None
        Validation metrics logged per epoch.
    cache_dir : str
        Default root of checkpoints (``<cache_dir>/checkpoints``) and where
        weight digests are remembered.
    checkpoint_dir : str | None
        Where checkpoints go when ``config.checkpoints.directory`` is unset;
        an experiment with an output folder sets it to
        ``<output_dir>/checkpoints/<model name>/fold-<k>``. ``None``:
        ``<cache_dir>/checkpoints``.
    shared_folders, shared_key_file
        Whether ``cache_dir`` may be written by others, and the key that then
        authenticates what is read back from it (as in
        :class:`~neurofm.estimators.frozen.FoundationEmbedder`).
    expected_weights : dict | None
        The identity the starting weights must have when ``fit`` loads them
        (:meth:`identify_weights`); an experiment sets it to the identity its
        records are keyed on, so that a checkpoint rewritten between the two
        raises :class:`~neurofm.exceptions.WeightsError` before training
        instead of being trained under the old identity. ``None``: not checked.
    random_state : int
        Seed of initialisation, splits, shuffling and dropout.
    verbose : bool
        Progress bars.

    Attributes
    ----------
    net_ : DecoderNet
        The trained network in its best state.
    classes_ : ndarray
        Class labels (classification); the label indices (multilabel).
    history_ : list of dict
        One record per epoch.
    """

    def __init__(
        self,
        config: NeuralFineTuneConfig | None = None,
        sfreq: float | None = None,
        ch_names: list[str] | None = None,
        units: str | list[str] = "V",
        sensor_positions: list | None = None,
        passband: tuple[float, float] | None = None,
        task: str = "classification",
        metrics: list[str] | None = None,
        cache_dir: str = "~/.cache/neurofm",
        shared_folders: bool = False,
        shared_key_file: str | None = None,
        expected_weights: dict | None = None,
        random_state: int = 0,
        verbose: bool = True,
        checkpoint_dir: str | None = None,
    ):
        self.config = config
        self.sfreq = sfreq
        self.ch_names = ch_names
        self.units = units
        self.sensor_positions = sensor_positions
        self.passband = passband
        self.task = task
        self.metrics = metrics
        self.cache_dir = cache_dir
        self.shared_folders = shared_folders
        self.shared_key_file = shared_key_file
        self.expected_weights = expected_weights
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir

    # -- checks before any training ----------------------------------------------------

    def check_input(
        self,
        shape: tuple[int, ...],
        y: np.ndarray | None = None,
        device_here: bool = True,
        recordings_known: bool = False,
    ) -> PreparedInput:
        """Raise the errors training would meet, before any of it runs.

        Parameters
        ----------
        shape : tuple of int
            ``(n_windows, n_channels, n_times)`` of the training windows.
        y : ndarray | None
            The targets, when known (checked against ``n_outputs``).
        device_here : bool
            ``False``: training runs in other processes (a Slurm, Ray or Dask
            cluster planned from a login node), which resolve the device
            themselves; only settings wrong on every machine are refused here.
        recordings_known : bool
            Whether :meth:`fit` will be given each window's recording.

        Returns
        -------
        prepared : PreparedInput
            The adaptation plan and the weights' identity; :meth:`fit` given
            it checks and plans nothing again, and
            :meth:`PreparedInput.adapt` adapts windows once for every fold.
        """
        cfg = self._config()
        spec = get_model_spec(cfg.model_key)
        probe = np.zeros((1, *shape[1:]), dtype=np.float32)
        info = prepare_inputs(
            probe,
            sfreq=self.sfreq,
            ch_names=self.ch_names,
            units=self.units,
            positions=self.sensor_positions,
            passband=self.passband,
        ).info
        plan = plan_adaptation(spec, info, shape[-1], cfg.adaptation, recordings_known=recordings_known)
        source = resolve_weights(spec, cfg.weights, cfg.backend)
        if cfg.quantized and cfg.device.device != "auto":  # a device bitsandbytes cannot use, on any machine
            check_quantization(cfg.device.device)
        self._check_device(cfg, device_here)
        if y is not None:
            self._check_outputs(cfg, y)
        self._check_monitor(cfg)
        if cfg.checkpoints.save != "none":
            self._checkpoint_root(cfg)
        if cfg.backend == "hugging_face":
            check_hf_checkpoint(source, cfg.trust_remote_code)
        if cfg.train_mode in PEFT_MODES:
            self._check_adapter_targets(spec, cfg, plan, source)
        return PreparedInput(
            plan,
            self._weights_identity(spec, source),
            estimator_settings(self, ignore=_UNCHECKED_PARAMS),
            device_here=device_here,
            recordings_known=recordings_known,
            recordings_matter=uses_recording_statistics(spec, cfg.adaptation),
            weights_source=source,
        )

    def _check_adapter_targets(self, spec, cfg: NeuralFineTuneConfig, plan, source) -> None:
        """Every adapter target names a layer of the backbone, checked on a skeleton (no weights read)."""
        if cfg.backend == "hugging_face":
            module = encoder_skeleton(source, cfg.trust_remote_code)
            match_targets(module, resolve_targets(spec, cfg.lora, cfg.train_mode, module))
            return
        try:
            with torch.device("meta"):  # names only: no memory, no initialisation
                module = spec.build(plan.target, **cfg.model_kwargs)
        except (RuntimeError, NotImplementedError):  # constructors that read tensor values cannot run on meta
            module = spec.build(plan.target, **cfg.model_kwargs)
        match_targets(module, resolve_targets(spec, cfg.lora, cfg.train_mode), spec.head_prefixes)

    def _check_device(self, cfg: NeuralFineTuneConfig, device_here: bool) -> None:
        """As every trained network's, and a quantised backbone's device (bitsandbytes runs on few)."""
        super()._check_device(cfg, device_here)
        if device_here and cfg.quantized:
            check_quantization(resolve_device(cfg.device.device))

    def identify_weights(self) -> dict[str, Any]:
        """What identifies the starting weights: their files' digests (and a hub commit), or a random init's seed.

        The identity the embedding cache uses
        (:func:`neurofm.models.weights.weights_identity`); an experiment keys
        this model's progress records on it, so a checkpoint overwritten in
        place is trained again. Digests are remembered under ``cache_dir``.

        Returns
        -------
        identity : dict
            JSON-ready.
        """
        spec = get_model_spec(self._config().model_key)
        return self._weights_identity(spec, resolve_weights(spec, self._config().weights, self._config().backend))

    def _weights_identity(self, spec, source) -> dict[str, Any]:
        return weights_identity(
            source,
            spec,
            self._config().backend,
            self.random_state,
            self.cache_dir,
            entry_key(self.shared_folders, self.shared_key_file),
        )

    def _check_outputs(self, cfg: NeuralFineTuneConfig, y: np.ndarray) -> int:
        n = len(np.unique(y)) if self.task == "classification" else np.shape(y)[1] if self.task == "multilabel" else 1
        if cfg.n_outputs is not None and cfg.n_outputs != n:
            what = {"classification": f"{n} classes", "multilabel": f"{n} labels"}.get(
                self.task, "a single regression target"
            )
            raise DataValidationError(
                f"n_outputs={cfg.n_outputs} does not match y, which holds {what}; set n_outputs={n} or leave it None."
            )
        return n

    def _config(self) -> NeuralFineTuneConfig:
        if not isinstance(self.config, NeuralFineTuneConfig):
            raise ConfigError("NeuralFineTuner needs config=NeuralFineTuneConfig(...).")
        return self.config

    # -- fit -------------------------------------------------------------------------------

    def fit(self, X, y, groups=None, recordings=None, prepared: PreparedInput | None = None):
        """Train on windows ``X`` (n, channels, times) and targets ``y``.

        Parameters
        ----------
        X : array-like, shape (n_windows, n_channels, n_times), or AdaptedWindows
            The windows, raw or already adapted (:meth:`PreparedInput.adapt`).
        y : array-like, shape (n_windows,)
            The targets.
        groups : array-like | None
            Keep the validation split by group.
        recordings : array-like | None
            One id per window: a model pretrained with recording-level
            normalisation (REVE) normalises each window with its recording's
            statistics, taken over the windows given here (and, in
            :meth:`predict`, over the windows predicted), so no statistic
            crosses from test to training.
        prepared : PreparedInput | None
            What :meth:`check_input` returned for these windows under these
            parameters: nothing is checked or planned again. ``None``: made
            here (windows that are :class:`AdaptedWindows` bring their own).

        Raises
        ------
        ConfigError
            When ``prepared`` was made for other windows or parameters.
        """
        cfg = self._config()
        if isinstance(X, AdaptedWindows) and prepared is None:
            raise ConfigError("Adapted windows come with the PreparedInput that adapted them; pass it as prepared=.")
        X = X if isinstance(X, AdaptedWindows) else np.asarray(X)
        y = np.asarray(y)
        check_recordings(recordings, len(X))
        if prepared is None:
            prepared = self.check_input(X.shape, y, recordings_known=recordings is not None)
        else:
            prepared.check_matches(estimator_settings(self, ignore=_UNCHECKED_PARAMS), X.shape, recordings is not None)
            self._check_device(cfg, device_here=True)  # here, in the process that trains
        spec = get_model_spec(cfg.model_key)
        self.plan_ = prepared.plan
        self.device_ = resolve_device(cfg.device.device)
        self.precision_ = resolve_precision(cfg.device.precision, self.device_)
        warn_slow_precision(self.device_, self.precision_)
        n_outputs = self._check_outputs(cfg, y)
        y_index, class_weights = self._targets(y, cfg)
        train_idx, val_idx = self._validation_split(y_index, groups, cfg)
        adapted = self._adapt(X, recordings)
        # The weights the check identified, found again however a hub branch moved since (older prepared inputs
        # carry no source: the config's weights, checked against the identity when loaded).
        weights = cfg.weights if prepared.weights_source is None else prepared.weights_source.pinned()
        peft_model = self._build(spec, cfg, n_outputs, len(train_idx), weights)
        outcome = self._train(cfg, adapted, y_index, class_weights, train_idx, val_idx, peft_model)
        self.history_ = outcome.history
        self.diagnostics_ = outcome.diagnostics
        self.best_epoch_ = outcome.best_epoch
        self.best_value_ = outcome.best_value
        self.n_train_, self.n_val_ = int(len(train_idx)), int(len(val_idx))
        self.validation_indices_ = val_idx
        self.checkpoint_manifest_ = self._save_checkpoints(outcome, cfg)
        self.failed_ = outcome.diagnostics.get("non_finite") is not None and outcome.best_epoch is None
        return self

    def _build(self, spec, cfg: NeuralFineTuneConfig, n_outputs: int, n_train: int, weights: str | None):
        """The decoder (``net_``) with its weights, adapters and trainable set; returns the peft model or ``None``."""
        steps = cfg.trainer.max_epochs * max(
            1, int(np.ceil(n_train / cfg.trainer.batch_size / cfg.trainer.grad_accumulation))
        )
        self.net_, loaded, self.quantized_layers_, peft_model = build_decoder_net(
            spec,
            cfg,
            self.plan_.target,
            n_outputs,
            weights,
            self.random_state,
            self.device_,
            steps,
            expected_weights=self.expected_weights,
        )
        # peft marks exactly its own parameters trainable: remember them for two-stage training and saving.
        self._adapter_names = (
            set() if peft_model is None else {n for n, p in peft_model.named_parameters() if p.requires_grad}
        )
        self._drifting_base_names = set() if peft_model is None else mha_base_parameters(peft_model)
        self._weights_report = loaded.report | {"source": loaded.source.describe()}
        self._architecture = loaded.architecture
        self._set_trainable(cfg.trainer.probe_epochs == 0)
        return peft_model

    def _train(self, cfg: NeuralFineTuneConfig, adapted, y_index, class_weights, train_idx, val_idx, peft_model):
        """Train ``net_`` on the training windows, scored on the validation ones; the training's outcome."""

        def stage_hook(epoch: int) -> bool:
            if cfg.trainer.probe_epochs and epoch == cfg.trainer.probe_epochs:
                self._set_trainable(True)
                return True
            return False

        def step_hook(step: int) -> None:
            if cfg.train_mode == "adalora" and self._backbone_trainable:
                peft_model.base_model.update_and_allocate(step)

        with deterministic_algorithms(cfg.device.deterministic, self.device_):
            return train_network(
                self.net_,
                adapted[train_idx],
                y_index[train_idx],
                adapted[val_idx] if len(val_idx) else None,
                y_index[val_idx] if len(val_idx) else None,
                task=self.task,
                trainer=cfg.trainer,
                checkpoints=cfg.checkpoints,
                device=cfg.device.model_copy(update={"precision": self.precision_}),
                device_name=self.device_,
                class_weights=class_weights,
                metrics=list(self.metrics or []),
                seed=self.random_state,
                stage_hook=stage_hook,
                step_hook=step_hook,
                verbose=self.verbose,
            )

    def _set_trainable(self, backbone_trains: bool) -> None:
        cfg = self._config()
        spec = get_model_spec(cfg.model_key)
        self._backbone_trainable = backbone_trains and cfg.train_mode != "frozen"
        for name, param in self.net_.backbone.named_parameters():
            if cfg.train_mode == "full":
                inner = name.split("base_model.model.")[-1]
                param.requires_grad_(self._backbone_trainable and not inner.startswith(spec.head_prefixes))
            elif cfg.train_mode in PEFT_MODES:
                param.requires_grad_(self._backbone_trainable and name in self._adapter_names)
            else:
                param.requires_grad_(False)
        head = self.net_.head_parameter_names()  # the backbone's own head, for trainer.head="native"
        for name, param in self.net_.named_parameters():
            if name in head:
                param.requires_grad_(True)

    def _adapt(self, X, recordings=None) -> np.ndarray:
        if isinstance(X, AdaptedWindows):
            return X.check_plan(self.plan_)
        X = np.asarray(X)
        statistics = None
        if self.plan_.recording_statistics:
            if recordings is None:
                raise ConfigError(
                    f"{self._config().model_key!r} was trained with each recording's normalisation "
                    "statistics; give the windows' recordings here too (recordings=...)."
                )
            statistics = window_statistics(recording_statistics(self.plan_, X, recordings), recordings)
        return adapt_in_batches(self.plan_, X, statistics)

    # -- predict ---------------------------------------------------------------------------

    # -- checkpoints -----------------------------------------------------------------------

    def _save_checkpoints(self, outcome, cfg: NeuralFineTuneConfig) -> dict[str, Any]:
        if cfg.checkpoints.save == "none":
            return checkpoint_manifest(outcome, cfg)
        folder = self._checkpoint_root(cfg) / f"{cfg.model_key}-{cfg.train_mode}-{uuid.uuid4().hex[:12]}"
        return write_checkpoints(self, outcome, cfg, folder)

    @classmethod
    def from_checkpoint(cls, path: str | Path, tag: str = "best", device: str | None = None) -> NeuralFineTuner:
        """Rebuild a trained decoder from a checkpoint directory written by ``fit``.

        Parameters
        ----------
        path : str | Path
            The checkpoint directory (see ``get_checkpoint_manifest()["directory"]``).
        tag : str
            ``"best"``, ``"last"`` or ``"epoch-NNN"``.
        device : str | None
            Where the rebuilt model lives and predicts (``"cpu"``, ``"cuda"``,
            ``"auto"``). ``None``: the device of the training config, resolved
            on this machine; give ``"cpu"`` to reload a model trained with
            ``device="cuda"`` where there is no GPU.

        Raises
        ------
        ConfigError
            When the device is not available here.
        """
        return rebuild_from_checkpoint(cls, Path(path), tag, device)

    # -- NeuralTrainable protocol -------------------------------------------------------------

    def get_model_card_info(self) -> dict[str, Any]:
        """Architecture, parameter counts, weights source, input adaptation and training config."""
        check_is_fitted(self, "net_")
        cfg = self._config()
        params = list(self.net_.parameters())
        return {
            "model_key": cfg.model_key,
            "train_mode": cfg.train_mode,
            "backbone_class": get_model_spec(cfg.model_key).braindecode_class,
            "architecture": self._architecture,
            "head": {
                "kind": cfg.trainer.head,
                "pooling": None if cfg.trainer.head == "native" else cfg.pooling,
                "n_outputs": self.net_.n_outputs,
            },
            "total_parameters": int(sum(p.numel() for p in params)),
            "quantized_layers": len(self.quantized_layers_),
            # What was quantised and to what; a "lora" on a quantised backbone is recorded as such.
            "quantization": (
                describe_quantization(cfg.quantization, self.device_, self.quantized_layers_) if cfg.quantized else None
            ),
            "trainable_parameters": int(sum(p.numel() for p in params if p.requires_grad)),
            "weights": self._weights_report,
            "input_adaptation": self.plan_.steps,
            "trainer": cfg.trainer.model_dump(mode="json"),
            "n_train": self.n_train_,
            "n_validation": self.n_val_,
        }

    def get_artifact_metadata(self) -> dict[str, Any]:
        """All of the above, keyed by artifact type."""
        adaptation: dict[str, str] = {}
        for step in self.plan_.steps:  # what the backbone received, as for a frozen one (a step may repeat)
            held = adaptation.get(step["step"])
            adaptation[step["step"]] = step["detail"] if held is None else f"{held}; {step['detail']}"
        return {
            "training_history": self.get_training_history(),
            "checkpoints": self.get_checkpoint_manifest(),
            "model_card": self.get_model_card_info(),
            "failure_diagnostics": self.get_failure_diagnostics(),
            "input_adaptation": adaptation,
        }
