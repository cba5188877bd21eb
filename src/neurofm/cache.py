"""Content-addressed, append-only embedding cache on disk.

A frozen backbone is a deterministic, label-free function of a window, so its
embedding can be stored under a key made of the window's bytes and the
backbone's fingerprint (architecture, weight hash, pooling, input adaptation)
and reused across folds, heads, models and runs without leakage. Labels and
folds never enter a key.

Layout::

    <cache_dir>/embeddings/v2/<fingerprint>/manifest.json
    <cache_dir>/embeddings/v2/<fingerprint>/pack-<uuid>.npz          # keys, embeddings, checksums
    <cache_dir>/embeddings/v2/<fingerprint>/pack-<key id>-<uuid>.npz # the same, checksums keyed (shared folder)
    <cache_dir>/embeddings/v2/<fingerprint>/corrupt-pack-<uuid>.npz  # set aside, never read again

A pack holds the window keys (fixed-width bytes), their float32 embeddings and
one checksum per entry (a hash of its key and embedding bytes). Packs are
written to a temporary file and renamed into place, so a reader never sees a
partial pack and runs writing at once simply add packs; no file is ever
rewritten. Nothing is pickled: packs load with ``allow_pickle=False``.

An entry whose checksum does not match, or a pack that cannot be read
(truncated, overwritten, bit rot, crafted), is reported, its pack is renamed
``corrupt-...`` (kept for inspection, never read again) and its windows are
embedded again. A pack is checked before any of it is loaded: a regular file
(never a link, a pipe or a device, which are skipped unopened), the three
members stored uncompressed with the dtypes and shapes neurofm writes, and
sizes that add up to the file's, so that no pack, however crafted, makes a
run allocate more than the file holds, hang or crash. A pack this user may
not read (another user's, on a shared cache) is skipped, never renamed.

Checksums catch damage, not forgery: packs are read only from a private
cache (see :mod:`neurofm.sharing`) or, in a cache declared shared, only packs
whose checksums are keyed with this run's key; packs of other keys are left
alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import StorageError
from .sharing import EntryKey, check_trusted_folder, make_folders, share_with_group
from .utils.files import NO_ROOM_ERRNOS, atomic_write
from .utils.logging import logger

__all__ = [
    "CacheWriteError",
    "EmbeddingCache",
    "embed_through_cache",
    "entry_checksums",
    "hash_windows",
    "stable_hash",
]

_FORMAT_VERSION = "v2"  # v2: one checksum per entry
_KEY_BYTES = 16
_CHECKSUM_BYTES = 8
_CORRUPT_PREFIX = "corrupt-"
_KEYED_PACK = re.compile(r"pack-(?P<key_id>[0-9a-f]{16})-[0-9a-f]{32}\.npz")
# The members of a pack and what each must be; n (entries) is shared, the embedding width is free.
_MEMBERS = {
    "keys": np.dtype(f"S{2 * _KEY_BYTES}"),
    "embeddings": np.dtype(np.float32),
    "checksums": np.dtype(f"S{2 * _CHECKSUM_BYTES}"),
}


class _UnusablePack(Exception):
    """A pack that is not read: ``damaged`` ones are set aside, the others (not ours to judge) skipped."""

    def __init__(self, reason: str, *, damaged: bool = True):
        super().__init__(reason)
        self.damaged = damaged


def _read_member(archive: zipfile.ZipFile, name: str, file_size: int, load: bool) -> tuple[tuple, np.ndarray | None]:
    """A member's shape, checked against what neurofm writes and the bytes it holds; its array when ``load``."""
    info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED or info.file_size > file_size:
        # neurofm stores members uncompressed: a compressed one could expand to any size
        raise _UnusablePack(f"member {name} is compressed or larger than the file")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(member)
        expected_ndim = 2 if name == "embeddings" else 1
        if dtype != _MEMBERS[name] or fortran_order or len(shape) != expected_ndim:
            raise _UnusablePack(f"member {name} is {dtype} of shape {shape}, not what neurofm writes")
        n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if member.tell() + n_bytes != info.file_size:  # a header may claim any shape: the bytes must be there
            raise _UnusablePack(f"member {name} declares shape {shape} but holds {info.file_size} bytes")
        return shape, (np.frombuffer(member.read(n_bytes), dtype=dtype).reshape(shape) if load else None)


def _read_pack(pack: Path, members: tuple[str, ...] = tuple(_MEMBERS)) -> dict[str, np.ndarray]:
    """A pack's ``members``, the whole pack checked before anything is loaded.

    Every member's header and size are checked; only the requested members'
    bytes are read (indexing needs the keys alone, not the embeddings).

    Raises
    ------
    FileNotFoundError
        When the pack is gone (set aside by another process).
    _UnusablePack
        Anything else that keeps it from being read; nothing else escapes.
    """
    try:
        # O_NOFOLLOW: never a link; O_NONBLOCK: a pipe named like a pack cannot hang the open.
        fd = os.open(pack, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except PermissionError as exc:
        raise _UnusablePack(f"not readable by this user ({exc.strerror})", damaged=False) from exc
    except OSError as exc:  # ELOOP: a symbolic link
        raise _UnusablePack(f"not a regular file ({exc.strerror})", damaged=False) from exc
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd)
        if not stat.S_ISREG(mode.st_mode):
            raise _UnusablePack("not a regular file (a pipe, a device or a folder)", damaged=False)
        try:
            with zipfile.ZipFile(fh) as archive:
                if sorted(archive.namelist()) != sorted(f"{name}.npy" for name in _MEMBERS):
                    raise _UnusablePack(f"members {sorted(archive.namelist())[:5]}, not keys, embeddings, checksums")
                read = {name: _read_member(archive, name, mode.st_size, name in members) for name in _MEMBERS}
        except _UnusablePack:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a damaged or crafted file raises, the run goes on
            raise _UnusablePack(f"unreadable ({type(exc).__name__}: {exc})") from exc
    n_keys, n_embeddings, n_checksums = (read[name][0][0] for name in _MEMBERS)
    if n_embeddings != n_keys or n_checksums != n_keys:
        raise _UnusablePack(f"members hold {n_keys}, {n_embeddings} and {n_checksums} entries")
    return {name: read[name][1] for name in members}


class CacheWriteError(StorageError):
    """The embedding cache could not be written (full disk, quota, permissions)."""


def stable_hash(obj: Any) -> str:
    """Hex digest of a JSON-serialisable object, independent of key order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=_KEY_BYTES).hexdigest()


def hash_windows(X: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    """One key per window: a hash of its float32 bytes and its shape (and of its row of ``context``).

    ``context`` holds what else decides a window's embedding, one row per
    window (its recording's normalisation statistics); ``None`` for nothing.

    Returns
    -------
    keys : ndarray of dtype ``S32``
        Hex digests, one per window.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    shape_tag = repr(X.shape[1:]).encode()
    keys = np.empty(len(X), dtype=f"S{2 * _KEY_BYTES}")
    for i, window in enumerate(X):
        digest = hashlib.blake2b(window.tobytes(), digest_size=_KEY_BYTES, person=b"neurofm-win")
        digest.update(shape_tag)
        if context is not None:
            digest.update(np.ascontiguousarray(context[i], dtype=np.float64).tobytes())
        keys[i] = digest.hexdigest().encode()
    return keys


def entry_checksums(keys: np.ndarray, embeddings: np.ndarray, secret: EntryKey | None = None) -> np.ndarray:
    """One checksum per cache entry: a hash of its key and its embedding's bytes, keyed with ``secret`` if given.

    Returns
    -------
    checksums : ndarray of dtype ``S16``
    """
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    out = np.empty(len(keys), dtype=f"S{2 * _CHECKSUM_BYTES}")
    for i, (key, row) in enumerate(zip(keys, embeddings, strict=True)):
        if secret is not None:
            out[i] = secret.sign(b"neurofm-entry", bytes(key), row.tobytes(), digest_size=_CHECKSUM_BYTES).encode()
            continue
        digest = hashlib.blake2b(bytes(key), digest_size=_CHECKSUM_BYTES, person=b"neurofm-entry")
        digest.update(row.tobytes())
        out[i] = digest.hexdigest().encode()
    return out


class EmbeddingCache:
    """Embeddings of one backbone fingerprint, stored under ``root``.

    Parameters
    ----------
    root : str | Path
        The cache directory (``~`` is expanded).
    fingerprint : str
        Hex digest identifying backbone, weights, pooling and input adaptation.
    manifest : dict | None
        Human-readable description stored beside the packs.
    key : EntryKey | None
        The key of a cache declared shared (:func:`neurofm.sharing.entry_key`):
        packs are written and read with checksums keyed with it. ``None``: the
        cache must be private, or reading it raises
        :class:`~neurofm.sharing.SharedFolderError`.

    Attributes
    ----------
    damaged_packs : int
        Packs this object found damaged and set aside (their windows were
        treated as missing, so the caller embeds them again).
    skipped_packs : int
        Packs this object did not read and left as they are: not readable by
        this user, or not a regular file (their windows are embedded again).
    """

    def __init__(self, root: str | Path, fingerprint: str, manifest: dict | None = None, key: EntryKey | None = None):
        self.root = Path(root).expanduser()
        self.fingerprint = fingerprint
        self.directory = self.root / "embeddings" / _FORMAT_VERSION / fingerprint
        self.manifest = manifest
        self.key = key
        self.damaged_packs = 0
        self.skipped_packs = 0
        self._indexed: set[Path] = set()
        self._keys: dict[bytes, tuple[Path, int]] = {}

    def _index(self) -> dict[bytes, tuple[Path, int]]:
        """Key -> (pack, row), reading only packs added since the last call.

        Packs are never rewritten, so what was indexed stays valid; packs that
        other processes add meanwhile are picked up. A key stored twice (two
        workers embedding the same window) keeps its first pack in name order.
        """
        check_trusted_folder(self.directory, self.root, self.key, "cache_dir")
        if not self.directory.is_dir():
            return self._keys
        for pack in sorted(set(filter(self._ours, self.directory.glob("pack-*.npz"))) - self._indexed):
            try:
                keys = _read_pack(pack, ("keys",))["keys"]
            except FileNotFoundError:  # set aside by another process between glob and load
                continue
            except _UnusablePack as problem:
                self._set_aside(pack, problem)
                continue
            self._remember(pack, keys)
        return self._keys

    def _ours(self, pack: Path) -> bool:
        """Whether ``pack`` was written with this cache's key (or, private, with none)."""
        keyed = _KEYED_PACK.fullmatch(pack.name)
        if self.key is None:
            return keyed is None
        return keyed is not None and keyed["key_id"] == self.key.key_id

    def _remember(self, pack: Path, keys: np.ndarray) -> None:
        for row, key in enumerate(keys):
            key = bytes(key)
            held = self._keys.get(key)
            if held is None or pack.name < held[0].name:  # the same answer whatever order packs arrived in
                self._keys[key] = (pack, row)
        self._indexed.add(pack)

    def _forget(self, pack: Path) -> None:
        """Drop a damaged pack's keys; a copy of a key in another pack serves from the next lookup on."""
        self._keys = {key: held for key, held in self._keys.items() if held[0] != pack}
        for other in self._indexed - {pack}:  # re-offer keys that the damaged pack had shadowed
            if other.exists():
                try:
                    keys = _read_pack(other, ("keys",))["keys"]
                except (FileNotFoundError, _UnusablePack):
                    continue
                for row, key in enumerate(keys):
                    held = self._keys.get(bytes(key))
                    if held is None or other.name < held[0].name:
                        self._keys[bytes(key)] = (other, row)

    def _set_aside(self, pack: Path, problem: _UnusablePack) -> None:
        """Never read ``pack`` again; rename a damaged one ``corrupt-...``, leave one that is not ours to judge."""
        if problem.damaged:
            logger.warning(
                "Embedding cache: %s is damaged (%s); it is renamed %s%s and its windows are embedded again.",
                pack,
                problem,
                _CORRUPT_PREFIX,
                pack.name,
            )
            self.damaged_packs += 1
            try:
                pack.rename(pack.with_name(_CORRUPT_PREFIX + pack.name))
            except OSError:  # another process found it first, or this user may not rename it
                pass
        else:
            logger.warning(
                "Embedding cache: %s is skipped (%s); it is left as it is and its windows are embedded again.",
                pack,
                problem,
            )
            self.skipped_packs += 1
        self._indexed.add(pack)  # never read again by this object
        self._forget(pack)

    def count_stored(self, keys: np.ndarray) -> int:
        """How many of ``keys`` the cache holds, by its index alone (no pack is read or checked).

        What a run's plan expects to read back; :meth:`lookup` still checks
        each entry, and an entry found damaged then is computed again.
        """
        index = self._index()
        return sum(bytes(k) in index for k in keys)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Embeddings already stored for ``keys``, each checked against its checksum.

        Returns
        -------
        embeddings : ndarray, shape (n_keys, dim) | None
            Rows of found keys are filled; ``None`` when nothing is found.
        found : ndarray of bool, shape (n_keys,)
            False for keys not stored and for entries found damaged.
        """
        index = self._index()
        found = np.array([bytes(k) in index for k in keys], dtype=bool)
        if not found.any():
            return None, found
        by_pack: dict[Path, list[tuple[int, int]]] = {}
        for i in np.flatnonzero(found):
            pack, row = index[bytes(keys[i])]
            by_pack.setdefault(pack, []).append((i, row))
        out = None
        for pack, pairs in by_pack.items():
            targets, rows = (list(column) for column in zip(*pairs, strict=True))
            try:
                data = _read_pack(pack)
            except FileNotFoundError:
                found[targets] = False  # set aside by another process meanwhile
                self._forget(pack)
                continue
            except _UnusablePack as problem:
                found[targets] = False
                self._set_aside(pack, problem)
                continue
            stored_keys, emb, checksums = data["keys"][rows], data["embeddings"][rows], data["checksums"][rows]
            bad = (entry_checksums(stored_keys, emb, self.key) != checksums) | (stored_keys != keys[targets])
            if bad.any():
                found[targets] = False
                n_bad = int(bad.sum())
                self._set_aside(pack, _UnusablePack(f"{n_bad} entr{'y' if n_bad == 1 else 'ies'} fail their checksum"))
                continue
            if out is None:
                out = np.zeros((len(keys), emb.shape[1]), dtype=np.float32)
            out[targets] = emb
        return (out if found.any() else None), found

    def store(self, keys: np.ndarray, embeddings: np.ndarray) -> Path | None:
        """Add a pack of embeddings atomically; returns its path.

        Raises
        ------
        CacheWriteError
            When the disk is full or the directory cannot be written. Packs
            stored before are left as they were.
        """
        if len(keys) == 0:
            return None
        keys = np.asarray(keys, dtype=f"S{2 * _KEY_BYTES}")
        embeddings = np.asarray(embeddings, np.float32)
        packed = {"keys": keys, "embeddings": embeddings, "checksums": entry_checksums(keys, embeddings, self.key)}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path
                np.savez(fh, **packed)
            share_with_group(tmp, self.key)

        name = f"pack-{uuid.uuid4().hex}.npz" if self.key is None else f"pack-{self.key.key_id}-{uuid.uuid4().hex}.npz"
        try:
            make_folders(self.directory, self.key)
            self._write_manifest()
            path = atomic_write(self.directory / name, write, private=True)
        except OSError as exc:
            raise _write_error(self.directory, exc) from exc
        self._remember(path, keys)
        return path

    def _write_manifest(self) -> None:
        path = self.directory / "manifest.json"
        if self.manifest is None or path.exists():
            return
        text = json.dumps(self.manifest, indent=2, sort_keys=True, default=str)
        atomic_write(path, lambda tmp: tmp.write_text(text), private=True)


def embed_through_cache(
    windows: np.ndarray,
    cache: EmbeddingCache | None,
    compute,
    progress,
    statistics: np.ndarray | None = None,
    label: str = "the backbone",
) -> tuple[np.ndarray, int]:
    """Embeddings of ``windows``: those in ``cache`` read from it, the others computed and stored.

    Parameters
    ----------
    windows : ndarray, shape (n_windows, n_channels, n_times)
    cache : EmbeddingCache | None
        ``None``: every window is computed.
    compute : callable
        ``compute(windows, statistics) -> ndarray (n, dim)`` for the windows not found.
    progress : callable
        ``progress(n)`` for windows found (``compute`` reports its own).
    statistics : ndarray | None
        Each window's normalisation statistics: part of its key, since a window
        normalised otherwise is another input.
    label : str
        What the warning about non-finite embeddings names.

    Returns
    -------
    embeddings : ndarray of float32, shape (n_windows, dim)
    n_computed : int
        Windows that were not in the cache. Non-finite embeddings (an fp16
        overflow) are returned but never stored, so a cache never serves them for good.
    """
    embeddings: np.ndarray | None = None
    missing = np.ones(len(windows), dtype=bool)
    if cache is not None:
        keys = hash_windows(windows, statistics)
        embeddings, found = cache.lookup(keys)
        missing = ~found
        progress(int(found.sum()))
    n_missing = int(missing.sum())
    if n_missing:
        computed = compute(windows[missing], None if statistics is None else statistics[missing])
        if embeddings is None:
            embeddings = np.zeros((len(windows), computed.shape[1]), dtype=np.float32)
        embeddings[missing] = computed
        finite = np.isfinite(computed).all(axis=1)
        if not finite.all():
            logger.warning(
                "%s gave non-finite embeddings for %d window(s); they are returned but not cached.",
                label,
                int((~finite).sum()),
            )
        if cache is not None:
            cache.store(keys[missing][finite], computed[finite])
    return embeddings, n_missing


def _write_error(directory: Path, exc: OSError) -> CacheWriteError:
    if isinstance(exc, StorageError) or exc.errno in NO_ROOM_ERRNOS:
        problem, fix = "the disk is full", "free space there, or set cache_dir to a disk with room"
    else:
        problem, fix = f"{exc.strerror or exc}", "check that the folder is writable, or set cache_dir elsewhere"
    return CacheWriteError(
        exc.errno,
        f"Cannot write to the embedding cache {directory}: {problem}. Fix: {fix} (or turn the cache off "
        "with cache_embeddings: false). Embeddings stored before are intact and are reused on the next run.",
    )
