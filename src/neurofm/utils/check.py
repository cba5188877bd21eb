"""Argument checks whose messages name the fix."""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Iterable
from typing import Any

from ..exceptions import ConfigError, MissingDependencyError

__all__ = [
    "available_memory",
    "check_fits_in_memory",
    "check_option",
    "closest_matches",
    "soft_import",
    "validate_type",
    "format_choices",
]


def format_choices(values: Iterable[Any]) -> str:
    """Render allowed values as ``'a', 'b', and 'c'``."""
    quoted = [repr(v) for v in values]
    if len(quoted) <= 1:
        return "".join(quoted)
    if len(quoted) == 2:
        return f"{quoted[0]} and {quoted[1]}"
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def closest_matches(value: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Candidates that look like ``value`` (case-insensitive), best first."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(value.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def check_option(name: str, value: Any, allowed: Iterable[Any], error: type[Exception] = ConfigError) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise with the choices.

    Parameters
    ----------
    name : str
        What the value is, as the user would call it.
    value : object
        The value to check.
    allowed : iterable
        The accepted values.
    error : type of Exception
        The exception class to raise.
    """
    allowed = list(allowed)
    if value in allowed:
        return value
    hint = ""
    if isinstance(value, str):
        close = closest_matches(value, [a for a in allowed if isinstance(a, str)])
        if close:
            hint = f" Did you mean {format_choices(close)}?"
    raise error(f"Invalid value for {name}: {value!r}. Allowed values are {format_choices(allowed)}.{hint}")


def validate_type(item: Any, types: type | tuple[type, ...], item_name: str) -> Any:
    """Raise ``TypeError`` naming the expected types unless ``item`` is one of them."""
    if isinstance(item, types):
        return item
    names = [t.__name__ for t in (types if isinstance(types, tuple) else (types,))]
    raise TypeError(f"{item_name} must be an instance of {' or '.join(names)}, got {type(item).__name__} instead.")


def soft_import(module: str, purpose: str, extra: str | None = None) -> Any:
    """Import an optional dependency or say how to install it.

    Parameters
    ----------
    module : str
        Module to import, e.g. ``"transformers"``.
    purpose : str
        What the user asked for that needs it.
    extra : str | None
        The neurofm extra that installs it, if any.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        how = f"pip install 'neurofm[{extra}]'" if extra else f"pip install {module}"
        raise MissingDependencyError(
            f"{purpose} needs the optional package {module!r}; install it with: {how}"
        ) from exc


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux: MemAvailable); ``None`` where it cannot tell."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(n_bytes: float, what: str, fix: str) -> None:
    """Refuse, before doing it, work that needs more memory than the machine has left.

    Parameters
    ----------
    n_bytes : float
        What the work would allocate, estimated.
    what : str
        The work and the setting that sizes it (``"preprocessing.resample=1e9 Hz"``).
    fix : str
        What to change.

    Raises
    ------
    ConfigError
        When ``n_bytes`` exceeds the memory available now.
    """
    available = available_memory()
    if available is not None and n_bytes > available:
        raise ConfigError(
            f"{what} would need about {n_bytes / 2**30:.1f} GiB of memory, more than the {available / 2**30:.1f} GiB "
            f"this machine has available; {fix}"
        )
