"""Channels: which input channels a backbone receives, in which order, and how they are referenced.

Selection, reordering, interpolation, bipolar derivation and re-referencing
are each a linear map over channels; here they are built as one matrix
``(channels out, channels in)``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..data import SignalInfo
from ..exceptions import AdaptationError
from ..models.specs import MODEL_SPECS, ModelSpec
from ..montage import canonical_name, interpolation_matrix, match_channels, standard_positions

if TYPE_CHECKING:
    from ..configs import AdaptationConfig


def _check_sensor_types(spec: ModelSpec, info: SignalInfo) -> None:
    """Refuse sensors the backbone cannot take, naming the backbones that can."""
    held = info.sensor_counts()
    if set(held) <= set(spec.sensor_types):
        return
    counts = ", ".join(f"{n} {kind}" for kind, n in held.items())
    takers = [other.key for other in MODEL_SPECS.values() if set(held) <= set(other.sensor_types)]
    keep = sorted(set(held) & set(spec.sensor_types))
    raise AdaptationError(
        f"{spec.key!r} takes only {'/'.join(spec.sensor_types)} channels, and these windows hold {counts}. "
        f"Backbones that take all of them: {takers or 'none'}."
        + (f" Or keep the channels it takes with sensor_types={keep}." if keep else "")
    )


def _untrained(spec: ModelSpec, options: AdaptationConfig, steps: list) -> frozenset[str]:
    """Canonical names of the input slots whose weights never saw signal, when they are left as in pretraining."""
    if not spec.untrained_channels:
        return frozenset()
    if options.untrained_channels == "feed":
        steps.append(
            {
                "step": "untrained_channels",
                "detail": f"{list(spec.untrained_channels)} are fed the recorded "
                "signal (untrained_channels='feed'), though their weights never saw signal in pretraining",
            }
        )
        return frozenset()
    return frozenset(canonical_name(name) for name in spec.untrained_channels)


def _plan_channels(
    spec: ModelSpec, info: SignalInfo, steps: list, untrained: frozenset[str] = frozenset()
) -> tuple[list[str], np.ndarray, tuple | None]:
    """Output channel names, the channel matrix, and the output channels' own positions (if any).

    ``untrained`` (canonical names): vocabulary entries that are never fed, and
    fixed slots that are zeroed later, so never interpolated.
    """
    if spec.channel_mode == "any":
        return _plan_any_channels(spec, info, steps)
    if spec.channel_mode == "vocabulary":
        return _plan_vocabulary_channels(spec, info, steps, untrained)
    # fixed layouts (fixed channel list) and bipolar montages (pairs of electrodes)
    electrodes, electrode_matrix = _plan_electrodes(spec, info, steps, untrained)
    if spec.channel_mode == "fixed":
        steps.append(
            {"step": "reorder_channels", "detail": f"{len(electrodes)} channels in {spec.key!r}'s fixed order"}
        )
        return electrodes, electrode_matrix, None
    out, matrix = _plan_bipolar(spec, electrode_matrix, steps)
    return out, matrix, None


def _plan_any_channels(spec: ModelSpec, info: SignalInfo, steps: list) -> tuple[list[str], np.ndarray, tuple | None]:
    """Every input channel (those with a position, for a model placed by position), in the input's order."""
    names = list(info.ch_names)
    n_in = len(names)
    keep = list(range(n_in))
    positions = None
    if spec.needs_positions:
        keep, positions = _plan_positions(spec, info, steps)
    out = [names[i] for i in keep]
    matrix = np.zeros((len(keep), n_in))
    matrix[np.arange(len(keep)), keep] = 1.0
    if len(keep) > spec.max_channels:
        raise AdaptationError(
            f"{spec.key!r} accepts at most {spec.max_channels} channels, got {len(keep)}; pick fewer channels."
        )
    return out, matrix, positions


def _plan_vocabulary_channels(
    spec: ModelSpec, info: SignalInfo, steps: list, untrained: frozenset[str]
) -> tuple[list[str], np.ndarray, None]:
    """The input channels in the model's vocabulary, in its order; untrained entries are left out."""
    names = list(info.ch_names)
    n_in = len(names)
    mapping = match_channels(names, spec.channel_names)  # vocab index -> input index
    never_trained = sorted(names[i] for t, i in mapping.items() if canonical_name(spec.channel_names[t]) in untrained)
    mapping = {t: i for t, i in mapping.items() if canonical_name(spec.channel_names[t]) not in untrained}
    if never_trained:
        detail = (
            f"{never_trained}: in {spec.key!r}'s vocabulary but never trained in its pretraining (their "
            "embeddings are random); untrained_channels='feed' feeds them anyway"
        )
        steps.append({"step": "drop_channels", "detail": detail})
        # stacklevel 4: the warning points at whoever called plan_adaptation.
        warnings.warn(f"{spec.key!r} does not receive {detail}.", UserWarning, stacklevel=4)
    if not mapping:
        _refuse_unmatched(spec, names, never_trained)
    order = sorted(mapping)  # the model's vocabulary order
    out = [spec.channel_names[t] for t in order]
    matrix = np.zeros((len(order), n_in))
    matrix[np.arange(len(order)), [mapping[t] for t in order]] = 1.0
    used = set(mapping.values())
    dropped = [names[i] for i in range(n_in) if i not in used and names[i] not in never_trained]
    steps.append(
        {
            "step": "select_channels",
            "detail": f"{len(out)} channels matched {spec.key!r}'s vocabulary (case-insensitive), in its order",
        }
    )
    if dropped:
        steps.append({"step": "drop_channels", "detail": f"not in the vocabulary: {dropped}"})
    if len(order) < spec.min_channels:
        raise AdaptationError(
            f"{spec.key!r} needs at least {spec.min_channels} channels of its vocabulary, found {len(order)}."
        )
    return out, matrix, None


def _refuse_unmatched(spec: ModelSpec, names: list[str], never_trained: list[str]) -> None:
    """Raise for inputs of which no channel is a trained entry of the model's vocabulary, naming the fix."""
    if never_trained:
        raise AdaptationError(
            f"{spec.key!r} never trained on any of the input channels it knows ({never_trained}); their embeddings "
            "are random. Record channels it was trained on, feed these anyway with "
            "adaptation={'untrained_channels': 'feed'}, or choose a model that takes any montage (cbramod, reve)."
        )
    raise AdaptationError(
        f"None of the input channels {names[:8]}{'...' if len(names) > 8 else ''} is in {spec.key!r}'s channel "
        f"vocabulary ({len(spec.channel_names)} names such as {list(spec.channel_names[:6])}); "
        "rename the channels to standard 10-20 names."
    )


def _plan_electrodes(
    spec: ModelSpec, info: SignalInfo, steps: list, untrained: frozenset[str]
) -> tuple[list[str], np.ndarray]:
    """The model's electrodes in its order and their matrix over the input: matched, else interpolated."""
    names = list(info.ch_names)
    n_in = len(names)
    electrodes = list(spec.channel_names)
    mapping = match_channels(names, electrodes)
    # Slots zeroed later need no signal: they are neither missing nor interpolated.
    mapping = {t: i for t, i in mapping.items() if canonical_name(electrodes[t]) not in untrained}
    missing = [
        electrodes[t]
        for t in range(len(electrodes))
        if t not in mapping and canonical_name(electrodes[t]) not in untrained
    ]
    electrode_matrix = np.zeros((len(electrodes), n_in))
    for t, i in mapping.items():
        electrode_matrix[t, i] = 1.0
    if missing:
        _check_interpolation(spec, mapping, missing, untrained)
        _interpolate_missing(spec, names, mapping, missing, electrode_matrix, steps)
    used = set(mapping.values())
    dropped = [names[i] for i in range(n_in) if i not in used]
    if dropped:
        steps.append({"step": "drop_channels", "detail": f"not used by {spec.key!r}: {dropped}"})
    return electrodes, electrode_matrix


def _check_interpolation(
    spec: ModelSpec, mapping: dict[int, int], missing: list[str], untrained: frozenset[str]
) -> None:
    """Refuse to interpolate ``missing`` electrodes where the model cannot, or from too few present ones."""
    electrodes = list(spec.channel_names)
    n_present = len(mapping)
    fraction = n_present / (len(electrodes) - len(untrained & {canonical_name(e) for e in electrodes}))
    if not spec.interpolation or fraction < spec.min_channel_fraction:
        why = (
            f"only {n_present} of its {len(electrodes)} electrodes are present"
            if spec.interpolation
            else "the model cannot interpolate missing channels"
        )
        raise AdaptationError(
            f"{spec.key!r} expects the electrodes {electrodes}; {why}, missing {missing}. "
            "Record or rename these channels (old names T3/T4/T5/T6 are understood), or choose a model that "
            "accepts any montage (cbramod, codebrain, luna, reve)."
        )


def _interpolate_missing(
    spec: ModelSpec, names: list[str], mapping: dict[int, int], missing: list[str], matrix: np.ndarray, steps: list
) -> None:
    """Fill the rows of the ``missing`` electrodes in ``matrix`` with spherical-spline weights of the present ones."""
    electrodes = list(spec.channel_names)
    present_idx = sorted(mapping)
    source_names = [names[mapping[t]] for t in present_idx]
    weights = interpolation_matrix(source_names, missing)
    for row, name in enumerate(missing):
        t = electrodes.index(name)
        for col, tp in enumerate(present_idx):
            matrix[t, mapping[tp]] = weights[row, col]
    steps.append(
        {
            "step": "interpolate_channels",
            "detail": f"spherical-spline interpolation of {missing} from {len(mapping)} electrodes (MNE template positions)",
        }
    )


def _plan_bipolar(spec: ModelSpec, electrode_matrix: np.ndarray, steps: list) -> tuple[list[str], np.ndarray]:
    """The model's bipolar channels (differences of electrode pairs) and their matrix over the input."""
    index = {canonical_name(e): k for k, e in enumerate(spec.channel_names)}
    rows, out = [], []
    for a, b in spec.bipolar_pairs:
        rows.append(electrode_matrix[index[canonical_name(a)]] - electrode_matrix[index[canonical_name(b)]])
        out.append(f"{a}-{b}")
    steps.append({"step": "bipolar_derivations", "detail": f"{len(out)} bipolar channels: {out}"})
    return out, np.vstack(rows)


def _plan_positions(spec: ModelSpec, info: SignalInfo, steps: list) -> tuple[list[int], tuple | None]:
    """Channels that have a position, and their positions: the recording's own, else the template's.

    Positions come only from the input's ``info`` or from MNE's template montage
    shipped with MNE, never from the network.
    """
    names = list(info.ch_names)
    own = info.positions or (None,) * len(names)
    template = standard_positions([n for n, p in zip(names, own, strict=True) if p is None])
    keep = [i for i, (n, p) in enumerate(zip(names, own, strict=True)) if p is not None or n in template]
    if not keep:
        meg = [n for n, kind in zip(names, info.sensor_types, strict=True) if kind != "eeg"]
        fix = (
            "pass mne.Epochs whose info holds the sensor positions, or positions= with a numpy array (MEG "
            "sensors cannot be placed by name)"
            if meg
            else "rename channels to standard 10-20/10-05 names, or pass mne.Epochs with a montage set"
        )
        raise AdaptationError(
            f"{spec.key!r} needs sensor positions, and none of the channels {names[:8]} has one, neither in the "
            f"recording's info nor in MNE's 10-05 template; {fix}."
        )
    dropped = [names[i] for i in range(len(names)) if i not in keep]
    if dropped:
        steps.append(
            {"step": "drop_channels", "detail": f"no position in the recording's info or MNE's template for {dropped}"}
        )
    n_own = sum(own[i] is not None for i in keep)
    where = []
    if n_own:
        where.append(f"{n_own} from the recording's info (digitised, head frame)")
    if len(keep) - n_own:
        where.append(f"{len(keep) - n_own} from MNE's 10-05 template by name")
    frame = (
        "the template's native frame (MNI), where its pretraining's position bank lives"
        if spec.positions_frame == "template"
        else "MNE's head frame, as in its pretraining"
    )
    steps.append({"step": "positions", "detail": "sensor positions: " + ", ".join(where) + f"; all in {frame}"})
    return keep, (tuple(own[i] for i in keep) if n_own else None)


def _plan_zeroed(spec: ModelSpec, out_names: list[str], untrained: frozenset[str], steps: list) -> tuple[int, ...]:
    """Output channels kept at zero, as in pretraining: fixed slots whose input weights never saw signal."""
    zeroed = tuple(i for i, name in enumerate(out_names) if canonical_name(name) in untrained)
    if zeroed:
        steps.append(
            {
                "step": "zero_channels",
                "detail": f"{[out_names[i] for i in zeroed]} are zero, as they were "
                f"in {spec.key!r}'s pretraining (their input weights never saw signal)",
            }
        )
    return zeroed


def _plan_reference(
    spec: ModelSpec, options: AdaptationConfig, out_names: list[str], matrix: np.ndarray, steps: list
) -> np.ndarray:
    """The channel matrix followed by the re-referencing the model's pretraining data had (a linear map too)."""
    if spec.reference != "average":
        return matrix
    if options.reference == "as_recorded":
        steps.append(
            {
                "step": "reference",
                "detail": f"kept as recorded (reference='as_recorded'); {spec.key!r} was "
                "pretrained on average-referenced data",
            }
        )
        return matrix
    n = len(out_names)
    if n < 2:
        raise AdaptationError(
            f"{spec.key!r} was pretrained on average-referenced data, and the average of {n} channel is the channel "
            "itself (the window would be zero). Give it more channels, or keep the reference as recorded with "
            "adaptation={'reference': 'as_recorded'}."
        )
    steps.append(
        {
            "step": "reference",
            "detail": f"re-referenced to the average of the {n} channels {spec.key!r} "
            "receives, as its pretraining data were",
        }
    )
    return matrix - matrix.mean(axis=0, keepdims=True)
