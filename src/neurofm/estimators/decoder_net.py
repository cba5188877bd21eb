"""The network a fine-tuned decoder trains: a backbone's pooled features through a linear or MLP head."""

from __future__ import annotations

from typing import Any

import torch

from ..adapters import mha_fastpath_disabled
from ..embed import pool_tokens

__all__ = ["DecoderNet"]


class DecoderNet(torch.nn.Module):
    """Backbone features, pooled, through a linear or MLP head.

    Parameters
    ----------
    backbone : nn.Module
        The backbone (possibly wrapped by peft).
    extract : callable
        ``extract(module, x, signal) -> (tokens, cls)`` from the model spec.
    signal : AdaptedSignal
        What the backbone sees.
    pooling : str
        Pooling of tokens.
    n_outputs : int
        Output width.
    head : {"linear", "mlp"}
        Head type.
    hidden, dropout : int, float
        MLP width and dropout before the head.
    fastpath_off : bool
        Run the backbone with torch's fused attention path disabled.
    """

    def __init__(
        self, backbone, extract, signal, pooling, n_outputs, head="linear", hidden=128, dropout=0.1, fastpath_off=False
    ):
        super().__init__()
        self.backbone = backbone
        self._extract = extract
        self._signal = signal
        self._pooling = pooling
        self._fastpath_off = fastpath_off
        # The probe goes where the backbone is: a quantised backbone already lives on its device.
        probe = torch.zeros(2, signal.n_chans, signal.n_times, device=_device_of(backbone))
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            dim = self.features(probe).shape[1]
        backbone.train(was_training)
        layers: list[torch.nn.Module] = [torch.nn.Dropout(dropout)]
        if head == "mlp":
            layers += [
                torch.nn.Linear(dim, hidden),
                torch.nn.GELU(),
                torch.nn.Dropout(dropout),
                torch.nn.Linear(hidden, n_outputs),
            ]
        else:
            layers += [torch.nn.Linear(dim, n_outputs)]
        self.head = torch.nn.Sequential(*layers)

    def _inner(self):
        # peft wraps custom modules as PeftModel -> tuner -> model; hooks and submodule names live on the model.
        module = self.backbone
        if hasattr(module, "base_model") and hasattr(module.base_model, "model"):
            module = module.base_model.model
        return module

    def features(self, x):
        with mha_fastpath_disabled(self._fastpath_off):
            tokens, cls = self._extract(self._inner(), x, self._signal)
        return pool_tokens(tokens, cls, self._pooling)

    def forward(self, x):
        return self.head(self.features(x))


def _device_of(module) -> Any:
    """The device of a module's first parameter (the CPU for one without parameters)."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))
