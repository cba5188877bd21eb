"""Model configs: classical baselines, frozen backbones and their heads, trainable decoders and their parts."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    Tag,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from ..metrics import greater_is_better
from ..policy import check_estimator_import, check_estimator_params_are_data
from ..utils.check import closest_matches, format_choices
from ..utils.objects import describe_object, is_described_object, object_refusal
from .base import BaseConfig


class ClassicalModelConfig(BaseConfig):
    """A scikit-learn estimator on raw windows (or a head on embeddings): by name, import path, or as an object.

    Parameters
    ----------
    estimator : str | estimator
        A scikit-learn estimator class name (``"LogisticRegression"``), a
        neurofm named pipeline (see ``neurofm.estimators.list_estimators()``),
        a pyriemann class name (``"MDM"``, ``"TangentSpace"``; scikit-learn's
        names come first), an import path ``"package.module.ClassName"``
        (outside scikit-learn, pyriemann, MNE and neurofm only after
        ``neurofm.allow_imports("package")``), or, from Python, any
        scikit-learn-compatible estimator object, a ``Pipeline`` included
        (``make_pipeline(Covariances("oas"), MDM())``). The config keeps a
        clone of the object, and each fold fits a fresh clone of that: your
        object is never fitted. Like a named estimator's, each of its
        ``random_state`` parameters left at ``None`` gets the experiment's
        ``random_state``.
    params : dict
        Keyword arguments for a named estimator's constructor (plain data).
        An object carries its own: set them on it.
    input : {"windows", "flat"} | None
        What a model on raw windows receives: ``"windows"``, shaped
        ``(n, channels, times)``, or ``"flat"``, each window flattened to one
        vector ``(n, channels * times)``. ``None`` (default): ``"windows"``
        for neurofm's named pipelines and for estimators whose first step
        (a pipeline's first step) comes from pyriemann or MNE, ``"flat"`` for
        every other. Named pipelines take windows only. Not for a head, which
        always receives embedding vectors.

    Notes
    -----
    On raw windows the estimator sees microvolts for EEG and EEG-equivalent
    microvolts for MEG (a first ``units`` step, the rule every backbone gets),
    so that sensor types share one scale.

    An object is not data: a config holding one is written (``to_yaml``, the
    ``config.yaml`` of a saved result, the keys of a run's records) as its
    class's import path and its parameters (``get_params``, estimators among
    them described alike), never pickled. Objects with equal parameters thus
    share a run's records and objects that differ do not. Such a file cannot
    be read back into a config (the error names the class): pass the object
    again from Python. A config file names its estimator by name or import
    path instead.
    """

    kind: Literal["classical"] = "classical"
    estimator: Any
    params: dict[str, Any] = Field(default_factory=dict)
    input: Literal["windows", "flat"] | None = None

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, value: Any) -> Any:
        # import cycle: estimators.classical imports adapt, which imports configs
        from ..estimators.classical import NAMED_ESTIMATORS, check_estimator_object, resolve_estimator_class

        if is_described_object(value):
            raise ValueError(object_refusal(value))  # a dumped object, read back from a file
        if not isinstance(value, str):
            return check_estimator_object(value)  # a clone: the user's object is never fitted
        if "." in value and value not in NAMED_ESTIMATORS:
            check_estimator_import(value)  # before importing anything: a config may not choose the code to run
        resolve_estimator_class(value)  # raises with suggestions
        return value

    @field_validator("params")
    @classmethod
    def _params_are_data(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_estimator_params_are_data(value)
        return value

    @model_validator(mode="after")
    def _input_fits_the_estimator(self) -> ClassicalModelConfig:
        # import cycle: estimators.classical imports adapt, which imports configs
        from ..estimators.classical import NAMED_ESTIMATORS

        if not isinstance(self.estimator, str) and self.params:
            raise ValueError(
                f"params={self.params!r} with an estimator object: an object carries its own parameters; set them "
                f"on it (e.g. make_pipeline(..., MDM(metric='riemann'))) and remove params."
            )
        if self.input == "flat" and isinstance(self.estimator, str) and self.estimator in NAMED_ESTIMATORS:
            raise ValueError(
                f"input='flat' with neurofm's named pipeline {self.estimator!r}, which reads windows "
                "(n, channels, times); remove input, or name a scikit-learn estimator to give flattened windows."
            )
        return self

    @field_serializer("estimator")
    def _estimator_as_data(self, value: Any, info: SerializationInfo) -> Any:
        if isinstance(value, str) or not info.mode_is_json():
            return value
        return describe_object(value)  # what the object is, as data; never pickled

    @model_serializer(mode="wrap")
    def _without_automatic_input(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        # Left automatic, input is not written: configs (and the keys of runs' records) read as before it existed.
        if self.input is None:
            data.pop("input", None)
        return data


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
        (``"org/name"``, optionally ``"org/name@revision"``), downloaded once into
        the Hugging Face cache on first use and read from it afterwards (offline
        too). ``None`` uses the registry's published checkpoint.
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

    @field_validator("precision", mode="before")
    @classmethod
    def _one_spelling(cls, value: Any) -> Any:
        return _one_dtype_spelling(value)

    trust_remote_code: bool = False
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)

    @field_validator("model_key")
    @classmethod
    def _known_model(cls, value: str) -> str:
        # import cycle: models.registry imports adapt, which imports configs
        from ..models.registry import get_model_spec

        return get_model_spec(value).key  # raises UnknownModelError with suggestions

    @model_validator(mode="after")
    def _pooling_supported(self) -> FoundationEmbeddingModelConfig:
        # import cycle: models.registry imports adapt, which imports configs
        from ..models.registry import get_model_spec

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


#: The ridge probe's default penalties: on standardised features, from almost none to one that leaves little but
#: the intercept, half a decade apart.
RIDGE_ALPHAS = tuple(float(round(10.0**exponent, 6)) for exponent in np.arange(-3.0, 6.25, 0.5))


class RidgeProbeConfig(BaseConfig):
    """A closed-form ridge probe as the head of a frozen backbone, its penalty chosen by inner CV.

    The embeddings are standardised with each training partition's
    statistics. Their Gram matrix, summed over blocks of rows (features x
    features; windows x windows when there are fewer windows than features),
    and one eigendecomposition of it per partition and per inner training
    fold give the fit for every penalty of ``alphas``; the penalty with the
    smallest inner-CV squared error is kept (the larger one on a tie). Inner
    folds are taken inside the outer training partition only, never from its
    test windows. Classification regresses class-indicator targets and
    predicts the class of the largest output; regression regresses the
    target. The outputs are decision values, not probabilities: ``ece``,
    ``brier`` and ``neg_log_loss`` are NaN for this head, and its
    predictions table holds ``decision_<class>`` columns. Because nothing it
    decomposes depends on the labels, a permutation test of this head is
    computed in closed form from the same decompositions, with the scores a
    refit would give.

    Parameters
    ----------
    alphas : list of float
        The penalties to choose from (standardised features): default 19
        values from 1e-3 to 1e6, log-spaced.
    inner_splits : int
        Folds of the inner cross-validation (seeded with the experiment's
        ``random_state``; not stratified, so that they do not depend on the
        labels). With the experiment's groups (``cv.group_key``), no group is
        on both sides of an inner split (shuffled group K-folds, as many as
        there are groups at most); without, shuffled K-folds of windows. A
        training partition of fewer than ``2 * inner_splits`` windows (a
        learning curve's small fraction) gets ``n_windows // 2`` folds, at
        least 2.
    class_weight : {"balanced"} | None
        Classification: ``"balanced"`` (default) scales each class's
        indicator column so that every class's targets sum alike (a rare
        class pulls the fit as hard as a frequent one); ``None`` regresses
        plain one-hot targets. This reweights the targets, not the windows:
        window weights would make the decomposition depend on the labels,
        and the closed-form permutation test with it. A regression target
        has no classes: setting it in a regression experiment is refused.

    Examples
    --------
    >>> FrozenBackboneDecoderConfig(
    ...     backbone=FoundationEmbeddingModelConfig(model_key="cbramod"),
    ...     head=RidgeProbeConfig(inner_splits=5),
    ... )  # doctest: +SKIP
    """

    kind: Literal["ridge_probe"] = "ridge_probe"
    alphas: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = Field(
        default_factory=lambda: list(RIDGE_ALPHAS)
    )
    inner_splits: int = Field(5, ge=2)
    class_weight: Literal["balanced"] | None = "balanced"


class AttentiveProbeConfig(BaseConfig):
    """A learned-query attention pooling and a linear layer, trained on a frozen backbone's tokens.

    The backbone's tokens are what is embedded and cached: the backbone
    must say ``pooling="flatten"`` (every token, flattened), so that one
    extraction serves every head that reads tokens and a later run reads
    them from the cache without running the backbone. In each fold the
    head reshapes each window's row to ``(n_tokens, token_dim)``,
    standardises the tokens with the training partition's statistics (one
    mean and scale per token feature, shared by all tokens, so what sets
    tokens apart is kept), lets ``n_queries`` learned queries attend over
    them (``torch.nn.MultiheadAttention`` after a ``LayerNorm``), averages
    the queries and maps the result to the classes (cross-entropy) or to the
    target (squared error, or the Huber loss: ``loss``). It trains with AdamW
    on the training partition only, less a validation share taken from it
    (whole groups when the CV has a ``group_key``), and keeps the epoch of
    the smallest validation loss. Its weights are initialised and its batches
    drawn with the experiment's ``random_state``. The pooling recorded in
    the result's artifacts is ``"attentive"`` (``head``/``pooling``).

    Parameters
    ----------
    n_queries : int
        Learned queries; their outputs are averaged.
    n_heads : int
        Attention heads; must divide ``token_dim``.
    token_dim : int | None
        Width of one token. ``None``: the registry's ``embedding_dim`` of
        the model (its published architecture's width); set it when the
        backbone's ``model_kwargs`` change the width.
    max_epochs : int
        Upper bound on epochs.
    lr : float
        AdamW learning rate.
    weight_decay : float
        AdamW weight decay.
    batch_size : int
        Windows per optimiser step.
    early_stopping_patience : int | None
        Stop after this many epochs without a smaller validation loss;
        ``None`` trains ``max_epochs`` epochs (the best one is still kept).
    validation_fraction : float
        Share of each training partition held out for validation (split by
        group when the CV has a ``group_key``, else stratified by class when
        every class has two windows); 0 trains on all of it for
        ``max_epochs`` epochs and keeps the last.
    class_weight : {"balanced"} | None
        Classification: ``"balanced"`` weighs each class's loss inversely to
        its frequency in the training data. Ignored for regression.
    loss : {"auto", "mse", "huber"}
        The training (and validation) loss, as ``TrainerConfig.loss``.
        ``"auto"``: cross-entropy for classification, binary cross-entropy
        for multilabel, mean squared error for regression. ``"mse"`` and
        ``"huber"`` (:class:`torch.nn.HuberLoss`, robust to outlying
        targets) are regression losses, refused for the other tasks. Each
        epoch of the training history names it (``"loss"``).
    huber_delta : float
        Where the Huber loss turns from quadratic to linear, in the target's
        units (used with ``loss="huber"`` only).

    Examples
    --------
    >>> FrozenBackboneDecoderConfig(
    ...     backbone=FoundationEmbeddingModelConfig(model_key="cbramod", pooling="flatten"),
    ...     head=AttentiveProbeConfig(n_heads=4),
    ... )  # doctest: +SKIP
    """

    kind: Literal["attentive_probe"] = "attentive_probe"
    n_queries: int = Field(1, ge=1)
    n_heads: int = Field(4, ge=1)
    token_dim: int | None = Field(None, ge=1)
    max_epochs: int = Field(100, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(64, ge=1)
    early_stopping_patience: int | None = Field(10, ge=1)
    validation_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    class_weight: Literal["balanced"] | None = "balanced"
    loss: Literal["auto", "mse", "huber"] = "auto"
    huber_delta: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _heads_divide_tokens(self) -> AttentiveProbeConfig:
        if self.token_dim is not None and self.token_dim % self.n_heads:
            raise ValueError(attentive_heads_refusal(self.n_heads, self.token_dim))
        return self

    @model_serializer(mode="wrap")
    def _without_default_loss(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        # Left at their defaults, loss and huber_delta are not written: configs (and the keys of runs' records)
        # read as before they existed, so earlier runs' records are resumed rather than recomputed.
        for name in ("loss", "huber_delta"):
            if getattr(self, name) == type(self).model_fields[name].default:
                data.pop(name, None)
        return data


def attentive_heads_refusal(n_heads: int, token_dim: int, model_key: str | None = None) -> str:
    """Why ``n_heads`` attention heads cannot split tokens of ``token_dim`` features, and what to set instead."""
    fits = [n for n in range(1, min(token_dim, 16) + 1) if token_dim % n == 0]
    whose = f" ({model_key!r}'s token width)" if model_key else ""
    return (
        f"n_heads={n_heads} does not divide token_dim={token_dim}{whose}: each attention head takes an equal share "
        f"of a token's features. Set n_heads to one of {format_choices(fits)}."
    )


def _head_kind(value: Any) -> str:
    """A head is a classical estimator unless it says ``kind: ridge_probe`` or ``kind: attentive_probe``."""
    kind = getattr(value, "kind", None) if isinstance(value, BaseModel) else (value or {}).get("kind")
    return kind if kind in ("ridge_probe", "attentive_probe") else "classical"


HeadConfig = Annotated[
    Annotated[ClassicalModelConfig, Tag("classical")]
    | Annotated[RidgeProbeConfig, Tag("ridge_probe")]
    | Annotated[AttentiveProbeConfig, Tag("attentive_probe")],
    Discriminator(_head_kind),
]


class FrozenBackboneDecoderConfig(BaseConfig):
    """Frozen backbone embeddings decoded by a classical estimator (mode 1).

    The head defaults to ``LogisticRegression``; a regression experiment
    needs a regressor head, e.g. ``ClassicalModelConfig(estimator="Ridge")``.
    A head may be an estimator object given from Python as well
    (``ClassicalModelConfig(estimator=make_pipeline(StandardScaler(), SVC()))``).

    Parameters
    ----------
    backbone : FoundationEmbeddingModelConfig
        The frozen backbone whose pooled embeddings the head reads.
    head : ClassicalModelConfig | RidgeProbeConfig | AttentiveProbeConfig
        What is fitted on the embeddings in each fold (default:
        ``LogisticRegression`` with ``max_iter=1000``): a scikit-learn
        estimator, the closed-form ridge probe (``kind: ridge_probe``) or the
        attentive probe on the tokens (``kind: attentive_probe``, with the
        backbone's ``pooling: flatten``).
    """

    kind: Literal["frozen_backbone"] = "frozen_backbone"
    backbone: FoundationEmbeddingModelConfig
    head: HeadConfig = Field(
        default_factory=lambda: ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 1000})
    )

    @field_validator("head")
    @classmethod
    def _head_reads_embeddings(cls, value: Any) -> Any:
        if isinstance(value, ClassicalModelConfig) and value.input is not None:
            raise ValueError(
                f"head.input={value.input!r}: input says what a model on raw windows receives, and a head always "
                "receives embedding vectors (n, features); remove input from the head."
            )
        return value


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


#: The one spelling of a floating-point dtype in every config (``fp32``); torch's names are accepted as well.
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _one_dtype_spelling(value: Any) -> Any:
    return DTYPE_ALIASES.get(value, value) if isinstance(value, str) else value


class QuantizationConfig(BaseConfig):
    """Quantisation of the backbone's linear layers (``train_mode="qlora"``, or any mode with ``enabled=True``).

    Parameters
    ----------
    enabled : bool | None
        ``True``: quantise with a train mode other than ``qlora`` (``frozen``
        or ``lora`` on a quantised backbone); refused with ``full`` (4- and
        8-bit weights cannot be trained). ``None`` (default): as the train mode
        says (``qlora`` quantises, the others do not). ``False`` with ``qlora``
        is a contradiction, refused.
    load_in_4bit, load_in_8bit : bool
        The width: 4-bit (bitsandbytes ``Linear4bit``, the default) or 8-bit
        (``Linear8bitLt``, int8 weights without outlier decomposition). One of
        them; ``load_in_8bit=True`` alone means 8-bit.
    quant_type : {"nf4", "fp4"}
        The 4-bit data type (4-bit only).
    compute_dtype : {"auto", "fp32", "bf16", "fp16"}
        The dtype 4-bit weights are dequantised to for each product (4-bit
        only): ``"auto"`` is bf16 on a CUDA GPU with bf16 hardware, as in
        QLoRA, and fp32 elsewhere (the CPU's bf16 is slow without AMX).
        ``float32``, ``bfloat16`` and ``float16`` are read as ``fp32``,
        ``bf16`` and ``fp16``, the spelling configs write.
    double_quant : bool
        Quantise the 4-bit quantisation constants too (4-bit only).
    """

    enabled: bool | None = None
    load_in_4bit: bool = True
    load_in_8bit: bool = False
    quant_type: Literal["nf4", "fp4"] = "nf4"
    compute_dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    double_quant: bool = True

    @field_validator("compute_dtype", mode="before")
    @classmethod
    def _one_spelling(cls, value: Any) -> Any:
        return _one_dtype_spelling(value)

    @model_validator(mode="after")
    def _one_width(self) -> QuantizationConfig:
        explicit = self.model_fields_set
        if self.load_in_8bit and self.load_in_4bit:
            if "load_in_4bit" in explicit:
                raise ValueError("load_in_4bit and load_in_8bit are both set; choose one width.")
            self.load_in_4bit = False  # load_in_8bit=True alone: the 4-bit default gives way
        if not (self.load_in_4bit or self.load_in_8bit):
            raise ValueError("Neither load_in_4bit nor load_in_8bit is set; choose a width (4-bit by default).")
        # Set to other than their defaults, 4-bit settings would say something that 8-bit layers cannot honour.
        four_bit_only = [
            name
            for name in ("quant_type", "compute_dtype", "double_quant")
            if getattr(self, name) != type(self).model_fields[name].default
        ]
        if self.load_in_8bit and four_bit_only:
            raise ValueError(
                f"{format_choices(four_bit_only)} {'is a 4-bit setting' if len(four_bit_only) == 1 else 'are 4-bit settings'}"
                ", but load_in_8bit=True; remove it or use 4 bits."
            )
        return self

    @property
    def bits(self) -> int:
        """4 or 8."""
        return 8 if self.load_in_8bit else 4


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
        ``float32``, ``bfloat16`` and ``float16`` are read as ``fp32``,
        ``bf16`` and ``fp16``.
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

    @field_validator("precision", mode="before")
    @classmethod
    def _one_spelling(cls, value: Any) -> Any:
        return _one_dtype_spelling(value)


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
        Where to write; ``None``: ``<output_dir>/checkpoints/<model name>/fold-<k>``
        in a run with an output folder, else ``<cache_dir>/checkpoints``.
    """

    save: Literal["none", "best", "last", "all"] = "best"
    monitor: str = "val_loss"
    mode: Literal["min", "max"] | None = None
    directory: str | None = None

    @property
    def resolved_mode(self) -> str:
        if self.mode is not None:
            return self.mode
        # scikit-learn's scorer names keep its sign: neg_log_loss and neg_mean_absolute_error grow as they improve.
        if self.monitor.removeprefix("val_").startswith("neg_"):
            return "max"
        if self.monitor.endswith("loss"):
            return "min"
        return "max" if greater_is_better(self.monitor.removeprefix("val_")) else "min"


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
    head : {"linear", "mlp", "native"}
        The decoder on pooled backbone features, or ``"native"``: the
        braindecode class's own head (its ``final_layer``, freshly
        initialised), run by the class's own forward, so no pooling applies.
        A model trained with its native head exports to braindecode's layout
        for every backbone whose class can be rebuilt offline
        (:func:`neurofm.export.export_model`).
    head_hidden : int
        Width of the MLP head.
    head_dropout : float
        Dropout before the head.
    probe_epochs : int
        Two-stage training: train only the head for this many epochs first,
        then the chosen ``train_mode``.
    loss : {"auto", "mse", "huber"}
        The training (and validation) loss. ``"auto"``: cross-entropy for
        classification, mean squared error for regression. ``"mse"`` and
        ``"huber"`` (:class:`torch.nn.HuberLoss`, robust to outlying
        targets) are regression losses, refused for classification. Each
        epoch of the training history names it (``"loss"``).
    huber_delta : float
        Where the Huber loss turns from quadratic to linear, in the target's
        units (used with ``loss="huber"`` only).
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
    head: Literal["linear", "mlp", "native"] = "linear"
    head_hidden: int = Field(128, ge=1)
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    probe_epochs: int = Field(0, ge=0)
    loss: Literal["auto", "mse", "huber"] = "auto"
    huber_delta: float = Field(1.0, gt=0)


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

    @property
    def quantized(self) -> bool:
        """Whether the backbone's linear layers are quantised to 4 bit (``qlora``, or ``quantization.enabled``)."""
        return self.train_mode == "qlora" or self.quantization.enabled is True

    @field_validator("model_key")
    @classmethod
    def _known_model(cls, value: str) -> str:
        # import cycle: models.registry imports adapt, which imports configs
        from ..models.registry import get_model_spec

        return get_model_spec(value).key

    @model_validator(mode="after")
    def _supported(self) -> NeuralFineTuneConfig:
        # import cycle: models.registry imports adapt, which imports configs
        from ..models.registry import get_model_spec

        spec = get_model_spec(self.model_key)
        # The registry's train modes are what its braindecode module supports; a transformers encoder is its own.
        if self.backend == "braindecode" and self.train_mode not in spec.train_modes:
            raise ValueError(
                f"train_mode={self.train_mode!r} is not listed for {spec.key!r}; use one of {format_choices(spec.train_modes)}."
            )
        if self.pooling not in spec.poolings:
            raise ValueError(
                f"pooling={self.pooling!r} is not available for {spec.key!r}; use one of {format_choices(spec.poolings)}."
            )
        if self.backend not in spec.backends:
            raise ValueError(
                f"backend={self.backend!r} is not available for {spec.key!r}; use one of {format_choices(spec.backends)}."
            )
        self._check_native_head()
        quantization = self.quantization
        if self.train_mode == "qlora" and quantization.enabled is False:
            raise ValueError(
                "train_mode='qlora' quantises the backbone, but quantization.enabled=False; remove enabled=False, "
                "or use train_mode='lora' for LoRA on a full-precision backbone."
            )
        if self.quantized and self.train_mode == "full":
            raise ValueError(
                f"A {quantization.bits}-bit quantised backbone cannot be fully fine-tuned; use train_mode='qlora' or "
                "'frozen', or quantization.enabled=False."
            )
        return self

    def _check_native_head(self) -> None:
        if self.trainer.head != "native":
            return
        if self.backend != "braindecode":
            raise ValueError(
                "trainer.head='native' trains the braindecode class's own head; a transformers encoder has none "
                "neurofm knows. Use trainer.head='linear' or 'mlp'."
            )
        if self.pooling != "mean":
            raise ValueError(
                f"pooling={self.pooling!r} has no effect with trainer.head='native': the class's own forward "
                "decides what its head reads. Remove pooling, or use trainer.head='linear'."
            )


#: braindecode classes that :class:`ScratchModelConfig` trains from random initialisation: the established
#: from-scratch baselines of EEG decoding, each built from ``n_chans``, ``n_outputs``, ``n_times`` and ``sfreq``.
#: Written out (not read from braindecode) so that a config validates without importing torch;
#: ``tests/test_scratch.py`` checks each name against the installed braindecode.
SCRATCH_MODELS = (
    "ATCNet",
    "Deep4Net",
    "EEGConformer",
    "EEGInceptionERP",
    "EEGNeX",
    "EEGNet",
    "EEGTCNet",
    "SCCNet",
    "ShallowFBCSPNet",
)

#: Other names users know these classes by (braindecode's earlier ones, the papers'), and the class each is.
SCRATCH_MODEL_ALIASES = {
    "EEGNetv4": "EEGNet",
    "ShallowConvNet": "ShallowFBCSPNet",
    "DeepConvNet": "Deep4Net",
}

#: Arguments neurofm sets from the windows a network is fitted on; a config may not set them.
SCRATCH_SIGNAL_ARGS = ("n_chans", "n_outputs", "n_times", "sfreq", "chs_info", "input_window_seconds")

#: Trainer settings of a pretrained backbone's decoder, with no meaning for a network trained from scratch.
_BACKBONE_ONLY_TRAINER_FIELDS = ("head", "head_hidden", "head_dropout", "probe_epochs")


class ScratchModelConfig(BaseConfig):
    """A braindecode network trained from random initialisation: the from-scratch baseline of a fine-tuned model.

    It is trained on the same folds, with the same validation split, early
    stopping, class weights and checkpoints as
    :class:`NeuralFineTuneConfig` (the same ``trainer``, ``checkpoints``
    and ``device`` settings), on the windows at the rate and montage they
    were given (no resampling or channel mapping to a foundation model's
    montage), in microvolts (EEG-equivalent microvolts for MEG), as the
    classical raw-window baselines see them.

    Parameters
    ----------
    model : str
        A braindecode class name: ``"EEGNet"`` (also read as ``"EEGNetv4"``,
        its name before braindecode 1.0), ``"ShallowFBCSPNet"`` (or
        ``"ShallowConvNet"``), ``"Deep4Net"`` (or ``"DeepConvNet"``),
        ``"ATCNet"``, ``"EEGConformer"``, ``"EEGInceptionERP"``,
        ``"EEGNeX"``, ``"EEGTCNet"`` or ``"SCCNet"``. The config keeps the
        class name (an alias is written as the class it names).
    model_kwargs : dict
        Architecture arguments of the class (plain data, e.g.
        ``{"F1": 4, "D": 2}`` for EEGNet). ``n_chans``, ``n_outputs``,
        ``n_times`` and ``sfreq`` come from the windows and may not be set.
    trainer : TrainerConfig
        The optimisation loop, as for fine-tuning. ``head``,
        ``head_hidden``, ``head_dropout`` and ``probe_epochs`` describe the
        decoder on a pretrained backbone; set to other than their defaults
        they are refused (the class's own layers are the whole network).
    device : DeviceConfig
        Device, precision and deterministic algorithms.
    checkpoints : CheckpointConfig
        Which states are saved, judged by which metric.

    Notes
    -----
    The weights are initialised with the experiment's ``random_state``: the
    same seed gives the same network, and so the same predictions on the
    CPU.
    """

    kind: Literal["scratch"] = "scratch"
    model: str
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    checkpoints: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value in SCRATCH_MODELS:
            return value
        known = {name.lower(): name for name in (*SCRATCH_MODELS, *SCRATCH_MODEL_ALIASES)}
        name = known.get(value.lower())
        if name is not None:
            return SCRATCH_MODEL_ALIASES.get(name, name)
        close = closest_matches(value, [*SCRATCH_MODELS, *SCRATCH_MODEL_ALIASES], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise ValueError(
            f"model={value!r} is not a braindecode network neurofm trains from scratch{hint} "
            f"Use one of {format_choices(SCRATCH_MODELS)} (a foundation model trained from random weights is "
            "NeuralFineTuneConfig(model_key=..., weights='random', train_mode='full'))."
        )

    @field_validator("model_kwargs")
    @classmethod
    def _kwargs_are_architecture(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_estimator_params_are_data(value)
        signal = [key for key in SCRATCH_SIGNAL_ARGS if key in value]
        if signal:
            raise ValueError(
                f"model_kwargs sets {format_choices(signal)}, which neurofm takes from the windows the network is "
                "fitted on; remove it."
            )
        return value

    @field_validator("trainer")
    @classmethod
    def _no_backbone_settings(cls, value: TrainerConfig) -> TrainerConfig:
        changed = [
            f"trainer.{name}={getattr(value, name)!r}"
            for name in _BACKBONE_ONLY_TRAINER_FIELDS
            if getattr(value, name) != TrainerConfig.model_fields[name].default
        ]
        if changed:
            raise ValueError(
                f"{', '.join(changed)}: these shape the decoder on a pretrained backbone (its head, and "
                "head-only epochs before the backbone trains); a network trained from scratch is its own braindecode "
                "class, head included. Remove them, and set the class's architecture in model_kwargs."
            )
        return value


_KIND_BY_KEY = (
    ("backbone", "frozen_backbone"),
    ("estimator", "classical"),
    ("train_mode", "neural_finetune"),
    ("model_key", "foundation_embedding"),
    ("model", "scratch"),
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
    | Annotated[NeuralFineTuneConfig, Tag("neural_finetune")]
    | Annotated[ScratchModelConfig, Tag("scratch")],
    Discriminator(_model_kind),
]
