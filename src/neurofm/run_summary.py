"""What a run says before it computes: the data it was given and the work it is about to do."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["describe_data", "describe_plan"]


def _counts(values) -> str:
    labels, counts = np.unique(np.asarray(values).astype(str), return_counts=True)
    return ", ".join(f"{label}: {count}" for label, count in zip(labels, counts, strict=True))


def describe_data(inputs: Any, group_key: str | None, rejected: dict[str, int] | None = None) -> str:
    """One paragraph: windows (per class), groups, channels, rate, window length, units, windows rejected per file."""
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
    if rejected and any(rejected.values()):
        per_file = ", ".join(f"{name}: {count}" for name, count in rejected.items() if count)
        parts.append(f"{sum(rejected.values())} windows rejected by peak-to-peak ({per_file})")
    return "Data: " + "; ".join(parts) + "."


def _cached(name: str, found: int, checked: int, n_windows: int) -> str:
    if checked == n_windows:
        share = "all" if found == n_windows else "none" if found == 0 else f"{found} of {n_windows}"
        return f"{name} {share}"
    return f"{name} about {round(100 * found / checked)} % ({found} of {checked} windows checked)"


def describe_plan(
    config: Any,
    models: list[Any],
    n_folds: int,
    on_record: dict[str, int] | None = None,
    cached: dict[str, tuple[int, int]] | None = None,
    n_windows: int = 0,
) -> str:
    """One paragraph: models x folds, permutations, refits, networks trained, and what will be read back.

    Parameters
    ----------
    config : ExperimentConfig
    models : list
        The prepared models (``name``, ``trainable``, ``seed``), one per model
        and seed.
    n_folds : int
    on_record : dict | None
        Per model, how many of its fits (folds and permutations) the output
        folder already holds; ``None`` without an output folder.
    cached : dict | None
        Per embedding model whose folds will run, ``(found, checked)``
        windows of its embeddings in the cache.
    n_windows : int
        How many windows the run has (to say "all").
    """
    # One prepared model per model and seed: a stochastic model runs once per seed (config.n_seeds).
    names = list(dict.fromkeys(m.name for m in models))
    seeded = list(dict.fromkeys(m.name for m in models if getattr(m, "seed", 0) > 0))
    n_runs = len(models)
    trainable = list(dict.fromkeys(m.name for m in models if m.trainable))
    permuted = [m for m in models if config.n_permutations and (config.permute_trainable or not m.trainable)]
    said = f"{len(names)} model{'s' * (len(names) != 1)}"
    if seeded:
        said += f" ({', '.join(seeded)} x {config.n_seeds} seeds)"
    parts = [f"{said} x {n_folds} folds = {n_runs * n_folds} fits"]
    if permuted:
        n_permuted = len({m.name for m in permuted})
        parts.append(
            f"{config.n_permutations} label permutations x {n_folds} folds for {n_permuted} of them"
            f"{' (every seed)' if len(permuted) > n_permuted else ''} "
            f"= {config.n_permutations * n_folds * len(permuted)} more fits"
        )
    if config.refit:
        parts.append("then each model once more on all windows (refit)")
    if trainable:
        parts.append(f"networks trained: {', '.join(trainable)}")
    if on_record is None:
        parts.append("no output folder, so nothing is recorded or resumed")
    else:
        # One record per fold, and one per permutation (all its folds).
        n_recorded = sum(on_record.values())
        parts.append(
            f"{n_recorded} of {n_runs * n_folds + config.n_permutations * len(permuted)} fold and permutation "
            "records already in the output folder (read back, not computed again)"
            if n_recorded
            else "nothing on record yet in the output folder"
        )
    if cached:
        found_per_model = [_cached(name, found, checked, n_windows) for name, (found, checked) in cached.items()]
        parts.append("embeddings already in the cache: " + ", ".join(found_per_model))
    return "Plan: " + "; ".join(parts) + "."
