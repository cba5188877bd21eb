"""task="multilabel": several binary targets per window, learnable ones scored above chance, shuffled ones at it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurofm import Experiment, ExperimentResult
from neurofm.configs import (
    AttentiveProbeConfig,
    CheckpointConfig,
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
    NeuralFineTuneConfig,
    RidgeProbeConfig,
    ScratchModelConfig,
    TrainerConfig,
)
from neurofm.cv import label_combinations
from neurofm.exceptions import ConfigError, DataValidationError
from neurofm.metrics import greater_is_better, score
from neurofm.models import get_model_spec
from neurofm.report import write_report
from neurofm.tasks import permute_labels

LABELS = ["alpha_front", "beta_centre", "theta_back"]
SFREQ, N_TIMES = 160.0, 640
#: Each label switches on a rhythm (Hz) in its own three channels of the 19.
RHYTHMS = {0: (10.0, [0, 1, 2]), 1: (22.0, [8, 9, 10]), 2: (6.0, [16, 17, 18])}


@pytest.fixture(scope="module")
def multilabel_data(small_dataset):
    """96 windows of 19-channel noise (volts, 4 subjects); each label, drawn at random, adds its rhythm."""
    _, _, _, info = small_dataset
    rng = np.random.default_rng(0)
    n = 96
    y = (rng.random((n, len(LABELS))) < 0.5).astype(int)
    X = rng.standard_normal((n, 19, N_TIMES)) * 10e-6
    t = np.arange(N_TIMES) / SFREQ
    for k, (freq, channels) in RHYTHMS.items():
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        X[:, channels, :] += y[:, k, None, None] * 20e-6 * np.sin(2 * np.pi * freq * t + phase)
    meta = pd.DataFrame({"Subject": np.repeat(np.arange(4), n // 4)})
    return X.astype(np.float32), pd.DataFrame(y, columns=LABELS), meta, info


def _tiny_backbone():
    return FoundationEmbeddingModelConfig(
        model_key="cbramod", weights="random", model_kwargs=get_model_spec("cbramod").tiny_kwargs
    )


def _run(data, tmp_path, models, y=None, **kw):
    X, labels, meta, info = data
    output_dir = kw.pop("output_dir", None)
    kw.setdefault("cv", CVConfig(strategy="stratified_kfold", n_splits=3))
    cfg = ExperimentConfig(
        task="multilabel",
        models=models,
        metrics=["roc_auc", "average_precision", "f1_macro", "f1_micro", "hamming_loss", "subset_accuracy"]
        + ["roc_auc_per_class", "f1_per_class"],
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
        **kw,
    )
    return Experiment(cfg).run(X, labels if y is None else y, sample_metadata=meta, output_dir=output_dir, **info)


def _mean(result, model, metric):
    scores = result.scores
    return float(scores[(scores["Model"] == model) & (scores["Metric"] == metric)]["Value"].mean())


MODELS = {
    "bandpower": ClassicalModelConfig(estimator="bandpower_lr"),
    "frozen": FrozenBackboneDecoderConfig(backbone=_tiny_backbone()),  # LogisticRegression head, one per label
}


def test_learnable_labels_score_well_above_chance_and_shuffled_rows_at_chance(multilabel_data, tmp_path):
    learned = _run(multilabel_data, tmp_path, MODELS, output_dir=tmp_path / "out")
    for model in MODELS:
        assert _mean(learned, model, "roc_auc") > 0.7, model
        for label in LABELS:  # per-label scores, named by the DataFrame's columns
            assert _mean(learned, model, f"roc_auc[{label}]") > 0.6, (model, label)
            assert np.isfinite(_mean(learned, model, f"f1[{label}]"))
    assert _mean(learned, "bandpower", "roc_auc") > 0.9  # power in a band and channels is what bandpower reads
    assert _mean(learned, "bandpower", "hamming_loss") < 0.25

    # Whole rows shuffled: each window keeps a real combination of labels, but no longer its own.
    _, labels, _, _ = multilabel_data
    shuffled = labels.iloc[np.random.default_rng(1).permutation(len(labels))].reset_index(drop=True)
    chance = _run(multilabel_data, tmp_path, MODELS, y=shuffled)
    for model in MODELS:
        # 3 folds x 3 labels of 32 test windows: one label's AUC has a standard error of about 0.1 under the null
        # (Hanley & McNeil), the mean of nine about 0.035 (less independent than that: +-0.15 is over 4 of them).
        assert abs(_mean(chance, model, "roc_auc") - 0.5) < 0.15, model
        assert _mean(chance, model, "roc_auc") < _mean(learned, model, "roc_auc") - 0.15
    # The per-label columns of the predictions survive saving and loading; the report draws no single-label plot.
    _check_saved(learned, multilabel_data, tmp_path / "out")


def test_a_fine_tuned_network_trains_with_bce_and_predicts_each_label_probability(multilabel_data, tmp_path):
    X, labels, meta, info = multilabel_data
    half = (X[::2], labels.iloc[::2].reset_index(drop=True), meta.iloc[::2].reset_index(drop=True), info)
    model = NeuralFineTuneConfig(
        model_key="cbramod",
        weights="random",
        train_mode="frozen",  # the head alone trains: the loss and the outputs are what this tests
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        trainer=TrainerConfig(max_epochs=1, batch_size=16, early_stopping_patience=None),
        checkpoints=CheckpointConfig(save="best", directory=str(tmp_path / "ckpt")),
    )
    result = _run(half, tmp_path, {"tuned": model}, cv=CVConfig(strategy="kfold", n_splits=2))
    preds = result.predictions
    proba = preds[[f"proba[{label}]" for label in LABELS]].to_numpy()
    assert proba.shape == (len(half[0]), 3) and np.all((proba > 0) & (proba < 1))
    assert not np.allclose(proba.sum(axis=1), 1)  # one sigmoid per label, not a softmax over them
    for label in LABELS:
        predicted = preds[f"y_pred[{label}]"].to_numpy()
        np.testing.assert_array_equal(predicted, (preds[f"proba[{label}]"] >= 0.5).astype(int))
    history = result.get_model_artifacts(artifact_type="training_history")
    assert len(history) == 2  # one epoch per fold
    assert np.isfinite(_mean(result, "tuned", "roc_auc"))


def test_ridge_and_attentive_probes_and_a_scratch_network_decode_several_labels_in_an_experiment(
    multilabel_data, tmp_path
):
    tokens = FoundationEmbeddingModelConfig(
        model_key="cbramod", weights="random", pooling="flatten", model_kwargs=get_model_spec("cbramod").tiny_kwargs
    )
    models = {
        "ridge": FrozenBackboneDecoderConfig(backbone=_tiny_backbone(), head=RidgeProbeConfig()),
        "attentive": FrozenBackboneDecoderConfig(backbone=tokens, head=AttentiveProbeConfig(max_epochs=30)),
        "shallow": ScratchModelConfig(model="ShallowFBCSPNet", trainer=TrainerConfig(max_epochs=15, batch_size=16)),
    }
    result = _run(multilabel_data, tmp_path, models, n_permutations=3)
    for model in models:
        preds = result.predictions[result.predictions["Model"] == model]
        if model == "ridge":  # its outputs are the ridge's fitted 0/1 targets, thresholded at 0.5: no probabilities
            outputs = preds[[f"decision[{label}]" for label in LABELS]].to_numpy()
            np.testing.assert_array_equal(preds[[f"y_pred[{label}]" for label in LABELS]], (outputs > 0.5).astype(int))
            assert preds[[f"proba[{label}]" for label in LABELS]].isna().all(axis=None)
            continue
        proba = preds[[f"proba[{label}]" for label in LABELS]].to_numpy()
        assert np.all((proba > 0) & (proba < 1)) and not np.allclose(proba.sum(axis=1), 1)  # a sigmoid per label
        for label in LABELS:
            predicted = preds[f"y_pred[{label}]"].to_numpy()
            np.testing.assert_array_equal(predicted, (preds[f"proba[{label}]"] >= 0.5).astype(int))
    methods = result.get_model_artifacts(artifact_type="permutation_test", model="ridge")
    assert "closed form (one decomposition per fold)" in set(methods["ArtifactValue"].astype(str))
    # A band's power in its own channels: what a network trained from scratch learns from 64 windows
    assert _mean(result, "shallow", "roc_auc") > 0.7
    assert np.isfinite(_mean(result, "attentive", "roc_auc"))


def test_group_and_aggregate_scores_read_every_label(multilabel_data, tmp_path):
    X, labels, meta, info = multilabel_data
    # Windows grouped by their combination of labels: a group's labels are constant, as a recording's would be.
    # Folds keep apart pairs of complementary combinations (000 with 111 ...), so every Combo is kept apart too, and
    # each training partition holds both values of every label.
    combo = labels.astype(str).agg("".join, axis=1)
    pair = combo.map(lambda c: c if c[0] == "0" else "".join("1" if b == "0" else "0" for b in c))
    data = (X, labels, meta.assign(Combo=combo.to_numpy(), Pair=pair.to_numpy()), info)
    models = {"bandpower": MODELS["bandpower"]}
    result = _run(data, tmp_path, models, cv=CVConfig(strategy="group_kfold", n_splits=2, group_key="Pair"))
    preds = result.get_predictions()
    truth_columns = [f"y_true[{label}]" for label in LABELS]
    predicted_columns = [f"y_pred[{label}]" for label in LABELS]
    proba_columns = [f"proba[{label}]" for label in LABELS]

    per_subject = result.get_group_scores(by="Subject", metrics=["roc_auc", "hamming_loss"])
    for subject, rows in preds.groupby("Subject"):
        for metric in ("roc_auc", "hamming_loss"):
            expected = score(
                metric,
                rows[truth_columns].to_numpy(int),
                rows[predicted_columns].to_numpy(int),
                rows[proba_columns].to_numpy(float),
                np.asarray(LABELS),
            )
            got = per_subject[(per_subject["Subject"] == subject) & (per_subject["Metric"] == metric)]["Value"].item()
            assert got == expected

    voted = result.get_aggregate_scores(by="Combo", method="vote", metrics=["hamming_loss"])
    for fold, rows in preds.groupby("Fold"):
        shares = rows.groupby("Combo")[predicted_columns].mean()
        truth = rows.groupby("Combo")[truth_columns].first()
        expected = np.mean((shares.to_numpy() > 0.5).astype(int) != truth.to_numpy())
        assert voted[voted["Fold"] == fold]["Value"].item() == pytest.approx(expected, rel=0, abs=1e-12)
    assert (voted["n_groups"] == preds.groupby("Fold")["Combo"].nunique().to_numpy()).all()
    averaged = result.get_aggregate_scores(by="Combo", metrics=["roc_auc"])  # mean probability per label
    assert np.isfinite(averaged["Value"]).any()
    with pytest.raises(ConfigError, match="windows of Pair='...' have different labels"):
        result.get_aggregate_scores(by="Pair")  # every label varies within a pair


def _check_saved(result, data, folder):
    columns = [f"{kind}[{label}]" for label in LABELS for kind in ("y_true", "y_pred", "proba")]
    assert set(columns) <= set(result.predictions.columns)
    _, labels, _, _ = data
    frame = result.predictions[result.predictions["Model"] == "bandpower"].sort_values("SampleIndex")
    np.testing.assert_array_equal(frame[[f"y_true[{label}]" for label in LABELS]].to_numpy(), labels.to_numpy())
    loaded = ExperimentResult.load(folder)
    pd.testing.assert_frame_equal(loaded.predictions[columns], result.predictions[columns], check_dtype=False)
    pd.testing.assert_frame_equal(loaded.scores, result.scores)
    assert write_report(folder).exists()  # no plot that assumes one label per window


def test_a_permutation_test_shuffles_whole_rows_within_groups(multilabel_data, tmp_path):
    result = _run(
        multilabel_data,
        tmp_path,
        {"bandpower": MODELS["bandpower"]},
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),
        n_permutations=3,
    )
    rows = result.get_model_artifacts(artifact_type="permutation_test")
    tested = dict(zip(rows["ArtifactKey"], rows["ArtifactValue"], strict=True))
    # 3 permutations: the observed score beats all of them, p = 1/4 (hamming loss: lower beats them).
    assert tested["roc_auc_p_value"] == pytest.approx(0.25)
    assert tested["hamming_loss_p_value"] == pytest.approx(0.25) and not greater_is_better("hamming_loss")
    assert f"roc_auc[{LABELS[0]}]_p_value" in tested

    y = multilabel_data[1].to_numpy()
    groups = multilabel_data[2]["Subject"].to_numpy()
    permuted = permute_labels(y, groups, np.random.default_rng(0))
    assert sorted(map(tuple, permuted)) == sorted(map(tuple, y))  # rows move whole: co-occurrence kept
    for g in np.unique(groups):
        assert sorted(map(tuple, permuted[groups == g])) == sorted(map(tuple, y[groups == g]))


def test_stratified_folds_balance_label_combinations_and_pool_rare_ones():
    y = np.array([[0, 1]] * 6 + [[1, 0]] * 6 + [[1, 1]] * 2)
    strata = label_combinations(y, n_splits=3)
    assert len(np.unique(strata[:12])) == 2 and np.all(strata[12:] == -1)


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.column_stack([np.arange(96) % 2, np.arange(96) % 3]), r"label 'label_1' holds 0, 1, 2.*Binarise it"),
        (np.column_stack([np.arange(96) % 2, np.ones(96)]), r"label 'label_1' is 1 in every window.*Drop that"),
        (np.arange(96)[:, None] % 2, r"single label.*task='classification'"),
        (np.arange(96) % 2, r"shape \(n_windows, n_labels\).*task='classification'"),
        (np.full((96, 2), "a"), r"0/1 \(or booleans\)"),
    ],
)
def test_bad_multilabel_targets_are_refused_with_the_fix(multilabel_data, tmp_path, y, match):
    with pytest.raises(DataValidationError, match=match):
        _run(multilabel_data, tmp_path, {"bandpower": MODELS["bandpower"]}, y=y)


def test_the_config_refuses_what_multilabel_cannot_do():
    with pytest.raises(ValueError, match="not available for task='multilabel'"):
        ExperimentConfig(task="multilabel", models=MODELS, metrics=["balanced_accuracy"])
    assert ExperimentConfig(task="multilabel", models=MODELS).resolved_metrics == [
        "roc_auc",
        "f1_macro",
        "hamming_loss",
    ]


def test_multilabel_scores_on_known_values():
    y_true = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    y_pred = np.array([[1, 0], [0, 0], [1, 1], [1, 0]])
    proba = np.array([[0.9, 0.2], [0.1, 0.4], [0.8, 0.7], [0.6, 0.3]])
    labels = np.array(["a", "b"])
    assert score("hamming_loss", y_true, y_pred, proba, labels) == pytest.approx(2 / 8)
    assert score("subset_accuracy", y_true, y_pred, proba, labels) == pytest.approx(2 / 4)
    assert score("roc_auc[a]", y_true, y_pred, proba, labels) == pytest.approx(1.0)
    assert score("roc_auc[b]", y_true, y_pred, proba, labels) == pytest.approx(1.0)
    assert score("f1[b]", y_true, y_pred, proba, labels) == pytest.approx(2 / 3)
    assert score("roc_auc", y_true, y_pred, None, labels) != score("roc_auc", y_true, y_pred, None, labels)  # NaN


def test_each_labels_tuned_pipeline_keeps_the_experiments_groups_apart():
    from neurofm.estimators.classical import PerLabelClassifier, TunedPipeline, takes_groups
    from neurofm.tasks import _fit

    seen = []

    class Spy(TunedPipeline):  # a tuned pipeline that remembers the groups its inner CV got
        def fit(self, X, y, groups=None):
            seen.append(groups)
            return super().fit(X, y, groups=groups)

    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((40, 3)), rng.integers(0, 2, (40, 2))
    groups = np.repeat(np.arange(8), 5)
    per_label = PerLabelClassifier(Spy([("lr", LogisticRegression())], param_grid={"lr__C": [0.1, 1.0]}))
    assert takes_groups(per_label)  # so the experiment hands it the groups, as it does a single-label one
    _fit(per_label, False, X, Y, groups)
    assert len(seen) == 2 and all(np.array_equal(g, groups) for g in seen)
