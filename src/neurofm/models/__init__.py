"""Model registry: one :class:`ModelSpec` per backbone, one constructor."""

from .registry import create_backbone, get_model_spec, list_foundation_models, list_model_keys
from .specs import ModelSpec

__all__ = ["ModelSpec", "create_backbone", "get_model_spec", "list_foundation_models", "list_model_keys"]
