"""The neurofm logger."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

logger = logging.getLogger("neurofm")
if not logger.handlers:
    _handler = logging.StreamHandler()
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
