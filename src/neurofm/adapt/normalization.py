"""Amplitude normalisation: the model's own, over each window or with each recording's statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..configs import AdaptationConfig
    from ..models.specs import ModelSpec


def _normalize(X: np.ndarray, how: str, statistics: np.ndarray | None = None) -> np.ndarray:
    """``X`` normalised as ``how`` says; z-scores use ``statistics`` (n, 2, channels) instead of each window's."""
    eps = 1e-8
    if how == "none":
        return X
    if how == "minmax_window":
        lo = X.min(axis=(1, 2), keepdims=True)
        hi = X.max(axis=(1, 2), keepdims=True)
        return 2.0 * (X - lo) / np.maximum(hi - lo, eps) - 1.0
    if how in ("zscore_channel", "zscore_channel_clip15"):
        if statistics is None:
            mean, std = X.mean(axis=-1, keepdims=True), X.std(axis=-1, keepdims=True)
        else:
            mean, std = statistics[:, 0, :, None], statistics[:, 1, :, None]
        z = (X - mean) / np.maximum(std, eps)
        return np.clip(z, -15.0, 15.0) if how == "zscore_channel_clip15" else z
    if how == "p95_channel":
        q = np.quantile(np.abs(X), 0.95, axis=-1, keepdims=True)
        return X / np.maximum(q, eps)
    raise AssertionError(how)  # pragma: no cover - specs use the names above


_NORMALIZATION_DESCRIPTIONS = {
    "none": None,
    "minmax_window": "min-max scaling of each window to [-1, 1]",
    "zscore_channel": "per-channel z-score over each window",
    "zscore_channel_clip15": "per-channel z-score over each window, clipped to +/-15",
    "p95_channel": "each channel divided by the 95th percentile of its absolute amplitude",
}


def describe_normalization(how: str, by_recording: bool = False) -> str | None:
    """In words, the normalisation ``how`` (``None`` for none), with each recording's statistics if ``by_recording``."""
    text = _NORMALIZATION_DESCRIPTIONS[how]
    if by_recording and text is not None:
        text = text.replace("over each window", "with each recording's mean and standard deviation")
    return text


def uses_recording_statistics(spec: ModelSpec, options: AdaptationConfig) -> bool:
    """Whether windows of known recordings are normalised with their recording's statistics (as in pretraining)."""
    return (
        spec.normalization != "none"
        and spec.normalization_statistics == "recording"
        and options.normalization_statistics == "pretraining"
    )


def _plan_normalization(spec: ModelSpec, options: AdaptationConfig, recordings_known: bool, steps: list) -> bool:
    """Record the model's normalisation; return whether it takes each recording's statistics."""
    if spec.normalization == "none":
        return False
    by_recording = recordings_known and uses_recording_statistics(spec, options)
    detail = describe_normalization(spec.normalization, by_recording)
    if spec.normalization_statistics == "recording":
        if by_recording:
            detail += ", as in pretraining (each recording's statistics over all its windows, after resampling)"
        elif options.normalization_statistics == "window":
            detail += " (normalization_statistics='window'; pretraining used each recording's statistics)"
        else:
            detail += (
                "; pretraining used each recording's statistics, but the windows' recordings are not known "
                "(cut the windows from their recordings with neurofm, or give the sample metadata a "
                "'recording' column)"
            )
    steps.append({"step": "normalize", "detail": detail})
    return by_recording
