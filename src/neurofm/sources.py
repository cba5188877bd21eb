"""Windows that are read in slices: arrays in memory, on disk, or lazy MNE epochs.

A frozen backbone needs only one batch of windows at a time, so neurofm never
has to hold a recording set in memory to embed it. :func:`as_window_source`
wraps what a user hands over (a numpy array or ``np.memmap``, an HDF5
dataset from h5py, a zarr array, or ``mne.Epochs`` read with
``preload=False``) in a :class:`WindowSource` that reads float32 slices.

Sources are picklable *by reference* where the data live in a file (memmap,
HDF5, zarr), so an extraction shard sent to another process or machine carries
a file name and a range, never the windows. :meth:`WindowSource.block` gives
the source of one range; an in-memory block pickles only its own windows.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from typing import Any

import numpy as np

from .exceptions import DataValidationError

__all__ = ["WindowSource", "as_window_source", "is_lazy", "DEFAULT_CHUNK_BYTES"]

# Windows read at once when streaming: large enough to keep the backbone busy,
# small enough that a chunk and its adapted copy stay far below a gigabyte.
DEFAULT_CHUNK_BYTES = 64 * 2**20


class WindowSource:
    """Read-only windows ``(n_windows, n_channels, n_times)`` read in slices.

    Subclasses implement :meth:`_read` (a contiguous range) and, when they can,
    pickle by reference.

    Attributes
    ----------
    shape : tuple of int
        ``(n_windows, n_channels, n_times)``.
    in_memory : bool
        Whether the windows are already an in-memory numpy array.
    """

    in_memory = False
    dtype = np.dtype(np.float32)  # what read() returns

    def __init__(self, shape: tuple[int, ...]):
        if len(shape) != 3:
            raise DataValidationError(
                f"Windows must have 3 dimensions (n_windows, n_channels, n_times), got shape {tuple(shape)}."
            )
        self.shape = tuple(int(s) for s in shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def window_bytes(self) -> int:
        """Bytes of one float32 window."""
        return 4 * self.shape[1] * self.shape[2]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Windows ``start:stop`` as a C-contiguous float32 array (a copy for on-disk sources)."""
        start, stop = max(0, int(start)), min(len(self), int(stop))
        return np.ascontiguousarray(self._read(start, stop), dtype=np.float32)

    def _read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def chunks(self, n_windows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, windows)`` for consecutive chunks of ``n_windows`` windows."""
        for start in range(0, len(self), n_windows):
            yield start, self.read(start, start + n_windows)

    def chunk_size(self, multiple_of: int = 1, max_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
        """Windows per chunk: as many as fit in ``max_bytes``, a multiple of ``multiple_of``."""
        n = max(1, max_bytes // max(1, self.window_bytes))
        return max(multiple_of, (n // multiple_of) * multiple_of)

    def block(self, start: int, stop: int) -> WindowSource:
        """The source of windows ``start:stop`` (cheap to pickle for on-disk data)."""
        return _SlicedSource(self, start, stop)

    def pick_channels(self, keep: list[int]) -> WindowSource:
        """The same windows with only the channels ``keep``, in that order (read lazily)."""
        return _ChannelSubset(self, keep)

    def to_array(self) -> np.ndarray:
        """All windows in memory, float32."""
        if len(self) == 0:
            return np.zeros(self.shape, np.float32)
        return np.concatenate([chunk for _, chunk in self.chunks(self.chunk_size())], axis=0)

    def describe(self) -> str:
        return f"{type(self).__name__}{self.shape}"


class _SlicedSource(WindowSource):
    """A contiguous range of another source."""

    def __init__(self, parent: WindowSource, start: int, stop: int):
        start, stop = max(0, start), min(len(parent), stop)
        super().__init__((max(0, stop - start), *parent.shape[1:]))
        self.parent, self.offset = parent, start

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self.parent.read(self.offset + start, self.offset + stop)

    def block(self, start: int, stop: int) -> WindowSource:
        return self.parent.block(self.offset + start, self.offset + min(stop, len(self)))


class _ChannelSubset(WindowSource):
    """Some channels of another source."""

    def __init__(self, parent: WindowSource, keep: list[int]):
        super().__init__((len(parent), len(keep), parent.shape[2]))
        self.parent, self.keep = parent, list(keep)

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self.parent.read(start, stop)[:, self.keep]

    def block(self, start: int, stop: int) -> WindowSource:
        return _ChannelSubset(self.parent.block(start, stop), self.keep)


class ArraySource(WindowSource):
    """A numpy array in memory."""

    in_memory = True

    def __init__(self, array: np.ndarray):
        super().__init__(array.shape)
        self.array = array

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]

    def block(self, start: int, stop: int) -> WindowSource:
        return ArraySource(self.array[start:stop])  # pickling a view copies only its own windows

    def to_array(self) -> np.ndarray:
        return np.ascontiguousarray(self.array, dtype=np.float32)


class MemmapSource(WindowSource):
    """A C-contiguous array mapped from a file (``np.memmap``).

    Pages read from the file are handed back to the operating system after
    each slice: without that, every window ever read stays mapped into the
    process and its resident memory grows to the size of the file.
    """

    def __init__(self, filename: str, dtype: Any, shape: tuple[int, ...], offset: int):
        super().__init__(shape)
        self.filename, self.dtype, self.offset = str(filename), np.dtype(dtype), int(offset)
        self._array = None

    @classmethod
    def from_memmap(cls, array: np.memmap) -> MemmapSource:
        """Describe ``array`` by file, byte offset, dtype and shape (works for views too)."""
        if not array.flags.c_contiguous:
            raise DataValidationError(
                "This memmap view is not C-contiguous, so it cannot be read in window slices; "
                "pass the memmap itself, a contiguous range of windows, or np.ascontiguousarray(view)."
            )
        base = np.frombuffer(array._mmap, dtype=np.uint8)
        mapped_from = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY
        offset = mapped_from + (array.ctypes.data - base.ctypes.data)
        return cls(array.filename, array.dtype, array.shape, offset)

    def __getstate__(self):
        return {**self.__dict__, "_array": None}  # a file name and an offset travel, never the pages

    def _open(self) -> np.memmap:
        if self._array is None:
            self._array = np.memmap(self.filename, dtype=self.dtype, mode="r", shape=self.shape, offset=self.offset)
        return self._array

    def _read(self, start: int, stop: int) -> np.ndarray:
        array = self._open()
        out = np.array(array[start:stop], dtype=np.float32)
        if hasattr(mmap, "MADV_DONTNEED"):
            array._mmap.madvise(
                mmap.MADV_DONTNEED
            )  # clean file pages: dropped from this process, kept in the page cache
        return out

    def block(self, start: int, stop: int) -> WindowSource:
        start, stop = max(0, start), min(len(self), stop)
        step = self.dtype.itemsize * self.shape[1] * self.shape[2]
        return MemmapSource(self.filename, self.dtype, (stop - start, *self.shape[1:]), self.offset + start * step)

    def describe(self) -> str:
        return f"memmap {self.filename} {self.shape} {self.dtype}"


class HDF5Source(WindowSource):
    """An HDF5 dataset read through h5py, pickled as (file, dataset name)."""

    def __init__(self, filename: str, name: str, shape: tuple[int, ...], start: int = 0):
        super().__init__(shape)
        self.filename, self.name, self.start = str(filename), name, int(start)
        self._dataset = None

    @classmethod
    def from_dataset(cls, dataset) -> HDF5Source:
        return cls(dataset.file.filename, dataset.name, dataset.shape)

    def __getstate__(self):
        return {**self.__dict__, "_dataset": None}

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._dataset is None:
            import h5py  # optional: the [lazy] extra

            self._dataset = h5py.File(self.filename, "r")[self.name]
        return self._dataset[self.start + start : self.start + stop]

    def block(self, start: int, stop: int) -> WindowSource:
        start, stop = max(0, start), min(len(self), stop)
        return HDF5Source(self.filename, self.name, (stop - start, *self.shape[1:]), self.start + start)

    def describe(self) -> str:
        return f"HDF5 {self.filename}:{self.name} {self.shape}"


class ZarrSource(WindowSource):
    """A zarr array (any store zarr opens; it pickles by store reference)."""

    def __init__(self, array, start: int = 0, stop: int | None = None):
        stop = array.shape[0] if stop is None else stop
        super().__init__((stop - start, *array.shape[1:]))
        self.array, self.start = array, int(start)

    def _read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[self.start + start : self.start + stop])

    def block(self, start: int, stop: int) -> WindowSource:
        start, stop = max(0, start), min(len(self), stop)
        return ZarrSource(self.array, self.start + start, self.start + stop)


class EpochsSource(WindowSource):
    """``mne.Epochs`` read from disk on demand (``preload=False``), data channels only, in SI units."""

    def __init__(self, epochs, picks: np.ndarray):
        epochs.drop_bad(verbose="warning")  # MNE knows how many epochs there are only after this pass
        super().__init__((len(epochs), len(picks), len(epochs.times)))
        self.epochs, self.picks = epochs, np.asarray(picks)

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self.epochs[start:stop].get_data(picks=self.picks)

    def block(self, start: int, stop: int) -> WindowSource:
        start, stop = max(0, start), min(len(self), stop)
        return EpochsSource(self.epochs[start:stop], self.picks)


def is_lazy(X: Any) -> bool:
    """Whether ``X`` is read in slices rather than loaded: a memmap, HDF5 or zarr array, or lazy epochs."""
    if isinstance(X, WindowSource):
        return not X.in_memory
    if isinstance(X, np.memmap):
        return getattr(X, "_mmap", None) is not None and X.filename is not None
    module = type(X).__module__
    if module.startswith("h5py") or module.startswith("zarr"):
        return True
    return hasattr(X, "get_data") and hasattr(X, "info") and not getattr(X, "preload", True)


def as_window_source(X: Any, picks: np.ndarray | None = None) -> WindowSource:
    """Wrap windows in a :class:`WindowSource`.

    Parameters
    ----------
    X : ndarray | np.memmap | h5py.Dataset | zarr.Array | mne.Epochs | WindowSource
        The windows, ``(n_windows, n_channels, n_times)``.
    picks : ndarray | None
        Channel indices of lazy ``mne.Epochs`` (default: data channels).

    Returns
    -------
    source : WindowSource
    """
    if isinstance(X, WindowSource):
        return X
    if isinstance(X, np.memmap) and is_lazy(X):
        return MemmapSource.from_memmap(X)
    module = type(X).__module__
    if module.startswith("h5py"):
        return HDF5Source.from_dataset(X)
    if module.startswith("zarr"):
        return ZarrSource(X)
    if hasattr(X, "get_data") and hasattr(X, "info"):
        if picks is None:
            import mne  # heavy: import neurofm does not load mne

            picks = mne.pick_types(X.info, eeg=True, meg=True, seeg=True, ecog=True, exclude="bads")
        return EpochsSource(X, picks)
    return ArraySource(np.asarray(X))
