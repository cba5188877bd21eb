"""Cut windows from continuous recordings: event-locked or fixed-length, with one metadata row per window.

What :meth:`neurofm.Experiment.run` does with recordings it is given, and what
every dataset reader of :mod:`neurofm.loaders` returns through.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .configs import GROUP_AWARE_STRATEGIES, WindowConfig
from .data import is_continuous, sensor_positions
from .exceptions import ConfigError, DataValidationError
from .utils.check import format_choices
from .utils.logging import logger

__all__ = ["experiment_windows", "rejected_windows", "windows_from_raw", "windows_from_recordings"]

# Where windows_from_raw and _concat record, on the Epochs they return, how many windows
# peak-to-peak rejection dropped per file ({file: count}); read it with rejected_windows.
_REJECTED = "_neurofm_rejected"


def rejected_windows(epochs: Any) -> dict[str, int]:
    """How many windows peak-to-peak rejection dropped from each file, ``{file: count}``.

    Filled by the loaders of :mod:`neurofm.loaders` and by :func:`windows_from_raw`
    when a ``reject_peak_to_peak`` threshold was given; empty otherwise.
    """
    return dict(getattr(epochs, _REJECTED, None) or {})


def _record_rejected(epochs: Any, counts: Mapping[str, int]) -> Any:
    setattr(epochs, _REJECTED, {str(k): int(v) for k, v in counts.items()})
    return epochs


def _concat(epochs_list: list, on_mismatch: str = "raise") -> Any:
    """One ``Epochs`` of the windows of several recordings, each window's recording in a ``recording`` column.

    The column lets models pretrained with recording-level statistics (REVE)
    normalise each window with its own recording's.
    """
    import mne  # heavy: import neurofm loads this module, not mne

    if not epochs_list:
        raise DataValidationError("No windows were found in the given recordings; check the paths and event names.")
    rejected: dict[str, int] = {}
    for index, epochs in enumerate(epochs_list):
        for name, count in rejected_windows(epochs).items():
            rejected[f"recording {index}" if name == "" else name] = count
    for index, epochs in enumerate(epochs_list):
        table = epochs.metadata if epochs.metadata is not None else pd.DataFrame(index=range(len(epochs)))
        if "recording" not in table.columns:
            table = table.assign(recording=index)
            with mne.utils.use_log_level("warning"):
                epochs.metadata = table.reset_index(drop=True)
    if rejected and not any(len(epochs) for epochs in epochs_list):
        raise DataValidationError(
            f"Peak-to-peak rejection dropped every window ({sum(rejected.values())}: {rejected}); raise the "
            "threshold (reject_peak_to_peak, data.reject_peak_to_peak in a neurofm run config; it is in volts, "
            "e.g. 150e-6) or leave it out."
        )
    # A file whose every window was rejected is counted in ``rejected`` and left out here.
    epochs_list = [epochs for epochs in epochs_list if len(epochs)] if rejected else epochs_list
    if len(epochs_list) == 1:
        joined = epochs_list[0]
    else:
        # Offsets keep event samples of different recordings apart.
        with mne.utils.use_log_level("warning"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Concatenation of Annotations", category=RuntimeWarning)
            joined = mne.concatenate_epochs(epochs_list, add_offset=True, on_mismatch=on_mismatch, verbose=False)
    _log_rejected(rejected, len(joined))
    return _record_rejected(joined, rejected)


def _log_rejected(rejected: Mapping[str, int], kept: int) -> None:
    """One line for all files, in place of MNE's line per dropped window."""
    if rejected:
        logger.info(
            "Peak-to-peak rejection dropped %d window(s), %d kept: %s",
            sum(rejected.values()),
            kept,
            ", ".join(f"{name}: {count}" for name, count in rejected.items()),
        )


def _warn_every_event_kept(epochs: Any, column: str = "label") -> None:
    """Say which classes windows cut around every event gave, and how to choose them.

    Without ``event_id`` every annotation becomes a class, so a ``rest`` or
    ``boundary`` annotation silently adds one the user did not ask for.
    """
    counts = epochs.metadata[column].value_counts(sort=False).sort_index()
    found = ", ".join(f"{name!r}: {count}" for name, count in counts.items())
    example = ", ".join(str(name) for name in counts.index[:2])
    logger.warning(
        "No event_id given: windows were cut around every event, giving %d class(es) with these window counts: "
        "{%s}. To choose the classes, set event_id: [%s] (data.event_id in a neurofm run config).",
        len(counts),
        found,
        example,
    )


def windows_from_raw(
    raw: Any,
    *,
    events: np.ndarray | None = None,
    event_id: Mapping[str, int] | Sequence[str] | None = None,
    tmin: float = 0.0,
    tmax: float | None = None,
    window: float | None = None,
    stride: float | None = None,
    reject_peak_to_peak: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Any:
    """Cut windows from a continuous recording.

    Event-locked windows (``tmin``/``tmax`` around each event, from ``events``
    or from the recording's annotations) or, with ``window``, fixed-length
    windows every ``stride`` seconds (default: no overlap).

    Parameters
    ----------
    raw : mne.io.Raw
        The recording (loaded into memory as needed).
    events : array, shape (n, 3) | None
        MNE events; ``None`` reads them from the annotations.
    event_id : list of str | dict of str to int | None
        Which events to keep and their names (the ``label``). With annotations,
        the names are annotation descriptions, and a mapping's codes only number
        the windows' events; with a stim channel (or ``events``) the codes are
        the trigger values, and a list names them as strings (``["1", "2"]``).
        ``None`` keeps every event.
    tmin, tmax : float
        Window around each event, in seconds (``tmax`` is inclusive of the
        last sample's start, so a window has ``(tmax - tmin) * sfreq`` samples).
    window, stride : float | None
        Fixed-length windows of ``window`` seconds every ``stride`` seconds.
    reject_peak_to_peak : float | None
        Drop windows whose peak-to-peak amplitude on any EEG channel exceeds
        this value in volts (e.g. ``150e-6``); :func:`rejected_windows` of the
        result says how many, under the recording's file name.
    metadata : dict | None
        Constant columns added to every window (``subject``, ``session``, ``run``).

    Returns
    -------
    epochs : mne.Epochs
        With ``metadata`` holding ``label`` (event-locked) and the given columns.
    """
    import mne  # heavy: import neurofm loads this module, not mne

    # The threshold is in volts, so it applies to EEG channels; MEG-only recordings are not rejected by it.
    has_eeg = "eeg" in raw.get_channel_types()
    reject = {"eeg": reject_peak_to_peak} if reject_peak_to_peak is not None and has_eeg else None
    if window is not None:
        stride = window if stride is None else stride
        if stride <= 0 or stride > window:
            raise DataValidationError(f"stride must be in (0, window]; got stride={stride}, window={window}.")
        epochs = mne.make_fixed_length_epochs(
            raw, duration=window, overlap=window - stride, preload=True, verbose=False
        )
        if reject is not None:
            with warnings.catch_warnings():  # counted and reported by _concat instead
                warnings.filterwarnings("ignore", message="All epochs were dropped", category=RuntimeWarning)
                epochs.drop_bad(reject=reject, verbose=False)
        if not len(epochs) and not reject:
            raise DataValidationError(
                f"No window of {window:g} s fits in the recording, which lasts {raw.times[-1]:.3g} s; "
                "set window (data.window in a neurofm run config) to at most that."
            )
        labels = [None] * len(epochs)
    else:
        if tmax is None:
            raise DataValidationError("Event-locked windows need tmax (seconds after each event); or pass window=.")
        if events is None:
            events, event_id = _recorded_events(raw, event_id)
        elif event_id is not None and not isinstance(event_id, Mapping):
            event_id = _names_as_codes(event_id, events)
        if event_id is None:
            event_id = {str(code): int(code) for code in np.unique(events[:, 2])}
        missing = [name for name, code in event_id.items() if code not in set(events[:, 2])]
        if len(missing) == len(event_id):
            codes = sorted({int(code) for code in events[:, 2]})
            raise DataValidationError(
                f"None of the events {dict(event_id)} occurs in the recording, whose events have the codes {codes}; "
                "set event_id to some of these (data.event_id in a neurofm run config)."
            )
        present = {name: code for name, code in event_id.items() if name not in missing}
        # tmax is exclusive of the last sample so windows have a round number of samples.
        last = tmax - 1.0 / raw.info["sfreq"]
        with warnings.catch_warnings():  # rejections are counted and reported by _concat instead
            warnings.filterwarnings("ignore", message="All epochs were dropped", category=RuntimeWarning)
            epochs = mne.Epochs(
                raw,
                events,
                present,
                tmin=tmin,
                tmax=last,
                baseline=None,
                reject=reject,
                preload=True,
                verbose=False,
                event_repeated="drop",
            )
        _check_windows_fit(raw, epochs, tmin, tmax)
        by_code = {code: name for name, code in present.items()}
        labels = [by_code[code] for code in epochs.events[:, 2]]
    table = pd.DataFrame({"label": labels})
    for key, value in (metadata or {}).items():
        table[key] = value
    with mne.utils.use_log_level("warning"):
        epochs.metadata = table
    if reject is not None:
        # Peak-to-peak drops name the offending channels; other drops (IGNORED, NO_DATA) are not rejections.
        channels = set(epochs.ch_names)
        count = sum(1 for reasons in epochs.drop_log if channels & set(reasons))
        source = raw.filenames[0] if getattr(raw, "filenames", None) and raw.filenames[0] else ""
        _record_rejected(epochs, {Path(source).name if source else "": count})
    return epochs


def _check_windows_fit(raw: Any, epochs: Any, tmin: float, tmax: float) -> None:
    """Windows that run past either end of the recording are left out, said aloud; none left is an error."""
    outside = sum(1 for reasons in epochs.drop_log if {"NO_DATA", "TOO_SHORT"} & set(reasons))
    if not outside:
        return
    where = f"{tmin:g} to {tmax:g} s around each event runs past the recording's ends (it lasts {raw.times[-1]:.3g} s)"
    if not len(epochs) and outside == len(epochs.drop_log):
        raise DataValidationError(
            f"No window fits: {where}. Shorten tmax or raise tmin (data.tmin/data.tmax in a neurofm run config)."
        )
    logger.warning("%d window(s) left out: %s.", outside, where)


def _names_as_codes(names: Sequence[str], events: np.ndarray) -> dict[str, int]:
    """A list of event names for events that carry only codes: the names must be the codes (``["1", "2"]``)."""
    if isinstance(names, str):
        names = [names]
    codes = sorted({int(code) for code in events[:, 2]})
    if not all(str(name).strip().isdigit() for name in names):
        raise DataValidationError(
            f"event_id {list(names)} names events, but this recording's events carry only the trigger codes {codes}; "
            "give event_id as a mapping of your names to those codes, e.g. {'left': 1, 'right': 2} "
            "(data.event_id in a neurofm run config)."
        )
    return {str(name).strip(): int(name) for name in names}


def _recorded_events(
    raw: Any, event_id: Mapping[str, int] | Sequence[str] | None
) -> tuple[np.ndarray, dict[str, int] | None]:
    """Events of a recording: its annotations or, when it has none, its stim channel."""
    import mne  # heavy: import neurofm loads this module, not mne

    if isinstance(event_id, str):
        event_id = [event_id]
    if len(raw.annotations):
        if event_id is not None and not isinstance(event_id, Mapping):
            # Names only: number them in the order given.
            event_id = {str(name): code for code, name in enumerate(event_id, start=1)}
        events, found = annotation_events(raw, dict(event_id) if event_id else None)
        return events, dict(event_id) if event_id else found
    if len(mne.pick_types(raw.info, stim=True)):
        # Neuromag and many EDF+ exports mark events on a trigger channel rather than as annotations.
        events = mne.find_events(raw, shortest_event=1, initial_event=True, verbose=False)
        if event_id is not None and not isinstance(event_id, Mapping):
            event_id = _names_as_codes(event_id, events)
        return events, dict(event_id) if event_id else None
    raise DataValidationError(
        "The recording has neither annotations nor a stim channel, so it has no events to cut windows around. "
        "Add them with raw.set_annotations(mne.Annotations(onsets, durations, descriptions)), or cut fixed-length "
        "windows (window=...) with one label per recording."
    )


def annotation_events(raw: Any, event_id: dict[str, int] | None) -> tuple[np.ndarray, dict[str, int]]:
    """``mne.events_from_annotations``, with event names the recording lacks refused by name.

    MNE's "Could not find any of the events you specified" names neither the
    events asked for nor those the recording has.
    """
    import mne  # heavy: import neurofm loads this module, not mne

    try:
        return mne.events_from_annotations(raw, event_id=event_id, verbose=False)
    except ValueError as exc:
        if "Could not find any of the events" not in str(exc):
            raise
        present = sorted(set(raw.annotations.description))
        source = raw.filenames[0] if getattr(raw, "filenames", None) and raw.filenames[0] else "the recording"
        example = ", ".join(f"{name!r}: {code}" for code, name in enumerate(present[:3], start=1))
        raise DataValidationError(
            f"None of the events {sorted(event_id or {})} is in {source}, whose annotations name the events "
            f"{present}. Set event_id to names among these, e.g. {{{example}}} (data.event_id in a neurofm run "
            "config), or leave it out to keep every event."
        ) from exc


def windows_from_recordings(
    recordings: Any,
    windows: WindowConfig,
    *,
    recording_metadata: Any = None,
    recording_labels: Any = None,
) -> Any:
    """Cut the same windows from each of several continuous recordings and join them.

    Every recording must have the same sampling rate and the same good
    channels; a channel marked bad in any recording is dropped from all of
    them. Nothing of the recordings themselves is changed.

    Parameters
    ----------
    recordings : mne.io.Raw | list of mne.io.Raw
        The continuous recordings (loaded or not).
    windows : WindowConfig
        Event-locked or fixed-length windows.
    recording_metadata : DataFrame | dict of str to list | list of dict | None
        One row per recording (e.g. ``subject``, ``session``); every window
        takes its recording's row.
    recording_labels : sequence | None
        One label per recording, given to all of its windows (the event names
        of event-locked windows then go to an ``event`` column). ``None``
        labels each event-locked window by its event.

    Returns
    -------
    epochs : mne.Epochs
        Metadata holds ``recording`` (its position in ``recordings``),
        ``label`` and the columns of ``recording_metadata``.
    """
    import mne  # heavy: import neurofm loads this module, not mne
    from mne.io import BaseRaw  # heavy: import neurofm loads this module, not mne

    raws = [recordings] if isinstance(recordings, BaseRaw) else list(recordings)
    if not raws or not all(isinstance(raw, BaseRaw) for raw in raws):
        kinds = sorted({type(raw).__name__ for raw in raws})
        raise DataValidationError(f"recordings must be mne.io.Raw objects (or a list of them); got {kinds or 'none'}.")
    rows = _per_recording_rows(recording_metadata, len(raws))
    if recording_labels is not None and len(recording_labels) != len(raws):
        raise DataValidationError(
            f"{len(recording_labels)} recording label(s) for {len(raws)} recording(s); give exactly one per recording."
        )
    if recording_labels is None and not windows.event_locked:
        raise DataValidationError(
            "Fixed-length windows carry no event to label them: give one label per recording, or cut event-locked "
            "windows (tmax=...) around the recordings' events."
        )
    bads = _check_recordings_match(raws)
    cut_args = windows.model_dump(exclude_none=True)
    parts = []
    for index, raw in enumerate(raws):
        epochs = windows_from_raw(raw, **cut_args)
        if not len(epochs):  # e.g. every window rejected as an artefact: the other recordings still count
            logger.warning("Recording %d gives no window with %s; it is left out.", index, cut_args)
            continue
        if bads:
            epochs.info["bads"] = sorted(bads)
        epochs.reorder_channels(raws[0].ch_names)
        table = epochs.metadata
        if recording_labels is not None:
            if windows.event_locked:
                table = table.rename(columns={"label": "event"})
            table["label"] = [recording_labels[index]] * len(table)
        table["recording"] = index
        for key, value in rows[index].items():
            table[key] = [value] * len(table)
        with mne.utils.use_log_level("warning"):
            epochs.metadata = table.reset_index(drop=True)
        parts.append(epochs)
    if not parts:
        raise DataValidationError(f"No recording gives a window with {cut_args}; check the events and the lengths.")
    # Head positions were compared above; sensor positions follow the first recording.
    return _concat(parts, on_mismatch="ignore")


def _per_recording_rows(metadata: Any, n: int) -> list[dict[str, Any]]:
    if metadata is None:
        return [{} for _ in range(n)]
    if isinstance(metadata, Mapping):
        metadata = pd.DataFrame(dict(metadata))
    table = metadata if isinstance(metadata, pd.DataFrame) else pd.DataFrame(list(metadata))
    if len(table) != n:
        raise DataValidationError(
            f"The metadata has {len(table)} row(s) for {n} recording(s); with continuous recordings it gives one row "
            "per recording (e.g. its subject), copied to each of its windows."
        )
    reserved = sorted({"label", "event", "recording"} & set(table.columns))
    if reserved:
        raise DataValidationError(
            f"The recording metadata has column(s) {reserved}, which neurofm fills in (the label, the event and "
            "the recording's index); rename them."
        )
    return table.reset_index(drop=True).to_dict("records")


def _check_recordings_match(raws: list) -> set[str]:
    """Refuse recordings that cannot share windows; return the union of their bad channels."""
    first = raws[0]
    for index, raw in enumerate(raws[1:], start=1):
        if raw.info["sfreq"] != first.info["sfreq"]:
            raise DataValidationError(
                f"Recording {index} is sampled at {raw.info['sfreq']} Hz and recording 0 at {first.info['sfreq']} Hz; "
                "resample them to one rate first (raw.resample(...))."
            )
        missing, extra = set(first.ch_names) - set(raw.ch_names), set(raw.ch_names) - set(first.ch_names)
        if missing or extra:
            raise DataValidationError(
                f"Recording {index} lacks channels {sorted(missing)[:10]} and has extra channels {sorted(extra)[:10]} "
                "compared with recording 0; give every recording the same channels (raw.pick(...), or "
                "raw.interpolate_bads() for missing EEG electrodes)."
            )
    bads = set().union(*(raw.info["bads"] for raw in raws))
    if any(set(raw.info["bads"]) != bads for raw in raws):
        logger.warning("Channels bad in some recording are dropped from all of them: %s", sorted(bads))
    _warn_if_heads_moved(raws)
    return bads


def _warn_if_heads_moved(raws: list) -> None:
    """MEG sensors sit elsewhere relative to the head in each recording; say so when it matters."""
    import mne  # heavy: import neurofm loads this module, not mne

    meg = mne.pick_types(raws[0].info, meg=True, ref_meg=False, exclude=())
    if not len(meg) or len(raws) < 2:
        return

    def head_frame(info: Any) -> np.ndarray:
        return np.array([(np.nan,) * 3 if p is None else p for p in sensor_positions(info, meg)])

    reference = head_frame(raws[0].info)
    shift = max(np.nanmax(np.linalg.norm(head_frame(raw.info) - reference, axis=1), initial=0.0) for raw in raws[1:])
    if shift > 1e-3:
        logger.warning(
            "The head sat differently in the MEG helmet across recordings (sensors move up to %.1f mm in head "
            "coordinates); models given sensor positions (LUNA, REVE) get those of recording 0. To align the "
            "recordings, run mne.preprocessing.maxwell_filter(raw, destination=...) on each first.",
            1000 * shift,
        )


def experiment_windows(X: Any, y: Any, sample_metadata: Any, cfg: Any) -> tuple[Any, Any, Any, dict | None]:
    """An experiment's windows, labels and metadata: ``X`` as given, or cut from continuous recordings.

    Parameters
    ----------
    X, y, sample_metadata
        What :meth:`neurofm.Experiment.run` was given.
    cfg : ExperimentConfig
        Its ``windows`` say how to cut recordings; its ``cv`` must keep a
        recording's windows together when ``y`` labels whole recordings.

    Returns
    -------
    X, y, metadata, summary
        The windows, their labels and metadata, and (when cut here) how many
        came from each recording; ``summary`` is ``None`` for windows given.

    Raises
    ------
    ConfigError, DataValidationError
        When ``X`` and ``cfg.windows`` disagree, or labels per recording meet a CV that would split recordings.
    """
    if not is_continuous(X):
        if cfg.windows is not None:
            raise ConfigError(
                "config.windows says how to cut continuous recordings, but X already holds windows; "
                "set windows=None, or pass the mne.io.Raw recordings themselves."
            )
        return X, y, sample_metadata, None
    if cfg.windows is None:
        raise ConfigError(
            "X is a continuous recording; say how to cut it into windows with ExperimentConfig(windows="
            "WindowConfig(tmin=-0.1, tmax=0.5)) for windows around its events (labelled by them), or "
            "WindowConfig(window=4.0) for fixed-length windows with one label per recording in y."
        )
    n_recordings = 1 if not isinstance(X, (list, tuple)) else len(X)
    if y is not None:
        if np.ndim(y) != 1 or len(y) != n_recordings:
            raise DataValidationError(
                f"With continuous recordings y gives one label per recording ({n_recordings}), got "
                f"{np.shape(y)}; or leave y=None to label event-locked windows by their events."
            )
        if not cfg.cv.keeps_groups_apart:
            # Windows of one recording share far more than its label; split across them and the score leaks.
            raise ConfigError(
                f"y labels whole recordings, so the CV must keep each recording's windows together, which "
                f"strategy {cfg.cv.strategy!r} without a group_key does not: use one of the group-aware "
                f"strategies {format_choices(GROUP_AWARE_STRATEGIES)} with a group_key, e.g. "
                "CVConfig(strategy='stratified_group_kfold', group_key='recording') (or a subject column of "
                "the metadata)."
            )
    epochs = windows_from_recordings(
        X, cfg.windows, recording_metadata=sample_metadata, recording_labels=None if y is None else list(y)
    )
    metadata = epochs.metadata.reset_index(drop=True)
    if y is not None and cfg.cv.group_key in metadata.columns:
        # A per-window column (e.g. 'event') as group_key would split a recording across groups, hence folds.
        spread = metadata.groupby("recording")[cfg.cv.group_key].nunique()
        if (spread > 1).any():
            raise ConfigError(
                f"y labels whole recordings, but group_key={cfg.cv.group_key!r} puts the windows of recording(s) "
                f"{spread.index[spread > 1].tolist()} in several groups, so a recording could be on both sides of "
                "a fold; use group_key='recording' or a column of the recording metadata (one value per recording)."
            )
    counts = metadata["recording"].value_counts().sort_index()
    summary = {
        "n_recordings": n_recordings,
        "windows_per_recording": [int(counts.get(i, 0)) for i in range(n_recordings)],
        "labels_from": "events" if y is None else "one label per recording",
    }
    logger.info("Cut %d windows from %d recording(s)", len(metadata), n_recordings)
    return epochs, metadata["label"].to_numpy(), metadata, summary
