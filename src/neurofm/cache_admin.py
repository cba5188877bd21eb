"""What a neurofm cache folder holds, and freeing its space: ``neurofm cache info`` and ``neurofm cache prune``.

A cache folder (``cache_dir``, default ``~/.cache/neurofm``) holds::

    embeddings/v2/<fingerprint>/       manifest.json, pack-*.npz, corrupt-pack-*.npz   (one backbone setting)
    weight-digests/<hash>.txt          a remembered digest of one weights file
    checkpoints/<model>-<mode>-<hex>/  config.json, best/last/epoch-NNN.safetensors    (fine-tuning, no output_dir)
    submitit-<uid>/, scratch-<uid>/, joblib/, dask/, ray/                              (execution engines' scratch)

Reading a cache runs no code from it: names and sizes come from ``lstat``,
descriptions from JSON files (``manifest.json``, a checkpoint's
``config.json``), entry counts from the packs' checked headers. Links are
never followed.

Pruning deletes only what neurofm wrote: regular files with the names neurofm
gives them, in the folders of the layout above, owned by this user; then the
folders it emptied. A link, a file of another user or of another name, and
anything under a folder others can write (unless the cache is declared
shared) is reported and left alone. Engines' scratch is reported, never
pruned (a running job may be using it). Files are removed through file
descriptors of their folders opened without following links, so no folder
swapped for a link meanwhile redirects a deletion.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import stat
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .cache import _FORMAT_VERSION, _read_member, _UnusablePack
from .exceptions import ConfigError
from .experiment import CACHE_NAMES
from .sharing import SharedFolderError, check_trusted_folder
from .utils.files import MARKER_NAME, TMP_MARK
from .utils.logging import logger

__all__ = ["INFO_COLUMNS", "cache_info", "format_bytes", "prune_cache"]

#: The columns of :func:`cache_info` and :func:`prune_cache`.
INFO_COLUMNS = [
    "Kind",
    "Model",
    "Weights",
    "Adaptation",
    "Entries",
    "Bytes",
    "Size",
    "LastUsed",
    "Path",
    "Note",
]

_FINGERPRINT = re.compile(r"[0-9a-f]{32}")
_PACK = re.compile(r"(corrupt-)?pack-([0-9a-f]{16}-)?[0-9a-f]{32}\.npz")
_DIGEST = re.compile(r"[0-9a-f]{32}(-[0-9a-f]{16})?\.txt")
_CHECKPOINT = re.compile(r"(?P<model>.+)-(?P<mode>[a-z0-9_]+)-[0-9a-f]{12}")
_CHECKPOINT_FILE = re.compile(r"config\.json|(best|last|epoch-\d{3,})\.safetensors")
_ENGINE_NAMES = ("submitit", "submitit-*", "joblib", "dask", "ray", "scratch-*")
_MAX_JSON_BYTES = 1 << 20  # a manifest or checkpoint config.json larger than this is not read
_TMP_GRACE_S = 3600.0  # a temporary file younger than this may be a running writer's


@dataclass
class _Entry:
    """One prunable unit (a fingerprint folder, a checkpoint folder, a digest file) or a reported item."""

    kind: str
    parts: tuple[str, ...]  # the path below the cache root
    files: list[tuple[str, os.stat_result]] = field(default_factory=list)  # names in the folder (or the file)
    folder: bool = True  # a folder holding ``files`` (else ``parts`` names one file)
    model: str | None = None
    weights: str | None = None
    adaptation: str | None = None
    entries: int | None = None
    notes: list[str] = field(default_factory=list)
    prunable: bool = True
    size: int | None = None  # bytes, when not those of ``files`` (a folder reported whole)
    used: float | None = None  # the latest use, when not that of ``files``

    @property
    def bytes(self) -> int:
        return self.size if self.size is not None else sum(info.st_size for _, info in self.files)

    @property
    def last_used(self) -> float | None:
        times = [max(info.st_atime, info.st_mtime) for _, info in self.files]
        return self.used if self.used is not None else (max(times) if times else None)


def format_bytes(n: float) -> str:
    """``n`` bytes for people: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _listing(folder: Path) -> list[tuple[str, os.stat_result]]:
    """Names and ``lstat`` of a folder's entries (never following links); empty when it cannot be read."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    out = []
    for name in names:
        try:
            out.append((name, os.lstat(folder / name)))
        except OSError:
            continue
    return out


def _open_quietly(path: Path) -> int:
    """A read-only descriptor of a regular file: never through a link, never hanging on a pipe, and where the
    system allows, without updating its access time (which is what tells when an entry was last used)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))
    except PermissionError:  # O_NOATIME is for the file's owner only
        fd = os.open(path, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


def _pack_entries(path: Path) -> int:
    """The entries of a pack, from its checked headers (nothing of the embeddings is read)."""
    with os.fdopen(_open_quietly(path), "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            with zipfile.ZipFile(fh) as archive:
                if sorted(archive.namelist()) != ["checksums.npy", "embeddings.npy", "keys.npy"]:
                    raise _UnusablePack("not the members neurofm writes")
                return int(_read_member(archive, "keys", size, load=False)[0][0])
        except _UnusablePack:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a damaged or crafted file raises, it is only counted
            raise _UnusablePack(str(exc)) from exc


def _read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON object file, opened without following a link; ``None`` when anything is off."""
    try:
        fd = _open_quietly(path)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_JSON_BYTES:
            return None
        try:
            value = json.loads(fh.read(_MAX_JSON_BYTES))
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _tree_size(folder: Path) -> tuple[int, float | None]:
    """Bytes of the regular files below ``folder`` (links not followed) and the latest time one was used."""
    total, latest = 0, None
    for here, _, files in os.walk(folder, followlinks=False):
        for name in files:
            try:
                info = os.lstat(os.path.join(here, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
                used = max(info.st_atime, info.st_mtime)
                latest = used if latest is None else max(latest, used)
    return total, latest


def _short(value: Any, width: int = 16) -> str:
    text = str(value)
    return text if len(text) <= width else text[:width]


def _weights_text(identity: Any) -> str | None:
    """A weights identity (``{"kind": "checkpoint", "file": <digest>}``, a seed, a hub commit) in a few words."""
    if not isinstance(identity, dict):
        return None if identity is None else _short(identity, 40)
    kind = str(identity.get("kind", "?"))
    details = []
    for key, value in sorted(identity.items()):
        if key == "kind":
            continue
        if isinstance(value, dict):
            value = ",".join(f"{k}:{_short(v, 12)}" for k, v in sorted(value.items()))
        details.append(f"{key}={_short(value, 40 if isinstance(value, str) and ',' in value else 12)}")
    return " ".join([kind, *details])


def _adaptation_text(adaptation: Any) -> str | None:
    """An adaptation plan's description as ``200 Hz x 19 ch x 800 samples: resample, select, ...``."""
    if not isinstance(adaptation, dict):
        return None
    target = adaptation.get("target") if isinstance(adaptation.get("target"), dict) else {}
    steps = [s.get("step") for s in adaptation.get("steps", []) if isinstance(s, dict) and s.get("step")]
    shape = f"{target.get('sfreq', '?')} Hz x {len(target.get('ch_names') or [])} ch x {target.get('n_times', '?')}"
    return f"{shape} samples" + (f": {', '.join(dict.fromkeys(map(str, steps)))}" if steps else "")


def _untrusted(root: Path, folder: Path, shared: bool) -> str | None:
    """Why entries under ``folder`` are left alone (a folder others can write, the cache not declared shared)."""
    if shared:
        return None
    try:
        check_trusted_folder(folder, root, None, "cache_dir")
    except SharedFolderError as exc:
        return str(exc).split(", so anyone")[0]
    return None


def _known_file(name: str, info: os.stat_result, pattern: re.Pattern, now: float) -> str | None:
    """Why a file in a folder of the layout is not neurofm's to delete; ``None`` when it is."""
    if stat.S_ISLNK(info.st_mode):
        return f"{name} is a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return f"{name} is not a regular file"
    if info.st_uid != os.getuid():
        return f"{name} belongs to user {info.st_uid}"
    if name.startswith(".") and TMP_MARK in name:
        return None if now - info.st_mtime > _TMP_GRACE_S else f"{name} is being written"
    if not pattern.fullmatch(name):
        return f"{name} is not a file neurofm writes there"
    return None


def _embedding_entries(root: Path, shared: bool) -> list[_Entry]:
    out = []
    base = root / "embeddings"
    for name, info in _listing(base):
        if name != _FORMAT_VERSION or not stat.S_ISDIR(info.st_mode):
            out.append(_other(root, ("embeddings", name), info, "embeddings"))
            continue
        for fp, fp_info in _listing(base / name):
            parts = ("embeddings", name, fp)
            if not (_FINGERPRINT.fullmatch(fp) and stat.S_ISDIR(fp_info.st_mode)):
                out.append(_other(root, parts, fp_info, "embeddings"))
                continue
            folder = root.joinpath(*parts)
            files = _listing(folder)  # before anything is read
            manifest = _read_json(folder / "manifest.json") or {}
            entry = _Entry(
                "embeddings",
                parts,
                files,
                model=str(manifest.get("model_key")) if manifest.get("model_key") else None,
                weights=_weights_text(manifest.get("weights")),
                adaptation=_adaptation_text(manifest.get("adaptation")),
            )
            if not manifest:
                entry.notes.append("no readable manifest.json")
            entry.entries = 0
            for file, file_info in entry.files:
                if _PACK.fullmatch(file) and not file.startswith("corrupt-") and stat.S_ISREG(file_info.st_mode):
                    try:
                        entry.entries += _pack_entries(folder / file)
                    except (OSError, _UnusablePack):
                        entry.notes.append(f"{file} unreadable")
            out.append(entry)
    return out


def _checkpoint_entries(root: Path) -> list[_Entry]:
    out = []
    for name, info in _listing(root / "checkpoints"):
        parts = ("checkpoints", name)
        if name == MARKER_NAME:
            continue
        match = _CHECKPOINT.fullmatch(name)
        if match is None or not stat.S_ISDIR(info.st_mode):
            out.append(_other(root, parts, info, "checkpoints"))
            continue
        files = _listing(root.joinpath(*parts))  # before anything is read
        meta = _read_json(root.joinpath(*parts, "config.json")) or {}
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        out.append(
            _Entry(
                "checkpoints",
                parts,
                files,
                model=str(config.get("model_key") or match["model"]),
                weights=None if config.get("weights") is None else _short(config["weights"], 40),
                adaptation=str(config.get("train_mode") or match["mode"]),
                entries=1,
            )
        )
    return out


def _digest_entries(root: Path) -> list[_Entry]:
    out = []
    for name, info in _listing(root / "weight-digests"):
        parts = ("weight-digests", name)
        if name == MARKER_NAME:
            continue
        if _DIGEST.fullmatch(name) or (name.startswith(".") and TMP_MARK in name):
            out.append(_Entry("weight digests", parts, [(name, info)], folder=False, entries=1))
        else:
            out.append(_other(root, parts, info, "weight digests"))
    return out


def _other(root: Path, parts: tuple[str, ...], info: os.stat_result, kind: str, note: str | None = None) -> _Entry:
    """Something reported and never pruned: a link, an unknown name, engines' scratch."""
    if stat.S_ISLNK(info.st_mode):
        size, used, why = 0, info.st_mtime, "a symbolic link (not followed); left alone"
    elif stat.S_ISDIR(info.st_mode):
        size, used = _tree_size(root.joinpath(*parts))
        why = note or "not in neurofm's layout; left alone"
    else:
        size, used = (info.st_size, max(info.st_atime, info.st_mtime))
        why = note or "not in neurofm's layout; left alone"
    return _Entry(kind, parts, [], prunable=False, notes=[why], size=size, used=used)


def _scan(root: Path, shared: bool) -> list[_Entry]:
    entries: list[_Entry] = []
    for name, info in _listing(root):
        if name == MARKER_NAME:
            continue
        parts = (name,)
        if stat.S_ISLNK(info.st_mode):
            entries.append(_other(root, parts, info, "other"))
        elif name == "embeddings" and stat.S_ISDIR(info.st_mode):
            entries.extend(_embedding_entries(root, shared))
        elif name == "checkpoints" and stat.S_ISDIR(info.st_mode):
            entries.extend(_checkpoint_entries(root))
        elif name == "weight-digests" and stat.S_ISDIR(info.st_mode):
            entries.extend(_digest_entries(root))
        elif _matches(name, _ENGINE_NAMES):
            entries.append(_other(root, parts, info, "engine scratch", "execution engines' scratch; never pruned"))
        elif not (name.startswith(".") and TMP_MARK in name):
            entries.append(_other(root, parts, info, "other"))
    for entry in entries:
        if entry.prunable:
            folder = root.joinpath(*(entry.parts if entry.folder else entry.parts[:-1]))
            why = _untrusted(root, folder, shared)
            if why is not None:
                entry.notes.append(f"left alone: {why}")
    return entries


def _row(root: Path, entry: _Entry) -> dict[str, Any]:
    used = entry.last_used
    return {
        "Kind": entry.kind,
        "Model": entry.model,
        "Weights": entry.weights,
        "Adaptation": entry.adaptation,
        "Entries": entry.entries,
        "Bytes": entry.bytes,
        "Size": format_bytes(entry.bytes),
        "LastUsed": None if used is None else pd.Timestamp(used, unit="s", tz="UTC").floor("s"),
        "Path": str(root.joinpath(*entry.parts)),
        "Note": "; ".join(entry.notes) or None,
    }


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=INFO_COLUMNS)
    frame["Bytes"] = frame["Bytes"].astype("int64")
    frame["Entries"] = frame["Entries"].astype("Int64")
    return frame


def _root(cache_dir: str | os.PathLike) -> Path:
    root = Path(cache_dir).expanduser()
    if not root.is_dir():
        raise ConfigError(f"The cache folder {root} does not exist (give --cache-dir, the run's cache_dir).")
    return root.resolve()  # the folder the user named, through its links; below it, no link is followed


def cache_info(cache_dir: str | os.PathLike = "~/.cache/neurofm", *, shared_folders: bool = False) -> pd.DataFrame:
    """What a cache folder holds: one row per backbone setting's embeddings, per fine-tuned model, per other item.

    Parameters
    ----------
    cache_dir : str | PathLike
        The cache folder (``cache_dir`` of the runs).
    shared_folders : bool
        Whether the cache is declared shared: otherwise entries under a
        folder others can write are noted as left alone by a prune.

    Returns
    -------
    info : DataFrame
        Columns :data:`INFO_COLUMNS`: ``Kind`` (``embeddings``,
        ``checkpoints``, ``weight digests``, ``engine scratch``, ``other``),
        ``Model``, ``Weights`` and ``Adaptation`` (from the manifests, where
        they say), ``Entries`` (windows embedded; checkpoints; digests),
        ``Bytes`` and ``Size``, ``LastUsed`` (UTC: the latest access or change of
        its files), ``Path`` and ``Note`` (why it is left alone, if it is).
        Weight digests are one row, fine-tuning checkpoints one row per model
        and train mode.
    """
    root = _root(cache_dir)
    entries = _scan(root, shared_folders)
    rows = [_row(root, entry) for entry in entries if entry.kind not in ("weight digests", "checkpoints")]
    for kind, by in (("checkpoints", ("model", "adaptation")), ("weight digests", ())):
        groups: dict[tuple, list[_Entry]] = {}
        for entry in entries:
            if entry.kind == kind:  # what is left alone stays a row of its own
                group = tuple(getattr(entry, name) for name in by) if entry.prunable else (id(entry),)
                groups.setdefault(group, []).append(entry)
        for members in groups.values():
            first = members[0]
            row = _row(root, first)
            used = [e.last_used for e in members if e.last_used is not None]
            total = sum(e.bytes for e in members)
            notes = sorted({note for e in members for note in e.notes})
            row |= {
                "Entries": sum(e.entries or 0 for e in members) if first.prunable else None,
                "Bytes": total,
                "Size": format_bytes(total),
                "LastUsed": pd.Timestamp(max(used), unit="s", tz="UTC").floor("s") if used else None,
                "Path": str(root / first.parts[0]) if len(members) > 1 or not first.folder else row["Path"],
                "Note": "; ".join(notes) or None,
            }
            rows.append(row)
    return _frame(rows)


def _open_folder(root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of ``root/parts``, every step below ``root`` opened without following a link."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(root, flags)
    try:
        for part in parts:
            inner = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _delete(root: Path, entry: _Entry, pattern: re.Pattern) -> tuple[int, list[str]]:
    """Remove an entry's files that are neurofm's (and its folder, if that empties it); bytes freed, what stayed."""
    folder_parts = entry.parts if entry.folder else entry.parts[:-1]
    kept: list[str] = []
    freed = 0
    now = time.time()
    try:
        fd = _open_folder(root, folder_parts)
    except OSError as exc:
        return 0, [f"{root.joinpath(*folder_parts)} not opened ({exc.strerror}); left alone"]
    try:
        for name, _ in entry.files:
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)  # as it is now, not as listed
            except FileNotFoundError:
                continue
            why = _known_file(name, info, pattern, now)
            if why is not None:
                kept.append(why)
                continue
            os.unlink(name, dir_fd=fd)
            freed += info.st_size
    finally:
        os.close(fd)
    if entry.folder and not kept:
        try:
            parent = _open_folder(root, entry.parts[:-1])
        except OSError:
            return freed, kept
        try:
            os.rmdir(entry.parts[-1], dir_fd=parent)
        except OSError:  # a file arrived meanwhile (a run writing): the folder stays
            pass
        finally:
            os.close(parent)
    return freed, kept


_FILE_PATTERNS = {
    "embeddings": re.compile(rf"manifest\.json|{_PACK.pattern}"),
    "checkpoints": _CHECKPOINT_FILE,
    "weight digests": _DIGEST,
}


def prune_cache(
    cache_dir: str | os.PathLike = "~/.cache/neurofm",
    *,
    older_than: float | None = None,
    model: str | None = None,
    all: bool = False,  # noqa: A002 - the command's --all
    dry_run: bool = False,
    shared_folders: bool = False,
) -> pd.DataFrame:
    """Delete cache entries neurofm wrote: those last used more than ``older_than`` days ago, of ``model``, or all.

    Only regular files named as neurofm names them, in the folders of its
    layout, owned by this user, are deleted (see the module's description);
    everything else is left alone and listed in ``attrs["left_alone"]`` of
    the result.

    Parameters
    ----------
    cache_dir : str | PathLike
        The cache folder.
    older_than : float | None
        Days since an entry's files were last read or written.
    model : str | None
        A registry key (``labram``): the embeddings and checkpoints of that model.
    all : bool
        Every entry (``older_than`` and ``model`` narrow it further when given).
    dry_run : bool
        List what would be deleted; delete nothing.
    shared_folders : bool
        Whether the cache is declared shared (others may write its folders;
        still only this user's files are deleted).

    Returns
    -------
    removed : DataFrame
        One row per entry removed (or, with ``dry_run``, that would be), in
        the columns of :func:`cache_info`; ``Bytes`` is what was freed.

    Raises
    ------
    ConfigError
        Without a selector, or when the cache folder is not neurofm's.
    """
    if older_than is None and model is None and not all:
        raise ConfigError(
            "Say what to prune: older_than=DAYS (--older-than), model=KEY (--model), or all=True (--all) for "
            "every entry neurofm wrote; dry_run=True (--dry-run) lists them first."
        )
    if older_than is not None and older_than < 0:
        raise ConfigError(f"older_than={older_than} is negative; give a number of days >= 0.")
    root = _root(cache_dir)
    marker = root / MARKER_NAME
    foreign = [
        name
        for name in os.listdir(root)
        if name != MARKER_NAME and TMP_MARK not in name and not _matches(name, CACHE_NAMES)
    ]
    if not (marker.is_file() and not marker.is_symlink()) and foreign:
        raise ConfigError(
            f"{root} holds files neurofm did not write ({', '.join(sorted(foreign)[:5])}) and no {MARKER_NAME} "
            "marker: it is not a neurofm cache folder, and nothing was deleted. Give the cache_dir of your runs."
        )
    cutoff = None if older_than is None else time.time() - older_than * 86400
    rows, left_alone = [], []
    for entry in _scan(root, shared_folders):
        path = root.joinpath(*entry.parts)
        if not entry.prunable:
            if entry.kind != "engine scratch":
                left_alone.append(f"{path}: {entry.notes[0]}")
            continue
        if model is not None and entry.model != model:
            continue
        used = entry.last_used
        if cutoff is not None and used is not None and used >= cutoff:
            continue
        untrusted = [note for note in entry.notes if note.startswith("left alone")]
        if untrusted:
            left_alone.append(f"{path}: {untrusted[0]}")
            continue
        row = _row(root, entry)
        if dry_run:
            now = time.time()
            kept = [w for n, i in entry.files if (w := _known_file(n, i, _FILE_PATTERNS[entry.kind], now))]
            freed = sum(i.st_size for n, i in entry.files if not _known_file(n, i, _FILE_PATTERNS[entry.kind], now))
        else:
            freed, kept = _delete(root, entry, _FILE_PATTERNS[entry.kind])
        left_alone.extend(f"{path}: {why}; left alone" for why in kept)
        if freed or not kept:
            rows.append(row | {"Bytes": freed, "Size": format_bytes(freed)})
            logger.debug("%s %s (%s)", "Would remove" if dry_run else "Removed", path, format_bytes(freed))
    removed = _frame(rows)
    removed.attrs["left_alone"] = left_alone
    removed.attrs["dry_run"] = dry_run
    return removed
