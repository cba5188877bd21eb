"""From-scratch baselines: a braindecode network trained from random weights, as the fine-tuned models are trained.

:class:`ScratchTrainer` is the estimator of
:class:`~neurofm.configs.ScratchModelConfig`. It builds the braindecode class
for the windows it is fitted on (their channels, length and rate) with the
experiment's ``random_state`` as the seed of its weights, and trains it with
the fine-tuner's own pieces (:class:`~neurofm.estimators.neural.TrainedNetwork`
and :func:`~neurofm.training.train_network`): the same validation split (by
group), early stopping, class weights, best-epoch restore and checkpoints, so
a fine-tuned model and its from-scratch baseline differ in the network only.

The windows keep the rate and montage they were given; the only adaptation is
the one the classical raw-window baselines get (:class:`WindowUnitsPlan`):
every channel to microvolts, EEG-equivalent microvolts for MEG.
"""

from __future__ import annotations

import inspect
import json
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ..adapt import check_recordings, working_unit_scale
from ..configs import ScratchModelConfig
from ..configs.models import SCRATCH_SIGNAL_ARGS
from ..data import SignalInfo, check_multilabel_targets, prepare_inputs
from ..devices import deterministic_algorithms, resolve_device, resolve_precision
from ..embed import warn_slow_precision
from ..exceptions import ConfigError
from ..models.builders import _braindecode, _quiet_build
from ..protocols import NeuralTrainable
from ..training import train_network
from ..training.finetune import loss_name
from ..utils.check import closest_matches, format_choices
from ..utils.files import atomic_write
from .neural import TrainedNetwork
from .prepared import AdaptedWindows, PreparedInput, adapt_in_batches, estimator_settings

__all__ = ["ScratchTrainer", "WindowUnitsPlan"]

#: Parameters a check does not depend on (an experiment sets ``checkpoint_dir`` per fold after checking).
_UNCHECKED_PARAMS = ("verbose", "checkpoint_dir")


@dataclass(frozen=True)
class WindowUnitsPlan:
    """The one adaptation of a from-scratch network's windows: each channel to (EEG-equivalent) microvolts.

    It plays the part of an :class:`~neurofm.adapt.AdaptationPlan` for
    :class:`~neurofm.estimators.prepared.PreparedInput` and
    :class:`~neurofm.estimators.prepared.AdaptedWindows`: an experiment
    converts the windows once and every fold slices them. The factors are
    those of the classical baselines' ``units`` step
    (:func:`neurofm.adapt.working_unit_scale`); rate, channels and length
    stay as given.

    Parameters
    ----------
    source : SignalInfo
        The windows' signal metadata.
    n_times_in : int
        Samples per window.
    """

    source: SignalInfo
    n_times_in: int
    model_key: str = "from-scratch network"  # what errors about mismatched windows call the model
    recording_statistics: bool = False  # no recording-level normalisation: windows convert one by one

    @property
    def scale(self) -> np.ndarray:
        """One factor per channel."""
        return working_unit_scale(self.source.units)

    @property
    def steps(self) -> list[dict[str, str]]:
        """The adaptation record, in the form a foundation model's plan gives it."""
        factors = dict(zip(self.source.units, self.scale.tolist(), strict=True))
        detail = "; ".join(f"{unit} x {factor:g}" for unit, factor in factors.items())
        return [
            {
                "step": "units",
                "detail": f"{detail}: microvolts (EEG-equivalent for MEG), as the raw-window baselines; "
                f"{len(self.source.ch_names)} channels at {self.source.sfreq:g} Hz, {self.n_times_in} samples, as given",
            }
        ]

    def describe(self) -> dict[str, Any]:
        """What the adapted windows depend on (networks of one run with equal descriptions share them)."""
        return {
            "adaptation": "working units",
            "ch_names": list(self.source.ch_names),
            "units": list(self.source.units),
            "sfreq": float(self.source.sfreq),
            "n_times": int(self.n_times_in),
        }

    def apply(self, X: np.ndarray, statistics: np.ndarray | None = None) -> np.ndarray:
        """Windows in working units, float32 (the product in float64, as :class:`SensorScaling` takes it)."""
        del statistics  # no recording statistics: the plan's contract with adapt_in_batches
        return (np.asarray(X, dtype=np.float64) * self.scale[None, :, None]).astype(np.float32)


class ScratchTrainer(TrainedNetwork, BaseEstimator, NeuralTrainable):
    """Train a braindecode network from random weights, on the fine-tuner's loop and rules.

    Implements :class:`~neurofm.protocols.NeuralTrainable`: an experiment
    records its training history, checkpoints, model card and failure
    diagnostics for every fold, as for a fine-tuned model.

    Parameters
    ----------
    config : ScratchModelConfig
        The braindecode class, its architecture arguments, trainer,
        checkpoints and device.
    sfreq, ch_names, units, sensor_positions, passband
        Signal metadata of the windows (as for
        :class:`~neurofm.estimators.neural.NeuralFineTuner`; positions and
        passband are recorded only).
    task : {"classification", "regression", "multilabel"}
        What ``y`` is; regression trains one output with a squared error.
        ``"multilabel"``: ``y`` of shape (n_windows, n_labels) of 0/1, each
        label with a positive and a negative training window; one output per
        label, a binary cross-entropy loss (``BCEWithLogitsLoss``; with
        ``trainer.class_weight`` each label's ``pos_weight`` is its negatives
        over its positives), :meth:`predict` each label's 0/1 (its sigmoid
        at least 0.5) and :meth:`predict_proba` each label's probability, as
        :class:`~neurofm.estimators.neural.NeuralFineTuner`.
    metrics : list of str | None
        Validation metrics logged per epoch.
    cache_dir : str
        Default root of checkpoints (``<cache_dir>/checkpoints``).
    shared_folders, shared_key_file
        Whether ``cache_dir`` may be written by others, and the key that then
        authenticates it.
    random_state : int
        Seed of the weights' initialisation, the validation split, shuffling
        and dropout.
    verbose : bool
        Progress bars.
    checkpoint_dir : str | None
        Where checkpoints go when ``config.checkpoints.directory`` is unset
        (an experiment with an output folder sets it per fold).

    Attributes
    ----------
    net_ : torch.nn.Module
        The braindecode network in its best state.
    classes_ : ndarray
        Class labels (classification); the label indices (multilabel).
    history_ : list of dict
        One record per epoch.
    plan_ : WindowUnitsPlan
        How the windows were converted.
    """

    def __init__(
        self,
        config: ScratchModelConfig | None = None,
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
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir

    def _config(self) -> ScratchModelConfig:
        if not isinstance(self.config, ScratchModelConfig):
            raise ConfigError("ScratchTrainer needs config=ScratchModelConfig(model=...).")
        return self.config

    # -- checks before any training ----------------------------------------------------

    def check_input(
        self,
        shape: tuple[int, ...],
        y: np.ndarray | None = None,
        device_here: bool = True,
        recordings_known: bool = False,
    ) -> PreparedInput:
        """Raise the errors training would meet, before any of it runs.

        The network is built for these windows and run on two of zeros, so a
        window too short for its kernels and pools is refused here, not in
        the first fold.

        Parameters
        ----------
        shape : tuple of int
            ``(n_windows, n_channels, n_times)`` of the training windows.
        y : ndarray | None
            The targets, when known (their classes, or multilabel's columns,
            size the output).
        device_here : bool
            ``False``: training runs in other processes, which resolve the
            device themselves.
        recordings_known : bool
            Whether :meth:`fit` will be given each window's recording (kept
            for the fine-tuner's interface; no statistic depends on it).

        Returns
        -------
        prepared : PreparedInput
            The units plan; :meth:`fit` given it checks nothing again.
        """
        cfg = self._config()
        info = prepare_inputs(
            np.zeros((1, *shape[1:]), dtype=np.float32),
            sfreq=self.sfreq,
            ch_names=self.ch_names,
            units=self.units,
            positions=self.sensor_positions,
            passband=self.passband,
        ).info
        plan = WindowUnitsPlan(info, int(shape[-1]))
        self._check_device(cfg, device_here)
        self._check_monitor(cfg)
        if cfg.checkpoints.save != "none":
            self._checkpoint_root(cfg)
        if self.task == "multilabel":
            loss_name(self.task, cfg.trainer)  # a regression loss refused here, not in the first fold
            # one output per label: y's columns, checked as fit checks them; two (the fewest labels) otherwise
            n_outputs = 2 if y is None else check_multilabel_targets(y).shape[1]
        elif self.task != "classification":
            n_outputs = 1
        else:  # the classes of y when given; two (the fewest) otherwise
            n_outputs = 2 if y is None else max(2, len(np.unique(y)))
        self._check_network(cfg, plan, n_outputs)
        return PreparedInput(
            plan,
            {"kind": "random", "seed": self.random_state},
            estimator_settings(self, ignore=_UNCHECKED_PARAMS),
            device_here=device_here,
            recordings_known=recordings_known,
        )

    def _check_network(self, cfg: ScratchModelConfig, plan: WindowUnitsPlan, n_outputs: int) -> None:
        """Build the network for these windows and run it on two windows of zeros (on the CPU, no gradients)."""
        named = inspect.signature(_braindecode(cfg.model)).parameters.values()
        accepted = {p.name for p in named if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - set(SCRATCH_SIGNAL_ARGS)
        for key in cfg.model_kwargs:
            if key not in accepted:
                close = closest_matches(key, accepted, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(
                    f"model_kwargs key {key!r} is not an argument of braindecode's {cfg.model}; {hint}"
                    f"its arguments are {format_choices(sorted(accepted))}."
                )
        try:
            net = self._build_network(cfg, n_outputs, len(plan.source.ch_names), plan.n_times_in)
            with torch.no_grad():
                out = net.eval()(torch.zeros(2, len(plan.source.ch_names), plan.n_times_in))
        except Exception as exc:  # any braindecode error: the class, these windows and the fix, before compute
            raise ConfigError(
                f"{cfg.model} cannot be built for windows of {len(plan.source.ch_names)} channels x "
                f"{plan.n_times_in} samples at {plan.source.sfreq:g} Hz with model_kwargs={cfg.model_kwargs!r}: "
                f"{type(exc).__name__}: {exc}. Use longer windows, or smaller kernels and pools in model_kwargs."
            ) from exc
        if tuple(out.shape) != (2, n_outputs):
            raise ConfigError(
                f"{cfg.model} gives outputs of shape {tuple(out.shape)} for two windows, not (2, {n_outputs}); "
                "neurofm trains classes that output one score per class (or label) and window."
            )

    def _build_network(self, cfg: ScratchModelConfig, n_outputs: int, n_chans: int, n_times: int):
        """The braindecode class for these windows, initialised from ``random_state`` (the caller's stream kept)."""
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            # braindecode 1.8's EEGNet warns at every construction that its own default is deprecated (and names
            # an argument it does not take): nothing a user could change.
            warnings.filterwarnings("ignore", "Parameter 'final_layer_with_constraint", DeprecationWarning)
            torch.manual_seed(self.random_state)
            return _quiet_build(
                cfg.model, n_chans=n_chans, n_outputs=n_outputs, n_times=n_times, sfreq=self.sfreq, **cfg.model_kwargs
            )

    # -- fit -------------------------------------------------------------------------------

    def fit(self, X, y, groups=None, recordings=None, prepared: PreparedInput | None = None):
        """Train on windows ``X`` (n, channels, times) and targets ``y``.

        Parameters
        ----------
        X : array-like, shape (n_windows, n_channels, n_times), or AdaptedWindows
            The windows, raw or already converted (:meth:`PreparedInput.adapt`).
        y : array-like, shape (n_windows,), or (n_windows, n_labels) for multilabel
            The targets (multilabel: 0/1, a DataFrame's columns naming the
            labels in errors).
        groups : array-like | None
            Keep the validation split by group.
        recordings : array-like | None
            Each window's recording; accepted as the fine-tuner accepts it,
            unused (no statistic is taken over recordings).
        prepared : PreparedInput | None
            What :meth:`check_input` returned for these windows under these
            parameters. ``None``: made here.

        Raises
        ------
        ConfigError
            When ``prepared`` was made for other windows or parameters.
        DataValidationError
            Multilabel: when ``y`` is not (n, n_labels) of 0/1, or a label
            lacks a positive or a negative window.
        """
        cfg = self._config()
        if isinstance(X, AdaptedWindows) and prepared is None:
            raise ConfigError("Adapted windows come with the PreparedInput that adapted them; pass it as prepared=.")
        X = X if isinstance(X, AdaptedWindows) else np.asarray(X)
        # multilabel labels stay as given (a DataFrame names them in errors): _targets checks the training partition's
        y = y if self.task == "multilabel" else np.asarray(y)
        check_recordings(recordings, len(X))
        if prepared is None:
            prepared = self.check_input(X.shape, y, recordings_known=recordings is not None)
        else:
            prepared.check_matches(estimator_settings(self, ignore=_UNCHECKED_PARAMS), X.shape, recordings is not None)
            self._check_device(cfg, device_here=True)  # here, in the process that trains
        self.plan_ = prepared.plan
        self.device_ = resolve_device(cfg.device.device)
        self.precision_ = resolve_precision(cfg.device.precision, self.device_)
        warn_slow_precision(self.device_, self.precision_)
        y_index, class_weights = self._targets(y, cfg)
        n_outputs = self._n_outputs()
        train_idx, val_idx = self._validation_split(y_index, groups, cfg)
        adapted = self._adapt(X)
        self.net_ = self._build_network(cfg, n_outputs, adapted.shape[1], adapted.shape[2])
        with deterministic_algorithms(cfg.device.deterministic, self.device_):
            outcome = train_network(
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
                verbose=self.verbose,
            )
        self.history_ = outcome.history
        self.diagnostics_ = outcome.diagnostics
        self.best_epoch_ = outcome.best_epoch
        self.best_value_ = outcome.best_value
        self.n_train_, self.n_val_ = int(len(train_idx)), int(len(val_idx))
        self.validation_indices_ = val_idx
        self.checkpoint_manifest_ = self._save_checkpoints(outcome, cfg)
        self.failed_ = outcome.diagnostics.get("non_finite") is not None and outcome.best_epoch is None
        return self

    def _adapt(self, X, recordings=None) -> np.ndarray:
        del recordings  # the conversion is per window
        if isinstance(X, AdaptedWindows):
            return X.check_plan(self.plan_)
        return adapt_in_batches(self.plan_, np.asarray(X))

    # -- checkpoints -----------------------------------------------------------------------

    def _save_checkpoints(self, outcome, cfg: ScratchModelConfig) -> dict[str, Any]:
        """Write the states ``checkpoints.save`` asks for (safetensors and a ``config.json``); the manifest."""
        manifest = {
            "save": cfg.checkpoints.save,
            "monitor": cfg.checkpoints.monitor,
            "best_epoch": outcome.best_epoch,
            "best_value": outcome.best_value,
            "paths": {},
        }
        if cfg.checkpoints.save == "none":
            return manifest
        # Named like the fine-tuner's folders (<model>-<mode>-<12 hex>), which the checkpoints folder admits.
        folder = self._checkpoint_root(cfg) / f"{cfg.model}-scratch-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True, exist_ok=True)
        whole = self.net_.state_dict()  # the restored best state; states hold what training changed
        wanted: dict[str, Any] = {}
        if cfg.checkpoints.save in ("best", "all") and "best" in outcome.states:
            wanted["best"] = whole
        if cfg.checkpoints.save in ("last", "all"):
            wanted["last"] = {**whole, **outcome.states["last"]}
        if cfg.checkpoints.save == "all":
            wanted |= {f"epoch-{e:03d}": {**whole, **s} for e, s in outcome.states.items() if isinstance(e, int)}
        for tag, state in wanted.items():
            tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
            path = atomic_write(folder / f"{tag}.safetensors", lambda tmp, t=tensors: save_file(t, str(tmp)))
            manifest["paths"][tag] = str(path)
        self._write_checkpoint_config(folder, cfg, outcome.history)
        manifest["directory"] = str(folder)
        return manifest

    def _write_checkpoint_config(self, folder: Path, cfg: ScratchModelConfig, history: list) -> None:
        """The ``config.json`` that :meth:`from_checkpoint` rebuilds the network from."""
        meta = {
            "config": cfg.model_dump(mode="json"),
            "signal": {
                "sfreq": self.sfreq,
                "ch_names": list(self.plan_.source.ch_names),
                "units": list(self.plan_.source.units),
                "n_times": int(self.plan_.n_times_in),
            },
            "n_outputs": int(self._n_outputs()),
            "task": self.task,
            "classes": self.classes_.tolist() if self.task in ("classification", "multilabel") else None,
            "random_state": self.random_state,
            "history": history,
        }
        text = json.dumps(meta, indent=2, default=str)
        atomic_write(folder / "config.json", lambda tmp: tmp.write_text(text))

    def save_checkpoint(self, folder: str | Path) -> Path:
        """Write the trained network (its best state) as a checkpoint folder :meth:`from_checkpoint` reads.

        ``best.safetensors`` and ``config.json``, as ``fit`` writes them with
        ``checkpoints.save="best"``; an experiment's refit model is saved so.

        Parameters
        ----------
        folder : str | Path
            Where to write (created if needed).

        Returns
        -------
        folder : Path
        """
        check_is_fitted(self, "net_")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        atomic_write(folder / "best.safetensors", lambda tmp: save_file(tensors, str(tmp)))
        self._write_checkpoint_config(folder, self._config(), self.history_)
        return folder

    def _n_outputs(self) -> int:
        """One per class (classification) or label (multilabel, ``classes_`` their indices); one for regression."""
        return len(self.classes_) if self.task in ("classification", "multilabel") else 1

    @classmethod
    def from_checkpoint(cls, path: str | Path, tag: str = "best", device: str | None = None) -> ScratchTrainer:
        """Rebuild a trained network from a checkpoint folder written by ``fit`` (JSON and safetensors only).

        Parameters
        ----------
        path : str | Path
            The checkpoint folder (``get_checkpoint_manifest()["directory"]``).
        tag : str
            ``"best"``, ``"last"`` or ``"epoch-NNN"``.
        device : str | None
            Where it predicts; ``None``: the training config's, resolved here.
        """
        folder = Path(path)
        meta = json.loads((folder / "config.json").read_text())
        signal = meta["signal"]
        est = cls(
            config=ScratchModelConfig.model_validate(meta["config"]),
            sfreq=signal["sfreq"],
            ch_names=signal["ch_names"],
            units=signal["units"],
            task=meta["task"],
            random_state=meta["random_state"],
            verbose=False,
        )
        cfg = est._config()
        info = prepare_inputs(
            np.zeros((1, len(est.ch_names), signal["n_times"]), np.float32),
            sfreq=est.sfreq,
            ch_names=est.ch_names,
            units=est.units,
        ).info
        est.plan_ = WindowUnitsPlan(info, signal["n_times"])
        est.device_ = resolve_device(cfg.device.device if device is None else device)
        est.precision_ = resolve_precision(cfg.device.precision, est.device_)
        if meta["classes"] is not None:
            est.classes_ = np.asarray(meta["classes"])
        est.net_ = est._build_network(cfg, meta["n_outputs"], len(est.ch_names), signal["n_times"])
        est.net_.load_state_dict(load_file(str(folder / f"{tag}.safetensors")), strict=True)
        est.net_.to(est.device_).eval()
        est.history_ = meta["history"]
        return est

    # -- NeuralTrainable protocol (history, checkpoints and diagnostics: TrainedNetwork's) -------

    def get_model_card_info(self) -> dict[str, Any]:
        """The braindecode class and its arguments, parameter counts, initialisation, input and training config."""
        check_is_fitted(self, "net_")
        cfg = self._config()
        params = list(self.net_.parameters())
        source = self.plan_.source
        return {
            "model": cfg.model,
            "backbone_class": cfg.model,
            "train_mode": "scratch",
            "architecture": {
                "class": cfg.model,
                "n_chans": len(source.ch_names),
                "n_outputs": self._n_outputs(),
                "n_times": int(self.plan_.n_times_in),
                "sfreq": float(source.sfreq),
                **cfg.model_kwargs,
            },
            "total_parameters": int(sum(p.numel() for p in params)),
            "trainable_parameters": int(sum(p.numel() for p in params if p.requires_grad)),
            "weights": {"source": "random", "seed": self.random_state},
            "input_adaptation": self.plan_.steps,
            "trainer": cfg.trainer.model_dump(mode="json"),
            "n_train": self.n_train_,
            "n_validation": self.n_val_,
        }

    def get_artifact_metadata(self) -> dict[str, Any]:
        """All of the above, keyed by artifact type (and the input's conversion, as a fine-tuned model's)."""
        return {
            "training_history": self.get_training_history(),
            "checkpoints": self.get_checkpoint_manifest(),
            "model_card": self.get_model_card_info(),
            "failure_diagnostics": self.get_failure_diagnostics(),
            "input_adaptation": {step["step"]: step["detail"] for step in self.plan_.steps},
        }
