"""Self-supervised pretraining of backbones on unlabeled recordings (LaBraM's two-stage recipe)."""

from .config import CorpusConfig, OptimizerConfig, PretrainConfig, TokenizerConfig
from .trainer import PretrainResult, load_tokenizer, pretrain

__all__ = [
    "CorpusConfig",
    "OptimizerConfig",
    "PretrainConfig",
    "PretrainResult",
    "TokenizerConfig",
    "load_tokenizer",
    "pretrain",
]
