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

import torch
from safetensors.torch import load_file, save_file

from ..adapters import PEFT_MODES
from ..configs import NeuralFineTuneConfig
from ..utils.files import atomic_write

__all__ = ["CHECKPOINT_NAMES", "checkpoint_manifest", "mha_base_parameters", "read_checkpoint", "write_checkpoints"]

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
    saved_keys |= {k for k in estimator.net_.state_dict() if k.startswith("head.")}
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
