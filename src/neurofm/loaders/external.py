"""Windows from other libraries' data sets: braindecode and MOABB."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..configs import PreprocessingConfig
from ..data import UNIT_TO_SI
from ..exceptions import DataValidationError
from ..preprocess import preprocess_raw
from ..utils.check import closest_matches, soft_import
from ..windows import _concat, windows_from_raw
from .naming import entity_number, subject_id


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
    import mne  # heavy: neurofm.run and neurofm --help load this module, not mne

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
        In volts, with ``label``, ``subject``, ``session`` and ``run`` metadata,
        spelled as every loader spells them (:mod:`neurofm.loaders.naming`):
        subject ``1`` is ``"001"``; numeric sessions and runs are integers.
    """
    import mne  # heavy: neurofm.run and neurofm --help load this module, not mne

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
            table = _spelled_entities(table)
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
                if len(stim):  # its events are read: the trigger channel is no signal, and no window should hold it
                    raw.drop_channels([raw.ch_names[i] for i in stim])
                preprocess_raw(raw, preprocessing or PreprocessingConfig())
                entities = {
                    "subject": subject_id(subject),
                    "session": entity_number(session),
                    "run": entity_number(run),
                }
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


def _spelled_entities(table: pd.DataFrame) -> pd.DataFrame:
    """A MOABB paradigm's metadata with subject, session and run spelled as every loader spells them."""
    spell = {"subject": subject_id, "session": entity_number, "run": entity_number}
    return table.assign(**{k: table[k].map(f) for k, f in spell.items() if k in table.columns})


def _moabb_objects(config: Any) -> tuple[Any, Any]:
    """The MOABB data set and paradigm a :class:`~neurofm.configs.MoabbConfig` names."""
    soft_import("moabb", "Loading MOABB data sets")
    import moabb.datasets  # optional: the [moabb] extra
    import moabb.paradigms  # optional: the [moabb] extra

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
