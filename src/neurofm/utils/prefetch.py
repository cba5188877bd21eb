"""Compute the next items of a stream in a background thread while the caller works on the current one.

On a GPU the model waits whenever the CPU prepares its input (reading and
filtering recordings, adapting windows) in the same thread; with the next
batches prepared behind it, the GPU works while the CPU prepares. The items
come out in the order the stream makes them, so results do not change.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["prefetched", "to_pinned"]

T = TypeVar("T")

_POLL_SECONDS = 0.1


class _End:
    """The producer's last message: the stream ran out, or failed with ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` with up to ``depth`` of them made ahead in a background thread.

    An error in the stream is raised here, at the item where it happened.
    Closing the iterator (or leaving a ``for`` loop early) stops the thread
    after the item it is making; an endless stream is fine.

    Parameters
    ----------
    items : iterable
        The stream; its iteration runs in the background thread.
    depth : int
        Items made ahead at most (each holds memory: a batch, say).
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(_End(exc))
            return
        put(_End())

    thread = threading.Thread(target=produce, name="neurofm-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def to_pinned(array, device: str):
    """A CPU tensor of ``array``, in page-locked memory when it is bound for a CUDA device.

    From page-locked memory a copy to the GPU runs asynchronously
    (``.to(device, non_blocking=True)``), overlapping the GPU's work.
    """
    import torch  # heavy: embed imports this module without loading torch

    tensor = torch.from_numpy(array)
    return tensor.pin_memory() if device.startswith("cuda") else tensor
