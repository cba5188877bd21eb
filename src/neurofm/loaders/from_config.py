"""The data of a ``neurofm run`` config: a :class:`~neurofm.configs.DataConfig` to windows."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ..configs import DataConfig
from ..exceptions import DataValidationError
from ..utils.files import resolve_path
from .datasets import load_eegmmi, load_muse_csv, load_uci_smni
from .external import _moabb_objects, from_moabb
from .recordings import load_bids, load_recording


def load_data(config: DataConfig, base_dir: str | Path = ".") -> Any:
    """Load the windows a :class:`~neurofm.configs.DataConfig` describes.

    Relative paths are taken from ``base_dir`` (the config file's folder).
    Every field the config sets reaches its loader (the config refuses those a
    source has no use for); :func:`neurofm.windows.rejected_windows` of the result
    gives the windows peak-to-peak rejection dropped, per file.
    """
    path = resolve_path(config.path or ".", base_dir)
    events = {k: v for k, v in {"tmin": config.tmin, "tmax": config.tmax}.items() if v is not None}
    common = {"preprocessing": config.preprocessing, "reject_peak_to_peak": config.reject_peak_to_peak}
    window = {
        k: v
        for k, v in {"window": config.window, "stride": config.stride, "event_id": config.event_id}.items()
        if v is not None
    }
    if config.source == "eegmmi":
        extra = {
            k: v
            for k, v in {"subjects": config.subjects, "runs": config.runs, "event_id": config.event_id}.items()
            if v is not None
        }
        epochs = load_eegmmi(path, **extra, **events, **common)
    elif config.source == "muse_csv":
        epochs = load_muse_csv(path, **events, **common)
    elif config.source == "uci_smni":
        epochs = load_uci_smni(path, subjects=config.subjects, **events, **common)
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
        columns = [str(column) for column in epochs.metadata.columns]
        close = difflib.get_close_matches(config.label, columns, n=1)
        raise DataValidationError(
            f"label column {config.label!r} (data.label) is not in the windows' metadata: the {config.source!r} "
            f"loader gave the columns {columns}. Set data.label to the column holding each window's class"
            + (f" (did you mean {close[0]!r}?)." if close else ".")
        )
    return epochs
