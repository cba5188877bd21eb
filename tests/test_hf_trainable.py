"""backend='hugging_face' encoders are trainable: every train mode, default adapter targets proved, exact reloads,
and the decoding guide's example 2 as written (weights aside: a small transformers encoder this test writes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from neurofm import Experiment  # noqa: E402
from neurofm.adapters import PEFT_MODES, linear_layer_names  # noqa: E402
from neurofm.configs import (  # noqa: E402
    CheckpointConfig,
    CVConfig,
    DeviceConfig,
    ExperimentConfig,
    LoRAConfig,
    NeuralFineTuneConfig,
    QuantizationConfig,
    TrainerConfig,
)
from neurofm.estimators.neural import NeuralFineTuner  # noqa: E402
from neurofm.exceptions import ConfigError  # noqa: E402
from neurofm.simulate import STANDARD_1020_19  # noqa: E402


class TinyTransformerConfig(transformers.PretrainedConfig):
    model_type = "neurofm_tiny_transformer"

    def __init__(self, patch_size=200, hidden_size=16, n_heads=2, **kwargs):
        self.patch_size, self.hidden_size, self.n_heads = patch_size, hidden_size, n_heads
        super().__init__(**kwargs)


class TinyTransformer(transformers.PreTrainedModel):
    """Patches -> tokens -> attention (torch's own, whose projections adapters cannot reach) -> an MLP."""

    config_class = TinyTransformerConfig
    base_model_prefix = "tiny"

    def __init__(self, config):
        super().__init__(config)
        d = config.hidden_size
        self.patch = torch.nn.Linear(config.patch_size, d)
        self.attention = torch.nn.MultiheadAttention(d, config.n_heads, batch_first=True)
        self.mlp_in = torch.nn.Linear(d, 2 * d)
        self.mlp_out = torch.nn.Linear(2 * d, d)
        self.post_init()

    def forward(self, x):
        b, c, t = x.shape
        tokens = self.patch(x.reshape(b, c * (t // self.config.patch_size), self.config.patch_size))
        tokens = tokens + self.attention(tokens, tokens, tokens, need_weights=False)[0]
        tokens = tokens + self.mlp_out(torch.nn.functional.gelu(self.mlp_in(tokens)))
        return transformers.modeling_outputs.BaseModelOutput(last_hidden_state=tokens)


transformers.AutoConfig.register("neurofm_tiny_transformer", TinyTransformerConfig)
transformers.AutoModel.register(TinyTransformerConfig, TinyTransformer)
OWN_LINEARS = ["patch", "mlp_in", "mlp_out"]  # attention.out_proj is torch's MHA's: read directly, not a target


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("encoder") / "tiny-transformer"
    TinyTransformer(TinyTransformerConfig()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def windows():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((16, 19, 640)) * 20e-6).astype(np.float32), np.tile([0, 1], 8)


def _config(encoder, mode, **kw) -> NeuralFineTuneConfig:
    return NeuralFineTuneConfig(
        backend="hugging_face",
        model_key=kw.pop("model_key", "cbramod"),
        weights=str(encoder),
        train_mode=mode,
        lora=kw.pop("lora", LoRAConfig(r=2)),
        trainer=kw.pop("trainer", TrainerConfig(max_epochs=2, batch_size=8, validation_fraction=0.25)),
        checkpoints=kw.pop("checkpoints", CheckpointConfig(save="none")),
        **kw,
    )


def _tuner(config, tmp_path=None) -> NeuralFineTuner:
    return NeuralFineTuner(
        config=config, sfreq=160.0, ch_names=list(STANDARD_1020_19), verbose=False, cache_dir=str(tmp_path or ".")
    )


def test_default_targets_are_the_encoders_own_linear_layers():
    model = TinyTransformer(TinyTransformerConfig())
    assert linear_layer_names(model) == OWN_LINEARS


@pytest.mark.parametrize("mode", ["frozen", "full", *PEFT_MODES])
def test_every_train_mode_trains_a_transformers_encoder(encoder, windows, mode, tmp_path):
    X, y = windows
    if mode == "oft":
        pytest.importorskip("peft", minversion="0.13")
    tuner = _tuner(_config(encoder, mode), tmp_path).fit(X, y)
    proba = tuner.predict_proba(X)
    assert proba.shape == (16, 2) and np.isfinite(proba).all()
    assert all(np.isfinite(r["train_loss"]) for r in tuner.get_training_history())
    trainable = {n for n, p in tuner.net_.backbone.named_parameters() if p.requires_grad}
    if mode == "frozen":
        assert not trainable
    elif mode == "full":
        assert {n for n, _ in tuner.net_.backbone.named_parameters()} == trainable
    else:
        # peft's own parameters on exactly the encoder's own linear layers, nothing of the base.
        wrapped = {name.split(".base_layer")[0].split("base_model.model.")[-1] for name in _adapted(tuner)}
        assert wrapped == set(OWN_LINEARS), mode
        assert all("base_layer" not in n for n in trainable)
    if mode == "qlora":
        assert tuner.get_model_card_info()["quantization"]["layers"] == OWN_LINEARS


def _adapted(tuner) -> list[str]:
    return [n for n, m in tuner.net_.backbone.named_modules() if hasattr(m, "base_layer")]


@pytest.mark.parametrize("train", [True, False])
def test_each_default_lora_target_changes_the_output(encoder, windows, train, tmp_path):
    """Proved by perturbation: an adapter that the forward pass never reads would change nothing."""
    X, y = windows
    tuner = _tuner(_config(encoder, "lora", trainer=TrainerConfig(max_epochs=1, batch_size=8)), tmp_path).fit(X, y)
    net = tuner.net_.train(train)
    x = torch.from_numpy(tuner._adapt(X[:4]))
    torch.manual_seed(0)
    with torch.no_grad():
        before = net(x).clone() if not train else None
        for name in _adapted(tuner):
            layer = tuner.net_.backbone.get_submodule(name)
            if train:
                torch.manual_seed(0)
                before = net(x).clone()
            original = layer.lora_B["default"].weight.clone()
            layer.lora_B["default"].weight.add_(0.5)
            torch.manual_seed(0)
            after = net(x)
            layer.lora_B["default"].weight.copy_(original)
            assert not torch.equal(before, after), f"the adapter on {name} does not reach the output"


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_checkpoints_reload_to_identical_predictions(encoder, windows, mode, tmp_path):
    X, y = windows
    config = _config(encoder, mode, checkpoints=CheckpointConfig(save="best", directory=str(tmp_path / "ckpt")))
    tuner = _tuner(config, tmp_path).fit(X, y)
    folder = tuner.get_checkpoint_manifest()["directory"]
    reloaded = NeuralFineTuner.from_checkpoint(folder, device="cpu")
    np.testing.assert_array_equal(reloaded.predict_proba(X), tuner.predict_proba(X))


def test_an_adapter_target_the_encoder_lacks_is_refused_before_training(encoder, windows, tmp_path):
    X, y = windows
    config = _config(encoder, "lora", lora=LoRAConfig(r=2, target_modules=["query_key_value"]))
    with pytest.raises(ConfigError, match=r"query_key_value.*match no module.*mlp_in"):
        _tuner(config, tmp_path).check_input(X.shape, y)


def test_the_decoding_guides_fine_tuning_example_runs_as_written(encoder, small_dataset, tmp_path):
    X, y, meta, info = small_dataset
    config = ExperimentConfig(
        task="classification",
        models={
            "reve_qlora": NeuralFineTuneConfig(
                backend="hugging_face",
                model_key="reve",
                input_kind="epoched",
                train_mode="qlora",
                lora=LoRAConfig(r=16, alpha=32, dropout=0.05),
                quantization=QuantizationConfig(enabled=True, load_in_4bit=True),
                device=DeviceConfig(device="auto", precision="bf16"),
                checkpoints=CheckpointConfig(save="best", directory=str(tmp_path / "checkpoints")),
                weights=str(encoder),  # the guide's: REVE's published repository (brain-bzh/reve-base)
                trainer=TrainerConfig(max_epochs=2, batch_size=16),  # the guide's: 30 epochs
            )
        },
        metrics=["balanced_accuracy"],
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),  # the guide's: 5 folds
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    result = Experiment(config).run(X, y, meta, **info)
    scores = result.get_detailed_scores()
    assert len(scores) == 2 and scores["Value"].between(0, 1).all()
    cards = result.get_model_artifacts(artifact_type="model_card")
    quantization = cards[cards["ArtifactKey"] == "quantization"]["ArtifactValue"]
    assert all(q["bits"] == 4 and q["layers"] == OWN_LINEARS for q in quantization)
