"""LaBraM's released checkpoints, in the authors' own key layout, mapped onto braindecode's and neurofm's modules.

The authors' repository (935963004/LaBraM) releases two files. Each is a
``torch.save`` dict whose ``"model"`` entry is a state dict; the training
script's ``utils.save_model`` stores the optimizer, the epoch and the argparse
arguments beside it, and :func:`neurofm.models.weights._read_state_dict` keeps
only the state dict.

``labram-base.pth``
    The stage-2 model of ``modeling_pretrain.py`` (``NeuralTransformerForMEM``).
    The backbone is under ``student.``: ``cls_token`` (1, 1, 200), ``pos_embed``
    (1, 129, 200: the [CLS] slot and 128 channel names), ``time_embed``
    (1, 16, 200), ``patch_embed.{conv,norm}{1,2,3}`` (the temporal convolution),
    ``blocks.{i}.*`` (``attn.qkv``, ``attn.q_norm``/``k_norm``, ``attn.proj``,
    ``mlp.fc1``/``fc2``, ``norm1``/``norm2``, ``gamma_1``/``gamma_2``) and the
    final ``norm``. Pretraining alone uses the student's ``mask_token`` and
    ``lm_head``, and, beside the student, a second ``lm_head`` and a
    ``projection_head``.
``vqnsp.pth``
    The stage-1 tokenizer of ``modeling_vqnsp.py`` (``VQNSP``): ``encoder.*``
    and ``decoder.*`` (both the ``NeuralTransformer`` of ``modeling_finetune.py``,
    with q/v biases, without q/k norms or layer scales, with a final
    ``fc_norm``), the codebook ``quantize.embedding.weight`` (codes x code
    dimension; 8192 x 64 per the authors' README) and its EMA statistics,
    ``encode_task_layer`` (tokens to the code space) and the spectrum heads
    ``decode_task_layer`` and ``decode_task_layer_angle``.

:func:`convert_labram_checkpoint`, the ``convert_checkpoint`` of the ``labram``
spec, recognises the first by its keys and renames it onto braindecode's
``Labram``; :func:`vqnsp_tokenizer_state` maps the second onto neurofm's
:class:`~neurofm.pretrain.tokenizers.VQNSPTokenizer`. Nothing is guessed: every
key is renamed, or dropped for a stated reason that the load reports, or refused.
The names and shapes are facts of the authors' model definitions; the mapping
is neurofm's own.

braindecode's channel vocabulary (``LABRAM_CHANNEL_ORDER``) lists the first 128
names of the original ``standard_1020`` list in the same order, so the rows of
``pos_embed`` keep their places. Both implementations add time-table rows from
row 0 on for the patches of a window, so a shorter window uses the first rows
of the 16-row table, which neurofm slices as it does for braindecode's own
checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..exceptions import WeightsError

__all__ = [
    "ORIGINAL_PATCH_SIZE",
    "ORIGINAL_TOKENIZER_N_TIMES",
    "OriginalTokenizer",
    "convert_labram_checkpoint",
    "labram_kwargs",
    "vqnsp_tokenizer_state",
]

#: Samples per patch: the only patch length of the original code (``VQNSP.forward`` cuts 200-sample patches).
ORIGINAL_PATCH_SIZE = 200
#: Window of the original tokenizer's training and of its stage 2 (``--input_size 1600``, the ``1600`` of
#: ``labram_base_patch200_1600_8k_vocab``): 8 patches of 200 samples, 8 s at 200 Hz.
ORIGINAL_TOKENIZER_N_TIMES = 1600
#: Attention heads of the original tokenizer (``get_model_default_params`` in ``modeling_vqnsp.py``); its
#: encoder has no q/k norms, whose size would tell the head count, so the shapes cannot.
_ORIGINAL_TOKENIZER_HEADS = 10
_LAYOUT = "LaBraM original (935963004/LaBraM)"

# NeuralTransformer names (after any student./encoder. prefix) -> braindecode Labram names.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"cls_token", r"cls_token"),
    (r"pos_embed", r"position_embedding"),
    (r"time_embed", r"temporal_embedding"),
    (r"patch_embed\.((?:conv|norm)[123]\.(?:weight|bias))", r"patch_embed.temporal_conv.\1"),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"blocks.\1.mlp.0.\2"),
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"blocks.\1.mlp.2.\2"),
    (
        r"blocks\.(\d+)\.((?:norm[12]|attn\.(?:q_norm|k_norm|proj))\.(?:weight|bias)"
        r"|attn\.qkv\.weight|attn\.[qv]_bias|gamma_[12])",
        r"blocks.\1.\2",
    ),
    (r"(norm|fc_norm)\.(weight|bias)", r"\1.\2"),
)
_INDEX_BUFFER = (
    r"blocks\.\d+\.attn\.relative_position_index",
    "a buffer computed from the window, not learned (the authors' fine-tuning drops it too)",
)
# Inside the backbone (the student, or an unprefixed NeuralTransformer): what braindecode's Labram has no place for.
_BACKBONE_DROPS: tuple[tuple[str, str], ...] = (
    (r"mask_token", "the mask embedding of masked pretraining"),
    (r"lm_head\.(?:weight|bias)", "the code-prediction head of masked pretraining"),
    (r"head\.(?:weight|bias)", "a classification head of the authors' fine-tuning (neurofm fits its own head)"),
    _INDEX_BUFFER,
)
# Beside the student in labram-base.pth.
_BESIDE_STUDENT: tuple[tuple[str, str], ...] = (
    (r"lm_head\.(?:weight|bias)", "the code-prediction head of the complementary mask (pretraining only)"),
    (r"projection_head\.0\.(?:weight|bias)", "a projection head of pretraining"),
    (r"teacher\..+", "a teacher copy; the student is the backbone"),
)
# vqnsp.pth outside the encoder and the codebook.
_DECODER_REASON = (
    "the spectrum decoder of stage 1, which stage 2 never runs; neurofm's decoder cannot hold it exactly "
    "(the original prepends a [CLS] token every patch token attends to and predicts all 200 Fourier bins of a "
    "patch; neurofm's has no [CLS] token and predicts the first 100), so it is not loaded"
)
_VQNSP_DROPS: tuple[tuple[str, str], ...] = (
    (r"decoder\..+", _DECODER_REASON),
    (r"decode_task_layer(?:_angle)?\.[02]\.(?:weight|bias)", _DECODER_REASON),
    (
        r"quantize\.embedding\.(?:cluster_size|embed_avg)",
        "EMA statistics the original quantiser never reads (its EMA moves the codebook itself)",
    ),
    (r"(?:loss|teacher|scaling).*", "not part of the tokenizer (the authors' loader deletes these too)"),
)
_ARCH_WORDS = {
    "depth": "transformer blocks",
    "heads": "attention heads",
    "width": "token width",
    "conv_out_channels": "temporal-convolution channels",
    "mlp_hidden": "feed-forward width",
    "qkv_bias": "q/v biases",
    "qk_norm": "q/k norms",
    "layer_scale": "layer scales (gamma_1, gamma_2)",
    "final_norm": "final norm",
    "channel_slots": "channel-table rows",
}


def _reason(rules: tuple[tuple[str, str], ...], key: str) -> str | None:
    return next((why for pattern, why in rules if re.fullmatch(pattern, key)), None)


def _rename(
    state: dict[str, Any], drops: tuple[tuple[str, str], ...]
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """A NeuralTransformer's tensors under braindecode's names, the dropped keys (with why), the unknown ones."""
    mapped: dict[str, Any] = {}
    dropped: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in state.items():
        new = next((re.sub(p, r, key) for p, r in _RENAMES if re.fullmatch(p, key)), None)
        if new is not None:
            mapped[new] = value
        elif (why := _reason(drops, key)) is not None:
            dropped[key] = why
        else:
            unknown.append(key)
    return mapped, dropped, unknown


def _token_width(patch_size: int, conv_out_channels: int) -> int:
    # The temporal convolution: kernel 15, stride 8, padding 7, then two size-preserving convolutions.
    return conv_out_channels * ((patch_size + 2 * 7 - 15) // 8 + 1)


def _file_architecture(state: dict[str, Any], what: str) -> dict[str, Any]:
    """What a NeuralTransformer's tensors (under braindecode's names) say about its architecture."""
    needed = ("cls_token", "temporal_embedding", "patch_embed.temporal_conv.conv1.weight", "blocks.0.attn.qkv.weight")
    absent = [k for k in needed if k not in state]
    if absent:
        raise WeightsError(f"{what} is in LaBraM's original layout but lacks {absent}: the file is incomplete.")
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if blocks != list(range(len(blocks))):
        raise WeightsError(f"{what} has transformer blocks {blocks}: some are missing, the file is incomplete.")
    width = int(state["cls_token"].shape[-1])
    architecture = {
        "depth": len(blocks),
        "width": width,
        "conv_out_channels": int(state["patch_embed.temporal_conv.conv1.weight"].shape[0]),
        "mlp_hidden": int(state["blocks.0.mlp.0.weight"].shape[0]) if "blocks.0.mlp.0.weight" in state else 0,
        "qkv_bias": "blocks.0.attn.q_bias" in state,
        "qk_norm": "blocks.0.attn.q_norm.weight" in state,
        "layer_scale": "blocks.0.gamma_1" in state,
        "final_norm": "fc_norm" if "fc_norm.weight" in state else "norm",
        "channel_slots": int(state["position_embedding"].shape[1]) if "position_embedding" in state else 0,
        "time_slots": int(state["temporal_embedding"].shape[1]),
    }
    if architecture["qk_norm"]:  # q/k norms act on one head's slice of the width
        architecture["heads"] = width // int(state["blocks.0.attn.q_norm.weight"].shape[0])
    return architecture


def _module_architecture(module) -> dict[str, Any]:
    """The same description of a braindecode ``Labram`` as built."""
    if not hasattr(module.patch_embed, "temporal_conv"):
        raise WeightsError(
            "LaBraM's original backbone embeds patches with a temporal convolution; build braindecode's Labram "
            "with neural_tokenizer=True (its default)."
        )
    block = module.blocks[0]
    return {
        "depth": len(module.blocks),
        "width": int(module.cls_token.shape[-1]),
        "heads": int(block.attn.num_heads),
        "conv_out_channels": int(module.patch_embed.temporal_conv.conv1.out_channels),
        "mlp_hidden": int(block.mlp[0].out_features),
        "qkv_bias": block.attn.q_bias is not None,
        "qk_norm": block.attn.q_norm is not None,
        "layer_scale": block.gamma_1 is not None,
        "final_norm": "fc_norm" if module.fc_norm is not None else "norm",
        "channel_slots": int(module.position_embedding.shape[1]) if module.position_embedding is not None else 0,
        "time_slots": int(module.temporal_embedding.shape[1]),
        "patch_size": int(module.patch_size),
    }


def labram_kwargs(architecture: dict[str, Any]) -> dict[str, Any]:
    """braindecode ``Labram`` arguments that build the architecture a file describes (its defaults left out).

    Parameters
    ----------
    architecture : dict
        As :func:`_file_architecture` describes a file.

    Returns
    -------
    kwargs : dict
    """
    kwargs: dict[str, Any] = {"num_layers": architecture["depth"]}
    if "heads" in architecture:
        kwargs["num_heads"] = architecture["heads"]
    if architecture["conv_out_channels"] != 8:
        kwargs["conv_out_channels"] = architecture["conv_out_channels"]
    if architecture["mlp_hidden"] and architecture["mlp_hidden"] != 4 * architecture["width"]:
        kwargs["mlp_ratio"] = architecture["mlp_hidden"] / architecture["width"]
    if architecture["qkv_bias"]:
        kwargs["qkv_bias"] = True
    if not architecture["qk_norm"]:
        kwargs["qk_norm"] = None
    if not architecture["layer_scale"]:
        kwargs["init_values"] = 0.0
    if architecture["final_norm"] == "fc_norm":
        kwargs["use_mean_pooling"] = True
    if not architecture["channel_slots"]:
        kwargs["use_abs_pos_emb"] = False
    return kwargs


def _check_fits(found: dict[str, Any], built: dict[str, Any], what: str) -> None:
    """Refuse a file whose architecture is not the module's, naming every difference and the arguments that fit."""
    differ = [
        f"{_ARCH_WORDS[k]}: file {found[k]}, model {built[k]}"
        for k in _ARCH_WORDS
        if k in found and found[k] != built[k]
    ]
    if built["time_slots"] > found["time_slots"]:
        patches = built["time_slots"] - 1  # braindecode's table: a row per patch of the window, and one more
        differ.append(
            f"the window has {patches} patches, more than the file's {found['time_slots']}-row time table covers "
            f"({found['time_slots'] - 1}); use windows of at most {found['time_slots'] - 1} patches"
        )
    if not differ:
        return
    if found["width"] != built["width"]:
        differ.append(
            f"braindecode derives the token width from conv_out_channels and patch_size: {built['width']} from "
            f"{built['conv_out_channels']} channels and {built['patch_size']}-sample patches; the file's "
            f"{found['width']} needs {ORIGINAL_PATCH_SIZE}-sample patches with "
            f"{found['width'] // _token_width(ORIGINAL_PATCH_SIZE, 1)} channels"
        )
    raise WeightsError(
        f"{what} is in LaBraM's original layout, but braindecode's Labram as built here differs: "
        f"{'; '.join(differ)}. Build it like the file: model_kwargs={labram_kwargs(found)}."
    )


def _layout(state: dict[str, Any]) -> str | None:
    """Which of the original files ``state`` is laid out as (``None``: neither, e.g. braindecode's own)."""
    keys = set(state)
    if "quantize.embedding.weight" in keys or "encoder.time_embed" in keys:
        return "vqnsp"
    # Every original backbone has a time table and a temporal convolution; braindecode names them otherwise.
    markers = {f"{prefix}{name}" for prefix in ("", "student.") for name in ("time_embed", "patch_embed.conv1.weight")}
    return "backbone" if markers & keys else None


def convert_labram_checkpoint(state: dict[str, Any], module) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Map a backbone in the authors' layout (``labram-base.pth``) onto braindecode's ``Labram``.

    Parameters
    ----------
    state : dict of str to Tensor
        A checkpoint's state dict, unwrapped from ``{"model": ...}``.
    module : braindecode.models.Labram
        The module built for this input.

    Returns
    -------
    (state, record) or None
        The tensors under braindecode's names and what the conversion did (for
        the load report); ``None`` when ``state`` is not in the original layout.

    Raises
    ------
    WeightsError
        For the tokenizer file, a key the original layout does not have, or an
        architecture other than the module's (the message names each difference
        and the ``model_kwargs`` that fit).
    """
    layout = _layout(state)
    if layout is None:
        return None
    if layout == "vqnsp":
        raise WeightsError(
            "the file holds LaBraM's VQ-NSP tokenizer (the layout of vqnsp.pth: encoder, decoder, codebook), not a "
            "backbone. "
            "Give the backbone file (labram-base.pth) as weights, and this one to stage 2 of `neurofm pretrain` as "
            "tokenizer_run."
        )
    prefix = "student." if any(k.startswith("student.") for k in state) else ""
    inner: dict[str, Any] = {}
    dropped: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith(prefix):
            inner[key.removeprefix(prefix)] = value
        elif (why := _reason(_BESIDE_STUDENT, key)) is not None:
            dropped[key] = why
        else:
            unknown.append(key)
    mapped, inner_dropped, inner_unknown = _rename(inner, _BACKBONE_DROPS)
    dropped |= {prefix + k: why for k, why in inner_dropped.items()}
    unknown += [prefix + k for k in inner_unknown]
    if unknown:
        raise WeightsError(
            f"the file is in LaBraM's original layout but has {len(unknown)} key(s) that layout does not have: "
            f"{sorted(unknown)[:8]}. Refusing to load it partly: check that the file is the authors' checkpoint."
        )
    found = _file_architecture(mapped, "the file")
    _check_fits(found, _module_architecture(module), "the file")
    record = {
        "layout": _LAYOUT,
        "prefix": prefix,
        "mapped_tensors": len(mapped),
        "dropped_keys": dict(sorted(dropped.items())),
        "architecture": found,
    }
    return mapped, record


# --------------------------------------------------------------------------- the VQ-NSP tokenizer


@dataclass(frozen=True)
class OriginalTokenizer:
    """The authors' ``vqnsp.pth`` mapped onto neurofm's :class:`~neurofm.pretrain.tokenizers.VQNSPTokenizer`.

    Attributes
    ----------
    state : dict of str to Tensor
        The tokenizer's tensors under neurofm's names (encoder, ``encode_task``, quantizer).
    architecture : dict
        ``patch_size``, ``codebook_size``, ``code_dim``, ``depth``, ``num_heads``, ``decoder_depth``.
    encoder_kwargs : dict
        braindecode ``Labram`` arguments that build the file's encoder.
    kept_as_built : tuple of str
        The tokenizer's keys the original has no counterpart of, kept as the module builds them
        (braindecode's classifier, which the tokenizer never calls).
    record : dict
        What the mapping did: the dropped keys with why, the filled buffers, the file's architecture.
    """

    state: dict[str, Any]
    architecture: dict[str, Any]
    encoder_kwargs: dict[str, Any]
    kept_as_built: tuple[str, ...]
    record: dict[str, Any]


def vqnsp_tokenizer_state(state: dict[str, Any], n_times: int) -> OriginalTokenizer:
    """Map the authors' VQ-NSP tokenizer (``vqnsp.pth``) onto neurofm's, for windows of ``n_times`` samples.

    The encoder and the codebook, which are all that stage 2 runs, are mapped
    tensor for tensor; the decoder is checked and dropped (see the record).

    Parameters
    ----------
    state : dict of str to Tensor
        The file's state dict, unwrapped from ``{"model": ...}``.
    n_times : int
        Samples per window (a multiple of 200, at most 15 patches).

    Returns
    -------
    OriginalTokenizer

    Raises
    ------
    WeightsError
        When ``state`` is not in that layout, has a key it does not have, is
        inconsistent, or cannot serve windows of ``n_times`` samples.
    """

    what = "the file"
    layout = _layout(state)
    if layout != "vqnsp":
        got = (
            "a LaBraM backbone (the layout of labram-base.pth)" if layout == "backbone" else f"keys {sorted(state)[:6]}"
        )
        raise WeightsError(
            f"{what} is not LaBraM's VQ-NSP tokenizer (encoder.*, quantize.embedding.weight ...): it holds {got}. "
            "Give stage 2 the authors' vqnsp.pth, or the run directory of a finished stage 'tokenizer'."
        )
    mapped, encoder, quantize, dropped, decoder_keys = _vqnsp_parts(state, what)
    found = _file_architecture(encoder, what)
    heads, codebook_size, code_dim, patches = _check_vqnsp(found, quantize, mapped, n_times, what)
    # braindecode's Labram holds a row per patch of the window and one more; the rows beyond are never read.
    encoder["temporal_embedding"] = encoder["temporal_embedding"][:, : patches + 1].clone()
    mapped |= {f"encoder.{k}": v for k, v in encoder.items()}
    filled = _quantizer_state(quantize, codebook_size, mapped)
    decoder_blocks = {int(m.group(1)) for k in decoder_keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    architecture = {
        "patch_size": ORIGINAL_PATCH_SIZE,
        "codebook_size": codebook_size,
        "code_dim": code_dim,
        "depth": found["depth"],
        "num_heads": heads,
        "decoder_depth": len(decoder_blocks) or 3,
    }
    encoder_kwargs = {k: v for k, v in labram_kwargs(found).items() if k not in ("num_layers", "num_heads")}
    kept = ("encoder.final_layer.weight", "encoder.final_layer.bias")
    record = {
        "layout": _LAYOUT + " vqnsp",
        "n_times": n_times,
        "mapped_tensors": len(mapped) - len(filled),
        "dropped_keys": dict(sorted(dropped.items())),
        "filled": filled,
        "kept_as_built": {k: "braindecode's classifier, which the tokenizer never calls" for k in kept},
        "heads": "from the q/k norms" if "heads" in found else "the original's default (not in the file's shapes)",
        "architecture": found,
    }
    return OriginalTokenizer(mapped, architecture, encoder_kwargs, kept, record)


def _vqnsp_parts(state: dict[str, Any], what: str):
    """The file's keys sorted into the encoder's, the quantizer's, the task layer's (mapped) and the dropped ones;
    any other key, or a missing one, is an error."""
    groups: dict[str, dict[str, Any]] = {"encoder": {}, "quantize": {}}
    mapped: dict[str, Any] = {}
    dropped: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in state.items():
        head, _, rest = key.partition(".")
        task = re.fullmatch(r"encode_task_layer\.([02]\.(?:weight|bias))", key)
        if head in ("encoder", "quantize"):
            groups[head][rest] = value
        elif task:
            mapped[f"encode_task.{task.group(1)}"] = value
        elif (why := _reason(_VQNSP_DROPS, key)) is not None:
            dropped[key] = why
        else:
            unknown.append(key)
    encoder, encoder_dropped, encoder_unknown = _rename(groups["encoder"], (_INDEX_BUFFER,))
    dropped |= {f"encoder.{k}": why for k, why in encoder_dropped.items()}
    unknown += [f"encoder.{k}" for k in encoder_unknown]
    decoder_keys = [k.removeprefix("decoder.") for k in state if k.startswith("decoder.")]
    decoder_names = {k: None for k in decoder_keys if not re.fullmatch(r"patch_embed\.proj\.(?:weight|bias)", k)}
    unknown += [f"decoder.{k}" for k in _rename(decoder_names, (_INDEX_BUFFER,))[2]]
    quantize = groups["quantize"]
    for key in quantize:
        if (why := _reason(_VQNSP_DROPS, f"quantize.{key}")) is not None:
            dropped[f"quantize.{key}"] = why
        elif key not in ("embedding.weight", "embedding.initted", "cluster_size"):
            unknown.append(f"quantize.{key}")
    if unknown:
        raise WeightsError(
            f"{what} is in the layout of LaBraM's vqnsp.pth but has {len(unknown)} key(s) that layout does not "
            f"have: {sorted(unknown)[:8]}. Refusing to load it partly: check that the file is the authors' tokenizer."
        )
    absent = [
        f"encode_task.{i}.{p}" for i in (0, 2) for p in ("weight", "bias") if f"encode_task.{i}.{p}" not in mapped
    ]
    if "embedding.weight" not in quantize or absent:
        missing = (["quantize.embedding.weight"] if "embedding.weight" not in quantize else []) + [
            k.replace("encode_task", "encode_task_layer") for k in absent
        ]
        raise WeightsError(f"{what} lacks {missing}: it is incomplete.")
    return mapped, encoder, quantize, dropped, decoder_keys


def _check_vqnsp(found: dict[str, Any], quantize: dict[str, Any], mapped: dict[str, Any], n_times: int, what: str):
    """The file's shapes agree with one another and with windows of ``n_times`` samples; returns the heads, the
    codebook's size and code dimension, and the window's patch count."""
    codebook = quantize["embedding.weight"].float()
    codebook_size, code_dim = (int(n) for n in codebook.shape)
    width = found["width"]
    task_in, task_out = tuple(mapped["encode_task.0.weight"].shape), tuple(mapped["encode_task.2.weight"].shape)
    if task_in != (width, width) or task_out != (code_dim, width):
        raise WeightsError(
            f"{what} is inconsistent: encode_task_layer has shapes {task_in} and {task_out}, but the encoder's "
            f"tokens have {width} values and the codebook holds {code_dim}-dimensional codes "
            f"(expected ({width}, {width}) and ({code_dim}, {width}))."
        )
    if width != _token_width(ORIGINAL_PATCH_SIZE, found["conv_out_channels"]):
        raise WeightsError(
            f"{what}'s encoder makes {width}-value tokens, which {found['conv_out_channels']} temporal-convolution "
            f"channels do not make from the original's {ORIGINAL_PATCH_SIZE}-sample patches "
            f"({_token_width(ORIGINAL_PATCH_SIZE, found['conv_out_channels'])})."
        )
    heads = found.get("heads", _ORIGINAL_TOKENIZER_HEADS)
    if width % heads:
        raise WeightsError(f"{what}'s encoder width {width} does not split into the original's {heads} heads.")
    if "embedding.initted" in quantize and not bool(quantize["embedding.initted"].flatten()[0]):
        raise WeightsError(f"{what}'s codebook was never initialised (quantize.embedding.initted is 0).")
    norms = codebook.norm(dim=-1)
    if float((norms - 1).abs().max()) > 1e-3:
        # neurofm picks the code of largest dot product, the nearest code only when every code has length 1
        # (as the original's normalised EMA keeps them).
        raise WeightsError(
            f"{what}'s codes are not unit vectors (lengths {float(norms.min()):.4f} to {float(norms.max()):.4f}); "
            "the original keeps them normalised, so the file is not a trained VQ-NSP codebook."
        )
    patches, remainder = divmod(n_times, ORIGINAL_PATCH_SIZE)
    if remainder or not 1 <= patches <= found["time_slots"] - 1:
        raise WeightsError(
            f"{what}'s tokenizer reads windows of whole {ORIGINAL_PATCH_SIZE}-sample patches, at most "
            f"{found['time_slots'] - 1} of them (its time table has {found['time_slots']} rows); {n_times} samples "
            "do not fit."
        )
    return heads, codebook_size, code_dim, patches


def _quantizer_state(quantize: dict[str, Any], codebook_size: int, mapped: dict[str, Any]) -> dict[str, str]:
    """neurofm's quantizer entries from the original's codebook, into ``mapped``; returns what was filled in."""
    import torch  # heavy: import neurofm does not load torch

    filled = {
        "quantizer.code_sum": "the codebook (neurofm's running sum of the vectors assigned to each code; frozen here)",
        "quantizer.steps_unused": "zeros (neurofm's count of steps without use; frozen here)",
        "quantizer.initialized": "true (the original's initted)",
    }
    mapped["quantizer.codebook"] = quantize["embedding.weight"]
    mapped["quantizer.code_sum"] = quantize["embedding.weight"].clone()
    mapped["quantizer.steps_unused"] = torch.zeros(codebook_size, dtype=torch.long)
    mapped["quantizer.initialized"] = torch.tensor(True)
    if "cluster_size" in quantize:
        mapped["quantizer.cluster_size"] = quantize["cluster_size"]
    else:  # the original counts code usage only with statistic_code_usage (its default)
        mapped["quantizer.cluster_size"] = torch.zeros(codebook_size)
        filled["quantizer.cluster_size"] = "zeros (the file has no code-usage statistics)"
    return filled
