"""From-scratch braindecode baselines: trained in the experiment's folds on the fine-tuner's loop and rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from neurofm import Experiment
from neurofm.configs import (
    CheckpointConfig,
    CVConfig,
    DeviceConfig,
    ExperimentConfig,
    ScratchModelConfig,
    TrainerConfig,
)
from neurofm.configs.models import SCRATCH_MODEL_ALIASES, SCRATCH_MODELS
from neurofm.exceptions import ConfigError

#: Small architectures of the five baselines the issue names, so that each trains in about a second on 2 cores.
TINY = {
    "EEGNet": {"F1": 4, "D": 1, "F2": 4},
    "ShallowFBCSPNet": {"n_filters_time": 8, "n_filters_spat": 8},
    "Deep4Net": {
        "n_filters_time": 8,
        "n_filters_spat": 8,
        "n_filters_2": 8,
        "n_filters_3": 8,
        "n_filters_4": 8,
        "filter_time_length": 5,
        "filter_length_2": 5,
        "filter_length_3": 5,
        "filter_length_4": 5,
        "pool_time_length": 2,
        "pool_time_stride": 2,
    },
    "ATCNet": {"conv_block_n_filters": 4, "n_windows": 1, "head_dim": 4, "num_heads": 1, "tcn_depth": 1},
    "EEGConformer": {"n_filters_time": 8, "num_layers": 1, "num_heads": 2},
}

FAST = TrainerConfig(max_epochs=2, batch_size=16, early_stopping_patience=None)


@pytest.fixture()
def data(small_dataset):
    """The small dataset's windows cut to their first 2 s (320 samples at 160 Hz), all 19 channels, in volts."""
    X, y, meta, info = small_dataset
    return np.ascontiguousarray(X[:, :, :320]), y, meta, info


def scratch(model="EEGNet", **kw):
    kw.setdefault("trainer", FAST)
    kw.setdefault("device", DeviceConfig(device="cpu"))
    kw.setdefault("checkpoints", CheckpointConfig(save="none"))
    return ScratchModelConfig(model=model, model_kwargs=kw.pop("model_kwargs", TINY.get(model, {})), **kw)


def experiment(models, tmp_path, **kw):
    cfg = ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy"],
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),
        **kw,
    )
    return Experiment(cfg)


def trainer(cfg, info, **kw):
    # import here: the module loads torch, which the config tests above do not need
    from neurofm.estimators.scratch import ScratchTrainer

    return ScratchTrainer(cfg, sfreq=info["sfreq"], ch_names=info["ch_names"], units="V", verbose=False, **kw)


# -- config ----------------------------------------------------------------------------------


def test_config_names_aliases_and_refusals():
    assert ScratchModelConfig(model="EEGNetv4").model == "EEGNet"  # braindecode < 1.0's name, kept as the class's
    assert ScratchModelConfig(model="shallowconvnet").model == "ShallowFBCSPNet"
    with pytest.raises(ValidationError, match=r"model='EEGNett' is not a braindecode network .*did you mean 'EEGNet'"):
        ScratchModelConfig(model="EEGNett")
    with pytest.raises(ValidationError, match=r"'n_times', which neurofm takes from the windows"):
        ScratchModelConfig(model="EEGNet", model_kwargs={"n_times": 100})
    with pytest.raises(ValidationError, match=r"trainer.head='mlp', trainer.probe_epochs=2: these shape the decoder"):
        ScratchModelConfig(model="EEGNet", trainer=TrainerConfig(probe_epochs=2, head="mlp"))


def test_every_name_is_a_braindecode_class():
    import braindecode.models  # the installed braindecode: the static table must not drift from it

    for name in (*SCRATCH_MODELS, *SCRATCH_MODEL_ALIASES.values()):
        assert hasattr(braindecode.models, name), name


def test_yaml_round_trip(tmp_path):
    cfg = ExperimentConfig(
        models={
            "eegnet": scratch("EEGNetv4", trainer=TrainerConfig(max_epochs=3, early_stopping_patience=2)),
            "shallow": {"model": "ShallowFBCSPNet"},  # a file's entry without its kind: told apart by its keys
        },
        cache_dir=str(tmp_path),
    )
    assert isinstance(cfg.models["shallow"], ScratchModelConfig)
    text = cfg.to_yaml()
    assert "kind: scratch" in text and "model: EEGNet\n" in text
    back = ExperimentConfig.from_yaml(text)
    assert back == cfg and back.to_yaml() == text


def test_wrong_name_and_impossible_windows_refused_before_compute(data, tmp_path, monkeypatch):
    import neurofm.estimators.scratch as scratch_module

    X, y, meta, info = data
    with pytest.raises(ValidationError, match="did you mean 'Deep4Net'"):
        ExperimentConfig(models={"deep": {"model": "Deep4Nett"}})
    calls = []
    monkeypatch.setattr(scratch_module, "train_network", lambda *a, **k: calls.append(1))
    models = {"eegnet": scratch(model_kwargs={"F1": 4, "kernel_lenght": 32})}
    with pytest.raises(ConfigError, match="'kernel_lenght' is not an argument of braindecode's EEGNet; did you mean"):
        experiment(models, tmp_path).run(X, y, sample_metadata=meta, **info)
    too_short = {"conformer": scratch("EEGConformer", model_kwargs={})}  # its first kernel spans 25 samples
    with pytest.raises(ConfigError, match="EEGConformer cannot be built for windows of 19 channels x 20 samples"):
        experiment(too_short, tmp_path).run(X[:, :, :20], y, sample_metadata=meta, **info)
    assert calls == []


# -- training in an experiment ------------------------------------------------------------------


def test_five_baselines_train_in_the_folds(data, tmp_path):
    X, y, meta, info = data
    models = {name: scratch(name) for name in TINY}
    result = experiment(models, tmp_path).run(X, y, sample_metadata=meta, **info)
    preds = result.get_predictions()
    for name in TINY:
        rows = preds[preds["Model"] == name]
        assert len(rows) == len(X) and set(rows["y_pred"]) <= set(y)  # every window predicted once, on its test fold
    cards = result.get_model_artifacts(artifact_type="model_card")
    classes = cards[cards["ArtifactKey"] == "backbone_class"]
    assert sorted(classes["ArtifactValue"]) == sorted(np.repeat(list(TINY), 2))
    history = result.get_model_artifacts(artifact_type="training_history")
    assert set(history["Model"]) == set(TINY)
    adaptation = result.get_model_artifacts(artifact_type="input_adaptation")
    assert adaptation["ArtifactValue"].str.contains("V x 1e\\+06: microvolts").all()
    with pytest.raises(ConfigError, match="Fold 0 of model 'EEGNet' saved no checkpoint"):  # save="none"
        result.export_model("EEGNet", tmp_path / "exported", fold=0)


def test_refit_on_all_windows_is_saved_reloaded_resumed_and_exported(data, tmp_path, monkeypatch):
    import neurofm.estimators.scratch as scratch_module
    from neurofm import ExperimentResult
    from neurofm.estimators.scratch import ScratchTrainer

    X, y, meta, info = data
    exp = experiment({"eegnet": scratch()}, tmp_path, refit=True)
    first = exp.run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    refit = first.get_refit_model("eegnet")
    assert isinstance(refit, ScratchTrainer) and first.meta["refit"]["eegnet"]["kind"] == "scratch"
    assert first.meta["refit"]["eegnet"]["n_train"] + first.meta["refit"]["eegnet"]["n_validation"] == len(X)
    folder = first.refit_folder("eegnet")
    assert {"best.safetensors", "config.json", "refit.json"} <= {p.name for p in folder.iterdir()}
    expected = refit.predict_proba(X)
    np.testing.assert_array_equal(ScratchTrainer.from_checkpoint(folder).predict_proba(X), expected)
    loaded = ExperimentResult.load(tmp_path / "out")
    np.testing.assert_array_equal(loaded.get_refit_model("eegnet").predict_proba(X), expected)
    # Run again into the same folder: the folds and the refit are read back, nothing trains.
    monkeypatch.setattr(scratch_module, "train_network", lambda *a, **k: pytest.fail("trained again"))
    again = exp.run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    assert again.meta["refit"]["eegnet"]["resumed"]
    np.testing.assert_array_equal(again.get_refit_model("eegnet").predict_proba(X), expected)
    # Without an output folder the refit is written beside the fold checkpoints, and saved with the result.
    monkeypatch.undo()
    plain = exp.run(X, y, sample_metadata=meta, **info)
    plain.save(tmp_path / "saved")
    np.testing.assert_array_equal(
        ExperimentResult.load(tmp_path / "saved").get_refit_model("eegnet").predict_proba(X),
        plain.get_refit_model("eegnet").predict_proba(X),
    )
    # Exported: in braindecode's own layout (the class as trained), or as neurofm's checkpoint.
    import torch

    import neurofm

    hub = first.export_model("eegnet", tmp_path / "braindecode")
    assert {p.name for p in hub.iterdir()} == {"config.json", "model.safetensors", "neurofm_export.json", "README.md"}
    network = neurofm.load_exported(hub)
    assert type(network).__name__ == "EEGNet"
    adapted = torch.from_numpy(refit.plan_.apply(X[:4]))
    with torch.no_grad():
        np.testing.assert_array_equal(network(adapted).numpy(), refit._outputs(X[:4]))
    assert "EEGNet, trained from scratch with neurofm" in (hub / "README.md").read_text()
    checkpoint = first.export_model("eegnet", tmp_path / "checkpoint", format="checkpoint")
    np.testing.assert_array_equal(neurofm.load_exported(checkpoint).predict_proba(X), expected)


def test_eegnet_learns_an_evoked_response(data, tmp_path):
    X, y, meta, info = data
    X = X.copy()
    # A 20 µV evoked deflection over the central channels (noise: about 13 µV), upward for one class, downward
    # for the other. EEGNet at its published size, 10 epochs: balanced accuracy 0.83 to 0.96 per fold over seeds.
    t = np.arange(X.shape[2]) / info["sfreq"]
    wave = 20e-6 * np.exp(-(((t - 0.5) / 0.15) ** 2))
    central = [info["ch_names"].index(c) for c in ("C3", "Cz", "C4")]
    sign = np.where(y == y[0], 1.0, -1.0)
    X[:, central, :] += sign[:, None, None] * wave
    fast = TrainerConfig(max_epochs=10, batch_size=8, lr=1e-2, early_stopping_patience=None, validation_fraction=0)
    cfg = scratch(model_kwargs={}, trainer=fast, checkpoints=CheckpointConfig(save="none", monitor="train_loss"))
    result = experiment({"eegnet": cfg}, tmp_path).run(X, y, sample_metadata=meta, **info)
    scores = result.get_detailed_scores()["Value"]
    assert scores.mean() > 0.75 and scores.min() > 0.6, scores  # chance: 0.5


def test_seed_decides_the_weights_and_predictions(data):
    X, y, meta, info = data
    cfg = scratch("ShallowFBCSPNet")
    a = trainer(cfg, info, random_state=3).fit(X, y)
    b = trainer(cfg, info, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    other = trainer(cfg, info, random_state=4)
    first = trainer(cfg, info, random_state=3)._build_network(cfg, 2, 19, 320).state_dict()
    second = other._build_network(cfg, 2, 19, 320).state_dict()
    assert any(not np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)
    assert not np.array_equal(other.fit(X, y).predict_proba(X), a.predict_proba(X))


def test_trainer_rules_are_the_fine_tuners(data, tmp_path):
    from sklearn.base import clone

    X, y, meta, info = data
    groups = meta["Subject"].to_numpy()
    # The learning rate only falls without warm-up: monitored for a rise, it stops training after `patience` epochs.
    rules = TrainerConfig(max_epochs=20, batch_size=16, warmup_epochs=0, early_stopping_patience=2)
    cfg = scratch(
        "ShallowFBCSPNet",
        trainer=rules,
        checkpoints=CheckpointConfig(save="best", monitor="lr", mode="max", directory=str(tmp_path / "ckpt")),
    )
    est = trainer(cfg, info, metrics=["balanced_accuracy"])
    assert clone(est).get_params() == est.get_params() and not hasattr(est, "net_")
    est.fit(X, y, groups=groups)
    assert len(est.get_training_history()) == 3
    assert "lr did not improve for 2 epochs" in est.get_failure_diagnostics()["stopped_early"]
    val = est.validation_indices_
    assert len(val) and not set(groups[val]) & set(np.delete(groups, val))  # validation subjects held out
    assert "val_balanced_accuracy" in est.get_training_history()[0]
    manifest = est.get_checkpoint_manifest()
    assert manifest["best_epoch"] == 0
    reloaded = type(est).from_checkpoint(manifest["directory"])
    np.testing.assert_array_equal(reloaded.predict_proba(X), est.predict_proba(X))


def test_regression_trains_one_output(data, tmp_path):
    X, y, meta, info = data
    target = X.std(axis=(1, 2)) * 1e6
    est = trainer(scratch("ShallowFBCSPNet"), info, task="regression").fit(X, target)
    assert est.predict(X).shape == (len(X),) and est.get_model_card_info()["architecture"]["n_outputs"] == 1


def test_resume_permutations_and_fold_checkpoints_as_for_fine_tuned_models(data, tmp_path, monkeypatch):
    import neurofm.estimators.scratch as scratch_module

    X, y, meta, info = data
    one_epoch = TrainerConfig(max_epochs=1, batch_size=16, early_stopping_patience=None)
    models = {"shallow": scratch("ShallowFBCSPNet", trainer=one_epoch, checkpoints=CheckpointConfig(save="best"))}
    exp = experiment(models, tmp_path, n_permutations=1, permute_trainable=True)
    first = exp.run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    manifest = first.get_model_artifacts(artifact_type="checkpoints")
    folders = manifest[manifest["ArtifactKey"] == "directory"]["ArtifactValue"]
    assert len(folders) == 2 and all("checkpoints/shallow/fold-" in f for f in folders)
    permutation = first.get_model_artifacts(artifact_type="permutation_test")  # run: permute_trainable=True
    assert {"n_permutations", "balanced_accuracy_p_value"} <= set(permutation["ArtifactKey"])
    # Run again into the same folder: every fold and permutation is read back, nothing trains.
    monkeypatch.setattr(scratch_module, "train_network", lambda *a, **k: pytest.fail("trained again"))
    again = exp.run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    assert again.get_predictions().equals(first.get_predictions())


# -- task="multilabel" ------------------------------------------------------------------------------------------------

#: Six channels of 2 s at 64 Hz; label k multiplies the amplitude of channel 2k alone by 1.5 where it is 1.
ML_SFREQ, ML_TIMES, ML_CHANNELS, ML_LABELS = 64.0, 128, 6, ["alpha", "beta", "theta"]
#: ShallowFBCSPNet (squares, pools, logs: a power detector) small enough for 2 s at 64 Hz, trained in a second.
SHALLOW_SMALL = {
    "n_filters_time": 8,
    "n_filters_spat": 8,
    "filter_time_length": 9,
    "pool_time_length": 16,
    "pool_time_stride": 8,
}


def multilabel_windows(n, seed):
    """Noise windows (volts) with three independent 0/1 labels, each raising the power of a channel of its own."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(ML_LABELS))) < 0.5).astype(int)
    X = rng.standard_normal((n, ML_CHANNELS, ML_TIMES)) * 10e-6
    for k in range(len(ML_LABELS)):
        X[:, 2 * k, :] *= np.where(y[:, k] == 1, 1.5, 1.0)[:, None]
    return X.astype(np.float32), y


def multilabel_trainer(**kw):
    # import here: the module loads torch, which the config tests above do not need
    from neurofm.estimators.scratch import ScratchTrainer
    from neurofm.simulate import STANDARD_1020_19

    rules = TrainerConfig(max_epochs=8, batch_size=16, lr=1e-2, early_stopping_patience=3)
    cfg = scratch("ShallowFBCSPNet", model_kwargs=SHALLOW_SMALL, trainer=kw.pop("trainer", rules))
    names = list(STANDARD_1020_19[:ML_CHANNELS])
    return ScratchTrainer(cfg, sfreq=ML_SFREQ, ch_names=names, task="multilabel", verbose=False, **kw)


def macro_auc(est, X, y):
    """Macro ROC AUC over the labels, from the scores the experiment's multilabel path reads off the network."""
    from neurofm.metrics import score  # as the experiment scores a multilabel fold
    from neurofm.tasks import label_scores  # as the experiment reads a multilabel model's probabilities

    return score("roc_auc", y, est.predict(X), label_scores(est, X), ML_LABELS)


def test_multilabel_trains_one_output_per_label_with_bce_and_shuffled_labels_score_at_chance(tmp_path):
    from neurofm.estimators.scratch import ScratchTrainer

    X, y = multilabel_windows(120, seed=0)
    X_test, y_test = multilabel_windows(200, seed=1)
    est = multilabel_trainer().fit(X, pd.DataFrame(y, columns=ML_LABELS))
    assert est.get_model_card_info()["architecture"]["n_outputs"] == 3 and list(est.classes_) == [0, 1, 2]
    proba = est.predict_proba(X_test)
    assert proba.shape == y_test.shape and np.all((proba > 0) & (proba < 1))
    assert not np.allclose(proba.sum(axis=1), 1)  # one sigmoid per label, not a softmax over them
    np.testing.assert_array_equal(est.predict(X_test), (proba >= 0.5).astype(np.int64))
    assert macro_auc(est, X_test, y_test) > 0.8
    history = est.get_training_history()
    assert est.best_epoch_ == int(np.argmin([record["val_loss"] for record in history]))
    # Written and read back as a multilabel network: the same outputs, the label indices kept.
    reloaded = ScratchTrainer.from_checkpoint(est.save_checkpoint(tmp_path / "saved"))
    np.testing.assert_array_equal(reloaded.predict_proba(X_test), proba)
    assert reloaded.task == "multilabel" and list(reloaded.classes_) == [0, 1, 2]

    # Labels shuffled by whole rows, in training and test alike: nothing to learn, so nothing to score either.
    rng = np.random.default_rng(3)
    shuffled = multilabel_trainer().fit(X, y[rng.permutation(len(y))])
    assert abs(macro_auc(shuffled, X_test, y_test[rng.permutation(len(y_test))]) - 0.5) < 0.1
    # No signal: the validation loss stops falling and training stops early, as for the other tasks.
    assert len(shuffled.get_training_history()) < 8
    assert "val_loss did not improve for 3 epochs" in shuffled.get_failure_diagnostics()["stopped_early"]


@pytest.mark.parametrize(
    ("make_y", "match"),
    [
        (lambda y: y[:, 0], r"needs y of shape \(n_windows, n_labels\).*got shape \(40,\)"),
        (lambda y: y * 3, r"label column 0 holds 0, 3.*Binarise it"),
        (
            lambda y: pd.DataFrame({"alpha": y[:, 0], "beta": np.ones(len(y), int), "theta": y[:, 2]}),
            r"label 'beta' is 1 in all 40 training windows.*stratified_kfold.*or drop that column of y",
        ),
    ],
)
def test_bad_multilabel_targets_are_refused_before_training(make_y, match, monkeypatch):
    import neurofm.estimators.scratch as scratch_module
    from neurofm.exceptions import DataValidationError

    monkeypatch.setattr(scratch_module, "train_network", lambda *a, **k: pytest.fail("trained"))
    X, y = multilabel_windows(40, seed=0)
    with pytest.raises(DataValidationError, match=match):
        multilabel_trainer().fit(X, make_y(y))


def test_multilabel_refuses_a_regression_loss_and_sizes_the_network_from_y_before_training(monkeypatch):
    import neurofm.estimators.scratch as scratch_module

    X, y = multilabel_windows(40, seed=0)
    mse = TrainerConfig(max_epochs=1, batch_size=16, loss="mse")
    with pytest.raises(ConfigError, match="regression loss, and the task is multilabel; use loss='auto'"):
        multilabel_trainer(trainer=mse).check_input(X.shape, y)
    built = []
    monkeypatch.setattr(scratch_module.ScratchTrainer, "_check_network", lambda self, cfg, plan, n: built.append(n))
    multilabel_trainer().check_input(X.shape, np.column_stack([y, y[:, :1]]))
    assert built == [4]  # one output per label of y
