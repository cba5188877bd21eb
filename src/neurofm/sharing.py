"""Who may have written what neurofm reads back: private folders, and shared ones whose entries carry a key.

neurofm reads back what earlier runs wrote: embedding packs and weight
digests in ``cache_dir``, progress records in an output folder. An entry's
checksum catches damage, but anyone who can write the folder can also write
an entry with a valid checksum. So neurofm reads these entries only

- from a **private** folder: it and the folders below it down to the entry
  are owned by this user (or root) and not writable by group or others; or
- from a folder **declared shared** (``shared_folders: true``): every entry
  then carries a keyed checksum (blake2b with a secret key, an HMAC) that only
  holders of the key can make. The key is this user's own
  (``~/.config/neurofm/shared-folders.key``, made on first use) or a group's
  (``shared_key_file``: a file its members can read and nobody else can).
  Entries made with another key are not read, and left as they are.

A folder writable by others and not declared shared is refused before
anything is read from it, with the fix in the message.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .exceptions import ConfigError

__all__ = [
    "EntryKey",
    "SharedFolderError",
    "check_key_file_declared",
    "check_trusted_folder",
    "default_key_file",
    "entry_key",
    "make_folders",
    "share_with_group",
]

_KEY_FILE_NAME = "shared-folders.key"
# Entries of a shared folder are readable by its group, whose members may hold its key; the folder's mode decides
# who that group reaches.
_SHARED_ENTRY_MODE = 0o640
_MIN_KEY_CHARS = 16  # a key file holds at least this many characters of secret


class SharedFolderError(ConfigError):
    """A folder or key file others could have written: its entries cannot be trusted."""


@dataclass(frozen=True)
class EntryKey:
    """The secret that authenticates entries in shared folders.

    Parameters
    ----------
    secret : bytes
        32 bytes derived from the key file (never shown by ``repr``).
    source : str
        The key file it was read from (for messages).
    """

    secret: bytes = field(repr=False)
    source: str

    @property
    def key_id(self) -> str:
        """A public name of the key (16 hex characters): entries name it; it tells nothing of the secret."""
        return hashlib.blake2b(b"key-id", key=self.secret, digest_size=8, person=b"neurofm-keyid").hexdigest()

    def sign(self, person: bytes, *parts: bytes, digest_size: int = 16) -> str:
        """Keyed blake2b (an HMAC) of ``parts``, separated by ``person`` (at most 16 bytes) per kind of entry."""
        digest = hashlib.blake2b(key=self.secret, digest_size=digest_size, person=person)
        for part in parts:
            digest.update(len(part).to_bytes(8, "little"))  # no two splits of the same bytes sign alike
            digest.update(part)
        return digest.hexdigest()


def default_key_file() -> Path:
    """This user's key file: ``$XDG_CONFIG_HOME/neurofm/shared-folders.key`` (``~/.config`` by default)."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home).expanduser() / "neurofm" / _KEY_FILE_NAME


def entry_key(shared_folders: bool, shared_key_file: str | os.PathLike | None = None) -> EntryKey | None:
    """The key that authenticates entries, or ``None`` when the folders are private.

    Parameters
    ----------
    shared_folders : bool
        Whether the cache and output folders may be written by others.
    shared_key_file : path-like | None
        A group's key file. ``None``: this user's own key, made (mode 0600)
        on first use.

    Raises
    ------
    SharedFolderError
        When the key file may be read or written by others, or is too short.
    ConfigError
        When a key file is given without ``shared_folders``.
    """
    check_key_file_declared(shared_folders, shared_key_file)
    if not shared_folders:
        return None
    if shared_key_file is None:
        path = default_key_file()
        if not path.exists():
            _make_key_file(path)
    else:
        path = Path(shared_key_file).expanduser()
    return _read_key_file(path)


def check_key_file_declared(shared_folders: bool, shared_key_file: str | os.PathLike | None) -> None:
    """Refuse a key file for folders that are not declared shared (it would authenticate nothing).

    Raises
    ------
    ConfigError
        When ``shared_key_file`` is given and ``shared_folders`` is false.
    """
    if shared_key_file is not None and not shared_folders:
        raise ConfigError(
            "shared_key_file is given but shared_folders is false; set shared_folders: true to "
            "authenticate entries with that key, or remove shared_key_file."
        )


def share_with_group(path: str | Path, key: EntryKey | None) -> None:
    """Make a new entry readable by the group of a shared folder (``key`` given); a private one stays 0600."""
    if key is not None:
        os.chmod(path, _SHARED_ENTRY_MODE)


def _make_key_file(path: Path) -> None:
    """A new random key at ``path`` (0600 in a 0700 folder); a key another process made first is kept."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # never replaces: two runs making a key at once agree on the first one
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def _read_key_file(path: Path) -> EntryKey:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise SharedFolderError(
            f"Cannot read the key file {path} ({exc.strerror}); give a key file you can read "
            "(shared_key_file), or remove shared_key_file to use your own key."
        ) from exc
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SharedFolderError(f"The key file {path} is not a regular file.")
        if info.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
            raise SharedFolderError(
                f"The key file {path} has mode {stat.S_IMODE(info.st_mode):04o}: "
                f"{'anyone' if info.st_mode & stat.S_IRWXO else 'its group'} can "
                f"{'read or write' if info.st_mode & stat.S_IRWXO else 'write'} it, and so forge entries. "
                f"Fix: chmod 600 {path} (your own key) or chmod 640 {path} (a group's key)."
            )
        text = fh.read(4096).strip()
    if len(text) < _MIN_KEY_CHARS:
        raise SharedFolderError(
            f"The key file {path} holds {len(text)} characters; a key needs at least "
            f"{_MIN_KEY_CHARS} random ones, e.g. python -c 'import secrets; "
            f"print(secrets.token_hex(32))' > {path}"
        )
    secret = hashlib.blake2b(text, digest_size=32, person=b"neurofm-key").digest()
    return EntryKey(secret, str(path))


def _writable_by_others(info: os.stat_result) -> str | None:
    """Why others could write a folder with this status, or ``None``."""
    if info.st_uid not in (os.getuid(), 0):  # its owner may change its mode at any time
        return f"it belongs to user {info.st_uid}"
    if info.st_mode & stat.S_IWOTH:
        return f"anyone can write it (mode {stat.S_IMODE(info.st_mode):04o})"
    if info.st_mode & stat.S_IWGRP:
        return f"its group (gid {info.st_gid}) can write it (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def check_trusted_folder(
    folder: str | Path, root: str | Path, key: EntryKey | None, kind: str, *, shareable: bool = True
) -> None:
    """Refuse to read entries from ``folder`` when others could have written them and no key authenticates them.

    Checks ``root`` and every existing folder below it down to ``folder``:
    whoever can write one of them can plant or swap what lies below.

    Parameters
    ----------
    folder : str | Path
        The folder the entries are read from (inside ``root``).
    root : str | Path
        The folder the user named (``cache_dir``, an output folder).
    key : EntryKey | None
        The key of a folder declared shared; ``None`` for a private one.
    kind : str
        What the folder is, as the message names it (``"cache_dir"``).
    shareable : bool
        Whether the folder may be declared shared (a pretraining run's folder
        may not: it belongs to one run); the message offers the fixes there are.

    Raises
    ------
    SharedFolderError
        When a folder on the way is writable by others and ``key`` is None.
    """
    if key is not None:
        return
    root, folder = Path(root).expanduser(), Path(folder).expanduser()
    parts = folder.relative_to(root).parts
    for path in [root, *(root.joinpath(*parts[:depth]) for depth in range(1, len(parts) + 1))]:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return  # nothing below a missing folder to read
        reason = _writable_by_others(info)
        if reason is not None:
            share = (
                (
                    ", or declare it shared (shared_folders: true; Python: shared_folders=True) so that every entry "
                    "is authenticated with your key, or with a group's key (shared_key_file)"
                )
                if shareable
                else ""
            )
            raise SharedFolderError(
                f"{kind} {root} cannot be trusted: {path} can be written by others ({reason}), so anyone there could "
                "plant files (embeddings, records, digests, checkpoints) that this run would read back as its own. "
                f"Fix: keep it private (chmod go-w {path}, owned by you){share}."
            )


def make_folders(folder: str | Path, key: EntryKey | None) -> Path:
    """``folder`` and its missing parents, private (not writable by group or others) unless shared.

    A user's umask may make new folders group-writable (002); folders that
    neurofm will trust later must not be, so a private one is made 0755. A
    shared one follows the umask, so that the group may add entries.
    """
    folder = Path(folder).expanduser()
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o777 if key is not None else 0o755)
        except FileExistsError:
            pass
    return folder
