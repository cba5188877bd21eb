"""Train modes as data: which parameters train, and PEFT adapters from the peft library.

The default adapter targets of each backbone live in its ``ModelSpec``
(``lora_targets``); ``LoRAConfig.target_modules`` overrides them. A target
list entry matches a module whose full name equals it or ends with
``"." + entry`` (peft's rule); a string is a regular expression matched
against the full name. Targets that match nothing are an error before any
training, with the model's module names to choose from.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from . import devices
from .configs.models import DTYPE_ALIASES
from .exceptions import ConfigError
from .utils.check import format_choices, soft_import

if TYPE_CHECKING:
    from .configs import LoRAConfig
    from .models.specs import ModelSpec

__all__ = [
    "PEFT_MODES",
    "apply_adapters",
    "check_quantization",
    "match_targets",
    "mha_fastpath_disabled",
    "quantization_compute_dtype",
    "quantize_linear_layers",
    "resolve_targets",
]

PEFT_MODES = ("lora", "qlora", "ia3", "dora", "adalora", "oft")


LORA_FAMILY = ("lora", "qlora")


def resolve_targets(
    spec: ModelSpec, lora: LoRAConfig, mode: str = "lora", module: torch.nn.Module | None = None
) -> list[str] | str:
    """The adapter targets: the user's, else the registry's defaults for ``mode``.

    ``module``: a transformers encoder (``backend="hugging_face"``), whose layers the registry does not know:
    its defaults are its own linear layers (:func:`linear_layer_names`).
    """
    if lora.target_modules is not None:
        targets = lora.target_modules
    elif module is not None:
        targets = linear_layer_names(module)
    else:
        targets = spec.lora_targets if mode in LORA_FAMILY or spec.linear_targets is None else spec.linear_targets
    targets = targets if isinstance(targets, str) else list(targets)
    if not targets:
        raise ConfigError(f"{spec.key!r} names no default adapter targets; set LoRAConfig.target_modules.")
    return targets


def linear_layer_names(module: torch.nn.Module) -> list[str]:
    """Every ``nn.Linear`` of ``module`` that runs as a layer: those of ``nn.MultiheadAttention`` are left out, since
    the attention reads their weights directly and an adapter there would have no effect."""
    mha_owned = _mha_owned(module)
    return [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear) and n and n not in mha_owned]


def _mha_owned(module: torch.nn.Module) -> set[str]:
    """Names of the layers ``nn.MultiheadAttention`` modules own (it reads their weights itself, not calling them)."""
    return {
        f"{name}.{child}" if name else child
        for name, mod in module.named_modules()
        if isinstance(mod, torch.nn.MultiheadAttention)
        for child, _ in mod.named_children()
    }


def _matches(name: str, targets: list[str] | str) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def match_targets(
    module: torch.nn.Module, targets: list[str] | str, exclude_prefixes: tuple[str, ...] = ()
) -> list[str]:
    """Names of the modules that ``targets`` select (heads excluded).

    Raises
    ------
    ConfigError
        When a target entry matches no module; lists module names to choose from.
    """
    names = [n for n, _ in module.named_modules() if n and not n.startswith(exclude_prefixes)]
    entries = [targets] if isinstance(targets, str) else list(targets)
    as_query = (lambda t: t) if isinstance(targets, str) else (lambda t: [t])
    unmatched = [t for t in entries if not any(_matches(n, as_query(t)) for n in names)]
    if unmatched:
        endings = sorted({n.rsplit(".", 1)[-1] for n in names})[:40]
        raise ConfigError(
            f"Adapter target(s) {unmatched} match no module of this model. Module name endings available include: "
            f"{endings}. Set LoRAConfig.target_modules accordingly."
        )
    matched = [n for n in names if _matches(n, targets)]
    return matched


def _oft_block_size(module, matched: list[str], limit: int = 32) -> int:
    """Largest block size up to ``limit`` dividing every targeted layer's input width (OFT's requirement)."""
    widths = [getattr(module.get_submodule(n), "in_features", None) for n in matched]
    g = 0
    for w in widths:
        if w:
            g = math.gcd(g, int(w))
    return max((d for d in range(1, min(limit, g or 1) + 1) if g % d == 0), default=1)


def _import_peft(mode: str):
    """peft, imported without bitsandbytes' CPU notice about an optional kernels package.

    peft imports bitsandbytes whenever it is installed, and bitsandbytes' CPU
    backend warns at import that its optional accelerated 4-bit kernel is
    missing: noise on a run that quantises nothing, and neurofm's 4-bit CPU
    path does not need it.
    """
    notice = logging.getLogger("bitsandbytes.backends.cpu.ops")
    previous = notice.level
    notice.setLevel(logging.ERROR)
    try:
        return soft_import("peft", f"train_mode={mode!r}", extra="peft")
    finally:
        notice.setLevel(previous)


def _peft_config(
    mode: str,
    lora: LoRAConfig,
    targets,
    exclude: list[str],
    total_steps: int,
    extra: dict[str, Any],
    oft_block: int = 1,
):
    peft = _import_peft(mode)
    common = {"target_modules": targets, **({"exclude_modules": exclude} if exclude else {})}
    if mode in ("lora", "qlora", "dora"):
        return peft.LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, use_dora=mode == "dora", **common, **extra
        )
    if mode == "ia3":
        return peft.IA3Config(feedforward_modules=[], **common, **extra)
    if mode == "adalora":
        params = {
            "init_r": lora.r,
            "target_r": max(1, lora.r // 2),
            "lora_alpha": lora.alpha,
            "lora_dropout": lora.dropout,
            "total_step": max(total_steps, 2),
            "tinit": 0,
            "tfinal": 0,
        }
        return peft.AdaLoraConfig(**params, **common, **extra)
    if mode == "oft":
        return peft.OFTConfig(r=0, oft_block_size=oft_block, **common, **extra)
    raise ConfigError(f"train_mode={mode!r} is not a PEFT method; use one of {format_choices(PEFT_MODES)}.")


def apply_adapters(
    module: torch.nn.Module,
    spec: ModelSpec,
    mode: str,
    lora: LoRAConfig,
    total_steps: int,
    peft_kwargs: dict[str, Any] | None = None,
    transformers_encoder: bool = False,
):
    """Wrap ``module`` with the PEFT method of ``mode``; the base weights are frozen.

    ``transformers_encoder``: ``module`` is a ``backend="hugging_face"`` encoder; the registry's layer names and
    heads do not apply to it, and its default targets are its own linear layers.

    Returns
    -------
    peft_model : peft.PeftModel
        The wrapper (saving adapters, AdaLoRA's rank allocation, merging).
    """
    targets = resolve_targets(spec, lora, mode, module if transformers_encoder else None)
    head_prefixes = () if transformers_encoder else spec.head_prefixes
    matched = match_targets(module, targets, head_prefixes)
    head_modules = (
        sorted({n for n, _ in module.named_modules() if n and n.startswith(head_prefixes)}) if head_prefixes else []
    )
    exclude = [n for n in head_modules if _matches(n, targets)]
    config = _peft_config(
        mode, lora, targets, exclude, total_steps, dict(peft_kwargs or {}), oft_block=_oft_block_size(module, matched)
    )
    peft = _import_peft(mode)
    try:
        wrapped = peft.get_peft_model(module, config)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ConfigError(f"peft could not apply {mode!r} to {spec.key!r} on {matched[:6]}...: {exc}") from exc
    return wrapped


_QUANT_DEVICES = ("cpu", "cuda")


def check_quantization(device: str) -> Any:
    """Import bitsandbytes and check the device can run its quantised layers; returns the module."""
    bnb = soft_import("bitsandbytes", "4- and 8-bit quantisation (train_mode='qlora')", extra="quant")
    if device.split(":")[0] not in _QUANT_DEVICES:
        raise ConfigError(
            f"bitsandbytes quantised layers run on {' and '.join(_QUANT_DEVICES)}, not on {device!r}; "
            "use device='cpu' or a CUDA device."
        )
    return bnb


#: A config's dtype spelling -> torch's name (the inverse of the configs' aliases).
_TORCH_NAMES = {spelling: name for name, spelling in DTYPE_ALIASES.items()}


def quantization_compute_dtype(compute_dtype: str, device: str) -> str:
    """The torch dtype 4-bit weights are dequantised to: ``"auto"`` is bfloat16 on CUDA GPUs with bf16 hardware.

    ``compute_dtype`` is a config's spelling (``fp32``, ``bf16``, ``fp16`` or ``auto``; torch's names also pass).
    """
    if compute_dtype != "auto":
        return _TORCH_NAMES.get(compute_dtype, compute_dtype)
    return "bfloat16" if device.startswith("cuda") and devices.cuda_has_native_bf16(device) else "float32"


def quantize_linear_layers(
    module, quantization, exclude_prefixes: tuple[str, ...], device: str, read_directly: tuple[str, ...] = ()
) -> list[str]:
    """Replace the backbone's ``nn.Linear`` layers by bitsandbytes 4- or 8-bit layers (``quantization.bits``), in place.

    Linear layers owned by ``nn.MultiheadAttention`` stay as they are: the
    attention reads their weight tensors directly, so a quantised layer would
    never run. Heads (``exclude_prefixes``) stay in full precision too.

    Returns
    -------
    names : list of str
        The quantised layers.
    """
    bnb = check_quantization(device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        quantization_compute_dtype(quantization.compute_dtype, device)
    ]
    mha_owned = _mha_owned(module)
    targets = [
        name
        for name, mod in module.named_modules()
        if type(mod) is torch.nn.Linear
        and name not in mha_owned
        and not name.startswith(exclude_prefixes)
        and not _matches(name, list(read_directly))
    ]
    for name in targets:
        linear = module.get_submodule(name)
        quantized = _quantized_linear(bnb, linear, quantization, dtype)
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, quantized.to(device))  # moving the layer quantises its weight
    if not targets:
        raise ConfigError("The backbone has no nn.Linear layer outside attention modules to quantise.")
    return targets


def _quantized_linear(bnb, linear, quantization, dtype):
    """A bitsandbytes layer holding ``linear``'s weights, quantised when moved to its device."""
    bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    if quantization.bits == 8:
        quantized = _flat_rows_int8_class()(
            linear.in_features, linear.out_features, bias=linear.bias is not None, has_fp16_weights=False
        )
        quantized.weight = bnb.nn.Int8Params(linear.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
    else:
        quantized = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=dtype,
            compress_statistics=quantization.double_quant,
            quant_type=quantization.quant_type,
        )
        quantized.weight = bnb.nn.Params4bit(
            linear.weight.data.clone(),
            requires_grad=False,
            quant_type=quantization.quant_type,
            compress_statistics=quantization.double_quant,
        )
        # On CPUs with AVX-512 BF16, bitsandbytes 0.50 repacks a 4-bit weight for its own kernel at
        # the first no-grad forward and asserts out_features % 32 == 0 there, so LaBraM's 200-wide
        # layers crash at predict time. Its portable kernel takes every shape, on every CPU alike.
        if hasattr(quantized, "support_avx512bf16_for_cpu"):
            quantized.support_avx512bf16_for_cpu = False
    if bias is not None:
        quantized.bias = bias
    return quantized


def _flat_rows_int8_class():
    """bitsandbytes' ``Linear8bitLt``, fed its input as rows (made once, on first use: bitsandbytes is optional)."""
    cls = globals().get("FlatRowsLinear8bitLt")
    if cls is None:
        import bitsandbytes as bnb  # optional: the quant extra

        class FlatRowsLinear8bitLt(bnb.nn.Linear8bitLt):
            # bitsandbytes 0.50's int8 product on the CPU takes each row's scale over dimension 1, so an input with
            # more than two dimensions (a backbone's tokens) fails; the layer sees rows and gives back the shape.
            def forward(self, x):
                shape = x.shape
                return super().forward(x.reshape(-1, shape[-1])).reshape(*shape[:-1], self.out_features)

        FlatRowsLinear8bitLt.__module__ = __name__  # pickled by name, found again through __getattr__ below
        cls = globals()["FlatRowsLinear8bitLt"] = FlatRowsLinear8bitLt
    return cls


def __getattr__(name: str):
    if name == "FlatRowsLinear8bitLt":
        return _flat_rows_int8_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def describe_quantization(quantization, device: str, layers: list[str]) -> dict[str, Any]:
    """What the artifacts record of a quantised backbone: which layers, to what."""
    out: dict[str, Any] = {"bits": quantization.bits, "layers": list(layers)}
    if quantization.bits == 4:
        compute = quantization_compute_dtype(quantization.compute_dtype, device)
        out |= {
            "quant_type": quantization.quant_type,
            "double_quant": quantization.double_quant,
            "compute_dtype": DTYPE_ALIASES[compute],
        }
    else:
        out["layer_type"] = "int8 (bitsandbytes Linear8bitLt, no outlier decomposition)"
    return out


@contextlib.contextmanager
def mha_fastpath_disabled(active: bool = True) -> Iterator[None]:
    """Switch off torch's fused multi-head-attention path (it reads base weights, bypassing adapters)."""
    if not active:
        yield
        return
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
