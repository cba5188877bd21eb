"""Pydantic experiment configs: strictness, YAML round trips and helpful errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from neurofm.configs import (
    GROUP_STRATEGIES,
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
)
from neurofm.exceptions import ConfigError, UnknownModelError


def _full_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="classification",
        models={
            "bp": ClassicalModelConfig(estimator="bandpower_lr", params={"C": 0.5}),
            "svc": ClassicalModelConfig(estimator="sklearn.svm.SVC", params={"kernel": "linear"}),
            "fm": FrozenBackboneDecoderConfig(
                backbone=FoundationEmbeddingModelConfig(
                    model_key="labram", weights="random", pooling="cls", batch_size=8, model_kwargs={"depth": 2}
                ),
                head=ClassicalModelConfig(estimator="RidgeClassifier", params={"alpha": 2.0}),
            ),
        },
        metrics=["balanced_accuracy", "roc_auc"],
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject", shuffle=False),
        cache_dir="/tmp/somewhere",
        random_state=7,
        verbose=False,
    )


# -- unknown keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (ExperimentConfig, {"models": {"m": {"estimator": "LogisticRegression"}}, "n_jobs": 2}),
        (CVConfig, {"strategy": "kfold", "n_split": 3}),
        (ClassicalModelConfig, {"estimator": "LogisticRegression", "param": {"C": 1.0}}),
        (FoundationEmbeddingModelConfig, {"model_key": "cbramod", "pool": "mean"}),
        (FrozenBackboneDecoderConfig, {"backbone": {"model_key": "cbramod"}, "heads": {"estimator": "SVC"}}),
    ],
)
def test_unknown_key_is_rejected_at_every_level(cls, kwargs):
    typo = next(k for k in kwargs if k not in cls.model_fields)
    with pytest.raises(ValidationError) as info:
        cls(**kwargs)
    assert typo in str(info.value)
    assert "extra" in str(info.value).lower()


@pytest.mark.parametrize(
    ("models", "where"),
    [
        ({"m": {"estimator": "LogisticRegression", "parms": {}}}, r"classical\.parms"),
        ({"m": {"backbone": {"model_key": "cbramod", "poolin": "mean"}}}, r"backbone\.poolin"),
        ({"m": {"backbone": {"model_key": "cbramod"}, "head": {"estimator": "SVC", "C": 1.0}}}, r"head\.classical\.C"),
    ],
)
def test_unknown_key_nested_inside_experiment_is_rejected(models, where):
    with pytest.raises(ValidationError, match=rf"models\.m\.\S*{where}\s+Extra inputs are not permitted"):
        ExperimentConfig(models=models)


def test_unknown_key_in_cv_of_experiment_yaml_is_rejected():
    text = "models:\n  m:\n    estimator: LogisticRegression\ncv:\n  strategy: kfold\n  nsplits: 3\n"
    # From a file, every problem is neurofm's own ConfigError, naming the field.
    with pytest.raises(ConfigError, match=r"cv\.nsplits: Extra inputs are not permitted"):
        ExperimentConfig.from_yaml(text)


def test_invalid_value_rejected_on_assignment():
    cfg = CVConfig(strategy="kfold")
    with pytest.raises(ValidationError, match=r"n_splits\s+Input should be greater than or equal to 2"):
        cfg.n_splits = 1  # below the minimum of 2, validated on assignment
    assert cfg.n_splits == 5


# -- YAML round trips ---------------------------------------------------------------


def test_yaml_round_trip_from_string():
    cfg = _full_config()
    text = cfg.to_yaml()
    assert isinstance(text, str) and "stratified_group_kfold" in text
    back = ExperimentConfig.from_yaml(text)
    assert back == cfg
    assert isinstance(back.models["fm"], FrozenBackboneDecoderConfig)
    assert isinstance(back.models["bp"], ClassicalModelConfig)
    assert back.models["fm"].backbone.model_kwargs == {"depth": 2}


@pytest.mark.parametrize("as_path", [True, False])
def test_yaml_round_trip_from_file(tmp_path, as_path):
    cfg = _full_config()
    path = tmp_path / "experiment.yaml"
    text = cfg.to_yaml(path if as_path else str(path))
    assert path.read_text() == text
    back = ExperimentConfig.from_yaml(path if as_path else str(path))
    assert back == cfg


def test_yaml_round_trip_of_defaults():
    cfg = ExperimentConfig(models={"lr": ClassicalModelConfig(estimator="LogisticRegression")})
    back = ExperimentConfig.from_yaml(cfg.to_yaml())
    assert back == cfg
    assert back.resolved_metrics == ["accuracy", "balanced_accuracy", "roc_auc"]


def test_yaml_without_kind_tags_is_discriminated_by_keys(tmp_path):
    text = """
task: classification
models:
  fm:
    backbone:
      model_key: cbramod
      weights: random
    head:
      estimator: LogisticRegression
      params:
        C: 0.1
  baseline:
    estimator: bandpower_lr
cv:
  strategy: group_kfold
  n_splits: 3
  group_key: Subject
"""
    assert "kind" not in text
    cfg = ExperimentConfig.from_yaml(text)
    assert isinstance(cfg.models["fm"], FrozenBackboneDecoderConfig)
    assert cfg.models["fm"].backbone.model_key == "cbramod"
    assert cfg.models["fm"].head.params == {"C": 0.1}
    assert isinstance(cfg.models["baseline"], ClassicalModelConfig)
    assert cfg.models["baseline"].estimator == "bandpower_lr"
    assert cfg.cv.group_key == "Subject"
    # The same text from a file gives the same config, and it round-trips (with tags now).
    path = tmp_path / "no_kind.yml"
    path.write_text(text)
    assert ExperimentConfig.from_yaml(path) == cfg
    assert ExperimentConfig.from_yaml(cfg.to_yaml()) == cfg


def test_yaml_that_is_not_a_mapping_is_a_config_error():
    from neurofm.exceptions import ConfigError

    with pytest.raises(ConfigError, match="The YAML config must be a mapping of keys to values, got list"):
        ExperimentConfig.from_yaml("- a\n- b\n")


# -- semantic checks ----------------------------------------------------------------


@pytest.mark.parametrize("strategy", GROUP_STRATEGIES)
def test_group_strategy_without_group_key_is_rejected(strategy):
    with pytest.raises(
        ValidationError,
        match=rf"CV strategy '{strategy}' splits by group but no group_key was given; "
        r"set group_key to the sample_metadata column",
    ):
        CVConfig(strategy=strategy, n_splits=3)
    assert CVConfig(strategy=strategy, n_splits=3, group_key="Subject").group_key == "Subject"


def test_unknown_metric_is_rejected_with_a_suggestion():
    with pytest.raises(ValidationError) as info:
        ExperimentConfig(models={"m": {"estimator": "LogisticRegression"}}, metrics=["balanced_acuracy"])
    message = str(info.value)
    assert "balanced_acuracy" in message
    assert "Did you mean" in message and "'balanced_accuracy'" in message


def test_regression_metric_is_rejected_for_classification():
    with pytest.raises(ValidationError, match="'r2' is not available for task='classification'"):
        ExperimentConfig(models={"m": {"estimator": "LogisticRegression"}}, metrics=["r2"])


@pytest.mark.parametrize(
    "cv",
    [
        {"strategy": "stratified_kfold"},
        {"strategy": "stratified_group_kfold", "group_key": "Subject"},
    ],
)
def test_regression_with_stratified_strategy_is_rejected(cv):
    with pytest.raises(
        ValidationError,
        match=rf"CV strategy '{cv['strategy']}' stratifies by class and cannot be used "
        r"for regression; use 'kfold' or 'group_kfold'",
    ):
        ExperimentConfig(task="regression", models={"m": {"estimator": "Ridge"}}, cv=cv)
    ok = ExperimentConfig(task="regression", models={"m": {"estimator": "Ridge"}}, cv={"strategy": "kfold"})
    assert ok.resolved_metrics == ["r2", "mae", "rmse", "pearson"]


def test_empty_models_are_rejected():
    with pytest.raises(ValidationError, match="models is empty"):
        ExperimentConfig(models={})


def test_unknown_model_key_suggests_the_closest_key():
    with pytest.raises((UnknownModelError, ValidationError)) as info:
        FoundationEmbeddingModelConfig(model_key="cbramodd")
    assert "Did you mean 'cbramod'" in str(info.value)


def test_unknown_model_key_inside_experiment_is_rejected():
    with pytest.raises(
        (UnknownModelError, ValidationError), match=r"Unknown model key 'cbramodd'\. Did you mean 'cbramod'"
    ):
        ExperimentConfig(models={"fm": {"backbone": {"model_key": "cbramodd"}}})


def test_model_key_is_case_insensitive_and_normalised():
    assert FoundationEmbeddingModelConfig(model_key="CBraMod").model_key == "cbramod"


def test_unknown_estimator_is_rejected_with_a_suggestion():
    with pytest.raises(ValidationError) as info:
        ClassicalModelConfig(estimator="LogisticRegresion")
    message = str(info.value)
    assert "Unknown estimator 'LogisticRegresion'" in message
    assert "Did you mean 'LogisticRegression'" in message


def test_estimator_as_import_path_is_accepted():
    cfg = ClassicalModelConfig(estimator="sklearn.svm.SVC", params={"C": 2.0})
    assert cfg.estimator == "sklearn.svm.SVC"
    from sklearn.svm import SVC

    from neurofm.estimators.classical import resolve_estimator_class

    assert resolve_estimator_class(cfg.estimator) is SVC


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("sklearn.svm.NoSuchSVC", r"Could not import estimator 'sklearn\.svm\.NoSuchSVC'.*Check the import path"),
        ("sklearn.utils.check_array", r"'sklearn\.utils\.check_array' is not an estimator class with a fit method"),
    ],
)
def test_bad_import_path_is_rejected(path, fragment):
    with pytest.raises(ValidationError, match=fragment):
        ClassicalModelConfig(estimator=path)


def test_a_package_of_ones_own_that_cannot_be_imported_gets_the_ways_to_make_it_importable():
    import neurofm

    with neurofm.allow_imports("mylab_not_installed"), pytest.raises(ValidationError) as info:
        ClassicalModelConfig(estimator="mylab_not_installed.decoders.CovarianceMDM")
    message = str(info.value)
    assert "pip install -e path/to/mylab_not_installed" in message
    assert "PYTHONPATH=path/to/parent-of-mylab_not_installed" in message


def test_cls_pooling_rejected_for_cbramod_but_accepted_for_labram():
    with pytest.raises(ValidationError) as info:
        FoundationEmbeddingModelConfig(model_key="cbramod", pooling="cls")
    message = str(info.value)
    assert "pooling='cls'" in message and "'cbramod'" in message and "'mean'" in message
    cfg = FoundationEmbeddingModelConfig(model_key="labram", pooling="cls")
    assert cfg.pooling == "cls"


def test_unknown_pooling_is_rejected():
    with pytest.raises(ValidationError, match=r"pooling\s+Input should be 'mean', 'max', 'flatten' or 'cls'"):
        FoundationEmbeddingModelConfig(model_key="labram", pooling="median")


def test_frozen_decoder_default_head_is_logistic_regression():
    cfg = FrozenBackboneDecoderConfig(backbone={"model_key": "cbramod"})
    assert cfg.head.estimator == "LogisticRegression"
    assert cfg.kind == "frozen_backbone" and cfg.backbone.kind == "foundation_embedding"


def test_to_yaml_writes_a_file_path_given_as_path_object(tmp_path):
    cfg = _full_config()
    target = Path(tmp_path) / "sub.yaml"
    cfg.to_yaml(target)
    assert target.is_file()
    assert "kind: frozen_backbone" in target.read_text()
