"""File helpers shared by the cache, weight loading, results and pretraining runs."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import StorageError

__all__ = ["NO_ROOM_ERRNOS", "TMP_MARK", "atomic_write", "jsonable", "resolve_path"]

# Part of every temporary file's name: a file carrying it was never completed.
TMP_MARK = ".tmp-"
# Full disk, quota, file size limit.
NO_ROOM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` through ``write(tmp)`` on a temporary file of the same folder, then rename it into place.

    Readers see the old file or the whole new one, never a part; concurrent
    writers each get their own temporary file. A failed write (full disk,
    exception) removes the temporary file and leaves ``path`` as it was; a
    full disk raises :class:`~neurofm.exceptions.StorageError`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in NO_ROOM_ERRNOS and not isinstance(exc, StorageError):
            raise StorageError(
                exc.errno, f"No room to write {path} ({exc.strerror or exc}). Free space there or choose another "
                "folder; files written before are intact, and a rerun resumes from them."
            ) from exc
        raise
    return path


def resolve_path(path: str | Path, base_dir: str | Path) -> Path:
    """``path`` with ``~`` expanded, taken from ``base_dir`` when relative (a config file's folder)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def jsonable(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars and arrays become Python values, tuples become lists, keys strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
