"""The network a fine-tuned decoder trains: a backbone's pooled features through a linear or MLP head."""

from __future__ import annotations

from typing import Any

import torch

from ..adapters import PEFT_MODES, apply_adapters, mha_fastpath_disabled, quantize_linear_layers
from ..embed import pool_tokens
from ..models.registry import create_backbone
from ..models.weights import check_loaded_weights

__all__ = ["DecoderNet", "build_decoder_net"]


class DecoderNet(torch.nn.Module):
    """Backbone features, pooled, through a linear or MLP head; or the backbone's own forward through its own head.

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
    head : {"linear", "mlp", "native"}
        Head type; ``"native"``: the backbone's own head, already built into
        it with ``n_outputs`` outputs, and ``self.head`` is empty.
    hidden, dropout : int, float
        MLP width and dropout before the head.
    fastpath_off : bool
        Run the backbone with torch's fused attention path disabled.
    classify : callable | None
        ``classify(module, x, signal)``: the backbone's own forward (native head).
    own_head : tuple of str
        Where the backbone's own head lives in its state dict (native head).
    """

    def __init__(
        self,
        backbone,
        extract,
        signal,
        pooling,
        n_outputs,
        head="linear",
        hidden=128,
        dropout=0.1,
        fastpath_off=False,
        classify=None,
        own_head=(),
    ):
        super().__init__()
        self.backbone = backbone
        self._extract = extract
        self._signal = signal
        self._pooling = pooling
        self._fastpath_off = fastpath_off
        self.n_outputs = int(n_outputs)
        self._classify = classify if head == "native" else None
        self._own_head = tuple(own_head)
        if self._classify is not None:
            self.head = torch.nn.Sequential()
            return
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
        if self._classify is not None:
            with mha_fastpath_disabled(self._fastpath_off):
                return self._classify(self._inner(), x, self._signal)
        return self.head(self.features(x))

    def head_parameter_names(self) -> set[str]:
        """Names (as in ``named_parameters``) of the head's parameters, wherever the head lives."""
        if self._classify is None:
            return {f"head.{n}" for n, _ in self.head.named_parameters()}
        return {
            f"backbone.{name}"
            for name, _ in self.backbone.named_parameters()
            if name.split("base_model.model.")[-1].startswith(self._own_head)
        }


def _device_of(module) -> Any:
    """The device of a module's first parameter (the CPU for one without parameters)."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def build_decoder_net(
    spec, cfg, target, n_outputs, weights, random_state, device, total_steps, expected_weights=None, merged=False
):
    """The decoder ``fit`` trains and ``from_checkpoint`` rebuilds: the backbone on ``device`` (quantised, wrapped
    by its adapters unless they were merged into a checkpoint's weights) under its head.

    Returns ``(net, loaded, quantized_layers, peft_model)``; ``peft_model`` is ``None`` without adapters.
    """
    transformers_encoder = cfg.backend == "hugging_face"
    # A transformers encoder's layers are its own: the registry's head names and directly-read layers are not.
    exclude, read_directly = ((), ()) if transformers_encoder else (spec.head_prefixes, spec.weight_read_directly)
    native = cfg.trainer.head == "native"
    # The class's own head, sized for this task, when the decoder trains it; a checkpoint's is skipped as always.
    model_kwargs = cfg.model_kwargs | ({"n_outputs": n_outputs} if native else {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        loaded = create_backbone(
            spec.key,
            target,
            weights,
            backend=cfg.backend,
            model_kwargs=model_kwargs,
            random_state=random_state,
            trust_remote_code=cfg.trust_remote_code,
        )
        if expected_weights is not None:
            check_loaded_weights(expected_weights, loaded)
        # On the device before quantisation: bitsandbytes quantises a layer where it is moved, and a backbone
        # left behind on the CPU around its quantised layers would mix devices in every forward.
        backbone = loaded.module.to(device)
        quantized = (
            quantize_linear_layers(backbone, cfg.quantization, exclude, device, read_directly) if cfg.quantized else []
        )
        bypassed = (
            any(isinstance(m, torch.nn.MultiheadAttention) for m in backbone.modules())
            if transformers_encoder
            else spec.mha_fastpath_bypasses_adapters
        )
        peft_model = None
        if cfg.train_mode in PEFT_MODES and not merged:
            peft_model = apply_adapters(
                backbone, spec, cfg.train_mode, cfg.lora, total_steps, cfg.peft_kwargs, transformers_encoder
            )
            backbone = peft_model
        net = DecoderNet(
            backbone,
            loaded.extract,
            target,
            cfg.pooling,
            n_outputs,
            cfg.trainer.head,
            cfg.trainer.head_hidden,
            cfg.trainer.head_dropout,
            fastpath_off=bypassed and not merged,
            classify=spec.classify,
            own_head=spec.own_head,
        )
    return net, loaded, quantized, peft_model
