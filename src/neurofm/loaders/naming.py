"""One spelling of channels, subjects, sessions and runs for every loader.

Every loader of :mod:`neurofm.loaders` passes its channel names and its
``subject``/``session``/``run`` metadata through these helpers, so the same
recordings read two ways (``load_eegmmi`` on PhysioNet's files, ``load_bids``
on a BIDS copy of them) give the same windows, names and metadata:

- channels: EEG names in MNE's template spelling, with PhysioNet's trailing
  dots removed (``Fc5.`` -> ``FC5``, ``FP1`` -> ``Fp1``); other names unchanged;
- ``subject``: a string; a numeric label (``1``, ``"01"``, ``"001"``) is
  zero-padded to three digits (``"001"``), the width of PhysioNet's and
  OpenNeuro's EEGMMI labels, so subjects sort as numbers; other labels stay as
  written (``"co2a0000364"``, ``"subject1"``);
- ``session`` and ``run``: an integer when numeric (``"04"`` -> ``4``, so
  runs sort 4 < 12), else the string as written (``"pre"``).
"""

from __future__ import annotations

from typing import Any

from ..montage import standard_spelling

__all__ = ["entity_number", "same_entity", "standard_channel_names", "subject_id"]


def _numeric(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.isdigit() else None


def subject_id(value: Any) -> str:
    """A subject label as neurofm spells it: numeric labels zero-padded to three digits, others as written."""
    number = _numeric(value)
    return f"{number:03d}" if number is not None else str(value).strip()


def entity_number(value: Any) -> int | str | None:
    """A session or run label as neurofm spells it: an integer when numeric, else the string (``None`` stays)."""
    if value is None:
        return None
    number = _numeric(value)
    return number if number is not None else str(value).strip()


def same_entity(a: Any, b: Any) -> bool:
    """Whether two labels name the same subject, session or run (``4``, ``"4"`` and ``"04"`` do)."""
    first, second = _numeric(a), _numeric(b)
    if first is not None and second is not None:
        return first == second
    return str(a).strip() == str(b).strip()


def standard_channel_names(raw: Any) -> Any:
    """Rename a recording's EEG channels to MNE's template spelling (``Fc5.`` -> ``FC5``), in place.

    Names that would then clash are left as they were; non-EEG channels are untouched.
    """
    import mne  # heavy: neurofm.run and neurofm --help load this module, not mne

    eeg = set(mne.pick_types(raw.info, eeg=True, exclude=()).tolist())
    names = [n.rstrip(".") if i in eeg else n for i, n in enumerate(raw.ch_names)]
    spelled = standard_spelling(names)
    new = [spelled[i] if i in eeg else n for i, n in enumerate(names)]
    if len(set(new)) != len(new):  # two names that differ only in decoration: keep the recording's own
        return raw
    mapping = {old: name for old, name in zip(raw.ch_names, new, strict=True) if old != name}
    if mapping:
        raw.rename_channels(mapping, verbose=False)
    return raw
