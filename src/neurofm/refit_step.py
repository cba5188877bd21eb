"""The refit step of a run (``ExperimentConfig(refit=True)``): each model fitted once more on all windows.

It runs after every fold and permutation, so nothing scored depends on it;
the models are kept in the result and saved into its folder (see
:mod:`neurofm.export`), and a resumed run reads back those already saved.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sklearn.base import clone

from .cache import stable_hash
from .execution import map_tasks
from .export import (
    FrozenProbe,
    load_fine_tuned,
    load_probe,
    refit_checkpoint_folder,
    refit_kind,
    refit_on_record,
    save_probe,
    write_refit_record,
)
from .progress import RunRecords
from .results import MODELS_FOLDER
from .sharing import make_folders
from .tasks import RefitTask, SharedInputs, computes_on_gpu, run_refit
from .utils.logging import logger

if TYPE_CHECKING:
    from .experiment import _PreparedModel

__all__ = ["RefitStep"]

#: Refit kinds written as checkpoint folders where they train (fine-tuned and from-scratch networks).
_TRAINED = ("fine_tuned", "scratch")


class RefitStep:
    """What one run refits and how: the models not saved by an earlier run into the same output folder.

    Parameters
    ----------
    records : RunRecords
        The run's records (its output folder and key, when it has one).
    execution : ExecutionConfig
        Where the fits run.
    recordings : ndarray | None
        Each window's recording, when known.
    prepared : list of _PreparedModel
        The run's models.
    """

    def __init__(self, records: RunRecords, execution, recordings, prepared: list[_PreparedModel]):
        self.records, self.execution, self.recordings = records, execution, recordings
        self.saved: dict[str, Any] = self._read_saved(prepared)  # refit models an earlier run saved
        self.todo: set[str] = {model.name for model in prepared if model.name not in self.saved}

    def folder_name(self, model: _PreparedModel) -> str:
        """The refit's folder in a result folder: named like the model's records (what decides it), or, without
        records, by its name and config; a hash, so a model name cannot point a write elsewhere."""
        if self.records.progress is not None:
            return f"{MODELS_FOLDER}/{self.records.folders[model.name].name}"
        return (
            f"{MODELS_FOLDER}/model-{stable_hash({'name': model.name, 'model': model.config.model_dump(mode='json')})}"
        )

    def target(self, model: _PreparedModel) -> Path | None:
        """Where the refit is saved in the output folder (``None``: the run has none)."""
        progress = self.records.progress
        return None if progress is None else progress.output_dir / self.folder_name(model)

    @staticmethod
    def probe_embedder(model: _PreparedModel) -> Any:
        """A frozen probe's embedder: the run's parameters, unfitted (it plans on the windows it is given)."""
        return clone(model.embedder).set_params(verbose=False)

    def _read_saved(self, prepared: list[_PreparedModel]) -> dict[str, Any]:
        """Refit models that a run with this config and data saved in the output folder: read, not fitted again."""

        progress = self.records.progress
        saved: dict[str, Any] = {}
        if progress is None:
            return saved
        for model in prepared:
            kind = refit_kind(model.config, model.estimator)
            folder = self.target(model)
            if kind.unsaved is None and refit_on_record(folder, model.name, kind.kind, progress.key):
                saved[model.name] = (
                    load_fine_tuned(folder)
                    if kind.kind in _TRAINED
                    else load_probe(folder, embedder=self.probe_embedder(model))
                )
                logger.info("Resuming: the refit of %s is read back from %s", model.name, folder)
        return saved

    def run(self, prepared, features, inputs, groups) -> tuple[dict[str, Any], dict[str, Path], dict[str, Any]]:
        """Every model fitted once more on all windows (unless saved by an earlier run), saved where it can be.

        Returns the models, the folders of those saved, and what the result records about each.
        """

        key = None if self.records.progress is None else self.records.progress.key
        todo = [model for model in prepared if model.name in self.todo]
        folders: dict[str, Path] = {}
        tasks = []
        for model in todo:
            target = self.target(model)
            if target is not None:
                make_folders(target, key)
            if model.trainable:  # written where it trains: into the output folder, else beside its fold checkpoints
                folders[model.name] = target if target is not None else refit_checkpoint_folder(model.estimator)
            tasks.append(
                RefitTask(
                    model.name,
                    clone(model.estimator),
                    model.trainable,
                    model.prepared if model.trainable else None,
                    str(folders[model.name]) if model.trainable else None,
                )
            )
        if tasks:
            logger.info("Refitting %d model(s) on all %d windows", len(tasks), len(inputs.y))
        started = time.perf_counter()
        shared = SharedInputs(features, inputs.y, groups, self.recordings)
        fitted = dict(
            zip(
                [task.model_name for task in tasks],
                map_tasks(self.execution, run_refit, tasks, shared, [computes_on_gpu(task) for task in tasks]),
                strict=True,
            )
        )
        seconds = round(time.perf_counter() - started, 3)
        models: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for model in prepared:
            kind = refit_kind(model.config, model.estimator)
            target = self.target(model)
            entry: dict[str, Any] = {
                "kind": kind.kind,
                "folder": None if kind.unsaved else self.folder_name(model),
                "note": kind.unsaved,
                "resumed": model.name in self.saved,
                "n_windows": int(len(inputs.y)),
                "weights": model.weights,
            }
            if model.name in self.saved:
                models[model.name] = self.saved[model.name]
                folders[model.name] = target
            elif kind.kind in _TRAINED:
                entry |= fitted[model.name] | {"seconds": seconds}
                # Kept as saved (adapters merged): in memory, saved, reloaded and exported, one model.
                models[model.name] = load_fine_tuned(folders[model.name])
            elif kind.kind == "frozen_probe":
                models[model.name] = FrozenProbe(
                    self.probe_embedder(model), fitted[model.name], model.weights, model.prepared.plan.describe()
                )
                if target is not None and kind.unsaved is None:
                    save_probe(target, models[model.name])
                    folders[model.name] = target
                entry["seconds"] = seconds
            else:
                models[model.name] = fitted[model.name]
                entry["seconds"] = seconds
            if target is not None and model.name in folders and not entry["resumed"]:
                write_refit_record(target, model.name, kind.kind, key)
            meta[model.name] = entry
        return models, folders, meta
