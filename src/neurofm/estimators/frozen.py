"""A frozen foundation backbone as a scikit-learn transformer."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ..adapt import (
    check_recordings,
    plan_adaptation,
    recording_statistics,
    uses_recording_statistics,
    window_statistics,
)
from ..cache import EmbeddingCache, embed_through_cache, hash_windows, stable_hash
from ..configs import AdaptationConfig
from ..data import SignalInfo, prepare_inputs
from ..devices import (
    PRECISIONS,
    check_device,
    check_precision,
    deterministic_algorithms,
    device_key,
    resolve_device,
    resolve_precision,
)
from ..embed import embed_windows, resolve_batch_size, warn_slow_precision
from ..exceptions import ConfigError
from ..models.hf import check_hf_checkpoint
from ..models.registry import create_backbone, get_model_spec
from ..models.weights import (
    WeightsSource,
    check_loaded_weights,
    directory_weights_file,
    resolve_weights,
    weights_identity,
)
from ..sharing import entry_key
from ..sources import WindowSource, as_window_source
from ..utils.check import format_choices
from ..utils.versions import package_versions
from .prepared import PreparedInput, estimator_settings

__all__ = ["FoundationEmbedder"]

# Bump when the bits of an embedding change for the same weights and windows, so old cache entries stop matching
# (2: every forward sees a full batch, and LUNA's phase no longer depends on the window's row; a cache filled
# before held short-batch embeddings that a partly warm run would have mixed with today's).
EXTRACTION_VERSION = 2


def _library_versions(backend: str) -> dict[str, str | None]:
    """Versions of the code that builds and runs the backbone (architectures and initialisations change)."""
    return package_versions(("torch", "braindecode") + (("transformers",) if backend == "hugging_face" else ()))


class FoundationEmbedder(TransformerMixin, BaseEstimator):
    """Embed EEG/MEG windows with a frozen foundation backbone.

    The embedding of a window depends only on the window, the input
    adaptation and the backbone, never on labels, so ``fit`` learns nothing
    from the data: it plans the adaptation and identifies the weights.
    Embeddings are served from a content-addressed cache when
    ``cache_embeddings`` is on; the backbone is loaded only when a window
    misses the cache.

    Parameters
    ----------
    model_key : str
        Registry key (``neurofm.list_foundation_models()``).
    weights : str | None
        ``"random"``, a local file or directory, a hub id, or ``None`` for the
        registry's published checkpoint.
    backend : {"braindecode", "hugging_face"}
        How the backbone is built.
    pooling : {"mean", "max", "flatten", "cls"}
        How tokens become one vector per window.
    sfreq : float
        Sampling rate of the windows in Hz.
    ch_names : list of str
        Channel names of the windows.
    units : str | list of str
        Units of the windows (``"V"``, ``"uV"``, ...).
    sensor_positions : list of (3 floats | None) | None
        Per channel, its position in metres (head frame) or ``None``; models
        that place sensors (LUNA, REVE) use them before MNE's templates.
    passband : (float, float) | None
        The band in Hz the windows were already filtered to (``None``:
        unknown), as ``mne.Epochs`` record it; the adaptation plan's passband
        note says from it what remains outside the model's band.
    cache_embeddings : bool
        Read and write the embedding cache.
    cache_dir : str
        Root of the embedding cache. It must be private (owned by you, not
        writable by group or others) unless ``shared_folders``.
    shared_folders : bool
        ``cache_dir`` may be written by others: its entries are written and
        read with checksums keyed with your key, or the group's
        (``shared_key_file``); see :mod:`neurofm.sharing`.
    shared_key_file : str | None
        A group's key file (``None``: your own key, made on first use).
    batch_size : int | "auto"
        Windows per forward pass; ``"auto"``: 32 on the CPU (fastest there,
        measured), 64 on a GPU (raise it there for throughput).
    device : str
        ``"auto"`` (CUDA when present, else MPS, else the CPU), ``"cpu"``,
        ``"cuda"``, ``"cuda:N"``, ``"mps"``; resolved in the process that
        embeds (an extraction shard on a GPU worker uses its GPU).
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast precision of the forward pass; ``"auto"``: bf16 on CUDA GPUs
        with bf16 hardware, fp32 elsewhere (the CPU included).
    deterministic : bool
        Reproducible algorithms on the GPU
        (:func:`neurofm.devices.deterministic_algorithms`); no effect on the
        CPU's embeddings.
    model_kwargs : dict | None
        Architecture overrides for the backbone.
    trust_remote_code : bool
        Allow hugging_face checkpoints to run their own code.
    adaptation : dict | None
        Which input conventions of the model's pretraining to reproduce, as
        :class:`~neurofm.configs.AdaptationConfig` takes them (``None``: all).
    random_state : int
        Seed of a random initialisation.
    verbose : bool
        Show a progress bar while extracting.

    Attributes
    ----------
    plan_ : AdaptationPlan
        The input adaptation taken.
    recording_statistics_ : dict | None
        Each recording's mean and standard deviation per channel, for a plan
        that normalises with them (:func:`neurofm.adapt.recording_statistics`).
    device_, precision_ : str
        The device and precision resolved in the process that embeds
        (``device_`` is ``None`` in a process that only planned the run,
        without the device; ``precision_`` is then the configured one).
    batch_size_ : int
        Windows per forward pass (``batch_size`` with ``"auto"`` resolved for the device).
    weights_source_ : WeightsSource
        Where the weights come from.
    backbone_ : LoadedBackbone
        The loaded backbone (loaded on first access).
    fingerprint_ : str
        Hash of architecture, weights, pooling and adaptation (the cache namespace).
    cache_hits_, cache_misses_ : int
        Windows served from the cache and computed, over all ``transform`` calls.
    """

    def __init__(
        self,
        model_key: str = "cbramod",
        weights: str | None = None,
        backend: str = "braindecode",
        pooling: str = "mean",
        sfreq: float | None = None,
        ch_names: list[str] | None = None,
        units: str | list[str] = "V",
        sensor_positions: list | None = None,
        passband: tuple[float, float] | None = None,
        cache_embeddings: bool = True,
        cache_dir: str = "~/.cache/neurofm",
        shared_folders: bool = False,
        shared_key_file: str | None = None,
        batch_size: int | str = "auto",
        device: str = "auto",
        precision: str = "auto",
        deterministic: bool = False,
        model_kwargs: dict | None = None,
        trust_remote_code: bool = False,
        adaptation: dict | None = None,
        random_state: int = 0,
        verbose: bool = True,
    ):
        self.model_key = model_key
        self.weights = weights
        self.backend = backend
        self.pooling = pooling
        self.sfreq = sfreq
        self.ch_names = ch_names
        self.units = units
        self.sensor_positions = sensor_positions
        self.passband = passband
        self.cache_embeddings = cache_embeddings
        self.cache_dir = cache_dir
        self.shared_folders = shared_folders
        self.shared_key_file = shared_key_file
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.deterministic = deterministic
        self.model_kwargs = model_kwargs
        self.trust_remote_code = trust_remote_code
        self.adaptation = adaptation
        self.random_state = random_state
        self.verbose = verbose

    @classmethod
    def from_config(cls, config, **kwargs) -> FoundationEmbedder:
        """Build from a :class:`~neurofm.configs.FoundationEmbeddingModelConfig` plus signal arguments."""
        return cls(
            model_key=config.model_key,
            weights=config.weights,
            backend=config.backend,
            pooling=config.pooling,
            cache_embeddings=config.cache_embeddings,
            batch_size=config.batch_size,
            device=config.device,
            precision=config.precision,
            deterministic=config.deterministic,
            model_kwargs=dict(config.model_kwargs),
            trust_remote_code=config.trust_remote_code,
            adaptation=config.adaptation.model_dump(),
            **kwargs,
        )

    # -- validation before compute -------------------------------------------------

    def _signal_info(self, source: WindowSource) -> SignalInfo:
        return prepare_inputs(
            source.read(0, 1),
            sfreq=self.sfreq,
            ch_names=self.ch_names,
            units=self.units,
            positions=self.sensor_positions,
            passband=self.passband,
        ).info

    def check_input(
        self, shape: tuple[int, ...], device_here: bool = True, recordings_known: bool = False
    ) -> PreparedInput:
        """Plan the adaptation and identify the weights for windows of ``shape``, computing no embedding.

        Parameters
        ----------
        shape : tuple of int
            ``(n_windows, n_channels, n_times)`` of the windows to embed.
        device_here : bool
            ``False``: the embeddings will be computed in other processes
            (extraction shards on a Slurm, Ray or Dask cluster), which resolve
            the device themselves; only the device's name is checked here.
        recordings_known : bool
            Whether :meth:`fit` will be given each window's recording.

        Returns
        -------
        prepared : PreparedInput
            The plan and the weights' identity; pass it to :meth:`fit` so that
            neither is made again.

        Raises
        ------
        AdaptationError, WeightsError, ConfigError
            When the windows cannot reach this backbone.
        """
        spec = get_model_spec(self.model_key)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} is not known; use one of {format_choices(PRECISIONS)}.")
        resolve_batch_size(self.batch_size, "cpu")  # only checks the setting; fit resolves it for the device
        if self.pooling not in spec.poolings:
            raise ConfigError(
                f"pooling={self.pooling!r} is not available for {spec.key!r}; use one of {format_choices(spec.poolings)}."
            )
        probe = np.zeros((1, *shape[1:]), dtype=np.float32)
        info = prepare_inputs(
            probe,
            sfreq=self.sfreq,
            ch_names=self.ch_names,
            units=self.units,
            positions=self.sensor_positions,
            passband=self.passband,
        ).info
        prepared = self._prepare(spec, info, shape[-1], device_here, recordings_known)
        # Deprecated (one release): a fit without prepared= after this check planned without the device.
        self._planned_elsewhere = not device_here
        return prepared

    def _prepare(self, spec, info: SignalInfo, n_times: int, device_here: bool, recordings_known: bool):
        options = AdaptationConfig(**(self.adaptation or {}))
        plan = plan_adaptation(spec, info, n_times, options, recordings_known=recordings_known)
        source, identity = self._identified_weights(spec)
        check_device(self.device, here=device_here)
        if device_here:
            check_precision(self.precision, resolve_device(self.device))
        return PreparedInput(
            plan,
            identity,
            estimator_settings(self, ignore=("verbose",)),
            device_here=device_here,
            recordings_known=recordings_known,
            recordings_matter=uses_recording_statistics(spec, options),
            weights_source=source,
        )

    def _check_weights(self, spec):
        source = resolve_weights(spec, self.weights, self.backend)
        if self.backend == "hugging_face":
            check_hf_checkpoint(source, self.trust_remote_code)
        elif source.kind in ("directory", "hub"):
            directory_weights_file(Path(source.location), spec)
        return source

    def _identified_weights(self, spec) -> tuple[WeightsSource, dict[str, Any]]:
        source = self._check_weights(spec)
        return source, weights_identity(
            source,
            spec,
            self.backend,
            self.random_state,
            self.cache_dir,
            entry_key(self.shared_folders, self.shared_key_file),
        )

    def identify_weights(self) -> dict[str, Any]:
        """What identifies the weights: their files' digests (and a hub commit), or a random init's seed.

        The same identity enters :attr:`fingerprint_` (the cache namespace) and
        an experiment's progress records, so neither serves results of other
        weights. Digests are remembered under ``cache_dir``: a large
        checkpoint is read once.

        Returns
        -------
        identity : dict
            JSON-ready (see :func:`neurofm.models.weights.weights_identity`).
        """
        return self._identified_weights(get_model_spec(self.model_key))[1]

    # -- estimator API ---------------------------------------------------------------

    def fit(self, X, y=None, recordings=None, prepared: PreparedInput | None = None):
        """Plan the input adaptation and identify the weights (nothing is learned).

        Parameters
        ----------
        X : array-like, shape (n_windows, n_channels, n_times)
            The windows.
        y : ignored
        recordings : sequence | None
            Each window's recording (any hashable id). For a model pretrained
            with recording-level normalisation (REVE), each recording's
            statistics over its windows are taken here and used for its
            windows in :meth:`transform`, which then needs the same ids;
            label-free, as in pretraining. ``None``: each window's own.
        prepared : PreparedInput | None
            What :meth:`check_input` returned for these windows: its plan and
            weights' identity are used as they are. ``None``: made here.

        Raises
        ------
        ConfigError
            When ``prepared`` was made for other windows or other parameters.
        """
        source = as_window_source(X)
        spec = get_model_spec(self.model_key)
        check_recordings(recordings, len(source))
        if prepared is None:
            device_here = not getattr(self, "_planned_elsewhere", False)
            if not device_here:
                warnings.warn(
                    "fit after check_input(device_here=False) plans without the device only when given what that "
                    "check returned: pass fit(..., prepared=embedder.check_input(...)). Without it, fit will check "
                    "the device here from the next release.",
                    FutureWarning,
                    stacklevel=2,
                )
            info = self._signal_info(source)
            prepared = self._prepare(spec, info, source.shape[-1], device_here, recordings is not None)
        else:
            prepared.check_matches(estimator_settings(self, ignore=("verbose",)), source.shape, recordings is not None)
        self.plan_ = prepared.plan
        self.recording_statistics_ = (
            recording_statistics(self.plan_, source, recordings) if self.plan_.recording_statistics else None
        )
        self.weights_source_ = prepared.weights_source
        weights = prepared.weights
        self.manifest_ = {
            "model_key": spec.key,
            "backend": self.backend,
            "class": spec.braindecode_class,
            "model_kwargs": dict(self.model_kwargs or {}),
            "library_versions": _library_versions(self.backend),
            "weights": weights,
            "pooling": self.pooling,
            **({"cls_token": spec.cls_token} if self.pooling == "cls" else {}),
            "adaptation": self.plan_.describe(),
            "extraction_version": EXTRACTION_VERSION,
        }
        self.device_ = None
        self._settle_device(strict=prepared.device_here)
        self._backbone = None
        self.cache_hits_ = 0
        self.cache_misses_ = 0
        self.cache_damaged_packs_ = 0
        self.cache_skipped_packs_ = 0
        self.n_features_out_ = None
        return self

    def _settle_device(self, strict: bool = True) -> None:
        """Resolve the device, precision and batch size in this process, and key the cache on what they give.

        Called by :meth:`fit` and again where the windows are embedded: an
        extraction shard may run on a machine with another device than the
        one that planned the run, and its embeddings are keyed by where they
        were made. ``strict=False`` (planned elsewhere): a device missing here
        leaves it unsettled (``device_`` is ``None``), for the workers to resolve.
        """
        try:
            device = resolve_device(self.device)
        except ConfigError:
            if strict:
                raise
            device = None  # not here: unsettled, so that every process that embeds settles it for itself
        if device is not None and device == self.device_:
            return
        self.device_ = device
        named = self.device if device is None else device
        # Unsettled, the precision stays as configured: "auto" or bf16 cannot be judged without the GPU.
        self.precision_ = self.precision if device is None else resolve_precision(self.precision, device)
        self.batch_size_ = resolve_batch_size(self.batch_size, named)  # the planner cuts shards into whole batches
        if device is not None:
            warn_slow_precision(device, self.precision_)
        manifest = {k: v for k, v in self.manifest_.items() if k not in ("device", "tf32", "precision")}
        # On the CPU the device adds nothing to the key, so keys made before devices were keyed stay valid.
        self.manifest_ = manifest | device_key(named) | {"precision": self.precision_}
        # Where the weights live is not part of the key (their bytes are): it is kept for the record only.
        self.fingerprint_ = stable_hash(self.manifest_)

    @property
    def backbone_(self):
        """The loaded backbone; built and loaded on first use."""
        check_is_fitted(self, "fingerprint_")
        if self._backbone is None:
            self._backbone = create_backbone(
                self.model_key,
                self.plan_.target,
                self.weights_source_.pinned(),  # what fit identified, though a hub branch moved since
                backend=self.backend,
                model_kwargs=self.model_kwargs,
                random_state=self.random_state,
                trust_remote_code=self.trust_remote_code,
            )
            # Embeddings are cached under the identity fit found: the bytes loaded must be those very weights.
            check_loaded_weights(self.manifest_["weights"], self._backbone)
        return self._backbone

    def transform(self, X, recordings=None) -> np.ndarray:
        """Embeddings of the windows, float32 ``(n_windows, dim)``.

        ``X`` may live on disk (``np.memmap``, h5py, zarr, lazy ``mne.Epochs``):
        windows are read, hashed, looked up and embedded one chunk at a time.
        ``recordings``: each window's recording, when :meth:`fit` took
        recording statistics (every id must have been seen there).
        """
        check_is_fitted(self, "fingerprint_")
        source = as_window_source(X)
        expected = (len(self.plan_.source.ch_names), self.plan_.n_times_in)
        if source.shape[1:] != expected:
            raise ConfigError(
                f"transform got windows of shape {source.shape[1:]}, but the embedder was fitted on "
                f"{expected}; fit it again on these windows."
            )
        embeddings, n_computed, n_damaged, n_skipped = self.embed_source(source, recordings)
        self.record_extraction(embeddings, n_computed, n_damaged, n_skipped)
        return embeddings

    def window_statistics(self, recordings) -> np.ndarray | None:
        """Each window's recording's statistics ``(n, 2, channels)``, or ``None`` when the plan uses the window's own.

        Raises
        ------
        ConfigError
            When the plan needs recordings and none are given, or one was not seen by :meth:`fit`.
        """
        if getattr(self, "recording_statistics_", None) is None:
            return None
        if recordings is None:
            raise ConfigError(
                f"{self.model_key!r} was fitted with each recording's normalisation statistics; give "
                "transform the windows' recordings too (recordings=...)."
            )
        return window_statistics(self.recording_statistics_, recordings) if len(recordings) else None

    def record_extraction(
        self,
        embeddings: np.ndarray,
        n_computed: int,
        n_damaged: int = 0,
        n_skipped: int = 0,
        made_on: list[tuple[str, str]] | None = None,
    ) -> None:
        """Count cache hits, misses, damaged and skipped packs of an extraction made here or by shards elsewhere.

        ``made_on``: the ``(device, fingerprint)`` each shard resolved, when
        shards elsewhere embedded the windows (``None``: this process did).
        """
        self.made_on_ = sorted(set(made_on or [(self.device_, self.fingerprint_)]))
        self.cache_hits_ += len(embeddings) - n_computed
        self.cache_misses_ += n_computed
        self.cache_damaged_packs_ += n_damaged
        self.cache_skipped_packs_ += n_skipped
        self.n_features_out_ = embeddings.shape[1]

    def embed_source(self, source: WindowSource, recordings=None) -> tuple[np.ndarray, int, int, int]:
        """Embed every window of ``source`` chunk by chunk, through the cache.

        A window's embedding does not depend on the chunk, the cache's state
        or its batch neighbours: every forward sees a full batch
        (:func:`neurofm.embed.full_batch`). Chunks are a whole number of
        batches so that only the last batch of a cold run needs padding.
        This is what an extraction shard runs; ``recordings`` are its
        windows' recordings (see :meth:`transform`).

        Returns
        -------
        embeddings : ndarray of float32, shape (n_windows, dim)
        n_computed : int
            Windows that missed the cache and went through the backbone.
        n_damaged : int
            Cache packs found damaged and set aside (their windows were embedded again).
        n_skipped : int
            Cache packs left unread and as they are: not readable by this
            user, links or pipes (their windows were embedded again).
        """
        check_is_fitted(self, "fingerprint_")
        self._settle_device()  # in this process: a shard's worker may have a GPU the planning machine lacked
        cache = self._embedding_cache()
        out: np.ndarray | None = None
        n_computed = 0
        desc = f"Embedding with {self.model_key}"
        with tqdm(total=len(source), desc=desc, unit="win", disable=not self.verbose, leave=False) as bar:
            statistics = self.window_statistics(recordings)
            for start, windows in source.chunks(source.chunk_size(multiple_of=self.batch_size_)):
                stats = None if statistics is None else statistics[start : start + len(windows)]
                embedded, computed = self._embed_chunk(windows, cache, bar.update, stats)
                if out is None:
                    out = np.empty((len(source), embedded.shape[1]), dtype=np.float32)
                out[start : start + len(windows)] = embedded
                n_computed += computed
        n_damaged, n_skipped = (cache.damaged_packs, cache.skipped_packs) if cache is not None else (0, 0)
        return (out if out is not None else np.zeros((0, 0), np.float32)), n_computed, n_damaged, n_skipped

    def _embedding_cache(self) -> EmbeddingCache | None:
        """This embedder's namespace of the embedding cache (``None`` with ``cache_embeddings=False``)."""
        if not self.cache_embeddings:
            return None
        record = self.manifest_ | {"weights_location": self.weights_source_.describe()}
        return EmbeddingCache(
            self.cache_dir, self.fingerprint_, record, entry_key(self.shared_folders, self.shared_key_file)
        )

    def count_cached(self, X, recordings=None, max_windows: int | None = 512) -> tuple[int, int]:
        """How many windows of ``X`` the cache already holds embeddings of, checked on up to ``max_windows``.

        Hashes windows as :meth:`transform` does, without loading the backbone
        or reading a pack; :meth:`transform` still checks every entry it reads.
        Beyond ``max_windows`` windows an evenly spaced sample is checked, so
        that a plan costs little next to the extraction it foresees.

        Returns
        -------
        found, checked : int
            Windows found among those checked (``checked`` is ``len(X)``
            without sampling, 0 with ``cache_embeddings=False``).
        """
        check_is_fitted(self, "fingerprint_")
        cache = self._embedding_cache()
        if cache is None:
            return 0, 0
        source = as_window_source(X)
        statistics = self.window_statistics(recordings)
        n = len(source)
        if max_windows is None or n <= max_windows:
            picked = np.arange(n)
        else:
            picked = np.unique(np.linspace(0, n - 1, max_windows).round().astype(int))
        found = 0
        for index in picked:
            stats = None if statistics is None else statistics[index : index + 1]
            found += cache.count_stored(hash_windows(source.read(index, index + 1), stats))
        return found, len(picked)

    def _embed_chunk(
        self, windows: np.ndarray, cache: EmbeddingCache | None, progress, statistics: np.ndarray | None = None
    ) -> tuple[np.ndarray, int]:
        def compute(missing: np.ndarray, missing_statistics: np.ndarray | None) -> np.ndarray:
            with deterministic_algorithms(self.deterministic, self.device_):
                return embed_windows(
                    self.backbone_,
                    self.plan_,
                    missing,
                    self.pooling,
                    self.batch_size_,
                    self.device_,
                    progress,
                    self.precision_,
                    missing_statistics,
                )

        label = f"{self.model_key} (precision={self.precision_!r})"
        return embed_through_cache(windows, cache, compute, progress, statistics, label)

    def __getstate__(self):
        # A loaded backbone never travels: a worker that receives this embedder builds its own.
        state = super().__getstate__()
        if "_backbone" in state:
            state["_backbone"] = None
        return state

    def get_artifacts(self) -> list[tuple[int, str, str, Any]]:
        """Rows ``(fold, type, key, value)`` describing the extraction (fold -1: all windows)."""
        check_is_fitted(self, "fingerprint_")
        loaded = self._backbone
        rows: list[tuple[int, str, str, Any]] = [
            (-1, "embedding_cache", "hits", int(self.cache_hits_)),
            (-1, "embedding_cache", "misses", int(self.cache_misses_)),
            (-1, "embedding_cache", "damaged_packs_set_aside", int(self.cache_damaged_packs_)),
            (-1, "embedding_cache", "packs_skipped", int(self.cache_skipped_packs_)),
            (-1, "embedding_cache", "fingerprint", self.fingerprint_),
            (
                -1,
                "backbone",
                "device",
                ", ".join(sorted({d for d, _ in getattr(self, "made_on_", [(self.device_, "")])})),
            ),
            (-1, "embedding_cache", "enabled", bool(self.cache_embeddings)),
            (-1, "backbone", "model_key", self.model_key),
            (-1, "backbone", "backend", self.backend),
            (-1, "backbone", "weights", self.weights_source_.describe()),
            (-1, "backbone", "weights_identity", self.manifest_["weights"]),
            (-1, "backbone", "random_init", self.weights_source_.kind == "random"),
            (-1, "backbone", "loaded", loaded is not None),
            (-1, "backbone", "pooling", self.pooling),
            (-1, "backbone", "embedding_dim", self.n_features_out_),
            (-1, "input_adaptation", "target", self.plan_.describe()["target"]),
        ]
        shards_keys = sorted({f for _, f in getattr(self, "made_on_", [])} - {self.fingerprint_})
        if shards_keys:  # shards on other devices than this process's keyed their embeddings apart
            rows.append((-1, "embedding_cache", "shard_fingerprints", shards_keys))
        if loaded is not None:
            rows += [
                (-1, "backbone", "weight_hash", loaded.weight_hash),
                (-1, "backbone", "load_report", loaded.report),
            ]
        rows += [(-1, "input_adaptation", step["step"], step["detail"]) for step in self.plan_.steps]
        return rows
