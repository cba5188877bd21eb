"""Experiment configuration as pydantic models.

Every config rejects unknown keys (a typo is an error, not a silently ignored
option) and round-trips through YAML with :meth:`ExperimentConfig.to_yaml`
and :meth:`ExperimentConfig.from_yaml`. Configs only validate; building models
and reading data happen elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from .exceptions import ConfigError
from .utils.check import closest_matches, format_choices
from .utils.files import atomic_write

__all__ = [
    "BaseConfig",
    "CVConfig",
    "ClassicalModelConfig",
    "FoundationEmbeddingModelConfig",
    "FrozenBackboneDecoderConfig",
    "LoRAConfig",
    "QuantizationConfig",
    "DeviceConfig",
    "CheckpointConfig",
    "TrainerConfig",
    "NeuralFineTuneConfig",
    "PreprocessingConfig",
    "DataConfig",
    "ExecutionConfig",
    "WindowConfig",
    "RunConfig",
    "ExperimentConfig",
    "CV_STRATEGIES",
    "GROUP_STRATEGIES",
    "GROUP_AWARE_STRATEGIES",
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
# The strategies that keep a group_key's groups apart: the group strategies, and train_test_split, which
# splits by group when a group_key is given. The others (kfold, stratified_kfold) would ignore it.
GROUP_AWARE_STRATEGIES = GROUP_STRATEGIES + ("train_test_split",)
STRATIFIED_STRATEGIES = ("stratified_kfold", "stratified_group_kfold")


class BaseConfig(BaseModel):
    """Base of all neurofm configs: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Serialise to YAML; write it to ``path`` when given."""
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        if path is not None:
            atomic_write(path, lambda tmp: tmp.write_text(text))
        return text

    @classmethod
    def from_yaml(cls, source: str | Path, *, allow_imports: str | Sequence[str] = ()) -> Any:
        """Load from a YAML file path or a YAML string.

        YAML is read as plain data (no tag can build a Python object, and a
        few aliases cannot stand for billions of values: see
        :mod:`neurofm.policy`). Whatever is wrong with the file raises a
        :class:`~neurofm.exceptions.ConfigError` naming each bad field.

        Parameters
        ----------
        source : str | Path
            A file path, or the YAML text itself.
        allow_imports : str | sequence of str
            Your own top-level packages whose estimators the config may name
            by import path, as :func:`neurofm.allow_imports` allows them (for
            this process). A config file alone can never allow an import.
        """
        from .policy import allow_imports as allow
        from .policy import load_yaml

        if allow_imports:
            allow(allow_imports)
        where = f" in {source}" if isinstance(source, Path) or _looks_like_path(source) else ""
        try:
            text = Path(source).read_text() if where else str(source)
            data = load_yaml(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read the config{where}: {exc}.") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"The config{where} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"The YAML config must be a mapping of keys to values, got {type(data).__name__}.")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or '(top level)'}: {error['msg']}" for error in exc.errors()
            )
            raise ConfigError(f"Invalid {cls.__name__}{where}: {problems}.") from exc


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
        window; no group is then ever on both sides of a fold. Required by the
        group strategies; with ``train_test_split`` it makes the split
        group-aware; ``kfold`` and ``stratified_kfold`` would ignore it, so
        they refuse it.
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
        if self.group_key and self.strategy not in GROUP_AWARE_STRATEGIES:
            raise ValueError(group_key_ignored_message(self.strategy, self.group_key))
        return self

    @property
    def keeps_groups_apart(self) -> bool:
        """Whether no group of ``group_key`` can be on both sides of a fold."""
        return bool(self.group_key) and self.strategy in GROUP_AWARE_STRATEGIES


def group_key_ignored_message(strategy: str, group_key: str) -> str:
    """Why a group_key with a strategy that ignores groups is refused, and what to use instead."""
    return (
        f"CV strategy {strategy!r} ignores groups, so with group_key={group_key!r} windows of one group would be "
        f"in the training and the test partition of every fold; use one of the group-aware strategies "
        f"{format_choices(GROUP_AWARE_STRATEGIES)} (train_test_split splits by group when group_key is set), "
        "or remove group_key."
    )


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

    Notes
    -----
    On raw windows the estimator sees microvolts for EEG and EEG-equivalent
    microvolts for MEG (a first ``units`` step, the rule every backbone gets),
    so that sensor types share one scale; a plain scikit-learn estimator sees
    each window flattened to one vector.
    """

    kind: Literal["classical"] = "classical"
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, value: str) -> str:
        from .estimators.classical import NAMED_ESTIMATORS, resolve_estimator_class
        from .policy import check_estimator_import

        if "." in value and value not in NAMED_ESTIMATORS:
            check_estimator_import(value)  # before importing anything: a config may not choose the code to run
        resolve_estimator_class(value)  # raises with suggestions
        return value

    @field_validator("params")
    @classmethod
    def _params_are_data(cls, value: dict[str, Any]) -> dict[str, Any]:
        from .policy import check_estimator_params_are_data

        check_estimator_params_are_data(value)
        return value


class AdaptationConfig(BaseConfig):
    """Input conventions of the backbone's pretraining that neurofm reproduces, each of which can be turned off.

    By default a backbone receives what its published weights saw in
    pretraining (see the model's ``sources`` in ``neurofm models --details
    KEY`` and the fidelity table in ``docs/fidelity.md``). Each option here
    names the alternative for a user who wants it; the adaptation record
    (``plan_.steps``, and the result's artifacts) says which was taken, and it
    is part of the embedding cache key.

    Parameters
    ----------
    reference : {"pretraining", "as_recorded"}
        ``pretraining``: re-reference as the pretraining data were (EEGPT and
        SignalJEPA: the average of the channels the model receives; the
        others: as recorded). ``as_recorded``: never re-reference.
    untrained_channels : {"pretraining", "feed"}
        Input slots whose weights never saw signal in pretraining.
        ``pretraining``: leave them as pretraining did (EEGPT: AF7, AF8, PO5
        and PO6 are not fed; BENDR: its T7 and T8 slots are zero).
        ``feed``: give them the recorded signal anyway.
    normalization_statistics : {"pretraining", "window"}
        ``pretraining``: normalise with the statistics pretraining used (REVE:
        each recording's mean and standard deviation per channel, when the
        windows' recordings are known: windows cut by neurofm from
        continuous recordings, or a ``recording`` column in the sample
        metadata; else each window's own, and the record says so).
        ``window``: each window's own statistics, which keeps nothing of a
        window's amplitude relative to its recording.
    """

    reference: Literal["pretraining", "as_recorded"] = "pretraining"
    untrained_channels: Literal["pretraining", "feed"] = "pretraining"
    normalization_statistics: Literal["pretraining", "window"] = "pretraining"


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
    batch_size : int | "auto"
        Windows per forward pass; ``"auto"``: 32 on the CPU (fastest there
        with neurofm's streams, measured), 64 on a GPU (raise it there for
        throughput). Not part of the cache key.
    device : str
        ``"auto"`` (default: CUDA when present, else MPS, else the CPU, as
        for fine-tuning; resolved in the process that computes, so a worker
        with a GPU uses it when the run was planned on a machine without),
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` ... Embeddings made on
        a GPU are keyed apart from the CPU's in the cache (they differ in the
        last bits, more with TF32).
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast precision of the forward pass. ``"auto"`` (default): bf16 on
        a CUDA GPU with bf16 hardware (Ampere and later), fp32 everywhere
        else, the CPU included. bf16 pays off on GPUs and on CPUs with
        AVX-512 BF16/AMX (CBraMod about 1.5x faster than fp32 on 2 AMX
        cores, embeddings at cosine 0.9999 to fp32's); on AVX2-only CPUs it
        is several times slower than fp32, and neurofm warns. Part of the
        cache key as resolved (embeddings differ).
    deterministic : bool
        Reproducible algorithms on the GPU (see
        :func:`neurofm.devices.deterministic_algorithms`); no effect on the
        CPU's results.
    trust_remote_code : bool
        Allow a hugging_face checkpoint to run code shipped with it.
    model_kwargs : dict
        Architecture arguments passed to the backbone class (e.g. a smaller
        depth for tests). They become part of the backbone fingerprint.
    adaptation : AdaptationConfig
        Which input conventions of the model's pretraining to reproduce
        (default: all; part of the cache key).
    """

    kind: Literal["foundation_embedding"] = "foundation_embedding"
    backend: Literal["braindecode", "hugging_face"] = "braindecode"
    model_key: str
    weights: str | None = None
    pooling: Literal["mean", "max", "flatten", "cls"] = "mean"
    cache_embeddings: bool = True
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    deterministic: bool = False
    trust_remote_code: bool = False
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)

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
    """Frozen backbone embeddings decoded by a classical estimator (mode 1).

    The head defaults to ``LogisticRegression``; a regression experiment
    needs a regressor head, e.g. ``ClassicalModelConfig(estimator="Ridge")``.
    """

    kind: Literal["frozen_backbone"] = "frozen_backbone"
    backbone: FoundationEmbeddingModelConfig
    head: ClassicalModelConfig = Field(
        default_factory=lambda: ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 1000})
    )


class LoRAConfig(BaseConfig):
    """Adapter settings shared by the PEFT train modes.

    Parameters
    ----------
    r : int
        Rank of the low-rank update (LoRA, DoRA; the initial rank of AdaLoRA; OFT's rank).
    alpha : float
        LoRA scaling numerator (the update is scaled by ``alpha / r``).
    dropout : float
        Dropout on the adapter input.
    target_modules : list of str | str | None
        Module names (suffix match) or a regular expression; ``None`` uses the
        registry's default targets for the model.
    save : {"adapters", "merged"}
        Checkpoints hold the adapters alone (plus the head) or the backbone
        with the adapters merged into its weights.
    """

    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | str | None = None
    save: Literal["adapters", "merged"] = "adapters"


class QuantizationConfig(BaseConfig):
    """4-bit quantisation of the backbone's linear layers (``train_mode="qlora"``).

    ``compute_dtype`` is the dtype the 4-bit weights are dequantised to for
    each product: ``"auto"`` (default) is bfloat16 on a CUDA GPU with bf16
    hardware, as in QLoRA, and float32 elsewhere (the CPU's bf16 is slow
    without AMX, and results there stay as they were).
    """

    enabled: bool = False
    load_in_4bit: bool = True
    quant_type: Literal["nf4", "fp4"] = "nf4"
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    double_quant: bool = True


class DeviceConfig(BaseConfig):
    """Where and in which precision training runs.

    Parameters
    ----------
    device : str
        ``"auto"`` (default): CUDA when the process that trains has it, else
        MPS, else the CPU; resolved in that process (a Slurm, Ray or Dask
        worker), not where the run was planned. Or ``"cpu"``, ``"cuda"``,
        ``"cuda:1"``, ``"mps"``.
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast precision of forward passes. ``"auto"`` (default): bf16 on
        CUDA GPUs with bf16 hardware (Ampere and later), fp32 elsewhere (the
        CPU included: nothing changes there). ``fp16`` (GPUs) trains with
        loss scaling; bf16 on an older GPU is refused (it would be emulated).
    deterministic : bool
        Reproducible algorithms on the GPU: PyTorch's deterministic
        algorithms, deterministic cuDNN without autotuning, cuBLAS's fixed
        workspace and the math attention kernel
        (:func:`neurofm.devices.deterministic_algorithms`); slower. No effect
        on the CPU's results, which are reproducible without it.
    """

    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    deterministic: bool = False


class CheckpointConfig(BaseConfig):
    """Which training states are saved, and by what they are judged.

    Parameters
    ----------
    save : {"none", "best", "last", "all"}
        ``best`` keeps the epoch with the best ``monitor`` value.
    monitor : str
        Any logged metric: ``val_loss``, ``val_balanced_accuracy``, ``train_loss`` ...
    mode : {"min", "max"} | None
        Whether lower or higher is better; ``None`` infers it (losses and
        errors lower, the rest higher).
    directory : str | None
        Where to write; ``None`` uses ``<cache_dir>/checkpoints``.
    """

    save: Literal["none", "best", "last", "all"] = "best"
    monitor: str = "val_loss"
    mode: Literal["min", "max"] | None = None
    directory: str | None = None

    @property
    def resolved_mode(self) -> str:
        if self.mode is not None:
            return self.mode
        lower_is_better = ("loss", "mae", "rmse")
        return "min" if any(self.monitor.endswith(s) for s in lower_is_better) else "max"


class TrainerConfig(BaseConfig):
    """The optimisation loop of trainable models.

    Parameters
    ----------
    max_epochs : int
        Upper bound on epochs.
    batch_size : int
        Windows per optimiser micro-batch.
    lr : float
        Peak learning rate of AdamW.
    weight_decay : float
        AdamW weight decay.
    warmup_epochs : float
        Linear warm-up length (in epochs) before cosine decay to zero.
    grad_clip : float | None
        Clip the global gradient norm to this value.
    grad_accumulation : int
        Micro-batches per optimiser step.
    early_stopping_patience : int | None
        Stop after this many epochs without improvement of the checkpoint
        monitor; ``None`` disables early stopping.
    validation_fraction : float
        Share of the training partition held out for validation (split by
        group when the CV has a ``group_key``); 0 disables validation.
    class_weight : {"balanced"} | None
        Loss weights inversely proportional to class frequency.
    head : {"linear", "mlp"}
        The decoder on pooled backbone features.
    head_hidden : int
        Width of the MLP head.
    head_dropout : float
        Dropout before the head.
    probe_epochs : int
        Two-stage training: train only the head for this many epochs first,
        then the chosen ``train_mode``.
    """

    max_epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    grad_accumulation: int = Field(1, ge=1)
    early_stopping_patience: int | None = Field(5, ge=1)
    validation_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    class_weight: Literal["balanced"] | None = "balanced"
    head: Literal["linear", "mlp"] = "linear"
    head_hidden: int = Field(128, ge=1)
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    probe_epochs: int = Field(0, ge=0)


class NeuralFineTuneConfig(BaseConfig):
    """A backbone trained with a neural head (modes 2 and 3).

    Parameters
    ----------
    backend, model_key, weights, pooling, model_kwargs, trust_remote_code, adaptation : as in FoundationEmbeddingModelConfig
        Where the backbone and its weights come from, how its tokens are
        pooled, and which input conventions of its pretraining are reproduced.
    input_kind : {"epoched"}
        Windows cut around events (the only kind so far).
    train_mode : str
        ``frozen`` (head only), ``full``, or a PEFT method: ``lora``, ``qlora``,
        ``ia3``, ``dora``, ``adalora``, ``oft``.
    n_outputs : int | None
        Output width; ``None`` infers it from ``y``. A value that disagrees with
        ``y`` is an error before training.
    lora : LoRAConfig
        Adapter rank, scaling, dropout and targets (PEFT train modes).
    quantization : QuantizationConfig
        4-bit quantisation of the backbone (QLoRA).
    device : DeviceConfig
        Device, precision and deterministic algorithms.
    checkpoints : CheckpointConfig
        Which states are saved, judged by which metric.
    trainer : TrainerConfig
        The optimisation loop.
    peft_kwargs : dict
        Extra arguments for the peft config of the chosen method.
    """

    kind: Literal["neural_finetune"] = "neural_finetune"
    backend: Literal["braindecode", "hugging_face"] = "braindecode"
    model_key: str
    weights: str | None = None
    input_kind: Literal["epoched"] = "epoched"
    train_mode: Literal["frozen", "full", "lora", "qlora", "ia3", "dora", "adalora", "oft"] = "lora"
    pooling: Literal["mean", "max", "flatten", "cls"] = "mean"
    n_outputs: int | None = Field(None, ge=1)
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig)
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    checkpoints: CheckpointConfig = Field(default_factory=CheckpointConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    peft_kwargs: dict[str, Any] = Field(default_factory=dict)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    trust_remote_code: bool = False
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)

    @field_validator("model_key")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from .models.registry import get_model_spec

        return get_model_spec(value).key

    @model_validator(mode="after")
    def _supported(self) -> NeuralFineTuneConfig:
        from .models.registry import get_model_spec

        spec = get_model_spec(self.model_key)
        if self.train_mode not in spec.train_modes:
            raise ValueError(
                f"train_mode={self.train_mode!r} is not listed for {spec.key!r}; use one of {format_choices(spec.train_modes)}."
            )
        if self.pooling not in spec.poolings:
            raise ValueError(
                f"pooling={self.pooling!r} is not available for {spec.key!r}; use one of {format_choices(spec.poolings)}."
            )
        if self.backend == "hugging_face":
            raise ValueError(
                "Trainable decoding supports backend='braindecode' so far; hugging_face encoders are frozen-only."
            )
        return self


_KIND_BY_KEY = (
    ("backbone", "frozen_backbone"),
    ("estimator", "classical"),
    ("train_mode", "neural_finetune"),
    ("model_key", "foundation_embedding"),
)


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
    Annotated[FrozenBackboneDecoderConfig, Tag("frozen_backbone")]
    | Annotated[ClassicalModelConfig, Tag("classical")]
    | Annotated[NeuralFineTuneConfig, Tag("neural_finetune")],
    Discriminator(_model_kind),
]

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "f1_macro", "cohen_kappa")
REGRESSION_METRICS = ("r2", "mae", "rmse", "pearson")


class ExecutionConfig(BaseConfig):
    """Where embedding extraction, the (model, fold) fits and the permutation refits run.

    Units of work: one extraction shard (a contiguous range of windows,
    embedded by a frozen backbone and written to the shared cache), one
    (model, fold) fit, one label permutation. Every backend runs the same
    units with the same seeds, so scores do not depend on it (for
    scikit-learn estimators exactly; trainable backbones are exact only for
    the same number of torch threads per worker).

    Parameters
    ----------
    backend : {"sequential", "joblib", "dask", "ray", "submitit"}
        ``joblib``: local processes; ``dask``: a Dask cluster (``address``) or
        a local one; ``ray``: a Ray cluster (``address``) or a local one;
        ``submitit``: Slurm jobs (or local processes where there is no Slurm).
    n_jobs : int
        Processes of the local pools (joblib, local Dask or Ray).
    address : str | None
        Scheduler address of a running Dask cluster (``tcp://host:8786``) or
        Ray cluster (``ray://host:10001`` or ``auto``).
    submitit_folder : str | None
        Where submitit writes job scripts, logs and the pickles of tasks and
        results (``None``: ``<cache_dir>/submitit-<uid>`` of the experiment).
        It must be this user's and closed to others: neurofm makes it with
        mode 0700 and refuses a link, another user's folder or one others may
        open. Each call's jobs are deleted once their results are read.
    scratch_folder : str | None
        Where the local engines keep their scratch files, each in its own
        subfolder: joblib's memory maps (``joblib/``), a local Dask
        cluster's spill and locks (``dask/``), a local Ray runtime's session:
        logs, sockets, spilled objects (``ray/``). ``None``: the experiment's
        ``cache_dir`` (``<cache_dir>/scratch-<uid>`` when it is declared
        shared). Ray's socket paths must fit the system's 107 bytes,
        which leaves this folder at most 39 characters for a local Ray
        runtime. An engine given by ``address`` keeps its own folders.
    submitit_cluster : {"slurm", "local", "debug"} | None
        ``None`` picks Slurm when ``sbatch`` is found, local processes otherwise.
    submitit_parameters : dict
        Resource requests passed to ``executor.update_parameters``
        (``slurm_partition``, ``timeout_min``, ``cpus_per_task``,
        ``gpus_per_node`` ..., see :data:`neurofm.policy.SUBMITIT_PARAMETERS`);
        set-up lines, ``srun`` arguments and free-form sbatch directives are
        refused.
    extraction_shards : int | None
        Extraction shards per frozen backbone on a parallel backend
        (``None``: ``n_jobs``). Each shard loads the backbone once, so a
        few large shards beat many small ones. With ``sequential`` the caller
        extracts.
    gpus_per_task : float | "auto"
        GPUs each task of a model that runs on a GPU (an extraction shard, a
        fine-tuning fold; not a scikit-learn head) asks its engine for. Ray
        hides the GPUs from a task that asks for none, so ``"auto"``
        (default) asks Ray for one GPU per such task when the cluster has
        GPUs. Dask workers offer GPUs only as declared resources
        (``dask worker --resources GPU=1``): a number asks for that many,
        ``"auto"`` for none. On Slurm a number becomes ``gpus_per_node`` of
        each job unless ``submitit_parameters`` sets it.
    """

    backend: Literal["sequential", "joblib", "dask", "ray", "submitit"] = "sequential"
    n_jobs: int = Field(2, ge=1)
    address: str | None = None
    submitit_folder: str | None = None
    scratch_folder: str | None = None
    submitit_cluster: Literal["slurm", "local", "debug"] | None = None
    submitit_parameters: dict[str, Any] = Field(default_factory=dict)
    extraction_shards: int | None = Field(None, ge=1)
    gpus_per_task: Annotated[float, Field(ge=0)] | Literal["auto"] = "auto"

    @field_validator("submitit_parameters")
    @classmethod
    def _resource_requests_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        from .policy import check_submitit_parameters

        check_submitit_parameters(value)
        return value


class WindowConfig(BaseConfig):
    """How windows are cut from continuous recordings given to :meth:`Experiment.run`.

    Either event-locked windows (``tmin`` to ``tmax`` around each event) or
    fixed-length windows (``window`` seconds every ``stride`` seconds).

    Parameters
    ----------
    tmin, tmax : float
        Start and end of each window relative to its event, in seconds. A
        window holds ``(tmax - tmin) * sfreq`` samples. Events come from the
        recording's annotations or, when it has none, from its stim channel.
        Each window's label is its event's name.
    window, stride : float | None
        Fixed-length windows of ``window`` seconds every ``stride`` seconds
        (default: ``stride = window``, no overlap). Such windows carry no
        event, so their labels are given per recording.
    event_id : dict of str to int | None
        Events to keep and their names: annotation descriptions (the numbers
        only tell them apart) or stim-channel codes. ``None`` keeps every event.
    reject_peak_to_peak : float | None
        Drop windows whose peak-to-peak amplitude on any EEG channel exceeds
        this many volts (e.g. ``150e-6``).
    """

    tmin: float = 0.0
    tmax: float | None = None
    window: float | None = Field(None, gt=0)
    stride: float | None = Field(None, gt=0)
    event_id: dict[str, int] | None = Field(None, min_length=1)
    reject_peak_to_peak: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_way_to_cut(self) -> WindowConfig:
        if (self.tmax is None) == (self.window is None):
            raise ValueError(
                "say how to cut windows: tmax (event-locked, with tmin) or window (fixed length, with stride), "
                "not both and not neither."
            )
        if self.tmax is not None and self.tmax <= self.tmin:
            raise ValueError(f"tmax ({self.tmax}) must be after tmin ({self.tmin}).")
        if self.window is not None:
            if self.event_id is not None or self.tmin != 0.0:
                raise ValueError(
                    "event_id and tmin apply to event-locked windows (tmax); fixed-length windows use neither."
                )
            if self.stride is not None and self.stride > self.window:
                raise ValueError(
                    f"stride ({self.stride}) longer than window ({self.window}) would skip data; use stride <= window."
                )
        if self.stride is not None and self.window is None:
            raise ValueError("stride applies to fixed-length windows; set window as well.")
        return self

    @property
    def event_locked(self) -> bool:
        """Whether windows are cut around events (and labelled by them)."""
        return self.tmax is not None


class ExperimentConfig(BaseConfig):
    """A whole cross-validated decoding experiment.

    Parameters
    ----------
    task : {"classification", "regression"}
        What ``y`` is. Classical models and frozen decoders' heads must do
        it, as scikit-learn's tags say: a classifier (``bandpower_lr``,
        ``LogisticRegression`` ...) for classification, a regressor
        (``bandpower_ridge``, ``ts_ridge``, ``Ridge`` ...) for regression;
        anything else is refused when the config is made.
    models : dict of str to model config
        Named models to evaluate on the same folds.
    metrics : list of str | None
        Scores per fold. ``None`` uses ``accuracy``, ``balanced_accuracy`` and
        ``roc_auc`` (classification) or ``r2``, ``mae``, ``rmse``, ``pearson``.
    cv : CVConfig
        The outer cross-validation.
    cache_dir : str
        Root of the on-disk embedding cache (``~`` is expanded). Like the
        output folder, it must be private (yours, not writable by group or
        others) unless ``shared_folders`` says otherwise.
    shared_folders : bool
        The cache and output folders may be written by others (a lab's shared
        cache): every embedding, weight digest and progress record neurofm
        reads back from them must then carry a checksum keyed with your key
        (or the group's, ``shared_key_file``); others' entries are not read
        and are left as they are; the local engines' scratch files default
        to ``<cache_dir>/scratch-<uid>``. See :mod:`neurofm.sharing`.
    shared_key_file : str | None
        With ``shared_folders``: a group's key file, readable by its members
        and nobody else. ``None``: your own key
        (``~/.config/neurofm/shared-folders.key``, made on first use).
    execution : ExecutionConfig
        Where the fits run (default: one after the other in this process).
    random_state : int
        Seed for splits, heads and random initialisation of backbones.
    n_permutations : int
        Chance level by label permutation: refit every model on the same folds
        this many times with shuffled labels (within groups when the CV has a
        ``group_key``) and report p-values. 0 skips it; at most 100 000 (a
        p-value's resolution is 1 / (n + 1): beyond that, more permutations
        only cost time and record space).
    permute_trainable : bool
        Also permute trainable models (``NeuralFineTuneConfig``): that is
        ``n_permutations`` x folds trainings, so it is off by default and the
        result records that their permutation test was skipped.
    verbose : bool
        Progress bars and info logs.
    sensor_types : list of {"eeg", "meg", "mag", "grad"} | None
        Sensors every model sees (``"meg"`` = magnetometers and
        gradiometers). ``None`` (default) keeps every EEG and MEG channel of
        the windows; the channels kept per type are recorded in the result's
        ``meta["signal"]["sensor_types"]``.
    windows : WindowConfig | None
        How to cut windows when :meth:`Experiment.run` receives continuous
        recordings (``mne.io.Raw`` or a list of them); must be ``None`` when it
        receives windows.
    """

    task: Literal["classification", "regression"] = "classification"
    models: dict[str, ModelConfig]
    metrics: list[str] | None = None
    cv: CVConfig = Field(default_factory=CVConfig)
    cache_dir: str = "~/.cache/neurofm"
    shared_folders: bool = False
    shared_key_file: str | None = None
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    random_state: int = 0
    n_permutations: int = Field(0, ge=0, le=100_000)
    permute_trainable: bool = False
    verbose: bool = True
    sensor_types: list[Literal["eeg", "meg", "mag", "grad"]] | None = Field(None, min_length=1)
    windows: WindowConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if not self.models:
            raise ValueError("models is empty; name at least one model, e.g. {'lr': ClassicalModelConfig(...)}.")
        from .sharing import check_key_file_declared

        check_key_file_declared(self.shared_folders, self.shared_key_file)
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
        from .estimators.classical import check_estimator_task

        # A classifier fitted on a regression target predicts only the values it saw (and the reverse fails
        # late, or scores nonsense): refuse it now. Trainable models build their head for the task themselves.
        for name, model in self.models.items():
            if isinstance(model, ClassicalModelConfig):
                check_estimator_task(model.estimator, model.params, self.task, f"model {name!r}")
            elif isinstance(model, FrozenBackboneDecoderConfig):
                which = "the head" if "head" in model.model_fields_set else "the default head"
                check_estimator_task(
                    model.head.estimator, model.head.params, self.task, f"{which} of model {name!r}", head=True
                )
        return self

    @property
    def resolved_metrics(self) -> list[str]:
        """The metrics to compute, with the task's defaults filled in."""
        if self.metrics:
            return list(self.metrics)
        return list(CLASSIFICATION_METRICS[:3] if self.task == "classification" else REGRESSION_METRICS)


def _looks_like_path(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    return "\n" not in source and (source.endswith((".yaml", ".yml")) or Path(source).is_file())


class PreprocessingConfig(BaseConfig):
    """Processing of each continuous recording before it is cut into windows.

    Applied identically for every model, per recording; nothing here is fitted
    on data. Steps run in this order: channel picking, re-referencing, notch,
    band-pass, resampling.

    Parameters
    ----------
    picks : str | list of str | None
        Channel types or names to keep (``"eeg"``).
    reference : "average" | list of str | None
        Re-reference to the average or to the named channels.
    notch : float | list of float | None
        Line-noise frequencies to notch out (e.g. 50 or [50, 100]).
    l_freq, h_freq : float | None
        Band-pass edges in Hz (FIR, zero phase).
    resample : float | None
        New sampling rate in Hz.
    """

    picks: str | list[str] | None = "eeg"
    reference: Literal["average"] | list[str] | None = None
    notch: float | list[float] | None = None
    l_freq: float | None = Field(None, ge=0)
    h_freq: float | None = Field(None, gt=0)
    resample: float | None = Field(None, gt=0)


class MoabbConfig(BaseConfig):
    """A MOABB data set (and optional paradigm) named in a config.

    Parameters
    ----------
    dataset : str
        Class name in ``moabb.datasets`` (e.g. ``"BNCI2014_001"``).
    dataset_params : dict
        Keyword arguments of that class.
    paradigm : str | None
        Class name in ``moabb.paradigms`` (e.g. ``"LeftRightImagery"``); ``None``
        cuts windows from the continuous runs after neurofm's preprocessing.
    paradigm_params : dict
        Keyword arguments of the paradigm.
    """

    dataset: str
    dataset_params: dict[str, Any] = Field(default_factory=dict)
    paradigm: str | None = None
    paradigm_params: dict[str, Any] = Field(default_factory=dict)


class DataConfig(BaseConfig):
    """Where ``neurofm run`` reads windows from.

    Parameters
    ----------
    source : {"eegmmi", "muse_csv", "uci_smni", "recording", "bids", "moabb"}
        The loader (see :mod:`neurofm.loaders`).
    path : str | None
        Folder or file; relative paths are relative to the config file. Every
        source but ``moabb`` needs one.
    moabb : MoabbConfig | None
        The MOABB data set and paradigm (``source: moabb`` only).
    subjects, sessions, tasks, runs : list | None
        Selection for loaders that take it (BIDS entities for ``bids``).
    tmin, tmax : float | None
        Window around each event in seconds.
    window, stride : float | None
        Fixed-length windows instead of events (``recording`` only).
    event_id : dict of str to int | None
        Events to keep (``recording``).
    reject_peak_to_peak : float | None
        Drop windows above this peak-to-peak amplitude (volts).
    label : str
        Metadata column holding the class of each window.
    preprocessing : PreprocessingConfig
        Applied to each recording before windows are cut.
    """

    source: Literal["eegmmi", "muse_csv", "uci_smni", "recording", "bids", "moabb"]
    path: str | None = None
    moabb: MoabbConfig | None = None
    subjects: list[Any] | None = None
    sessions: list[str] | None = None
    tasks: list[str] | None = None
    runs: list[Any] | None = None
    tmin: float | None = None
    tmax: float | None = None
    window: float | None = None
    stride: float | None = None
    event_id: dict[str, int] | None = None
    reject_peak_to_peak: float | None = Field(None, gt=0)
    label: str = "label"
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)

    @model_validator(mode="after")
    def _source_has_what_it_reads(self) -> DataConfig:
        if self.source == "moabb" and self.moabb is None:
            raise ValueError(
                "source 'moabb' needs a 'moabb' section naming the data set, e.g. moabb: {dataset: BNCI2014_001}."
            )
        if self.source != "moabb" and self.moabb is not None:
            raise ValueError(f"the 'moabb' section only applies to source 'moabb', not {self.source!r}.")
        if self.source != "moabb" and self.path is None:
            raise ValueError(f"source {self.source!r} needs a 'path' to the recordings.")
        return self


class RunConfig(ExperimentConfig):
    """An experiment plus its data source and output folder: what ``neurofm run`` reads."""

    data: DataConfig
    output_dir: str = "neurofm-results"

    @model_validator(mode="after")
    def _windows_cut_by_the_data_section(self) -> RunConfig:
        if self.windows is not None:
            raise ValueError(
                "'windows' is for continuous recordings passed to Experiment.run; in a neurofm run config the data "
                "section cuts the windows: move tmin/tmax/window/stride/event_id under 'data'."
            )
        return self

    @model_validator(mode="after")
    def _picks_keep_the_sensor_types(self) -> RunConfig:
        # The default picks keep EEG only; asking for MEG then would fail only after every file is read.
        picks = self.data.preprocessing.picks
        meg = sorted({"meg", "mag", "grad"} & set(self.sensor_types or ()))
        if (
            meg
            and picks is not None
            and not {"meg", "mag", "grad", "data", "all"} & set([picks] if isinstance(picks, str) else picks)
        ):
            raise ValueError(
                f"sensor_types asks for {meg}, but data.preprocessing.picks is {picks!r}, which drops MEG channels "
                "before windows are cut; set data.preprocessing.picks to [meg, eeg] (or 'data')."
            )
        return self
