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


def _regression_tokens(n, seed):
    """Rows of flattened tokens whose target, about N(0, 1), shifts a few features of token 5."""
    rng = np.random.default_rng(seed)
    positions = np.random.default_rng(99).normal(size=(N_TOKENS, TOKEN_DIM)) * 2
    target = rng.normal(size=n)
    X = positions[None] + rng.normal(size=(n, N_TOKENS, TOKEN_DIM))
    X[:, 5, :4] += target[:, None]
    return X.reshape(n, -1).astype(np.float32), target


def test_huber_keeps_to_the_clean_windows_where_mse_follows_a_few_outlying_targets():
    X, y = _regression_tokens(160, seed=0)
    X_test, y_test = _regression_tokens(200, seed=1)
    y = y.copy()
    y[::20] += 500.0  # 8 of 160 targets recorded 500 units off
    fitted = {
        loss: _probe(task="regression", n_heads=2, max_epochs=20, lr=1e-2, loss=loss).fit(X, y)
        for loss in ("mse", "huber")
    }
    errors = {loss: np.median(np.abs(probe.predict(X_test) - y_test)) for loss, probe in fitted.items()}
    # MSE is pulled toward the outliers (its optimum, the mean, sits 25 units up); Huber's gradient is capped.
    assert errors["huber"] < 1.0 < 10.0 < errors["mse"]
    assert {r["loss"] for r in fitted["huber"].history_} == {"huber"}
    assert {r["loss"] for r in fitted["mse"].history_} == {"mse"}


def test_auto_names_each_task_s_loss_and_is_mse_for_regression():
    X, labels = _tokens(n=60)
    for task, y, name in [
        ("classification", labels, "cross_entropy"),
        ("multilabel", np.column_stack([labels, 1 - labels]), "binary_cross_entropy"),
        ("regression", labels * 3.0, "mse"),
    ]:
        auto = _probe(task=task, max_epochs=2).fit(X, y)
        assert [r["loss"] for r in auto.history_] == [name, name]
    mse = _probe(task="regression", max_epochs=2, loss="mse").fit(X, labels * 3.0)
    np.testing.assert_array_equal(mse.predict(X), auto.predict(X))  # auto: the last fit, of the regression


def test_regression_losses_are_refused_for_classification_and_multilabel():
    X, y = _tokens(n=40)
    with pytest.raises(
        ConfigError,
        match=r"loss='huber'\) is a regression loss, and the task is classification; use "
        r"loss='auto' \(cross-entropy\), or set task='regression'",
    ):
        _probe(loss="huber").fit(X, y)
    with pytest.raises(ConfigError, match=r"loss='mse'\) is a regression loss.*multilabel; use loss='auto'"):
        _probe(task="multilabel", loss="mse").fit(X, np.column_stack([y, 1 - y]))
    with pytest.raises(ValidationError, match="loss"):
        AttentiveProbeConfig(loss="l1")


def test_the_config_refuses_a_regression_loss_before_extracting_any_token(tmp_path):
    with pytest.raises(ValidationError, match=r"model 'attentive': AttentiveProbeConfig\(loss='huber'\) is a regr"):
        _experiment({"attentive": _attentive_config(loss="huber")}, tmp_path)


def test_a_default_loss_is_not_written_so_earlier_configs_and_record_keys_read_as_before():
    assert not {"loss", "huber_delta"} & set(AttentiveProbeConfig().model_dump(mode="json"))
    huber = AttentiveProbeConfig(loss="huber", huber_delta=2.0)
    written = huber.model_dump(mode="json")
    assert (written["loss"], written["huber_delta"]) == ("huber", 2.0)
    assert AttentiveProbeConfig.model_validate(written) == huber


def test_with_groups_the_validation_windows_are_whole_groups_that_training_never_sees(monkeypatch):
    from neurofm.estimators.classical import takes_groups

    X, y = _tokens(n=120)
    groups = np.repeat([f"s{i:02d}" for i in range(12)], 10)  # 12 subjects of 10 windows each
    splits = []
    train = AttentiveProbe._train

    def recording_the_split(self, module, inputs, targets, train_rows, val_rows, *rest):
        splits.append((train_rows, val_rows))
        return train(self, module, inputs, targets, train_rows, val_rows, *rest)

    monkeypatch.setattr(AttentiveProbe, "_train", recording_the_split)
    _probe(max_epochs=1).fit(X, y, groups=groups)
    _probe(max_epochs=1).fit(X, y)
    _probe(max_epochs=1).fit(X, y, groups=np.zeros(len(y)))  # one group: nothing to keep apart
    (grouped_train, grouped_val), (plain_train, plain_val), (one_train, one_val) = splits
    assert len(grouped_val) and not set(groups[grouped_train]) & set(groups[grouped_val])
    np.testing.assert_array_equal(np.sort(np.concatenate([grouped_train, grouped_val])), np.arange(len(y)))
    assert set(groups[plain_train]) & set(groups[plain_val])  # without groups, by window: subjects on both sides
    np.testing.assert_array_equal(one_val, plain_val)
    assert takes_groups(AttentiveProbe())  # so an experiment with a group_key hands the probe its groups


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
