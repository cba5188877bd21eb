"""Recordings from files: any file MNE reads, and BIDS data sets (through mne-bids)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..configs import PreprocessingConfig
from ..exceptions import DataValidationError
from ..preprocess import preprocess_raw
from ..utils.check import soft_import
from ..windows import _concat, windows_from_raw


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
    import mne  # heavy: neurofm.run and neurofm --help load this module, not mne

    path = Path(path)
    if not path.exists():
        raise DataValidationError(f"No recording at {path}.")
    try:
        raw = mne.io.read_raw(path, preload=True, verbose=False)
    except Exception as exc:  # noqa: BLE001 - MNE's readers fail in many ways on a file they cannot read; re-raised
        raise DataValidationError(
            f"MNE could not read {path} as a recording ({type(exc).__name__}: {exc}); point to a file in a format "
            "MNE reads (EDF, BDF, GDF, FIF, BrainVision .vhdr, EEGLAB .set ...)."
        ) from exc
    preprocess_raw(raw, preprocessing or PreprocessingConfig())
    return _concat([windows_from_raw(raw, **window_args)])  # one recording, named in the metadata


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
