"""Self-supervised pretraining of backbones on unlabeled recordings (LaBraM's two-stage recipe)."""

from .config import CorpusConfig, OptimizerConfig, PretrainConfig, TokenizerConfig
from .run_folder import load_tokenizer
from .trainer import PretrainResult, pretrain

__all__ = [
    "CorpusConfig",
    "OptimizerConfig",
    "PretrainConfig",
    "PretrainResult",
    "TokenizerConfig",
    "load_tokenizer",
    "pretrain",
]
