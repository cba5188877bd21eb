"""What a backbone estimator's ``check_input`` establishes, handed to its ``fit`` so nothing is planned twice.

:class:`PreparedInput` holds the adaptation plan and the weights' identity for
windows of one shape under one set of estimator parameters;
:class:`AdaptedWindows` holds windows already taken through that plan, so that
a cross-validation adapts them once per run instead of once per fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np

from ..adapt import AdaptationPlan
from ..exceptions import ConfigError

__all__ = ["AdaptedWindows", "PreparedInput", "adapt_in_batches"]

#: Windows adapted per call of ``AdaptationPlan.apply``: bounds the float64 working copy.
ADAPT_BATCH = 256


def adapt_in_batches(plan: AdaptationPlan, X: np.ndarray, statistics: np.ndarray | None = None) -> np.ndarray:
    """``plan.apply`` over ``X`` a batch at a time (``statistics``: each window's recording's, or ``None``)."""
    return np.concatenate(
        [
            plan.apply(
                X[start : start + ADAPT_BATCH], None if statistics is None else statistics[start : start + ADAPT_BATCH]
            )
            for start in range(0, len(X), ADAPT_BATCH)
        ]
    )


def estimator_settings(estimator: Any, ignore: tuple[str, ...] = ()) -> str:
    """A digest of an estimator's parameters (those in ``ignore`` left out): what a check was made under."""
    params = {name: value for name, value in estimator.get_params(deep=False).items() if name not in ignore}
    return joblib.hash(params)


@dataclass(frozen=True)
class PreparedInput:
    """The checked plan for windows of one shape, returned by ``check_input`` and reused by ``fit``.

    Parameters
    ----------
    plan : AdaptationPlan
        How the windows reach the backbone.
    weights : dict
        The identity of the starting weights (file digests, or a random
        initialisation's seed), as :meth:`identify_weights` gives it.
    settings : str
        Digest of the estimator parameters the checks were made under.
    device_here : bool
        Whether the device was checked in this process (``False``: the
        process that computes checks it).
    recordings_known : bool
        Whether the plan was made for windows whose recordings are given.
    recordings_matter : bool
        Whether knowing them changes the plan (recording-level normalisation).
    weights_source : WeightsSource | None
        Where the weights were found.
    """

    plan: AdaptationPlan
    weights: dict[str, Any]
    settings: str
    device_here: bool = True
    recordings_known: bool = False
    recordings_matter: bool = False
    weights_source: Any = None

    def check_matches(self, settings: str, shape: tuple[int, ...], recordings_known: bool) -> None:
        """Refuse to stand in for a check of other parameters, another window shape or other recording knowledge.

        Raises
        ------
        ConfigError
            Naming what differs; the fix is to call ``check_input`` again.
        """
        expected = (len(self.plan.source.ch_names), self.plan.n_times_in)
        if tuple(shape[1:]) != expected:
            raise ConfigError(
                f"prepared was checked for windows of shape (n, {expected[0]}, {expected[1]}), but these are "
                f"{tuple(shape)}; call check_input on these windows and pass its result."
            )
        if settings != self.settings:
            raise ConfigError(
                "prepared was checked under other estimator parameters (set_params or another estimator since); "
                "call check_input again and pass its result."
            )
        if recordings_known != self.recordings_known and self.recordings_matter:
            raise ConfigError(
                f"prepared was checked with recordings_known={self.recordings_known}, but these windows come "
                f"{'with' if recordings_known else 'without'} recordings, which changes {self.plan.model_key!r}'s "
                f"normalisation; call check_input(..., recordings_known={recordings_known}) and pass its result."
            )

    def adapt(self, X: np.ndarray) -> AdaptedWindows:
        """``X`` taken through the plan once, for every fit and prediction that slices it.

        Only for plans without recording statistics: those depend on which
        windows a fit sees, so they are taken per fit.

        Raises
        ------
        ConfigError
            When the plan normalises with each recording's statistics.
        """
        if self.plan.recording_statistics:
            raise ConfigError(
                "this plan normalises each window with its recording's statistics over the windows a fit sees; "
                "pass the raw windows (and recordings) to fit instead."
            )
        return AdaptedWindows(adapt_in_batches(self.plan, np.asarray(X)), self.plan)


class AdaptedWindows:
    """Windows already adapted by ``plan`` (float32 model input); slicing keeps the plan.

    What :meth:`PreparedInput.adapt` returns; the fine-tuner's ``fit``,
    ``predict`` and ``predict_proba`` take it in place of raw windows and do
    not adapt again.

    Parameters
    ----------
    data : ndarray, shape (n_windows, n_channels_out, n_times_out)
        The adapted windows.
    plan : AdaptationPlan
        The plan they went through.
    """

    def __init__(self, data: np.ndarray, plan: AdaptationPlan):
        self.data = data
        self.plan = plan

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Any) -> AdaptedWindows:
        return AdaptedWindows(self.data[index], self.plan)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the raw windows they came from (what ``check_input`` is given)."""
        return (len(self.data), len(self.plan.source.ch_names), self.plan.n_times_in)

    def check_plan(self, plan: AdaptationPlan) -> np.ndarray:
        """The adapted windows, if they went through ``plan``.

        Raises
        ------
        ConfigError
            When they were adapted for another plan.
        """
        if self.plan is not plan and self.plan.describe() != plan.describe():
            raise ConfigError(
                f"these windows were adapted for {self.plan.model_key!r} with another plan than this estimator's; "
                "pass the raw windows, or windows adapted by the PreparedInput this estimator was fitted with."
            )
        return self.data
