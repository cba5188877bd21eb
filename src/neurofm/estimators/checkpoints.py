"""A fine-tuned decoder's checkpoint folder: what ``NeuralFineTuner.fit`` writes and ``from_checkpoint`` reads.

A folder holds ``config.json`` (the config, the signal, the classes, the
history, and what the weight files contain) and one safetensors file per
saved state (``best``, ``last``, ``epoch-NNN``). Reading it runs no code:
JSON and safetensors only.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..adapt import plan_adaptation
from ..adapters import PEFT_MODES
from ..configs import NeuralFineTuneConfig
from ..data import prepare_inputs
from ..devices import resolve_device, resolve_precision
from ..exceptions import ConfigError
from ..models.registry import get_model_spec
from ..utils.files import atomic_write
from .decoder_net import build_decoder_net

__all__ = [
    "CHECKPOINT_NAMES",
    "checkpoint_manifest",
    "mha_base_parameters",
    "read_checkpoint",
    "rebuild_from_checkpoint",
    "write_checkpoints",
]

#: What neurofm puts in a checkpoints folder: one ``<model>-<train mode>-<12 hex>`` folder per saving fit.
CHECKPOINT_NAMES = frozenset({"*-*-" + "[0-9a-f]" * 12})


def checkpoint_manifest(outcome, cfg: NeuralFineTuneConfig) -> dict[str, Any]:
    """What a fit saved, before any file: its settings, best epoch and monitored value (no paths yet)."""
    return {
        "save": cfg.checkpoints.save,
        "monitor": cfg.checkpoints.monitor,
        "best_epoch": outcome.best_epoch,
        "best_value": outcome.best_value,
        "paths": {},
    }


def write_checkpoints(estimator, outcome, cfg: NeuralFineTuneConfig, folder: Path) -> dict[str, Any]:
    """Write the states ``cfg.checkpoints.save`` asks for into ``folder``; the manifest with their paths.

    A PEFT model is saved merged (adapters folded into the weights) or as its
    adapters and head only; a quantised base is rebuilt from its source
    weights on reload (quantisation is deterministic), so only what training
    changed is stored.
    """
    manifest = checkpoint_manifest(outcome, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Any] = {}
    if cfg.checkpoints.save in ("best", "all") and "best" in outcome.states:
        wanted["best"] = estimator.net_.state_dict()  # the net holds the restored best state
    if cfg.checkpoints.save in ("last", "all"):
        wanted["last"] = {**estimator.net_.state_dict(), **outcome.states["last"]}
    if cfg.checkpoints.save == "all":
        base = estimator.net_.state_dict()
        wanted |= {f"epoch-{e:03d}": {**base, **s} for e, s in outcome.states.items() if isinstance(e, int)}
    # A quantised base is rebuilt from its source weights on reload (quantisation is deterministic),
    # so only what training changed is stored.
    adapters_only = (cfg.train_mode in PEFT_MODES and cfg.lora.save == "adapters") or cfg.quantized
    saved_keys = {f"backbone.{n}" for n in estimator._adapter_names | estimator._drifting_base_names}
    saved_keys |= estimator.net_.head_parameter_names()
    for tag, state in wanted.items():
        if adapters_only:
            state = {k: v for k, v in state.items() if k in saved_keys}
        elif cfg.train_mode in PEFT_MODES:
            state = merged_state(estimator.net_, state)
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        path = atomic_write(folder / f"{tag}.safetensors", lambda tmp, tensors=tensors: save_file(tensors, str(tmp)))
        manifest["paths"][tag] = str(path)
    meta = {
        "config": cfg.model_dump(mode="json"),
        "signal": {
            "sfreq": estimator.sfreq,
            "ch_names": list(estimator.ch_names or []),
            "units": estimator.units,
            "sensor_positions": estimator.sensor_positions,
            "passband": None if estimator.passband is None else list(estimator.passband),
        },
        "n_times_in": int(estimator.plan_.n_times_in),
        "recording_statistics": bool(estimator.plan_.recording_statistics),
        "task": estimator.task,
        "classes": estimator.classes_.tolist() if estimator.task == "classification" else None,
        "random_state": estimator.random_state,
        "contents": "trainable" if adapters_only else ("merged" if cfg.train_mode in PEFT_MODES else "full"),
        "history": outcome.history,
    }
    text = json.dumps(meta, indent=2, default=str)
    atomic_write(folder / "config.json", lambda tmp: tmp.write_text(text))
    manifest["directory"] = str(folder)
    return manifest


def merged_state(net, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` loaded into a copy of ``net`` with its adapters merged into the weights, keys prefixed ``merged.``."""
    net = copy.deepcopy(net)
    net.load_state_dict(state, strict=False)
    net.backbone = net.backbone.merge_and_unload()
    return {f"merged.{k}": v for k, v in net.state_dict().items()}


def read_checkpoint(folder: Path, tag: str) -> tuple[dict[str, Any], NeuralFineTuneConfig, dict[str, Any]]:
    """A checkpoint folder's description, its config, and the tensors of state ``tag``."""
    meta = json.loads((folder / "config.json").read_text())
    # Saved before neurofm reproduced the pretraining's reference and untrained slots: it was trained on
    # windows adapted without them, and must predict on the same.
    meta["config"].setdefault("adaptation", {"reference": "as_recorded", "untrained_channels": "feed"})
    config = NeuralFineTuneConfig.model_validate(meta["config"])
    state = load_file(str(folder / f"{tag}.safetensors"))
    if meta["contents"] == "merged":
        state = {k.removeprefix("merged."): v for k, v in state.items()}
    return meta, config, state


def mha_base_parameters(peft_model) -> set[str]:
    """Base weights of adapted ``nn.MultiheadAttention`` layers.

    peft adds the adapter into these weights before each forward and subtracts
    it after, which leaves floating-point residue: they drift slightly during
    training, so an adapter checkpoint must carry them to reproduce predictions.
    """
    names = set()
    for module_name, module in peft_model.named_modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, torch.nn.MultiheadAttention) and hasattr(module, "lora_A"):
            names |= {f"{module_name}.base_layer.{n}" for n, _ in base.named_parameters()}
    return names


def rebuild_from_checkpoint(cls, folder: Path, tag: str, device: str | None):
    """A ``cls`` (:class:`~neurofm.estimators.neural.NeuralFineTuner`) rebuilt from a checkpoint folder and its
    ``tag``'s weights, on ``device`` (``None``: the training config's, resolved here)."""
    meta, cfg, state = read_checkpoint(folder, tag)
    est = cls(
        config=cfg,
        sfreq=meta["signal"]["sfreq"],
        ch_names=meta["signal"]["ch_names"],
        units=meta["signal"]["units"],
        sensor_positions=meta["signal"].get("sensor_positions"),
        passband=meta["signal"].get("passband"),  # absent from checkpoints of earlier versions
        task=meta["task"],
        random_state=meta["random_state"],
        verbose=False,
    )
    spec = get_model_spec(cfg.model_key)
    info = prepare_inputs(
        np.zeros((1, len(est.ch_names), meta["n_times_in"]), np.float32),
        sfreq=est.sfreq,
        ch_names=est.ch_names,
        units=est.units,
        positions=est.sensor_positions,
        passband=est.passband,
    ).info
    est.plan_ = plan_adaptation(
        spec, info, meta["n_times_in"], cfg.adaptation, recordings_known=meta.get("recording_statistics", False)
    )
    try:
        est.device_ = resolve_device(cfg.device.device if device is None else device)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc} The checkpoint {folder} was trained with device={cfg.device.device!r}; "
            "reload it with NeuralFineTuner.from_checkpoint(..., device='cpu')."
        ) from None
    est.precision_ = resolve_precision(cfg.device.precision, est.device_)
    est.classes_ = np.asarray(meta["classes"]) if meta["classes"] is not None else None
    n_outputs = len(meta["classes"]) if meta["classes"] is not None else 1
    merged = meta["contents"] == "merged"
    # A braindecode backbone whose every weight is in the checkpoint is built from its config; a transformers
    # encoder is always built from its own folder (its architecture lives there), then overwritten.
    whole = meta["contents"] in ("full", "merged") and cfg.backend != "hugging_face"
    weights = "random" if whole else cfg.weights
    est.net_ = build_decoder_net(
        spec, cfg, est.plan_.target, n_outputs, weights, est.random_state, est.device_, 2, merged=merged
    )[0]
    result = est.net_.load_state_dict(state, strict=False)
    if result.unexpected_keys or (meta["contents"] != "trainable" and result.missing_keys):
        raise ConfigError(
            f"Checkpoint {folder} does not fit the rebuilt model: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}."
        )
    est.net_.to(est.device_).eval()
    est.history_ = meta["history"]
    return est
