"""Commented starter configs: what ``neurofm init KIND`` writes and ``neurofm config --show KIND`` prints.

Each starter is data (a dict per kind, below) rendered as YAML with a comment above every key: the first sentence
of the field's description in the config reference (:mod:`neurofm.configs.reference`), so the comments never
disagree with the classes. Every starter validates as written; its paths are placeholders to replace.
"""

from __future__ import annotations

import textwrap
from typing import Any

import yaml
from pydantic import BaseModel

from .configs import BaseConfig, RunConfig
from .configs.models import ClassicalModelConfig, FrozenBackboneDecoderConfig, NeuralFineTuneConfig
from .configs.reference import field_descriptions, first_sentence, nested_config_class
from .exceptions import ConfigError
from .utils.check import closest_matches, format_choices

__all__ = ["STARTER_KINDS", "starter_class", "starter_yaml"]

_PROBE = {
    "kind": "frozen_backbone",
    "backbone": {"model_key": "cbramod", "weights": None, "pooling": "mean"},
    "head": {"estimator": "LogisticRegression", "params": {"max_iter": 1000}},
}
_LORA = {
    "kind": "neural_finetune",
    "model_key": "cbramod",
    "weights": None,
    "train_mode": "lora",
    "lora": {"r": 8, "alpha": 16.0, "dropout": 0.1},
    "trainer": {"max_epochs": 30, "batch_size": 32, "lr": 0.001, "early_stopping_patience": 5, "probe_epochs": 0},
    "device": {"device": "auto", "precision": "auto"},
}
_OUTPUT = {"cache_dir": "~/.cache/neurofm", "output_dir": "results"}

#: Per kind: the heading comment, then the config as data.
_STARTERS: dict[str, tuple[str, dict[str, Any]]] = {
    "decoding": (
        "Decode one recording (any file MNE reads: EDF, BDF, FIF, BrainVision ...) with a frozen foundation\n"
        "model and a classical baseline, on the same cross-validation folds.\n"
        "Replace the path, then: neurofm run THIS_FILE.yaml",
        {
            "task": "classification",
            "data": {
                "source": "recording",
                "path": "path/to/recording.edf",
                "tmin": 0.0,
                "tmax": 2.0,
                "label": "label",
                "preprocessing": {"picks": "eeg", "l_freq": 1.0, "h_freq": 40.0},
            },
            "models": {"bandpower_lr": {"kind": "classical", "estimator": "bandpower_lr"}, "cbramod_probe": _PROBE},
            "metrics": ["balanced_accuracy", "roc_auc"],
            "cv": {"strategy": "stratified_kfold", "n_splits": 5},
            **_OUTPUT,
        },
    ),
    "finetune": (
        "Fine-tune a foundation model with LoRA adapters (and compare it with a classical baseline).\n"
        "A GPU is used when there is one (device: auto). Replace the path, then: neurofm run THIS_FILE.yaml",
        {
            "task": "classification",
            "data": {
                "source": "recording",
                "path": "path/to/recording.edf",
                "tmin": 0.0,
                "tmax": 4.0,
                "preprocessing": {"picks": "eeg", "l_freq": 0.5, "h_freq": 40.0},
            },
            "models": {"ts_lr": {"kind": "classical", "estimator": "ts_lr"}, "cbramod_lora": _LORA},
            "metrics": ["balanced_accuracy", "roc_auc"],
            "cv": {"strategy": "stratified_kfold", "n_splits": 5},
            **_OUTPUT,
        },
    ),
    "bids": (
        "Decode a BIDS data set across subjects (windows around the events of each run's events.tsv).\n"
        "Replace the path and the selection, then: neurofm run THIS_FILE.yaml",
        {
            "task": "classification",
            "data": {
                "source": "bids",
                "path": "path/to/bids_root",
                "subjects": ["01", "02", "03"],
                "sessions": None,
                "tasks": ["TASKNAME"],
                "runs": None,
                "tmin": 0.0,
                "tmax": 2.0,
                "label": "label",
                "reject_peak_to_peak": 0.00015,
                "preprocessing": {"picks": "eeg", "reference": "average", "l_freq": 1.0, "h_freq": 40.0},
            },
            "models": {"csp_lda": {"kind": "classical", "estimator": "csp_lda"}, "cbramod_probe": _PROBE},
            "metrics": ["balanced_accuracy", "roc_auc"],
            "cv": {"strategy": "stratified_group_kfold", "n_splits": 3, "group_key": "subject"},
            **_OUTPUT,
        },
    ),
    "moabb": (
        "Decode a MOABB data set across subjects (MOABB downloads it on first use, into its own folder).\n"
        "Needs the moabb package. Run: neurofm run THIS_FILE.yaml",
        {
            "task": "classification",
            "data": {
                "source": "moabb",
                "moabb": {
                    "dataset": "BNCI2014_001",
                    "dataset_params": {},
                    "paradigm": "LeftRightImagery",
                    "paradigm_params": {},
                },
                "subjects": [1, 2, 3],
                "label": "label",
            },
            "models": {"ts_lr": {"kind": "classical", "estimator": "ts_lr"}, "cbramod_probe": _PROBE},
            "metrics": ["balanced_accuracy", "roc_auc"],
            "cv": {"strategy": "leave_one_group_out", "group_key": "subject"},
            **_OUTPUT,
        },
    ),
    "meg": (
        "Decode MEG (+EEG) recordings, e.g. Neuromag FIF files: MEG is scaled to EEG-equivalent microvolts for\n"
        "every model. Replace the path, then: neurofm run THIS_FILE.yaml",
        {
            "task": "classification",
            "sensor_types": ["meg", "eeg"],
            "data": {
                "source": "recording",
                "path": "path/to/recording_raw.fif",
                "tmin": -0.2,
                "tmax": 0.8,
                "preprocessing": {"picks": ["meg", "eeg"], "l_freq": 0.1, "h_freq": 40.0},
            },
            "models": {
                "ts_lr": {"kind": "classical", "estimator": "ts_lr"},
                "reve_probe": {
                    "kind": "frozen_backbone",
                    "backbone": {"model_key": "reve", "pooling": "mean"},
                    "head": {"estimator": "LogisticRegression", "params": {"max_iter": 1000}},
                },
            },
            "metrics": ["balanced_accuracy", "roc_auc"],
            "cv": {"strategy": "stratified_kfold", "n_splits": 5},
            **_OUTPUT,
        },
    ),
    "pretrain": (
        "Stage 1 of LaBraM's pretraining recipe (the neural tokenizer) on unlabeled recordings.\n"
        "Replace the paths, then: neurofm pretrain THIS_FILE.yaml; stage 2 is the same file with\n"
        "stage: masked, tokenizer_run: <this output_dir> and a new output_dir.",
        {
            "recipe": "labram",
            "stage": "tokenizer",
            "output_dir": "runs/labram-tokenizer",
            "corpus": {
                "paths": ["path/to/recordings"],
                "exclude": [],
                "window_seconds": 4.0,
                "reject_peak_to_peak": 0.0005,
            },
            "tokenizer": {"codebook_size": None, "code_dim": 64, "depth": 12, "num_heads": 10},
            "optimizer": {"max_steps": 1000, "batch_size": 64, "lr": 0.0005, "warmup_steps": 50},
            "checkpoint_every": 100,
            "seed": 0,
            "device": "auto",
        },
    ),
}

#: The kinds of ``neurofm init``.
STARTER_KINDS = tuple(_STARTERS)

_MODEL_CLASSES = {
    "classical": ClassicalModelConfig,
    "frozen_backbone": FrozenBackboneDecoderConfig,
    "neural_finetune": NeuralFineTuneConfig,
}
_WIDTH = 110
#: Comments of a starter that say more than the first sentence of the reference.
_HINTS = {
    "weights": "null: the model's published checkpoint, downloaded once into the Hugging Face cache (offline "
    "afterwards); random: random initialisation, nothing downloaded; or a local file or folder, or a hub id.",
    "path": "PLACEHOLDER: replace with your data (a path relative to this file's folder, or absolute).",
}
_LONGEST = 200  # characters of a key's comment


def starter_class(kind: str) -> type[BaseConfig]:
    """The config class a starter of ``kind`` is read with (``RunConfig``, or ``PretrainConfig``)."""
    _check_kind(kind)
    if kind == "pretrain":
        # heavy: importing neurofm.pretrain loads torch (its trainer); only this kind needs it
        from .pretrain.config import PretrainConfig

        return PretrainConfig
    return RunConfig


def starter_yaml(kind: str) -> str:
    """The commented YAML of the starter ``kind`` (one of :data:`STARTER_KINDS`)."""
    cls = starter_class(kind)
    heading, data = _STARTERS[kind]
    cls.model_validate(data)  # a starter that does not validate is a bug here, not the user's
    run = "neurofm pretrain" if kind == "pretrain" else "neurofm run"
    lines = [f"# {line}" for line in heading.splitlines()]
    lines += [
        f"# Written by `neurofm init {kind}`. Every key is explained above it; every other key keeps its default.",
        "# Every key, its type and default: the documentation's config reference (docs/reference/configs.md).",
        f"# Relative paths are relative to this file's folder. Run it with: {run} THIS_FILE.yaml",
        "",
    ]
    lines += _render(data, cls, 0)
    return "\n".join(lines) + "\n"


def _check_kind(kind: str) -> None:
    if kind not in _STARTERS:
        close = closest_matches(kind, STARTER_KINDS)
        hint = f" Did you mean {format_choices(close)}?" if close else ""
        raise ConfigError(f"No starter config {kind!r}; the kinds are {format_choices(STARTER_KINDS)}.{hint}")


def _render(data: dict[str, Any], cls: type[BaseModel], depth: int) -> list[str]:
    """``data`` as YAML lines, each key of ``cls`` under a comment from the reference."""
    pad, notes, lines = "  " * depth, field_descriptions(cls), []
    for key, value in data.items():
        field = cls.model_fields[key]
        note = _HINTS.get(key) or first_sentence(notes[key])
        if len(note) > _LONGEST:  # a comment, not the reference: the reference has the rest
            note = note[: note.rfind(" ", 0, _LONGEST)].rstrip(",;:(") + " ..."
        if field.is_required():
            note += " (required)"
        lines += textwrap.wrap(note, _WIDTH - len(pad), initial_indent=f"{pad}# ", subsequent_indent=f"{pad}# ")
        nested = nested_config_class(field.annotation)
        if key == "models":
            lines.append(f"{pad}{key}:")
            for name, model in value.items():
                lines.append(f"{pad}  {name}:")
                lines += _render(model, _MODEL_CLASSES[model["kind"]], depth + 2)
        elif nested is not None and isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines += _render(value, nested, depth + 1)
        else:
            lines.append(f"{pad}{key}: {_flow(value)}")
    return lines


def _flow(value: Any) -> str:
    """A value on one line, as YAML reads it back (``null``, ``'01'``, ``[1, 2]``, ``{max_iter: 1000}``)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return text.removesuffix("...").strip()
