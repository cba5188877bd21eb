"""Installed versions of the packages a result or an embedding depends on."""

from __future__ import annotations

import importlib.metadata as md

__all__ = ["package_versions"]


def package_versions(names: tuple[str, ...] | list[str]) -> dict[str, str | None]:
    """Each package's installed version, ``None`` for one that is not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out
