"""Readers of the public data sets neurofm is tested on: EEGMMI (PhysioNet), Muse N170 (EEG notebooks) and UCI SMNI."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..configs import PreprocessingConfig
from ..exceptions import DataValidationError
from ..montage import standard_spelling
from ..preprocess import preprocess_raw
from ..windows import (
    _concat,
    _log_rejected,
    _record_rejected,
    annotation_events,
    rejected_windows,
    windows_from_raw,
)
from .naming import entity_number, standard_channel_names, subject_id

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
    event_id: Iterable[str] | Mapping[str, int] | None = None,
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
    event_id : list of str | dict of str to int | None
        The classes to keep, by name (``["left_fist", "right_fist"]``; adding
        ``"rest"`` keeps the T0 periods too); a mapping's codes number the
        windows' events (``epochs.events``). ``None``: both cued classes of each
        run (and ``rest`` with ``include_rest``). A run with none of the named
        classes is left out.
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
        ``both_feet``, ``rest``); ``subject`` (``"001"``), ``run`` (an
        integer) and ``kind`` (movement/imagery) are metadata columns. Channel
        names follow MNE's template spelling (``FC5``, PhysioNet's trailing dots
        removed). Names and metadata are spelled as :func:`load_bids` spells
        them for a BIDS copy of the same files (:mod:`neurofm.loaders.naming`).
    """
    import mne  # heavy: neurofm.run and neurofm --help load this module, not mne

    subjects, runs = [int(s) for s in subjects], sorted(int(r) for r in runs)
    bad_runs = [run for run in runs if run not in EEGMMI_RUN_TASKS]
    if bad_runs:
        raise DataValidationError(f"EEGMMI runs {bad_runs} have no cue events; use runs 3-14.")
    codes = _eegmmi_codes(event_id, runs, include_rest)
    epochs_list = []
    for subject in subjects:
        for run in runs:
            first, second, kind = EEGMMI_RUN_TASKS[run]
            names = {name: code for name, code in codes.items() if name in (first, second, "rest")}
            if not names:
                continue  # event_id names only classes of other runs
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
            standard_channel_names(raw)
            preprocess_raw(raw, preprocessing)
            annotation = {"rest": "T0", first: "T1", second: "T2"}
            # A file without T0/T1/T2 is named, with its events.
            events, _ = annotation_events(raw, {annotation[name]: code for name, code in names.items()})
            epochs_list.append(
                windows_from_raw(
                    raw,
                    events=events,
                    event_id=names,
                    tmin=tmin,
                    tmax=tmax,
                    reject_peak_to_peak=reject_peak_to_peak,
                    metadata={"subject": subject_id(subject), "run": run, "kind": kind},
                )
            )
    return _concat(epochs_list)


def _eegmmi_codes(
    event_id: Iterable[str] | Mapping[str, int] | None, runs: list[int], include_rest: bool
) -> dict[str, int]:
    """The EEGMMI classes to keep and their event codes (as in PhysioNet's files: T0 rest 1, T1 2, T2 3)."""
    defaults = {"rest": 1} | {
        name: code for names in EEGMMI_RUN_TASKS.values() for name, code in zip(names[:2], (2, 3), strict=True)
    }
    classes = ["rest"] + sorted({name for run in runs for name in EEGMMI_RUN_TASKS[run][:2]})
    if event_id is None:
        return {name: defaults[name] for name in classes if name != "rest" or include_rest}
    names = [event_id] if isinstance(event_id, str) else list(event_id)
    unknown = [name for name in names if name not in classes]
    if unknown:
        raise DataValidationError(
            f"event_id names {unknown}, which are not EEGMMI classes of runs {runs}; choose among {classes} "
            "(data.event_id in a neurofm run config)."
        )
    codes = {str(k): int(v) for k, v in event_id.items()} if isinstance(event_id, Mapping) else {}
    return {name: codes.get(name, defaults[name]) for name in names} | (
        {"rest": 1} if include_rest and "rest" not in names else {}
    )


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
        epochs = windows_from_raw(
            raw,
            events=events,
            event_id={name: int(code) for code, name in markers.items()},
            tmin=tmin,
            tmax=tmax,
            reject_peak_to_peak=reject_peak_to_peak,
            metadata={"subject": subject_id(subject), "session": entity_number(session), "run": run},
        )
        if reject_peak_to_peak is not None:  # the CSV files of different sessions share names
            _record_rejected(epochs, {path.relative_to(root).as_posix(): sum(rejected_windows(epochs).values())})
        epochs_list.append(epochs)
    sfreqs = {e.info["sfreq"] for e in epochs_list}
    if len(sfreqs) > 1:
        epochs_list = [e.resample(min(sfreqs), verbose=False) for e in epochs_list]
    return _concat(epochs_list)


def read_muse_csv(path: str | Path) -> tuple[Any, np.ndarray]:
    """One Muse CSV file as a continuous ``mne.io.RawArray`` (volts) and its marker column.

    The sampling rate is estimated from the timestamps; the four EEG columns
    ``TP9, AF7, AF8, TP10`` are kept (``Right AUX`` is not EEG).
    """
    import mne  # heavy: neurofm.run and neurofm --help load this module, not mne

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
    root: str | Path,
    *,
    subjects: Iterable[str] | None = None,
    tmin: float | None = None,
    tmax: float | None = None,
    reject_peak_to_peak: float | None = None,
    preprocessing: PreprocessingConfig | None = None,
) -> Any:
    """The UCI "EEG Database" (SMNI) trials: an example of bringing your own format.

    Reads every ``co2?NNNNNNN/*.rd.NNN.gz`` under ``root``: one gzip text file per
    1-s trial (``trial channel sample value`` lines, µV, 256 Hz, 64 channels of
    which ``X``, ``Y`` and ``nd`` are not EEG and are dropped).

    Parameters
    ----------
    root : str | Path
        The folder holding the ``co2?NNNNNNN`` subject folders.
    subjects : iterable of str | None
        Subject folders to read (``None``: all).
    tmin, tmax : float | None
        The part of each trial to keep, in seconds from its start (default: all of it).
    reject_peak_to_peak : float | None
        Drop trials above this peak-to-peak amplitude (volts), after preprocessing;
        counted per subject folder (:func:`neurofm.windows.rejected_windows`).
    preprocessing : PreprocessingConfig | None
        Applied to the trials.

    Returns
    -------
    epochs : mne.EpochsArray
        ``label`` is the stimulus condition (``s1_obj``, ``s2_match``,
        ``s2_nomatch``); ``subject`` and ``group`` (``alcoholic``/``control``,
        a subject-level label) are metadata columns.
    """
    import mne  # heavy: neurofm.run and neurofm --help load this module, not mne

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
    epochs = preprocess_raw(epochs, preprocessing)
    if tmin is not None or tmax is not None:
        start, stop = tmin or 0.0, epochs.times[-1] + 1.0 / epochs.info["sfreq"] if tmax is None else tmax
        if not 0.0 <= start < stop <= epochs.times[-1] + 1.0 / epochs.info["sfreq"] + 1e-9:
            raise DataValidationError(
                f"tmin={tmin}, tmax={tmax} fall outside the SMNI trials, which last "
                f"{len(epochs.times) / epochs.info['sfreq']:g} s from their start; choose 0 <= tmin < tmax <= that."
            )
        epochs.crop(start, stop - 1.0 / epochs.info["sfreq"], verbose=False)
    if reject_peak_to_peak is not None:
        subject_of = epochs.metadata["subject"].to_numpy()
        epochs.drop_bad(reject={"eeg": reject_peak_to_peak}, verbose=False)
        dropped = [i for i, reasons in enumerate(epochs.drop_log) if reasons]
        counts = {folder.name: 0 for folder in folders} | pd.Series(subject_of[dropped]).value_counts().to_dict()
        _record_rejected(epochs, counts)
        _log_rejected(counts, len(epochs))
    return epochs
