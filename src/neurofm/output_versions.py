"""An output folder reused with another config: what changed is said before any compute, and the result already
there is kept as a version (``versions/<time>/``), never replaced in silence."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from .policy import load_yaml
from .utils.files import MARKER_NAME

__all__ = ["RESULT_FILES", "VERSIONS_FOLDER", "config_changes", "keep_previous_result"]

logger = logging.getLogger("neurofm")

#: Where earlier results of an output folder are kept, one ``<UTC time>`` folder each.
VERSIONS_FOLDER = "versions"
#: The files that make up a saved result (its progress records and refit models stay: they are keyed by content).
RESULT_FILES = (
    "scores.parquet",
    "predictions.parquet",
    "splits.parquet",
    "artifacts.parquet",
    "metadata.parquet",
    "config.yaml",
    "meta.json",
    "report.html",
)
#: Config keys that say where and how a run works, not what it computes.
_PLACES = ("output_dir", "cache_dir", "shared_folders", "shared_key_file", "execution", "verbose")


def _saved_config(folder: Path) -> dict[str, Any] | None:
    path = folder / "config.yaml"
    if not path.is_file() or path.is_symlink():
        return None
    try:
        saved = load_yaml(path.read_text())
    except Exception:  # noqa: BLE001 - a damaged file is a result to keep, whatever it holds
        return {}
    return saved if isinstance(saved, dict) else {}


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def config_changes(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, list[str]]:
    """What differs between a saved result's config and a new one, on the keys both have: models added, removed
    and changed, and the other settings changed."""
    old_models, new_models = saved.get("models") or {}, new.get("models") or {}
    keys = (set(saved) & set(new)) - {"models", *_PLACES}
    return {
        "added": [m for m in new_models if m not in old_models],
        "removed": [m for m in old_models if m not in new_models],
        "changed": [m for m in new_models if m in old_models and not _same(old_models[m], new_models[m])],
        "settings": sorted(k for k in keys if not _same(saved[k], new[k])),
    }


def keep_previous_result(folder: str | Path, new_config: dict[str, Any]) -> Path | None:
    """Move the result saved in ``folder`` into ``folder/versions/<time>/`` when its config differs from
    ``new_config``, saying what changed; the version folder, or ``None`` when nothing was moved.

    Only keys both configs have are compared: ``neurofm run`` saves its run config over the experiment's own.
    """
    folder = Path(folder).expanduser()
    if not (folder / MARKER_NAME).is_file():
        return None  # not a folder of neurofm's own: nothing in it is moved (claiming it refuses it)
    saved = _saved_config(folder)
    if saved is None:
        return None
    changes = config_changes(saved, new_config)
    if saved and not any(changes.values()):
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    version = folder / VERSIONS_FOLDER / stamp
    suffix = 1
    while version.exists():
        version = folder / VERSIONS_FOLDER / f"{stamp}-{suffix}"
        suffix += 1
    version.mkdir(parents=True)
    for name in RESULT_FILES:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            os.replace(path, version / name)
    logger.warning("%s", _describe(folder, changes, version, bool(saved)))
    return version


def _describe(folder: Path, changes: dict[str, list[str]], version: Path, readable: bool) -> str:
    if not readable:
        what = "a result whose config cannot be read"
    else:
        parts = [
            f"models {label} {names}"
            for label, names in (("added", changes["added"]), ("removed", changes["removed"]))
            if names
        ]
        if changes["changed"]:
            parts.append(f"models changed {changes['changed']} (computed again)")
        if changes["settings"]:
            parts.append(f"settings changed: {', '.join(changes['settings'])}")
        what = "a result of another config: " + "; ".join(parts)
    return (
        f"{folder} holds {what}. Models whose config, data and folds are unchanged resume from the folder's "
        f"records; the others are computed. The previous result is kept in {version}."
    )
