"""An experiment's finished work on disk, so that a run that stops resumes where it stopped.

With an output folder, every finished (model, fold) and every finished label
permutation is written at once, atomically, by whichever process or worker
ran it. Running the same config on the same data into the same folder again
reads those records instead of recomputing them; extraction resumes from the
embedding cache. The final tables are then assembled exactly as an
uninterrupted run assembles them.

Layout::

    <output_dir>/.neurofm.lock                    held by the one run writing here
    <output_dir>/progress/model-<hash>/fold-00003.json
    <output_dir>/progress/model-<hash>/permutation-00012.json

Every record carries a checksum of its content; a record that does not match
is reported and its work is done again. Records are read only from a private
output folder, or, in one declared shared, only those whose checksum is keyed
with this run's key (:mod:`neurofm.sharing`). Folder names are hashes, never
names from the config, so a model name cannot point a write outside the folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cache import stable_hash
from .exceptions import ConfigError
from .sharing import EntryKey, check_trusted_folder, make_folders, share_with_group
from .sources import as_window_source
from .utils.files import TMP_MARK, atomic_write, jsonable
from .utils.logging import logger

__all__ = ["RecordingCall", "RunProgress", "data_fingerprint", "read_record", "round_trip", "write_record"]

_FORMAT = 1
_LOCK_NAME = ".neurofm.lock"
_RECORDS_NAME = "progress"
#: What a run's progress puts directly in its output folder.
PROGRESS_NAMES = frozenset({_LOCK_NAME, _RECORDS_NAME})

# Bumped whenever neurofm starts computing different results from the same config and data (2: window
# estimators see microvolts, not volts; 3: ts_lr without standardising), so an output folder written
# before never resumes into them. Keying records on the weights' identity needed no bump: it changed the key of
# every model with weights (their old records are never read again) and of no other.
RECORD_SEMANTICS = 3


def data_fingerprint(X, y: np.ndarray, groups: np.ndarray | None, info: dict[str, Any]) -> str:
    """Hash of the windows' float32 bytes (read chunk by chunk), labels, groups and signal description."""
    digest = hashlib.blake2b(digest_size=16, person=b"neurofm-data")
    source = as_window_source(X)
    digest.update(repr(source.shape).encode())
    for _, chunk in source.chunks(source.chunk_size()):
        digest.update(np.ascontiguousarray(chunk, dtype=np.float32).tobytes())
    for part in (y, groups):
        digest.update(b"|none|" if part is None else json.dumps(np.asarray(part).tolist()).encode())
    digest.update(json.dumps(info, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _checksum(payload_text: str, key: EntryKey | None) -> str:
    if key is not None:
        return key.sign(b"neurofm-record", payload_text.encode())
    return hashlib.blake2b(payload_text.encode(), digest_size=16).hexdigest()


def write_record(path: str | Path, payload: Any, key: EntryKey | None = None) -> None:
    """Write ``payload`` (JSON-ready) with its checksum, atomically: the file is whole or absent.

    With ``key`` (a shared output folder) the checksum is keyed and the record names the key.
    """
    text = json.dumps(jsonable(payload), sort_keys=True, allow_nan=True)
    record = {"format": _FORMAT, "checksum": _checksum(text, key), "payload": text}
    if key is not None:
        record["key_id"] = key.key_id

    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(record))
        share_with_group(tmp, key)

    make_folders(Path(path).parent, key)
    atomic_write(path, write, private=True)


def read_record(path: str | Path, key: EntryKey | None = None) -> Any | None:
    """The payload written by :func:`write_record` with the same ``key``, or ``None``.

    ``None`` when the record is absent, damaged (reported) or written with
    another key (or keyed, when ``key`` is None): that work is done again and
    the record is left as it is.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        text = record["payload"]
        if record.get("key_id") != (None if key is None else key.key_id):
            logger.info("Progress record %s was written with another key; that work is done again.", path)
            return None
        intact = record.get("format") == _FORMAT and record.get("checksum") == _checksum(text, key)
        payload = json.loads(text) if intact else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("Progress record %s cannot be read (%s); that work is done again.", path, exc)
        return None
    if payload is None:
        logger.warning("Progress record %s fails its checksum; that work is done again.", path)
    return payload


@dataclass
class RunProgress:
    """The progress folder of runs writing into ``output_dir``.

    A record's folder is named by a hash of everything that decides its
    result: the model's name and config, the identity of its weights (their
    content, not their path: a checkpoint overwritten in place is another
    model), the task, metrics, CV and seed, and the data. Changing one model
    therefore redoes that model only, adding permutations reuses those
    already drawn (permutation ``i`` depends on the seed, not on how many are
    asked for), and no record of other settings, other weights or other data
    is ever mistaken for this run's.

    Parameters
    ----------
    output_dir : Path
        The run's output folder.
    key : EntryKey | None
        The key of an output folder declared shared; ``None``: it must be
        private (:func:`neurofm.sharing.check_trusted_folder`).
    """

    output_dir: Path
    key: EntryKey | None = None
    _payloads: dict = field(default_factory=dict, init=False, repr=False)

    def read(self, path: Path) -> Any | None:
        """A record's payload (:func:`read_record` with this run's key), read from disk once per run.

        A run reads its records before it computes what they hold (to skip a
        frozen backbone's extraction when every fold is recorded, then to skip
        each recorded task) and writes only records it did not find, so what
        it read stays true for the rest of the run.
        """
        if path not in self._payloads:
            self._payloads[path] = read_record(path, self.key)
        return self._payloads[path]

    @property
    def directory(self) -> Path:
        return self.output_dir / _RECORDS_NAME

    @contextlib.contextmanager
    def session(self):
        """Hold the folder for one run: lock it and clear temporary files of runs that were killed mid-write.

        Raises
        ------
        ConfigError
            When another run holds the folder.
        SharedFolderError
            When others can write the folder and it is not declared shared.
        """
        check_trusted_folder(self.directory, self.output_dir, self.key, "The output folder")
        make_folders(self.output_dir, self.key)
        # O_NOFOLLOW: a link planted under the lock's name is refused (ELOOP), never opened or created through.
        try:
            fd = os.open(self.output_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise ConfigError(
                f"{self.output_dir / _LOCK_NAME} is a symbolic link; neurofm never opens its files "
                "through a link. Remove it, or use a new output folder."
            ) from exc
        with os.fdopen(fd, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"Another neurofm run is writing to {self.output_dir}. Wait for it to finish, or give this run "
                    "another output folder."
                ) from None
            try:
                # Never complete, never read; safe to remove because this run holds the folder. Only the
                # files neurofm writes here are looked at: the folder may hold anything else too.
                stale = [*self.output_dir.glob(f".*{TMP_MARK}*"), *self.directory.rglob(f".*{TMP_MARK}*")]
                for path in stale:
                    path.unlink(missing_ok=True)
                yield self
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def model_folder(self, decisive: dict[str, Any]) -> Path:
        """The folder of one model's records; ``decisive`` holds what decides its results (JSON-ready)."""
        keyed = {"semantics": RECORD_SEMANTICS, **jsonable(decisive)}
        folder = self.directory / f"model-{stable_hash(keyed)}"
        check_trusted_folder(folder, self.output_dir, self.key, "The output folder")
        return folder

    @staticmethod
    def path(folder: Path, kind: str, index: int) -> Path:
        """Record of fold (``kind="fold"``) or permutation ``index`` in a model's folder."""
        return folder / f"{kind}-{index:05d}.json"


def round_trip(payload: Any) -> Any:
    """``payload`` as it reads back from a record: fresh and resumed results then look alike."""
    return json.loads(json.dumps(jsonable(payload), allow_nan=True))


@dataclass
class RecordingCall:
    """``function(task[, shared])`` that also writes its result as a record, on whichever worker runs it.

    Picklable, so a Dask, Ray or Slurm worker writes the record itself the
    moment its task finishes; a run killed later keeps that work.
    """

    function: Any
    encode: Any
    key: EntryKey | None = None

    def __call__(self, item, shared=None):
        task, record_path = item
        result = self.function(task) if shared is None else self.function(task, shared)
        if record_path is not None:
            write_record(record_path, self.encode(result), self.key)
        return result


@dataclass
class RunRecords:
    """One run's records of finished work: each model's folder, what is on record, and the call that records.

    Without an output folder (``progress=None``) nothing is recorded and
    nothing resumes: every path is ``None``.

    Parameters
    ----------
    progress : RunProgress | None
        The output folder's progress, held for the run.
    folders : dict
        Each model's record folder (:meth:`RunProgress.model_folder`).
    """

    progress: RunProgress | None = None
    folders: dict[str, Path] = field(default_factory=dict)

    def path(self, model_name: str, kind: str, index: int) -> Path | None:
        """Where fold or permutation ``index`` of a model is recorded (``None``: not recorded)."""
        return None if self.progress is None else RunProgress.path(self.folders[model_name], kind, index)

    def _record_paths(self, model_name: str, n_folds: int, n_permutations: int) -> list[Path]:
        """Where each fold and each of the first ``n_permutations`` permutations of a model is recorded."""
        paths = [self.path(model_name, "fold", fold) for fold in range(n_folds)]
        return paths + [self.path(model_name, "permutation", i) for i in range(n_permutations)]

    def all_recorded(self, model_name: str, n_folds: int, n_permutations: int) -> bool:
        """Whether every fold and the first ``n_permutations`` permutations of a model have intact records."""
        if self.progress is None:
            return False
        wanted = self._record_paths(model_name, n_folds, n_permutations)
        return all(path.is_file() for path in wanted) and all(self.progress.read(path) is not None for path in wanted)

    def count_recorded(self, model_name: str, n_folds: int, n_permutations: int) -> int:
        """How many of a model's folds and first ``n_permutations`` permutations have a record file (for the plan)."""
        if self.progress is None:
            return 0
        return sum(path.is_file() for path in self._record_paths(model_name, n_folds, n_permutations))

    def resume(self, paths: list[Path | None], decode) -> tuple[list[Any], list[int]]:
        """What the records already hold (decoded, ``None`` elsewhere), and the indices of the tasks still to run."""
        results: list[Any] = [None] * len(paths)
        todo = []
        for i, path in enumerate(paths):
            record = self.progress.read(path) if path is not None else None
            if record is None:
                todo.append(i)
            else:
                results[i] = decode(record)
        if len(todo) < len(paths):
            logger.info("Resuming: %d of %d task(s) read back from their records", len(paths) - len(todo), len(paths))
        return results, todo

    def recording(self, function, encode) -> RecordingCall:
        """``function``, recording each result where it finishes (with the output folder's key)."""
        return RecordingCall(function, encode, None if self.progress is None else self.progress.key)
