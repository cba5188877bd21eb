"""A self-contained HTML report of a saved result: figures first, tables after."""

from __future__ import annotations

import base64
import html
import io
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import confusion_matrix, roc_curve

from .group_scores import score_columns
from .metrics import CALIBRATION_BINS, SCORE_COLUMN_STARTS, reliability_bins
from .policy import load_yaml
from .results import ExperimentResult, first_seed
from .utils.files import atomic_write

__all__ = ["pretraining_figure", "write_report"]


def _png(fig) -> str:
    import matplotlib.pyplot as plt  # heavy: neurofm --help loads this module, not matplotlib

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _figure(fig_id: str, title: str, fig, caption: str = "") -> str:
    return (
        f'<figure id="{fig_id}"><h3>{html.escape(title)}</h3>'
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{_png(fig)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _scores_figure(result: ExperimentResult, chance: dict[str, float]) -> str:
    import matplotlib.pyplot as plt  # heavy: neurofm --help loads this module, not matplotlib

    scores = result.scores
    metrics = list(dict.fromkeys(scores["Metric"]))
    models = list(dict.fromkeys(scores["Model"]))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.2 * len(metrics), 0.5 * len(models) + 1.8), squeeze=False, sharey=True
    )
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for row, model in enumerate(models):
            values = scores[(scores["Model"] == model) & (scores["Metric"] == metric)]["Value"].to_numpy(dtype=float)
            ax.scatter(values, row + rng.uniform(-0.12, 0.12, len(values)), s=22, alpha=0.75, color="tab:blue")
            if np.isfinite(values).any():
                ax.plot([np.nanmean(values)] * 2, [row - 0.3, row + 0.3], color="black", lw=2)
        if np.isfinite(chance.get(metric, np.nan)):
            ax.axvline(chance[metric], color="grey", ls="--", lw=1)
        ax.set_yticks(range(len(models)), models)
        ax.set_xlabel(metric)
    axes[0][0].invert_yaxis()
    for ax in axes[0]:
        ax.grid(axis="x", alpha=0.3)
    caption = "Dots are folds (a model run with several seeds: one per seed and fold), bars their mean"
    if any(np.isfinite(chance.get(m, np.nan)) for m in metrics):
        caption += "; the dashed line is the chance level (table 'Chance level')"
    return _figure("fig-scores", "Scores per fold", fig, caption + ".")


def _regression_figure(result: ExperimentResult) -> str | None:
    import matplotlib.pyplot as plt  # heavy: neurofm --help loads this module, not matplotlib

    if result.config.get("task") != "regression":
        return None
    preds = first_seed(result.predictions)  # one prediction per window and fold, as the captions say
    models = list(dict.fromkeys(preds["Model"]))
    fig, axes = plt.subplots(2, len(models), figsize=(3.6 * len(models), 6.6), squeeze=False)
    for column, model in enumerate(models):
        part = preds[preds["Model"] == model]
        truth, predicted = part["y_true"].to_numpy(float), part["y_pred"].to_numpy(float)
        low, high = float(np.nanmin([truth.min(), predicted.min()])), float(np.nanmax([truth.max(), predicted.max()]))
        top, bottom = axes[0][column], axes[1][column]
        top.scatter(truth, predicted, s=12, alpha=0.6)
        top.plot([low, high], [low, high], color="grey", ls="--", lw=1)
        top.set(title=str(model), xlabel="true", ylabel="predicted")
        bottom.scatter(truth, predicted - truth, s=12, alpha=0.6)
        bottom.axhline(0, color="grey", ls="--", lw=1)
        bottom.set(xlabel="true", ylabel="residual (predicted - true)")
    return _figure(
        "fig-regression",
        "Predicted against true",
        fig,
        "Test predictions of all folds (a model's first seed); the dashed lines are perfect prediction (top) and zero residual (bottom).",
    )


def _confusion_figure(result: ExperimentResult) -> str | None:
    import matplotlib.pyplot as plt  # heavy: neurofm --help loads this module, not matplotlib

    preds = first_seed(result.predictions)  # one prediction per window and fold, as the captions say
    if not any(c.startswith(SCORE_COLUMN_STARTS) for c in preds.columns):
        return None
    models = list(dict.fromkeys(preds["Model"]))
    classes = np.unique(preds["y_true"].astype(str))
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.2), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        part = preds[preds["Model"] == model]
        cm = confusion_matrix(part["y_true"].astype(str), part["y_pred"].astype(str), labels=classes, normalize="true")
        ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v > 0.6 else "black", fontsize=8)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("true")
    return _figure(
        "fig-confusion",
        "Confusion matrices",
        fig,
        "Test predictions of all folds (a model's first seed), rows normalised.",
    )


def _roc_figure(result: ExperimentResult) -> str | None:
    import matplotlib.pyplot as plt  # heavy: neurofm --help loads this module, not matplotlib

    preds = first_seed(result.predictions)  # one prediction per window and fold, as the captions say
    if "y_true" not in preds:  # multilabel: a column per label, and no single-label curve
        return None
    n_classes = preds["y_true"].nunique()
    # Probabilities or decision values rank the windows alike: either draws a model's curve.
    columns = {model: score_columns(part, n_classes)[0] for model, part in preds.groupby("Model", sort=False)}
    if not any(columns.values()):
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for model, part in preds.groupby("Model", sort=False):
        proba_cols = columns[model]
        if not proba_cols:
            continue
        part = part.dropna(subset=proba_cols)
        y_true = part["y_true"].astype(str).to_numpy()
        classes = [c.split("_", 1)[1] for c in proba_cols]
        if len(proba_cols) == 2:
            fpr, tpr, _ = roc_curve(y_true == classes[1], part[proba_cols[1]])
        else:  # micro-average over one-vs-rest
            truth = np.concatenate([y_true == c for c in classes])
            fpr, tpr, _ = roc_curve(truth, np.concatenate([part[c].to_numpy() for c in proba_cols]))
        ax.plot(fpr, tpr, label=str(model))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8)
    return _figure(
        "fig-roc",
        "ROC curves",
        fig,
        "Test predictions pooled over folds, a model's first seed (micro-averaged one-vs-rest for >2 classes).",
    )


def _reliability_figure(result: ExperimentResult) -> str:
    """A reliability diagram per model whose test predictions hold class probabilities, and a line naming the rest.

    Each model's test predictions are pooled over the folds; the bins are those of the ``ece`` metric
    (:func:`neurofm.metrics.reliability_bins`).
    """
    import matplotlib.pyplot as plt  # heavy: neurofm --help loads this module, not matplotlib

    task = result.config.get("task", "classification")
    if task == "multilabel":
        return _note(
            "reliability",
            "No reliability diagram: the diagram reads one class per window, and a multi-label run has several "
            "binary labels (their calibration is not drawn yet).",
        )
    if task != "classification":
        return _note("reliability", "No reliability diagram: a regression run predicts no class probabilities.")
    preds = first_seed(result.predictions)  # one prediction per window and fold, as the captions say
    proba_cols = [c for c in preds.columns if c.startswith("proba_")]
    classes = np.array([c.removeprefix("proba_") for c in proba_cols])
    drawn, without = {}, []
    for model, part in preds.groupby("Model", sort=False):
        # A model without probabilities leaves its proba columns empty in a run where another model has them.
        part = part.dropna(subset=proba_cols)
        bins = reliability_bins(part["y_true"].astype(str), part[proba_cols].to_numpy(), classes) if len(part) else None
        if bins is None:
            without.append(str(model))
        else:
            drawn[model] = bins
    note = ""
    if without:
        note = _note(
            "reliability",
            f"No reliability diagram for {', '.join(without)}: its test predictions hold no class probabilities "
            "(the estimator has no predict_proba, or gives decision values).",
        )
    if not drawn:
        return note
    fig, axes = plt.subplots(
        2,
        len(drawn),
        figsize=(3.4 * len(drawn), 4.6),
        squeeze=False,
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]},
    )
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    for column, (model, bins) in enumerate(drawn.items()):
        top, bottom = axes[0][column], axes[1][column]
        weights = bins["n"].to_numpy() / bins["n"].sum()
        ece = float(np.sum(weights * np.abs(bins["accuracy"] - bins["confidence"])))
        top.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
        top.plot(bins["confidence"], bins["accuracy"], color="tab:blue", lw=1)
        top.scatter(bins["confidence"], bins["accuracy"], s=12 + 120 * weights, color="tab:blue", zorder=3)
        top.set(xlim=(0, 1), ylim=(0, 1), title=f"{model} (ECE {ece:.3f})", ylabel="accuracy")
        top.title.set_fontsize(9)
        top.grid(alpha=0.3)
        bottom.bar(bins["lower"], bins["n"], width=edges[1], align="edge", color="tab:blue", alpha=0.6)
        bottom.set(xlabel="confidence (largest probability)", ylabel="windows")
    fig.tight_layout()
    caption = (
        f"Test predictions pooled over folds (a model's first seed), in {CALIBRATION_BINS} equal-width bins of the confidence: each dot is a "
        "bin's mean confidence and accuracy (its size and the bars below: the bin's windows); the dashed diagonal "
        "is perfect calibration, dots below it overconfidence. ECE here is of the pooled predictions, so it can "
        "differ from the fold mean of the ece metric."
    )
    return _figure("fig-reliability", "Reliability diagrams", fig, caption) + note


#: How each sweep's levels read on the x axis of its figure.
_SWEEP_AXES = {
    "train_fraction": ("Learning curves", "fraction of each training partition"),
    "channels": ("Channel coverage", "channels kept"),
}


def _sweep_points(result: ExperimentResult, sweep: str, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What a sweep's figure draws: the per-seed means of one metric, as a curve and as named regions.

    Parameters
    ----------
    result : ExperimentResult
        A result with sweeps.
    sweep : str
        ``"train_fraction"`` or ``"channels"``.
    metric : str
        The metric drawn.

    Returns
    -------
    curve : DataFrame
        ``Model, x, Seed, Value``: the mean over folds (and over the random
        draws of one channel count) at each level, ending with the main run
        (every training window and channel) at the right.
    regions : DataFrame
        ``Model, Level, x, Seed, Value`` for the named channel regions: each
        is its own point, never averaged with a random draw or another region
        of the same size, since a chosen region answers a different question.
    """
    part = result.sweeps[(result.sweeps["Sweep"] == sweep) & (result.sweeps["Metric"] == metric)]
    named = set((result.config.get("sweeps") or {}).get("channel_regions") or {}) if sweep == "channels" else set()
    in_region = part["Level"].isin(named)
    full = {"train_fraction": 1.0, "channels": float(len((result.meta.get("signal") or {}).get("ch_names", [])))}
    main = result.scores[result.scores["Metric"] == metric]
    drawn = part[~in_region]
    if full.get(sweep):
        drawn = pd.concat([drawn, main.assign(Sweep=sweep, Level="all", x=full[sweep])], ignore_index=True)
    curve = drawn.groupby(["Model", "x", "Seed"], sort=False)["Value"].mean().reset_index()
    regions = part[in_region].groupby(["Model", "Level", "x", "Seed"], sort=False)["Value"].mean().reset_index()
    return curve, regions


def _sweep_figures(result: ExperimentResult) -> list[str]:
    """One figure per sweep: the first metric against the level, one line per model, a band over seeds.

    Named channel regions get a panel of their own beside the curve, one column
    per region, since two regions of one size would otherwise share a point.
    """
    import matplotlib.pyplot as plt  # heavy: neurofm --help loads this module, not matplotlib

    if result.sweeps.empty:
        return []
    metric = result.sweeps["Metric"].iloc[0]
    figures = []
    for sweep in dict.fromkeys(result.sweeps["Sweep"]):
        title, xlabel = _SWEEP_AXES.get(sweep, (str(sweep), "level"))
        curve, regions = _sweep_points(result, sweep, metric)
        named = list(dict.fromkeys(zip(regions["Level"], regions["x"], strict=True)))
        if named:
            fig, (ax, region_ax) = plt.subplots(
                1, 2, figsize=(6.0 + 0.6 * len(named), 3.8), sharey=True, width_ratios=[3.0, 0.6 + 0.5 * len(named)]
            )
        else:
            fig, ax = plt.subplots(figsize=(6.0, 3.8))
        models = list(dict.fromkeys([*curve["Model"], *regions["Model"]]))
        banded = False
        for rank, model in enumerate(models):
            color = f"C{rank % 10}"
            line_stats = curve[curve["Model"] == model].groupby("x")["Value"].agg(["mean", "std", "count"])
            line_stats = line_stats.sort_index()
            ax.plot(line_stats.index, line_stats["mean"], marker="o", color=color, label=str(model))
            if (line_stats["count"] > 1).any():
                spread = line_stats["std"].fillna(0.0)
                lower, upper = line_stats["mean"] - spread, line_stats["mean"] + spread
                ax.fill_between(line_stats.index, lower, upper, color=color, alpha=0.2)
                banded = True
            # Models side by side within a region's column, so their bars never hide each other.
            dodge = (rank - (len(models) - 1) / 2) * 0.6 / max(len(models), 1)
            for column, (level, _) in enumerate(named):
                values = regions[(regions["Model"] == model) & (regions["Level"] == level)]["Value"]
                if len(values):
                    spread = values.std() if len(values) > 1 else None
                    region_ax.errorbar(column + dodge, values.mean(), yerr=spread, marker="D", color=color)
        if named:
            region_ax.set_xticks(range(len(named)), [f"{level}\n({x:g} ch)" for level, x in named], fontsize=8)
            region_ax.set_xlim(-0.6, len(named) - 0.4)
            region_ax.set_xlabel("named regions")
            region_ax.grid(alpha=0.3, axis="y")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        legend_ax = region_ax if named else ax
        legend_ax.legend(
            *ax.get_legend_handles_labels(), fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5)
        )  # beside: the bands fill the plot
        caption = (
            f"{metric}, mean over folds and seeds at each level, on the run's test partitions; the rightmost "
            "point is the main run (every training window and channel)"
        )
        if banded:
            caption += "; the band is +- one standard deviation of the per-seed means"
        if named:
            caption += (
                "; the right panel holds the named channel regions, each on its own (never averaged with random "
                "draws of its size), with +- one sd of the per-seed means"
            )
        figures.append(_figure(f"fig-sweep-{sweep}", title, fig, caption + "."))
    return figures


def _note(topic: str, text: str) -> str:
    """One line in place of a figure that cannot be drawn for this run, saying why."""
    return f'<p class="figure-note" data-topic="{html.escape(topic)}">{html.escape(text)}</p>'


def _training_figure(result: ExperimentResult) -> str | None:
    import matplotlib.pyplot as plt  # heavy: neurofm --help loads this module, not matplotlib

    history = result.get_model_artifacts(artifact_type="training_history")
    if history.empty:
        return None
    # A user's NeuralTrainable estimator may log other fields: only histories with epochs and a training loss plot.
    plottable = [isinstance(v, dict) and {"epoch", "train_loss"} <= set(v) for v in history["ArtifactValue"]]
    history = history[plottable]
    if history.empty:
        return None
    models = list(dict.fromkeys(history["Model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        part = history[history["Model"] == model]
        for fold, rows in part.groupby("Fold"):
            records = pd.DataFrame(list(rows["ArtifactValue"]))
            ax.plot(
                records["epoch"],
                records["train_loss"],
                color="tab:blue",
                alpha=0.7,
                label="train" if fold == 0 else None,
            )
            if "val_loss" in records:
                ax.plot(
                    records["epoch"],
                    records["val_loss"],
                    color="tab:orange",
                    alpha=0.7,
                    label="validation" if fold == 0 else None,
                )
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
    return _figure("fig-training", "Training curves", fig, "One line per fold.")


def _adaptations(result: ExperimentResult) -> pd.DataFrame:
    """Adaptation steps of frozen backbones (their own artifacts) and trainable ones (in the model card)."""
    rows = []
    frozen = result.get_model_artifacts(artifact_type="input_adaptation")
    for model, key, value in zip(frozen["Model"], frozen["ArtifactKey"], frozen["ArtifactValue"], strict=True):
        if key != "target":
            rows.append((model, key, value))
    cards = result.get_model_artifacts(artifact_type="model_card")
    cards = cards[(cards["ArtifactKey"] == "input_adaptation") & (cards["Fold"] == 0)]
    for model, steps in zip(cards["Model"], cards["ArtifactValue"], strict=True):
        # neurofm's fine-tuner lists {"step", "detail"} records; another NeuralTrainable may describe it otherwise.
        if isinstance(steps, list) and all(isinstance(s, dict) and {"step", "detail"} <= set(s) for s in steps):
            rows += [(model, step["step"], step["detail"]) for step in steps]
        else:
            rows.append((model, "input_adaptation", str(steps)))
    return pd.DataFrame(rows, columns=["Model", "Step", "Detail"])


def _comparisons(result: ExperimentResult) -> pd.DataFrame:
    """Every pair of models on the first metric, fold by fold."""
    if result.scores.empty:
        return pd.DataFrame()
    metric = result.scores["Metric"].iloc[0]
    models = list(dict.fromkeys(result.scores["Model"]))
    rows = []
    for a, b in combinations(models, 2):
        cmp = result.compare(a, b, metric)
        rows.append(
            {
                "Model A": a,
                "Model B": b,
                "Metric": metric,
                "mean A - B": cmp["mean_difference"],
                "Wilcoxon p": cmp["wilcoxon_p"],
                "corrected t p": cmp["corrected_t_p"],
                "folds": cmp["n_folds"],
            }
        )
    return pd.DataFrame(rows)


def _title(result: ExperimentResult) -> str:
    models = list(dict.fromkeys(result.scores["Model"]))
    task = result.config.get("task", "classification")
    return f"{task.capitalize()} of {result.meta.get('n_windows', '?')} windows: {', '.join(map(str, models))}"


def _run_summary(result: ExperimentResult) -> dict:
    """What was run, on what: windows, classes, groups, signal, cross-validation, permutations, time."""
    cv = result.config.get("cv") or {}
    signal = result.meta.get("signal") or {}
    first = first_seed(result.predictions)
    first = first[first["Model"] == first["Model"].iloc[0]]
    summary = {"windows": result.meta.get("n_windows")}
    if result.config.get("task", "classification") == "classification":
        counts = first["y_true"].astype(str).value_counts().sort_index()
        summary["classes (windows)"] = {str(k): int(v) for k, v in counts.items()}
    group_key = cv.get("group_key")
    if group_key and group_key in result.metadata:
        summary[f"groups ({group_key})"] = int(result.metadata[group_key].nunique())
    summary["signal"] = {
        "channels": len(signal.get("ch_names", [])),
        "sampling rate (Hz)": signal.get("sfreq"),
        "samples per window": signal.get("n_times"),
    }
    summary["cross-validation"] = {k: v for k, v in cv.items() if v is not None}
    summary["seeds of each stochastic model"] = int(result.config.get("n_seeds") or 1)
    summary["label permutations"] = int(result.config.get("n_permutations") or 0)
    summary["wall time (s)"] = result.meta.get("wall_seconds")
    return summary


def _group_sections(result: ExperimentResult) -> list[str]:
    """Scores per fold, each named by the groups it held out, and per group, when the CV split by a group key."""
    group_key = (result.config.get("cv") or {}).get("group_key")
    scores = result.get_detailed_scores()
    if not group_key or "HeldOut" not in scores:
        return []
    per_fold = scores.pivot_table(index=["Model", "Fold", "HeldOut"], columns="Metric", values="Value", sort=False)
    per_group = result.get_group_scores(by=group_key)
    per_group = per_group.pivot_table(
        index=["Model", group_key, "n_windows"], columns="Metric", values="Value", sort=False
    )
    return [
        f"<h2>Scores per fold (held-out {html.escape(str(group_key))})</h2>"
        + _table(per_fold.round(4).reset_index(), "fold-scores"),
        f"<h2>Scores per {html.escape(str(group_key))} (test predictions pooled over folds)</h2>"
        + _table(per_group.round(4).reset_index(), "group-scores"),
    ]


def _table(frame: pd.DataFrame, table_id: str) -> str:
    return frame.to_html(index=False, border=0, classes="table", table_id=table_id, escape=True)


def _page(subtitle: str, sections: list[str], title: str = "neurofm report") -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<script>window.addEventListener("load", () => document.querySelectorAll("img").forEach(
  img => img.dataset.rendered = String(img.complete && img.naturalWidth > 0)));</script>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}}
figure{{margin:1.5em 0}} img{{max-width:100%}} .table{{border-collapse:collapse;font-size:13px}}
.table td,.table th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}} pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style>
</head><body><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>{"".join(sections)}</body></html>"""


# Columns of a pretraining history that are not losses.
_USAGE_PREFIXES = ("perplexity", "codes_used", "dead_codes", "restarted_codes")
_NOT_LOSSES = ("step", "lr", "seconds", "grad_norm", "code_accuracy")


def pretraining_figure(history: pd.DataFrame):
    """Loss parts, codebook usage or code accuracy, and the learning rate against the step (a matplotlib figure)."""
    import matplotlib.pyplot as plt  # heavy: neurofm --help loads this module, not matplotlib

    losses = [c for c in history.columns if c not in _NOT_LOSSES and not c.startswith(_USAGE_PREFIXES)]
    usage = [c for c in history.columns if c.startswith(_USAGE_PREFIXES)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for column in losses:
        axes[0].plot(history["step"], history[column], label=column, lw=2 if column == "loss" else 1)
    axes[0].set_title("losses")
    if usage:
        for column in usage:
            axes[1].plot(history["step"], history[column], label=column)
        axes[1].set_title("codebook usage")
    elif "code_accuracy" in history:
        axes[1].plot(history["step"], history["code_accuracy"], label="code_accuracy")
        axes[1].set_title("accuracy of the predicted codes")
    axes[2].plot(history["step"], history["lr"], color="black")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _pretraining_report(run_dir: Path) -> list[str]:
    history_path = run_dir / "history.csv"
    if not history_path.is_file():
        raise FileNotFoundError(f"{run_dir} holds a pretraining config but no history.csv yet: nothing ran there.")
    history = pd.read_csv(history_path)
    last = history.iloc[-1].to_frame("value").reset_index(names="quantity")
    sections = [
        "<h2>Figures</h2>"
        + _figure(
            "fig-pretraining",
            "Pretraining curves",
            pretraining_figure(history),
            "Every logged step; losses are means over processes.",
        ),
        "<h2>Last step</h2>" + _table(last, "last-step"),
    ]
    for name in ("tokenizer.json", "pretrain.json"):
        if (run_dir / name).is_file():
            summary = load_yaml((run_dir / name).read_text())
            sections.append(
                f"<h2>Result ({name})</h2><pre>" + html.escape(yaml.safe_dump(summary, sort_keys=False)) + "</pre>"
            )
    sections.append("<h2>Config</h2><pre>" + html.escape((run_dir / "pretrain.yaml").read_text()) + "</pre>")
    return sections


def write_report(results_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write ``report.html`` for a saved result or a pretraining run directory.

    Parameters
    ----------
    results_dir : str | Path
        A directory saved by :meth:`ExperimentResult.save`, or the
        ``output_dir`` of :func:`neurofm.pretrain.pretrain` (loss curves,
        codebook usage, learning rate, config).
    output : str | Path | None
        Where to write (default: ``report.html`` inside the directory).

    Returns
    -------
    path : Path
        The report; every figure is embedded, so the file stands alone.
    """
    import matplotlib  # heavy: neurofm --help loads this module, not matplotlib

    matplotlib.use("Agg")
    # Model, channel and column names are the user's (or a shared config's) strings: never TeX or mathtext,
    # so '$' or '\\' in a name is drawn as written instead of failing the report.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _write_report(Path(results_dir), output)


def _write_report(results_dir: Path, output: str | Path | None) -> Path:
    if (results_dir / "pretrain.yaml").is_file():
        path = Path(output) if output else results_dir / "report.html"
        page = _page(str(results_dir), _pretraining_report(results_dir))
        return atomic_write(path, lambda tmp: tmp.write_text(page))
    result = ExperimentResult.load(results_dir)
    stats = result.get_statistics()
    chance = stats.groupby("Metric")["chance_mean"].mean().to_dict() if not stats.empty else {}
    drawn = (_scores_figure(result, chance), _confusion_figure(result), _roc_figure(result), _regression_figure(result))
    figures = [f for f in (*drawn, _reliability_figure(result), _training_figure(result), *_sweep_figures(result)) if f]
    summary = result.summary()
    adaptations = _adaptations(result)
    run = "<h2>Run</h2><pre>" + html.escape(yaml.safe_dump(_run_summary(result), sort_keys=False)) + "</pre>"
    warnings = result.score_warnings()
    if warnings:
        run += '<ul class="warnings">' + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>"
    n_folds = int(summary["n_folds"].max()) if len(summary) else 0
    n_seeds = int(summary["n_seeds"].max()) if len(summary) else 1
    sections = [
        run,
        f"<h2>Summary</h2><p>Each score is its mean ± sd (standard deviation) over the {n_folds} cross-validation "
        "folds, each fold scored on windows its model never saw"
        + (
            f"; a model with n_seeds {n_seeds} ran once per seed on the same folds: its mean and sd are over seeds x "
            "folds, and seed_std is the sd of its per-seed means"
            if n_seeds > 1
            else ""
        )
        + ".</p>"
        + _table(summary.round(4), "summary"),
        "<h2>Figures</h2>" + "".join(figures),
    ]
    sections += _group_sections(result)
    if not stats.empty:
        methods = "".join(f"<li>{html.escape(str(m))}</li>" for m in stats["method"].unique())
        sections.append(f"<h2>Chance level</h2><ul>{methods}</ul>" + _table(stats.round(4), "statistics"))
    comparisons = _comparisons(result)
    if not comparisons.empty:
        sections.append("<h2>Paired comparisons (same folds)</h2>" + _table(comparisons.round(4), "comparisons"))
    if not adaptations.empty:
        sections.append("<h2>Input adaptations</h2>" + _table(adaptations, "adaptations"))
    data = result.meta.get("data")
    if data:
        sections.append("<h2>Data</h2><pre>" + html.escape(yaml.safe_dump(data, sort_keys=False)) + "</pre>")
    sections.append("<h2>Config</h2><pre>" + html.escape(yaml.safe_dump(result.config, sort_keys=False)) + "</pre>")
    versions = result.meta.get("versions", {})
    sections.append("<h2>Software</h2><pre>" + html.escape(yaml.safe_dump(versions, sort_keys=False)) + "</pre>")
    page = _page(str(results_dir), sections, _title(result))
    path = Path(output) if output else results_dir / "report.html"
    return atomic_write(path, lambda tmp: tmp.write_text(page))
