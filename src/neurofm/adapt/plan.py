"""The adaptation plan: every step from the input windows to a backbone's input, decided before any compute."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..configs import AdaptationConfig
from ..data import SignalInfo
from ..exceptions import AdaptationError
from ..montage import head_to_template, standard_positions, template_to_head
from .channels import _check_sensor_types, _plan_channels, _plan_reference, _plan_zeroed, _untrained
from .normalization import _normalize, _plan_normalization
from .timing import _fit_length, _plan_length, _plan_resampling
from .units import _plan_units

if TYPE_CHECKING:
    from ..models.specs import ModelSpec


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
        (:func:`~neurofm.adapt.recording_statistics`) are taken from this.
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
            from scipy.signal import resample_poly  # heavy: scipy.signal only for inputs that need resampling

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
        each recording, :func:`~neurofm.adapt.recording_statistics`), for
        models pretrained on recording-level normalisation.

    Returns
    -------
    plan : AdaptationPlan

    Raises
    ------
    AdaptationError
        When no valid adaptation exists (too few known channels, window too
        short or too long); the message names the fix.
    """
    options = options if isinstance(options, AdaptationConfig) else AdaptationConfig(**(options or {}))
    steps: list[dict[str, Any]] = []
    _check_sensor_types(spec, info)
    untrained = _untrained(spec, options, steps)
    out_names, matrix, out_positions = _plan_channels(spec, info, steps, untrained)
    zeroed = _plan_zeroed(spec, out_names, untrained, steps)
    matrix = _plan_reference(spec, options, out_names, matrix, steps)
    matrix = _plan_units(spec, info, matrix, steps)
    ratio, n_res = _plan_resampling(spec, info, n_times, steps)
    n_target = _plan_length(spec, n_res, len(out_names), steps)
    by_recording = _plan_normalization(spec, options, recordings_known, steps)
    _note_passband(spec, info, steps)
    scale_ref = _plan_scale_channel(spec, steps)
    if scale_ref is not None:
        out_names = out_names + ["SCALE"]
    target = AdaptedSignal(
        sfreq=float(spec.sfreq),
        ch_names=tuple(out_names),
        n_times=n_target,
        sensor_positions=out_positions,
        positions_frame=spec.positions_frame,
    )
    return AdaptationPlan(
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


def _note_passband(spec: ModelSpec, info: SignalInfo, steps: list) -> None:
    """Record the band the model was pretrained on, and what of the windows lies outside it.

    Windows cannot be filtered well (too short for a sharp filter), so
    filtering is left to the continuous recordings. Where the windows' filter
    record is known (``info.passband``: ``mne.Epochs`` carry it, a run's
    preprocessing and the recording's own filters included), the note says
    what, if anything, remains outside the model's band, and only then how to
    remove it.
    """
    if spec.passband is None:
        return
    low, high = spec.passband
    detail = f"the model was pretrained on {low:g}-{high:g} Hz band-passed data; neurofm does not filter windows"
    if info.passband is None:
        detail += (
            f"; neurofm was not told how these windows were filtered: if they were not band-passed to {low:g}-"
            f"{high:g} Hz, filter the continuous recordings before cutting windows (data.preprocessing l_freq: "
            f"{low:g}, h_freq: {high:g} in a run config; raw.filter({low:g}, {high:g}) in Python)"
        )
        steps.append({"step": "passband_note", "detail": detail})
        return
    have_low, have_high = info.passband
    if have_low == 0 and have_high >= info.sfreq / 2 * (1 - 1e-4):
        detail += f"; these windows were not band-passed (they hold 0-{have_high:.4g} Hz)"
    else:
        detail += f"; these windows were already filtered to {have_low:.4g}-{have_high:.4g} Hz"
    if spec.sfreq / 2 < have_high:  # resampling to the model's rate keeps nothing above its Nyquist frequency
        have_high = spec.sfreq / 2
        detail += f", {have_low:.4g}-{have_high:.4g} Hz once resampled to {spec.sfreq:g} Hz"
    # A relative margin: FIF files store the filter edges in float32 (0.3 Hz reads back as 0.30000001).
    below = have_low < low * (1 - 1e-4)
    above = have_high > high * (1 + 1e-4)
    if not (below or above):
        steps.append({"step": "passband_note", "detail": detail + f", within {low:g}-{high:g} Hz: nothing to filter"})
        return
    remains = []
    if below:
        remains.append(f"below {low:g} Hz" + (" (no high-pass)" if have_low == 0 else f" (from {have_low:.4g} Hz)"))
    if above:
        remains.append(f"{high:g}-{have_high:.4g} Hz")
    edges = ", ".join(edge for edge, needed in ((f"l_freq: {low:g}", below), (f"h_freq: {high:g}", above)) if needed)
    call = f"raw.filter({f'{low:g}' if below else None}, {f'{high:g}' if above else None})"
    steps.append(
        {
            "step": "passband_note",
            "detail": f"{detail}; what the model did not see remains {' and '.join(remains)}: to remove it, filter "
            f"the continuous recordings before cutting windows (data.preprocessing {edges} in a run config; "
            f"{call} in Python)",
        }
    )


def _plan_scale_channel(spec: ModelSpec, steps: list) -> float | None:
    """The peak-to-peak reference (in model units) of the derived relative-amplitude channel, if the model takes one."""
    if spec.scale_channel_reference_uv is None:
        return None
    steps.append(
        {
            "step": "derived_channel",
            "detail": f"appended the relative-amplitude channel: peak-to-peak / {spec.scale_channel_reference_uv:g} uV, "
            "clipped to 1, mapped to [-1, 1]",
        }
    )
    return spec.scale_channel_reference_uv * spec.amplitude_scale
