"""Recordings from files: any file MNE reads, and BIDS data sets (through mne-bids)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..configs import PreprocessingConfig
from ..exceptions import DataValidationError
from ..preprocess import preprocess_raw
from ..utils.check import soft_import
from ..windows import _concat, _warn_every_event_kept, windows_from_raw
from .naming import entity_number, same_entity, standard_channel_names, subject_id


def load_recording(path: str | Path, *, preprocessing: PreprocessingConfig | None = None, **window_args: Any) -> Any:
    """Read any file MNE reads (EDF, BDF, GDF, FIF, BrainVision, EEGLAB ...) and cut windows.

    EEG channel names take MNE's template spelling (see :mod:`neurofm.loaders.naming`).

    Parameters
    ----------
    path : str | Path
        The recording.
    preprocessing : PreprocessingConfig | None
        Applied to the recording before windows are cut (default: keep EEG channels).
    **window_args
        Passed to :func:`windows_from_raw`. Without ``event_id``, event-locked
        windows are cut around every event and a warning lists the classes
        this gave, with their window counts.
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
    standard_channel_names(raw)
    preprocess_raw(raw, preprocessing or PreprocessingConfig())
    epochs = _concat([windows_from_raw(raw, **window_args)])  # one recording, named in the metadata
    if window_args.get("event_id") is None and window_args.get("window") is None:
        _warn_every_event_kept(epochs)
    return epochs


_BIDS_RAW_EXTENSIONS = (".edf", ".bdf", ".vhdr", ".set", ".fif", ".gdf")


def load_bids(
    root: str | Path,
    *,
    subjects: Iterable[str | int] | None = None,
    sessions: Iterable[str | int] | None = None,
    tasks: Iterable[str] | None = None,
    runs: Iterable[str | int] | None = None,
    datatype: str = "eeg",
    preprocessing: PreprocessingConfig | None = None,
    **window_args: Any,
) -> Any:
    """Windows from a BIDS data set, read with mne-bids.

    Parameters
    ----------
    root : str | Path
        The BIDS root.
    subjects, sessions, tasks, runs : iterable of str or int | None
        Entities to select (``None``: all); numeric labels match whatever
        their padding (``runs=[4]`` selects ``run-04`` and ``run-4``).
    datatype : str
        ``"eeg"`` or ``"meg"``.
    preprocessing : PreprocessingConfig | None
        Applied to each recording before windows are cut.
    **window_args
        Passed to :func:`windows_from_raw` (events come from each recording's
        ``events.tsv`` as annotations). Without ``event_id`` a warning lists the
        classes every event gave.

    Returns
    -------
    epochs : mne.Epochs
        With ``subject``, ``session``, ``task`` and ``run`` metadata columns,
        spelled as every loader spells them (:mod:`neurofm.loaders.naming`):
        ``subject`` a string, numeric ones zero-padded to three digits
        (``"001"``); ``session`` and ``run`` integers when numeric; EEG channels
        in MNE's template spelling (``FC5``). The same recordings read by
        :func:`load_eegmmi` give the same windows, channels and columns.
    """
    mne_bids = soft_import("mne_bids", "Reading BIDS data sets", extra="bids")
    wanted = {"subject": subjects, "session": sessions, "task": tasks, "run": runs}
    wanted = {k: [v] if isinstance(v, (str, int)) else v for k, v in wanted.items()}
    # Every recording, then the selection: numeric labels match whatever their padding ('04' is run 4).
    found = mne_bids.find_matching_paths(
        root, datatypes=datatype, suffixes=datatype, extensions=list(_BIDS_RAW_EXTENSIONS)
    )
    paths = [
        p for p in found if all(v is None or any(same_entity(getattr(p, k), x) for x in v) for k, v in wanted.items())
    ]
    paths.sort(key=lambda p: [_sort_key(entity) for entity in (p.subject, p.session, p.task, p.run)])
    if not paths:
        raise DataValidationError(
            f"No {datatype} recordings match subjects={subjects}, sessions={sessions}, tasks={tasks}, runs={runs} "
            f"under the BIDS root {root}."
        )
    epochs_list = []
    for bids_path in paths:
        raw = mne_bids.read_raw_bids(bids_path, verbose=False)
        raw.load_data(verbose=False)
        standard_channel_names(raw)
        preprocess_raw(raw, preprocessing or PreprocessingConfig(picks=datatype))
        entities = {
            "subject": subject_id(bids_path.subject),
            "session": entity_number(bids_path.session),
            "task": bids_path.task,
            "run": entity_number(bids_path.run),
        }
        epochs_list.append(windows_from_raw(raw, metadata=entities, **window_args))
    epochs = _concat(epochs_list)
    if window_args.get("event_id") is None and window_args.get("window") is None:
        _warn_every_event_kept(epochs)
    return epochs


def _sort_key(entity: str | None) -> tuple[int, int, str]:
    """BIDS entities in numeric order where numeric (run 4 before run 12), absent ones first."""
    if entity is None:
        return (0, 0, "")
    number = entity_number(entity)
    return (1, number, "") if isinstance(number, int) else (2, 0, str(number))


# Runs of PhysioNet's EEG Motor Movement/Imagery data set and what T1/T2 mean in each.
