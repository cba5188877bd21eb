"""Exceptions raised by neurofm.

Every error neurofm raises on purpose derives from :class:`NeuroFMError`::

    NeuroFMError
    ├── ConfigError              a config value is invalid or inconsistent
    ├── UnknownModelError        a model key is not in the registry (also KeyError)
    ├── DataValidationError      windows, labels or metadata cannot be used as given
    │   └── CVSplitError         the requested cross-validation cannot be honoured
    ├── AdaptationError          an input cannot be adapted to what a backbone expects
    ├── WeightsError             weights cannot be found or do not fit the architecture
    ├── ModelFitError            a model failed while fitted or scored on one fold
    ├── StorageError             a file cannot be written (full disk, quota) (also OSError)
    └── MissingDependencyError   an optional package is needed (also ImportError)

Each message names the problem and the fix. Errors about the user's input are
raised before any forward pass or fit, so nothing already computed is lost.
"""

from __future__ import annotations

__all__ = [
    "NeuroFMError",
    "ConfigError",
    "UnknownModelError",
    "DataValidationError",
    "CVSplitError",
    "AdaptationError",
    "WeightsError",
    "ModelFitError",
    "StorageError",
    "MissingDependencyError",
]


class NeuroFMError(Exception):
    """Base class of every error neurofm raises on purpose."""


class ConfigError(NeuroFMError, ValueError):
    """A configuration value is invalid or inconsistent with another."""


class UnknownModelError(NeuroFMError, KeyError):
    """A model key is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataValidationError(NeuroFMError, ValueError):
    """Windows, labels or sample metadata cannot be used as given."""


class CVSplitError(DataValidationError):
    """The requested cross-validation cannot be honoured on this data."""


class AdaptationError(NeuroFMError, ValueError):
    """An input cannot be adapted to what a backbone expects."""


class WeightsError(NeuroFMError, RuntimeError):
    """Weights cannot be found, read, or do not fit the architecture."""


class ModelFitError(NeuroFMError, RuntimeError):
    """A model failed on one fold; the original error is chained as ``__cause__``.

    Folds that finished before are kept: with an output folder they are
    recorded, and the next run resumes after them.
    """


class StorageError(NeuroFMError, OSError):
    """A file could not be written: the disk is full, a quota is reached, or the folder is read-only.

    Files are written whole or not at all, so what was written before is intact.
    """


class MissingDependencyError(NeuroFMError, ImportError):
    """An optional dependency is needed for the requested feature."""
