"""Bring recordings to windows: every loader returns ``mne.Epochs``.

Each loader returns epochs in volts with standard channel names and a
``metadata`` table holding ``label`` (the class of each window, when the
recording has one) and ``subject``/``session``/``run``, so that

>>> epochs = load_eegmmi("../shared/data/eegmmi")  # doctest: +SKIP
>>> Experiment(config).run(epochs, epochs.metadata["label"])  # doctest: +SKIP

works the same for every source, and ``group_key="subject"`` keeps subjects
apart. :func:`windows_from_raw` cuts event-locked or fixed-length windows from
any ``mne.io.Raw``; :func:`load_recording` reads any file MNE reads first.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .configs import DataConfig, PreprocessingConfig, WindowConfig
from .exceptions import DataValidationError
from .preprocess import preprocess_raw
from .utils.logging import logger

__all__ = [
    "EEGMMI_RUN_TASKS",
    "from_braindecode",
    "from_moabb",
    "load_bids",
    "load_eegmmi",
    "load_muse_csv",
    "load_recording",
    "load_data",
    "load_uci_smni",
    "read_muse_csv",
    "windows_from_raw",
    "windows_from_recordings",
]


def _concat(epochs_list: list, on_mismatch: str = "raise") -> Any:
    """One ``Epochs`` of the windows of several recordings, each window's recording in a ``recording`` column.

    The column lets models pretrained with recording-level statistics (REVE)
    normalise each window with its own recording's.
    """
    import mne
    import pandas as pd

    if not epochs_list:
        raise DataValidationError("No windows were found in the given recordings; check the paths and event names.")
    for index, epochs in enumerate(epochs_list):
        table = epochs.metadata if epochs.metadata is not None else pd.DataFrame(index=range(len(epochs)))
        if "recording" not in table.columns:
            table = table.assign(recording=index)
            with mne.utils.use_log_level("warning"):
                epochs.metadata = table.reset_index(drop=True)
    if len(epochs_list) == 1:
        return epochs_list[0]
    # Offsets keep event samples of different recordings apart.
    import warnings

    with mne.utils.use_log_level("warning"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Concatenation of Annotations", category=RuntimeWarning)
        return mne.concatenate_epochs(epochs_list, add_offset=True, on_mismatch=on_mismatch, verbose=False)


def windows_from_raw(
    raw: Any,
    *,
    events: np.ndarray | None = None,
    event_id: Mapping[str, int] | None = None,
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
    event_id : dict of str to int | None
        Which events to keep and their names (the ``label``). With annotations,
        the names are annotation descriptions.
    tmin, tmax : float
        Window around each event, in seconds (``tmax`` is inclusive of the
        last sample's start, so a window has ``(tmax - tmin) * sfreq`` samples).
    window, stride : float | None
        Fixed-length windows of ``window`` seconds every ``stride`` seconds.
    reject_peak_to_peak : float | None
        Drop windows whose peak-to-peak amplitude on any EEG channel exceeds
        this value in volts (e.g. ``150e-6``).
    metadata : dict | None
        Constant columns added to every window (``subject``, ``session``, ``run``).

    Returns
    -------
    epochs : mne.Epochs
        With ``metadata`` holding ``label`` (event-locked) and the given columns.
    """
    import mne

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
            epochs.drop_bad(reject=reject, verbose=False)
        labels = [None] * len(epochs)
    else:
        if tmax is None:
            raise DataValidationError("Event-locked windows need tmax (seconds after each event); or pass window=.")
        if events is None:
            events, event_id = _recorded_events(raw, event_id)
        if event_id is None:
            event_id = {str(code): int(code) for code in np.unique(events[:, 2])}
        missing = [name for name, code in event_id.items() if code not in set(events[:, 2])]
        if len(missing) == len(event_id):
            raise DataValidationError(f"None of the events {list(event_id)} occurs in the recording.")
        present = {name: code for name, code in event_id.items() if name not in missing}
        # tmax is exclusive of the last sample so windows have a round number of samples.
        last = tmax - 1.0 / raw.info["sfreq"]
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
        by_code = {code: name for name, code in present.items()}
        labels = [by_code[code] for code in epochs.events[:, 2]]
    table = pd.DataFrame({"label": labels})
    for key, value in (metadata or {}).items():
        table[key] = value
    with mne.utils.use_log_level("warning"):
        epochs.metadata = table
    return epochs


def _recorded_events(raw: Any, event_id: Mapping[str, int] | None) -> tuple[np.ndarray, dict[str, int] | None]:
    """Events of a recording: its annotations or, when it has none, its stim channel."""
    import mne

    if len(raw.annotations):
        events, found = mne.events_from_annotations(raw, event_id=dict(event_id) if event_id else None, verbose=False)
        return events, dict(event_id) if event_id else found
    if len(mne.pick_types(raw.info, stim=True)):
        # Neuromag and many EDF+ exports mark events on a trigger channel rather than as annotations.
        events = mne.find_events(raw, shortest_event=1, initial_event=True, verbose=False)
        return events, dict(event_id) if event_id else None
    raise DataValidationError(
        "The recording has neither annotations nor a stim channel, so it has no events to cut windows around. "
        "Add them with raw.set_annotations(mne.Annotations(onsets, durations, descriptions)), or cut fixed-length "
        "windows (window=...) with one label per recording."
    )


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
    import mne
    from mne.io import BaseRaw

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
    import mne

    from .data import sensor_positions

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


def load_recording(path: str | Path, *, preprocessing: PreprocessingConfig | None = None, **window_args: Any) -> Any:
    """Read any file MNE reads (EDF, BDF, GDF, FIF, BrainVision, EEGLAB ...) and cut windows.

    Parameters
    ----------
    path : str | Path
        The recording.
    preprocessing : PreprocessingConfig | None
        Applied to the recording before windows are cut (default: keep EEG channels).
    **window_args
        Passed to :func:`windows_from_raw`.
    """
    import mne

    path = Path(path)
    if not path.exists():
        raise DataValidationError(f"No recording at {path}.")
    raw = mne.io.read_raw(path, preload=True, verbose=False)
    preprocess_raw(raw, preprocessing or PreprocessingConfig())
    return _concat([windows_from_raw(raw, **window_args)])  # one recording, named in the metadata


def from_braindecode(dataset: Any, units: str = "V") -> Any:
    """Windows of a braindecode windows data set (``create_windows_from_events`` and kin) as ``mne.Epochs``.

    Parameters
    ----------
    dataset : braindecode.datasets.BaseConcatDataset
        Windowed data set; each item is ``(x, y, window_indices)``.
    units : str
        Units the windows are in (braindecode keeps MNE's volts unless a
        preprocessing step rescaled them, e.g. to ``"uV"``).

    Returns
    -------
    epochs : mne.EpochsArray
        ``label`` is each window's target; the columns of each recording's
        ``description`` (subject, session, run ...) become metadata.
    """
    import mne

    from .data import UNIT_TO_SI

    parts, rows, info = [], [], None
    for recording in getattr(dataset, "datasets", [dataset]):
        source = getattr(recording, "raw", None)
        source = getattr(recording, "windows", None) if source is None else source
        if source is None:
            raise DataValidationError(
                "from_braindecode needs a windowed braindecode data set (create_windows_from_events or "
                "create_fixed_length_windows), got one without windows."
            )
        description = getattr(recording, "description", None)
        description = {} if description is None else dict(description)
        for i in range(len(recording)):
            x, y, _ = recording[i]
            parts.append(np.asarray(x, dtype=np.float64) * UNIT_TO_SI[units])
            rows.append({"label": y, **description})
        if info is None:
            info = source.info
    if not parts:
        raise DataValidationError("The braindecode data set holds no windows.")
    n_chans = parts[0].shape[0]
    info = mne.pick_info(info, list(range(n_chans))) if len(info["ch_names"]) >= n_chans else info
    with mne.utils.use_log_level("warning"):
        return mne.EpochsArray(np.stack(parts), info, metadata=pd.DataFrame(rows), verbose=False)


def from_moabb(
    dataset: Any,
    *,
    paradigm: Any = None,
    subjects: Iterable[int] | None = None,
    preprocessing: PreprocessingConfig | None = None,
    tmin: float | None = None,
    tmax: float | None = None,
    reject_peak_to_peak: float | None = None,
) -> Any:
    """Windows of a MOABB data set, with or without a MOABB paradigm.

    With a ``paradigm`` (e.g. ``moabb.paradigms.LeftRightImagery()``), MOABB
    does the filtering, resampling and epoching it defines and neurofm takes the
    epochs as they come (``preprocessing`` is then applied to the epochs). Without
    one, each continuous run is preprocessed by ``preprocessing`` exactly as every
    other loader does it, and windows are cut around the data set's events over
    its own ``interval`` unless ``tmin``/``tmax`` say otherwise.

    Parameters
    ----------
    dataset : moabb.datasets.base.BaseDataset
        Any MOABB data set (downloads on first use, as MOABB does).
    paradigm : moabb.paradigms.base.BaseParadigm | None
        Optional paradigm that defines the epochs.
    subjects : iterable of int | None
        Subjects to load (``None``: all of ``dataset.subject_list``).
    preprocessing : PreprocessingConfig | None
        Applied to each run (or to the paradigm's epochs).
    tmin, tmax : float | None
        Window around each event in seconds, without a paradigm.
    reject_peak_to_peak : float | None
        Drop windows above this peak-to-peak amplitude (volts), without a paradigm.

    Returns
    -------
    epochs : mne.Epochs
        In volts, with ``label``, ``subject``, ``session`` and ``run`` metadata.
    """
    import mne

    subject_list = list(getattr(dataset, "subject_list", []))
    if not hasattr(dataset, "get_data") or not subject_list:
        raise DataValidationError(
            f"from_moabb needs a MOABB data set (moabb.datasets.*), got {type(dataset).__name__}."
        )
    subjects = subject_list if subjects is None else [int(s) for s in subjects]
    unknown = sorted(set(subjects) - set(subject_list))
    if unknown:
        raise DataValidationError(f"Subjects {unknown} are not in {type(dataset).__name__} (it has {subject_list}).")
    if paradigm is not None:
        if not paradigm.is_valid(dataset):
            raise DataValidationError(
                f"The paradigm {type(paradigm).__name__} does not apply to {type(dataset).__name__} "
                f"(its paradigm is {getattr(dataset, 'paradigm', '?')!r}); pick a matching paradigm or pass none."
            )
        with mne.utils.use_log_level("warning"):
            epochs, labels, table = paradigm.get_data(dataset, subjects=subjects, return_epochs=True)
            table = table.reset_index(drop=True).assign(label=np.asarray(labels))
            epochs.metadata = table
        return preprocess_raw(epochs, preprocessing)

    start, stop = getattr(dataset, "interval", (None, None))
    tmin = start if tmin is None else tmin
    tmax = stop if tmax is None else tmax
    epochs_list = []
    for subject, sessions in dataset.get_data(subjects).items():
        for session, runs in sessions.items():
            for run, raw in runs.items():
                raw = raw.copy().load_data(verbose=False)
                stim = mne.pick_types(raw.info, stim=True, exclude=[])
                # MOABB raws carry their events on a stim channel; annotations when there is none.
                events = mne.find_events(raw, shortest_event=0, verbose=False) if len(stim) else None
                preprocess_raw(raw, preprocessing or PreprocessingConfig())
                entities = {"subject": subject, "session": session, "run": run}
                try:
                    epochs_list.append(
                        windows_from_raw(
                            raw,
                            events=events,
                            event_id=dataset.event_id,
                            tmin=tmin,
                            tmax=tmax,
                            reject_peak_to_peak=reject_peak_to_peak,
                            metadata=entities,
                        )
                    )
                except DataValidationError:
                    continue  # a run without any of the data set's events (e.g. a resting run)
    return _concat(epochs_list)


_BIDS_RAW_EXTENSIONS = (".edf", ".bdf", ".vhdr", ".set", ".fif", ".gdf")


def load_bids(
    root: str | Path,
    *,
    subjects: Iterable[str] | None = None,
    sessions: Iterable[str] | None = None,
    tasks: Iterable[str] | None = None,
    runs: Iterable[str] | None = None,
    datatype: str = "eeg",
    preprocessing: PreprocessingConfig | None = None,
    **window_args: Any,
) -> Any:
    """Windows from a BIDS data set, read with mne-bids.

    Parameters
    ----------
    root : str | Path
        The BIDS root.
    subjects, sessions, tasks, runs : iterable of str | None
        Entities to select (``None``: all).
    datatype : str
        ``"eeg"`` or ``"meg"``.
    preprocessing : PreprocessingConfig | None
        Applied to each recording before windows are cut.
    **window_args
        Passed to :func:`windows_from_raw` (events come from each recording's
        ``events.tsv`` as annotations).

    Returns
    -------
    epochs : mne.Epochs
        With ``subject``, ``session``, ``task`` and ``run`` metadata columns.
    """
    from .utils.check import soft_import

    mne_bids = soft_import("mne_bids", "Reading BIDS data sets")
    as_list = lambda v: None if v is None else [str(x) for x in v]  # noqa: E731
    paths = mne_bids.find_matching_paths(
        root,
        subjects=as_list(subjects),
        sessions=as_list(sessions),
        tasks=as_list(tasks),
        runs=as_list(runs),
        datatypes=datatype,
        suffixes=datatype,
        extensions=list(_BIDS_RAW_EXTENSIONS),
    )
    if not paths:
        raise DataValidationError(
            f"No {datatype} recordings match subjects={subjects}, sessions={sessions}, tasks={tasks}, runs={runs} "
            f"under the BIDS root {root}."
        )
    epochs_list = []
    for bids_path in paths:
        raw = mne_bids.read_raw_bids(bids_path, verbose=False)
        raw.load_data(verbose=False)
        preprocess_raw(raw, preprocessing or PreprocessingConfig(picks=datatype))
        entities = {
            "subject": bids_path.subject,
            "session": bids_path.session,
            "task": bids_path.task,
            "run": bids_path.run,
        }
        epochs_list.append(windows_from_raw(raw, metadata=entities, **window_args))
    return _concat(epochs_list)


# Runs of PhysioNet's EEG Motor Movement/Imagery data set and what T1/T2 mean in each.
EEGMMI_RUN_TASKS = {
    **{run: ("left_fist", "right_fist", "movement") for run in (3, 7, 11)},
    **{run: ("left_fist", "right_fist", "imagery") for run in (4, 8, 12)},
    **{run: ("both_fists", "both_feet", "movement") for run in (5, 9, 13)},
    **{run: ("both_fists", "both_feet", "imagery") for run in (6, 10, 14)},
}


def load_eegmmi(
    root: str | Path | None = None,
    subjects: Iterable[int] = (1,),
    runs: Iterable[int] = (4, 8, 12),
    *,
    tmin: float = 0.0,
    tmax: float = 4.0,
    include_rest: bool = False,
    download: bool = False,
    reject_peak_to_peak: float | None = None,
    preprocessing: PreprocessingConfig | None = None,
) -> Any:
    """PhysioNet EEG Motor Movement/Imagery, from a local copy in PhysioNet's layout.

    Parameters
    ----------
    root : str | Path | None
        Folder holding ``S001/S001R04.edf`` ...; with ``download=True`` MNE's
        ``eegbci`` fetcher fills it (internet needed) and ``None`` uses MNE's
        data folder.
    subjects, runs : iterable of int
        Which subjects (1-109) and runs (3-14) to read.
    tmin, tmax : float
        Window around each cue, in seconds (the cues last about 4 s).
    include_rest : bool
        Keep the T0 rest periods as a ``rest`` class.
    download : bool
        Fetch missing files through MNE (never done silently).
    reject_peak_to_peak : float | None
        Peak-to-peak rejection threshold in volts.
    preprocessing : PreprocessingConfig | None
        Applied to each run before windows are cut.

    Returns
    -------
    epochs : mne.Epochs
        ``label`` is the task (``left_fist``, ``right_fist``, ``both_fists``,
        ``both_feet``, ``rest``); ``subject``, ``run`` and ``kind``
        (movement/imagery) are metadata columns. Channel names follow the 10-05
        system (PhysioNet's trailing dots removed).
    """
    import mne

    epochs_list = []
    for subject in subjects:
        for run in runs:
            if run not in EEGMMI_RUN_TASKS:
                raise DataValidationError(f"EEGMMI run {run} has no cue events; use runs 3-14.")
            path = None if root is None else Path(root) / f"S{subject:03d}" / f"S{subject:03d}R{run:02d}.edf"
            if path is None or not path.exists():
                if not download:
                    raise DataValidationError(
                        f"EEGMMI subject {subject} run {run} is not at {path}; point root at a copy in PhysioNet's "
                        "layout (S001/S001R04.edf ...) or pass download=True to fetch it through MNE (internet needed)."
                    )
                path = Path(
                    mne.datasets.eegbci.load_data(subject, [run], path=root, update_path=False, verbose=False)[0]
                )
            raw = mne.io.read_raw_edf(path, preload=True, verbose=False)
            mne.datasets.eegbci.standardize(raw)
            preprocess_raw(raw, preprocessing)
            first, second, kind = EEGMMI_RUN_TASKS[run]
            codes = {"T1": 2, "T2": 3} | ({"T0": 1} if include_rest else {})
            events, _ = mne.events_from_annotations(raw, event_id=codes, verbose=False)
            names = {first: 2, second: 3} | ({"rest": 1} if include_rest else {})
            epochs_list.append(
                windows_from_raw(
                    raw,
                    events=events,
                    event_id=names,
                    tmin=tmin,
                    tmax=tmax,
                    reject_peak_to_peak=reject_peak_to_peak,
                    metadata={"subject": f"S{subject:03d}", "run": run, "kind": kind},
                )
            )
    return _concat(epochs_list)


def load_muse_csv(
    root: str | Path,
    *,
    tmin: float = 0.0,
    tmax: float = 0.8,
    markers: Mapping[int, str] | None = None,
    reject_peak_to_peak: float | None = None,
    preprocessing: PreprocessingConfig | None = None,
) -> Any:
    """Muse headband CSV recordings (eeg-notebooks layout): an example of bringing your own format.

    Reads every ``subject*/session*/*.csv`` under ``root`` with columns
    ``timestamps, TP9, AF7, AF8, TP10, Right AUX, Marker0`` (values in µV).
    The sampling rate is estimated from the timestamps of each file.

    Parameters
    ----------
    root : str | Path
        The folder holding ``subjectN/sessionM/*.csv``.
    tmin, tmax : float
        Window after each marker, in seconds.
    markers : dict of int to str | None
        Marker codes and class names; default ``{1: "house", 2: "face"}``.
    reject_peak_to_peak : float | None
        Peak-to-peak rejection threshold in volts.
    preprocessing : PreprocessingConfig | None
        Applied to each file's recording before windows are cut.
    """
    markers = dict(markers or {1: "house", 2: "face"})
    files = sorted(Path(root).glob("subject*/session*/*.csv"))
    if not files:
        raise DataValidationError(f"No Muse CSV files under {root} (expected subject*/session*/*.csv).")
    epochs_list = []
    for run, path in enumerate(files):
        raw, marks = read_muse_csv(path)
        preprocess_raw(raw, preprocessing)
        onsets = np.flatnonzero(np.isin(marks, list(markers)))
        events = np.column_stack([onsets, np.zeros_like(onsets), marks[onsets].astype(int)])
        subject, session = path.parent.parent.name, path.parent.name
        epochs_list.append(
            windows_from_raw(
                raw,
                events=events,
                event_id={name: int(code) for code, name in markers.items()},
                tmin=tmin,
                tmax=tmax,
                reject_peak_to_peak=reject_peak_to_peak,
                metadata={"subject": subject, "session": session, "run": run},
            )
        )
    sfreqs = {e.info["sfreq"] for e in epochs_list}
    if len(sfreqs) > 1:
        epochs_list = [e.resample(min(sfreqs), verbose=False) for e in epochs_list]
    return _concat(epochs_list)


def read_muse_csv(path: str | Path) -> tuple[Any, np.ndarray]:
    """One Muse CSV file as a continuous ``mne.io.RawArray`` (volts) and its marker column.

    The sampling rate is estimated from the timestamps; the four EEG columns
    ``TP9, AF7, AF8, TP10`` are kept (``Right AUX`` is not EEG).
    """
    import mne

    table = pd.read_csv(path)
    channels = ["TP9", "AF7", "AF8", "TP10"]
    missing = [c for c in channels + ["timestamps", "Marker0"] if c not in table.columns]
    if missing:
        raise DataValidationError(f"{path} lacks the Muse columns {missing}.")
    stamps = table["timestamps"].to_numpy(dtype=float)
    # Timestamps are rounded to milliseconds: the mean rate over the file is the accurate one.
    sfreq = _round_rate((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    data = table[channels].to_numpy(dtype=float).T * 1e-6  # µV -> V
    raw = mne.io.RawArray(data, mne.create_info(channels, sfreq, "eeg"), verbose=False)
    return raw, table["Marker0"].to_numpy()


def _round_rate(rate: float) -> float:
    """A measured or truncated rate (256.016, 255.98) as the nominal one when within 0.1 %."""
    nominal = float(round(rate))
    return nominal if abs(rate - nominal) <= 1e-3 * nominal else round(rate, 3)


_SMNI_CONDITION = re.compile(r"^#\s*(S1 obj|S2 match|S2 nomatch)", re.IGNORECASE)
_SMNI_NON_EEG = {"X", "Y", "nd"}


def _read_smni_trial(path: Path) -> tuple[str, list[str], np.ndarray, float]:
    condition, rate = None, 256.0
    values: dict[str, list[float]] = {}
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if line.startswith("#"):
                match = _SMNI_CONDITION.match(line)
                if match:
                    condition = match.group(1).lower().replace(" ", "_")
                rate_match = re.search(r"([\d.]+)\s*msecs", line)
                if rate_match:
                    rate = _round_rate(1000.0 / float(rate_match.group(1)))
                continue
            parts = line.split()
            if len(parts) == 4:
                values.setdefault(parts[1], []).append(float(parts[3]))
    if condition is None:
        raise DataValidationError(f"{path} names no stimulus condition (S1 obj / S2 match / S2 nomatch).")
    names = [n for n in values if n not in _SMNI_NON_EEG]
    return condition, names, np.array([values[n] for n in names]), rate


def load_uci_smni(
    root: str | Path, *, subjects: Iterable[str] | None = None, preprocessing: PreprocessingConfig | None = None
) -> Any:
    """The UCI "EEG Database" (SMNI) trials: an example of bringing your own format.

    Reads every ``co2?NNNNNNN/*.rd.NNN.gz`` under ``root``: one gzip text file per
    1-s trial (``trial channel sample value`` lines, µV, 256 Hz, 64 channels of
    which ``X``, ``Y`` and ``nd`` are not EEG and are dropped).

    Returns
    -------
    epochs : mne.EpochsArray
        ``label`` is the stimulus condition (``s1_obj``, ``s2_match``,
        ``s2_nomatch``); ``subject`` and ``group`` (``alcoholic``/``control``,
        a subject-level label) are metadata columns.
    """
    import mne

    from .montage import standard_spelling

    folders = sorted(p for p in Path(root).glob("co2*") if p.is_dir())
    if subjects is not None:
        wanted = set(subjects)
        folders = [f for f in folders if f.name in wanted]
    if not folders:
        raise DataValidationError(f"No SMNI subject folders (co2a*/co2c*) under {root}.")
    rows, trials, ch_names, sfreq = [], [], None, None
    for folder in folders:
        for path in sorted(folder.glob("*.rd.*.gz")):
            condition, names, data, rate = _read_smni_trial(path)
            if ch_names is None:
                ch_names, sfreq = names, rate
            if names != ch_names:
                order = {n: i for i, n in enumerate(names)}
                data = data[[order[n] for n in ch_names]]
            trials.append(data * 1e-6)  # µV -> V
            group = "alcoholic" if folder.name.startswith("co2a") else "control"
            rows.append({"label": condition, "subject": folder.name, "group": group, "trial_file": path.name})
    # Upper-case names (FP1, CZ) take MNE's template spelling (Fp1, Cz) so montages and models match them.
    info = mne.create_info(standard_spelling(ch_names), sfreq, "eeg")
    with mne.utils.use_log_level("warning"):
        epochs = mne.EpochsArray(np.stack(trials), info, metadata=pd.DataFrame(rows), verbose=False)
    # The recordings come as separate 1-s trials: preprocessing applies to the trials themselves.
    return preprocess_raw(epochs, preprocessing)


def _moabb_objects(config: Any) -> tuple[Any, Any]:
    """The MOABB data set and paradigm a :class:`~neurofm.configs.MoabbConfig` names."""
    from .utils.check import closest_matches, soft_import

    soft_import("moabb", "Loading MOABB data sets")
    import moabb.datasets
    import moabb.paradigms

    def build(module: Any, name: str, params: dict, what: str) -> Any:
        cls = getattr(module, name, None)
        if not isinstance(cls, type):
            known = [n for n in dir(module) if isinstance(getattr(module, n), type)]
            hint = closest_matches(name, known)
            raise DataValidationError(
                f"{name!r} is not a {what} in {module.__name__}." + (f" Did you mean {hint[0]!r}?" if hint else "")
            )
        try:
            return cls(**params)
        except TypeError as err:
            raise DataValidationError(f"{what} {name}: {err}") from err

    dataset = build(moabb.datasets, config.dataset, config.dataset_params, "MOABB data set")
    paradigm = None
    if config.paradigm is not None:
        paradigm = build(moabb.paradigms, config.paradigm, config.paradigm_params, "MOABB paradigm")
    return dataset, paradigm


def load_data(config: DataConfig, base_dir: str | Path = ".") -> Any:
    """Load the windows a :class:`~neurofm.configs.DataConfig` describes.

    Relative paths are taken from ``base_dir`` (the config file's folder).
    """
    from .utils.files import resolve_path

    path = resolve_path(config.path or ".", base_dir)
    events = {k: v for k, v in {"tmin": config.tmin, "tmax": config.tmax}.items() if v is not None}
    common = {"preprocessing": config.preprocessing, "reject_peak_to_peak": config.reject_peak_to_peak}
    window = {
        k: v
        for k, v in {"window": config.window, "stride": config.stride, "event_id": config.event_id}.items()
        if v is not None
    }
    if config.source == "eegmmi":
        extra = {k: v for k, v in {"subjects": config.subjects, "runs": config.runs}.items() if v is not None}
        epochs = load_eegmmi(path, **extra, **events, **common)
    elif config.source == "muse_csv":
        epochs = load_muse_csv(path, **events, **common)
    elif config.source == "uci_smni":
        epochs = load_uci_smni(path, subjects=config.subjects, preprocessing=config.preprocessing)
    elif config.source == "moabb":
        dataset, paradigm = _moabb_objects(config.moabb)
        epochs = from_moabb(dataset, paradigm=paradigm, subjects=config.subjects, **events, **common)
    elif config.source == "bids":
        epochs = load_bids(
            path,
            subjects=config.subjects,
            sessions=config.sessions,
            tasks=config.tasks,
            runs=config.runs,
            **events,
            **window,
            **common,
        )
    else:
        epochs = load_recording(path, **events, **window, **common)
    if config.label not in epochs.metadata.columns:
        raise DataValidationError(
            f"label column {config.label!r} is not in the windows' metadata {list(epochs.metadata.columns)}."
        )
    return epochs
