"""Content-addressed, append-only embedding cache on disk.

A frozen backbone is a deterministic, label-free function of a window, so its
embedding can be stored under a key made of the window's bytes and the
backbone's fingerprint (architecture, weight hash, pooling, input adaptation)
and reused across folds, heads, models and runs without leakage. Labels and
folds never enter a key.

Layout::

    <cache_dir>/embeddings/v1/<fingerprint>/manifest.json
    <cache_dir>/embeddings/v1/<fingerprint>/pack-<uuid>.npz   # keys + embeddings

A pack holds the window keys (fixed-width bytes) and their float32
embeddings. Packs are written to a temporary file and renamed into place, so a
reader never sees a partial pack and two runs writing at once simply add two
packs; no file is ever rewritten. Nothing is pickled: packs load with
``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .utils.files import atomic_write

__all__ = ["EmbeddingCache", "hash_windows", "stable_hash"]

_FORMAT_VERSION = "v1"
_KEY_BYTES = 16


def stable_hash(obj: Any) -> str:
    """Hex digest of a JSON-serialisable object, independent of key order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=_KEY_BYTES).hexdigest()


def hash_windows(X: np.ndarray) -> np.ndarray:
    """One key per window: a hash of its float32 bytes and its shape.

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
        keys[i] = digest.hexdigest().encode()
    return keys


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
    """

    def __init__(self, root: str | Path, fingerprint: str, manifest: dict | None = None):
        self.root = Path(root).expanduser()
        self.fingerprint = fingerprint
        self.directory = self.root / "embeddings" / _FORMAT_VERSION / fingerprint
        self.manifest = manifest
        self._indexed: set[Path] = set()
        self._keys: dict[bytes, tuple[Path, int]] = {}

    def _index(self) -> dict[bytes, tuple[Path, int]]:
        """Key -> (pack, row), reading only packs added since the last call.

        Packs are never rewritten, so what was indexed stays valid; packs that
        other processes add meanwhile are picked up. A key stored twice (two
        workers embedding the same window) keeps its first pack in name order.
        """
        if not self.directory.is_dir():
            return self._keys
        for pack in sorted(set(self.directory.glob("pack-*.npz")) - self._indexed):
            with np.load(pack, allow_pickle=False) as data:
                self._remember(pack, data["keys"])
        return self._keys

    def _remember(self, pack: Path, keys: np.ndarray) -> None:
        for row, key in enumerate(keys):
            key = bytes(key)
            held = self._keys.get(key)
            if held is None or pack.name < held[0].name:  # the same answer whatever order packs arrived in
                self._keys[key] = (pack, row)
        self._indexed.add(pack)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Embeddings already stored for ``keys``.

        Returns
        -------
        embeddings : ndarray, shape (n_keys, dim) | None
            Rows of found keys are filled; ``None`` when nothing is found.
        found : ndarray of bool, shape (n_keys,)
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
            with np.load(pack, allow_pickle=False) as data:
                emb = data["embeddings"]
                if out is None:
                    out = np.zeros((len(keys), emb.shape[1]), dtype=np.float32)
                targets, rows = zip(*pairs, strict=True)
                out[list(targets)] = emb[list(rows)]
        return out, found

    def store(self, keys: np.ndarray, embeddings: np.ndarray) -> Path | None:
        """Add a pack of embeddings atomically; returns its path."""
        if len(keys) == 0:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_manifest()
        packed = {"keys": np.asarray(keys, dtype=f"S{2 * _KEY_BYTES}"), "embeddings": np.asarray(embeddings, np.float32)}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path
                np.savez(fh, **packed)

        path = atomic_write(self.directory / f"pack-{uuid.uuid4().hex}.npz", write)
        self._remember(path, packed["keys"])
        return path

    def _write_manifest(self) -> None:
        path = self.directory / "manifest.json"
        if self.manifest is None or path.exists():
            return
        text = json.dumps(self.manifest, indent=2, sort_keys=True, default=str)
        atomic_write(path, lambda tmp: tmp.write_text(text))
