"""The neurofm logger."""

from __future__ import annotations

import logging

logger = logging.getLogger("neurofm")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s [neurofm] %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

__all__ = ["logger", "set_log_level"]


def set_log_level(verbose: bool | str | int | None) -> None:
    """Set the neurofm log level: True/None = INFO, False = WARNING, or a level name."""
    if verbose is None or verbose is True:
        level = logging.INFO
    elif verbose is False:
        level = logging.WARNING
    elif isinstance(verbose, str):
        level = logging.getLevelName(verbose.upper())
    else:
        level = int(verbose)
    logger.setLevel(level)
