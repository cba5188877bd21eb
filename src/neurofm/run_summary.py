"""What a run says before it computes: the data it was given and the work it is about to do."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["describe_data", "describe_plan"]


def _counts(values) -> str:
    labels, counts = np.unique(np.asarray(values).astype(str), return_counts=True)
    return ", ".join(f"{label}: {count}" for label, count in zip(labels, counts, strict=True))


def describe_data(inputs: Any, group_key: str | None) -> str:
    """One paragraph: windows (per class), groups, channels, rate, window length, units."""
    info = inputs.info
    n, _, n_times = inputs.X.shape
    parts = [f"{n} windows"]
    if inputs.y.dtype.kind in "iuUSOb" and len(np.unique(inputs.y)) <= 50:
        parts[0] += f" ({_counts(inputs.y)})"
    if group_key and inputs.metadata is not None and group_key in inputs.metadata:
        per_group = inputs.metadata[group_key].value_counts()
        parts.append(
            f"{len(per_group)} groups of {group_key} ({per_group.min()}-{per_group.max()} windows each)"
            if per_group.min() != per_group.max()
            else f"{len(per_group)} groups of {group_key} ({per_group.min()} windows each)"
        )
    names = list(info.ch_names)
    shown = ", ".join(names[:6]) + (f" ... {names[-1]}" if len(names) > 6 else "")
    units = ", ".join(sorted(set(info.units)))
    parts.append(f"{len(names)} channels ({shown}) in {units}")
    parts.append(f"{info.sfreq:g} Hz, {n_times} samples ({n_times / info.sfreq:g} s) per window")
    return "Data: " + "; ".join(parts) + "."


def describe_plan(config: Any, models: list[Any], n_folds: int) -> str:
    """One paragraph: models x folds, permutations, refits, which models train a network."""
    n_models = len(models)
    trainable = [m.name for m in models if m.trainable]
    permuted = [m.name for m in models if config.n_permutations and (config.permute_trainable or not m.trainable)]
    parts = [f"{n_models} model{'s' * (n_models != 1)} x {n_folds} folds = {n_models * n_folds} fits"]
    if permuted:
        parts.append(
            f"{config.n_permutations} label permutations x {n_folds} folds for {len(permuted)} of them "
            f"= {config.n_permutations * n_folds * len(permuted)} more fits"
        )
    if config.refit:
        parts.append("then each model once more on all windows (refit)")
    if trainable:
        parts.append(f"networks trained: {', '.join(trainable)}")
    return "Plan: " + "; ".join(parts) + ". Finished fits already on record in the output folder are read back."
