"""Experiment configuration as pydantic models.

Every config rejects unknown keys (a typo is an error, not a silently ignored
option) and round-trips through YAML with :meth:`ExperimentConfig.to_yaml`
and :meth:`ExperimentConfig.from_yaml`. Configs only validate; building models
and reading data happen elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from .exceptions import ConfigError
from .utils.check import closest_matches, format_choices

__all__ = [
    "BaseConfig",
    "CVConfig",
    "ClassicalModelConfig",
    "FoundationEmbeddingModelConfig",
    "FrozenBackboneDecoderConfig",
    "ExperimentConfig",
    "CV_STRATEGIES",
    "GROUP_STRATEGIES",
    "STRATIFIED_STRATEGIES",
]

CV_STRATEGIES = (
    "kfold",
    "stratified_kfold",
    "group_kfold",
    "stratified_group_kfold",
    "leave_one_group_out",
    "train_test_split",
)
GROUP_STRATEGIES = ("group_kfold", "stratified_group_kfold", "leave_one_group_out")
STRATIFIED_STRATEGIES = ("stratified_kfold", "stratified_group_kfold")


class BaseConfig(BaseModel):
    """Base of all neurofm configs: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class CVConfig(BaseConfig):
    """Outer cross-validation.

    Parameters
    ----------
    strategy : str
        One of ``kfold``, ``stratified_kfold``, ``group_kfold``,
        ``stratified_group_kfold``, ``leave_one_group_out``, ``train_test_split``.
    n_splits : int
        Number of folds (ignored by ``leave_one_group_out`` and ``train_test_split``).
    group_key : str | None
        Column of ``sample_metadata`` holding the group (e.g. subject) of each
        window. Required by the group strategies; with ``train_test_split`` it
        makes the split group-aware.
    shuffle : bool
        Shuffle before splitting (seeded by the experiment's ``random_state``).
    test_size : float
        Test fraction for ``train_test_split``.
    """

    strategy: Literal[CV_STRATEGIES] = "stratified_kfold"  # type: ignore[valid-type]
    n_splits: int = Field(5, ge=2)
    group_key: str | None = None
    shuffle: bool = True
    test_size: float = Field(0.2, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _group_key_for_group_strategies(self) -> CVConfig:
        if self.strategy in GROUP_STRATEGIES and not self.group_key:
            raise ValueError(
                f"CV strategy {self.strategy!r} splits by group but no group_key was given; "
                "set group_key to the sample_metadata column that holds the group (e.g. group_key='Subject')."
            )
        return self


class ClassicalModelConfig(BaseConfig):
    """A scikit-learn estimator, by name or import path.

    Parameters
    ----------
    estimator : str
        A scikit-learn estimator class name (``"LogisticRegression"``), a
        neurofm named pipeline (see ``neurofm.estimators.list_estimators()``),
        or an import path ``"package.module.ClassName"``.
    params : dict
        Keyword arguments for the estimator's constructor.
    """

    kind: Literal["classical"] = "classical"
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, value: str) -> str:
        from .estimators.classical import resolve_estimator_class

        resolve_estimator_class(value)  # raises with suggestions
        return value


class FoundationEmbeddingModelConfig(BaseConfig):
    """A frozen foundation backbone used as a feature extractor.

    Parameters
    ----------
    backend : {"braindecode", "hugging_face"}
        ``braindecode`` builds the registry's braindecode class; ``hugging_face``
        loads a transformers-format encoder with ``AutoModel``.
    model_key : str
        Registry key (see ``neurofm.list_foundation_models()``).
    weights : str | None
        ``"random"`` (explicit random initialisation), a local ``.pth``/``.pt``/
        ``.safetensors`` file, a local directory in the hub layout, or a hub id
        (``"org/name"``, optionally ``"org/name@revision"``) resolved through the
        local hub cache. ``None`` uses the registry's published checkpoint.
    pooling : {"mean", "max", "flatten", "cls"}
        How token features become one vector per window.
    cache_embeddings : bool
        Store embeddings in the content-addressed cache under ``cache_dir``.
    batch_size : int
        Windows per forward pass.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... or ``"auto"`` (CUDA when present).
    trust_remote_code : bool
        Allow a hugging_face checkpoint to run code shipped with it.
    model_kwargs : dict
        Architecture arguments passed to the backbone class (e.g. a smaller
        depth for tests). They become part of the backbone fingerprint.
    """

    kind: Literal["foundation_embedding"] = "foundation_embedding"
    backend: Literal["braindecode", "hugging_face"] = "braindecode"
    model_key: str
    weights: str | None = None
    pooling: Literal["mean", "max", "flatten", "cls"] = "mean"
    cache_embeddings: bool = True
    batch_size: int = Field(64, ge=1)
    device: str = "cpu"
    trust_remote_code: bool = False
    model_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model_key")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from .models.registry import get_model_spec

        return get_model_spec(value).key  # raises UnknownModelError with suggestions

    @model_validator(mode="after")
    def _pooling_supported(self) -> FoundationEmbeddingModelConfig:
        from .models.registry import get_model_spec

        spec = get_model_spec(self.model_key)
        if self.pooling not in spec.poolings:
            raise ValueError(
                f"pooling={self.pooling!r} is not available for {spec.key!r}; "
                f"use one of {format_choices(spec.poolings)}."
            )
        if self.backend not in spec.backends:
            raise ValueError(
                f"backend={self.backend!r} is not available for {spec.key!r}; use one of {format_choices(spec.backends)}."
            )
        return self


class FrozenBackboneDecoderConfig(BaseConfig):
    """Frozen backbone embeddings decoded by a classical estimator (mode 1)."""

    kind: Literal["frozen_backbone"] = "frozen_backbone"
    backbone: FoundationEmbeddingModelConfig
    head: ClassicalModelConfig = Field(
        default_factory=lambda: ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 1000})
    )


_KIND_BY_KEY = (("backbone", "frozen_backbone"), ("estimator", "classical"), ("model_key", "foundation_embedding"))


def _model_kind(value: Any) -> str | None:
    """Pick the model config class from its ``kind`` tag or, failing that, its keys."""
    if isinstance(value, BaseModel):
        return getattr(value, "kind", None)
    if isinstance(value, dict):
        if "kind" in value:
            return value["kind"]
        for key, kind in _KIND_BY_KEY:
            if key in value:
                return kind
    return None


ModelConfig = Annotated[
    Union[
        Annotated[FrozenBackboneDecoderConfig, Tag("frozen_backbone")],
        Annotated[ClassicalModelConfig, Tag("classical")],
    ],
    Discriminator(_model_kind),
]

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "f1_macro", "cohen_kappa")
REGRESSION_METRICS = ("r2", "mae", "rmse", "pearson")


class ExperimentConfig(BaseConfig):
    """A whole cross-validated decoding experiment.

    Parameters
    ----------
    task : {"classification", "regression"}
        What ``y`` is.
    models : dict of str to model config
        Named models to evaluate on the same folds.
    metrics : list of str | None
        Scores per fold. ``None`` uses ``accuracy``, ``balanced_accuracy`` and
        ``roc_auc`` (classification) or ``r2``, ``mae``, ``rmse``, ``pearson``.
    cv : CVConfig
        The outer cross-validation.
    cache_dir : str
        Root of the on-disk embedding cache (``~`` is expanded).
    random_state : int
        Seed for splits, heads and random initialisation of backbones.
    verbose : bool
        Progress bars and info logs.
    """

    task: Literal["classification", "regression"] = "classification"
    models: dict[str, ModelConfig]
    metrics: list[str] | None = None
    cv: CVConfig = Field(default_factory=CVConfig)
    cache_dir: str = "~/.cache/neurofm"
    random_state: int = 0
    verbose: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if not self.models:
            raise ValueError("models is empty; name at least one model, e.g. {'lr': ClassicalModelConfig(...)}.")
        allowed = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        for metric in self.metrics or []:
            if metric not in allowed:
                close = closest_matches(metric, allowed)
                hint = f" Did you mean {format_choices(close)}?" if close else ""
                raise ValueError(
                    f"metric {metric!r} is not available for task={self.task!r}; "
                    f"allowed metrics are {format_choices(allowed)}.{hint}"
                )
        if self.task == "regression" and self.cv.strategy in ("stratified_kfold", "stratified_group_kfold"):
            raise ValueError(
                f"CV strategy {self.cv.strategy!r} stratifies by class and cannot be used for regression; "
                "use 'kfold' or 'group_kfold'."
            )
        return self

    @property
    def resolved_metrics(self) -> list[str]:
        """The metrics to compute, with the task's defaults filled in."""
        if self.metrics:
            return list(self.metrics)
        return list(CLASSIFICATION_METRICS[:3] if self.task == "classification" else REGRESSION_METRICS)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Serialise to YAML; write it to ``path`` when given."""
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, source: str | Path) -> ExperimentConfig:
        """Load from a YAML file path or a YAML string."""
        text = Path(source).read_text() if _looks_like_path(source) else str(source)
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ConfigError(f"The YAML config must be a mapping of keys to values, got {type(data).__name__}.")
        return cls.model_validate(data)


def _looks_like_path(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    return "\n" not in source and (source.endswith((".yaml", ".yml")) or Path(source).is_file())
