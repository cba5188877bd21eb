"""The ``hugging_face`` backend: a transformers-format encoder loaded with ``AutoModel``.

The registry entry still decides the input adaptation (rate, channels,
units); the encoder receives the adapted windows ``(B, C, T)`` as its first
argument and returns token features, as ``last_hidden_state``, a tuple whose
first element is the tokens, or a tensor. Remote code runs only when the user
sets ``trust_remote_code=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import WeightsError
from ..utils.check import soft_import
from .weights import LoadedBackbone, WeightsSource, state_dict_hash

if TYPE_CHECKING:
    from .specs import ModelSpec

__all__ = ["check_hf_checkpoint", "encoder_skeleton", "extract_hf_tokens", "load_hf_backbone"]


def check_hf_checkpoint(source: WeightsSource, trust_remote_code: bool) -> None:
    """Refuse, before anything runs, a checkpoint this backend cannot or may not load."""
    if source.kind not in ("directory", "hub"):
        raise WeightsError(
            f"backend='hugging_face' loads a transformers directory or hub id, got weights of kind {source.kind!r}; "
            "pass the folder written by save_pretrained (config.json + weights) or 'org/name'."
        )
    config_file = Path(source.location) / "config.json"
    if not config_file.is_file():
        raise WeightsError(f"{source.location} has no config.json; it is not a transformers checkpoint directory.")
    config = json.loads(config_file.read_text())
    if config.get("auto_map") and not trust_remote_code:
        raise WeightsError(
            f"The checkpoint at {source.location} ships its own model code ({sorted(config['auto_map'])}). Review it, "
            "then set trust_remote_code=True in FoundationEmbeddingModelConfig to allow running it."
        )


def encoder_skeleton(source: WeightsSource, trust_remote_code: bool = False):
    """The encoder's modules on PyTorch's meta device, from its config alone (no weights read, no memory):
    what checks of its layer names need."""
    import torch  # heavy: import neurofm does not load torch

    transformers = soft_import("transformers", "backend='hugging_face'", extra="hf")
    config = transformers.AutoConfig.from_pretrained(
        source.location, trust_remote_code=trust_remote_code, local_files_only=True
    )
    with torch.device("meta"):
        return transformers.AutoModel.from_config(config, trust_remote_code=trust_remote_code)


def extract_hf_tokens(module, x, signal) -> tuple[Any, None]:
    """Run a transformers encoder and return ``(B, N, D)`` tokens."""
    out = module(x)
    tokens = getattr(out, "last_hidden_state", None)
    if tokens is None:
        tokens = out[0] if isinstance(out, (tuple, list)) else out
    if tokens.ndim == 4:  # (B, C, P, D) channel-by-patch grid
        tokens = tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])
    elif tokens.ndim == 2:  # already pooled
        tokens = tokens[:, None, :]
    return tokens, None


def load_hf_backbone(spec: ModelSpec, source: WeightsSource, *, trust_remote_code: bool = False) -> LoadedBackbone:
    """Load a transformers encoder from a local directory or the hub cache."""
    transformers = soft_import("transformers", "backend='hugging_face'", extra="hf")
    check_hf_checkpoint(source, trust_remote_code)
    try:
        module = transformers.AutoModel.from_pretrained(
            source.location, trust_remote_code=trust_remote_code, local_files_only=True
        )
    except ValueError as exc:
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise WeightsError(
                f"The checkpoint at {source.location} ships its own model code. Review it, then set "
                "trust_remote_code=True in FoundationEmbeddingModelConfig to allow running it."
            ) from exc
        raise WeightsError(f"transformers could not load {source.location}: {exc}") from exc
    except OSError as exc:
        raise WeightsError(f"transformers could not load {source.location}: {exc}") from exc
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    config = module.config.to_dict() if hasattr(module, "config") else {}
    return LoadedBackbone(
        module=module,
        spec=spec,
        source=source,
        architecture={"class": type(module).__name__, "config": {k: str(v) for k, v in config.items()}},
        weight_hash=state_dict_hash(module),
        backend="hugging_face",
        extract=extract_hf_tokens,
        report={"random_init": False, "trust_remote_code": trust_remote_code},
    )
