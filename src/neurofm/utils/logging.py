"""The neurofm logger."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class _AboveProgressBars(logging.StreamHandler):
    """Writes each record on a line of its own above any tqdm progress bar, never glued to a bar's line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # deferred: tqdm loads when the first line is logged, not with import neurofm
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging never raises into the run: the handler reports it, as logging's do
            self.handleError(record)


logger = logging.getLogger("neurofm")
if not logger.handlers:
    _handler = _AboveProgressBars()
    _handler.setFormatter(logging.Formatter("%(levelname)s [neurofm] %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

__all__ = ["log_level", "logger", "set_log_level"]


def set_log_level(verbose: bool | str | int | None) -> None:
    """Set the neurofm log level: True/None = INFO, False = WARNING, or a level name."""
    logger.setLevel(_level(verbose))


@contextlib.contextmanager
def log_level(verbose: bool | str | int | None) -> Iterator[None]:
    """The neurofm log level of :func:`set_log_level` for the duration of a call, then the caller's again."""
    previous = logger.level
    logger.setLevel(_level(verbose))
    try:
        yield
    finally:
        logger.setLevel(previous)


def _level(verbose: bool | str | int | None) -> int:
    if verbose is None or verbose is True:
        level = logging.INFO
    elif verbose is False:
        level = logging.WARNING
    elif isinstance(verbose, str):
        level = logging.getLevelName(verbose.upper())
    else:
        level = int(verbose)
    return level
