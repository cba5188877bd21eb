"""Frozen extraction, fine-tuning, reloading, fp16 and NCCL pretraining on a CUDA device.

Skipped as a whole where there is no CUDA device. ``tests/test_device_placement.py``
proves on PyTorch's ``meta`` device that models and batches go where they are
sent; what only a real GPU shows (its kernels, TF32, fp16 loss scaling,
bitsandbytes' CUDA layers, NCCL) is checked here.

To check the logic of these tests on a machine without a GPU, run them on the
CPU::

    NEUROFM_GPU_TEST_DEVICE=cpu python -m pytest tests/test_neural_gpu.py

The cases only CUDA can run (fp16 loss scaling, NCCL) then skip with "needs a
CUDA device". The NCCL case also needs two GPUs (NCCL cannot run two ranks on
one device) and skips with "needs two CUDA devices" on a one-GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import neurofm.training
from neurofm.adapters import PEFT_MODES
from neurofm.configs import CheckpointConfig, DeviceConfig, LoRAConfig, NeuralFineTuneConfig, TrainerConfig
from neurofm.estimators.frozen import FoundationEmbedder
from neurofm.estimators.neural import NeuralFineTuner
from neurofm.models import get_model_spec
from neurofm.pretrain import PretrainConfig
from neurofm.simulate import STANDARD_1020_19, simulate_eeg_dataset

#: The device under test: "cuda" (or "cuda:N") on a GPU machine, "cpu" to check the tests' logic without one.
DEVICE = os.environ.get("NEUROFM_GPU_TEST_DEVICE", "cuda")
DEVICE_TYPE = DEVICE.split(":")[0]
if DEVICE_TYPE not in ("cpu", "cuda"):
    raise ValueError(f"NEUROFM_GPU_TEST_DEVICE={DEVICE!r}: use 'cuda', 'cuda:N' or 'cpu'.")
ON_CUDA = DEVICE_TYPE == "cuda"

pytestmark = pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA device")
needs_cuda = pytest.mark.skipif(not ON_CUDA, reason="needs a CUDA device")

#: LaBraM lists every train mode (OFT included; the README lists the models it fails on).
MODEL = "labram"
TRAIN_MODES = ("frozen", "full", *PEFT_MODES)

# fp32 on CUDA is not the CPU's fp32: cuDNN runs convolutions in TF32 by default (10 mantissa bits, about 5e-4
# relative error per product), and kernels sum in another order. Through these one-layer models that stays well
# below 1 % of the embeddings' scale; a model left on wrong weights or inputs differs by far more.
EMBEDDING_TOLERANCE = 1e-2  # of the largest absolute CPU embedding value
# The same TF32 differences reach the logits; a probability moves by at most a quarter of its logits' difference.
PROBABILITY_TOLERANCE = 5e-3


def _on_device_type(tensors, device_type: str) -> bool:
    """Whether there is at least one tensor and every one lives on ``device_type``.

    Parameters
    ----------
    tensors : iterable of torch.Tensor
        Parameters or buffers.
    device_type : str
        ``"cpu"`` or ``"cuda"``.
    """
    tensors = list(tensors)
    return bool(tensors) and all(t.device.type == device_type for t in tensors)


@pytest.fixture(scope="module")
def dataset():
    """3 subjects x 2 classes x 4 windows of simulated 19-channel 160 Hz 4 s EEG: small enough for 8 fits."""
    return simulate_eeg_dataset(n_subjects=3, n_windows_per_class=4, random_state=2)


@pytest.fixture(scope="module")
def fitted(dataset, tmp_path_factory):
    """Fit once per train mode on the device under test, shared by the training and the reloading tests.

    Returns
    -------
    fit : callable
        ``fit(mode) -> NeuralFineTuner``, fitted with ``save="best"`` checkpoints.
    """
    X, y, meta, info = dataset
    fits: dict[str, NeuralFineTuner] = {}

    def fit(mode: str) -> NeuralFineTuner:
        if mode not in fits:
            config = NeuralFineTuneConfig(
                model_key=MODEL,
                weights="random",
                train_mode=mode,
                model_kwargs=get_model_spec(MODEL).tiny_kwargs,
                lora=LoRAConfig(r=4),
                device=DeviceConfig(device=DEVICE, precision="fp32"),
                checkpoints=CheckpointConfig(
                    save="best", directory=str(tmp_path_factory.mktemp(f"checkpoints-{mode}"))
                ),
                trainer=TrainerConfig(max_epochs=2, batch_size=8, early_stopping_patience=None),
            )
            tuner = NeuralFineTuner(
                config,
                sfreq=info["sfreq"],
                ch_names=info["ch_names"],
                metrics=["balanced_accuracy"],
                cache_dir=str(tmp_path_factory.mktemp(f"cache-{mode}")),
                verbose=False,
            )
            fits[mode] = tuner.fit(X, y, groups=meta["Subject"].to_numpy())
        return fits[mode]

    return fit


# --------------------------------------------------------------------------- frozen extraction


def test_frozen_extraction_runs_on_the_gpu_close_to_the_cpu_and_is_keyed_apart(tmp_path, windows_19ch):
    def embedder(device: str, cache: Path) -> FoundationEmbedder:
        return FoundationEmbedder(
            MODEL,
            weights="random",
            sfreq=160.0,
            ch_names=list(STANDARD_1020_19),
            device=device,
            cache_dir=str(cache),
            verbose=False,
            model_kwargs=get_model_spec(MODEL).tiny_kwargs,
        )

    # "auto" is the default; on a GPU machine it must choose the GPU. Separate caches: both sides are computed.
    on_device = embedder("auto" if DEVICE == "cuda" else DEVICE, tmp_path / "device").fit(windows_19ch)
    assert on_device.device_.startswith(DEVICE)
    embeddings = on_device.transform(windows_19ch)
    backbone = on_device.backbone_.module
    assert _on_device_type(backbone.parameters(), DEVICE_TYPE)
    assert all(b.device.type == DEVICE_TYPE for b in backbone.buffers())
    assert embeddings.shape[0] == len(windows_19ch) and np.isfinite(embeddings).all()

    on_cpu = embedder("cpu", tmp_path / "cpu").fit(windows_19ch)
    reference = on_cpu.transform(windows_19ch)
    assert on_device.cache_misses_ == on_cpu.cache_misses_ == len(windows_19ch)  # computed, not read back
    np.testing.assert_allclose(embeddings, reference, rtol=0, atol=EMBEDDING_TOLERANCE * np.abs(reference).max())
    # GPU embeddings are never served for the CPU's, nor the reverse; on the CPU the key is the CPU's own.
    assert (on_device.fingerprint_ != on_cpu.fingerprint_) == ON_CUDA


# --------------------------------------------------------------------------- fine-tuning and reloading


@pytest.mark.parametrize("mode", TRAIN_MODES)
def test_every_train_mode_trains_on_the_device(mode, fitted, dataset):
    bnb = pytest.importorskip("bitsandbytes") if mode == "qlora" else None
    X = dataset[0]
    tuner = fitted(mode)
    assert tuner.device_.startswith(DEVICE)
    history = tuner.get_training_history()
    assert history and all(np.isfinite(record["train_loss"]) for record in history)
    assert _on_device_type(tuner.net_.parameters(), DEVICE_TYPE)
    if bnb is not None:
        layers = [m for m in tuner.net_.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert layers and len(layers) == tuner.get_model_card_info()["quantized_layers"]
        # Moving a Linear4bit to its device is what quantises it: packed 4-bit codes, two per uint8.
        assert all(m.weight.device.type == DEVICE_TYPE and m.weight.dtype == torch.uint8 for m in layers)
    proba = tuner.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", TRAIN_MODES)
def test_a_checkpoint_reloads_exactly_on_the_device_and_closely_on_the_cpu(mode, fitted, dataset):
    if mode == "qlora":
        pytest.importorskip("bitsandbytes")
    X = dataset[0]
    tuner = fitted(mode)
    proba = tuner.predict_proba(X)
    folder = tuner.get_checkpoint_manifest()["directory"]

    same_device = NeuralFineTuner.from_checkpoint(folder)  # the training config's device
    assert same_device.device_.startswith(DEVICE) and _on_device_type(same_device.net_.parameters(), DEVICE_TYPE)
    np.testing.assert_array_equal(same_device.predict_proba(X), proba)

    on_cpu = NeuralFineTuner.from_checkpoint(folder, device="cpu")
    assert on_cpu.device_ == "cpu" and _on_device_type(on_cpu.net_.parameters(), "cpu")
    np.testing.assert_allclose(on_cpu.predict_proba(X), proba, rtol=0, atol=PROBABILITY_TOLERANCE)


# --------------------------------------------------------------------------- fp16


@needs_cuda
def test_fp16_overflow_steps_are_skipped_and_training_goes_on(dataset, tmp_path, monkeypatch):
    """A GradScaler starting at 2**127 overflows fp16 gradients: it skips those steps and backs off (2**127 and
    2**63 both overflow fp16, whose largest value is 65504; 2**-1 does not), and the steps after it train.

    24 windows, batch 8, 2 epochs: 6 optimiser steps, of which only the first few may be skipped.
    """

    def overflowing_scaler(precision, device_name):
        return torch.amp.GradScaler("cuda", init_scale=2.0**127, backoff_factor=2.0**-64)

    monkeypatch.setattr(neurofm.training.steps, "_grad_scaler", overflowing_scaler)
    X, y, meta, info = dataset
    config = NeuralFineTuneConfig(
        model_key=MODEL,
        weights="random",
        train_mode="full",
        model_kwargs=get_model_spec(MODEL).tiny_kwargs,
        device=DeviceConfig(device=DEVICE, precision="fp16"),
        checkpoints=CheckpointConfig(save="none", monitor="train_loss"),
        trainer=TrainerConfig(max_epochs=2, batch_size=8, validation_fraction=0, early_stopping_patience=None),
    )
    tuner = NeuralFineTuner(
        config, sfreq=info["sfreq"], ch_names=info["ch_names"], cache_dir=str(tmp_path), verbose=False
    ).fit(X, y)
    n_steps = 2 * int(np.ceil(len(X) / 8))
    diagnostics = tuner.get_failure_diagnostics()
    assert 1 <= diagnostics["overflow_steps"] < n_steps  # some steps skipped, not all
    assert diagnostics["non_finite"] is None and not tuner.failed_
    history = tuner.get_training_history()
    assert len(history) == 2 and all(np.isfinite(record["train_loss"]) for record in history)


# --------------------------------------------------------------------------- NCCL pretraining

TINY_TOKENIZER = {"codebook_size": 32, "code_dim": 8, "depth": 1, "num_heads": 2, "decoder_depth": 1}


def _tokenizer_stage_config(tmp: Path, corpus: Path, device: str, max_steps: int = 3) -> PretrainConfig:
    """A tiny tokenizer-stage pretraining config (``tests/test_pretrain.py``'s ``stage_config``, stage 1 only).

    Parameters
    ----------
    tmp : Path
        The run writes to ``tmp / "tokenizer"``.
    corpus : Path
        Folder of recordings.
    device : {"cpu", "cuda"}
        ``"cuda"``: each process takes the GPU of its local rank and they talk over NCCL; ``"cpu"``: gloo.
    max_steps : int
        Optimiser steps.
    """
    return PretrainConfig.model_validate(
        {
            "stage": "tokenizer",
            "output_dir": str(tmp / "tokenizer"),
            "corpus": {"paths": [str(corpus)], "window_seconds": 2.0},
            "optimizer": {"max_steps": max_steps, "batch_size": 4, "lr": 1e-3},
            "checkpoint_every": 2,
            "progress": False,
            "tokenizer": dict(TINY_TOKENIZER),
            "device": device,
        }
    )


def _torchrun_pretrain(config_path: Path, n_processes: int = 2) -> subprocess.CompletedProcess:
    """Run ``torchrun --nproc_per_node=N -m neurofm pretrain config.yaml`` with this interpreter's torchrun."""
    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run(
        [str(torchrun), f"--nproc_per_node={n_processes}", "-m", "neurofm", "pretrain", str(config_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@needs_cuda
def test_torchrun_pretrains_on_two_gpus_over_nccl_and_keeps_the_replicas_identical(tmp_path, corpus_dir):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")  # NCCL cannot run two ranks on one GPU
    config_path = tmp_path / "stage1.yaml"
    _tokenizer_stage_config(tmp_path, corpus_dir, device="cuda").to_yaml(config_path)
    done = _torchrun_pretrain(config_path)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((tmp_path / "tokenizer" / "tokenizer.json").read_text())
    assert meta["world_size"] == 2 and meta["replicas_identical"] is True
    shards = [set(shard) for shard in meta["shards"]]
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 4
