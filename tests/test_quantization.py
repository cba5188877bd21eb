"""QuantizationConfig means what it says: each setting honoured or refused before any compute."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from neurofm.configs import (
    CheckpointConfig,
    DeviceConfig,
    LoRAConfig,
    NeuralFineTuneConfig,
    QuantizationConfig,
    TrainerConfig,
)
from neurofm.estimators.neural import NeuralFineTuner
from neurofm.models import get_model_spec
from neurofm.simulate import STANDARD_1020_19

bnb = pytest.importorskip("bitsandbytes")


def _config(mode="qlora", **quantization) -> NeuralFineTuneConfig:
    return NeuralFineTuneConfig(
        model_key="cbramod",
        weights="random",
        train_mode=mode,
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        lora=LoRAConfig(r=2),
        quantization=QuantizationConfig(**quantization),
        device=DeviceConfig(device="cpu"),
        trainer=TrainerConfig(max_epochs=1, batch_size=8, validation_fraction=0.0, early_stopping_patience=None),
        checkpoints=CheckpointConfig(save="none", monitor="train_loss"),
    )


def _fit(config) -> NeuralFineTuner:
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((16, 19, 640)) * 20e-6).astype(np.float32)
    y = np.tile([0, 1], 8)
    tuner = NeuralFineTuner(config=config, sfreq=160.0, ch_names=list(STANDARD_1020_19), verbose=False)
    tuner.fit(X, y)
    assert np.isfinite(tuner.predict_proba(X)).all()
    return tuner


def _quantized_layers(tuner):
    return {
        name: m for name, m in tuner.net_.named_modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))
    }


def test_dtypes_have_one_spelling_written_and_both_read():
    assert QuantizationConfig(compute_dtype="bfloat16").compute_dtype == "bf16"
    assert QuantizationConfig(compute_dtype="fp16").compute_dtype == "fp16"
    assert DeviceConfig(precision="float32").precision == "fp32"
    text = _config(compute_dtype="float32").to_yaml()
    assert "compute_dtype: fp32" in text and "float32" not in text
    assert NeuralFineTuneConfig.from_yaml(text).quantization.compute_dtype == "fp32"


@pytest.mark.parametrize(
    ("mode", "quantization", "message"),
    [
        ("qlora", {"enabled": False}, "train_mode='qlora' quantises the backbone, but quantization.enabled=False"),
        ("lora", {"enabled": True, "load_in_4bit": True, "load_in_8bit": True}, "both set; choose one width"),
        ("lora", {"enabled": True, "load_in_4bit": False}, "Neither load_in_4bit nor load_in_8bit"),
        ("full", {"enabled": True}, "4-bit quantised backbone cannot be fully fine-tuned"),
        ("full", {"enabled": True, "load_in_8bit": True}, "8-bit quantised backbone cannot be fully fine-tuned"),
        ("qlora", {"load_in_8bit": True, "quant_type": "fp4"}, "'quant_type' is a 4-bit setting"),
        ("qlora", {"load_in_8bit": True, "double_quant": False}, "'double_quant' is a 4-bit setting"),
    ],
)
def test_contradictions_are_refused_by_the_config(mode, quantization, message):
    with pytest.raises(ValidationError, match=message):
        _config(mode, **quantization)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"quant_type": "nf4", "double_quant": True, "compute_dtype": "fp32"}, ("nf4", True, torch.float32)),
        ({"quant_type": "fp4", "double_quant": False, "compute_dtype": "bf16"}, ("fp4", False, torch.bfloat16)),
    ],
)
def test_each_4bit_setting_reaches_the_layers_and_the_model_card(settings, expected):
    tuner = _fit(_config("qlora", **settings))
    layers = _quantized_layers(tuner)
    assert layers and all(isinstance(m, bnb.nn.Linear4bit) for m in layers.values())
    quant_type, double_quant, compute_dtype = expected
    for layer in layers.values():
        assert layer.weight.quant_type == quant_type
        assert layer.weight.quant_state.nested is double_quant  # double quantisation: constants quantised too
        assert layer.compute_dtype == compute_dtype
    card = tuner.get_model_card_info()["quantization"]
    assert card["bits"] == 4 and card["quant_type"] == quant_type and card["double_quant"] is double_quant
    assert card["compute_dtype"] == settings["compute_dtype"]
    assert len(card["layers"]) == len(layers)


def test_8bit_layers_train_adapters_and_are_recorded():
    tuner = _fit(_config("qlora", load_in_8bit=True))
    layers = _quantized_layers(tuner)
    assert layers and all(isinstance(m, bnb.nn.Linear8bitLt) for m in layers.values())
    assert all(m.weight.dtype == torch.int8 for m in layers.values())
    history = tuner.get_training_history()
    assert np.isfinite(history[0]["train_loss"])
    card = tuner.get_model_card_info()["quantization"]
    assert card["bits"] == 8 and "quant_type" not in card and len(card["layers"]) == len(layers)


def test_lora_on_a_quantised_backbone_is_recorded_as_what_it_is():
    card = _fit(_config("lora", enabled=True)).get_model_card_info()
    assert card["train_mode"] == "lora" and card["quantization"]["bits"] == 4 and card["quantized_layers"] > 0
    plain = _fit(_config("lora")).get_model_card_info()
    assert plain["quantization"] is None and plain["quantized_layers"] == 0
