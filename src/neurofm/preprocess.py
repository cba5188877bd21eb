"""Preprocessing of continuous recordings, before windows are cut."""

from __future__ import annotations

from typing import Any

from .configs import PreprocessingConfig

__all__ = ["preprocess_raw", "describe_preprocessing"]


def preprocess_raw(raw: Any, config: PreprocessingConfig | None) -> Any:
    """Apply ``config`` to a loaded ``mne.io.Raw`` (or ``mne.Epochs``) in place and return it."""
    import mne

    if config is None:
        return raw
    with mne.utils.use_log_level("warning"):
        if config.picks is not None:
            raw.pick(config.picks)
        if config.reference is not None:
            raw.set_eeg_reference(config.reference, projection=False, verbose=False)
        if config.notch is not None and hasattr(raw, "notch_filter"):
            raw.notch_filter(config.notch, verbose=False)
        if config.l_freq is not None or config.h_freq is not None:
            raw.filter(config.l_freq, config.h_freq, verbose=False)
        if config.resample is not None:
            raw.resample(config.resample, verbose=False)
    return raw


def describe_preprocessing(config: PreprocessingConfig | None) -> list[str]:
    """The steps taken, in order, as readable lines for the result."""
    if config is None:
        return []
    steps = []
    if config.picks is not None:
        steps.append(f"pick {config.picks}")
    if config.reference is not None:
        steps.append(f"re-reference to {config.reference}")
    if config.notch is not None:
        steps.append(f"notch at {config.notch} Hz")
    if config.l_freq is not None or config.h_freq is not None:
        steps.append(f"band-pass {config.l_freq}-{config.h_freq} Hz (FIR, zero phase)")
    if config.resample is not None:
        steps.append(f"resample to {config.resample} Hz")
    return steps
