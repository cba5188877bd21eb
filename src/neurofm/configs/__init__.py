"""Experiment configuration as pydantic models.

Every config rejects unknown keys (a typo is an error, not a silently ignored
option) and round-trips through YAML with :meth:`ExperimentConfig.to_yaml`
and :meth:`ExperimentConfig.from_yaml`. Configs only validate; building models
and reading data happen elsewhere.
"""

from __future__ import annotations

from .base import BaseConfig
from .data import DataConfig, MoabbConfig, PreprocessingConfig, RunConfig
from .experiment import (
    CLASSIFICATION_METRICS,
    CV_STRATEGIES,
    GROUP_AWARE_STRATEGIES,
    GROUP_STRATEGIES,
    REGRESSION_METRICS,
    STRATIFIED_STRATEGIES,
    CVConfig,
    ExecutionConfig,
    ExperimentConfig,
    SweepsConfig,
    WindowConfig,
    group_key_ignored_message,
)
from .models import (
    AdaptationConfig,
    AttentiveProbeConfig,
    CheckpointConfig,
    ClassicalModelConfig,
    DeviceConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
    LoRAConfig,
    ModelConfig,
    NeuralFineTuneConfig,
    QuantizationConfig,
    RidgeProbeConfig,
    ScratchModelConfig,
    TrainerConfig,
)

__all__ = [
    "AdaptationConfig",
    "CLASSIFICATION_METRICS",
    "MoabbConfig",
    "ModelConfig",
    "REGRESSION_METRICS",
    "group_key_ignored_message",
    "BaseConfig",
    "CVConfig",
    "ClassicalModelConfig",
    "FoundationEmbeddingModelConfig",
    "FrozenBackboneDecoderConfig",
    "RidgeProbeConfig",
    "AttentiveProbeConfig",
    "LoRAConfig",
    "QuantizationConfig",
    "DeviceConfig",
    "CheckpointConfig",
    "TrainerConfig",
    "NeuralFineTuneConfig",
    "ScratchModelConfig",
    "PreprocessingConfig",
    "DataConfig",
    "ExecutionConfig",
    "WindowConfig",
    "SweepsConfig",
    "RunConfig",
    "ExperimentConfig",
    "CV_STRATEGIES",
    "GROUP_STRATEGIES",
    "GROUP_AWARE_STRATEGIES",
    "STRATIFIED_STRATEGIES",
]
