"""Forward passes of a frozen backbone and pooling of its tokens into embeddings."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .devices import resolve_device
from .exceptions import ConfigError
from .utils.logging import logger
from .utils.prefetch import prefetched, to_pinned

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # scikit-learn depends on it, but do not fail extraction without it
    ThreadpoolController = None

if TYPE_CHECKING:
    import torch

    from .adapt import AdaptationPlan
    from .models.weights import LoadedBackbone

__all__ = [
    "attention_kernels",
    "autocast",
    "cpu_has_fast_bf16",
    "cpu_streams",
    "embed_windows",
    "full_batch",
    "keep_freed_memory",
    "pool_tokens",
    "resolve_batch_size",
    "resolve_device",
    "warn_slow_precision",
]

# Most batches in flight at once on the CPU: each holds its own activations.
MAX_CPU_STREAMS = 8
# batch_size="auto": on the CPU, 32 windows per stream beat 64 for LaBraM, CBraMod and CodeBrain in
# fp32 and bf16 alike (benchmarks/extract_speed.py, 1.04 to 1.36x the plain loop against 0.91 to
# 1.27x); elsewhere the earlier default stands, unmeasured here.
CPU_AUTO_BATCH_SIZE = 32
GPU_AUTO_BATCH_SIZE = 64
# Modules that have run one forward pass: what they build on their first one is in place.
_FORWARDED: weakref.WeakSet = weakref.WeakSet()
_ALLOCATOR_TUNED = False
_OPENBLAS = None  # threadpoolctl's handle on numpy's OpenBLAS, found once


def keep_freed_memory() -> bool:
    """Let glibc reuse freed blocks instead of returning them to the kernel (once per process).

    A transformer forward allocates and frees activations of several
    megabytes per layer. glibc serves blocks above its (adaptive) mmap
    threshold with fresh ``mmap`` calls and trims freed heap memory, so each
    batch pays page faults and kernel zeroing for memory it just released (on
    2 cores, CBraMod went from 64 to 95 windows/s at batch 16 with this
    setting, in separate processes on a machine whose speed drifts). Raising the mmap and trim thresholds
    (32 MB and 256 MB) keeps that memory in the process: at most 256 MB of
    freed heap is held back. Set ``NEUROFM_KEEP_ALLOCATOR=1`` to leave the
    allocator alone.

    Returns
    -------
    tuned : bool
        Whether the thresholds are set (False off glibc, or when disabled).
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("NEUROFM_KEEP_ALLOCATOR") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and other C libraries have no mallopt thresholds
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    _ALLOCATOR_TUNED = bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(
        libc.mallopt(m_trim_threshold, 256 * 2**20)
    )
    return _ALLOCATOR_TUNED


def autocast(device: str, precision: str):
    """The autocast context of a precision: none for ``fp32``, else bf16 or fp16 on ``device``'s type."""
    import torch  # heavy: import neurofm does not load torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


@contextlib.contextmanager
def _numpy_blas_in_one_thread():
    """Run numpy's OpenBLAS in the calling thread while torch computes.

    The input adaptation multiplies by a channel matrix in numpy. OpenBLAS then
    leaves its worker threads spinning for a while after each call, and they
    compete with torch's threads for the same cores: on 2 cores that slowed
    every forward by about 10 % (paired runs in one process). One BLAS
    thread for a 19 x 19 product costs nothing.
    """
    if ThreadpoolController is None:
        yield
        return
    global _OPENBLAS
    if _OPENBLAS is None:
        _OPENBLAS = ThreadpoolController().select(internal_api="openblas")
    with _OPENBLAS.limit(limits=1):
        yield


def pool_tokens(tokens: torch.Tensor, cls: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """Pool token features ``(B, N, D)`` into one vector per window.

    Parameters
    ----------
    tokens : Tensor, shape (B, N, D)
        Token features.
    cls : Tensor, shape (B, D) | None
        The model's class/start token, if it has one.
    pooling : {"mean", "max", "flatten", "cls"}
        ``flatten`` concatenates all tokens (``N * D`` values).
    """
    if pooling == "mean":
        return tokens.mean(dim=1)
    if pooling == "max":
        return tokens.amax(dim=1)
    if pooling == "flatten":
        return tokens.reshape(tokens.shape[0], -1)
    if pooling == "cls":
        if cls is None:
            raise ConfigError("pooling='cls' needs a model with a class token; use 'mean'.")
        return cls
    raise ConfigError(f"Unknown pooling {pooling!r}; use 'mean', 'max', 'flatten' or 'cls'.")


def full_batch(X: np.ndarray, start: int, batch_size: int) -> tuple[np.ndarray, int]:
    """Rows ``start:start + batch_size`` of ``X``, a short batch padded to ``batch_size`` rows.

    This is the batching rule of every forward pass outside training
    (:func:`embed_windows`, :func:`neurofm.training.predict_network`): each
    forward sees the same batch shape. Matrix kernels choose their blocking,
    and so their order of summation, by shape, so a window embedded alone or
    in a short last batch came out different in the last bits from the same
    window in a full batch (CBraMod, LaBraM, BENDR: up to 1e-6 in the
    embedding, 5e-4 in a head's probabilities), and a run on a partly warm
    embedding cache differed from a cold one. Within one shape, a window's
    output depends neither on the other rows nor on its own row (measured on
    all nine backbones in fp32 and bf16, one and two CPU streams, batches of
    2 to 32; LUNA's phase needed its own fix for that, see
    :mod:`neurofm.models.luna_features`), so the padding only has to fill
    the shape.

    The padding repeats the batch's own windows in turn, never zeros: a
    repeated window is an input the adaptation and the model already take,
    whereas an all-zero window has no spread for a per-window normalisation
    to divide by. The caller drops the rows past ``n_real``. This costs at
    most one batch of extra compute per call, for the short last batch.

    Parameters
    ----------
    X : ndarray, shape (n, ...)
        Rows to batch (raw or adapted windows).
    start : int
        First row of the batch.
    batch_size : int
        Rows in every batch.

    Returns
    -------
    batch : ndarray, shape (batch_size, ...)
        The rows, then copies of them up to ``batch_size`` rows.
    n_real : int
        How many leading rows of ``batch`` are ``X``'s own.
    """
    batch = X[start : start + batch_size]
    n_real = len(batch)
    if 0 < n_real < batch_size:
        batch = batch[np.arange(batch_size) % n_real]
    return batch, n_real


def cpu_streams(n_batches: int) -> tuple[int, int]:
    """How many batches run at once on the CPU, and with how many torch threads each.

    One forward pass of these backbones is hundreds of small operations; two
    threads working on each of them wait on each other at every one, while
    two batches on one thread each do not. On 2 cores this gave CBraMod
    1.12x (fp32) and 1.28x (bf16) over one two-threaded stream, measured
    side by side in one process. The streams share torch's intra-op threads
    (``torch.get_num_threads()``), at most :data:`MAX_CPU_STREAMS` of them;
    ``NEUROFM_CPU_STREAMS`` sets the number (``1``: batches one after the
    other on all threads).

    The threads per batch depend on the machine and the setting only, never
    on how many batches there are, so a window's embedding does not depend
    on how many others are embedded with it (some kernels round differently
    on another number of threads).

    Parameters
    ----------
    n_batches : int
        Batches to embed (no more streams run than there are batches).

    Returns
    -------
    streams, threads_per_batch : int
    """
    import torch  # heavy: import neurofm does not load torch

    n_threads = torch.get_num_threads()
    wanted = os.environ.get("NEUROFM_CPU_STREAMS")
    if wanted is not None:
        try:
            streams = int(wanted)
        except ValueError:
            raise ConfigError(
                f"NEUROFM_CPU_STREAMS={wanted!r} is not a whole number; set it to 1 or more, or unset it."
            ) from None
        if streams < 1:
            raise ConfigError(f"NEUROFM_CPU_STREAMS={wanted!r} must be at least 1.")
    else:
        streams = min(n_threads, MAX_CPU_STREAMS)
    return max(1, min(streams, n_batches)), max(1, n_threads // streams)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512 BF16 or AMX), so bf16 autocast pays off."""
    import torch  # heavy: import neurofm does not load torch

    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe() for probe in probes if probe is not None)


def warn_slow_precision(device: str, precision: str) -> None:
    """Warn, before any compute, when bf16 on this CPU would be slower than fp32.

    Without AVX-512 BF16 or AMX, every bf16 product is emulated (several
    times slower than fp32 here on an AVX2 machine); with AMX it is the
    fastest path. The choice stays the user's: embeddings differ between
    precisions, so neurofm never switches on its own.
    """
    if precision == "bf16" and device == "cpu" and not cpu_has_fast_bf16():
        msg = (
            "precision='bf16' on this CPU (no AVX-512 BF16 or AMX) emulates every bf16 product and runs several "
            "times slower than fp32; use precision='fp32' here, or bf16 on a GPU or an AMX CPU."
        )
        logger.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)


def resolve_batch_size(batch_size: int | str, device: str) -> int:
    """Windows per forward pass: ``batch_size`` itself, or for ``"auto"`` what suits ``device``.

    ``"auto"`` follows scikit-learn's ``MLPClassifier(batch_size="auto")``:
    32 windows on the CPU, where smaller batches keep each stream's
    activations in cache (:data:`CPU_AUTO_BATCH_SIZE`), and 64 on other devices.
    Embeddings do not depend on the batch size beyond float rounding, and
    the embedding cache does not key on it.

    Parameters
    ----------
    batch_size : int | "auto"
        The setting.
    device : str
        Resolved torch device (``"cpu"``, ``"cuda:0"`` ...).

    Returns
    -------
    batch_size : int

    Raises
    ------
    ConfigError
        When ``batch_size`` is neither a whole number of at least 1 nor ``"auto"``.
    """
    if isinstance(batch_size, str) and batch_size == "auto":
        return CPU_AUTO_BATCH_SIZE if device == "cpu" else GPU_AUTO_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(
            f"batch_size={batch_size!r} must be a whole number of at least 1, or 'auto' "
            f"({CPU_AUTO_BATCH_SIZE} on the CPU, {GPU_AUTO_BATCH_SIZE} on a GPU)."
        )
    return int(batch_size)


@contextlib.contextmanager
def attention_kernels(spec, device: str):
    """Select the attention kernel the spec asks for on this device, for the duration of an extraction.

    torch's flash kernel is tuned for long sequences; over a handful of
    tokens (CBraMod attends over the 19 channels of a patch or the 4
    patches of a channel) the plain math kernel is faster on the CPU
    (``ModelSpec.short_attention``). The selection is process-wide in torch
    and restored on exit.
    """
    if not (spec is not None and spec.short_attention and device == "cpu"):
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel  # heavy: import neurofm does not load torch

    with sdpa_kernel([SDPBackend.MATH]):
        yield


@contextlib.contextmanager
def _intra_op_threads(n: int):
    import torch  # heavy: import neurofm does not load torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _flagged_for_dispatch(module):
    """Flag a frozen module's parameters as requiring grad while it embeds under ``no_grad``.

    No graph is built under ``no_grad``, but torch reads the flag to choose
    kernels: autocast keeps its bf16 copy of a weight for the next batches
    only when the weight requires grad (else every batch casts every weight
    again), and ``torch.matmul`` folds a non-contiguous (B, N, K) activation
    into one product only then (else it multiplies batch by batch with the
    weight copied B times). CodeBrain in bf16 on 2 cores: 1.7x faster with
    the flags on. They are put back as they were on exit.
    """
    flags = [(p, p.requires_grad) for p in module.parameters() if p.is_floating_point()]
    for p, _ in flags:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass(frozen=True)
class _Extraction:
    """One call of :func:`embed_windows`: its windows, and how each batch of them is adapted, forwarded and pooled.

    The CPU streams (:func:`_embed_on_cpu`) and the device pipeline
    (:func:`_embed_on_device`) both make and embed their batches through
    :meth:`adapted` and :meth:`embedded`.
    """

    backbone: LoadedBackbone
    module: torch.nn.Module
    plan: AdaptationPlan
    X: np.ndarray
    statistics: np.ndarray | None
    pooling: str
    batch_size: int
    device: str
    precision: str
    progress: Callable[[int], Any] | None

    def adapted(self, start: int) -> tuple[np.ndarray, int]:
        """The batch from ``start`` as the backbone takes it (:func:`full_batch`), and its number of real rows."""
        windows, n_real = full_batch(self.X, start, self.batch_size)
        stats = None if self.statistics is None else full_batch(self.statistics, start, self.batch_size)[0]
        return self.plan.apply(windows, stats), n_real

    def embedded(self, batch: torch.Tensor, n_real: int) -> torch.Tensor:
        """Pooled float32 features of the real rows of an adapted batch already on the device."""
        tokens, cls = self.backbone.extract(self.module, batch, self.plan.target)
        return pool_tokens(tokens.float(), None if cls is None else cls.float(), self.pooling)[:n_real]


def _embed_stream(
    job: _Extraction,
    pending: Iterator[int],
    pooled: dict[int, np.ndarray],
    lock: threading.Lock,
    failed: threading.Event,
) -> None:
    """Embed batches taken from ``pending`` into ``pooled`` until it runs out (several streams may share it)."""
    import torch  # heavy: import neurofm does not load torch

    # Grad and autocast modes are per thread: each stream opens its own, once, so the bf16
    # copies of the weights are made once per stream (see _flagged_for_dispatch). no_grad,
    # not inference_mode: under inference_mode those copies require no grad, and matmul
    # stops folding (CodeBrain in bf16: 1.45x slower).
    with torch.no_grad(), autocast(job.device, job.precision):
        while not failed.is_set():
            with lock:
                start = next(pending, None)
            if start is None:
                return
            rows, n_real = job.adapted(start)
            vectors = job.embedded(torch.from_numpy(rows).to(job.device), n_real)
            pooled[start] = vectors.cpu().numpy().astype(np.float32, copy=False)
            if job.progress is not None:
                with lock:
                    job.progress(n_real)


def _embed_on_cpu(job: _Extraction, starts: list[int]) -> np.ndarray:
    """Embed the batches from ``starts`` in :func:`cpu_streams` streams; they come out in order."""
    streams, threads_each = cpu_streams(len(starts))
    pooled: dict[int, np.ndarray] = {}
    lock = threading.Lock()
    failed = threading.Event()

    def run(pending: Iterator[int]) -> None:
        _embed_stream(job, pending, pooled, lock, failed)

    # Warning filters are process-wide; whatever a stream's extractor does to them is undone here.
    with warnings.catch_warnings(), _intra_op_threads(threads_each):
        rest = starts
        if job.module not in _FORWARDED:
            # A module's first batch runs alone: some build state on their first forward
            # (SignalJEPA's time encoding), and streams must not see it half-built.
            run(iter(starts[:1]))
            _FORWARDED.add(job.module)
            rest = starts[1:]
        pending = iter(rest)
        streams = min(streams, len(rest))
        if streams <= 1:
            run(pending)
        else:
            with ThreadPoolExecutor(streams) as pool:
                futures = [pool.submit(run, pending) for _ in range(streams)]
                try:
                    for future in futures:
                        future.result()
                except BaseException:
                    failed.set()
                    raise
    return np.concatenate([pooled[start] for start in starts], axis=0)


def _prepared(job: _Extraction, starts: list[int]) -> Iterator[tuple[torch.Tensor, int]]:
    """Adapted batches as CPU tensors, in page-locked memory for a GPU (:func:`~neurofm.utils.prefetch.to_pinned`)."""
    for start in starts:
        rows, n_real = job.adapted(start)
        yield to_pinned(rows, job.device), n_real


def _embed_on_device(job: _Extraction, starts: list[int]) -> np.ndarray:
    """One stream on a GPU: a background thread adapts the next batches while the device computes; one copy back at the end."""
    import torch  # heavy: import neurofm does not load torch

    on_device = []
    with torch.no_grad(), autocast(job.device, job.precision):
        for batch, n_real in prefetched(_prepared(job, starts)):
            on_device.append(job.embedded(batch.to(job.device, non_blocking=True), n_real))
            if job.progress is not None:
                job.progress(n_real)  # counts windows handed to the device, without waiting for it
    return torch.cat(on_device).cpu().numpy().astype(np.float32, copy=False)


def embed_windows(
    backbone: LoadedBackbone,
    plan: AdaptationPlan,
    X: np.ndarray,
    pooling: str,
    batch_size: int = 64,
    device: str = "cpu",
    progress=None,
    precision: str = "fp32",
    statistics: np.ndarray | None = None,
) -> np.ndarray:
    """Adapt, forward and pool windows in batches.

    On the CPU, batches run in several streams at once (:func:`cpu_streams`);
    every batch holds the same windows as in a one-stream run and comes out
    in order. Every forward pass sees ``batch_size`` windows: a short last
    batch is padded with copies of its own windows and the copies are
    dropped (:func:`full_batch`), so a window's embedding does not depend on
    how many windows are embedded with it, nor on which ones. That costs at
    most one batch of extra compute per call.

    Parameters
    ----------
    backbone : LoadedBackbone
        The frozen backbone.
    plan : AdaptationPlan
        The input adaptation for these windows.
    X : ndarray, shape (n, n_channels, n_times)
        Input windows as given by the user (after validation).
    pooling : str
        Pooling mode.
    batch_size : int
        Windows per forward pass.
    device : str
        Torch device.
    progress : callable | None
        Called with the number of windows done after each batch.
    precision : {"fp32", "bf16", "fp16"}
        Autocast precision of the forward pass (pooled embeddings are float32).
    statistics : ndarray, shape (n, 2, n_channels_out) | None
        Each window's recording's normalisation statistics, for a plan that
        normalises with them (:func:`neurofm.adapt.recording_statistics`).

    Returns
    -------
    embeddings : ndarray of float32, shape (n, dim)
    """
    if device == "cpu":
        keep_freed_memory()
    module = backbone.module.to(device)
    module.eval()
    starts = list(range(0, len(X), batch_size))
    if not starts:
        return np.zeros((0, 0), np.float32)
    job = _Extraction(backbone, module, plan, X, statistics, pooling, batch_size, device, precision, progress)
    spec = getattr(backbone, "spec", None)
    with _numpy_blas_in_one_thread(), attention_kernels(spec, device), _flagged_for_dispatch(module):
        return _embed_on_device(job, starts) if device != "cpu" else _embed_on_cpu(job, starts)
