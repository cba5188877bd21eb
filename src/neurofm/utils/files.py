"""File helpers shared by the cache, weight loading, results and pretraining runs."""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigError, StorageError
from ..sharing import EntryKey, make_folders

__all__ = [
    "MARKER_NAME",
    "NO_ROOM_ERRNOS",
    "TMP_MARK",
    "atomic_write",
    "claim_folder",
    "current_umask",
    "jsonable",
    "resolve_path",
]

# Part of every temporary file's name: a file carrying it was never completed.
TMP_MARK = ".tmp-"
# Full disk, quota, file size limit.
NO_ROOM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def current_umask() -> int:
    """The process's file-creation mask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it, briefly, for every thread
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def atomic_write(path: str | Path, write: Callable[[Path], Any], *, private: bool = False) -> Path:
    """Write ``path`` through ``write(tmp)`` on a temporary file of the same folder, then rename it into place.

    Readers see the old file or the whole new one, never a part; concurrent
    writers each get their own temporary file. A failed write (full disk,
    exception) removes the temporary file and leaves ``path`` as it was; a
    full disk raises :class:`~neurofm.exceptions.StorageError`.

    The file gets the permissions the user's umask gives new files (results,
    reports and exports are read by colleagues as the user's other files
    are), or, with ``private=True``, the owner's alone (``write`` may still
    widen them, as a shared cache does for its group).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}")
    os.close(fd)
    try:
        if not private:
            # mkstemp makes the file 0600 whatever the umask; set what an ordinary new file would have
            os.chmod(tmp, 0o666 & ~current_umask())
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in NO_ROOM_ERRNOS and not isinstance(exc, StorageError):
            raise StorageError(
                exc.errno,
                f"No room to write {path} ({exc.strerror or exc}). Free space there or choose another "
                "folder; files written before are intact, and a rerun resumes from them.",
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


#: The file that marks a folder as neurofm's own: neurofm writes, replaces and deletes files only in such folders.
MARKER_NAME = ".neurofm"


def claim_folder(folder: str | Path, kind: str, own_names: frozenset[str], key: EntryKey | None = None) -> Path:
    """``folder`` as neurofm's own: made with a marker if new or empty, refused if it holds others' files.

    A config names its output and cache folders, and a config may come from
    someone else: pointed at a home or project folder, a run would overwrite
    ``config.yaml`` or ``meta.json`` there and delete what look like its
    temporary files. A folder is neurofm's when it holds the marker file
    :data:`MARKER_NAME`; a folder without one is taken over only when
    everything in it is a name neurofm writes there (``own_names``, and its
    temporary files), as in folders written before markers existed.

    Parameters
    ----------
    folder : str | Path
        The folder (``~`` is expanded).
    kind : str
        What it is for, as the message names it (``"output_dir"``).
    own_names : frozenset of str
        The names neurofm writes directly inside such a folder (patterns, as
        :func:`fnmatch.fnmatchcase` reads them).
    key : EntryKey | None
        The key of a folder declared shared: a folder neurofm makes then
        follows the umask (the group may write it); ``None`` makes it
        private (:func:`neurofm.sharing.make_folders`).

    Raises
    ------
    ConfigError
        When the folder holds anything else and no marker, or is not a folder.
    """
    folder = Path(folder).expanduser()
    marker = folder / MARKER_NAME
    try:
        info = os.lstat(marker)
    except FileNotFoundError:
        info = None
    if info is not None:
        if stat.S_ISREG(info.st_mode):
            return folder
        raise ConfigError(
            f"{marker} is not a regular file (a link?); neurofm does not take over {folder}. Remove it, "
            "or use a new folder."
        )
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{kind} {folder} is not a folder; give a folder (neurofm makes it if missing).")
    if folder.is_dir():
        foreign = sorted(
            p.name
            for p in folder.iterdir()
            if p.name != MARKER_NAME
            and TMP_MARK not in p.name
            and not any(fnmatch.fnmatchcase(p.name, pattern) for pattern in own_names)
        )
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ConfigError(
                f"{kind} {folder} already holds files neurofm did not write ({shown}) and no {MARKER_NAME} marker. "
                "neurofm writes, replaces and cleans up files only in folders of its own, so that no config can point "
                f"it at your home or a project folder. Use a new or empty folder (e.g. {folder / 'neurofm'}); if "
                f"neurofm did make this one, mark it: touch {marker}"
            )
    make_folders(folder, key)
    if info is None:  # (also when a folder of neurofm's names only is taken over)
        from .. import __version__  # import cycle: neurofm imports utils.files (before it sets __version__)

        text = json.dumps({"neurofm": __version__, "kind": kind}) + "\n"
        atomic_write(marker, lambda tmp: tmp.write_text(text))
    return folder
