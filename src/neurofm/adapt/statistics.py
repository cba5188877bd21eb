"""Each recording's statistics, for models pretrained on recording-level normalisation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import ConfigError, DataValidationError
from ..sources import as_window_source

if TYPE_CHECKING:
    from .plan import AdaptationPlan


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
    unseen = sorted({str(r) for r in recordings if r not in by_recording})
    if unseen:
        raise ConfigError(
            f"recordings {unseen[:5]} were not among the windows fit saw, so their statistics are "
            "unknown; fit on windows of every recording first."
        )
    return np.stack([by_recording[r] for r in recordings])
