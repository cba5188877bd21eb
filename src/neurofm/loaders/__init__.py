"""Bring recordings to windows: every loader returns ``mne.Epochs``.

Each loader returns epochs in volts with standard channel names and a
``metadata`` table holding ``label`` (the class of each window, when the
recording has one) and ``subject``/``session``/``run``, so that

>>> epochs = load_eegmmi("../shared/data/eegmmi")  # doctest: +SKIP
>>> Experiment(config).run(epochs, epochs.metadata["label"])  # doctest: +SKIP

works the same for every source, and ``group_key="subject"`` keeps subjects
apart. Channel names and ``subject``/``session``/``run`` are spelled the same
way by every loader (:mod:`neurofm.loaders.naming`), and
:func:`rejected_windows` says how many windows peak-to-peak rejection dropped
from each file. :func:`windows_from_raw` cuts event-locked or fixed-length windows from
any ``mne.io.Raw``; :func:`load_recording` reads any file MNE reads first.
"""

from __future__ import annotations

from ..windows import rejected_windows, windows_from_raw, windows_from_recordings
from .datasets import EEGMMI_RUN_TASKS, load_eegmmi, load_muse_csv, load_uci_smni, read_muse_csv
from .external import from_braindecode, from_moabb
from .from_config import load_data
from .recordings import load_bids, load_recording

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
    "rejected_windows",
    "windows_from_raw",
    "windows_from_recordings",
]
