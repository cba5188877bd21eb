"""The ``neurofm`` command: a thin layer over the public API."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import typer

from .cache_admin import cache_info, format_bytes, prune_cache
from .demo import DEMO_BACKBONES, run_demo
from .exceptions import ConfigError, DataValidationError, NeuroFMError
from .models.registry import get_model_spec, list_foundation_models, list_model_keys, model_conventions
from .report import write_report
from .run import run_config
from .starters import STARTER_KINDS, starter_yaml
from .utils.files import atomic_write

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Decode EEG/MEG with foundation models.")


@app.command()
def models(
    details: str = typer.Option(
        None,
        "--details",
        metavar="KEY",
        help="Show one model's input conventions: what its weights saw, what neurofm feeds it, and the source of each.",
    ),
) -> None:
    """List the registered foundation models."""
    if details is None:
        with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 40):
            typer.echo(list_foundation_models().to_string(index=False))
        return
    spec = get_model_spec(details)
    typer.echo(f"{spec.display_name} ({spec.key}): braindecode {spec.braindecode_class}, weights {spec.hub_repo}\n")
    for row in model_conventions(spec.key).itertuples(index=False):
        typer.echo(f"{row.convention}\n  pretraining: {row.pretraining}\n  neurofm:     {row.neurofm}")
        if row.alternative:
            typer.echo(f"  instead:     {row.alternative}")
        typer.echo(f"  source:      {row.source}")
    if spec.notes:
        typer.echo(f"\nnotes: {spec.notes}")


@app.command()
def demo(
    out: Path = typer.Option(None, help="Directory to save the results in."),
    cache_dir: str = typer.Option("~/.cache/neurofm", help="Embedding cache directory."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    pretrained: bool = typer.Option(
        False, "--pretrained", help="The backbones' published weights, downloaded once (needs internet the first time)."
    ),
) -> None:
    """Run the built-in demo on simulated multi-subject EEG (offline, a few minutes on a CPU)."""
    typer.echo(
        "neurofm demo: simulated motor imagery, 6 subjects x 40 windows (19 channels, 160 Hz, 4 s, volts); "
        "3-fold cross-subject CV.\n"
        + (
            f"Backbones {', '.join(DEMO_BACKBONES)} with their PUBLISHED WEIGHTS (downloaded once into the Hugging "
            "Face cache, offline afterwards).\n"
            if pretrained
            else f"Backbones {', '.join(DEMO_BACKBONES)} are RANDOMLY INITIALISED (no pretrained weights are "
            "downloaded; --pretrained uses the published ones), so their scores show the workflow, not what "
            "pretrained weights achieve.\n"
        )
    )
    result = run_demo(out_dir=out, cache_dir=cache_dir, verbose=not quiet, pretrained=pretrained)
    typer.echo(result.summary_table().to_string())
    cache = result.get_model_artifacts(artifact_type="embedding_cache")
    for model, rows in cache.groupby("Model", sort=False):
        stats = dict(zip(rows["ArtifactKey"], rows["ArtifactValue"], strict=True))
        typer.echo(f"{model}: embedding cache hits={stats.get('hits')} misses={stats.get('misses')}")
    if out is not None:
        typer.echo(f"Results saved to {out}")


@app.command()
def run(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="A YAML run config (see examples/)."),
    out: Path = typer.Option(None, help="Results directory (overrides output_dir in the config)."),
    allow_import: list[str] = typer.Option(
        [],
        "--allow-import",
        help="A package of yours whose estimators the config may name by import path "
        "(repeat for several); a config alone may import only from scikit-learn, pyriemann, MNE and neurofm.",
    ),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html beside the results."),
) -> None:
    """Load the data, run every model on the same folds, save and summarise the results (and the report)."""
    result, directory = run_config(config, out, allow_imports=allow_import, report=report)
    typer.echo(result.summary_table().to_string())
    typer.echo(f"Results saved to {directory}" + (f" (report: {directory / 'report.html'})" if report else ""))


@app.command()
def pretrain(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="A YAML pretraining config."),
) -> None:
    """Pretrain a backbone (stage 'tokenizer' or 'masked') on unlabeled recordings; resumes a killed run.

    Many processes: torchrun --nproc_per_node=2 -m neurofm pretrain CONFIG.yaml
    """
    from .pretrain import pretrain as run_pretraining  # heavy: neurofm.pretrain loads torch, neurofm --help does not

    result = run_pretraining(config)
    if int(os.environ.get("RANK", "0")) == 0:
        resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
        typer.echo(
            f"{result.stage}: {result.steps} steps in {result.wall_seconds:.1f} s{resumed}; final loss "
            f"{result.final_loss:.4f}; peak memory {result.peak_memory_mb:.0f} MB. Written to {result.output_dir}"
        )


@app.command()
def download(
    model_keys: list[str] = typer.Argument(None, metavar="[MODEL]...", help="Registry keys (see `neurofm models`)."),
    all_models: bool = typer.Option(False, "--all", help="Every model with a published checkpoint."),
    revision: str = typer.Option(
        None, "--revision", help="A commit, branch or tag (default: the commit each model's spec pins, else main)."
    ),
) -> None:
    """Download published checkpoints into the Hugging Face cache, so that runs without internet find them.

    Run it where there is internet (a login node) with the cache the compute nodes will read (HF_HOME or
    HF_HUB_CACHE); set HF_HUB_OFFLINE=1 there.
    """
    from .models.hub import hub_cache_dir, hub_offline, snapshot_size  # start-up: huggingface_hub, only here
    from .models.weights import download_published  # as above

    keys = _download_keys(model_keys or [], all_models)
    if hub_offline():
        raise typer.BadParameter(
            "downloads need the network, but HF_HUB_OFFLINE is set here; unset it for this command"
        )
    typer.echo(f"Hub cache: {hub_cache_dir()}")
    for key in keys:
        snapshot = download_published(key, revision)
        size = snapshot_size(snapshot.path) / 2**20
        typer.echo(f"{key}: {snapshot.repo}@{snapshot.commit[:12]} -> {snapshot.path} ({size:.1f} MiB)")


def _download_keys(model_keys: list[str], all_models: bool) -> list[str]:
    if all_models and model_keys:
        raise typer.BadParameter("give model names or --all, not both")
    if all_models:
        return [key for key in list_model_keys() if get_model_spec(key).hub_repo is not None]
    if not model_keys:
        raise typer.BadParameter("name the models to download (e.g. `neurofm download labram cbramod`), or pass --all")
    for key in model_keys:
        get_model_spec(key)  # every name checked before the first download
    return model_keys


cache_app = typer.Typer(no_args_is_help=True, help="Show what the cache folder holds, and free its space.")
app.add_typer(cache_app, name="cache")
_CACHE_DIR = typer.Option("~/.cache/neurofm", "--cache-dir", help="The cache folder (the runs' cache_dir).")
_SHARED = typer.Option(False, "--shared", help="The cache is declared shared (shared_folders: true).")


@cache_app.command("info")
def cache_info_command(cache_dir: str = _CACHE_DIR, shared: bool = _SHARED) -> None:
    """What the cache holds: embeddings per model and setting, checkpoints, weight digests; sizes and last use."""
    info = cache_info(cache_dir, shared_folders=shared)
    if info.empty:
        typer.echo(f"{Path(cache_dir).expanduser()} holds nothing neurofm wrote.")
        return
    shown = info.drop(columns=["Bytes", "Path"]).astype(object)
    shown = shown.where(shown.notna(), "")
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 60):
        typer.echo(shown.to_string(index=False))
    for kind, size in info.groupby("Kind", sort=False)["Bytes"].sum().items():
        typer.echo(f"{kind}: {format_bytes(size)}")
    typer.echo(f"Total: {format_bytes(info['Bytes'].sum())} in {Path(cache_dir).expanduser()}")


@cache_app.command("prune")
def cache_prune_command(
    cache_dir: str = _CACHE_DIR,
    older_than: float = typer.Option(None, "--older-than", metavar="DAYS", help="Entries unused for DAYS days."),
    model: str = typer.Option(None, "--model", metavar="KEY", help="The embeddings and checkpoints of model KEY."),
    all_entries: bool = typer.Option(False, "--all", help="Every entry neurofm wrote (other selectors narrow it)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
    shared: bool = _SHARED,
) -> None:
    """Delete cache entries neurofm wrote (its files only: never links, other users' or unknown files)."""
    if older_than is None and model is None and not all_entries:
        raise typer.BadParameter(
            "say what to prune: --older-than DAYS, --model KEY, or --all (add --dry-run to list it first)"
        )
    removed = prune_cache(
        cache_dir, older_than=older_than, model=model, all=all_entries, dry_run=dry_run, shared_folders=shared
    )
    verb = "Would remove" if dry_run else "Removed"
    for row in removed.itertuples(index=False):
        what = " ".join(str(v) for v in (row.Kind, row.Model) if v is not None and v == v)
        typer.echo(f"{verb} {row.Path} ({what}, {row.Size})")
    for note in removed.attrs["left_alone"]:
        typer.echo(f"Left alone: {note}")
    freed = format_bytes(removed["Bytes"].sum())
    typer.echo(f"{'Would free' if dry_run else 'Freed'} {freed} ({len(removed)} entries).")


@app.command()
def report(results_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="A results directory.")) -> None:
    """Write a self-contained report.html with figures into RESULTS_DIR."""
    try:
        written = write_report(results_dir)
    except FileNotFoundError as exc:  # a folder that holds no saved result: the user's input, not a bug
        raise DataValidationError(f"{exc} Pass the folder a run saved its results in.") from exc
    typer.echo(f"Report written to {written}")


@app.command()
def init(
    kind: str = typer.Argument(..., metavar="KIND", help=f"One of: {', '.join(STARTER_KINDS)}."),
    out: Path = typer.Option(None, "--out", help="The file to write (default: KIND.yaml in this folder)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the file if it exists."),
) -> None:
    """Write a commented starter config of KIND (decoding, finetune, bids, moabb, meg, pretrain) to edit and run."""
    text = _starter(kind)
    target = out if out is not None else Path(f"{kind}.yaml")
    if target.exists() and not force:
        raise typer.BadParameter(f"{target} exists; pass --force to overwrite it, or --out to write another file")
    if target.is_dir():
        raise typer.BadParameter(f"{target} is a folder; pass --out a file name (e.g. {target / (kind + '.yaml')})")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: tmp.write_text(text))
    run = "neurofm pretrain" if kind == "pretrain" else "neurofm run"
    typer.echo(f"Wrote {target}: replace its placeholder paths, then {run} {target}")


@app.command("config")
def config_command(
    show: str = typer.Option(None, "--show", metavar="KIND", help="Print the starter config of KIND."),
) -> None:
    """Print a commented starter config (what `neurofm init KIND` writes); without --show, list the kinds."""
    if show is None:
        typer.echo("Starter configs (neurofm config --show KIND, neurofm init KIND): " + ", ".join(STARTER_KINDS))
        return
    typer.echo(_starter(show), nl=False)


def _starter(kind: str) -> str:
    try:
        return starter_yaml(kind)
    except ConfigError as exc:  # an unknown kind: the user's input, named with the kinds there are
        raise typer.BadParameter(str(exc), param_hint="KIND") from None


def main() -> None:
    """Entry point of the ``neurofm`` console script.

    neurofm's own errors (bad config, bad data, a full disk ...) already name
    the problem and the fix: they are printed as one message with exit status
    2, without a traceback. Anything else is a bug and keeps its traceback.
    """
    try:
        app()
    except NeuroFMError as exc:
        typer.echo(f"Error ({type(exc).__name__}): {exc}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":  # pragma: no cover
    main()
