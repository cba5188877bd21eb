"""A fine-tuned decoder in braindecode's own layout, loaded by ``<Class>.from_pretrained`` to the same logits."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError
from ..models.registry import get_model_spec
from ..utils.files import atomic_write, jsonable


@dataclass(frozen=True)
class BraindecodeHead:
    """How neurofm's trained head is written in a braindecode class (or why it cannot be).

    Attributes
    ----------
    pooling : tuple of str
        The poolings whose linear head the class's ``final_layer`` holds exactly.
    how : str
        What the export of a linear head writes (model card), or, with no pooling, why nothing can be.
    native : str
        Why a model trained with the class's own head (``trainer.head="native"``) cannot be written; empty when
        it can (the class as trained, adapters merged).
    call : tuple of str
        What the class's forward takes besides the adapted windows, from the signal (keyword names, e.g.
        LaBraM's ``ch_names``); the export records their values.
    tolerance : float
        How far braindecode's logits may lie from neurofm's (``rtol = atol``; 0: bit for bit), where neurofm
        computes something more stably than the class does.
    """

    pooling: tuple[str, ...]
    how: str
    native: str = ""
    call: tuple[str, ...] = ()
    tolerance: float = 0.0


_OWN_HEAD = "the class as fine-tuned with its own head (trainer.head='native'), adapters merged into the weights"

#: Per backbone: which of neurofm's heads braindecode's class holds exactly. Exact means the same operations on
#: the same numbers, so braindecode's forward gives neurofm's logits bit for bit: a head that is only
#: mathematically equal (a mean folded into a linear layer) sums in another order. A decoder trained with the
#: class's own head (``trainer.head="native"``) is the class itself, written as it is.
BRAINDECODE_HEADS = {
    "cbramod": BraindecodeHead(
        ("flatten",),
        "CBraMod's final_layer is Flatten + Linear over every (channel, patch) token of proj_out's output: "
        "proj_out is written as the identity (emb_dim = the encoder's width, weight I, bias 0: exact in floating "
        "point) and final_layer holds neurofm's linear head on the flattened encoder tokens (pooling='flatten'). "
        "A mean or max pooling has no place in final_layer",
    ),
    "labram": BraindecodeHead(
        ("cls",),
        "Labram's final_layer is a Linear on the normed class token, which neurofm's linear head read with "
        "pooling='cls': final_layer holds that head",
        call=("ch_names",),
    ),
    "codebrain": BraindecodeHead(
        (), "CodeBrain's final_layer is a fixed three-layer ELU MLP on the flattened tokens, not a linear head"
    ),
    "biot": BraindecodeHead((), "BIOT's final_layer applies an ELU before its Linear, which neurofm's head does not"),
    "bendr": BraindecodeHead(
        (),
        "BENDR's final_layer is a weight-normalised Linear on the start token, while neurofm reads the context "
        "tokens that follow it",
    ),
    "eegpt": BraindecodeHead(
        (), "EEGPT's final_layer is its two-layer LinearWithConstraint probe (or a class built without arguments)"
    ),
    "luna": BraindecodeHead(
        (),
        "LUNA's final_layer is a cross-attention head with learned queries",
        # neurofm computes the frequency phases so that a window's bits do not depend on its row in the batch
        # (numpy's angle); braindecode's class rounds some of them otherwise (torch.angle).
        tolerance=1e-5,
    ),
    "reve": BraindecodeHead(
        (),
        "REVE's final_layer normalises the flattened tokens (LayerNorm) before its Linear",
        native=(
            "braindecode's REVE downloads its electrode-position bank when built and places the channels by that "
            "bank, not by the positions neurofm adapted the windows with, so its logits cannot be checked here"
        ),
    ),
    "signaljepa": BraindecodeHead((), "SignalJEPA_Contextual's final_layer is a spatial convolution before its Linear"),
}


def braindecode_refusal(config: Any) -> str | None:
    """Why a fine-tuned model cannot be written in the braindecode layout (``None``: it can)."""
    head = BRAINDECODE_HEADS.get(config.model_key)
    if config.backend != "braindecode":
        return f"it was built by the {config.backend!r} backend, not braindecode"
    if config.quantized:
        return "its backbone is quantised to 4 bit, which a braindecode class cannot hold"
    if head is None:
        return f"no braindecode head is known for {config.model_key!r}"
    if config.trainer.head == "native":
        return head.native or None
    own_head = "" if head.native else "; a decoder trained with the class's own head (trainer.head='native') can be"
    if not head.pooling:
        return head.how + own_head
    if config.pooling not in head.pooling:
        return (
            f"neurofm pooled its tokens with pooling={config.pooling!r}; the class's final_layer holds only "
            f"pooling={' or '.join(repr(p) for p in head.pooling)} exactly ({head.how}){own_head}"
        )
    if config.trainer.head != "linear":
        return f"its head is trainer.head={config.trainer.head!r}; the class's final_layer holds a linear head only"
    return None


def written_as(config: Any) -> str:
    """What the braindecode export of a model holds (model card)."""
    return _OWN_HEAD if config.trainer.head == "native" else BRAINDECODE_HEADS[config.model_key].how


def decoder_for_export(estimator: Any) -> Any:
    """neurofm's decoder as an export writes it: a CPU copy in eval mode, PEFT adapters merged into the weights.

    Its outputs on adapted windows (:func:`neurofm.training.predict_network`)
    are what the exported braindecode model gives. A model whose adapters are
    already merged (a refit model, a checkpoint saved with
    ``lora.save="merged"``) is copied as it is; merging adapters changes the
    last bits of the outputs (``W + BA`` is rounded once, not per forward).
    """
    net = copy.deepcopy(estimator.net_).to("cpu")
    if hasattr(net.backbone, "merge_and_unload"):
        net.backbone = net.backbone.merge_and_unload()
        net._fastpath_off = False  # adapters merged: nothing for torch's fused attention to bypass
    return net.eval()


def _with_head(
    net: Any, config_changes: dict[str, Any], head_state: dict[str, Any], replaced: tuple[str, ...] = ("final_layer.",)
) -> Any:
    """The backbone's class rebuilt with ``config_changes``: its weights, with ``head_state`` in place of the
    layers under ``replaced``."""
    backbone = net.backbone
    module = type(backbone).from_config(backbone.get_config() | {"n_outputs": net.n_outputs} | config_changes)
    state = {k: v for k, v in backbone.state_dict().items() if not k.startswith(replaced)}
    module.load_state_dict(state | head_state, strict=True)
    return module.eval()


def _linear_state(net: Any, prefix: str) -> dict[str, Any]:
    linear = net.head[-1]
    return {f"{prefix}.weight": linear.weight.detach().clone(), f"{prefix}.bias": linear.bias.detach().clone()}


def _cbramod_module(net: Any) -> Any:
    import torch  # heavy: torch and braindecode load on use

    width = net.backbone.patch_embedding.d_model
    identity = {"proj_out.0.weight": torch.eye(width), "proj_out.0.bias": torch.zeros(width)}
    changes = {"emb_dim": width, "return_encoder_output": False}
    return _with_head(net, changes, identity | _linear_state(net, "final_layer.1"), ("proj_out.", "final_layer."))


def _labram_module(net: Any) -> Any:
    # Without mean pooling (braindecode's default) Labram's final_layer reads the normed class token, as
    # neurofm's pooling='cls' does.
    if getattr(net.backbone, "fc_norm", None) is not None:
        raise ConfigError(
            "This Labram was built with use_mean_pooling=True: its final_layer reads fc_norm of the mean patch "
            "token, not the class token neurofm's head read. Export it with format='checkpoint'."
        )
    return _with_head(net, {}, _linear_state(net, "final_layer"))


_MODULE_WRITERS = {"cbramod": _cbramod_module, "labram": _labram_module}


def _verify_input(n_chans: int, n_times: int):
    import torch  # heavy: torch and braindecode load on use

    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, n_chans, n_times, generator=generator)


def _write_braindecode(folder: Path, estimator: Any) -> dict[str, Any]:
    """Write the braindecode layout of a fine-tuner into ``folder``; what the check of its logits found."""
    import torch  # heavy: torch and braindecode load on use
    from braindecode import __version__ as braindecode_version  # heavy: torch and braindecode load on use
    from braindecode.models.base import build_model_config  # heavy: torch and braindecode load on use
    from safetensors.torch import save_model  # heavy: torch and braindecode load on use

    from ..training import predict_network  # heavy: torch and braindecode load on use

    cfg = estimator.config
    spec = get_model_spec(cfg.model_key)
    net = decoder_for_export(estimator)
    native = cfg.trainer.head == "native"
    module = net.backbone if native else _MODULE_WRITERS[cfg.model_key](net)
    config = build_model_config(module) | {"braindecode_version": braindecode_version}
    text = json.dumps(jsonable(config), indent=2)
    atomic_write(folder / "config.json", lambda tmp: tmp.write_text(text))
    atomic_write(folder / "model.safetensors", lambda tmp: save_model(module, str(tmp)))
    # What plain braindecode builds from these files must give neurofm's logits: bit for bit, or within the
    # tolerance the table states where neurofm computes more stably than the class.
    head = BRAINDECODE_HEADS[cfg.model_key]
    reloaded = type(module).from_pretrained(str(folder)).eval()
    target = estimator.plan_.target
    x = _verify_input(target.n_chans, target.n_times)
    expected = torch.from_numpy(predict_network(net, x.numpy(), len(x), "cpu", "fp32"))
    with torch.inference_mode():
        found = spec.classify(reloaded, x, target).float()
    difference = float((found - expected).abs().max())
    if not torch.allclose(found, expected, rtol=head.tolerance, atol=head.tolerance):  # tolerance 0: equal
        for name in ("config.json", "model.safetensors"):
            (folder / name).unlink(missing_ok=True)
        raise ConfigError(
            f"The braindecode {type(module).__name__} written for this model gives other logits than neurofm's "
            f"(largest difference {difference:.3g}); nothing was exported. Export neurofm's checkpoint instead "
            "(format='checkpoint')."
        )
    return {
        "class": type(module).__name__,
        "call": {name: list(getattr(target, name)) for name in head.call},
        "check": {
            "inputs": f"{len(x)} seeded normal windows of shape {tuple(x.shape[1:])}",
            "device": "cpu",
            "precision": "fp32",
            "tolerance": head.tolerance,
            "largest_difference": difference,
        },
    }


def _write_scratch_braindecode(folder: Path, estimator: Any) -> dict[str, Any]:
    """Write a from-scratch network (a braindecode class as it is) in braindecode's layout; what the check found.

    The network is the class itself, so ``save_pretrained``'s two files hold
    it whole; plain braindecode's ``<Class>.from_pretrained`` must give
    neurofm's logits bit for bit, or nothing is written.
    """
    import torch  # heavy: torch and braindecode load on use
    from braindecode import __version__ as braindecode_version  # heavy: torch and braindecode load on use
    from braindecode.models.base import build_model_config  # heavy: torch and braindecode load on use
    from safetensors.torch import save_model  # heavy: torch and braindecode load on use

    from ..training import predict_network  # heavy: torch and braindecode load on use

    net = copy.deepcopy(estimator.net_).to("cpu").eval()
    config = build_model_config(net) | {"braindecode_version": braindecode_version}
    text = json.dumps(jsonable(config), indent=2)
    atomic_write(folder / "config.json", lambda tmp: tmp.write_text(text))
    atomic_write(folder / "model.safetensors", lambda tmp: save_model(net, str(tmp)))
    reloaded = type(net).from_pretrained(str(folder)).eval()
    x = _verify_input(len(estimator.plan_.source.ch_names), estimator.plan_.n_times_in)
    expected = torch.from_numpy(predict_network(net, x.numpy(), len(x), "cpu", "fp32"))
    with torch.inference_mode():
        found = reloaded(x).float()
    difference = float((found - expected).abs().max())
    if not torch.equal(found, expected):
        for name in ("config.json", "model.safetensors"):
            (folder / name).unlink(missing_ok=True)
        raise ConfigError(
            f"The braindecode {type(net).__name__} written for this network gives other logits than neurofm's "
            f"(largest difference {difference:.3g}); nothing was exported. Export neurofm's checkpoint instead "
            "(format='checkpoint')."
        )
    return {
        "class": type(net).__name__,
        "call": {},
        "check": {
            "inputs": f"{len(x)} seeded normal windows of shape {tuple(x.shape[1:])}",
            "device": "cpu",
            "precision": "fp32",
            "tolerance": 0.0,
            "largest_difference": difference,
        },
    }
