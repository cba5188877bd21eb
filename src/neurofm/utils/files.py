"""File helpers shared by the cache, weight loading, results and pretraining runs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["TMP_MARK", "atomic_write", "resolve_path"]

# Part of every temporary file's name: a file carrying it was never completed.
TMP_MARK = ".tmp-"


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` through ``write(tmp)`` on a temporary file of the same folder, then rename it into place.

    Readers see the old file or the whole new one, never a part; concurrent
    writers each get their own temporary file. A failed write (full disk,
    exception) removes the temporary file and leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resolve_path(path: str | Path, base_dir: str | Path) -> Path:
    """``path`` with ``~`` expanded, taken from ``base_dir`` when relative (a config file's folder)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path
