"""``neurofm run CONFIG.yaml``: data source, preprocessing, models and CV from one file."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .configs import ExperimentConfig, RunConfig
from .exceptions import ConfigError
from .experiment import Experiment
from .loaders import load_data
from .output_versions import keep_previous_result
from .policy import allow_imports as allow
from .preprocess import describe_preprocessing
from .results import ExperimentResult
from .utils.logging import logger

__all__ = ["run_config"]


def run_config(
    path: str | Path, output_dir: str | Path | None = None, *, allow_imports: Sequence[str] = (), report: bool = True
) -> tuple[ExperimentResult, Path]:
    """Load the data a :class:`~neurofm.configs.RunConfig` file names, run it, save the results.

    Parameters
    ----------
    path : str | Path
        The YAML file. Relative data paths are relative to its folder.
    output_dir : str | Path | None
        Overrides the file's ``output_dir`` (itself relative to the file's folder).
    allow_imports : sequence of str
        Your own top-level packages whose estimators the file may name by
        import path (see :func:`neurofm.allow_imports`), during this run.
    report : bool
        Write ``report.html`` beside the results (``neurofm run --no-report``: not).

    Returns
    -------
    result : ExperimentResult
    directory : Path
        Where the results were written.
    """
    with allow(allow_imports):
        result, directory = _run(Path(path), output_dir)
    if report:
        # import cycle: the report module reads saved results
        from .report import write_report

        write_report(directory)
    return result, directory


def _run(path: Path, output_dir: str | Path | None) -> tuple[ExperimentResult, Path]:
    config = RunConfig.from_yaml(path)
    base = path.resolve().parent
    epochs = load_data(config.data, base_dir=base)
    _check_group_key(config, epochs.metadata, path)
    out = Path(output_dir) if output_dir is not None else Path(config.output_dir).expanduser()
    if not out.is_absolute() and output_dir is None:
        out = base / out
    # Before any compute: a result of another run config there (other data, say) is kept as a version.
    keep_previous_result(out, config.model_dump(mode="json"))
    experiment_fields = {name: getattr(config, name) for name in ExperimentConfig.model_fields}
    # Finished folds are recorded in ``out`` as they finish: running the same file again resumes.
    try:
        result = Experiment(ExperimentConfig(**experiment_fields)).run(
            epochs, epochs.metadata[config.data.label].to_numpy(), output_dir=out
        )
    except KeyboardInterrupt:
        logger.warning("%s", interrupted_message(out, path))
        raise
    result.config = config.model_dump(mode="json")
    result.meta["data"] = {
        "source": config.data.source,
        "n_windows": len(epochs),
        "preprocessing": describe_preprocessing(config.data.preprocessing),
        "classes": epochs.metadata[config.data.label].value_counts().to_dict(),
        "rejected": result.meta.get("rejected", {}),  # counted by the experiment from the loader's windows
    }
    return result, result.save(out)


def interrupted_message(out: Path, path: Path) -> str:
    """What an interrupted ``neurofm run`` kept, and how to go on."""
    records = out / "progress"
    kept = sum(1 for p in records.rglob("*") if p.is_file()) if records.is_dir() and not records.is_symlink() else 0
    return (
        f"Interrupted. {kept} finished fit record(s) are kept in {records}; run `neurofm run {path}` again (same "
        "config and output folder) to resume: what is on record is read back, the rest is computed."
    )


def _check_group_key(config: RunConfig, metadata: Any, path: Path) -> None:
    """A group_key the loader's metadata lacks, said in the config's terms (Python users get sample_metadata's)."""
    key = config.cv.group_key
    if key is None or key in metadata.columns:
        return
    columns = [str(column) for column in metadata.columns]
    close = difflib.get_close_matches(key, columns, n=1)
    raise ConfigError(
        f"cv.group_key {key!r} in {path} is not a column of the windows' metadata: the {config.data.source!r} "
        f"loader gave the columns {columns}. Set cv.group_key to one of them"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + ", or remove it with a strategy that needs no groups."
    )
