"""Unlabeled recordings streamed as montage-homogeneous batches of model-ready windows.

A corpus is files (any format MNE reads, Muse CSV) found under ``paths``, and
data sources of any neurofm loader (``sources``). Only one recording (or one
source) is in memory at a time (plus at most one batch of windows
per montage waiting to be filled). Each recording is read, preprocessed on its
continuous signal, resampled to the model's rate and cut into windows; the
registry's adaptation plan then keeps the channels the model knows and applies
its unit scaling, exactly as at decoding time. Windows of different montages
never share a batch, so recordings of any montage train together.

The stream is a deterministic function of the seed, the process rank and the
world size: process ``r`` of ``w`` reads the recordings ``r, r + w, ...`` of the
sorted list, in an order reshuffled each pass. A resumed run replays the
stream up to its step without running the model.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mne
import numpy as np

from ..adapt import plan_adaptation
from ..data import SignalInfo
from ..exceptions import AdaptationError, DataValidationError
from ..loaders import load_data, read_muse_csv
from ..preprocess import preprocess_raw
from ..utils.files import resolve_path
from ..utils.logging import logger
from .config import CorpusConfig

__all__ = ["Corpus", "RecordingSummary", "find_recordings"]

# What MNE reads (plus the Muse CSV example format); sidecar files (.event, .json, .tsv) are not recordings.
RECORDING_SUFFIXES = (".edf", ".bdf", ".gdf", ".fif", ".vhdr", ".set", ".cnt", ".mff", ".csv")


def find_recordings(config: CorpusConfig, base_dir: str | Path = ".") -> list[Path]:
    """Every recording file the corpus names, sorted, without the excluded ones."""
    found: list[Path] = []
    for entry in config.paths:
        path = resolve_path(entry, base_dir)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(RECORDING_SUFFIXES))
        else:
            raise DataValidationError(f"The corpus path {path} does not exist.")
    kept = sorted({p.resolve() for p in found if not any(fnmatch.fnmatch(str(p), pat) for pat in config.exclude)})
    if not kept and not config.sources:
        raise DataValidationError(
            f"The corpus is empty: no recordings ({', '.join(RECORDING_SUFFIXES)}) under {config.paths}"
            + (f" after excluding {config.exclude}" if config.exclude else "")
            + ". Point corpus.paths at files or folders of recordings."
        )
    return kept


def _read(path: Path) -> Any:
    if path.suffix.lower() == ".csv":
        return read_muse_csv(path)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return mne.io.read_raw(path, preload=False, verbose=False)


@dataclass(frozen=True)
class RecordingSummary:
    """What the pre-training check learned about one recording (or loader source)."""

    path: Path | str  # a file, or "source:<k>" for the k-th loader source
    sfreq: float
    n_times: int
    ch_names: tuple[str, ...]
    model_ch_names: tuple[str, ...]
    n_windows: int


class Corpus:
    """The recordings of a :class:`CorpusConfig`, prepared for one backbone.

    Parameters
    ----------
    config : CorpusConfig
    spec : ModelSpec
        The registry entry of the backbone being pretrained (rate, channels, units).
    patch_size : int
        Samples per patch at the model's rate.
    base_dir : str | Path
        Folder relative corpus paths are taken from.
    """

    def __init__(self, config: CorpusConfig, spec: Any, patch_size: int, base_dir: str | Path = ".") -> None:
        self.config, self.spec, self.patch_size = config, spec, patch_size
        self.sfreq = float(spec.sfreq)
        self.n_times = int(round(config.window_seconds * self.sfreq))
        self.stride = int(round((config.stride_seconds or config.window_seconds) * self.sfreq))
        if self.n_times % patch_size:
            raise DataValidationError(
                f"A {config.window_seconds:g} s window at {self.sfreq:g} Hz has {self.n_times} samples, not a multiple "
                f"of the patch size {patch_size}. Choose window_seconds as a multiple of "
                f"{patch_size / self.sfreq:g} s, or another patch_size."
            )
        self.base_dir = Path(base_dir)
        self.paths = find_recordings(config, base_dir)
        self._summaries: list[RecordingSummary] | None = None

    def check(self) -> list[RecordingSummary]:
        """Read every header (not the samples) and refuse the corpus before training if it cannot work.

        Raises
        ------
        DataValidationError
            A recording with no channel the model knows, or none long enough
            for one window; the message lists them and the fix.
        """
        if self._summaries is not None:
            return self._summaries
        summaries, unusable, short = [], [], []
        for item in [*self.paths, *(f"source:{k}" for k in range(len(self.config.sources)))]:
            try:
                raw = self._load(item, header_only=True)
            except DataValidationError:
                raise
            except Exception as exc:  # noqa: BLE001 - any reader failure is reported with its file
                raise DataValidationError(f"Could not read the corpus recording {item}: {exc}") from exc
            name = item.name if isinstance(item, Path) else f"{item} ({self.config.sources[int(item[7:])].source})"
            eeg = [raw.ch_names[i] for i in _eeg_picks(raw)]
            if not eeg:
                unusable.append(f"{name} (no EEG channels)")
                continue
            try:
                plan = self._plan(raw, eeg)
            except AdaptationError as exc:
                unusable.append(f"{name} ({exc})")
                continue
            n_windows = self._count_windows(raw)
            if n_windows == 0:
                short.append(f"{name} ({raw.times[-1] if len(raw.times) else 0:.1f} s)")
                continue
            summaries.append(
                RecordingSummary(
                    item, float(raw.info["sfreq"]), len(raw.times), tuple(eeg), tuple(plan.target.ch_names), n_windows
                )
            )
        if unusable:
            raise DataValidationError(
                f"{len(unusable)} corpus recording(s) have no channel {self.spec.display_name} can use: "
                f"{'; '.join(unusable[:5])}. Leave them out with corpus.exclude, or rename their channels to "
                "standard 10-20/10-05 names."
            )
        if not summaries:
            raise DataValidationError(
                f"No corpus recording is as long as one {self.config.window_seconds:g} s window: {'; '.join(short[:5])}."
            )
        if short:
            logger.warning("Skipping %d recording(s) shorter than one window: %s", len(short), ", ".join(short[:5]))
        self._summaries = summaries
        return summaries

    def shard(self, rank: int, world_size: int) -> list[RecordingSummary]:
        """The recordings process ``rank`` of ``world_size`` reads."""
        summaries = self.check()
        mine = summaries[rank::world_size]
        if not mine:
            raise DataValidationError(
                f"The corpus has {len(summaries)} usable recording(s), fewer than the {world_size} processes; "
                "each process needs at least one. Add recordings or start fewer processes."
            )
        return mine

    def _load(self, item: Path | str, header_only: bool = False) -> Any:
        """A file as ``mne.io.Raw`` (samples not read when ``header_only``), or a loader source as ``mne.Epochs``."""
        if isinstance(item, Path):
            raw = _read(item)
            return raw if header_only else raw.load_data(verbose=False)
        source = self.config.sources[int(item.split(":", 1)[1])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            epochs = load_data(source, self.base_dir)
        if not np.isclose(epochs.info["sfreq"], self.sfreq):
            # Better done on the continuous signal: set the source's preprocessing.resample to the model's rate.
            epochs = epochs.copy().resample(self.sfreq, verbose=False)
        length = len(epochs.times)
        if abs(length - self.n_times) > 1:
            raise DataValidationError(
                f"Corpus source {item} ({source.source}) gives windows of {length / self.sfreq:g} s at {self.sfreq:g} Hz; "
                f"the corpus uses {self.config.window_seconds:g} s. Set its tmin/tmax (or window) to "
                f"{self.config.window_seconds:g} s."
            )
        return epochs

    def _plan(self, signal: Any, eeg: list[str]) -> Any:
        return plan_adaptation(self.spec, SignalInfo(self.sfreq, tuple(eeg), ("V",) * len(eeg)), self.n_times)

    def _count_windows(self, signal: Any) -> int:
        if not hasattr(signal, "n_times"):  # epochs of a loader source: one window each
            return len(signal)
        n_model = int(np.floor(signal.n_times / signal.info["sfreq"] * self.sfreq))
        return 0 if n_model < self.n_times else (n_model - self.n_times) // self.stride + 1

    def windows(self, summary: RecordingSummary) -> tuple[np.ndarray, tuple[str, ...]]:
        """All model-ready windows of one recording, float32 ``(n, n_chans, n_times)``, and their channel names."""
        signal = self._load(summary.path)
        signal.pick(list(summary.ch_names))
        if isinstance(summary.path, Path):
            self._preprocess(signal)
            data = signal.get_data()
            starts = np.arange(0, data.shape[1] - self.n_times + 1, self.stride)
            windows = (
                np.stack([data[:, s : s + self.n_times] for s in starts])
                if len(starts)
                else np.empty((0, data.shape[0], self.n_times))
            )
        else:
            # A loader's windows come preprocessed by its own config; only the length is made exact.
            windows = signal.get_data()[..., : self.n_times]
            if windows.shape[-1] < self.n_times:
                windows = np.pad(windows, [(0, 0), (0, 0), (0, self.n_times - windows.shape[-1])])
        if self.config.reject_peak_to_peak is not None and len(windows):
            keep = np.ptp(windows, axis=-1).max(axis=-1) <= self.config.reject_peak_to_peak
            windows = windows[keep]
        plan = self._plan(signal, list(signal.ch_names))
        return plan.apply(windows), tuple(plan.target.ch_names)

    def _preprocess(self, raw: Any) -> None:
        nyquist = raw.info["sfreq"] / 2
        steps = self.config.preprocessing.model_copy(update={"picks": None})
        # A recording cannot carry frequencies at or above its Nyquist rate: skip what does not apply.
        if steps.notch is not None:
            notches = [f for f in np.atleast_1d(steps.notch) if f < nyquist]
            steps = steps.model_copy(update={"notch": notches or None})
        if steps.h_freq is not None and steps.h_freq >= nyquist:
            steps = steps.model_copy(update={"h_freq": None})
        if steps.resample is None and not np.isclose(raw.info["sfreq"], self.sfreq):
            steps = steps.model_copy(update={"resample": self.sfreq})
        preprocess_raw(raw, steps)

    def batches(
        self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[np.ndarray, tuple[str, ...]]]:
        """An endless stream of ``(windows, ch_names)`` batches of one montage each."""
        shard = self.shard(rank, world_size)
        waiting: dict[tuple[str, ...], np.ndarray] = {}
        for epoch in range(1 << 62):
            rng = np.random.default_rng([seed, rank, epoch])
            for index in rng.permutation(len(shard)):
                windows, names = self.windows(shard[index])
                windows = windows[rng.permutation(len(windows))]
                if names in waiting:
                    windows = np.concatenate([waiting.pop(names), windows])
                full = len(windows) // batch_size * batch_size
                for start in range(0, full, batch_size):
                    yield windows[start : start + batch_size], names
                if full < len(windows):
                    waiting[names] = windows[full:]


def _eeg_picks(raw: Any) -> list[int]:
    return list(mne.pick_types(raw.info, eeg=True, exclude=[]))
