"""Channel names and electrode positions.

Names are matched case-insensitively after removing the decorations that
recording systems add (``"EEG FP1-REF"``, PhysioNet's ``"Fc5."``), and the old
10-20 temporal names are aliases of the new ones (T3 = T7, T4 = T8, T5 = P7,
T6 = P8). Positions come from MNE's built-in template montages, never from the
network.
"""

from __future__ import annotations

import functools
import re
import warnings

import numpy as np

__all__ = ["canonical_name", "standard_positions", "standard_spelling", "interpolation_matrix", "match_channels"]

_OLD_TO_NEW = {"t3": "t7", "t4": "t8", "t5": "p7", "t6": "p8"}
_DECORATION = re.compile(r"^(eeg|meg)[\s_-]+|[\s_-]+(ref|le|ar|avg|a1|a2|m1|m2)$|\.+$")


def _undecorated(name: str) -> str:
    text = str(name).strip().lower()
    previous = None
    while previous != text:
        previous = text
        text = _DECORATION.sub("", text).strip()
    return text


def canonical_name(name: str) -> str:
    """Comparable form of a channel name: lower case, undecorated, new 10-20 names."""
    text = _undecorated(name)
    return _OLD_TO_NEW.get(text, text)


def match_channels(input_names, target_names) -> dict[int, int]:
    """Map target channel index -> input channel index for names that match.

    Each input channel fills at most one target. A vocabulary that lists both
    an old and a new name of one site (T3 and T7) gets the input under the
    name it was recorded with; the alias is left unfilled.
    """
    by_canonical = {canonical_name(n): i for i, n in enumerate(input_names)}
    raw = [_undecorated(n) for n in input_names]
    mapping: dict[int, int] = {}
    taken: set[int] = set()
    exact_first = sorted(
        range(len(target_names)),
        key=lambda t: _undecorated(target_names[t]) not in raw,
    )
    for t in exact_first:
        i = by_canonical.get(canonical_name(target_names[t]))
        if i is not None and i not in taken:
            mapping[t] = i
            taken.add(i)
    return dict(sorted(mapping.items()))


@functools.cache
def _template_montage():
    import mne  # heavy: neurofm.adapt loads this module, not mne

    names = ("colin27_1005", "standard_1005")
    available = mne.channels.get_builtin_montages()
    name = next(n for n in names if n in available)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return mne.channels.make_standard_montage(name)


@functools.cache
def _template_positions() -> dict[str, np.ndarray]:
    positions = _template_montage().get_positions()["ch_pos"]
    return {canonical_name(k): np.asarray(v, dtype=np.float64) for k, v in positions.items()}


def standard_spelling(names) -> list[str]:
    """Channel names in MNE's template spelling where the template knows them (FP1 -> Fp1, T3 stays T3)."""
    lookup = {_undecorated(n): n for n in _template_montage().ch_names}
    return [lookup.get(_undecorated(n), n) for n in names]


def standard_positions(names) -> dict[str, np.ndarray]:
    """Template 3-D positions of the names MNE knows, in metres, in the template's native frame.

    The template is MNE's ``colin27_1005`` (formerly ``standard_1005``), whose
    native frame is MNI/fsaverage ("mri"); :func:`template_to_head` moves
    them to MNE's head frame, where a recording's own positions live.
    """
    table = _template_positions()
    return {n: table[canonical_name(n)] for n in names if canonical_name(n) in table}


@functools.cache
def _head_transform() -> np.ndarray:
    """The template's native frame -> MNE's head frame (4 x 4), from the template's own fiducials."""
    import mne  # heavy: neurofm.adapt loads this module, not mne

    fiducials = _template_montage().get_positions()
    return mne.transforms.get_ras_to_neuromag_trans(fiducials["nasion"], fiducials["lpa"], fiducials["rpa"])


def template_to_head(position) -> np.ndarray:
    """A position in the template's native frame, in MNE's head frame (what ``info.set_montage`` gives)."""
    transform = _head_transform()
    return transform[:3, :3] @ np.asarray(position, dtype=np.float64) + transform[:3, 3]


def head_to_template(position) -> np.ndarray:
    """A head-frame position (digitised, or from ``info``) in the template's native frame.

    The head frame is defined by a head's nasion and preauricular points, so
    the template's fiducials map a head frame onto the template: exact for a
    template montage set on ``info``, the usual approximation for a real head.
    """
    transform = _head_transform()
    return transform[:3, :3].T @ (np.asarray(position, dtype=np.float64) - transform[:3, 3])


def interpolation_matrix(source_names, target_names) -> np.ndarray:
    """Spherical-spline weights that estimate ``target_names`` from ``source_names``.

    Interpolation is linear in the data, so MNE's ``interpolate_bads`` applied
    to unit impulses, one per source channel, yields the weight matrix.

    Returns
    -------
    weights : ndarray, shape (n_targets, n_sources)
    """
    import mne  # heavy: neurofm.adapt loads this module, not mne

    source_names, target_names = list(source_names), list(target_names)
    positions = standard_positions(source_names + target_names)
    all_names = [f"s{i}" for i in range(len(source_names))] + [f"t{i}" for i in range(len(target_names))]
    info = mne.create_info(all_names, sfreq=1000.0, ch_types="eeg")
    ch_pos = {alias: positions[orig] for alias, orig in zip(all_names, source_names + target_names, strict=True)}
    info.set_montage(mne.channels.make_dig_montage(ch_pos=ch_pos, coord_frame="head"), verbose=False)
    data = np.zeros((len(all_names), len(source_names)))
    data[: len(source_names)] = np.eye(len(source_names))
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.info["bads"] = all_names[len(source_names) :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw.interpolate_bads(reset_bads=True, origin=(0.0, 0.0, 0.04), verbose=False)
    return raw.get_data()[len(source_names) :]
