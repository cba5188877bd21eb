"""The time axis: resampling to the model's rate, then the window's length fitted to whole patches."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from ..data import SignalInfo
from ..exceptions import AdaptationError

if TYPE_CHECKING:
    from ..models.specs import ModelSpec


def _plan_resampling(
    spec: ModelSpec, info: SignalInfo, n_times: int, steps: list
) -> tuple[tuple[int, int] | None, int]:
    """The polyphase ratio ``(up, down)`` to the model's rate (``None`` at its rate already), and the samples after it."""
    if np.isclose(info.sfreq, spec.sfreq):
        return None, n_times
    frac = Fraction(spec.sfreq / info.sfreq).limit_denominator(1000)
    ratio = (frac.numerator, frac.denominator)
    steps.append(
        {
            "step": "resample",
            "detail": f"{info.sfreq:g} Hz -> {spec.sfreq:g} Hz (polyphase, up {ratio[0]}, down {ratio[1]})",
        }
    )
    return ratio, int(np.ceil(n_times * frac.numerator / frac.denominator))


def _plan_length(spec: ModelSpec, n_res: int, n_chans: int, steps: list) -> int:
    """Samples the model receives: ``n_res`` cropped or padded to whole patches, within the model's limits."""
    patch = spec.patch_size
    if patch is None:
        if n_res < spec.min_times:
            raise AdaptationError(
                f"{spec.key!r} needs windows of at least {spec.min_times / spec.sfreq:g} s "
                f"({spec.min_times} samples at {spec.sfreq:g} Hz), got {n_res} samples after resampling; use longer windows."
            )
        return n_res
    n_patches, remainder = divmod(n_res, patch)
    if n_patches == 0:
        raise AdaptationError(
            f"{spec.key!r} works on patches of {patch} samples ({patch / spec.sfreq:g} s at {spec.sfreq:g} Hz) but the "
            f"window has {n_res} samples after resampling; use windows of at least {patch / spec.sfreq:g} s."
        )
    target = n_patches * patch
    if remainder:
        if remainder >= patch / 2:
            target += patch
            steps.append(
                {
                    "step": "pad",
                    "detail": f"zero-padded {n_res} -> {target} samples (multiple of the {patch}-sample patch)",
                }
            )
        else:
            steps.append(
                {
                    "step": "crop",
                    "detail": f"cropped {n_res} -> {target} samples (multiple of the {patch}-sample patch)",
                }
            )
    n_patches = target // patch
    if spec.max_patches is not None and n_patches > spec.max_patches:
        raise AdaptationError(
            f"{spec.key!r} accepts at most {spec.max_patches} patches per channel "
            f"({spec.max_patches * patch / spec.sfreq:g} s at {spec.sfreq:g} Hz); the window has {n_patches}. "
            "Cut the recording into shorter windows."
        )
    if spec.max_tokens is not None and n_patches * n_chans > spec.max_tokens:
        raise AdaptationError(
            f"{spec.key!r} accepts at most {spec.max_tokens} tokens (channels x patches); "
            f"{n_chans} channels x {n_patches} patches = {n_chans * n_patches}. Use shorter windows or fewer channels."
        )
    return target


def _fit_length(X: np.ndarray, n_times: int) -> np.ndarray:
    """``X`` cropped or zero-padded on the right to ``n_times`` samples."""
    have = X.shape[-1]
    if have == n_times:
        return X
    if have > n_times:
        return X[..., :n_times]
    pad = np.zeros(X.shape[:-1] + (n_times - have,), dtype=X.dtype)
    return np.concatenate([X, pad], axis=-1)
