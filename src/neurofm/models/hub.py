"""Checkpoints from a Hugging Face hub: found in the local cache, or downloaded once on first use.

Everything goes through ``huggingface_hub`` (its cache layout, partial-file
handling and progress bars); this module decides *when* to ask the network
and turns its failures into errors that name the fix.

The environment is read at each call, not at import, so a notebook that sets
a variable takes effect: ``HF_ENDPOINT`` (a mirror or a test server),
``HF_HUB_CACHE`` / ``HF_HOME`` (where checkpoints live), ``HF_HUB_OFFLINE``
(never ask the network: the cache or a clear error) and ``HF_TOKEN`` (gated
or private repositories).

A revision that is a commit (``org/name@<40 hex>``) is immutable: once in the
cache it is served without any request. A branch or tag (``main``) is asked
for at each resolution (offline: the commit the cache last resolved it to);
the commit enters the weights' identity, so a moved branch never serves
embeddings or results of the old one, and an estimator loads the very commit
it identified (:meth:`neurofm.models.weights.WeightsSource.pinned`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import WeightsError

__all__ = ["HubSnapshot", "fetch_snapshot", "hub_cache_dir", "hub_endpoint", "hub_offline", "snapshot_size"]

_DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class HubSnapshot:
    """A checkpoint's files in the local cache, and the commit they are."""

    repo: str
    revision: str | None
    commit: str
    path: Path


def hub_endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT``, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or _DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """Where checkpoints are cached, as ``huggingface_hub`` decides it, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):  # the older name huggingface_hub still reads
        return Path(os.path.expandvars(os.environ["HUGGINGFACE_HUB_CACHE"])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hub_offline() -> bool:
    """Whether the network must not be asked (``HF_HUB_OFFLINE``, or ``TRANSFORMERS_OFFLINE``, set true)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "true", "yes", "on")


def fetch_snapshot(repo: str, revision: str | None, *, model: str, files: list[str] | None = None) -> HubSnapshot:
    """The files of ``repo`` at ``revision``: from the cache, or downloaded into it.

    Parameters
    ----------
    repo : str
        ``org/name``.
    revision : str | None
        A commit, branch or tag (``None``: ``main``).
    model : str
        The registry key the checkpoint is for (named in errors, and in the
        ``neurofm download`` command they suggest).
    files : list of str | None
        The files wanted (names or patterns); ``None``: every file of the repository.

    Returns
    -------
    snapshot : HubSnapshot

    Raises
    ------
    WeightsError
        When the repository, revision or a file does not exist, the repository
        is gated or private without access, or the checkpoint is not cached and
        the hub cannot be asked (offline, or unreachable). A download cut short
        leaves nothing that a later run would read as the checkpoint.
    """
    from huggingface_hub import snapshot_download  # start-up: would add ~250 ms to import neurofm

    endpoint, cache_dir, offline = hub_endpoint(), hub_cache_dir(), hub_offline()
    asked = revision or "main"  # a commit in the cache is served by huggingface_hub without a request
    try:
        path = Path(
            snapshot_download(
                repo_id=repo,
                revision=asked,
                cache_dir=str(cache_dir),
                endpoint=endpoint,
                local_files_only=offline,
                allow_patterns=files,
            )
        )
    except Exception as exc:  # noqa: BLE001 - every failure of the hub client becomes one error naming the fix
        raise _download_error(exc, repo, revision, model, endpoint, offline) from exc
    return HubSnapshot(repo, revision, path.name, path)


def snapshot_size(path: Path) -> int:
    """Bytes of a snapshot's files (what the links point to)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _revision_text(revision: str | None) -> str:
    return f"@{revision}" if revision else ""


def _not_cached(repo: str, revision: str | None, model: str, why: str) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (
        f"The hub checkpoint {repo}{_revision_text(revision)} for {model!r} is not in the local Hugging Face cache "
        f"({hub_cache_dir()}), and {why}. On a machine with internet and the same cache (e.g. a login node), run "
        f"`neurofm download {model}{rev}` (or `hf download {repo}{rev}`); or pass a local file or directory, or "
        "weights='random'."
    )


def _download_error(
    exc: Exception, repo: str, revision: str | None, model: str, endpoint: str, offline: bool
) -> WeightsError:
    # start-up: as in fetch_snapshot
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo}{_revision_text(revision)}"
    if isinstance(exc, GatedRepoError):
        return WeightsError(
            f"The hub repository {repo} (for {model!r}) is gated: request access on {endpoint}/{repo}, then log in "
            "with `hf auth login` or set HF_TOKEN to a token of the account that was granted access."
        )
    if isinstance(exc, RepositoryNotFoundError):
        return WeightsError(
            f"The hub repository {repo} (for {model!r}) was not found at {endpoint}. Check the name; if it is "
            "private, log in with `hf auth login` or set HF_TOKEN."
        )
    if isinstance(exc, RevisionNotFoundError):
        return WeightsError(f"The revision {revision!r} does not exist in the hub repository {repo} (for {model!r}).")
    if isinstance(exc, LocalEntryNotFoundError):  # before EntryNotFoundError: it is one
        why = (
            "downloads are off here (HF_HUB_OFFLINE is set)"
            if offline
            else f"the hub at {endpoint} could not be reached"
        )
        return WeightsError(_not_cached(repo, revision, model, why))
    if isinstance(exc, EntryNotFoundError):
        return WeightsError(f"A file of the hub checkpoint {where} (for {model!r}) is missing on {endpoint}: {exc}")
    return WeightsError(
        f"Downloading the hub checkpoint {where} for {model!r} from {endpoint} failed ({type(exc).__name__}: {exc}). "
        "Nothing partial is used: run again to resume, or download it with "
        f"`neurofm download {model}` on a machine with a working connection."
    )
