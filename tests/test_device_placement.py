"""Models and batches on one device, proven without a GPU (issue 21).

PyTorch's ``meta`` device exists on every machine: a tensor there has a shape
but no data. Code that puts a model and its batches on the device it is given
runs every operation on ``meta`` and fails only at the very end, when the
output is copied back ("Cannot copy out of meta tensor"); code that leaves one
of them on the CPU fails at the first operation mixing the two ("Tensor on
device cpu is not on the expected device meta"). So these tests catch a model
or a batch left behind, as a CUDA run would; what only a real GPU shows
(kernels, precision, memory, speed) is left to ``tests/test_neural_gpu.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neurofm.configs import CheckpointConfig, NeuralFineTuneConfig, TrainerConfig
from neurofm.estimators.neural import NeuralFineTuner
from neurofm.exceptions import ConfigError
from neurofm.models import get_model_spec
from neurofm.simulate import STANDARD_1020_19

_ALL_ON_META = "Cannot copy out of meta tensor"  # every operation ran on the device; only the copy back failed
_LEFT_BEHIND = "is not on the expected device meta"  # what a tensor left on the CPU meets (never expected here)


@pytest.fixture()
def meta_scalars_read_as_one():
    """Let the training loop read scalars of meta tensors (each reads as 1, True for booleans).

    A meta tensor has no value, so the loop's checks (is the loss finite, the
    gradient norm) would stop it at the first step. With every such read
    answered, whole epochs run on the meta device: every forward, backward,
    clipping and optimiser step, so a tensor anywhere on the CPU fails them.
    """
    library = torch.library.Library("aten", "IMPL")
    library.impl("_local_scalar_dense", lambda t: True if t.dtype == torch.bool else 1, "Meta", allow_override=True)
    yield
    library._destroy()


@pytest.fixture()
def quantize_in_place_on_meta(monkeypatch):
    """A stand-in for bitsandbytes' quantisation, which does not run on meta (its layers need real weights).

    It checks what a CUDA run needs from neurofm: every part of the backbone is
    already on the device when its layers are quantised (bitsandbytes quantises
    each layer where it is moved; a backbone left on the CPU around them mixes
    devices at the first forward). The layers stay full-precision ones.
    """
    import neurofm.estimators.decoder_net as decoder_net
    import neurofm.estimators.neural as neural

    def quantize(backbone, quantization, exclude_prefixes, device, read_directly=()):
        devices = {p.device.type for p in backbone.parameters()} | {b.device.type for b in backbone.buffers()}
        assert devices == {torch.device(device).type}, f"backbone on {devices} when quantised for {device}"
        return [name for name, m in backbone.named_modules() if type(m) is torch.nn.Linear]

    monkeypatch.setattr(decoder_net, "quantize_linear_layers", quantize)
    monkeypatch.setattr(neural, "check_quantization", lambda device: None)


def _fitted(tmp_path, save="last"):
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((8, 19, 800)) * 20e-6).astype(np.float32)
    y = np.tile([0, 1], 4)
    config = NeuralFineTuneConfig(
        model_key="cbramod",
        weights="random",
        train_mode="full",
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        trainer=TrainerConfig(max_epochs=1, batch_size=4, validation_fraction=0, early_stopping_patience=None),
        checkpoints=CheckpointConfig(save=save, monitor="train_loss", directory=str(tmp_path / "checkpoints")),
    )
    tuner = NeuralFineTuner(
        config=config, sfreq=200.0, ch_names=list(STANDARD_1020_19), verbose=False, cache_dir=str(tmp_path / "cache")
    )
    return tuner.fit(X, y), X


def test_predicting_puts_the_net_where_its_batches_go(tmp_path):
    from neurofm.training import predict_network

    tuner, X = _fitted(tmp_path, save="none")
    adapted = tuner._adapt(X)
    assert all(p.device.type == "cpu" for p in tuner.net_.parameters())
    with pytest.raises(NotImplementedError, match=_ALL_ON_META):
        predict_network(tuner.net_, adapted, 4, "meta")
    assert all(p.device.type == "meta" for p in tuner.net_.parameters())


def test_a_checkpoint_reloads_on_the_device_asked_and_one_trained_on_cuda_reloads_on_the_cpu(tmp_path):
    tuner, X = _fitted(tmp_path)
    folder = tuner.get_checkpoint_manifest()["directory"]
    on_meta = NeuralFineTuner.from_checkpoint(folder, "last", device="meta")
    assert on_meta.device_ == "meta" and all(p.device.type == "meta" for p in on_meta.net_.parameters())
    with pytest.raises(NotImplementedError, match=_ALL_ON_META):
        on_meta.predict_proba(X)

    meta_file = f"{folder}/config.json"
    saved = json.loads(open(meta_file).read())
    saved["config"]["device"]["device"] = "cuda"  # as a run on a GPU machine writes it
    with open(meta_file, "w") as fh:
        json.dump(saved, fh)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"trained with device='cuda'; reload it with .*device='cpu'"):
            NeuralFineTuner.from_checkpoint(folder, "last")
    on_cpu = NeuralFineTuner.from_checkpoint(folder, "last", device="cpu")
    np.testing.assert_array_equal(on_cpu.predict_proba(X), tuner.predict_proba(X))


def test_fp16_overflow_steps_are_skipped_by_the_scaler_not_taken_for_divergence(tmp_path, monkeypatch):
    """A CUDA fp16 run meets inf gradients whenever the loss scale is too high; GradScaler skips those steps and
    lowers the scale by design. A CPU scaler starting at a scale that overflows plays that here."""
    import neurofm.training

    def overflowing_scaler(precision, device_name):
        return torch.amp.GradScaler("cpu", init_scale=2.0**127, backoff_factor=2.0**-64)

    monkeypatch.setattr(neurofm.training.steps, "_grad_scaler", overflowing_scaler)
    tuner, _ = _fitted(tmp_path, save="none")
    diagnostics = tuner.get_failure_diagnostics()
    assert diagnostics["overflow_steps"] == 1 and diagnostics["non_finite"] is None and not tuner.failed_
    assert len(tuner.get_training_history()) == 1 and np.isfinite(tuner.get_training_history()[0]["train_loss"])

    def always_overflowing(precision, device_name):  # a scale no backing-off cures: that is divergence
        return torch.amp.GradScaler("cpu", init_scale=2.0**127, backoff_factor=0.999)

    monkeypatch.setattr(neurofm.training.steps, "_grad_scaler", always_overflowing)
    monkeypatch.setattr(neurofm.training.steps, "MAX_OVERFLOWS_IN_A_ROW", 1)
    with pytest.warns(RuntimeWarning, match="Non-finite gradient"):
        diverged, _ = _fitted(tmp_path / "again", save="none")
    assert diverged.get_failure_diagnostics()["non_finite"]["what"] == "gradient"


def test_frozen_extraction_uses_the_gpu_when_there_is_one_and_keys_its_embeddings_apart(tmp_path, windows_19ch):
    from neurofm.configs import FoundationEmbeddingModelConfig
    from neurofm.estimators.frozen import FoundationEmbedder

    assert FoundationEmbeddingModelConfig(model_key="cbramod").device == "auto"
    assert FoundationEmbedder().device == "auto"

    def make(device):
        return FoundationEmbedder(
            "cbramod",
            weights="random",
            sfreq=160.0,
            ch_names=list(STANDARD_1020_19),
            device=device,
            cache_dir=str(tmp_path),
            verbose=False,
            model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        ).fit(windows_19ch)

    cpu = make("cpu")
    if not torch.cuda.is_available():
        assert make("auto").device_ == "cpu" and make("auto").fingerprint_ == cpu.fingerprint_  # nothing changes here
    other = make("meta")  # another device: its embeddings are never served for the CPU's, nor the reverse
    assert other.fingerprint_ != cpu.fingerprint_ and other.manifest_["device"] == "meta"
    assert "device" not in cpu.manifest_


def test_non_finite_embeddings_are_never_cached(tmp_path, windows_19ch, monkeypatch, caplog):
    import neurofm.estimators.frozen as frozen
    from neurofm.estimators.frozen import FoundationEmbedder

    embed = frozen.embed_windows

    def overflowing(*args, **kwargs):  # what an fp16 overflow gives: one window's embedding is inf
        out = embed(*args, **kwargs)
        out[0] = np.inf
        return out

    def make():
        return FoundationEmbedder(
            "cbramod",
            weights="random",
            sfreq=160.0,
            ch_names=list(STANDARD_1020_19),
            device="cpu",
            cache_dir=str(tmp_path),
            verbose=False,
            model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        ).fit(windows_19ch)

    monkeypatch.setattr(frozen, "embed_windows", overflowing)
    with caplog.at_level("WARNING", logger="neurofm"):
        first = make().transform(windows_19ch)
    assert np.isinf(first[0]).all() and "non-finite embeddings for 1 window(s)" in caplog.text
    monkeypatch.setattr(frozen, "embed_windows", embed)
    again = make()
    second = again.transform(windows_19ch)
    assert (again.cache_hits_, again.cache_misses_) == (2, 1) and np.isfinite(second).all()
    np.testing.assert_array_equal(second[1:], first[1:])


TRAIN_MODES = ["frozen", "full", "lora", "qlora", "ia3", "dora", "adalora", "oft"]


def _tuner(tmp_path, mode, device="meta", **trainer):
    from neurofm.configs import DeviceConfig, LoRAConfig

    settings = {"max_epochs": 2, "batch_size": 4, "validation_fraction": 0, "early_stopping_patience": None} | trainer
    config = NeuralFineTuneConfig(
        model_key="labram",
        weights="random",
        train_mode=mode,
        lora=LoRAConfig(r=2),
        model_kwargs=get_model_spec("labram").tiny_kwargs,
        device=DeviceConfig(device=device),
        trainer=TrainerConfig(**settings),
        checkpoints=CheckpointConfig(
            save="none" if device == "meta" else "last", monitor="train_loss", directory=str(tmp_path / "checkpoints")
        ),
    )
    return NeuralFineTuner(
        config=config, sfreq=200.0, ch_names=list(STANDARD_1020_19), verbose=False, cache_dir=str(tmp_path / "cache")
    )


def _windows():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((8, 19, 800)) * 20e-6).astype(np.float32), np.tile([0, 1], 4)


@pytest.mark.parametrize("mode", TRAIN_MODES)
def test_every_train_mode_trains_wholly_on_the_device(
    mode, tmp_path, meta_scalars_read_as_one, quantize_in_place_on_meta
):
    X, y = _windows()
    # probe_epochs: the first epoch trains the head alone, the second the rest too (a new optimiser mid-run)
    tuner = _tuner(tmp_path, mode, probe_epochs=1 if mode != "frozen" else 0)
    if mode == "adalora":  # peft's rank allocation reads its mask back as a list, after a step wholly on the device
        with pytest.raises(NotImplementedError, match=_ALL_ON_META):
            tuner.fit(X, y)
        return
    tuner.fit(X, y)
    assert len(tuner.get_training_history()) == 2
    assert {p.device.type for p in tuner.net_.parameters()} == {"meta"}
    assert {b.device.type for b in tuner.net_.buffers()} <= {"meta"}
    with pytest.raises(NotImplementedError, match=_ALL_ON_META):
        tuner.predict(X)


def test_validation_scoring_runs_on_the_device(tmp_path, meta_scalars_read_as_one):
    X, y = _windows()
    with pytest.raises(NotImplementedError, match=_ALL_ON_META):  # the epoch ran; scoring reads back its outputs
        _tuner(tmp_path, "full", validation_fraction=0.25).fit(X, y)


@pytest.mark.parametrize("mode", ["lora", "qlora"])
def test_adapter_checkpoints_reload_on_the_device(mode, tmp_path, quantize_in_place_on_meta):
    X, y = _windows()
    folder = _tuner(tmp_path, mode, device="cpu", max_epochs=1).fit(X, y).get_checkpoint_manifest()["directory"]
    reloaded = NeuralFineTuner.from_checkpoint(folder, "last", device="meta")
    assert {p.device.type for p in reloaded.net_.parameters()} == {"meta"}
    with pytest.raises(NotImplementedError, match=_ALL_ON_META):
        reloaded.predict(X)


@pytest.mark.parametrize("key", ["cbramod", "labram", "reve"])
def test_frozen_extraction_runs_wholly_on_the_device(key, tmp_path, windows_19ch):
    """Adaptation output, the backbone (REVE's position bank included) and pooling all on the device; the
    pipelined GPU path (batches prepared ahead, one copy back per chunk) is the one taken off the CPU."""
    from neurofm.estimators.frozen import FoundationEmbedder

    embedder = FoundationEmbedder(
        key,
        weights="random",
        sfreq=160.0,
        ch_names=list(STANDARD_1020_19),
        device="meta",
        cache_dir=str(tmp_path),
        verbose=False,
        model_kwargs=get_model_spec(key).tiny_kwargs,
    ).fit(windows_19ch)
    with pytest.raises(NotImplementedError, match=_ALL_ON_META):
        embedder.transform(windows_19ch)
    assert {p.device.type for p in embedder.backbone_.module.parameters()} == {"meta"}
