"""Preprocessing of continuous recordings, before windows are cut."""

from __future__ import annotations

from typing import Any

import numpy as np

from .configs import PreprocessingConfig
from .exceptions import ConfigError, DataValidationError
from .utils.check import check_fits_in_memory

__all__ = ["preprocess_raw", "describe_preprocessing"]


def preprocess_raw(raw: Any, config: PreprocessingConfig | None) -> Any:
    """Apply ``config`` to a loaded ``mne.io.Raw`` (or ``mne.Epochs``) in place and return it."""
    import mne  # heavy: neurofm.run and neurofm --help load this module, not mne

    if config is None:
        return raw
    with mne.utils.use_log_level("warning"):
        if config.picks is not None:
            _pick(raw, config.picks)
        if config.reference is not None:
            raw.set_eeg_reference(config.reference, projection=False, verbose=False)
        if config.notch is not None and hasattr(raw, "notch_filter"):
            raw.notch_filter(config.notch, verbose=False)
        if config.l_freq is not None or config.h_freq is not None:
            _check_band(raw, config.l_freq, config.h_freq)
            raw.filter(config.l_freq, config.h_freq, verbose=False)
        if config.resample is not None:
            _resample(raw, config.resample)
    return raw


def _pick(raw: Any, picks: Any) -> None:
    try:
        raw.pick(_with_event_channels(raw, picks))
    except ValueError as exc:
        raise DataValidationError(
            f"preprocessing.picks={picks!r} does not fit this recording ({exc}); its channels are "
            f"{raw.ch_names[:40]}{' ...' if len(raw.ch_names) > 40 else ''} of types "
            f"{sorted(set(raw.get_channel_types()))}. Pick among these."
        ) from None


def _check_band(raw: Any, l_freq: float | None, h_freq: float | None) -> None:
    nyquist = raw.info["sfreq"] / 2
    if h_freq is not None and h_freq >= nyquist:
        raise DataValidationError(
            f"preprocessing.h_freq={h_freq:g} Hz is not below the Nyquist frequency ({nyquist:g} Hz) of a recording "
            f"sampled at {raw.info['sfreq']:g} Hz; set h_freq below {nyquist:g} Hz, or null."
        )
    if l_freq is not None and h_freq is not None and l_freq >= h_freq:
        raise DataValidationError(
            f"preprocessing.l_freq={l_freq:g} Hz is not below h_freq={h_freq:g} Hz; a band-pass needs l_freq < h_freq."
        )


#: What ``raw.pick`` takes as channel types besides the FIFF kinds (``eeg``, ``mag``, ``stim`` ...).
_TYPE_GROUPS = {"meg", "data", "all", "data_or_ica", "fnirs"}


def _with_event_channels(raw: Any, picks: Any) -> Any:
    """``picks`` plus a continuous recording's stim channels, which hold its events: windows are cut around
    them after preprocessing, and only data channels go into the windows."""
    import mne  # heavy: neurofm.run and neurofm --help load this module, not mne

    if isinstance(raw, mne.BaseEpochs):
        return picks  # epochs carry their events already
    stim = [raw.ch_names[i] for i in mne.pick_types(raw.info, stim=True)]
    listed = [picks] if isinstance(picks, str) else list(picks)
    if not stim or not all(isinstance(p, str) for p in listed):
        return picks  # no stim channel, or channel indices: as given
    kinds = set(mne.io.get_channel_type_constants()) | _TYPE_GROUPS
    if all(p in kinds for p in listed):
        if "all" in listed:
            return picks
        # Channel indices, not ["eeg", "stim"]: a recording may name a channel like a type (MOABB's "stim"), which
        # MNE refuses as ambiguous. The picks are resolved on a one-sample copy of the info, so no data is copied.
        probe = mne.io.RawArray(np.zeros((len(raw.ch_names), 1)), raw.info, verbose=False).pick(listed)
        chosen = set(probe.ch_names) | set(stim)
        return [i for i, name in enumerate(raw.ch_names) if name in chosen]
    return [*listed, *(name for name in stim if name not in listed)]


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
