"""The adaptation matrix of saved results as one Markdown table per data set (docs/guides/matrix.md shows it).

Usage::

    python benchmarks/matrix_table.py RESULTS_DIR [RESULTS_DIR ...] [--metric balanced_accuracy] [--merge]

Each RESULTS_DIR is the output folder of a run of ``examples/adaptation_matrix_*.yaml`` (or any run with seeds
and sweeps). One row per model: the metric's mean +- sd over seeds x folds, the sd of the per-seed means, ROC AUC
and ECE where scored, then the metric at each sweep level (mean over seeds x folds). ``--merge`` prints one table
of all the folders' rows (runs of the same data and folds that split the models between them, e.g. the trainable
rows run apart); a level a folder did not run reads "not run".
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
    parser.add_argument("--merge", action="store_true", help="one table of all the folders' models")
    args = parser.parse_args()
    tables = []
    for folder in args.results:
        result = ExperimentResult.load(folder)
        n_folds = result.scores["Fold"].nunique()
        print(f"{Path(folder).name}: {result.meta.get('n_windows')} windows, {n_folds} folds\n")
        tables.append(matrix_table(result, args.metric))
        if not args.merge:
            print(tables[-1].to_markdown(index=False))
            print()
    if args.merge:
        merged = pd.concat(tables, ignore_index=True)
        if merged["model"].duplicated().any():
            raise SystemExit(
                f"--merge: models in more than one folder: {sorted(set(merged['model'][merged['model'].duplicated()]))}"
            )
        sweep_columns = [c for c in merged.columns if c.endswith((" of train", " ch)"))]
        merged[sweep_columns] = merged[sweep_columns].fillna("not run")
        print(merged.fillna("").to_markdown(index=False))


if __name__ == "__main__":
    main()
