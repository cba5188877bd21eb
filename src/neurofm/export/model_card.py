"""The model card (``README.md``) of an export: data, cross-validated scores, config, versions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from ..models.registry import get_model_spec
from ..utils.versions import package_versions
from .files import _PROBE_FORMAT

if TYPE_CHECKING:
    from ..results import ExperimentResult


def model_card(result: ExperimentResult, name: str, fold: int | None, info: dict[str, Any]) -> str:
    """README.md of an export: how to load it, data, CV scores, input adaptation, weights, config, versions."""

    fmt = info["format"]
    scratch = bool(info.get("scratch"))  # a from-scratch network: a braindecode class, no registry backbone
    spec = None if scratch else get_model_spec(info["model_key"])
    signal = result.meta.get("signal", {})
    classes = (info.get("outputs") or {}).get("classes")
    front = {
        "library_name": "braindecode" if fmt == "braindecode" else "neurofm",
        "tags": ["neurofm", "eeg", info["class"] if scratch else spec.braindecode_class],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", ""]
    what = {"braindecode": "fine-tuned", "checkpoint": "fine-tuned", _PROBE_FORMAT: "frozen backbone + linear head"}
    title = f"{info['class']}, trained from scratch" if scratch else f"{spec.display_name}, {what[fmt]}"
    lines += [f"# {name}: {title} with neurofm", ""]
    fitted = "all windows of the experiment (refit)" if fold is None else f"the training partition of fold {fold}"
    lines += [f"Fitted on {fitted}. Scores below are cross-validated; the exported model itself is not scored.", ""]
    lines += _how_to_load(fmt, info)
    lines += _data_section(result, name, fold, signal, classes)
    lines += ["", "## Cross-validated scores", "", "| metric | mean ± sd | folds |", "|---|---|---|"]
    summary = result.summary()
    for row in summary[summary["Model"] == name].itertuples():
        spread = f" ± {row.std:.4f}" if np.isfinite(row.std) else ""
        lines += [f"| {row.Metric} | {row.mean:.4f}{spread} | {row.n_folds} |"]
    lines += ["", "## Input adaptation", ""]
    adaptation = info.get("input_adaptation") or {}
    for step in adaptation.get("steps", []):
        lines += [f"- {step['step']}: {step['detail']}"]
    target = adaptation.get("target")
    if target:
        lines += [
            f"- model input: {target.get('sfreq')} Hz, {target.get('n_times')} samples, channels "
            f"{', '.join(map(str, target.get('ch_names', [])))}"
        ]
    lines += ["", "## Weights", ""]
    origin = info.get("weights_origin") or {}
    registry = "" if spec is None else f"the registry checkpoint ({spec.hub_repo})"
    lines += [f"- started from: {origin.get('weights') or registry}"]
    lines += [f"- identity: `{json.dumps(origin.get('identity'), sort_keys=True)}`"]
    if info.get("written_as"):
        lines += [f"- head: {info['written_as']}"]
    lines += ["", "## Config", "", "```yaml", yaml.safe_dump(result.config["models"][name], sort_keys=False).strip()]
    lines += ["```", "", "## Versions", ""]
    for package, version in package_versions(("neurofm", "torch", "braindecode", "scikit-learn")).items():
        lines += [f"- {package}: {version}"]
    return "\n".join(lines) + "\n"


def _how_to_load(fmt: str, info: dict[str, Any]) -> list[str]:
    """The card's "How to load" section for an export of format ``fmt``."""
    lines: list[str] = []
    lines += ["## How to load", "", "```python"]
    if fmt == "braindecode":
        lines += [
            f"from braindecode.models import {info['class']}",
            "",
            f'model = {info["class"]}.from_pretrained("<this folder or hub repository>").eval()',
        ]
        call = info.get("call") or {}
        lines += [f"{name} = {value!r}" for name, value in call.items()]
        lines += [
            f"logits = model(adapted_windows{''.join(f', {name}={name}' for name in call)})  # torch.float32, shape "
            f"(n, {info['input']['shape'][1]}, {info['input']['shape'][2]})",
        ]
    elif fmt == "checkpoint":
        module, cls = ("scratch", "ScratchTrainer") if info.get("scratch") else ("neural", "NeuralFineTuner")
        lines += [
            f"from neurofm.estimators.{module} import {cls}",
            "",
            f'model = {cls}.from_checkpoint("<this folder>")',
            "predictions = model.predict(raw_windows)",
        ]
    else:
        lines += [
            "import neurofm",
            "",
            'probe = neurofm.load_exported("<this folder>")',
            "probabilities = probe.predict_proba(raw_windows)",
        ]
    lines += ["```", ""]
    if fmt == "braindecode":
        lines += [
            f"The model takes **adapted** windows ({info['input']['sfreq']:g} Hz, "
            f"{len(info['input']['ch_names'])} channels in the order below): apply the input adaptation first. "
            "Its logits equal neurofm's bit for bit (checked on export, CPU, fp32, the same batch shape).",
            "",
        ]
    return lines


def _data_section(result: ExperimentResult, name: str, fold: int | None, signal: dict, classes) -> list[str]:
    """The card's "Data" section: windows, channels, rate, classes, and a fold's training windows."""
    lines: list[str] = []
    lines += ["## Data", ""]
    n_windows = result.meta.get("n_windows")
    lines += [f"- windows: {n_windows}" if n_windows is not None else "- windows: unknown"]
    if signal:
        names = signal.get("ch_names", [])
        lines += [
            f"- channels ({len(names)}): {', '.join(map(str, names))}",
            f"- sampling rate: {signal.get('sfreq')} Hz; samples per window: {signal.get('n_times')}",
        ]
    if classes is not None:
        lines += [f"- classes: {', '.join(map(str, classes))}"]
    if fold is not None:
        n_train = int(
            (
                (result.splits["Model"] == name) & (result.splits["Fold"] == fold) & (result.splits["Set"] == "train")
            ).sum()
        )
        lines += [f"- fitted on fold {fold}'s {n_train} training windows"]
    return lines
