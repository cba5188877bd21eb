"""The adaptation matrix of saved results as one Markdown table per data set (docs/guides/matrix.md shows it).

Usage::

    python benchmarks/matrix_table.py RESULTS_DIR [RESULTS_DIR ...] [--metric balanced_accuracy]

Each RESULTS_DIR is the output folder of a run of ``examples/adaptation_matrix_*.yaml`` (or any run with seeds
and sweeps). One row per model: the metric's mean +- sd over seeds x folds, the sd of the per-seed means, ROC AUC
and ECE where scored, then the metric at each sweep level (mean over seeds x folds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from neurofm import ExperimentResult


def matrix_table(result: ExperimentResult, metric: str) -> pd.DataFrame:
    """One row per model: the main scores, then the sweep levels."""
    summary = result.summary().set_index(["Model", "Metric"])
    models = list(dict.fromkeys(result.scores["Model"]))
    rows = []
    for model in models:
        main = summary.loc[(model, metric)]
        row = {
            "model": model,
            "seeds": int(main["n_seeds"]),
            metric: f"{main['mean']:.3f} ± {main['std']:.3f}",
            "seed sd": "" if pd.isna(main["seed_std"]) else f"{main['seed_std']:.3f}",
        }
        for other in ("roc_auc", "ece"):
            if (model, other) in summary.index:
                value = summary.loc[(model, other), "mean"]
                # NaN: a calibration metric of a model without probabilities (the ridge probe's decision values)
                row[other] = "n/a" if pd.isna(value) else f"{value:.3f}"
        rows.append(row)
    table = pd.DataFrame(rows).set_index("model")
    sweeps = result.get_sweep_scores(average=True)
    if not sweeps.empty:
        sweeps = sweeps[sweeps["Metric"] == metric]
        for (sweep, level), part in sweeps.groupby(["Sweep", "Level"], sort=False):
            name = f"{level} of train" if sweep == "train_fraction" else f"{level} ({int(part['x'].iloc[0])} ch)"
            table[name] = part.set_index("Model")["mean"].reindex(table.index).map("{:.3f}".format)
    return table.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+")
    parser.add_argument("--metric", default="balanced_accuracy")
    args = parser.parse_args()
    for folder in args.results:
        result = ExperimentResult.load(folder)
        n_folds = result.scores["Fold"].nunique()
        print(f"{Path(folder).name}: {result.meta.get('n_windows')} windows, {n_folds} folds\n")
        print(matrix_table(result, args.metric).to_markdown(index=False))
        print()


if __name__ == "__main__":
    main()
