"""The attentive probe: learned-query attention over a frozen backbone's cached tokens."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from neurofm import Experiment
from neurofm.configs import (
    AttentiveProbeConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
)
from neurofm.estimators.attentive_probe import AttentiveProbe
from neurofm.exceptions import ConfigError
from neurofm.export.heads import write_head
from neurofm.models import get_model_spec

N_TOKENS, TOKEN_DIM = 12, 16


def _tokens(n=200, seed=0):
    """Rows of flattened tokens; the class shifts a few features of token 5 only.

    Each token position has its own fixed content (as a backbone's positional
    embeddings give it), so that a query can find the token that carries the class.
    """
    rng = np.random.default_rng(seed)
    positions = np.random.default_rng(99).normal(size=(N_TOKENS, TOKEN_DIM)) * 2
    y = rng.integers(0, 2, n)
    X = positions[None] + rng.normal(size=(n, N_TOKENS, TOKEN_DIM))
    X[:, 5, :4] += (2 * y[:, None] - 1) * 1.0
    return X.reshape(n, -1).astype(np.float32), y


def _probe(**params):
    return AttentiveProbe(**{"token_dim": TOKEN_DIM, "n_heads": 4, "max_epochs": 30, "random_state": 0} | params)


def test_the_probe_finds_the_one_token_that_carries_the_class_where_mean_pooling_misses_it():
    X, y = _tokens()
    X_test, y_test = _tokens(seed=1)
    probe = _probe().fit(X, y)
    attentive = np.mean(probe.predict(X_test) == y_test)
    mean = LogisticRegression().fit(X.reshape(len(X), N_TOKENS, -1).mean(axis=1), y)
    pooled = np.mean(mean.predict(X_test.reshape(len(X_test), N_TOKENS, -1).mean(axis=1)) == y_test)
    assert attentive > 0.85 and attentive > pooled + 0.1
    proba = probe.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2) and np.allclose(proba.sum(axis=1), 1)
    assert probe.n_tokens_ == N_TOKENS and probe.history_[probe.best_epoch_]["val_loss"] is not None


def test_the_same_seed_gives_the_same_predictions_and_clone_keeps_the_parameters():
    X, y = _tokens(n=120)
    first = _probe(max_epochs=5).fit(X, y).predict_proba(X)
    again = clone(_probe(max_epochs=5)).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, _probe(max_epochs=5).set_params(random_state=1).fit(X, y).predict_proba(X))


def test_regression_predicts_on_the_target_scale():
    X, labels = _tokens(n=120)
    X_test, test_labels = _tokens(n=120, seed=1)
    probe = AttentiveProbe(task="regression", token_dim=TOKEN_DIM, n_heads=2, max_epochs=20, lr=1e-2, random_state=0)
    predicted = probe.fit(X, 10.0 + 3.0 * labels).predict(X_test)
    assert not hasattr(probe, "predict_proba")
    assert np.corrcoef(predicted, test_labels)[0, 1] > 0.7 and abs(predicted.mean() - 11.5) < 1.0


def test_bad_shapes_and_head_counts_are_refused_with_the_fix():
    X, y = _tokens(n=40)
    with pytest.raises(ConfigError, match="pooling='flatten'"):
        AttentiveProbe(token_dim=15, n_heads=1).fit(X, y)
    with pytest.raises(ConfigError, match=r"n_heads=3 does not divide token_dim=16.*one of 1, 2, 4, 8, and 16"):
        AttentiveProbe(token_dim=16, n_heads=3).fit(X, y)
    with pytest.raises(ValidationError, match="n_heads=3 does not divide token_dim=200"):
        AttentiveProbeConfig(token_dim=200, n_heads=3)


def _attentive_config(pooling="flatten", **head):
    return FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key="cbramod", weights="random", pooling=pooling, model_kwargs=get_model_spec("cbramod").tiny_kwargs
        ),
        head=AttentiveProbeConfig(max_epochs=3, batch_size=8, **head),
    )


def _experiment(models, tmp_path):
    return Experiment(
        ExperimentConfig(
            models=models,
            cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),
            cache_dir=str(tmp_path / "cache"),
            verbose=False,
        )
    )


def _artifacts(result, artifact_type):
    rows = result.get_model_artifacts(artifact_type=artifact_type, model="attentive")
    return dict(zip(rows["ArtifactKey"], rows["ArtifactValue"], strict=True))


def test_in_an_experiment_it_reads_cached_tokens_and_records_attentive_pooling(small_dataset, tmp_path):
    X, y, meta, info = small_dataset
    first = _experiment({"attentive": _attentive_config()}, tmp_path).run(X, y, sample_metadata=meta, **info)
    assert _artifacts(first, "embedding_cache")["misses"] == len(X)
    assert _artifacts(first, "head") == {"pooling": "attentive", "token_dim": 200}
    assert _artifacts(first, "backbone")["pooling"] == "flatten"  # what the cache holds: every token
    assert _artifacts(first, "attentive_probe")["pooling"] == "attentive"  # and each fold's training, recorded
    assert len(first.scores.query("Model == 'attentive'")) > 0
    # Another head setting: the tokens come from the cache, the backbone is never loaded.
    second = _experiment({"attentive": _attentive_config(n_queries=2)}, tmp_path).run(
        X, y, sample_metadata=meta, **info
    )
    assert _artifacts(second, "embedding_cache")["misses"] == 0
    assert _artifacts(second, "backbone")["loaded"] is False


def test_the_experiment_refuses_pooled_embeddings_and_heads_that_do_not_divide_the_tokens(small_dataset, tmp_path):
    X, y, meta, info = small_dataset
    with pytest.raises(ConfigError, match="set the backbone's pooling='flatten'"):
        _experiment({"attentive": _attentive_config(pooling="mean")}, tmp_path).run(X, y, sample_metadata=meta, **info)
    with pytest.raises(ConfigError, match="n_heads=7 does not divide token_dim=200 \\('cbramod'"):
        _experiment({"attentive": _attentive_config(n_heads=7)}, tmp_path).run(X, y, sample_metadata=meta, **info)


def test_the_head_round_trips_through_yaml(tmp_path):
    cfg = ExperimentConfig(models={"attentive": _attentive_config(n_queries=2, n_heads=8)}, cache_dir=str(tmp_path))
    cfg.to_yaml(tmp_path / "c.yaml")
    assert "kind: attentive_probe" in (tmp_path / "c.yaml").read_text()
    back = ExperimentConfig.from_yaml(tmp_path / "c.yaml")
    assert isinstance(back.models["attentive"].head, AttentiveProbeConfig) and back == cfg


def test_a_fitted_probe_pickles_but_is_not_exported_yet(tmp_path):
    X, y = _tokens(n=60)
    probe = _probe(max_epochs=2).fit(X, y)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(probe)).predict(X), probe.predict(X))
    with pytest.raises(ConfigError, match="cannot be exported.*AttentiveProbe"):
        write_head(tmp_path, probe)


# -- task="multilabel" ------------------------------------------------------------------------------------------

LABEL_TOKENS = (2, 5, 8)  # label k moves features 4k to 4k + 3 of its own token


def _multilabel_tokens(n=200, seed=0):
    """Rows of flattened tokens with three independent 0/1 labels, each shifting features of a token of its own."""
    rng = np.random.default_rng(seed)
    positions = np.random.default_rng(99).normal(size=(N_TOKENS, TOKEN_DIM)) * 2
    y = (rng.random((n, len(LABEL_TOKENS))) < 0.5).astype(int)
    X = positions[None] + rng.normal(size=(n, N_TOKENS, TOKEN_DIM))
    for k, token in enumerate(LABEL_TOKENS):
        X[:, token, 4 * k : 4 * k + 4] += 2 * y[:, k, None] - 1
    return X.reshape(n, -1).astype(np.float32), y


def _macro_auc(probe, X, y):
    """Macro ROC AUC over the labels, from the scores the experiment's multilabel path reads off the probe."""
    from neurofm.metrics import score  # as the experiment scores a multilabel fold
    from neurofm.tasks import label_scores  # as the experiment reads a multilabel model's probabilities

    return score("roc_auc", y, probe.predict(X), label_scores(probe, X), ["a", "b", "c"])


def test_multilabel_learns_each_label_and_shuffled_labels_score_at_chance():
    from sklearn.base import is_classifier

    X, y = _multilabel_tokens()
    X_test, y_test = _multilabel_tokens(seed=1)
    probe = _probe(task="multilabel", lr=1e-2).fit(X, y)
    proba = probe.predict_proba(X_test)
    assert proba.shape == y_test.shape and np.all((proba > 0) & (proba < 1))
    assert not np.allclose(proba.sum(axis=1), 1)  # one sigmoid per label, not a softmax over them
    predicted = probe.predict(X_test)
    assert predicted.dtype == np.int64
    np.testing.assert_array_equal(predicted, (proba >= 0.5).astype(int))
    assert _macro_auc(probe, X_test, y_test) > 0.85
    assert list(probe.classes_) == [0, 1, 2] and is_classifier(probe)
    val_losses = [record["val_loss"] for record in probe.history_]
    assert probe.best_epoch_ == int(np.argmin(val_losses))  # the epoch of the smallest validation BCE is kept

    # Labels shuffled by whole rows, in training and test alike: nothing to learn, so nothing to score either.
    rng = np.random.default_rng(3)
    shuffled = _probe(task="multilabel", lr=1e-2).fit(X, y[rng.permutation(len(y))])
    assert abs(_macro_auc(shuffled, X_test, y_test[rng.permutation(len(y_test))]) - 0.5) < 0.1
    # No signal in the shuffled labels: the validation loss stops falling and training stops early.
    assert len(shuffled.history_) < shuffled.max_epochs and shuffled.stopped_.startswith("no smaller validation loss")


def test_multilabel_balanced_class_weight_gives_a_rare_label_more_positives():
    X, y = _multilabel_tokens(n=160)
    rare = y.copy()
    rare[:, 0] = 0
    rare[np.flatnonzero(y[:, 0])[:12], 0] = 1  # 12 positives of 160
    plain = _probe(task="multilabel", class_weight=None, max_epochs=10, lr=1e-2).fit(X, rare)
    weighted = _probe(task="multilabel", class_weight="balanced", max_epochs=10, lr=1e-2).fit(X, rare)
    # pos_weight (negatives over positives, about 12) lifts the rare label's probabilities.
    assert weighted.predict_proba(X)[:, 0].mean() > plain.predict_proba(X)[:, 0].mean() + 0.2


@pytest.mark.parametrize(
    ("make_y", "match"),
    [
        (lambda y: y[:, 0], r"needs y of shape \(n_windows, n_labels\).*got shape \(40,\)"),
        (lambda y: np.where(y == 1, 2, 0), r"label column 0 holds 0, 2.*Binarise it"),
        (
            lambda y: pd.DataFrame({"alpha": y[:, 0], "beta": np.zeros(len(y), int), "theta": y[:, 2]}),
            r"label 'beta' is 0 in all 40 training windows.*stratified_kfold.*or drop that column of y",
        ),
        (lambda y: np.column_stack([y[:, 0], np.ones(len(y), int)]), r"label column 1 is 1 in all 40"),
    ],
)
def test_bad_multilabel_targets_are_refused_naming_the_label_and_the_fix(make_y, match):
    from neurofm.exceptions import DataValidationError

    X, y = _multilabel_tokens(n=40)
    with pytest.raises(DataValidationError, match=match):
        _probe(task="multilabel", max_epochs=1).fit(X, make_y(y))
