"""What a :class:`ModelSpec` holds: the fields every backbone's entry in :mod:`neurofm.models.specs` fills in.

The entries themselves, one per model, are in :mod:`neurofm.models.specs`;
this module defines their type, :class:`PretrainingRecipe` and the training
modes a spec may list.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .extract import _classify

if TYPE_CHECKING:
    import torch

__all__ = ["Features", "ModelSpec", "PretrainingRecipe", "TRAIN_MODES"]

TRAIN_MODES = ("frozen", "full", "lora", "qlora", "ia3", "dora", "adalora", "oft")

# What a spec's extract returns: token features (B, N, D), and the class token (B, D) or None.
Features = tuple["torch.Tensor", "torch.Tensor | None"]


@dataclass(frozen=True)
class PretrainingRecipe:
    """How :mod:`neurofm.pretrain` pretrains this backbone from scratch, in two stages.

    Parameters
    ----------
    tokenizer : {"vq_nsp", "tf_dual"}
        The stage-1 tokenizer: LaBraM's vector-quantised neural spectrum
        prediction, or CodeBrain's time-frequency dual codebooks.
    default_codebook_size : int
        Codes per codebook when the config names none (LaBraM: 8192; CodeBrain: 4096).
    n_codebooks : int
        Codebooks the stage-2 heads predict.
    masked_model : {"labram", "codebrain"}
        The stage-2 masked-modelling wrapper of the backbone.
    codebook_head_kwargs : tuple of str
        braindecode arguments of the backbone's own pretraining heads, set to
        the tokenizer's codebook size so that they predict its codes.
    channel_ids : callable | None
        Channel names -> the backbone's channel-embedding indices (``None``:
        the backbone takes no channel identities).
    """

    tokenizer: str
    default_codebook_size: int
    n_codebooks: int
    masked_model: str
    codebook_head_kwargs: tuple[str, ...] = ()
    channel_ids: Callable[[tuple[str, ...]], Any] | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One backbone: where its weights live, what input it expects, how to run it.

    Parameters
    ----------
    key, display_name : str
        Registry key and human name.
    braindecode_class : str
        Class in ``braindecode.models``.
    hub_repo, hub_revision, hub_filename : str | None
        Published checkpoint (hub id, pinned revision, file inside the repo).
    embedding_dim : int
        Size of one pooled embedding (``mean``/``max``/``cls`` pooling).
    sfreq : float
        Sampling rate the checkpoint was trained at.
    channels : str
        Human description of the channel contract.
    channel_mode : {"any", "vocabulary", "fixed", "bipolar"}
        ``any``: any channels in input order; ``vocabulary``: the input
        channels found in :attr:`channel_names`; ``fixed``: exactly
        :attr:`channel_names` in that order; ``bipolar``: the differences
        :attr:`bipolar_pairs` of the electrodes :attr:`channel_names`.
    channel_source : callable
        Returns the channel names (evaluated lazily: some come from braindecode).
    interpolation : bool
        Whether missing channels of a fixed layout are filled by spherical-spline
        interpolation.
    min_channel_fraction : float
        Fraction of a fixed layout that must be recorded before interpolating the rest.
    amplitude_scale : float
        Factor applied to microvolts (``0.01`` = the "µV / 100" convention).
    normalization : str
        Per-window amplitude normalisation (see :mod:`neurofm.adapt`).
    normalization_statistics : {"window", "recording"}
        Whose statistics the pretraining's normalisation used: each window's,
        or each recording's (REVE), which neurofm uses when the windows'
        recordings are known.
    patch_size : int | None
        Samples per patch; windows are cropped or padded to a multiple.
    max_patches : int | None
        Largest number of patches per channel the checkpoint supports.
    min_times : int
        Shortest window in samples at :attr:`sfreq`.
    passband : (float, float) | None
        Band-pass of the pretraining data (reported, not applied to windows).
    scale_channel_reference_uv : float | None
        When set, a relative-amplitude channel is appended (BENDR).
    reference : {"as_recorded", "average"}
        The reference of the pretraining data: ``average`` re-references the
        channels the model receives to their mean (EEGPT, SignalJEPA).
    untrained_channels : tuple of str
        Input slots whose weights never saw signal in pretraining: vocabulary
        names that are then not fed (EEGPT), fixed slots that are then zero
        (BENDR). :class:`~neurofm.configs.AdaptationConfig` can feed them.
    published_kwargs : dict
        Architecture settings that override the published checkpoint's own
        ``config.json`` where it does not say what pretraining used (EEGPT:
        braindecode saved its default overlapping stride). Other checkpoints'
        configs, and ``model_kwargs``, still win.
    sources : dict of str to str
        For each input convention (``sfreq``, ``units``, ``reference``,
        ``passband``, ``channels``, ``patching``, ``normalization``,
        ``positions`` ...), where it comes from: the authors' code (repository
        and file), the model card or the paper. ``"unconfirmed: ..."`` marks a
        convention no primary source confirms.
    needs_positions : bool
        The model needs sensor positions: the recording's own (``info``),
        else MNE's template position of the electrode's name.
    positions_frame : {"head", "template"}
        The frame the pretraining's positions were in: MNE's head frame, or
        the template's native (MNI) frame; every position is moved there.
    sensor_types : tuple of {"eeg", "mag", "grad"}
        Sensors the backbone takes. Backbones bound to EEG electrode names or
        positions take ``eeg`` only; channel-agnostic ones also take MEG
        magnetometers and gradiometers, scaled to EEG-equivalent microvolts
        (see :data:`neurofm.adapt.MEG_TYPICAL_STD`).
    poolings : tuple of str
        Pooling modes available.
    cls_token : str
        What ``"cls"`` pooling reads, for models that offer it (part of the
        embedding cache key of ``cls`` embeddings).
    train_modes, backends : tuple of str
        Supported training modes and backends.
    lora_targets : tuple of str | str
        Submodules LoRA targets by default (names matched by suffix, or one regular expression) (each verified to take effect).
    linear_targets : tuple of str | None
        Default targets of the adapter methods peft applies to linear layers
        only (IA3, DoRA, AdaLoRA, OFT); ``None`` means ``lora_targets``. Models
        whose attention is ``nn.MultiheadAttention`` list their feed-forward
        layers here: an adapter on ``out_proj`` alone would never run.
    head_prefixes : tuple of str
        State-dict prefixes of classification or pretraining heads, skipped
        when loading a checkpoint for embedding.
    own_head : tuple of str
        State-dict prefixes of the class's own classification head, the part
        of :attr:`head_prefixes` its forward runs after the encoder: what
        ``trainer.head="native"`` trains.
    module_owned_keys : tuple of str
        State-dict entries that describe this input rather than learned
        weights (e.g. channel ids); the module built here keeps its own.
    weight_read_directly : tuple of str
        Linear layers whose parent reads ``.weight`` itself instead of calling
        the layer (LaBraM's ``qkv``): adapters there have no effect and 4-bit
        quantisation would break the forward, so both leave them alone.
    mha_fastpath_bypasses_adapters : bool
        torch's fused transformer path reads the base weights of
        ``nn.MultiheadAttention`` in eval mode, so adapters on it would change
        nothing at predict time; the fast path is switched off around this
        model's adapted forward.
    short_attention : bool
        Attention runs over a handful of tokens at a time. torch's flash
        kernel is slower there than its math kernel on the CPU, so extraction
        selects the math kernel (:func:`neurofm.embed.attention_kernels`).
    build : callable
        ``build(signal, **model_kwargs) -> nn.Module``.
    extract : callable
        ``extract(module, x, signal) -> (tokens (B, N, D), cls (B, D) or None)``.
    classify : callable
        ``classify(module, x, signal) -> logits``: the class's own forward
        through its own head (``trainer.head="native"``), given the inputs
        its forward needs besides the windows.
    adapt_state_dict : callable | None
        Fixes a checkpoint's state dict for the module built here (e.g. slices
        a positional table built for longer windows).
    convert_checkpoint : callable | None
        Recognises, by its keys, a checkpoint saved in the authors' own layout
        rather than braindecode's, and maps it onto the module built here:
        ``convert_checkpoint(state, module)`` returns ``(state, record)``, the
        record going into the load report, or ``None`` for a state not in that
        layout. It raises :class:`~neurofm.exceptions.WeightsError` for a file
        in that layout that does not fit. Runs before the head keys are skipped
        and before :attr:`adapt_state_dict`.
    tiny_kwargs : dict
        A small architecture of the same family, for tests and smoke runs.
    pretraining : PretrainingRecipe | None
        How neurofm pretrains this backbone (``None``: it does not).
    notes : str
        Traps and unverified facts.
    """

    key: str
    display_name: str
    braindecode_class: str
    hub_repo: str | None
    embedding_dim: int
    sfreq: float
    channels: str
    channel_mode: str
    build: Callable[..., Any]
    extract: Callable[..., Features]
    channel_source: Callable[[], tuple[str, ...]] = tuple
    bipolar_pairs: tuple[tuple[str, str], ...] = ()
    interpolation: bool = False
    min_channel_fraction: float = 0.6
    min_channels: int = 1
    max_channels: int = 1024
    amplitude_scale: float = 1.0
    normalization: str = "none"
    normalization_statistics: str = "window"
    patch_size: int | None = None
    max_patches: int | None = None
    max_tokens: int | None = None
    min_times: int = 1
    passband: tuple[float, float] | None = None
    scale_channel_reference_uv: float | None = None
    reference: str = "as_recorded"
    untrained_channels: tuple[str, ...] = ()
    published_kwargs: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    needs_positions: bool = False
    positions_frame: str = "head"
    sensor_types: tuple[str, ...] = ("eeg",)
    poolings: tuple[str, ...] = ("mean", "max", "flatten")
    cls_token: str = ""
    train_modes: tuple[str, ...] = TRAIN_MODES
    backends: tuple[str, ...] = ("braindecode", "hugging_face")
    hub_revision: str | None = "main"
    hub_filename: str | None = None
    lora_targets: tuple[str, ...] | str = ()
    linear_targets: tuple[str, ...] | str | None = None
    head_prefixes: tuple[str, ...] = ("final_layer.",)
    own_head: tuple[str, ...] = ("final_layer.",)
    module_owned_keys: tuple[str, ...] = ()
    weight_read_directly: tuple[str, ...] = ()
    mha_fastpath_bypasses_adapters: bool = False
    short_attention: bool = False
    classify: Callable[..., Any] = _classify
    adapt_state_dict: Callable[[dict, Any], dict] | None = None
    convert_checkpoint: Callable[[dict, Any], tuple[dict, dict] | None] | None = None
    tiny_kwargs: dict[str, Any] = field(default_factory=dict)
    pretraining: PretrainingRecipe | None = None
    notes: str = ""

    @functools.cached_property
    def channel_names(self) -> tuple[str, ...]:
        """Vocabulary, fixed layout or electrodes of the model (empty for ``any``)."""
        return tuple(self.channel_source())
