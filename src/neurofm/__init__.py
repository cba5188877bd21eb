"""neurofm: decode EEG/MEG with foundation models in leak-free cross-validated experiments."""

from .exceptions import (
    AdaptationError,
    ConfigError,
    CVSplitError,
    DataValidationError,
    MissingDependencyError,
    ModelFitError,
    NeuroFMError,
    StorageError,
    UnknownModelError,
    WeightsError,
)
from .experiment import Experiment
from .export import load_exported
from .models.registry import create_backbone, get_model_spec, list_foundation_models
from .policy import allow_imports
from .protocols import NeuralTrainable
from .results import ExperimentResult

__version__ = "0.1.0"

__all__ = [
    "AdaptationError",
    "ConfigError",
    "CVSplitError",
    "DataValidationError",
    "Experiment",
    "ExperimentResult",
    "MissingDependencyError",
    "ModelFitError",
    "NeuralTrainable",
    "NeuroFMError",
    "StorageError",
    "UnknownModelError",
    "WeightsError",
    "allow_imports",
    "create_backbone",
    "get_model_spec",
    "list_foundation_models",
    "load_exported",
]
