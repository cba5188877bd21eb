"""Forward passes of a frozen backbone and pooling of its tokens into embeddings."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from .exceptions import ConfigError

if TYPE_CHECKING:
    import torch

    from .adapt import AdaptationPlan
    from .models.weights import LoadedBackbone

__all__ = ["autocast", "pool_tokens", "embed_windows", "resolve_device", "keep_freed_memory"]

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
    import ctypes
    import os
    import sys

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


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; others are checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was requested but CUDA is not available here; use device='cpu' or 'auto'.")
    return device


def autocast(device: str, precision: str):
    """The autocast context of a precision: none for ``fp32``, else bf16 or fp16 on ``device``'s type."""
    import torch

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
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # scikit-learn depends on it, but do not fail extraction without it
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


def embed_windows(
    backbone: LoadedBackbone,
    plan: AdaptationPlan,
    X: np.ndarray,
    pooling: str,
    batch_size: int = 64,
    device: str = "cpu",
    progress=None,
    precision: str = "fp32",
) -> np.ndarray:
    """Adapt, forward and pool windows in batches.

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

    Returns
    -------
    embeddings : ndarray of float32, shape (n, dim)
    """
    import torch

    if device == "cpu":
        keep_freed_memory()
    module = backbone.module.to(device)
    module.eval()
    out = []
    with torch.inference_mode(), autocast(device, precision), _numpy_blas_in_one_thread():
        for start in range(0, len(X), batch_size):
            batch = torch.from_numpy(plan.apply(X[start : start + batch_size])).to(device)
            tokens, cls = backbone.extract(module, batch, plan.target)
            pooled = pool_tokens(tokens.float(), None if cls is None else cls.float(), pooling)
            out.append(pooled.cpu().numpy().astype(np.float32, copy=False))
            if progress is not None:
                progress(len(batch))
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)
