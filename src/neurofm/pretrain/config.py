"""Configs of self-supervised pretraining (YAML in, YAML out; unknown keys rejected)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..configs import BaseConfig, DataConfig, PreprocessingConfig

__all__ = ["CorpusConfig", "TokenizerConfig", "OptimizerConfig", "PretrainConfig", "RECIPE_PREPROCESSING"]

# LaBraM's corpus preparation: 0.1-75 Hz band-pass and a 50 Hz notch on the continuous recordings
# (the resampling to the model's rate is added by the corpus reader).
RECIPE_PREPROCESSING = PreprocessingConfig(l_freq=0.1, h_freq=75.0, notch=50.0)


class CorpusConfig(BaseConfig):
    """Unlabeled recordings to pretrain on, streamed one recording at a time.

    Parameters
    ----------
    paths : list of str
        Files (any format MNE reads, or Muse CSV) or folders searched
        recursively for them. Relative paths are taken from the config file.
    sources : list of DataConfig
        Data sources of any neurofm loader (``eegmmi``, ``bids``, ``moabb``,
        ``uci_smni`` ...), each loaded on its own when its turn comes; their
        windows (``tmin``/``tmax`` or ``window``) must last ``window_seconds``.
        Labels are ignored.
    exclude : list of str
        Glob patterns (matched against each file's path) to leave out, e.g.
        the held-out subjects of a later probe: ``["*subject1/*"]``.
    window_seconds : float
        Window length; ``window_seconds * sfreq`` must be a multiple of the patch size.
    stride_seconds : float | None
        Step between windows (default: the window length, no overlap).
    preprocessing : PreprocessingConfig
        Applied to each continuous recording before the resampling to the
        model's rate (default: LaBraM's 0.1-75 Hz band-pass and 50 Hz notch;
        the notch is skipped where the rate cannot carry it).
    reject_peak_to_peak : float | None
        Drop windows whose peak-to-peak amplitude exceeds this value (volts).
    """

    paths: list[str] = Field(default_factory=list)
    sources: list[DataConfig] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    window_seconds: float = Field(4.0, gt=0)
    stride_seconds: float | None = Field(None, gt=0)
    preprocessing: PreprocessingConfig = Field(default_factory=lambda: RECIPE_PREPROCESSING.model_copy())
    reject_peak_to_peak: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _has_recordings(self) -> CorpusConfig:
        if not self.paths and not self.sources:
            raise ValueError("the corpus needs recordings: give paths (files or folders) or sources (loader configs).")
        return self


class TokenizerConfig(BaseConfig):
    """Stage 1: the neural tokenizer and its codebook.

    Parameters
    ----------
    patch_size : int
        Samples per patch at the model's rate (LaBraM: 200 at 200 Hz).
    codebook_size : int | None
        Codes per codebook; ``None`` takes the recipe's (LaBraM: 8192; CodeBrain:
        4096 in each of its two codebooks, braindecode's head sizes).
    code_dim : int
        Code dimension (LaBraM: 64).
    width : int | None
        Token width of the CodeBrain tokenizer's branches (default 200). LaBraM's
        width follows from the patch size (200 for 200 samples) and cannot be set.
    depth, num_heads, decoder_depth : int
        Encoder layers, attention heads, decoder layers (LaBraM: 12, 10, 3).
    ema_decay : float
        Decay of the codebook's moving averages (LaBraM: 0.99).
    commitment_weight : float
        Weight of the commitment loss (LaBraM: 1).
    kmeans_init : bool
        Initialise the codebook by spherical k-means on the first batch.
    dead_after : int
        Steps without use after which a code is reported dead.
    restart_dead : bool
        Move dead codes onto vectors of the current batch. Not in LaBraM's code,
        which relies on k-means initialisation and EMA alone; on the small
        corpus of ../shared/data that codebook collapsed to one code within 25
        steps, so neurofm restarts by default.
    """

    patch_size: int = Field(200, ge=16)
    codebook_size: int | None = Field(None, ge=2)
    code_dim: int = Field(64, ge=2)
    width: int | None = Field(None, ge=8)
    depth: int = Field(12, ge=1)
    num_heads: int = Field(10, ge=1)
    decoder_depth: int = Field(3, ge=1)
    ema_decay: float = Field(0.99, gt=0, lt=1)
    commitment_weight: float = Field(1.0, ge=0)
    kmeans_init: bool = True
    dead_after: int = Field(20, ge=1)
    restart_dead: bool = True


class OptimizerConfig(BaseConfig):
    """AdamW with linear warm-up and cosine decay, counted in optimisation steps.

    Parameters
    ----------
    max_steps : int
        Optimisation steps of the run.
    batch_size : int
        Windows per step and process.
    lr, min_lr : float
        Peak and final learning rate.
    warmup_steps : int
        Linear warm-up steps.
    weight_decay : float
        AdamW weight decay.
    betas : tuple of float
        AdamW betas.
    clip_grad : float | None
        Gradient-norm clipping (LaBraM stage 2: 3.0).
    """

    max_steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(5e-4, gt=0)
    min_lr: float = Field(1e-5, ge=0)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    clip_grad: float | None = Field(3.0, gt=0)


class PretrainConfig(BaseConfig):
    """One pretraining run: a recipe, a stage, a corpus and where to write.

    Parameters
    ----------
    recipe : {"labram", "codebrain"}
        Which backbone and tokenizer: LaBraM (VQ-NSP tokenizer, braindecode
        ``Labram``) or CodeBrain (dual temporal/frequency tokenizer, braindecode
        ``CodeBrain``).
    stage : {"tokenizer", "masked"}
        Stage 1 trains the tokenizer; stage 2 trains the backbone to predict
        the frozen tokenizer's codes of masked patches.
    corpus : CorpusConfig
        The unlabeled recordings.
    output_dir : str
        The run directory: checkpoints, history, and the result
        (``tokenizer.safetensors`` for stage 1; ``model.safetensors`` +
        ``config.json`` for stage 2, loadable as ``weights=output_dir``).
    tokenizer : TokenizerConfig
        Stage 1 architecture (stage 2 reads it from ``tokenizer_run``).
    tokenizer_run : str | None
        Stage 2: the run directory of a finished stage 1, or LaBraM's released
        ``vqnsp.pth`` (or a folder holding it), whose encoder and codebook then
        give the codes, built for the corpus's windows (whole 200-sample
        patches, at most 15; :func:`neurofm.pretrain.load_tokenizer`).
    backbone_kwargs : dict
        braindecode arguments of the stage-2 backbone (``num_layers``, ``num_heads`` ...).
    mask_ratio : float
        Fraction of (channel, patch) tokens hidden per window (LaBraM: 0.5).
    symmetric_masking : bool
        Also train on the complementary mask in each step.
    optimizer : OptimizerConfig
    checkpoint_every : int
        Write a resumable checkpoint every this many steps (and at the end).
    keep_checkpoints : int
        How many of the latest checkpoints to keep.
    seed : int
        Seeds initialisation, data order, masks and dropout; a resumed run
        continues exactly as an uninterrupted one (on the CPU).
    device : {"auto", "cpu", "cuda"}
        ``"auto"``: CUDA when the process sees it, else the CPU; resolved in
        each ``torchrun`` process, which takes the GPU of its ``LOCAL_RANK``.
    precision : {"auto", "fp32", "bf16"}
        bf16 autocast; ``"auto"`` (default): bf16 on CUDA GPUs with bf16
        hardware, fp32 elsewhere (slow on CPUs without AVX-512/AMX, and the
        CPU's results stay as they were).
    deterministic : bool
        Reproducible algorithms on the GPU (see
        :func:`neurofm.devices.deterministic_algorithms`); on the CPU a run
        is reproducible without it.
    progress : bool
        Show a progress bar.
    """

    recipe: Literal["labram", "codebrain"] = "labram"
    stage: Literal["tokenizer", "masked"]
    corpus: CorpusConfig
    output_dir: str
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    tokenizer_run: str | None = None
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    mask_ratio: float = Field(0.5, gt=0, lt=1)
    symmetric_masking: bool = True
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    deterministic: bool = False
    progress: bool = True

    @model_validator(mode="after")
    def _stage_inputs(self) -> PretrainConfig:
        if self.stage == "masked" and self.tokenizer_run is None:
            raise ValueError(
                "stage 'masked' needs tokenizer_run: the run directory of a finished stage 'tokenizer', or LaBraM's "
                "released vqnsp.pth."
            )
        if self.stage == "tokenizer" and self.tokenizer_run is not None:
            raise ValueError("tokenizer_run only applies to stage 'masked'; remove it for stage 'tokenizer'.")
        return self
