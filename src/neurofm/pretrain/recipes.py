"""Pretraining recipes: what each pretrainable backbone needs, from its spec in the model registry.

A recipe names the stage-1 tokenizer that turns windows into codes, the stage-2
wrapper that predicts those codes from masked windows, and the braindecode
arguments that make the backbone's heads match the tokenizer's codebooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigError
from ..models.registry import get_model_spec, list_model_keys
from ..utils.check import format_choices
from .config import PretrainConfig, TokenizerConfig
from .masked import MaskedCodeBrain, MaskedLabram
from .tokenizers import TFDualTokenizer, VQNSPTokenizer, labram_token_width

__all__ = ["Recipe", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    """What one pretraining recipe needs: its backbone, tokenizer and masked-modelling wrapper."""

    key: str
    backbone_key: str
    default_codebook_size: int
    build_tokenizer: Callable[[TokenizerConfig, int], Any]
    channel_ids: Callable[[tuple[str, ...]], Any]
    masked_model: Callable[[Any, tuple[int, ...]], Any]
    n_codebooks: int
    # braindecode arguments that make the backbone's pretraining heads match the tokenizer.
    head_kwargs: Callable[[TokenizerConfig], dict[str, Any]] = lambda config: {}

    def resolve(self, config: TokenizerConfig) -> TokenizerConfig:
        """The tokenizer config with the recipe's defaults filled in."""
        if config.codebook_size is None:
            config = config.model_copy(update={"codebook_size": self.default_codebook_size})
        return config


def _quantizer_kwargs(config: TokenizerConfig) -> dict[str, Any]:
    return {
        "decay": config.ema_decay,
        "commitment_weight": config.commitment_weight,
        "kmeans_init": config.kmeans_init,
        "dead_after": config.dead_after,
        "restart_dead": config.restart_dead,
    }


def _build_vqnsp(config: TokenizerConfig, n_times: int):
    if config.width is not None and config.width != labram_token_width(config.patch_size):
        raise ConfigError(
            f"LaBraM's token width follows from the patch size ({labram_token_width(config.patch_size)} for "
            f"{config.patch_size} samples); remove tokenizer.width={config.width}."
        )
    return VQNSPTokenizer(
        n_times=n_times,
        patch_size=config.patch_size,
        codebook_size=config.codebook_size,
        code_dim=config.code_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        decoder_depth=config.decoder_depth,
        quantizer_kwargs=_quantizer_kwargs(config),
    )


def _build_tfdual(config: TokenizerConfig, n_times: int):
    return TFDualTokenizer(
        n_times=n_times,
        patch_size=config.patch_size,
        codebook_size=config.codebook_size,
        code_dim=config.code_dim,
        dim=config.width or 200,
        depth=config.depth,
        num_heads=config.num_heads,
        decoder_depth=config.decoder_depth,
        quantizer_kwargs=_quantizer_kwargs(config),
    )


# The registry's names for a spec's tokenizer and stage-2 wrapper (ModelSpec.pretraining).
_TOKENIZERS = {"vq_nsp": _build_vqnsp, "tf_dual": _build_tfdual}
_MASKED_MODELS = {"labram": MaskedLabram, "codebrain": MaskedCodeBrain}


def _no_channel_ids(ch_names: tuple[str, ...]) -> None:
    return None


def get_recipe(key: str) -> Recipe:
    """The pretraining recipe of backbone ``key``, from its spec in the registry.

    Raises
    ------
    ConfigError
        When neurofm does not pretrain that backbone.
    """
    spec = get_model_spec(key)
    known = spec.pretraining
    if known is None:
        choices = [k for k in list_model_keys() if get_model_spec(k).pretraining is not None]
        raise ConfigError(f"neurofm does not pretrain {key!r}; use one of {format_choices(choices)}.")
    return Recipe(
        key=spec.key,
        backbone_key=spec.key,
        default_codebook_size=known.default_codebook_size,
        build_tokenizer=_TOKENIZERS[known.tokenizer],
        channel_ids=known.channel_ids or _no_channel_ids,
        masked_model=_MASKED_MODELS[known.masked_model],
        n_codebooks=known.n_codebooks,
        head_kwargs=lambda config: {name: config.codebook_size for name in known.codebook_head_kwargs},
    )


def _backbone_architecture(recipe: Recipe, token_config: TokenizerConfig, config: PretrainConfig) -> dict[str, Any]:
    """braindecode arguments of the stage-2 backbone: the user's, with the tokenizer's patch and code counts."""
    return {"patch_size": token_config.patch_size, **config.backbone_kwargs, **recipe.head_kwargs(token_config)}
