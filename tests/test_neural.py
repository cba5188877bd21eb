"""Trainable decoders: train modes, adapters that take effect, checkpoints, diagnostics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurofm import Experiment
from neurofm.adapt import plan_adaptation
from neurofm.adapters import apply_adapters
from neurofm.configs import (
    CheckpointConfig,
    CVConfig,
    ExperimentConfig,
    LoRAConfig,
    NeuralFineTuneConfig,
    TrainerConfig,
)
from neurofm.data import SignalInfo
from neurofm.estimators.neural import DecoderNet, NeuralFineTuner
from neurofm.exceptions import ConfigError, DataValidationError
from neurofm.models import create_backbone, get_model_spec, list_model_keys
from neurofm.simulate import STANDARD_1020_19, simulate_eeg_dataset


@pytest.fixture(scope="module")
def data():
    return simulate_eeg_dataset(n_subjects=3, n_windows_per_class=4, random_state=2)


def config(key="cbramod", mode="lora", tmp=None, **kw):
    trainer = kw.pop("trainer", TrainerConfig(max_epochs=2, batch_size=8, early_stopping_patience=None))
    ckpt = kw.pop("checkpoints", CheckpointConfig(save="best", directory=str(tmp) if tmp else None))
    return NeuralFineTuneConfig(
        model_key=key,
        weights="random",
        train_mode=mode,
        model_kwargs=get_model_spec(key).tiny_kwargs,
        trainer=trainer,
        checkpoints=ckpt,
        lora=kw.pop("lora", LoRAConfig(r=4)),
        **kw,
    )


def tuner(cfg, info, **kw):
    return NeuralFineTuner(
        cfg, sfreq=info["sfreq"], ch_names=info["ch_names"], metrics=["balanced_accuracy"], verbose=False, **kw
    )


@pytest.mark.parametrize("key", list_model_keys())
@pytest.mark.parametrize("mode", ["frozen", "full", "lora"])
def test_every_model_trains_and_its_checkpoint_reproduces_predictions(key, mode, data, tmp_path):
    X, y, meta, info = data
    est = tuner(config(key, mode, tmp_path), info).fit(X, y, groups=meta["Subject"].to_numpy())
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert len(est.get_training_history()) == 2
    card = est.get_model_card_info()
    assert 0 < card["trainable_parameters"] <= card["total_parameters"]
    manifest = est.get_checkpoint_manifest()
    reloaded = NeuralFineTuner.from_checkpoint(manifest["directory"])
    np.testing.assert_array_equal(reloaded.predict_proba(X), proba)


def test_trainable_parameters_grow_from_frozen_to_lora_to_full(data, tmp_path):
    X, y, meta, info = data
    counts = {
        mode: tuner(config("labram", mode, tmp_path), info).fit(X, y).get_model_card_info()["trainable_parameters"]
        for mode in ("frozen", "lora", "full")
    }
    assert counts["frozen"] < counts["lora"] < counts["full"]


@pytest.mark.parametrize("key", ["cbramod", "codebrain", "labram"])
def test_the_own_head_trains_the_class_head_alone_when_the_backbone_is_frozen(key, data):
    X, y, meta, info = data
    native = TrainerConfig(max_epochs=2, batch_size=8, early_stopping_patience=None, head="native")
    est = tuner(config(key, "frozen", trainer=native), info)
    est.fit(X, y)
    spec = get_model_spec(key)
    start = create_backbone(key, est.plan_.target, "random", model_kwargs=spec.tiny_kwargs | {"n_outputs": 2}).module
    trained = dict(est.net_.backbone.named_parameters())
    head = {n for n in trained if n.startswith(spec.own_head)}
    # The class's classification head alone trains: not the pretraining heads it also holds (CodeBrain's lm_head_*).
    assert head and {n for n, p in trained.items() if p.requires_grad} == head
    card = est.get_model_card_info()
    assert card["trainable_parameters"] == sum(trained[n].numel() for n in head)
    assert card["head"] == {"kind": "native", "pooling": None, "n_outputs": 2}
    for name, param in start.named_parameters():
        assert torch.equal(param, trained[name]) != (name in head), name  # the head moved, nothing else did
    assert est.predict_proba(X).shape == (len(X), 2)


def test_the_own_head_is_refused_where_it_means_nothing():
    native = TrainerConfig(head="native")
    with pytest.raises(ValueError, match=r"pooling='max' has no effect with trainer.head='native'"):
        NeuralFineTuneConfig(model_key="labram", weights="random", pooling="max", trainer=native)
    with pytest.raises(ValueError, match="transformers encoder has none"):
        NeuralFineTuneConfig(backend="hugging_face", model_key="reve", weights="x/y", trainer=native)


def _adapted_net(key, mode, fastpath_off=None):
    spec = get_model_spec(key)
    info = SignalInfo(160.0, tuple(STANDARD_1020_19), ("V",) * 19)
    plan = plan_adaptation(spec, info, 640)
    module = create_backbone(key, plan.target, "random", model_kwargs=spec.tiny_kwargs, random_state=0).module
    wrapped = apply_adapters(module, spec, mode, LoRAConfig(r=4), total_steps=10)
    off = spec.mha_fastpath_bypasses_adapters if fastpath_off is None else fastpath_off
    net = DecoderNet(wrapped, spec.extract, plan.target, "mean", 2, fastpath_off=off)
    x = torch.from_numpy(plan.apply(np.random.default_rng(0).standard_normal((2, 19, 640)) * 2e-5))
    return net, x


def _perturbation_effect(net, x, train: bool) -> float:
    net.train(train)
    adapter = [p for n, p in net.backbone.named_parameters() if p.requires_grad]
    assert adapter, "no adapter parameters were created"
    with torch.no_grad():
        torch.manual_seed(0)
        before = net.features(x).clone()
        saved = [p.detach().clone() for p in adapter]
        for p in adapter:
            p.add_(torch.randn_like(p) * 0.5)
        torch.manual_seed(0)
        after = net.features(x)
        for p, s in zip(adapter, saved, strict=True):
            p.copy_(s)
    return float((after - before).abs().max())


@pytest.mark.parametrize("key", list_model_keys())
@pytest.mark.parametrize("mode", ["lora", "ia3", "dora", "adalora", "oft"])
def test_default_adapters_take_effect_in_train_and_eval_mode(key, mode):
    spec = get_model_spec(key)
    if mode not in spec.train_modes:
        pytest.skip(f"{mode} not listed for {key}")
    net, x = _adapted_net(key, mode)
    assert _perturbation_effect(net, x, train=True) > 1e-6
    assert _perturbation_effect(net, x, train=False) > 1e-6


def test_signaljepa_adapters_do_nothing_in_eval_unless_the_fast_path_is_off():
    """MODEL_NOTES trap: torch's fused encoder path reads base weights in eval mode."""
    net, x = _adapted_net("signaljepa", "lora", fastpath_off=False)
    assert _perturbation_effect(net, x, train=False) == 0.0
    net, x = _adapted_net("signaljepa", "lora", fastpath_off=True)
    assert _perturbation_effect(net, x, train=False) > 1e-6


def test_target_modules_override_and_unknown_target(data):
    X, y, meta, info = data
    est = tuner(config("labram", "lora", lora=LoRAConfig(r=2, target_modules=["mlp.2"])), info).fit(X, y)
    adapted = {n.split(".lora_")[0] for n, p in est.net_.named_parameters() if p.requires_grad and "lora_" in n}
    assert adapted and all(n.endswith("mlp.2") for n in adapted)
    with pytest.raises(
        ConfigError,
        match=r"Adapter target\(s\) \['no_such_layer'\] match no module of this model\. Module "
        r"name endings available include",
    ):
        tuner(config("labram", "lora", lora=LoRAConfig(target_modules=["no_such_layer"])), info).check_input(X.shape, y)


def test_bad_inputs_fail_before_training(data, monkeypatch, tmp_path):
    X, y, meta, info = data
    calls = []
    monkeypatch.setattr("neurofm.estimators.neural.train_network", lambda *a, **k: calls.append(1))
    with pytest.raises(
        DataValidationError, match="n_outputs=3 does not match y, which holds 2 classes; set n_outputs=2"
    ):
        tuner(config(n_outputs=3), info).fit(X, y)
    with pytest.raises(
        ValueError, match="train_mode='oft' is not listed for 'cbramod'; use one of 'frozen', 'full', 'lora'"
    ):
        config("cbramod", "oft")
    with pytest.raises(
        ConfigError,
        match=r"checkpoint monitor 'val_f1_macro' is not logged; use one of .*'val_loss', "
        r"and 'val_balanced_accuracy'\.",
    ):
        tuner(config(checkpoints=CheckpointConfig(monitor="val_f1_macro")), info).fit(X, y)
    models = {"bad": config(lora=LoRAConfig(target_modules=["nope"]))}
    exp = ExperimentConfig(models=models, cv=CVConfig(n_splits=2), cache_dir=str(tmp_path), verbose=False)
    with pytest.raises(ConfigError, match=r"Adapter target\(s\) \['nope'\] match no module of this model"):
        Experiment(exp).run(X, y, sample_metadata=meta.drop(columns="Subject"), **info)
    assert calls == []


def test_validation_split_keeps_groups_apart(data):
    X, y, meta, info = data
    groups = meta["Subject"].to_numpy()
    est = tuner(config(mode="frozen"), info).fit(X, y, groups=groups)
    val = est.validation_indices_
    train = np.setdiff1d(np.arange(len(X)), val)
    assert len(val) and not set(groups[val]) & set(groups[train])


def test_two_stage_probe_first_leaves_adapters_untouched_during_the_probe(data):
    X, y, meta, info = data
    trainer = TrainerConfig(max_epochs=2, batch_size=8, probe_epochs=2, early_stopping_patience=None)
    est = tuner(config("labram", "lora", trainer=trainer), info).fit(X, y)
    lora_b = [p for n, p in est.net_.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.abs().max()) == 0.0 for p in lora_b)  # LoRA B starts at zero
    trainer = TrainerConfig(
        max_epochs=3, batch_size=8, probe_epochs=1, early_stopping_patience=None, validation_fraction=0
    )
    est = tuner(
        config("labram", "lora", trainer=trainer, checkpoints=CheckpointConfig(save="last", monitor="train_loss")), info
    ).fit(X, y)
    assert any(float(p.detach().abs().max()) > 0 for n, p in est.net_.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize("save", ["none", "last", "all"])
def test_checkpoint_modes(save, data, tmp_path):
    X, y, meta, info = data
    est = tuner(config(checkpoints=CheckpointConfig(save=save, directory=str(tmp_path))), info).fit(X, y)
    paths = est.get_checkpoint_manifest()["paths"]
    if save == "none":
        assert paths == {}
    elif save == "last":
        assert set(paths) == {"last"}
    else:
        assert {"best", "last", "epoch-000", "epoch-001"} <= set(paths)
    for path in paths.values():
        assert path.endswith(".safetensors")


def test_merged_lora_checkpoint_reproduces_predictions(data, tmp_path):
    X, y, meta, info = data
    est = tuner(config("labram", "lora", tmp_path, lora=LoRAConfig(r=4, save="merged")), info).fit(X, y)
    manifest = est.get_checkpoint_manifest()
    reloaded = NeuralFineTuner.from_checkpoint(manifest["directory"])
    assert not any("lora_" in n for n, _ in reloaded.net_.named_parameters())
    # Folding B @ A into the base weights rounds, so bits are not promised here (adapters-only checkpoints are
    # exact, above): probabilities within 1e-6, as the README says. Measured: at most 1.2e-7 (LaBraM, CBraMod, BIOT).
    np.testing.assert_allclose(reloaded.predict_proba(X), est.predict_proba(X), rtol=0, atol=1e-6)


def experiment(models, tmp_path, **kw):
    cfg = ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy", "roc_auc"],
        cache_dir=str(tmp_path),
        verbose=False,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
        **kw,
    )
    return Experiment(cfg)


def test_experiment_artifacts_and_rerun_determinism(data, tmp_path):
    X, y, meta, info = data
    models = {
        "lora": config(tmp=tmp_path),
        "frozen_mlp": config(
            mode="frozen",
            tmp=tmp_path,
            trainer=TrainerConfig(max_epochs=2, batch_size=8, head="mlp", early_stopping_patience=None),
        ),
    }
    first = experiment(models, tmp_path).run(X, y, sample_metadata=meta, **info)
    second = experiment(models, tmp_path).run(X, y, sample_metadata=meta, **info)
    np.testing.assert_array_equal(first.scores["Value"].to_numpy(), second.scores["Value"].to_numpy())
    kinds = set(first.get_model_artifacts()["ArtifactType"])
    assert {"training_history", "checkpoints", "model_card", "failure_diagnostics"} <= kinds
    history = first.get_model_artifacts(artifact_type="training_history", model="lora")
    assert set(history["Fold"]) == {0, 1, 2}
    record = history["ArtifactValue"].iloc[0]
    assert {"train_loss", "val_loss", "val_balanced_accuracy", "lr", "seconds"} <= set(record)
    first.save(tmp_path / "out")


def test_non_finite_loss_stops_one_fold_and_the_rest_runs(data, tmp_path, monkeypatch):
    X, y, meta, info = data
    original = DecoderNet.forward
    state = {"fits": 0}
    original_fit = NeuralFineTuner.fit

    def counting_fit(self, *args, **kwargs):
        state["fits"] += 1
        return original_fit(self, *args, **kwargs)

    def poisoned(self, x):
        out = original(self, x)
        return out * float("nan") if state["fits"] == 1 else out

    monkeypatch.setattr(NeuralFineTuner, "fit", counting_fit)
    monkeypatch.setattr(DecoderNet, "forward", poisoned)
    models = {"lora": config(tmp=tmp_path)}
    with pytest.warns(RuntimeWarning, match="Non-finite loss"):
        result = experiment(models, tmp_path).run(X, y, sample_metadata=meta, **info)
    scores = result.get_detailed_scores()
    assert scores.query("Fold == 0")["Value"].isna().all()
    assert scores.query("Fold > 0")["Value"].notna().all()
    diag = result.get_model_artifacts(artifact_type="failure_diagnostics")
    fold0 = dict(zip(diag.query("Fold == 0")["ArtifactKey"], diag.query("Fold == 0")["ArtifactValue"], strict=True))
    assert fold0["non_finite"]["what"] == "loss" and "non-finite" in fold0["stopped_early"]


@pytest.mark.parametrize("key", ["labram", "cbramod", "biot"])
def test_qlora_quantises_linear_layers_and_trains_adapters_in_full_precision(key, data, tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    X, y, meta, info = data
    est = tuner(config(key, "qlora", tmp_path), info).fit(X, y)
    layers = [m for m in est.net_.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and len(layers) == est.get_model_card_info()["quantized_layers"]
    assert all(m.weight.dtype == torch.uint8 for m in layers)
    # bitsandbytes' AVX-512 BF16 repacking crashes on widths not divisible by 32 (LaBraM's 200): kept off everywhere
    assert not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in layers)
    adapters = [p for n, p in est.net_.named_parameters() if p.requires_grad and "lora_" in n]
    assert adapters and all(p.dtype == torch.float32 for p in adapters)
    if key == "labram":  # its attention reads qkv.weight directly: that layer must stay unquantised
        assert all(type(m.attn.qkv) is torch.nn.Linear for m in est.net_.backbone.base_model.model.blocks)
    reloaded = NeuralFineTuner.from_checkpoint(est.get_checkpoint_manifest()["directory"])
    np.testing.assert_array_equal(reloaded.predict_proba(X), est.predict_proba(X))


def test_qlora_bad_inputs(data, monkeypatch):
    X, y, meta, info = data
    with pytest.raises(ConfigError, match="not on 'mps'"):
        tuner(config(mode="qlora", device=__import__("neurofm").configs.DeviceConfig(device="mps")), info).check_input(
            X.shape, y
        )
    from neurofm.configs import QuantizationConfig

    with pytest.raises(ValueError, match="cannot be fully fine-tuned"):  # refused by the config itself
        config(mode="full", quantization=QuantizationConfig(enabled=True))
    import neurofm.adapters
    from neurofm.exceptions import MissingDependencyError

    def missing(name, purpose, extra=None):
        raise MissingDependencyError(
            f"{purpose} needs the optional package {name!r}; install it with: pip install 'neurofm[{extra}]'"
        )

    monkeypatch.setattr(neurofm.adapters, "soft_import", missing)
    with pytest.raises(MissingDependencyError, match=r"neurofm\[quant\]"):
        tuner(config(mode="qlora"), info).check_input(X.shape, y)


def test_bf16_autocast_and_gradient_accumulation_train(data):
    from neurofm.configs import DeviceConfig

    X, y, meta, info = data
    trainer = TrainerConfig(max_epochs=2, batch_size=4, grad_accumulation=3, early_stopping_patience=None)
    est = tuner(
        config("labram", "lora", trainer=trainer, device=DeviceConfig(device="cpu", precision="bf16")), info
    ).fit(X, y)
    history = est.get_training_history()
    assert all(np.isfinite(r["train_loss"]) for r in history)
    # Warm-up spans one epoch of optimiser steps: the learning rate after epoch 0 is the peak.
    assert history[0]["lr"] == pytest.approx(1e-3, rel=1e-6)
    with pytest.raises(ConfigError, match="precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU"):
        tuner(config(device=DeviceConfig(device="cpu", precision="fp16")), info).check_input(X.shape, y)


def test_regression_and_multiclass(tmp_path):
    X, y, meta, info = simulate_eeg_dataset(n_subjects=3, n_windows_per_class=6, random_state=4)
    target = X.std(axis=(1, 2)) * 1e6  # a continuous, learnable quantity
    models = {"reg": config("cbramod", "lora", tmp_path, checkpoints=CheckpointConfig(save="best", monitor="val_rmse"))}
    cfg = ExperimentConfig(
        task="regression",
        models=models,
        metrics=["r2", "rmse"],
        cache_dir=str(tmp_path),
        verbose=False,
        cv=CVConfig(strategy="group_kfold", n_splits=3, group_key="Subject"),
    )
    result = Experiment(cfg).run(X, target, sample_metadata=meta, **info)
    assert result.get_detailed_scores()["Value"].notna().all()
    preds = result.get_predictions()
    assert preds["y_pred"].dtype.kind == "f"
    labels = np.array(["a", "b", "c"])[np.arange(len(X)) % 3]
    est = tuner(config("labram", "full", tmp_path), info).fit(X, labels)
    assert est.predict_proba(X).shape == (len(X), 3)
    assert set(est.predict(X)) <= {"a", "b", "c"}
    card = est.get_model_card_info()
    assert card["head"]["n_outputs"] == 3 and card["architecture"]["class"] == "Labram"
