"""Input adaptation: bring any window to what a backbone was trained on.

An :class:`AdaptationPlan` is computed from a model's spec and the signal
info of the input before any compute, so an impossible adaptation is an error
at once. It records every step it takes; :meth:`AdaptationPlan.apply` then
runs the same steps on each batch. Channel selection, reordering, bipolar
derivation, interpolation and unit conversion are all linear maps over
channels, so they compose into one matrix applied first (which also makes the
later steps cheaper on fewer channels). Then come resampling, cropping or
padding to the patch multiple, the model's amplitude normalisation, and
derived channels computed from the normalised window.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import UNIT_TO_SI, SignalInfo, si_base
from .exceptions import AdaptationError, DataValidationError
from .montage import (
    canonical_name,
    head_to_template,
    interpolation_matrix,
    match_channels,
    standard_positions,
    template_to_head,
)

if TYPE_CHECKING:
    from .configs import AdaptationConfig
    from .models.specs import ModelSpec

__all__ = ["AdaptationPlan", "AdaptedSignal", "plan_adaptation", "working_unit_scale"]

# Every backbone here was pretrained on EEG in microvolts, so every input becomes microvolts, or
# "EEG-equivalent microvolts" for MEG, before the model's own scaling. The MEG rule makes a
# typical sensor as large as a typical EEG channel of the same brain: in the MNE sample
# recording (Neuromag Vectorview after SSS, 1 s, band-passed 1-40 Hz) the median standard
# deviation is 16.24 uV over 60 EEG channels, 188.6 fT over 102 magnetometers and 36.14 fT/cm
# over 204 gradiometers; so 1 fT counts as 0.0861 uV and 1 fT/cm as 0.449 uV.
MEG_TYPICAL_STD = {"eeg_uV": 16.24, "mag_fT": 188.6, "grad_fT_per_cm": 36.14}
_WORKING_UNIT = {
    "V": ("uV", 1e6),
    "T": ("EEG-equivalent uV", 1e15 * MEG_TYPICAL_STD["eeg_uV"] / MEG_TYPICAL_STD["mag_fT"]),
    "T/m": ("EEG-equivalent uV", 1e13 * MEG_TYPICAL_STD["eeg_uV"] / MEG_TYPICAL_STD["grad_fT_per_cm"]),
}


def working_unit_scale(units: tuple[str, ...] | list[str]) -> np.ndarray:
    """Per channel, the factor that takes its unit to microvolts (EEG) or EEG-equivalent microvolts (MEG).

    One rule for every model, backbones and classical baselines alike, so
    that EEG, magnetometers and gradiometers enter with comparable amplitudes.
    """
    return np.array([UNIT_TO_SI[u] * _WORKING_UNIT[si_base(u)][1] for u in units])


@dataclass(frozen=True)
class AdaptedSignal:
    """The signal as the backbone sees it after adaptation."""

    sfreq: float
    ch_names: tuple[str, ...]
    n_times: int
    sensor_positions: tuple[tuple[float, float, float] | None, ...] | None = None
    positions_frame: str = "head"

    @property
    def n_chans(self) -> int:
        return len(self.ch_names)

    @functools.cached_property
    def positions(self) -> dict[str, tuple[float, float, float]]:
        """Positions (metres) of the channels that have one, all in the frame the model was pretrained in.

        A channel's own position (``sensor_positions``, from the recording's
        ``info``, head frame) wins; an electrode without one gets MNE's
        template position of its name. ``positions_frame`` says where they
        all end up: ``"head"`` (MNE's head frame) or ``"template"`` (the
        template's native frame, where REVE's position bank lives), so that
        own and template positions are never mixed across frames.
        """
        own = {
            name: np.asarray(pos, dtype=np.float64)
            for name, pos in zip(self.ch_names, self.sensor_positions or (), strict=False)
            if pos is not None
        }
        template = {name: pos for name, pos in standard_positions(self.ch_names).items() if name not in own}
        if self.positions_frame == "head":
            moved = {**own, **{name: template_to_head(pos) for name, pos in template.items()}}
        else:
            moved = {**template, **{name: head_to_template(pos) for name, pos in own.items()}}
        return {name: tuple(map(float, moved[name])) for name in self.ch_names if name in moved}

    def chs_info(self) -> list[dict[str, Any]]:
        """braindecode-style channel descriptions with template positions."""
        out = []
        for name in self.ch_names:
            loc = np.zeros(12)
            if name in self.positions:
                loc[:3] = self.positions[name]
            out.append({"ch_name": name, "loc": loc, "kind": "eeg"})
        return out


@dataclass
class AdaptationPlan:
    """Steps that take input windows to a backbone's expected input.

    Attributes
    ----------
    model_key : str
        The registry key the plan was made for.
    source : SignalInfo
        What the input windows are.
    n_times_in : int
        Samples per input window.
    target : AdaptedSignal
        What the backbone receives.
    steps : list of dict
        One record per adaptation taken: ``{"step": ..., "detail": ...}``.
    """

    model_key: str
    source: SignalInfo
    n_times_in: int
    target: AdaptedSignal
    steps: list[dict[str, Any]]
    channel_matrix: np.ndarray
    resample_ratio: tuple[int, int] | None
    n_times_resampled: int
    normalization: str
    scale_channel_reference: float | None
    zeroed_channels: tuple[int, ...] = ()
    recording_statistics: bool = False

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description of everything :meth:`apply` and the model receive; part of the cache key.

        Keys that only some plans need (zeroed channels, recording
        statistics, positions) appear only there, so that other models keep
        the keys, and the cached embeddings, they had.
        """
        target: dict[str, Any] = {
            "sfreq": self.target.sfreq,
            "ch_names": list(self.target.ch_names),
            "n_times": self.target.n_times,
        }
        if any(step["step"] == "positions" for step in self.steps):  # models placed by position
            positions = [self.target.positions.get(name) for name in self.target.ch_names]
            target["positions_sha"] = hashlib.blake2b(repr(positions).encode(), digest_size=12).hexdigest()
        described = {
            "model_key": self.model_key,
            "source": self.source.to_dict(),
            "n_times_in": self.n_times_in,
            "target": target,
            "steps": self.steps,
            "channel_matrix_sha": _array_digest(self.channel_matrix),
        }
        if self.zeroed_channels:
            described["zeroed_channels"] = list(self.zeroed_channels)
        if self.recording_statistics:
            described["recording_statistics"] = True
        return described

    def adapt_signal(self, X: np.ndarray) -> np.ndarray:
        """The linear steps (channels, units, reference, resampling, length) of a batch, in float64.

        What the model's normalisation then works on: recording statistics
        (:func:`recording_statistics`) are taken from this.
        """
        if X.shape[1:] != (len(self.source.ch_names), self.n_times_in):
            raise AdaptationError(
                f"windows of shape {X.shape[1:]} do not match the plan's ({len(self.source.ch_names)}, {self.n_times_in})."
            )
        out = X.astype(np.float64, copy=False)
        matrix = self.channel_matrix
        if matrix.shape[0] != matrix.shape[1] or not np.array_equal(matrix, np.eye(len(matrix))):
            # Identity maps (channels already in the model's order) are skipped: the product is exact anyway.
            out = np.einsum("oc,nct->not", matrix, out, optimize=True)
        if self.resample_ratio is not None:
            from scipy.signal import resample_poly

            up, down = self.resample_ratio
            out = resample_poly(out, up, down, axis=-1)
        return _fit_length(out, self.target.n_times)

    def apply(self, X: np.ndarray, statistics: np.ndarray | None = None) -> np.ndarray:
        """Adapt a batch of windows ``(n, n_channels_in, n_times_in)`` to float32 model input.

        ``statistics`` (``(n, 2, n_channels_out)``: each window's recording's
        mean and standard deviation per channel) replaces the window's own in
        a plan with :attr:`recording_statistics`.
        """
        out = self.adapt_signal(X)
        relative_amplitude = None
        if self.scale_channel_reference is not None:
            # Normalisation erases the window's amplitude; keep it as a derived channel.
            ptp = out.max(axis=(1, 2)) - out.min(axis=(1, 2))
            relative_amplitude = 2.0 * np.minimum(ptp / self.scale_channel_reference, 1.0) - 1.0
        out = _normalize(out, self.normalization, statistics if self.recording_statistics else None)
        if self.zeroed_channels:  # after normalisation, as in pretraining: these inputs were exactly zero
            out[:, list(self.zeroed_channels)] = 0.0
        if relative_amplitude is not None:
            constant = np.broadcast_to(relative_amplitude[:, None, None], (out.shape[0], 1, out.shape[2]))
            out = np.concatenate([out, constant], axis=1)
        return np.ascontiguousarray(out, dtype=np.float32)


def _array_digest(arr: np.ndarray) -> str:
    return hashlib.blake2b(np.round(arr, 10).astype(np.float64).tobytes(), digest_size=12).hexdigest()


def _fit_length(X: np.ndarray, n_times: int) -> np.ndarray:
    have = X.shape[-1]
    if have == n_times:
        return X
    if have > n_times:
        return X[..., :n_times]
    pad = np.zeros(X.shape[:-1] + (n_times - have,), dtype=X.dtype)
    return np.concatenate([X, pad], axis=-1)


def _normalize(X: np.ndarray, how: str, statistics: np.ndarray | None = None) -> np.ndarray:
    """``X`` normalised as ``how`` says; z-scores use ``statistics`` (n, 2, channels) instead of each window's."""
    eps = 1e-8
    if how == "none":
        return X
    if how == "minmax_window":
        lo = X.min(axis=(1, 2), keepdims=True)
        hi = X.max(axis=(1, 2), keepdims=True)
        return 2.0 * (X - lo) / np.maximum(hi - lo, eps) - 1.0
    if how in ("zscore_channel", "zscore_channel_clip15"):
        if statistics is None:
            mean, std = X.mean(axis=-1, keepdims=True), X.std(axis=-1, keepdims=True)
        else:
            mean, std = statistics[:, 0, :, None], statistics[:, 1, :, None]
        z = (X - mean) / np.maximum(std, eps)
        return np.clip(z, -15.0, 15.0) if how == "zscore_channel_clip15" else z
    if how == "p95_channel":
        q = np.quantile(np.abs(X), 0.95, axis=-1, keepdims=True)
        return X / np.maximum(q, eps)
    raise AssertionError(how)  # pragma: no cover - specs use the names above


_NORMALIZATION_DESCRIPTIONS = {
    "none": None,
    "minmax_window": "min-max scaling of each window to [-1, 1]",
    "zscore_channel": "per-channel z-score over each window",
    "zscore_channel_clip15": "per-channel z-score over each window, clipped to +/-15",
    "p95_channel": "each channel divided by the 95th percentile of its absolute amplitude",
}


def describe_normalization(how: str, by_recording: bool = False) -> str | None:
    """In words, the normalisation ``how`` (``None`` for none), with each recording's statistics if ``by_recording``."""
    text = _NORMALIZATION_DESCRIPTIONS[how]
    if by_recording and text is not None:
        text = text.replace("over each window", "with each recording's mean and standard deviation")
    return text


def plan_adaptation(
    spec: ModelSpec,
    info: SignalInfo,
    n_times: int,
    options: AdaptationConfig | dict | None = None,
    *,
    recordings_known: bool = False,
) -> AdaptationPlan:
    """Plan how windows described by ``info`` reach the backbone of ``spec``.

    Parameters
    ----------
    spec : ModelSpec
        The registry entry of the backbone.
    info : SignalInfo
        Sampling rate, channel names and units of the input windows.
    n_times : int
        Samples per input window.
    options : AdaptationConfig | dict | None
        Which of the pretraining's input conventions to reproduce (default:
        all of them, see :class:`~neurofm.configs.AdaptationConfig`).
    recordings_known : bool
        Whether each window's recording will be known (with statistics of
        each recording, :func:`recording_statistics`), for models pretrained
        on recording-level normalisation.

    Returns
    -------
    plan : AdaptationPlan

    Raises
    ------
    AdaptationError
        When no valid adaptation exists (too few known channels, window too
        short or too long); the message names the fix.
    """
    from .configs import AdaptationConfig

    options = options if isinstance(options, AdaptationConfig) else AdaptationConfig(**(options or {}))
    steps: list[dict[str, Any]] = []
    _check_sensor_types(spec, info)
    untrained = _untrained(spec, options, steps)
    out_names, matrix, out_positions = _plan_channels(spec, info, steps, untrained)
    zeroed = tuple(i for i, name in enumerate(out_names) if canonical_name(name) in untrained)
    if zeroed:
        steps.append(
            {
                "step": "zero_channels",
                "detail": f"{[out_names[i] for i in zeroed]} are zero, as they were "
                f"in {spec.key!r}'s pretraining (their input weights never saw signal)",
            }
        )
    matrix = _plan_reference(spec, options, out_names, matrix, steps)

    # Units: input -> working unit (uV / fT) -> the model's own scaling, folded into the matrix.
    matrix = matrix * working_unit_scale(info.units)[None, :] * spec.amplitude_scale
    working = sorted({_WORKING_UNIT[si_base(u)][0] for u in info.units})
    unit_detail = f"{'/'.join(sorted(set(info.units)))} -> {'/'.join(working)}"
    if {"T", "T/m"} & {si_base(u) for u in info.units}:
        unit_detail += (
            f" (1 fT = {_WORKING_UNIT['T'][1] / 1e15:.4g} uV, 1 fT/cm = {_WORKING_UNIT['T/m'][1] / 1e13:.4g} uV: "
            "typical MEG and EEG amplitudes of the MNE sample recording made equal)"
        )
    if spec.amplitude_scale != 1.0:
        unit_detail += f", multiplied by {spec.amplitude_scale:g}"
    steps.append({"step": "units", "detail": unit_detail})

    ratio = None
    n_res = n_times
    if not np.isclose(info.sfreq, spec.sfreq):
        frac = Fraction(spec.sfreq / info.sfreq).limit_denominator(1000)
        ratio = (frac.numerator, frac.denominator)
        n_res = int(np.ceil(n_times * frac.numerator / frac.denominator))
        steps.append(
            {
                "step": "resample",
                "detail": f"{info.sfreq:g} Hz -> {spec.sfreq:g} Hz (polyphase, up {ratio[0]}, down {ratio[1]})",
            }
        )

    n_target = _plan_length(spec, n_res, len(out_names), steps)

    by_recording = False
    if spec.normalization != "none":
        by_recording = recordings_known and uses_recording_statistics(spec, options)
        detail = describe_normalization(spec.normalization, by_recording)
        if spec.normalization_statistics == "recording":
            if by_recording:
                detail += ", as in pretraining (each recording's statistics over all its windows, after resampling)"
            elif options.normalization_statistics == "window":
                detail += " (normalization_statistics='window'; pretraining used each recording's statistics)"
            else:
                detail += (
                    "; pretraining used each recording's statistics, but the windows' recordings are not known "
                    "(cut the windows from their recordings with neurofm, or give the sample metadata a "
                    "'recording' column)"
                )
        steps.append({"step": "normalize", "detail": detail})
    if spec.passband is not None:
        steps.append(
            {
                "step": "passband_note",
                "detail": f"the model was pretrained on {spec.passband[0]:g}-{spec.passband[1]:g} Hz band-passed data; "
                "windows are not filtered here (filter continuous recordings before epoching)",
            }
        )
    scale_ref = None
    if spec.scale_channel_reference_uv is not None:
        scale_ref = spec.scale_channel_reference_uv * spec.amplitude_scale
        steps.append(
            {
                "step": "derived_channel",
                "detail": f"appended the relative-amplitude channel: peak-to-peak / {spec.scale_channel_reference_uv:g} uV, "
                "clipped to 1, mapped to [-1, 1]",
            }
        )
        out_names = out_names + ["SCALE"]

    target = AdaptedSignal(
        sfreq=float(spec.sfreq),
        ch_names=tuple(out_names),
        n_times=n_target,
        sensor_positions=out_positions,
        positions_frame=spec.positions_frame,
    )
    plan = AdaptationPlan(
        model_key=spec.key,
        source=info,
        n_times_in=n_times,
        target=target,
        steps=steps,
        channel_matrix=matrix,
        resample_ratio=ratio,
        n_times_resampled=n_res,
        normalization=spec.normalization,
        scale_channel_reference=scale_ref,
        zeroed_channels=zeroed,
        recording_statistics=by_recording,
    )
    return plan


def uses_recording_statistics(spec: ModelSpec, options: AdaptationConfig) -> bool:
    """Whether windows of known recordings are normalised with their recording's statistics (as in pretraining)."""
    return (
        spec.normalization != "none"
        and spec.normalization_statistics == "recording"
        and options.normalization_statistics == "pretraining"
    )


def recording_statistics(plan: AdaptationPlan, source: Any, recordings: Any) -> dict[Any, np.ndarray]:
    """Each recording's mean and standard deviation per channel, over all its windows, as the model sees them.

    Taken after the plan's linear steps (channels, units, reference,
    resampling), where the model's normalisation applies them. Windows are
    read chunk by chunk (``source`` may live on disk); statistics of chunks
    are merged exactly (Chan et al.'s pairwise update), so the result does not
    depend on the chunk size beyond float64 rounding.

    Parameters
    ----------
    plan : AdaptationPlan
        The adaptation of the windows.
    source : array-like or WindowSource
        The windows, ``(n, channels, times)``.
    recordings : sequence
        One recording id per window.

    Returns
    -------
    statistics : dict
        Recording id -> array ``(2, n_channels_out)``: means, then standard deviations.
    """
    from .sources import as_window_source

    source = as_window_source(source)
    recordings = np.asarray(recordings, dtype=object)
    totals: dict[Any, list] = {}  # id -> [count, mean, sum of squared deviations]
    for start, windows in source.chunks(source.chunk_size()):
        adapted = plan.adapt_signal(np.asarray(windows))
        for recording in dict.fromkeys(recordings[start : start + len(windows)]):
            rows = adapted[recordings[start : start + len(windows)] == recording]
            values = rows.transpose(1, 0, 2).reshape(rows.shape[1], -1)
            n, mean = values.shape[1], values.mean(axis=1)
            m2 = ((values - mean[:, None]) ** 2).sum(axis=1)
            if recording not in totals:
                totals[recording] = [n, mean, m2]
                continue
            count, held_mean, held_m2 = totals[recording]
            delta = mean - held_mean
            total = count + n
            totals[recording] = [total, held_mean + delta * n / total, held_m2 + m2 + delta**2 * count * n / total]
    return {recording: np.stack([mean, np.sqrt(m2 / count)]) for recording, (count, mean, m2) in totals.items()}


def check_recordings(recordings: Any, n_windows: int) -> None:
    """Refuse recording ids that are not one per window.

    Raises
    ------
    DataValidationError
        When ``recordings`` is given with another length than the windows.
    """
    if recordings is not None and len(recordings) != n_windows:
        raise DataValidationError(
            f"recordings holds {len(recordings)} ids for {n_windows} windows; give one recording id per window."
        )


def window_statistics(by_recording: dict[Any, np.ndarray], recordings: Any) -> np.ndarray:
    """Each window's recording's statistics, ``(n_windows, 2, n_channels)``, from :func:`recording_statistics`.

    Raises
    ------
    ConfigError
        When a window's recording has no statistics (it was not among the windows they were taken from).
    """
    from .exceptions import ConfigError

    unseen = sorted({str(r) for r in recordings if r not in by_recording})
    if unseen:
        raise ConfigError(
            f"recordings {unseen[:5]} were not among the windows fit saw, so their statistics are "
            "unknown; fit on windows of every recording first."
        )
    return np.stack([by_recording[r] for r in recordings])


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


def _check_sensor_types(spec: ModelSpec, info: SignalInfo) -> None:
    """Refuse sensors the backbone cannot take, naming the backbones that can."""
    from .models.specs import MODEL_SPECS

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


def _plan_channels(
    spec: ModelSpec, info: SignalInfo, steps: list, untrained: frozenset[str] = frozenset()
) -> tuple[list[str], np.ndarray, tuple | None]:
    """Output channel names, the channel matrix, and the output channels' own positions (if any).

    ``untrained`` (canonical names): vocabulary entries that are never fed, and
    fixed slots that are zeroed later, so never interpolated.
    """
    names = list(info.ch_names)
    n_in = len(names)
    mode = spec.channel_mode

    if mode == "any":
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

    if mode == "vocabulary":
        mapping = match_channels(names, spec.channel_names)  # vocab index -> input index
        never_trained = sorted(
            names[i] for t, i in mapping.items() if canonical_name(spec.channel_names[t]) in untrained
        )
        mapping = {t: i for t, i in mapping.items() if canonical_name(spec.channel_names[t]) not in untrained}
        if never_trained:
            detail = (
                f"{never_trained}: in {spec.key!r}'s vocabulary but never trained in its pretraining (their "
                "embeddings are random); untrained_channels='feed' feeds them anyway"
            )
            steps.append({"step": "drop_channels", "detail": detail})
            warnings.warn(f"{spec.key!r} does not receive {detail}.", UserWarning, stacklevel=3)
        if not mapping and never_trained:
            raise AdaptationError(
                f"{spec.key!r} never trained on any of the input channels it knows ({never_trained}); their embeddings "
                "are random. Record channels it was trained on, feed these anyway with "
                "adaptation={'untrained_channels': 'feed'}, or choose a model that takes any montage (cbramod, reve)."
            )
        if not mapping:
            raise AdaptationError(
                f"None of the input channels {names[:8]}{'...' if n_in > 8 else ''} is in {spec.key!r}'s channel "
                f"vocabulary ({len(spec.channel_names)} names such as {list(spec.channel_names[:6])}); "
                "rename the channels to standard 10-20 names."
            )
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

    # fixed layouts (fixed channel list) and bipolar montages (pairs of electrodes)
    electrodes = list(spec.channel_names)
    mapping = match_channels(names, electrodes)
    # Slots zeroed later need no signal: they are neither missing nor interpolated.
    mapping = {t: i for t, i in mapping.items() if canonical_name(electrodes[t]) not in untrained}
    missing = [
        electrodes[t]
        for t in range(len(electrodes))
        if t not in mapping and canonical_name(electrodes[t]) not in untrained
    ]
    n_present = len(mapping)
    electrode_matrix = np.zeros((len(electrodes), n_in))
    for t, i in mapping.items():
        electrode_matrix[t, i] = 1.0
    if missing:
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
        present_idx = sorted(mapping)
        source_names = [names[mapping[t]] for t in present_idx]
        weights = interpolation_matrix(source_names, missing)
        for row, name in enumerate(missing):
            t = electrodes.index(name)
            for col, tp in enumerate(present_idx):
                electrode_matrix[t, mapping[tp]] = weights[row, col]
        steps.append(
            {
                "step": "interpolate_channels",
                "detail": f"spherical-spline interpolation of {missing} from {n_present} electrodes (MNE template positions)",
            }
        )
    used = set(mapping.values())
    dropped = [names[i] for i in range(n_in) if i not in used]
    if dropped:
        steps.append({"step": "drop_channels", "detail": f"not used by {spec.key!r}: {dropped}"})

    if mode == "fixed":
        steps.append(
            {"step": "reorder_channels", "detail": f"{len(electrodes)} channels in {spec.key!r}'s fixed order"}
        )
        return electrodes, electrode_matrix, None
    # bipolar
    index = {canonical_name(e): k for k, e in enumerate(electrodes)}
    rows, out = [], []
    for a, b in spec.bipolar_pairs:
        rows.append(electrode_matrix[index[canonical_name(a)]] - electrode_matrix[index[canonical_name(b)]])
        out.append(f"{a}-{b}")
    steps.append({"step": "bipolar_derivations", "detail": f"{len(out)} bipolar channels: {out}"})
    return out, np.vstack(rows), None


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


def _plan_length(spec: ModelSpec, n_res: int, n_chans: int, steps: list) -> int:
    patch = spec.patch_size
    if patch is None:
        if n_res < spec.min_times:
            raise AdaptationError(
                f"{spec.key!r} needs windows of at least {spec.min_times / spec.sfreq:g} s "
                f"({spec.min_times} samples at {spec.sfreq:g} Hz), got {n_res} samples after resampling; use longer windows."
            )
        return n_res
    n_patches, remainder = divmod(n_res, patch)
    if n_patches == 0:
        raise AdaptationError(
            f"{spec.key!r} works on patches of {patch} samples ({patch / spec.sfreq:g} s at {spec.sfreq:g} Hz) but the "
            f"window has {n_res} samples after resampling; use windows of at least {patch / spec.sfreq:g} s."
        )
    target = n_patches * patch
    if remainder:
        if remainder >= patch / 2:
            target += patch
            steps.append(
                {
                    "step": "pad",
                    "detail": f"zero-padded {n_res} -> {target} samples (multiple of the {patch}-sample patch)",
                }
            )
        else:
            steps.append(
                {
                    "step": "crop",
                    "detail": f"cropped {n_res} -> {target} samples (multiple of the {patch}-sample patch)",
                }
            )
    n_patches = target // patch
    if spec.max_patches is not None and n_patches > spec.max_patches:
        raise AdaptationError(
            f"{spec.key!r} accepts at most {spec.max_patches} patches per channel "
            f"({spec.max_patches * patch / spec.sfreq:g} s at {spec.sfreq:g} Hz); the window has {n_patches}. "
            "Cut the recording into shorter windows."
        )
    if spec.max_tokens is not None and n_patches * n_chans > spec.max_tokens:
        raise AdaptationError(
            f"{spec.key!r} accepts at most {spec.max_tokens} tokens (channels x patches); "
            f"{n_chans} channels x {n_patches} patches = {n_chans * n_patches}. Use shorter windows or fewer channels."
        )
    return target
