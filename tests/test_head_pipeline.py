"""Heads and tuned baselines inside the folds: standardised frozen heads, grouped inner CV, each fold's fit time."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
    RidgeProbeConfig,
)
from neurofm.estimators.classical import HEAD_DEFINITION, TunedPipeline, standardised_head
from neurofm.experiment import ExperimentRun, _PreparedModel
from neurofm.tasks import _fit


def _grouped(seed=0, n_groups=6, per_group=16, n_features=5):
    """Features whose class shows in the first one; each group shifted as a whole (a subject's offset)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"s{g}" for g in range(n_groups)], per_group)
    y = np.tile(["a", "b"], len(groups) // 2)
    offsets = rng.standard_normal((n_groups, n_features)).repeat(per_group, axis=0)
    X = rng.standard_normal((len(groups), n_features)) + offsets
    X[:, 0] += np.where(y == "a", 1.0, -1.0)
    return X, y, groups


def _tuned(random_state=0) -> TunedPipeline:
    return TunedPipeline(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).steps,
        param_grid={"logisticregression__C": [0.1, 1.0, 10.0]},
        random_state=random_state,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_inner_splits_never_put_one_group_on_both_sides(seed):
    X, y, groups = _grouped(seed)
    tuned = _tuned(seed).fit(X, y, groups=groups)
    assert tuned.inner_cv_ == "StratifiedGroupKFold" and tuned.inner_cv_note_ is None
    assert len(tuned.search_splits_) == 3
    validated = np.concatenate([valid for _, valid in tuned.search_splits_])
    assert sorted(validated) == list(range(len(y)))  # every window validated once
    for train, valid in tuned.search_splits_:
        assert not set(groups[train]) & set(groups[valid])
        assert set(y[train]) == set(y[valid]) == {"a", "b"}  # still stratified
    assert "inner StratifiedGroupKFold(n_splits=3" in tuned.get_model_card_info()["search"]
    # Without groups: the stratified split of before, which mixes them.
    plain = _tuned(seed).fit(X, y)
    assert plain.inner_cv_ == "StratifiedKFold"
    assert any(set(groups[train]) & set(groups[valid]) for train, valid in plain.search_splits_)


def test_fewer_groups_than_inner_folds_split_by_class_and_say_so():
    X, y, groups = _grouped(n_groups=2)
    tuned = _tuned().fit(X, y, groups=groups)
    assert tuned.inner_cv_ == "StratifiedKFold" and len(tuned.search_splits_) == 3
    note = tuned.get_artifact_metadata()["failure_diagnostics"]["inner_cv_not_grouped"]
    assert "2 group(s)" in note and "fewer than the 3 inner folds" in note
    with pytest.raises(ValueError, match="one group per window"):
        _tuned().fit(X, y, groups=groups[:-1])


def test_groups_go_to_a_fit_that_names_them_and_never_through_a_plain_pipeline():
    X, y, groups = _grouped()
    tuned = _fit(_tuned(), False, X, y, groups)
    assert tuned.inner_cv_ == "StratifiedGroupKFold"
    # A plain pipeline's fit(X, y, **params) would route groups to a step (and fail): it gets none.
    plain = _fit(make_pipeline(StandardScaler(), LogisticRegression()), False, X, y, groups)
    assert plain.predict(X).shape == y.shape


def test_a_frozen_heads_embeddings_are_standardised_once():
    head = standardised_head(LogisticRegression())
    assert [type(step).__name__ for _, step in head.steps] == ["StandardScaler", "LogisticRegression"]
    own = make_pipeline(StandardScaler(with_mean=False), LogisticRegression())
    assert standardised_head(own) is own  # the user's own scaler first: not a second one
    nested = standardised_head(make_pipeline(LogisticRegression()))
    assert isinstance(nested, Pipeline) and isinstance(nested.steps[0][1], StandardScaler)
    # Fitted on the training partition only: the scaler's statistics are those of the windows given to fit.
    X, y, _ = _grouped()
    fitted = standardised_head(LogisticRegression()).fit(X[:40] * 1e3, y[:40])
    np.testing.assert_array_equal(fitted.steps[0][1].mean_, (X[:40] * 1e3).mean(axis=0))


def _decisive(model_cfg, estimator, group_key=None) -> dict:
    cv = CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key=group_key) if group_key else CVConfig()
    run = ExperimentRun(ExperimentConfig(models={"m": model_cfg}, verbose=False, cv=cv))
    return run._decisive(_PreparedModel("m", model_cfg, estimator), "data")


def test_records_of_bare_heads_and_ungrouped_inner_splits_are_not_served_for_the_new_definitions():
    backbone = FoundationEmbeddingModelConfig(model_key="cbramod", weights="random")
    frozen = FrozenBackboneDecoderConfig(backbone=backbone, head=ClassicalModelConfig(estimator="LogisticRegression"))
    assert _decisive(frozen, None)["head_definition"] == HEAD_DEFINITION == 2
    ridge = FrozenBackboneDecoderConfig(backbone=backbone, head=RidgeProbeConfig())
    assert "head_definition" not in _decisive(ridge, None)  # the ridge probe standardised already: unchanged
    classical = ClassicalModelConfig(estimator="LogisticRegression", input="flat")
    assert set(_decisive(classical, None)) == {"name", "model", "task", "metrics", "cv", "random_state", "data"}
    tuned = ClassicalModelConfig(estimator="bandpower_lr")
    assert "inner_cv" not in _decisive(tuned, _tuned())  # without groups the inner splits are as they were
    assert _decisive(tuned, _tuned(), group_key="Subject")["inner_cv"] == "grouped"
    # A multilabel task's per-label tuning, and the probes' inner CV and validation split, keep groups apart now.
    from neurofm.configs import AttentiveProbeConfig
    from neurofm.estimators.classical import PerLabelClassifier

    assert _decisive(tuned, PerLabelClassifier(_tuned()), group_key="Subject")["inner_cv"] == "grouped"
    assert "inner_cv" not in _decisive(tuned, PerLabelClassifier(_tuned()))
    assert _decisive(ridge, None, group_key="Subject")["inner_cv"] == "grouped"
    assert "inner_cv" not in _decisive(ridge, None)
    tokens = FoundationEmbeddingModelConfig(model_key="cbramod", weights="random", pooling="flatten")
    attentive = FrozenBackboneDecoderConfig(backbone=tokens, head=AttentiveProbeConfig())
    assert _decisive(attentive, None, group_key="Subject")["inner_cv"] == "grouped"
    # A ridge probe's outputs are decision values now (no ece/brier): its earlier records are not served.
    assert _decisive(ridge, None)["outputs"] == "decision_values"
    assert "outputs" not in _decisive(frozen, None)
