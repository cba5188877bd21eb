"""Forward passes of a frozen backbone and pooling of its tokens into embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .exceptions import ConfigError

if TYPE_CHECKING:
    import torch

    from .adapt import AdaptationPlan
    from .models.weights import LoadedBackbone

__all__ = ["pool_tokens", "embed_windows", "resolve_device"]


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; others are checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was requested but CUDA is not available here; use device='cpu' or 'auto'.")
    return device


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

    Returns
    -------
    embeddings : ndarray of float32, shape (n, dim)
    """
    import torch

    module = backbone.module.to(device)
    module.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(X), batch_size):
            batch = torch.from_numpy(plan.apply(X[start : start + batch_size])).to(device)
            tokens, cls = backbone.extract(module, batch, plan.target)
            pooled = pool_tokens(tokens.float(), None if cls is None else cls.float(), pooling)
            out.append(pooled.cpu().numpy().astype(np.float32, copy=False))
            if progress is not None:
                progress(len(batch))
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)
