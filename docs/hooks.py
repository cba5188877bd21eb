"""MkDocs hooks: the model registry's table, and a sandbox for the examples the pages run.

Pages that show the model registry get its tables at build time, so they never disagree with it.

The examples in the pages run at build time (markdown-exec, ``exec="on"``). For the length of each build, commands
they start find this Python's ``neurofm`` first on ``PATH``, download nothing (``HF_HUB_OFFLINE``) and have ``HOME``
and ``TMPDIR`` in a fresh temporary folder, deleted after the build: ``~/.cache/neurofm`` (the default embedding
cache of a config) and every other cache under ``~`` land there. The configs of ``examples/`` read the recordings
in ``../shared/data`` beside the checkout, as the tests do; a build without them warns at once.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

MODEL_TABLE_MARK = "<!-- model-table -->"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
_build: dict = {}  # this build's sandbox folder and the environment it replaced
log = logging.getLogger("mkdocs.hooks.neurofm")


def model_table() -> str:
    """The registry's models as a markdown table (what ``neurofm models`` prints)."""
    from neurofm import list_foundation_models

    table = list_foundation_models()
    columns = {
        "key": "key",
        "display_name": "model",
        "hub_repo": "published weights (Hugging Face)",
        "embedding_dim": "embedding",
        "sfreq": "rate (Hz)",
        "channels": "channels",
        "sensors": "sensors",
        "train_modes": "train modes",
        "backend": "backends",
    }
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for row in table.to_dict("records"):
        cells = [f"`{row['key']}`", *(str(row[c]) for c in list(columns)[1:])]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs' hook signature
    if MODEL_TABLE_MARK in markdown:
        markdown = markdown.replace(MODEL_TABLE_MARK, model_table())
    return markdown


def on_config(config):
    """Give the examples' commands this Python's ``neurofm`` and a temporary home, offline."""
    if not SHARED_DATA.is_dir():  # a warning: it fails a --strict build, and `mkdocs serve` still shows the rest
        log.warning(
            "%s is missing: the Examples page runs the configs of examples/ on the recordings there "
            "(its README.md names their sources).",
            SHARED_DATA,
        )
    sandbox = tempfile.mkdtemp(prefix="neurofm-docs-")  # before TMPDIR changes: this process keeps its own
    changes = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "HOME": sandbox,
        "TMPDIR": sandbox,
        "HF_HUB_OFFLINE": "1",
    }
    _build.update(sandbox=sandbox, saved={name: os.environ.get(name) for name in changes})
    os.environ.update(changes)
    return config


def _restore() -> None:
    for name, value in _build.pop("saved", {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if "sandbox" in _build:
        shutil.rmtree(_build.pop("sandbox"), ignore_errors=True)


def on_post_build(config) -> None:  # noqa: ARG001 - MkDocs' hook signature
    _restore()


def on_build_error(error) -> None:  # noqa: ARG001 - MkDocs' hook signature
    _restore()
