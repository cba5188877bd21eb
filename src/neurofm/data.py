"""Validation of what a user hands to :meth:`neurofm.Experiment.run`.

Windows come as ``mne.Epochs`` or as a numpy array ``(n_windows, n_channels,
n_times)`` with signal metadata (sampling rate, channel names, units). Every
check here runs before any compute and names the fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .exceptions import DataValidationError
from .sources import WindowSource, as_window_source, is_lazy
from .utils.check import format_choices
from .utils.logging import logger

__all__ = [
    "SignalInfo",
    "Inputs",
    "check_multilabel_targets",
    "pick_channels",
    "prepare_inputs",
    "sensor_positions",
    "UNIT_TO_SI",
]

# Multiplier that takes a value in the named unit to SI (volts, tesla, tesla/metre).
UNIT_TO_SI = {
    "V": 1.0,
    "mV": 1e-3,
    "uV": 1e-6,
    "µV": 1e-6,
    "μV": 1e-6,
    "nV": 1e-9,
    "T": 1.0,
    "fT": 1e-15,
    "pT": 1e-12,
    "T/m": 1.0,
    "fT/cm": 1e-13,
}
# Largest standard deviation of a plausible EEG/MEG channel, in SI units. A volt
# value above this is almost certainly microvolts passed as volts (LaBraM issue 26).
_PLAUSIBLE_SI_STD = {"V": 1e-2, "T": 1e-8, "T/m": 1e-6}
# Smallest standard deviation of a live EEG channel; flat (exactly constant) channels are left alone.
_SMALLEST_EEG_STD_V = 1e-9
# Typical standard deviation of EEG written in volts (0.1 uV to 1 mV): numbers of this size declared in a
# smaller unit ('uV', 'nV') are volts under the wrong name, not MEG, whose numbers in tesla are below 1e-10.
_EEG_IN_VOLTS = (1e-7, 1e-3)


# The sensor type each SI unit stands for; EEG includes every electric channel (sEEG, ECoG).
SENSOR_OF_UNIT = {"V": "eeg", "T": "mag", "T/m": "grad"}
# What each name of ``sensor_types`` selects.
SENSOR_GROUPS = {"eeg": ("eeg",), "mag": ("mag",), "grad": ("grad",), "meg": ("mag", "grad")}


def si_base(unit: str) -> str:
    """The SI unit a unit name measures in: ``"V"``, ``"T"`` or ``"T/m"``."""
    if unit.endswith("V"):
        return "V"
    if unit in ("T/m", "fT/cm"):
        return "T/m"
    return "T"


@dataclass(frozen=True)
class SignalInfo:
    """What the windows are: sampling rate, channel names and per-channel units.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    ch_names : tuple of str
        One name per channel, in the order of the array's second axis.
    units : tuple of str
        One unit per channel, keys of :data:`UNIT_TO_SI` (``"V"`` for EEG in volts).
    positions : tuple of (tuple of 3 float | None) | None
        Per channel, the sensor's position in metres in MNE's head frame, as the
        recording's ``info`` gives it (digitised EEG electrodes, MEG sensors
        moved from the device frame by ``info["dev_head_t"]``); ``None`` for a
        channel without one. ``None`` as a whole when the input carried no
        positions (a numpy array), in which case electrode names are looked up
        in MNE's template montage where a model needs positions.
    passband : (float, float) | None
        The band in Hz the windows were already filtered to (high-pass and
        low-pass edges, ``0`` and the Nyquist frequency where unfiltered), as
        ``mne.Epochs`` record it in ``info["highpass"]``/``info["lowpass"]``
        (a run's preprocessing and the recording's own filters included);
        ``None`` when unknown (a numpy array). It only informs the adaptation
        plan's passband note; it is not part of :meth:`to_dict`, since the
        windows' values, not their filter record, identify them.
    """

    sfreq: float
    ch_names: tuple[str, ...]
    units: tuple[str, ...]
    positions: tuple[tuple[float, float, float] | None, ...] | None = None
    passband: tuple[float, float] | None = None

    @property
    def sensor_types(self) -> tuple[str, ...]:
        """Per channel: ``"eeg"`` (electric, volts), ``"mag"`` (tesla) or ``"grad"`` (tesla per metre)."""
        return tuple(SENSOR_OF_UNIT[si_base(unit)] for unit in self.units)

    def sensor_counts(self) -> dict[str, int]:
        """Channels per sensor type, in order of first appearance."""
        types = self.sensor_types
        return {kind: types.count(kind) for kind in dict.fromkeys(types)}

    def subset(self, keep: list[int]) -> SignalInfo:
        """The same description for the channels at indices ``keep``, in that order."""
        positions = None if self.positions is None else tuple(self.positions[i] for i in keep)
        return SignalInfo(
            self.sfreq,
            tuple(self.ch_names[i] for i in keep),
            tuple(self.units[i] for i in keep),
            positions,
            self.passband,
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "sfreq": self.sfreq,
            "ch_names": list(self.ch_names),
            "units": list(self.units),
            "sensor_types": self.sensor_counts(),
        }
        if self.positions is not None:  # positions change what position-aware models compute, so they are keyed
            known = sum(p is not None for p in self.positions)
            digest = hashlib.blake2b(repr(self.positions).encode(), digest_size=8).hexdigest()
            out["positions"] = {"known": known, "sha": digest}
        return out


@dataclass
class Inputs:
    """Validated inputs: float32 windows, labels, metadata and signal info."""

    X: np.ndarray | WindowSource  # a WindowSource when the windows are read from disk in slices
    y: np.ndarray | None
    metadata: pd.DataFrame
    info: SignalInfo
    extra: dict[str, Any] = field(default_factory=dict)
    #: task="multilabel": the name of each column of ``y`` (a DataFrame's columns, else ``label_0``, ``label_1`` ...).
    label_names: tuple[str, ...] | None = None


def _epochs_signal(epochs: Any) -> tuple[np.ndarray, SignalInfo, pd.DataFrame | None]:
    """Data-channel picks, signal info (SI units) and metadata of ``mne.Epochs``."""
    import mne  # heavy: import neurofm does not load mne

    # CTF/4D reference magnetometers sit far from the head and only serve noise compensation: never data.
    picks = mne.pick_types(epochs.info, eeg=True, meg=True, seeg=True, ecog=True, ref_meg=False, exclude="bads")
    if len(picks) == 0:
        raise DataValidationError(
            "The epochs hold no EEG/MEG data channel (or all are marked bad); "
            "set channel types with epochs.set_channel_types(...) or clear info['bads']."
        )
    types = epochs.get_channel_types(picks=picks)
    unit_by_type = {"eeg": "V", "seeg": "V", "ecog": "V", "mag": "T", "grad": "T/m"}
    info = SignalInfo(
        sfreq=float(epochs.info["sfreq"]),
        ch_names=tuple(epochs.ch_names[i] for i in picks),
        units=tuple(unit_by_type.get(t, "V") for t in types),
        positions=sensor_positions(epochs.info, picks),
        passband=(float(epochs.info["highpass"]), float(epochs.info["lowpass"])),
    )
    meta = epochs.metadata.reset_index(drop=True) if epochs.metadata is not None else None
    return picks, info, meta


def sensor_positions(info: Any, picks: Any) -> tuple[tuple[float, float, float] | None, ...]:
    """Positions (metres, head frame) of the picked channels of an ``mne.Info``; ``None`` where unknown.

    MNE stores EEG electrodes in the head frame and MEG sensors in the device
    frame; MEG positions are moved to the head frame with ``info["dev_head_t"]``
    so that both share one frame (without that transform, e.g. MEG recorded
    without head digitisation, they stay in the device frame, whose origin is
    also inside the helmet).
    """
    from mne.io.constants import FIFF  # heavy: import neurofm does not load mne
    from mne.transforms import apply_trans  # heavy: import neurofm does not load mne

    dev_head = info["dev_head_t"]
    out = []
    for i in picks:
        ch = info["chs"][i]
        pos = np.asarray(ch["loc"][:3], dtype=np.float64)
        if not np.isfinite(pos).all() or not pos.any():
            out.append(None)
            continue
        if ch["coord_frame"] == FIFF.FIFFV_COORD_DEVICE and dev_head is not None:
            pos = apply_trans(dev_head, pos)
        out.append(_micrometres(pos))
    return tuple(out)


def prepare_inputs(
    X: Any,
    y: Any = None,
    sample_metadata: pd.DataFrame | dict | None = None,
    *,
    sfreq: float | None = None,
    ch_names: list[str] | None = None,
    units: str | list[str] | None = None,
    task: str = "classification",
    sensor_types: list[str] | None = None,
    positions: Any = None,
    passband: Any = None,
) -> Inputs:
    """Check windows, labels and metadata and bring them to one form.

    Parameters
    ----------
    X : mne.Epochs | array, shape (n_windows, n_channels, n_times)
        The windows: ``mne.Epochs``, a numpy array, or data read in slices
        from disk (``np.memmap``, an h5py dataset, a zarr array, or
        ``mne.Epochs`` with ``preload=False``), which stays on disk and is
        returned as a :class:`~neurofm.sources.WindowSource`.
    y : array-like, shape (n_windows,) | None
        Labels (strings or integers) or regression targets.
    sample_metadata : DataFrame | dict | None
        One row per window (e.g. a ``Subject`` column for group CV).
    sfreq, ch_names, units
        Signal metadata of a numpy ``X``; read from ``X.info`` for ``mne.Epochs``.
        ``units`` is one unit for all channels or one per channel (default ``"V"``).
    task : str
        ``"classification"``, ``"regression"`` or ``"multilabel"`` (``y`` of
        shape (n_windows, n_labels) of 0/1; a DataFrame's columns name the
        labels: :attr:`Inputs.label_names`).
    sensor_types : list of {"eeg", "meg", "mag", "grad"} | None
        Keep only these sensors (``"meg"`` = magnetometers and gradiometers).
        ``None`` keeps every EEG and MEG channel. A type the windows do not
        hold is an error.
    positions : sequence of (3 floats | None) | None
        Sensor positions of a numpy ``X`` (metres, head frame), one per
        channel or ``None`` where unknown; ``mne.Epochs`` carry their own.
    passband : (float, float) | None
        The band in Hz a numpy ``X`` was already filtered to (``None``:
        unknown); ``mne.Epochs`` carry theirs in ``info``. Only the
        adaptation plan's passband note reads it.

    Returns
    -------
    inputs : Inputs
    """
    epochs_meta = None
    _refuse_continuous(X)
    lazy = is_lazy(X)
    if hasattr(X, "get_data") and hasattr(X, "info"):
        given = [
            name
            for name, value in (
                ("sfreq", sfreq),
                ("ch_names", ch_names),
                ("positions", positions),
                ("passband", passband),
            )
            if value is not None
        ]
        if given:
            raise DataValidationError(
                f"{'/'.join(given)} given together with mne.Epochs, which carry their own; drop these arguments "
                "(positions come from the epochs' info: set a montage there; the passband is the one their "
                "filters recorded in info)."
            )
        if lazy:
            X.drop_bad(verbose="warning")  # the number of windows of lazy epochs is known only after this pass
        picks, info, epochs_meta = _epochs_signal(X)
        # MNE returns SI units (volts, tesla, tesla/metre); lazy epochs are read from disk batch by batch.
        X = as_window_source(X, picks) if lazy else X.get_data(picks=picks)
        if units is not None:
            info = replace(info, units=_expand_units(units, len(info.ch_names)))
    else:
        X = as_window_source(_check_lazy_array(X)) if lazy else _as_window_array(X)
        info = _signal_info(X, sfreq, ch_names, units)
        if positions is not None:
            info = replace(info, positions=_check_positions(positions, len(info.ch_names)))
        if passband is not None:
            info = replace(info, passband=_check_passband(passband, info.sfreq))

    if sensor_types is not None:
        X, info = _pick_sensor_types(X, info, sensor_types)
    n = X.shape[0]
    metadata = _metadata_frame(sample_metadata, epochs_meta, n)
    label_names = None
    if y is not None and task == "multilabel":
        y_arr, label_names = _check_multilabel_targets(y, n)
    else:
        y_arr = _check_targets(y, n, task) if y is not None else None
    if lazy:  # one pass over the file, chunk by chunk, before any model sees a window
        _check_finite_in_chunks(X)
        _check_plausible_units(X.read(0, 64), info)
    else:
        _check_finite(X)
        _check_plausible_units(X, info)
        X = np.ascontiguousarray(X, dtype=np.float32)
    return Inputs(X=X, y=y_arr, metadata=metadata, info=info, label_names=label_names)


def _check_positions(positions: Any, n_chans: int) -> tuple[tuple[float, float, float] | None, ...]:
    rows = list(positions)
    if len(rows) != n_chans:
        raise DataValidationError(
            f"positions has {len(rows)} entries but X has {n_chans} channels; give one per channel."
        )
    out = []
    for i, row in enumerate(rows):
        if row is None:
            out.append(None)
            continue
        pos = np.asarray(row, dtype=np.float64)
        if pos.shape != (3,) or not np.isfinite(pos).all():
            raise DataValidationError(f"positions[{i}] must be 3 finite numbers in metres (or None), got {row!r}.")
        out.append(_micrometres(pos))
    return tuple(out)


def _check_passband(passband: Any, sfreq: float) -> tuple[float, float]:
    try:
        low, high = (float(edge) for edge in passband)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(
            f"passband must be the two edges in Hz the windows were filtered to, e.g. (0.5, 40.0); got {passband!r}."
        ) from exc
    if not (np.isfinite(low) and np.isfinite(high)) or not 0 <= low < high:
        raise DataValidationError(
            f"passband must be (low, high) in Hz with 0 <= low < high, got {passband!r} (0 for no high-pass)."
        )
    return low, min(high, sfreq / 2)  # nothing above the Nyquist frequency exists in the windows


def _micrometres(pos: np.ndarray) -> tuple[float, float, float]:
    """A position rounded to micrometres, so the same sensor hashes alike on every path and platform."""
    return tuple(round(float(v), 6) for v in pos)


def is_continuous(X: Any) -> bool:
    """Whether ``X`` is a continuous recording (``mne.io.Raw``) or a non-empty list of them."""
    try:
        from mne.io import BaseRaw  # heavy: import neurofm does not load mne
    except ImportError:  # pragma: no cover - MNE is a dependency
        return False
    if isinstance(X, BaseRaw):
        return True
    return isinstance(X, (list, tuple)) and len(X) > 0 and any(isinstance(x, BaseRaw) for x in X)


def _refuse_continuous(X: Any) -> None:
    """A continuous recording has no windows or labels yet: say how to cut them."""
    if is_continuous(X):
        raise DataValidationError(
            "X is a continuous recording (mne.io.Raw); an estimator needs windows with one label each. Cut them "
            "with neurofm.loaders.windows_from_raw(raw, tmin=..., tmax=...) (event-locked, labels from the "
            "events) or window=... (fixed length), then pass the epochs and epochs.metadata['label']; or give the "
            "recording to Experiment.run with ExperimentConfig(windows=WindowConfig(...)), which cuts them. MEG "
            "and EEG channels keep their units (T, T/m, V); nothing needs converting."
        )


def _check_lazy_array(X: Any) -> Any:
    """Layout checks of an on-disk array, reading no window."""
    _check_layout(np.dtype(getattr(X, "dtype", object)), tuple(X.shape), fix="store the windows as one 3-D array")
    return X


def _as_window_array(X: Any) -> np.ndarray:
    try:
        arr = np.asarray(X)
    except Exception as exc:  # noqa: BLE001 - re-raised with the fix
        raise DataValidationError(
            f"X could not be read as a numpy array ({exc}); pass a float array or mne.Epochs."
        ) from exc
    fix = "for a single window use X[np.newaxis]" if arr.ndim == 2 else "reshape it to (n_windows, n_channels, n_times)"
    _check_layout(arr.dtype, arr.shape, fix=fix)
    return arr


def _check_layout(dtype: np.dtype, shape: tuple[int, ...], fix: str) -> None:
    """Windows hold numbers, in 3 dimensions, none of them empty; ``fix`` says how to reshape."""
    if dtype.kind not in "iuf":  # complex values would lose their imaginary part, booleans are no signal
        raise DataValidationError(f"X must hold real numbers, got dtype {dtype}; pass a float array or mne.Epochs.")
    if len(shape) != 3:
        raise DataValidationError(
            f"X must have 3 dimensions (n_windows, n_channels, n_times), got {len(shape)} with shape {shape}; {fix}."
        )
    if min(shape) == 0:
        raise DataValidationError(f"X has an empty axis (shape {shape}); every window needs channels and samples.")


def _expand_units(units: str | list[str] | None, n_chans: int) -> tuple[str, ...]:
    units = "V" if units is None else units
    if not isinstance(units, (str, list, tuple)):
        raise DataValidationError(
            f"units must be a unit name or a list of one per channel, got {type(units).__name__}."
        )
    unit_list = [units] * n_chans if isinstance(units, str) else list(units)
    if len(unit_list) != n_chans:
        raise DataValidationError(
            f"units has {len(unit_list)} entries but X has {n_chans} channels; give one per channel."
        )
    for unit in unit_list:
        if not isinstance(unit, str) or unit not in UNIT_TO_SI:
            raise DataValidationError(f"Unknown unit {unit!r}; use one of {format_choices(sorted(UNIT_TO_SI))}.")
    return tuple(unit_list)


def _signal_info(X: np.ndarray, sfreq: Any, ch_names: Any, units: Any) -> SignalInfo:
    n_chans = X.shape[1]
    if sfreq is None:
        raise DataValidationError(
            "The sampling rate is missing: pass sfreq=<Hz> to Experiment.run with a numpy X (or pass mne.Epochs)."
        )
    try:
        sfreq = float(sfreq)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"sfreq must be a number in Hz, got {sfreq!r}.") from exc
    if not np.isfinite(sfreq) or sfreq <= 0:
        raise DataValidationError(f"sfreq must be a positive number of Hz, got {sfreq}.")
    if ch_names is None:
        raise DataValidationError(
            "Channel names are missing: pass ch_names=[...] (one per channel, e.g. 'Fp1', 'Cz') with a numpy X; "
            "foundation models map channels by name."
        )
    if isinstance(ch_names, str) or not all(isinstance(c, str) for c in ch_names):
        raise DataValidationError(f"ch_names must be a list of strings, one per channel; got {ch_names!r:.80}.")
    ch_names = list(ch_names)
    blank = [i for i, c in enumerate(ch_names) if not c.strip()]
    if blank:
        raise DataValidationError(f"Channel names at positions {blank} are empty; give every channel its name.")
    if len(ch_names) != n_chans:
        raise DataValidationError(
            f"ch_names has {len(ch_names)} names but X has {n_chans} channels (axis 1); give one name per channel."
        )
    lowered = [c.strip().lower() for c in ch_names]
    duplicates = sorted({c for c in ch_names if lowered.count(c.strip().lower()) > 1})
    if duplicates:
        raise DataValidationError(f"Channel names must be unique (case-insensitive); duplicated: {duplicates}.")
    return SignalInfo(sfreq=sfreq, ch_names=tuple(ch_names), units=_expand_units(units, n_chans))


def _check_finite(X: np.ndarray) -> None:
    finite = np.isfinite(X)
    if finite.all():
        return
    _raise_non_finite(np.flatnonzero(~finite.all(axis=(1, 2))).tolist())


def _check_finite_in_chunks(source: WindowSource) -> None:
    """:func:`_check_finite` over a source read chunk by chunk (it never holds all windows)."""
    bad: list[int] = []
    for start, chunk in source.chunks(source.chunk_size()):
        finite = np.isfinite(chunk).all(axis=(1, 2))
        bad.extend((start + np.flatnonzero(~finite)).tolist())
    if bad:
        _raise_non_finite(bad)


def _raise_non_finite(bad: list[int]) -> None:
    shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
    raise DataValidationError(
        f"X contains NaN or Inf in {len(bad)} window(s) (indices {shown}); "
        "drop or repair these windows (e.g. interpolate bad channels) before running."
    )


def _check_plausible_units(X: np.ndarray, info: SignalInfo) -> None:
    units = np.array(info.units)
    for base, limit in _PLAUSIBLE_SI_STD.items():
        idx = [i for i, u in enumerate(units) if si_base(u) == base]
        if not idx:
            continue
        scale = np.array([UNIT_TO_SI[units[i]] for i in idx], dtype=np.float64)
        window_std_si = X[: min(len(X), 64)][:, idx, :].std(axis=-1) * scale[None, :]  # (windows, channels)
        std_si = float(np.median(window_std_si))
        if std_si > limit:
            raise DataValidationError(
                f"The channels declared in {str(units[idx[0]])!r} have a median standard deviation of {std_si:.3g} {base}, "
                f"implausible for EEG/MEG. The data are probably in a smaller unit: pass units='uV' (microvolts) "
                "or the unit they are really in."
            )
        if base == "V":
            _check_no_meg_among_volts(window_std_si, [info.ch_names[i] for i in idx], [info.units[i] for i in idx])


def _check_no_meg_among_volts(window_std_si: np.ndarray, names: list[str], units: list[str]) -> None:
    """Channels declared in a volt unit that vary by less than a nanovolt: the unit name is wrong.

    EEG varies by microvolts and even a quiet electrode by tens of nanovolts.
    Below a nanovolt, what the numbers as given look like says which mistake
    it is: numbers around 1e-5 declared as ``"uV"`` (or ``"nV"``) are EEG in
    volts under a smaller unit's name; numbers of 1e-13 to 1e-11, or channels
    named ``MEG...``, are magnetometers (T) or gradiometers (T/m) read as
    volts, which would then be scaled as EEG.
    """
    tiny = [i for i, value in enumerate(window_std_si.max(axis=0)) if 0 < value < _SMALLEST_EEG_STD_V]
    if not tiny:
        return
    # The typical amplitude in the numbers as given: EEG written in volts reads ~1e-5 whatever unit it is declared in.
    as_given = np.median(window_std_si[:, tiny], axis=0) / np.array([UNIT_TO_SI[units[i]] for i in tiny])
    volts = [
        i
        for i, value in zip(tiny, as_given, strict=True)
        if units[i] != "V" and _EEG_IN_VOLTS[0] <= value <= _EEG_IN_VOLTS[1] and not names[i].upper().startswith("MEG")
    ]
    if volts:
        declared = sorted({units[i] for i in volts})
        typical = float(np.median(as_given[[tiny.index(i) for i in volts]]))
        typical_v = float(np.median(window_std_si[:, volts]))
        raise DataValidationError(
            f"{len(volts)} channel(s) declared in {_quoted(declared)} ({_shown([names[i] for i in volts])}) have a "
            f"typical amplitude of {typical:.2g} as given, which in {_quoted(declared)} is {typical_v:.2g} V, far "
            "below any EEG; numbers of that size are what EEG looks like in volts. The data are most likely in "
            "volts: pass units='V' (neurofm converts volts to what each model expects)."
        )
    declared = sorted({units[i] for i in tiny})
    raise DataValidationError(
        f"{len(tiny)} channel(s) declared in {_quoted(declared)} vary by less than a nanovolt "
        f"({_shown([names[i] for i in tiny])}): these look like MEG in tesla, which has no scaling rule as EEG. Give "
        "one unit per channel, e.g. units=['T', 'T/m', 'V', ...] (magnetometers 'T', gradiometers 'T/m', EEG 'V'), "
        "or pass mne.Epochs, which carry their channel types."
    )


def _quoted(units: list[str]) -> str:
    return " and ".join(repr(unit) for unit in units)


def _shown(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def _metadata_frame(sample_metadata: Any, epochs_meta: pd.DataFrame | None, n: int) -> pd.DataFrame:
    if sample_metadata is None:
        meta = epochs_meta if epochs_meta is not None else pd.DataFrame(index=range(n))
    elif isinstance(sample_metadata, pd.DataFrame):
        meta = sample_metadata.reset_index(drop=True)
    elif isinstance(sample_metadata, dict):
        try:
            meta = pd.DataFrame(sample_metadata)
        except ValueError as exc:
            raise DataValidationError(f"sample_metadata could not become a table: {exc}.") from exc
    else:
        raise DataValidationError(
            f"sample_metadata must be a pandas DataFrame or a dict of columns, got {type(sample_metadata).__name__}."
        )
    if len(meta) != n:
        raise DataValidationError(
            f"sample_metadata has {len(meta)} rows but X has {n} windows; give exactly one row per window."
        )
    return meta


def _check_targets(y: Any, n: int, task: str) -> np.ndarray:
    try:
        y_arr = np.asarray(y)
    except (ValueError, TypeError) as exc:
        raise DataValidationError(f"y could not be read as one label per window ({exc}).") from exc
    if y_arr.dtype.kind == "c":
        raise DataValidationError("y holds complex numbers; give real targets or class labels.")
    if y_arr.ndim == 0:
        # A column's name (y="label") is the usual cause: Experiment.run takes the labels, not where they are.
        raise DataValidationError(
            f"y must be the labels array, one label per window ({n} windows); got the single "
            f"{type(y).__name__} {y!r:.60}. A metadata column can be named as the target only in a neurofm run "
            "config (data.label); in Python pass the column's values, e.g. y=meta['label'].to_numpy() "
            "(or epochs.metadata['label'].to_numpy())."
        )
    if y_arr.ndim != 1:
        y_arr = np.squeeze(y_arr)
        if y_arr.ndim != 1:
            raise DataValidationError(f"y must be one-dimensional (one label per window), got shape {np.shape(y)}.")
    if len(y_arr) != n:
        raise DataValidationError(
            f"y has {len(y_arr)} entries but X has {n} windows; give exactly one label per window."
        )
    if task == "classification":
        if y_arr.dtype.kind == "f" and not np.all(np.isfinite(y_arr)):
            raise DataValidationError("y contains NaN; remove the unlabeled windows before running.")
        if y_arr.dtype.kind == "O":
            y_arr = _object_labels(y_arr)
        classes = np.unique(y_arr)
        if len(classes) < 2:
            raise DataValidationError(
                f"y holds a single class ({classes[0].item()!r}); classification needs at least two classes. "
                "Check the labels, or use task='regression' for a continuous target."
            )
        if y_arr.dtype.kind == "f" and len(classes) > max(20, n // 2):
            logger.warning("y looks continuous (%d distinct values) but task='classification'.", len(classes))
    else:
        try:
            y_arr = y_arr.astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise DataValidationError(
                "task='regression' needs numeric y; use task='classification' for labels."
            ) from exc
        if not np.all(np.isfinite(y_arr)):
            raise DataValidationError("y contains NaN or Inf; remove those windows before running.")
    return y_arr


def _check_multilabel_targets(y: Any, n: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Several binary targets per window: ``y`` as an int array (n, n_labels) of 0/1, and each label's name.

    A pandas DataFrame names the labels by its columns; any other 2-D array-like gets ``label_0``, ``label_1`` ...
    """
    names = [str(c) for c in y.columns] if isinstance(y, pd.DataFrame) else None
    try:
        y_arr = np.asarray(y.to_numpy() if isinstance(y, pd.DataFrame) else y)
    except (ValueError, TypeError) as exc:
        raise DataValidationError(f"y could not be read as a (n_windows, n_labels) array of 0/1 ({exc}).") from exc
    if y_arr.ndim != 2:
        raise DataValidationError(_not_two_dimensional(y_arr.shape))
    if len(y_arr) != n:
        raise DataValidationError(f"y has {len(y_arr)} rows but X has {n} windows; give exactly one row per window.")
    names = names or [f"label_{k}" for k in range(y_arr.shape[1])]
    if y_arr.shape[1] < 2:
        raise DataValidationError(
            f"y holds a single label ({names[0]!r}); multilabel needs at least two. For one binary target use "
            "task='classification' with y as a 1-D array."
        )
    if len(set(names)) < len(names):
        raise DataValidationError(f"y's label names repeat ({names}); give each column its own name.")
    for k, name in enumerate(names):
        column = y_arr[:, k]
        try:
            values = pd.unique(pd.Series(column, dtype=object)).tolist()
            binary = all(isinstance(v, (bool, int, float, np.bool_, np.number)) and v in (0, 1) for v in values)
        except TypeError:  # values that cannot be compared with numbers
            binary = False
        if not binary:
            shown = sorted(map(repr, values))[:6]
            raise DataValidationError(
                f"task='multilabel' needs each label as 0/1 (or booleans); label {name!r} holds {', '.join(shown)}. "
                "Binarise it (e.g. (Y > 0).astype(int)), or use task='classification' for one multi-class target."
            )
        if len({int(v) for v in values}) < 2:
            raise DataValidationError(
                f"label {name!r} is {int(values[0])} in every window: a constant label can be neither learned nor "
                "scored. Drop that column of y."
            )
    return y_arr.astype(np.int64), tuple(names)


def _object_labels(y_arr: np.ndarray) -> np.ndarray:
    """Class labels of mixed Python objects as strings, refusing what would silently merge or invent classes."""
    missing = [i for i, v in enumerate(y_arr) if v is None or (isinstance(v, float) and not np.isfinite(v))]
    if missing:
        raise DataValidationError(
            f"y has no label for {len(missing)} window(s) (None or NaN at {missing[:10]}); remove them before running."
        )
    kinds = {
        "text" if isinstance(v, str) else "number" if isinstance(v, (int, float, np.number)) else type(v).__name__
        for v in y_arr
    }
    odd = kinds - {"text", "number"}
    if odd:
        raise DataValidationError(f"Labels must be strings or numbers; y holds {sorted(odd)}.")
    if len(kinds) > 1:
        raise DataValidationError(
            "y mixes text and numbers (e.g. 1 and '1' would become one class); give every label the same type."
        )
    return y_arr.astype(str)


def _pick_sensor_types(X: Any, info: SignalInfo, sensor_types: list[str]) -> tuple[Any, SignalInfo]:
    """Keep the channels of the requested sensor types, in their order; reads no window."""
    unknown = [t for t in sensor_types if t not in SENSOR_GROUPS]
    if unknown:
        raise DataValidationError(f"Unknown sensor types {unknown}; use {sorted(SENSOR_GROUPS)}.")
    wanted = {kind for name in sensor_types for kind in SENSOR_GROUPS[name]}
    held = info.sensor_types
    missing = sorted({name for name in sensor_types if not set(SENSOR_GROUPS[name]) & set(held)})
    if missing:
        raise DataValidationError(
            f"sensor_types asks for {missing}, but the windows hold none; they hold {info.sensor_counts()}. "
            "Choose among those, or check the channel types (epochs.get_channel_types())."
        )
    keep = [i for i, kind in enumerate(held) if kind in wanted]
    if len(keep) == len(held):
        return X, info
    return pick_channels(X, info, keep)


def pick_channels(X: Any, info: SignalInfo, keep: list[int]) -> tuple[Any, SignalInfo]:
    """The windows and their description for the channels at indices ``keep``, in that order; reads no window
    of a lazy source."""
    if isinstance(X, WindowSource):
        return X.pick_channels(keep), info.subset(keep)
    return X[:, keep, :], info.subset(keep)


def _not_two_dimensional(shape: tuple[int, ...]) -> str:
    return (
        f"task='multilabel' needs y of shape (n_windows, n_labels), one 0/1 column per label; got shape {shape}. "
        "For one label per window use task='classification'."
    )


#: What a training partition missing one value of a label can do about it.
_BOTH_VALUES_FIX = (
    "split so that every training partition holds both values of every label "
    "(CVConfig(strategy='stratified_kfold') stratifies on the windows' label combinations; fewer folds help), "
    "or drop that column of y"
)


def check_multilabel_targets(y: Any) -> np.ndarray:
    """The labels of a ``task="multilabel"`` fit as int64 0/1, refused with the fix when they cannot be trained on.

    Every label needs a positive and a negative among the windows a network
    trains on: a label that is one value throughout has nothing for binary
    cross-entropy to separate, and its output would learn a constant.

    Parameters
    ----------
    y : array-like or pandas.DataFrame, shape (n_windows, n_labels)
        The training partition's labels, one 0/1 (or boolean) column per
        label; a DataFrame's column names name the labels in the errors.

    Returns
    -------
    y : ndarray of int64, shape (n_windows, n_labels)

    Raises
    ------
    DataValidationError
        When ``y`` is not 2-D, holds values other than 0 and 1, or a label
        lacks a positive or a negative window.
    """
    names = [repr(str(c)) for c in y.columns] if isinstance(y, pd.DataFrame) else None
    values = np.asarray(y.to_numpy() if isinstance(y, pd.DataFrame) else y)
    if values.ndim != 2:
        raise DataValidationError(_not_two_dimensional(values.shape))
    names = names or [f"column {k}" for k in range(values.shape[1])]
    for k, name in enumerate(names):
        column = values[:, k]
        try:
            binary = bool(np.isin(column, (0, 1)).all())
        except TypeError:  # values numpy cannot compare with numbers
            binary = False
        if not binary:
            shown = ", ".join(sorted({repr(v) for v in column.tolist()})[:6])
            raise DataValidationError(
                f"task='multilabel' needs each label as 0/1 (or booleans); label {name} holds {shown}. "
                "Binarise it (e.g. (Y > 0).astype(int)), or use task='classification' for one multi-class target."
            )
        positives = int(np.count_nonzero(column.astype(np.int64)))
        if positives in (0, len(column)):
            value = 0 if positives == 0 else 1
            raise DataValidationError(
                f"label {name} is {value} in all {len(column)} training windows, so no network can learn it "
                f"(binary cross-entropy needs a positive and a negative window); {_BOTH_VALUES_FIX}."
            )
    return values.astype(np.int64)
