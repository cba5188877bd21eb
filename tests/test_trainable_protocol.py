"""NeuralTrainable: any estimator with the five methods gets its training artifacts recorded per fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

import neurofm
from neurofm import Experiment, ExperimentResult, ModelFitError, NeuralTrainable
from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
)
from neurofm.policy import allow_imports

METHODS = (
    "get_training_history",
    "get_checkpoint_manifest",
    "get_model_card_info",
    "get_failure_diagnostics",
    "get_artifact_metadata",
)


class PartialDecoder(ClassifierMixin, BaseEstimator):
    """Nearest class mean, with four of the five methods (no ``get_failure_diagnostics``): not NeuralTrainable.

    Every artifact depends on the fold's training partition (its size), so a test can tell one fold's from another's.
    Numpy values, a tuple and an array check that what is recorded is JSON-ready.
    """

    def __init__(self, n_epochs: int = 3, fail: str | None = None, unrecordable: bool = False):
        self.n_epochs = n_epochs
        self.fail = fail
        self.unrecordable = unrecordable

    def fit(self, X, y):
        X, y = np.asarray(X), np.asarray(y)
        self.classes_ = np.unique(y)
        self.means_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        self.n_train_ = len(X)
        return self

    def predict(self, X):
        distances = ((np.asarray(X)[:, None, :] - self.means_[None]) ** 2).sum(axis=-1)
        return self.classes_[distances.argmin(axis=1)]

    def _maybe_fail(self, method: str) -> None:
        if self.fail == method:
            raise RuntimeError(f"{method} is broken")

    def get_training_history(self):
        self._maybe_fail("get_training_history")
        return [
            {"epoch": epoch, "train_loss": np.float64(1 / (epoch + 1)), "n_train": np.int64(self.n_train_)}
            for epoch in range(self.n_epochs)
        ]

    def get_checkpoint_manifest(self):
        self._maybe_fail("get_checkpoint_manifest")
        directory = Path("/checkpoints") if self.unrecordable else f"/checkpoints/n{self.n_train_}"
        return {"directory": directory, "best_epoch": self.n_epochs - 1, "tags": ("best", "last")}

    def get_model_card_info(self):
        self._maybe_fail("get_model_card_info")
        return {"architecture": "nearest class mean", "n_train": self.n_train_, "classes": self.classes_}

    def get_artifact_metadata(self):
        self._maybe_fail("get_artifact_metadata")
        return {
            "training_history": self.get_training_history(),
            "checkpoints": self.get_checkpoint_manifest(),
            "model_card": self.get_model_card_info(),
        }


class TrainableDecoder(PartialDecoder):
    """The same decoder with all five methods, and one artifact type of its own."""

    def get_failure_diagnostics(self):
        self._maybe_fail("get_failure_diagnostics")
        return {"non_finite": None, "grad_norms": np.array([0.5, 0.25])}

    def get_artifact_metadata(self):
        return {
            **super().get_artifact_metadata(),
            "failure_diagnostics": self.get_failure_diagnostics(),
            "notes": {"seen": f"{self.n_train_} windows"},
        }


# Found by the experiment through their import paths, built from ``__module__`` so they work whatever name
# pytest gave this module; configs may import them only once allowed (they are not in scikit-learn).
TRAINABLE_PATH = f"{TrainableDecoder.__module__}.{TrainableDecoder.__qualname__}"
PARTIAL_PATH = f"{PartialDecoder.__module__}.{PartialDecoder.__qualname__}"


def _expected(n_train: int) -> dict[str, dict]:
    """What a TrainableDecoder fitted on ``n_train`` windows records, keyed by artifact type and key (JSON-ready)."""
    return {
        "training_history": {
            f"epoch_{e:03d}": {"epoch": e, "train_loss": 1 / (e + 1), "n_train": n_train} for e in range(3)
        },
        "checkpoints": {"directory": f"/checkpoints/n{n_train}", "best_epoch": 2, "tags": ["best", "last"]},
        "model_card": {
            "architecture": "nearest class mean",
            "n_train": n_train,
            "classes": ["left_hand", "right_hand"],
        },
        "failure_diagnostics": {"non_finite": None, "grad_norms": [0.5, 0.25]},
        "notes": {"seen": f"{n_train} windows"},
    }


def _model(path: str = TRAINABLE_PATH, **params) -> ClassicalModelConfig:
    with allow_imports(path.partition(".")[0]):
        return ClassicalModelConfig(estimator=path, params=params)


def _config(models, **kw) -> ExperimentConfig:
    with allow_imports(TRAINABLE_PATH.partition(".")[0]):
        return ExperimentConfig(
            models=models,
            metrics=["accuracy"],
            cv=CVConfig(strategy="group_kfold", n_splits=3, group_key="Subject"),
            verbose=False,
            **kw,
        )


def _recorded(result: ExperimentResult, model: str) -> dict[int, dict[str, dict]]:
    """Each fold's artifacts (not the run's own timing) as {fold: {type: {key: value}}}."""
    rows = result.get_model_artifacts(model=model).query("ArtifactType != 'timing'")
    out: dict[int, dict[str, dict]] = {}
    for fold, kind, key, value in rows[["Fold", "ArtifactType", "ArtifactKey", "ArtifactValue"]].itertuples(
        index=False
    ):
        out.setdefault(int(fold), {}).setdefault(kind, {})[key] = value
    return out


def _train_sizes(result: ExperimentResult, model: str) -> dict[int, int]:
    splits = result.get_splits().query("Model == @model and Set == 'train'")
    return splits.groupby("Fold").size().to_dict()


@pytest.fixture(scope="module")
def run(small_dataset, tmp_path_factory):
    """One experiment: a user's NeuralTrainable decoder, the same with four methods, and a scikit-learn one."""
    X, y, meta, info = small_dataset
    cfg = _config(
        {
            "mine": _model(),
            "partial": _model(PARTIAL_PATH),
            "lr": ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 200}),
        },
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    return Experiment(cfg).run(X, y, meta, **info)


# -- the protocol ------------------------------------------------------------------------------------------------


def test_neurofm_exports_the_protocol():
    assert "NeuralTrainable" in neurofm.__all__ and neurofm.NeuralTrainable is NeuralTrainable


def test_an_estimator_with_the_five_methods_is_neural_trainable_without_deriving_from_it():
    assert NeuralTrainable not in TrainableDecoder.__mro__  # structural: the methods are enough
    assert isinstance(TrainableDecoder(), NeuralTrainable)
    assert not isinstance(PartialDecoder(), NeuralTrainable)
    assert not isinstance(LogisticRegression(), NeuralTrainable)


@pytest.mark.parametrize("missing", METHODS)
def test_each_of_the_five_methods_is_required(missing):
    def method(self):
        return {}

    assert isinstance(type("Full", (), dict.fromkeys(METHODS, method))(), NeuralTrainable)
    lacking = type("Lacking", (), {name: method for name in METHODS if name != missing})
    assert not isinstance(lacking(), NeuralTrainable)


def test_a_fitted_neural_fine_tuner_is_neural_trainable(small_dataset, tmp_path):
    pytest.importorskip("torch")
    from neurofm.configs import CheckpointConfig, NeuralFineTuneConfig, TrainerConfig
    from neurofm.estimators.neural import NeuralFineTuner
    from neurofm.models import get_model_spec

    X, y, meta, info = small_dataset
    cfg = NeuralFineTuneConfig(
        model_key="cbramod",
        weights="random",
        train_mode="frozen",
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        trainer=TrainerConfig(max_epochs=1, batch_size=16, early_stopping_patience=None),
        checkpoints=CheckpointConfig(save="best", directory=str(tmp_path)),
    )
    tuner = NeuralFineTuner(cfg, sfreq=info["sfreq"], ch_names=info["ch_names"], verbose=False)
    fitted = tuner.fit(X, y, groups=meta["Subject"].to_numpy())
    assert isinstance(fitted, NeuralTrainable) and issubclass(NeuralFineTuner, NeuralTrainable)
    assert {"training_history", "checkpoints", "model_card", "failure_diagnostics"} <= set(
        fitted.get_artifact_metadata()
    )


# -- collected per fold ------------------------------------------------------------------------------------------


def test_a_users_estimator_has_its_artifacts_recorded_for_every_fold(run):
    recorded = _recorded(run, "mine")
    sizes = _train_sizes(run, "mine")
    assert sorted(recorded) == [0, 1, 2] and len(set(sizes.values())) > 1  # folds differ: a mix-up would show
    for fold, n_train in sizes.items():
        assert recorded[fold] == _expected(n_train), fold


def test_recorded_values_are_json_ready_python_values(run):
    history = run.get_model_artifacts(artifact_type="training_history", model="mine")
    record = history["ArtifactValue"].iloc[0]
    assert type(record["train_loss"]) is float and type(record["n_train"]) is int  # not numpy scalars
    card = run.get_model_artifacts(artifact_type="model_card", model="mine")
    classes = dict(zip(card["ArtifactKey"], card["ArtifactValue"], strict=True))["classes"]
    assert type(classes) is list and all(type(c) is str for c in classes)  # not a numpy array of numpy strings


def test_an_estimator_with_some_of_the_methods_gets_no_such_artifacts(run):
    for model in ("partial", "lr"):
        assert set(run.get_model_artifacts(model=model)["ArtifactType"]) == {"timing"}, model


def test_the_artifacts_survive_save_and_load(run, tmp_path):
    loaded = ExperimentResult.load(run.save(tmp_path / "out"))
    assert _recorded(loaded, "mine") == _recorded(run, "mine")
    pd.testing.assert_frame_equal(loaded.get_model_artifacts(model="mine"), run.get_model_artifacts(model="mine"))


def test_a_resumed_run_reads_back_the_same_artifacts(small_dataset, tmp_path):
    X, y, meta, info = small_dataset
    cfg = _config({"mine": _model()}, cache_dir=str(tmp_path / "cache"))
    fresh = Experiment(cfg).run(X, y, meta, output_dir=tmp_path / "out", **info)
    resumed = Experiment(cfg).run(X, y, meta, output_dir=tmp_path / "out", **info)  # every fold from its record
    assert _recorded(resumed, "mine") == _recorded(fresh, "mine")
    assert _recorded(fresh, "mine")[0] == _expected(_train_sizes(fresh, "mine")[0])


def test_a_frozen_probe_head_of_your_own_has_its_artifacts_recorded(small_dataset, cache_dir):
    pytest.importorskip("torch")
    from neurofm.models import get_model_spec

    X, y, meta, info = small_dataset
    probe = FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key="cbramod", weights="random", model_kwargs=get_model_spec("cbramod").tiny_kwargs
        ),
        head=_model(),
    )
    result = Experiment(_config({"probe": probe}, cache_dir=cache_dir)).run(X, y, meta, **info)
    recorded = _recorded(result, "probe")
    for fold, n_train in _train_sizes(result, "probe").items():
        for kind, rows in _expected(n_train).items():
            assert recorded[fold][kind] == rows, (fold, kind)


# -- refused, with the estimator and the method named ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "via"),
    [
        ("get_failure_diagnostics", r" \(called by get_artifact_metadata\(\)\)"),
        ("get_training_history", r" \(called by get_artifact_metadata\(\)\)"),
        ("get_artifact_metadata", ""),
    ],
)
def test_a_method_that_raises_stops_the_run_naming_the_estimator_and_the_method(small_dataset, tmp_path, method, via):
    X, y, meta, info = small_dataset
    cfg = _config(
        {"mine": _model(fail=method)},
        cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(
        ModelFitError,
        match=rf"Model 'mine' on fold 0: TrainableDecoder\.{method}\(\){via} raised RuntimeError: {method} is broken",
    ):
        Experiment(cfg).run(X, y, meta, **info)


def test_a_value_json_cannot_hold_is_refused_naming_where_it_is(small_dataset, tmp_path):
    X, y, meta, info = small_dataset
    cfg = _config(
        {"mine": _model(unrecordable=True)},
        cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(
        ModelFitError,
        match=r"TrainableDecoder\.get_artifact_metadata\(\)\['checkpoints'\]\['directory'\] cannot be recorded: "
        r"Object of type PosixPath is not JSON serializable",
    ):
        Experiment(cfg).run(X, y, meta, **info)


class OddlyLoggingDecoder(TrainableDecoder):
    """Five methods, but a history without epochs and an input adaptation told in words."""

    def get_training_history(self):
        return [{"step": step, "objective": 1.0 / (step + 1)} for step in range(2)]

    def get_model_card_info(self):
        return {"architecture": "nearest class mean", "input_adaptation": "none: raw windows"}


def test_the_report_takes_a_users_artifacts_whatever_they_log(small_dataset, tmp_path):
    from neurofm.report import write_report

    X, y, meta, info = small_dataset
    odd_path = f"{OddlyLoggingDecoder.__module__}.{OddlyLoggingDecoder.__qualname__}"
    cfg = _config({"mine": _model(), "odd": _model(odd_path)}, cache_dir=str(tmp_path / "cache"))
    Experiment(cfg).run(X, y, meta, output_dir=str(tmp_path / "out"), **info)
    html = write_report(tmp_path / "out").read_text()
    # The plottable history is drawn; the other is left out of the curves, its adaptation shown as told.
    assert "Training curves" in html and "none: raw windows" in html and "odd" in html
