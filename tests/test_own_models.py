"""Own models, first-class: estimator objects from Python, pyriemann by name, and what the estimator receives.

An estimator object in a config is fitted only as fresh clones, never itself; a config holding one is written as
its class and parameters (never pickled), keys a run's records by them, and cannot be read back from a file.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from pyriemann.classification import MDM
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.validation import check_is_fitted

import neurofm
from neurofm import Experiment
from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
)
from neurofm.estimators.classical import (
    PYRIEMANN_ESTIMATORS,
    build_estimator,
    build_window_estimator,
    resolve_estimator_class,
    window_input,
)
from neurofm.exceptions import ConfigError
from neurofm.results import ExperimentResult
from neurofm.simulate import simulate_eeg_dataset
from neurofm.utils.objects import describe_object

#: Ids of the estimators a ``FitSpy`` was fitted as, and the number of dimensions of what each received.
FITTED: list[tuple[int, int]] = []


class FitSpy(ClassifierMixin, BaseEstimator):
    """Nearest class mean of each window's log variance per channel; records which object was fitted on what."""

    def __init__(self, random_state=None):
        self.random_state = random_state

    def _features(self, X):
        X = np.asarray(X)
        if X.ndim == 2:  # flattened windows: back to (n, channels, times) of the simulated 19-channel data
            X = X.reshape(len(X), 19, -1)
        return np.log(X.var(axis=-1))

    def fit(self, X, y):
        FITTED.append((id(self), np.asarray(X).ndim))
        features, y = self._features(X), np.asarray(y)
        self.classes_ = np.unique(y)
        self.means_ = np.stack([features[y == c].mean(axis=0) for c in self.classes_])
        return self

    def predict(self, X):
        features = self._features(X)
        return self.classes_[((features[:, None] - self.means_[None]) ** 2).sum(axis=-1).argmin(axis=1)]


@pytest.fixture(scope="module")
def data():
    return simulate_eeg_dataset(n_subjects=3, n_windows_per_class=4, random_state=0)


def _config(tmp_path, models, **overrides) -> ExperimentConfig:
    settings = {
        "models": models,
        "cv": CVConfig(strategy="group_kfold", n_splits=3, group_key="Subject"),
        "metrics": ["accuracy"],
        "cache_dir": str(tmp_path / "cache"),
        "verbose": False,
        **overrides,
    }
    return ExperimentConfig(**settings)


def _riemann():
    return make_pipeline(Covariances("oas"), MDM())


# -- an estimator object from Python ------------------------------------------------------------------------------


def test_a_pyriemann_pipeline_object_runs_in_an_experiment_and_the_users_object_stays_unfitted(data, tmp_path):
    X, y, meta, info = data
    mine = _riemann()
    cfg = _config(tmp_path, {"mdm": ClassicalModelConfig(estimator=mine)})
    assert cfg.models["mdm"].estimator is not mine  # the config keeps a clone: later changes to mine do not reach it
    result = Experiment(cfg).run(X, y, meta, **info)
    scores = result.get_detailed_scores().query("Model == 'mdm'")
    assert scores["Fold"].tolist() == [0, 1, 2] and scores["Value"].between(0, 1).all()
    for estimator in (mine, cfg.models["mdm"].estimator):
        with pytest.raises(NotFittedError):
            check_is_fitted(estimator.steps[-1][1])


def test_each_fold_fits_a_fresh_clone_of_the_object(data, tmp_path):
    X, y, meta, info = data
    mine = FitSpy()
    FITTED.clear()
    cfg = _config(tmp_path, {"spy": ClassicalModelConfig(estimator=mine)}, refit=True)
    result = Experiment(cfg).run(X, y, meta, **info)
    ids = [fitted for fitted, _ in FITTED]
    assert len(ids) == 4 and len(set(ids)) == 4  # 3 folds and the refit, each its own object
    assert id(mine) not in ids and id(cfg.models["spy"].estimator) not in ids
    assert not hasattr(mine, "classes_") and hasattr(result.get_refit_model("spy"), "classes_")


def test_an_objects_random_state_left_at_none_gets_the_runs_seed_and_a_set_one_is_kept():
    built = build_estimator(make_pipeline(LogisticRegression()), {}, random_state=7)
    assert built.steps[-1][1].random_state == 7
    assert build_estimator(LogisticRegression(random_state=3), {}, random_state=7).random_state == 3


@pytest.mark.parametrize(
    ("estimator", "match"),
    [
        (MDM, r"the class pyriemann\.classification\.MDM itself; pass an instance, estimator=MDM\(\.\.\.\)"),
        (5, r"or an estimator object with fit and get_params .*got a builtins\.int"),
    ],
)
def test_what_is_not_an_estimator_object_is_refused_with_the_fix(estimator, match):
    with pytest.raises(ValidationError, match=match):
        ClassicalModelConfig(estimator=estimator)


class _Unclonable(ClassifierMixin, BaseEstimator):
    def __init__(self, C=1.0):
        self.C = C * 2  # breaks scikit-learn's contract: __init__ must store its arguments unchanged

    def fit(self, X, y):
        return self


def test_an_object_that_cannot_be_cloned_is_refused_when_the_config_is_made():
    with pytest.raises(ValidationError, match=r"cannot be cloned with sklearn\.base\.clone .*__init__ must store"):
        ClassicalModelConfig(estimator=_Unclonable())


def test_params_beside_an_object_are_refused():
    with pytest.raises(ValidationError, match=r"an object carries its own parameters; set them on it"):
        ClassicalModelConfig(estimator=_riemann(), params={"mdm__metric": "euclid"})


def test_an_objects_task_is_checked_against_the_experiments_before_any_compute():
    with pytest.raises(ValidationError, match=r"model 'mdm': 'sklearn\.pipeline\.Pipeline' is a classifier"):
        ExperimentConfig(
            task="regression", cv=CVConfig(strategy="kfold"), models={"mdm": ClassicalModelConfig(estimator=_riemann())}
        )


def test_a_head_may_be_an_object_but_takes_no_input_switch():
    backbone = FoundationEmbeddingModelConfig(model_key="cbramod", weights="random")
    probe = FrozenBackboneDecoderConfig(backbone=backbone, head=ClassicalModelConfig(estimator=LogisticRegression(C=2)))
    assert probe.model_dump(mode="json")["head"]["estimator"]["params"]["C"] == 2
    with pytest.raises(ValidationError, match=r"head\.input='flat'.*a head always receives embedding vectors"):
        FrozenBackboneDecoderConfig(
            backbone=backbone, head=ClassicalModelConfig(estimator="LogisticRegression", input="flat")
        )


# -- saved as what it is, never pickled; never rebuilt from a file ----------------------------------------------


def test_a_config_with_an_object_dumps_as_its_class_and_params_and_never_pickles():
    cfg = ExperimentConfig(models={"mdm": ClassicalModelConfig(estimator=_riemann())})
    text = cfg.to_yaml()
    assert "!!python" not in text  # no tag that would build (or unpickle) an object
    dumped = yaml.safe_load(text)["models"]["mdm"]["estimator"]
    assert dumped["python_object"] == "sklearn.pipeline.Pipeline"
    covariances, mdm = (step for _, step in dumped["params"]["steps"])
    assert covariances == {"python_object": "pyriemann.estimation.Covariances", "params": {"estimator": "oas"}}
    assert mdm["python_object"] == "pyriemann.classification.MDM"
    assert cfg.model_dump_json()  # JSON too
    assert cfg.model_dump()["models"]["mdm"]["estimator"] is cfg.models["mdm"].estimator  # Python keeps the object


def test_a_saved_result_of_an_object_loads_and_its_config_refuses_to_rebuild_the_object(data, tmp_path):
    X, y, meta, info = data
    cfg = _config(tmp_path, {"mdm": ClassicalModelConfig(estimator=_riemann())})
    out = tmp_path / "out"
    result = Experiment(cfg).run(X, y, meta, output_dir=out, **info)
    loaded = ExperimentResult.load(out)
    assert loaded.config == result.config
    assert loaded.config["models"]["mdm"]["estimator"]["python_object"] == "sklearn.pipeline.Pipeline"
    with pytest.raises(
        ConfigError,
        match=r"models\.mdm\.classical\.estimator: .*a sklearn\.pipeline\.Pipeline of "
        r"pyriemann\.estimation\.Covariances, pyriemann\.classification\.MDM .*cannot rebuild it\. "
        r"Pass the object again from Python",
    ):
        ExperimentConfig.from_yaml(out / "config.yaml")


def test_equal_objects_share_a_runs_records_and_different_ones_do_not(data, tmp_path):
    X, y, meta, info = data
    out = tmp_path / "out"

    def run(estimator) -> set[str]:
        cfg = _config(tmp_path, {"mine": ClassicalModelConfig(estimator=estimator)})
        Experiment(cfg).run(X, y, meta, output_dir=out, **info)
        return {folder.name for folder in (out / "progress").iterdir() if folder.name.startswith("model-")}

    first = run(_riemann())
    assert len(first) == 1
    assert run(_riemann()) == first  # a new object with the same parameters: its records are read back
    other = run(make_pipeline(Covariances("scm"), MDM()))
    assert len(other) == 2  # one parameter apart: records of its own


def test_objects_that_differ_only_in_state_hidden_from_their_repr_are_described_apart():
    seeded = [describe_object(LogisticRegression(random_state=np.random.RandomState(seed))) for seed in (0, 1, 0)]
    assert seeded[0] != seeded[1] and seeded[0] == seeded[2]
    arrays = [describe_object(FunctionTransformer(kw_args={"w": np.arange(n)})) for n in (3, 4)]
    assert arrays[0] != arrays[1]
    # JSON has no NaN: pydantic would write it as null, which reads as None, another value.
    dumped = [
        ClassicalModelConfig(estimator=SimpleImputer(missing_values=v)).model_dump(mode="json") for v in (np.nan, None)
    ]
    assert dumped[0] != dumped[1]


# -- what the estimator receives: input -----------------------------------------------------------------------


def test_input_defaults_to_windows_for_pyriemann_and_mne_first_steps_and_flat_otherwise():
    from mne.decoding import Vectorizer  # heavy: mne loads on use

    assert window_input(_riemann()) == "windows"
    assert window_input(make_pipeline(make_pipeline(Vectorizer()), LogisticRegression())) == "windows"  # nested
    assert window_input(make_pipeline("passthrough", TangentSpace())) == "windows"
    assert window_input(make_pipeline(FitSpy())) == "flat"
    assert window_input(LogisticRegression()) == "flat"
    assert window_input("pyriemann.estimation.Covariances") == "windows"
    assert window_input("ts_lr") == window_input("bandpower_lr") == "windows"
    assert window_input("LogisticRegression") == "flat"
    assert window_input(_riemann(), "flat") == "flat" and window_input(FitSpy(), "windows") == "windows"


def test_the_input_switch_decides_whether_the_estimator_is_given_flattened_windows(data, tmp_path):
    X, y, meta, info = data
    models = {
        "auto": ClassicalModelConfig(estimator=FitSpy()),
        "windows": ClassicalModelConfig(estimator=FitSpy(), input="windows"),
    }
    FITTED.clear()
    result = Experiment(_config(tmp_path, models)).run(X, y, meta, **info)
    assert [ndim for _, ndim in FITTED] == [2, 2, 2, 3, 3, 3]  # model by model, fold by fold
    scores = result.get_detailed_scores()
    # The same features either way: flattening is all that differs.
    np.testing.assert_array_equal(
        scores.query("Model == 'auto'")["Value"].to_numpy(), scores.query("Model == 'windows'")["Value"].to_numpy()
    )


def test_built_window_estimators_wrap_the_object_whole_after_the_units_step():
    flat = build_window_estimator(LogisticRegression(), {}, sfreq=160.0, units=["V"] * 19)
    assert [name for name, _ in flat.steps] == ["units", "functiontransformer", "logisticregression"]
    windows = build_window_estimator(_riemann(), {}, sfreq=160.0, units=["V"] * 19)
    assert [name for name, _ in windows.steps] == ["units", "pipeline"]
    assert isinstance(windows.steps[1][1], Pipeline) and len(windows.steps[1][1].steps) == 2
    named = build_window_estimator("LogisticRegression", {"C": 2.0}, sfreq=160.0, random_state=1, input="windows")
    assert [name for name, _ in named.steps] == ["logisticregression"]  # no flattening asked for


def test_a_named_pipeline_cannot_be_given_flat_windows():
    with pytest.raises(ValidationError, match=r"input='flat' with neurofm's named pipeline 'ts_lr'"):
        ClassicalModelConfig(estimator="ts_lr", input="flat")


def test_input_left_automatic_is_not_written_so_existing_configs_keep_their_keys():
    assert ClassicalModelConfig(estimator="bandpower_lr").model_dump(mode="json") == {
        "kind": "classical",
        "estimator": "bandpower_lr",
        "params": {},
    }
    assert ClassicalModelConfig(estimator="MDM", input="windows").model_dump(mode="json")["input"] == "windows"


# -- pyriemann by class name ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PYRIEMANN_ESTIMATORS))
def test_each_pyriemann_name_resolves_to_its_class(name):
    target = resolve_estimator_class(name)
    assert target.__name__ == name and target.__module__ == PYRIEMANN_ESTIMATORS[name]


def test_pyriemann_names_work_in_configs_and_mdm_is_not_mistaken_for_mds():
    assert resolve_estimator_class("MDM") is MDM
    assert ClassicalModelConfig(estimator="TangentSpace").estimator == "TangentSpace"
    assert ClassicalModelConfig(estimator="Covariances").estimator == "Covariances"
    assert ClassicalModelConfig(estimator="MDM").estimator == "MDM"


def test_without_pyriemann_its_names_say_what_to_install_and_suggest_no_unrelated_class(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyriemann", None)  # import pyriemann now raises ImportError
    monkeypatch.setitem(sys.modules, "pyriemann.classification", None)
    with pytest.raises(ConfigError, match=r"'MDM' is pyriemann's pyriemann\.classification\.MDM.*pip install") as error:
        resolve_estimator_class("MDM")
    assert "MDS" not in str(error.value) and "Did you mean" not in str(error.value)


def test_names_that_pyriemann_and_mne_share_ask_for_an_import_path():
    with pytest.raises(
        ConfigError, match=r"'CSP' is ambiguous: 'pyriemann\.spatialfilters\.CSP'.*'mne\.decoding\.CSP'"
    ):
        resolve_estimator_class("CSP")


def test_a_covariance_classifier_alone_on_windows_is_refused_before_any_compute(data, tmp_path):
    X, y, meta, info = data
    cfg = _config(tmp_path, {"mdm": ClassicalModelConfig(estimator="MDM")})
    with pytest.raises(ConfigError, match=r"'MDM' .*reads covariance matrices .*make_pipeline\(Covariances\('oas'\)"):
        Experiment(cfg).run(X, y, meta, output_dir=tmp_path / "out", **info)
    assert not (tmp_path / "out" / "progress").exists()
    # Said on purpose (the windows already are covariance matrices): built as given.
    built = build_window_estimator("MDM", {}, sfreq=160.0, input="windows")
    assert isinstance(built.steps[-1][1], MDM)


# -- a config file: your own class by import path, with input ------------------------------------------------------

_OWN_MODULE = """
import numpy as np
from pyriemann.classification import MDM
from pyriemann.estimation import Covariances
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import make_pipeline


class CovarianceMDM(ClassifierMixin, BaseEstimator):
    def __init__(self, estimator="oas"):
        self.estimator = estimator

    def fit(self, X, y):
        if np.ndim(X) != 3:
            raise ValueError(f"CovarianceMDM needs windows (n, channels, times), got {np.shape(X)}")
        self.pipeline_ = make_pipeline(Covariances(self.estimator), MDM()).fit(X, y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict(self, X):
        return self.pipeline_.predict(X)
"""


def test_your_own_class_by_import_path_from_a_config_file_gets_windows_when_it_says_so(data, tmp_path, monkeypatch):
    X, y, meta, info = data
    name = f"ownmod_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(_OWN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = {
        "cv": {"strategy": "group_kfold", "n_splits": 3, "group_key": "Subject"},
        "metrics": ["accuracy"],
        "cache_dir": str(tmp_path / "cache"),
        "verbose": False,
    }
    flat = {"models": {"mine": {"estimator": f"{name}.CovarianceMDM", "params": {"estimator": "scm"}}}, **settings}
    windows = {"models": {"mine": {**flat["models"]["mine"], "input": "windows"}}, **settings}
    try:
        with neurofm.allow_imports(name):
            refused = ExperimentConfig.from_yaml(yaml.safe_dump(flat))
            cfg = ExperimentConfig.from_yaml(yaml.safe_dump(windows))
        with pytest.raises(Exception, match=r"CovarianceMDM needs windows"):  # its own module: flat by default
            Experiment(refused).run(X, y, meta, **info)
        result = Experiment(cfg).run(X, y, meta, **info)
        assert result.get_detailed_scores()["Fold"].tolist() == [0, 1, 2]
        assert "input: windows" in cfg.to_yaml()
    finally:
        sys.modules.pop(name, None)
