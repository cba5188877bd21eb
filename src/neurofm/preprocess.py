"""Preprocessing of continuous recordings, before windows are cut."""

from __future__ import annotations

from typing import Any

from .configs import PreprocessingConfig
from .exceptions import ConfigError
from .utils.check import check_fits_in_memory

__all__ = ["preprocess_raw", "describe_preprocessing"]


def preprocess_raw(raw: Any, config: PreprocessingConfig | None) -> Any:
    """Apply ``config`` to a loaded ``mne.io.Raw`` (or ``mne.Epochs``) in place and return it."""
    import mne  # heavy: neurofm.run and neurofm --help load this module, not mne

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
            _resample(raw, config.resample)
    return raw


def _resample(raw: Any, rate: float) -> None:
    what = f"preprocessing.resample={rate:g} Hz"
    fix = "set preprocessing.resample to the rate the models need (e.g. 200 Hz; they resample themselves anyway)."
    # The resampled data, float64, and the FFT's work arrays: about three copies of the result.
    n_samples = len(raw.times) * (len(raw.events) if hasattr(raw, "events") else 1)  # Epochs: per epoch
    n_out = len(raw.ch_names) * n_samples * rate / raw.info["sfreq"]
    check_fits_in_memory(3 * 8 * n_out, what, fix)
    try:
        raw.resample(rate, verbose=False)
    except MemoryError as exc:
        raise ConfigError(f"{what} ran out of memory; {fix}") from exc


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
