"""What an experiment returns, and how it is saved in open formats."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from .configs.experiment import CLASSIFICATION_METRICS, MULTILABEL_DEFAULT_METRICS, REGRESSION_METRICS
from .export import copy_refit, export_model, load_fine_tuned, load_probe, push_to_hub, save_probe, write_refit_record
from .group_scores import aggregate_scores, group_scores, held_out_groups, metadata_table, with_metadata
from .output_versions import VERSIONS_FOLDER, keep_previous_result
from .policy import load_yaml
from .progress import PROGRESS_NAMES
from .result_statistics import Comparison, chance_table, score_warnings
from .utils.files import atomic_write, claim_folder, jsonable
from .utils.versions import package_versions

__all__ = ["ExperimentResult", "first_seed"]

_TABLES = ("scores", "predictions", "splits", "artifacts")
#: The windows' metadata, saved beside the tables (results saved before it existed have none).
_METADATA_FILE = "metadata.parquet"
#: The scores of the sweeps (``ExperimentConfig.sweeps``), saved when the run had any.
_SWEEPS_FILE = "sweeps.parquet"
SWEEP_COLUMNS = ["Sweep", "Level", "x", "Model", "Fold", "Seed", "Metric", "Value"]
#: Where the refit models of a run are saved in its output folder (one ``model-<hash>`` folder each).
MODELS_FOLDER = "models"
#: What neurofm writes directly in an output folder: the saved result, its report, the run's progress records.
OUTPUT_NAMES = frozenset(
    {
        *(f"{name}.parquet" for name in _TABLES),
        _METADATA_FILE,
        _SWEEPS_FILE,
        "config.yaml",
        "meta.json",
        "report.html",
        MODELS_FOLDER,
        "checkpoints",  # fine-tuning checkpoints: checkpoints/<model name>/fold-<k>/
        VERSIONS_FOLDER,
        *PROGRESS_NAMES,
    }
)
SCORE_COLUMNS = ["Model", "Fold", "Seed", "Metric", "Value"]
ARTIFACT_COLUMNS = ["Model", "Fold", "ArtifactType", "ArtifactKey", "ArtifactValue"]


class ExperimentResult:
    """Per-fold scores, predictions, splits and artifacts of an experiment.

    Parameters
    ----------
    scores : DataFrame
        Columns ``Model, Fold, Seed, Metric, Value``. ``Seed`` is ``s`` for
        the run of a stochastic model with ``random_state + s``
        (``ExperimentConfig.n_seeds``), 0 for every model of a one-seed run
        (and in a result saved before seeds existed).
    predictions : DataFrame
        Columns ``Model, Fold, Seed, SampleIndex, y_true, y_pred`` and, for
        classifiers, one ``proba_<class>`` column per class (a model without
        ``predict_proba`` fills ``decision_<class>`` columns with its decision
        values instead).
    splits : DataFrame
        Columns ``Model, Fold, SampleIndex, Set`` (``train`` or ``test``).
    artifacts : DataFrame
        Columns ``Model, Fold, ArtifactType, ArtifactKey, ArtifactValue``.
        ``Fold == -1`` marks a label-free step run once on all windows
        (embedding extraction, input adaptation).
    config : dict
        The resolved experiment config.
    meta : dict
        Software versions, timings, signal info; ``meta["refit"]`` describes
        each refit model (its kind, the folder it is saved in, or why it is
        kept in memory only).
    refit_models : dict | None
        Models fitted once more on all windows after the folds
        (``ExperimentConfig(refit=True)``), by name.
    refit_folders : dict | None
        Where each saved refit model's files are, by name.
    metadata : DataFrame | None
        The windows' metadata (``sample_metadata``), one row per window in
        ``SampleIndex`` order; its columns are joined to predictions and
        splits, group folds and group scores (:meth:`get_group_scores`).
    sweeps : DataFrame | None
        The scores of the run's sweeps (:meth:`get_sweep_scores`).
    """

    def __init__(
        self,
        scores,
        predictions,
        splits,
        artifacts,
        config: dict,
        meta: dict | None = None,
        *,
        refit_models: dict | None = None,
        refit_folders: dict | None = None,
        metadata: pd.DataFrame | None = None,
        sweeps: pd.DataFrame | None = None,
    ):
        self.scores = _with_seed_column(scores)
        self.predictions = _with_seed_column(predictions)
        self.splits = splits
        self.artifacts = artifacts
        self.config = config
        self.meta = meta or {}
        self._refit_models = dict(refit_models or {})
        self._refit_folders = {name: Path(folder) for name, folder in (refit_folders or {}).items()}
        self.metadata = metadata_table(metadata)
        self.sweeps = pd.DataFrame(columns=SWEEP_COLUMNS) if sweeps is None else sweeps

    def __repr__(self) -> str:
        models = list(dict.fromkeys(self.scores["Model"])) if len(self.scores) else []
        n_folds = self.scores["Fold"].nunique() if len(self.scores) else 0
        return f"<ExperimentResult | {len(models)} model(s) {models}, {n_folds} fold(s)>"

    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation over seeds x folds, one row per model and metric.

        Columns ``Model, Metric, mean, std, n_folds, n_seeds, seed_std``:
        ``mean`` and ``std`` over every (seed, fold) score, ``n_folds`` the
        folds scored (a failed training's NaN is not), ``n_seeds`` the seeds
        the model ran (1 for a deterministic one), ``seed_std`` the standard
        deviation of the per-seed means over folds: how much the seed alone
        moves the score (NaN with one seed).
        """
        by = ["Model", "Metric"]
        grouped = self.scores.groupby(by, sort=False)
        table = grouped["Value"].agg(mean="mean", std="std").reset_index()
        folds = self.scores.dropna(subset=["Value"]).groupby(by, sort=False)["Fold"].nunique()
        seeds = grouped["Seed"].nunique()
        per_seed = self.scores.groupby([*by, "Seed"], sort=False)["Value"].mean()
        spread = per_seed.groupby(level=by, sort=False).std()
        keys = pd.MultiIndex.from_frame(table[by])
        table["n_folds"] = folds.reindex(keys, fill_value=0).to_numpy().astype(int)
        table["n_seeds"] = seeds.reindex(keys).to_numpy().astype(int)
        table["seed_std"] = spread.reindex(keys).to_numpy().astype(float)
        return table

    def summary_table(self) -> pd.DataFrame:
        """Readable wide table: one row per model, ``mean ± std`` per metric."""
        summ = self.summary()
        summ["value"] = [
            f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}"
            for m, s in zip(summ["mean"], summ["std"], strict=True)
        ]
        wide = summ.pivot(index="Model", columns="Metric", values="value")
        order = list(dict.fromkeys(summ["Model"]))
        metrics = list(dict.fromkeys(summ["Metric"]))
        return wide.loc[order, metrics]

    def get_detailed_scores(self) -> pd.DataFrame:
        """Every score: columns ``Model, Fold, Seed, Metric, Value``, and ``HeldOut`` (the groups a fold tested on,
        e.g. ``"S003"``) when the CV split by a ``group_key``."""
        held_out = held_out_groups(self.splits, self.metadata, self._group_key())
        if held_out.empty:
            return self.scores.copy()
        return self.scores.merge(held_out, on=["Model", "Fold"], how="left")

    def get_sweep_scores(self, sweep: str | None = None, average: bool = False) -> pd.DataFrame:
        """The scores of the learning-curve and channel-coverage sweeps (``ExperimentConfig.sweeps``).

        Parameters
        ----------
        sweep : {"train_fraction", "channels"} | None
            Keep one sweep (``None``: both).
        average : bool
            ``False``: every score, ``Sweep, Level, x, Model, Fold, Seed,
            Metric, Value`` (``Level`` names the level: the fraction, or the
            channel subset's label; ``x`` is the fraction or the number of
            channels kept). ``True``: one row per sweep, level, model and
            metric, ``mean, std`` over seeds x folds, ``seed_std`` (the sd of
            the per-seed means, NaN with one seed), ``n_seeds``.

        Returns
        -------
        DataFrame
        """
        table = self.sweeps if sweep is None else self.sweeps[self.sweeps["Sweep"] == sweep]
        if not average:
            return table.reset_index(drop=True).copy()
        keys = ["Sweep", "Level", "x", "Model", "Metric"]
        averaged = table.groupby(keys, sort=False)["Value"].agg(mean="mean", std="std").reset_index()
        per_seed = table.groupby([*keys, "Seed"], sort=False)["Value"].mean().reset_index()
        spread = per_seed.groupby(keys, sort=False)["Value"].agg(seed_std="std", n_seeds="count").reset_index()
        return averaged.merge(spread, on=keys, how="left")

    def get_predictions(self) -> pd.DataFrame:
        """Test-set predictions of every fold, with each window's metadata columns (``Subject``, ``Run`` ...)."""
        return with_metadata(self.predictions, self.metadata)

    def get_splits(self) -> pd.DataFrame:
        """Which window was in train or test, per model and fold, with each window's metadata columns."""
        return with_metadata(self.splits, self.metadata)

    def get_metadata(self) -> pd.DataFrame:
        """The windows' metadata: ``SampleIndex`` and the columns of ``sample_metadata``."""
        return self.metadata.copy()

    def get_group_scores(self, by: str | list[str] = "Subject", metrics: list[str] | None = None) -> pd.DataFrame:
        """Scores per group of windows: per subject, session, or recording (``by=["Subject", "Session", "Run"]``).

        Each model's test predictions are pooled over the folds (every window
        is tested once) and scored within each group, with the run's metrics
        unless ``metrics`` names others; a model run with several seeds
        (``n_seeds``) is scored so per seed, and ``Value`` is the mean over
        its seeds.

        Parameters
        ----------
        by : str | list of str
            Metadata column(s) defining the groups.
        metrics : list of str | None
            Metric names (default: the experiment's).

        Returns
        -------
        DataFrame
            ``Model, <by...>, Metric, Value, n_windows``.
        """
        chosen = list(metrics) if metrics is not None else self._metrics()
        classification = self._classification()
        # Per seed (each seed tests every window once), then the mean over a model's seeds.
        tables = [
            group_scores(part, self.metadata, by, chosen, classification)
            for _, part in self.predictions.groupby("Seed", sort=True)
        ]
        table = pd.concat(tables, ignore_index=True)
        keys = [column for column in table.columns if column not in ("Value", "n_windows")]
        averaged = table.groupby(keys, sort=False, dropna=False).agg(
            Value=("Value", "mean"), n_windows=("n_windows", "first")
        )
        return averaged.reset_index()[list(table.columns)]

    def get_aggregate_scores(
        self,
        by: str | list[str] = "Subject",
        method: str | None = None,
        metrics: list[str] | None = None,
        average: bool = False,
    ) -> pd.DataFrame:
        """Scores of one prediction per recording or subject, fold by fold, as clinical benchmarks score.

        Within each fold, each model's test windows of one group (``by``)
        become one prediction (:func:`neurofm.group_scores.aggregate_predictions`),
        and the fold is scored on those, with the run's metrics unless
        ``metrics`` names others. A group with windows in both the training
        and the test partition of a fold (the CV did not keep the groups
        apart) is refused.

        Parameters
        ----------
        by : str | list of str
            Metadata column(s) defining the groups (``"Subject"``, ``["Subject", "Session", "Run"]``).
        method : {"mean_proba", "vote", "mean"} | None
            ``"mean_proba"``: argmax of the mean class probabilities;
            ``"vote"``: majority vote of the windows' predictions (a tie goes
            to the first of the tied classes in sorted order); ``"mean"``:
            mean predicted value (regression). ``None``: ``"mean_proba"`` for
            classification, ``"mean"`` for regression.
        metrics : list of str | None
            Metric names (default: the experiment's).
        average : bool
            ``True``: one row per model and metric, ``mean, std`` across
            seeds x folds, as :meth:`summary`.

        Returns
        -------
        DataFrame
            ``Model, Fold, Seed, Metric, Value, n_groups, n_windows``, or
            with ``average`` ``Model, Metric, mean, std, n_folds, n_seeds``
            (mean and sd over seeds x folds, as :meth:`summary`).
        """
        chosen = list(metrics) if metrics is not None else self._metrics()
        classification = self._classification()
        tables = []
        for seed, part in self.predictions.groupby("Seed", sort=True):
            table = aggregate_scores(part, self.metadata, self.splits, by, method, chosen, classification)
            table.insert(2, "Seed", seed)
            tables.append(table)
        # Each model's rows together, in the run's order of models (seed 0's fold rows as before seeds existed).
        table = pd.concat(tables, ignore_index=True)
        order = {model: i for i, model in enumerate(dict.fromkeys(table["Model"]))}
        table = table.sort_values("Model", key=lambda column: column.map(order), kind="stable").reset_index(drop=True)
        if not average:
            return table
        grouped = table.groupby(["Model", "Metric"], sort=False)
        return grouped.agg(
            mean=("Value", "mean"), std=("Value", "std"), n_folds=("Fold", "nunique"), n_seeds=("Seed", "nunique")
        ).reset_index()

    def _classification(self) -> bool:
        """Whether the targets are classes (classification, and multilabel's binary labels), else regression."""
        return self.config.get("task", "classification") in ("classification", "multilabel")

    def _multilabel(self) -> bool:
        return self.config.get("task") == "multilabel"

    def _metrics(self) -> list[str]:
        """The run's metrics as configured, with the task's defaults where none were named."""
        if self._multilabel():
            return list(self.config.get("metrics") or MULTILABEL_DEFAULT_METRICS)
        defaults = CLASSIFICATION_METRICS[:3] if self._classification() else REGRESSION_METRICS
        return list(self.config.get("metrics") or defaults)

    def score_warnings(self) -> list[str]:
        """What a reader of these fold scores should know: test folds of few windows, heads fitted on more
        features than training windows (also in the report)."""
        return score_warnings(self.splits, self.artifacts)

    def _group_key(self) -> str | None:
        return (self.config.get("cv") or {}).get("group_key")

    def get_model_artifacts(self, artifact_type: str | None = None, model: str | None = None) -> pd.DataFrame:
        """Artifacts of the models (embedding cache statistics, adaptations, ...).

        Parameters
        ----------
        artifact_type : str | None
            Keep one type, e.g. ``"embedding_cache"`` or ``"input_adaptation"``.
        model : str | None
            Keep one model.
        """
        table = self.artifacts
        if artifact_type is not None:
            table = table[table["ArtifactType"] == artifact_type]
        if model is not None:
            table = table[table["Model"] == model]
        return table.reset_index(drop=True).copy()

    def get_statistics(self) -> pd.DataFrame:
        """Chance levels: ``Model, Metric, observed, chance_mean, p_value, method``.

        With ``n_permutations`` the chance level is the mean score over
        permuted labels, with its p-value; without, the score of a label-blind
        predictor (always the most frequent class, with the class frequencies
        as probabilities; regression: the mean), its p-value NaN. ``method``
        says which, in words; ``observed`` is the mean score over folds (and seeds, ``n_seeds``).
        """
        perm = self.get_model_artifacts(artifact_type="permutation_test")
        rows = {}
        for model, key, value in zip(perm["Model"], perm["ArtifactKey"], perm["ArtifactValue"], strict=True):
            for field in ("observed", "chance_mean", "p_value"):
                if key.endswith("_" + field):
                    rows.setdefault((model, key[: -len(field) - 1]), {})[field] = value
        table = [{"Model": m, "Metric": metric, **values} for (m, metric), values in rows.items()]
        permutations = pd.DataFrame(table, columns=["Model", "Metric", "observed", "chance_mean", "p_value"])
        n = int(self.config.get("n_permutations") or 0)
        # multilabel: no label-blind predictor yet, so only the permuted models have a chance level
        predictions = self.predictions.iloc[:0, :0] if self._multilabel() else first_seed(self.predictions)
        return chance_table(self.scores, predictions, permutations, self._metrics(), n)

    def compare(self, model_a: str, model_b: str, metric: str) -> Comparison:
        """Paired comparison of two models on the same folds.

        A model run with several seeds (``n_seeds``) enters with its mean
        over seeds in each fold: the folds are the paired units (every seed
        of both models saw the same training and test windows), and the
        seeds' spread within a fold is not counted as independent evidence.
        Returns the per-fold differences (a - b), their mean, a Wilcoxon
        signed-rank p-value, and the corrected resampled t-test of Nadeau and
        Bengio (2003), which accounts for overlapping training sets across folds:
        a dict of these numbers that prints as a table saying what each is
        (``.to_frame()`` gives that table).
        """
        table = self.scores[self.scores["Metric"] == metric].pivot_table(
            index="Fold", columns="Model", values="Value", aggfunc="mean", dropna=False
        )
        missing = [m for m in (model_a, model_b) if m not in table.columns]
        if missing:
            raise KeyError(f"No {metric!r} scores for {missing}; models are {list(table.columns)}.")
        diff = (table[model_a] - table[model_b]).dropna().to_numpy()
        k = len(diff)
        out = {
            "metric": metric,
            "model_a": model_a,
            "model_b": model_b,
            "n_folds": k,
            "differences": diff.tolist(),
            "mean_difference": float(np.mean(diff)) if k else float("nan"),
        }
        out["wilcoxon_p"] = float(stats.wilcoxon(diff).pvalue) if k >= 2 and np.any(diff != 0) else float("nan")
        splits = self.splits[self.splits["Model"] == model_a]
        n_test = splits[splits["Set"] == "test"].groupby("Fold").size().mean()
        n_train = splits[splits["Set"] == "train"].groupby("Fold").size().mean()
        variance = np.var(diff, ddof=1) if k >= 2 else float("nan")
        corrected = (1.0 / k + n_test / n_train) * variance if k >= 2 else float("nan")
        if k >= 2 and corrected > 0:
            t = float(np.mean(diff) / np.sqrt(corrected))
            out["corrected_t"] = t
            out["corrected_t_p"] = float(2 * stats.t.sf(abs(t), df=k - 1))
        else:
            out["corrected_t"] = out["corrected_t_p"] = float("nan")
        return Comparison(out)

    # -- models refitted on all windows, and their export ---------------------------------------------------------

    def refit_names(self) -> list[str]:
        """The models refitted on all windows (``ExperimentConfig(refit=True)``)."""
        return list(self.meta.get("refit", {}))

    @property
    def refit_models(self) -> dict:
        """Every refit model by name (those saved with a loaded result are read on first access).

        Fine-tuned decoders are :class:`~neurofm.estimators.neural.NeuralFineTuner`
        (adapters merged into the weights), frozen decoders
        :class:`~neurofm.export.FrozenProbe`, classical models their fitted
        scikit-learn estimator. None of them is scored: scores come from the folds.
        A loaded result holds those that were saved (``meta["refit"][name]["note"]``
        says why another was kept in memory only).
        """
        return {
            name: self.get_refit_model(name)
            for name in self.refit_names()
            if name in self._refit_models or name in self._refit_folders
        }

    def get_refit_model(self, name: str, **options):
        """The model ``name`` refitted on all windows.

        Parameters
        ----------
        name : str
            The model's name in the config.
        **options
            How a saved model is read back: ``device`` for a fine-tuned one,
            ``cache_dir``, ``device``... for a frozen probe (see
            :func:`neurofm.load_exported`).

        Raises
        ------
        KeyError
            When the run did not refit ``name``, or kept it in memory only
            and this result was loaded from disk.
        """
        if name in self._refit_models and not options:
            return self._refit_models[name]
        entry = self.meta.get("refit", {}).get(name)
        if entry is None:
            raise KeyError(
                f"Model {name!r} was not refitted on all windows (refitted: {self.refit_names()}); run with "
                "ExperimentConfig(refit=True)."
            )
        if name not in self._refit_folders:
            raise KeyError(f"The refit of model {name!r} was not saved: {entry.get('note')}.")
        folder = self._refit_folders[name]
        if entry["kind"] in ("fine_tuned", "scratch"):  # checkpoint folders (load_fine_tuned reads both)
            model = load_fine_tuned(folder, device=options.get("device"))
        else:
            model = load_probe(folder, **options)
        if not options:
            self._refit_models[name] = model
        return model

    def refit_folder(self, name: str) -> Path:
        """Where the saved refit of model ``name`` lies (its files, in the layout :mod:`neurofm.export` reads)."""
        if name not in self._refit_folders:
            raise KeyError(f"No saved refit of model {name!r}.")
        return self._refit_folders[name]

    def export_model(self, name: str, path: str | Path, fold: int | None = None, format: str | None = None) -> Path:
        """Write a model where plain braindecode (or neurofm) loads it, with a model card.

        Parameters
        ----------
        name : str
            The model's name in the config.
        path : str | Path
            A new or empty folder.
        fold : int | None
            ``None``: the model refitted on all windows (the run needs
            ``refit=True``); ``k``: fold ``k``'s model, rebuilt from its
            checkpoint (fine-tuned models saved with ``checkpoints.save``).
        format : {"braindecode", "checkpoint", "frozen-probe"} | None
            ``None``: ``braindecode`` for a fine-tuned backbone (``config.json``
            + ``model.safetensors``, loaded by ``<Class>.from_pretrained(path)``
            with adapters merged and neurofm's head as the class's
            ``final_layer``, refused with the reason where that head cannot be
            written exactly), ``frozen-probe`` for a frozen backbone + linear
            head (read by :func:`neurofm.load_exported`). ``checkpoint``:
            neurofm's own checkpoint folder, for any fine-tuned model.

        Returns
        -------
        path : Path
            The folder written: the model, ``neurofm_export.json`` (the input
            adaptation it expects, its weights' origin) and ``README.md``.

        Raises
        ------
        ConfigError
            Before anything is written: no refit model and no fold given, a
            fold without checkpoint, a head braindecode's class cannot hold, a
            non-empty folder.
        """
        return export_model(self, name, path, fold=fold, format=format)

    def push_to_hub(
        self,
        name: str,
        repo_id: str,
        *,
        fold: int | None = None,
        format: str | None = None,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str | None = None,
    ) -> str:
        """Export a model (:meth:`export_model`) and upload it to a hub repository, made if missing.

        The hub is ``HF_ENDPOINT`` (huggingface.co by default); ``token``:
        ``None`` uses the one you are logged in with. Returns the commit.
        """
        return push_to_hub(
            self,
            name,
            repo_id,
            fold=fold,
            format=format,
            token=token,
            private=private,
            commit_message=commit_message,
        )

    def save(self, directory: str | Path) -> Path:
        """Write tables as Parquet, the config as YAML and metadata as JSON.

        Each file is written whole to a temporary name and renamed into place:
        a crash or a full disk leaves the previous file or the new one, never
        a part.
        """
        out = claim_folder(directory, "The output folder", OUTPUT_NAMES)
        keep_previous_result(out, self.config)  # another config's result there is kept as a version, never replaced
        for name in _TABLES:
            table = getattr(self, name).copy()
            if name == "artifacts":
                table["ArtifactValue"] = [json.dumps(jsonable(v)) for v in table["ArtifactValue"]]
            atomic_write(out / f"{name}.parquet", lambda tmp, table=table: table.to_parquet(tmp, index=False))
        if len(self.metadata.columns) > 1:
            atomic_write(out / _METADATA_FILE, lambda tmp: self.metadata.to_parquet(tmp, index=False))
        if len(self.sweeps):
            atomic_write(out / _SWEEPS_FILE, lambda tmp: self.sweeps.to_parquet(tmp, index=False))
        else:  # a result without sweeps never reads back another's
            (out / _SWEEPS_FILE).unlink(missing_ok=True)
        config_text = yaml.safe_dump(self.config, sort_keys=False)
        atomic_write(out / "config.yaml", lambda tmp: tmp.write_text(config_text))
        self._save_refit_models(out)
        meta_text = json.dumps(jsonable(self.meta), indent=2)
        atomic_write(out / "meta.json", lambda tmp: tmp.write_text(meta_text))
        if (out / "report.html").is_file():
            # import cycle: the report reads results; a report left from before would show numbers gone
            from .report import write_report

            write_report(out)
        return out

    def _save_refit_models(self, out: Path) -> None:
        """Each saved refit model into ``out/models``: copied from where it lies, or written from memory."""
        for name, entry in self.meta.get("refit", {}).items():
            relative = entry.get("folder")
            if relative is None:
                continue
            target = out / relative
            source = self._refit_folders.get(name)
            if source is not None and source.resolve() == target.resolve():
                continue
            if source is not None:
                copy_refit(source, target)
            else:
                save_probe(target, self._refit_models[name])
                write_refit_record(target, name, entry["kind"])
            self._refit_folders[name] = target

    @classmethod
    def load(cls, directory: str | Path) -> ExperimentResult:
        """Read a directory written by :meth:`save`."""
        src = Path(directory).expanduser()
        missing = [f"{n}.parquet" for n in _TABLES if not (src / f"{n}.parquet").exists()]
        if missing:
            raise FileNotFoundError(f"{src} is not a saved neurofm result: missing {missing}.")
        tables = {n: pd.read_parquet(src / f"{n}.parquet") for n in _TABLES}
        tables["artifacts"]["ArtifactValue"] = [json.loads(v) for v in tables["artifacts"]["ArtifactValue"]]
        config = load_yaml((src / "config.yaml").read_text())
        meta = json.loads((src / "meta.json").read_text()) if (src / "meta.json").exists() else {}
        # Only neurofm's own folder names: a meta.json from elsewhere cannot point the reading outside the result.
        folders = {
            name: src / entry["folder"]
            for name, entry in meta.get("refit", {}).items()
            if isinstance(entry.get("folder"), str)
            and re.fullmatch(rf"{MODELS_FOLDER}/model-[0-9a-f]+", entry["folder"])
            and (src / entry["folder"]).is_dir()
        }
        result = cls(config=config, meta=meta, refit_folders=folders, **tables)
        if (src / _METADATA_FILE).exists():
            result.metadata = pd.read_parquet(src / _METADATA_FILE)  # as saved: SampleIndex and the columns
        if (src / _SWEEPS_FILE).exists():
            result.sweeps = pd.read_parquet(src / _SWEEPS_FILE)
        return result


def run_metadata(inputs, seconds: float, timings: dict) -> dict:
    """What a result records about its run: package versions, platform, the windows' signal, times.

    ``inputs`` is the run's :class:`neurofm.data.Inputs`; ``timings`` each model's seconds.
    """
    return {
        "versions": package_versions(("neurofm", "torch", "braindecode", "mne", "scikit-learn", "numpy", "pandas")),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "n_windows": int(inputs.X.shape[0]),
        "signal": inputs.info.to_dict() | {"n_times": int(inputs.X.shape[-1])},
        "wall_seconds": round(seconds, 3),
        "model_seconds": {k: round(v, 3) for k, v in timings.items()},
    }


def first_seed(table: pd.DataFrame) -> pd.DataFrame:
    """Each model's rows of its first seed (``n_seeds``): one test prediction per window and fold, as a one-seed
    run has; what does not depend on the seed (the truth) is then read once."""
    if table.empty or "Seed" not in table.columns:
        return table
    first = table.groupby("Model", sort=False)["Seed"].transform("min")
    return table[table["Seed"] == first]


def _with_seed_column(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``Seed`` column after ``Fold``: 0 in tables from before seeds existed (one seed each)."""
    if table is None or "Seed" in table.columns or "Fold" not in table.columns:
        return table
    table = table.copy()
    table.insert(table.columns.get_loc("Fold") + 1, "Seed", 0)
    return table
