"""Trainable decoders on a CUDA device (skipped where there is none)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurofm.configs import CheckpointConfig, DeviceConfig, LoRAConfig, NeuralFineTuneConfig, TrainerConfig
from neurofm.estimators.neural import NeuralFineTuner
from neurofm.models import get_model_spec
from neurofm.simulate import simulate_eeg_dataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize(("mode", "precision"), [("qlora", "bf16"), ("lora", "bf16"), ("full", "fp16")])
def test_trains_on_cuda_and_reloads(mode, precision, tmp_path):
    bnb = pytest.importorskip("bitsandbytes") if mode == "qlora" else None
    X, y, meta, info = simulate_eeg_dataset(n_subjects=3, n_windows_per_class=8, random_state=0)
    cfg = NeuralFineTuneConfig(
        model_key="labram", weights="random", train_mode=mode, model_kwargs=get_model_spec("labram").tiny_kwargs,
        lora=LoRAConfig(r=4), device=DeviceConfig(device="auto", precision=precision),
        checkpoints=CheckpointConfig(save="best", directory=str(tmp_path)),
        trainer=TrainerConfig(max_epochs=3, batch_size=8, early_stopping_patience=None),
    )
    est = NeuralFineTuner(cfg, sfreq=info["sfreq"], ch_names=info["ch_names"], metrics=["balanced_accuracy"],
                          verbose=False).fit(X, y, groups=meta["Subject"].to_numpy())
    assert est.device_.startswith("cuda")
    assert next(est.net_.parameters()).is_cuda
    assert all(np.isfinite(r["train_loss"]) for r in est.get_training_history())
    if bnb is not None:
        layers = [m for m in est.net_.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert layers and all(m.weight.device.type == "cuda" and m.weight.dtype == torch.uint8 for m in layers)
    proba = est.predict_proba(X)
    reloaded = NeuralFineTuner.from_checkpoint(est.get_checkpoint_manifest()["directory"])
    np.testing.assert_array_equal(reloaded.predict_proba(X), proba)
