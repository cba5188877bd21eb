"""backend='hugging_face': a transformers-format encoder written by the test itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from neurofm.configs import FoundationEmbeddingModelConfig  # noqa: E402
from neurofm.estimators.frozen import FoundationEmbedder  # noqa: E402
from neurofm.exceptions import WeightsError  # noqa: E402
from neurofm.simulate import STANDARD_1020_19  # noqa: E402


class TinyEEGConfig(transformers.PretrainedConfig):
    model_type = "neurofm_tiny_eeg"

    def __init__(self, patch_size=200, hidden_size=16, **kwargs):
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        super().__init__(**kwargs)


class TinyEEGModel(transformers.PreTrainedModel):
    config_class = TinyEEGConfig
    base_model_prefix = "tiny"

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.patch_size, config.hidden_size)
        self.post_init()

    def forward(self, x):
        b, c, t = x.shape
        patches = x.reshape(b, c, t // self.config.patch_size, self.config.patch_size)
        tokens = self.proj(patches).reshape(b, -1, self.config.hidden_size)
        return transformers.modeling_outputs.BaseModelOutput(last_hidden_state=tokens)


transformers.AutoConfig.register("neurofm_tiny_eeg", TinyEEGConfig)
transformers.AutoModel.register(TinyEEGConfig, TinyEEGModel)


@pytest.fixture()
def saved_encoder(tmp_path):
    torch.manual_seed(0)
    model = TinyEEGModel(TinyEEGConfig())
    model.save_pretrained(tmp_path / "tiny-eeg")
    return model, tmp_path / "tiny-eeg"


def embedder(path, **kw):
    return FoundationEmbedder(
        "cbramod",
        backend="hugging_face",
        weights=str(path),
        sfreq=160.0,
        ch_names=list(STANDARD_1020_19),
        cache_embeddings=False,
        verbose=False,
        **kw,
    )


def test_transformers_encoder_embeds_adapted_windows(saved_encoder, windows_19ch):
    model, path = saved_encoder
    emb = embedder(path).fit(windows_19ch)
    E = emb.transform(windows_19ch)
    assert E.shape == (3, 16)
    x = torch.from_numpy(emb.plan_.apply(windows_19ch))  # cbramod's adaptation: 200 Hz, µV / 100
    with torch.no_grad():
        expected = model(x).last_hidden_state.mean(dim=1).numpy()
    np.testing.assert_array_equal(E, expected)  # the encoder's own output, bit for bit
    assert emb.backbone_.backend == "hugging_face"


def test_remote_code_needs_explicit_permission(saved_encoder, windows_19ch):
    _, path = saved_encoder
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "some_unregistered_eeg_model"
    config["auto_map"] = {"AutoModel": "modeling_remote.RemoteModel", "AutoConfig": "modeling_remote.RemoteConfig"}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="trust_remote_code=True"):
        embedder(path).fit(windows_19ch)


def test_config_accepts_the_backend():
    cfg = FoundationEmbeddingModelConfig(
        backend="hugging_face", model_key="reve", weights="org/name", trust_remote_code=True
    )
    assert cfg.trust_remote_code is True


def test_a_transformers_encoder_embeds_wholly_on_the_device(saved_encoder, windows_19ch):
    """The hugging_face backend on PyTorch's meta device (see tests/test_device_placement.py)."""
    _, path = saved_encoder
    emb = embedder(path, device="meta").fit(windows_19ch)
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta tensor"):
        emb.transform(windows_19ch)
    assert {p.device.type for p in emb.backbone_.module.parameters()} == {"meta"}
