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

The package holds one step of the plan per module: ``plan`` (the plan, what
the backbone receives, and :func:`plan_adaptation`, which strings the steps
together), ``channels`` (selection, interpolation, bipolar derivation,
positions, reference), ``units``, ``timing`` (resampling and length),
``normalization``, and ``statistics`` (each recording's statistics, for
models pretrained on recording-level normalisation). The names other modules
use are importable from ``neurofm.adapt``.
"""

from __future__ import annotations

from .normalization import describe_normalization, uses_recording_statistics
from .plan import AdaptationPlan, AdaptedSignal, plan_adaptation
from .statistics import check_recordings, recording_statistics, window_statistics
from .units import MEG_TYPICAL_STD, working_unit_scale

__all__ = [
    "MEG_TYPICAL_STD",
    "AdaptationPlan",
    "AdaptedSignal",
    "check_recordings",
    "describe_normalization",
    "plan_adaptation",
    "recording_statistics",
    "uses_recording_statistics",
    "window_statistics",
    "working_unit_scale",
]
