"""LaBraM's released files in the authors' key layout: labram-base.pth in every decoding mode, vqnsp.pth in stage 2.

The files here are built in the layout of the authors' model definitions (935963004/LaBraM: modeling_finetune.py,
modeling_pretrain.py, modeling_vqnsp.py, norm_ema_quantizer.py) at a tiny size, and saved as their training script
saves them. The expectations are independent of neurofm's mapping: the same tensors copied by hand, attribute by
attribute, into braindecode's Labram.
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from braindecode.models import Labram

from neurofm.adapt import plan_adaptation
from neurofm.data import SignalInfo
from neurofm.estimators.frozen import FoundationEmbedder
from neurofm.exceptions import WeightsError
from neurofm.models import create_backbone, get_model_spec
from neurofm.pretrain import PretrainConfig, load_tokenizer, pretrain
from neurofm.pretrain import trainer as trainer_module
from neurofm.simulate import STANDARD_1020_19

DIM = 200  # LaBraM's token width: 8 temporal-convolution channels x 25 steps of a 200-sample patch
TINY = {"num_layers": 2, "num_heads": 2}
VOCAB = 16
CODES, CODE_DIM = 32, 8
# What labram-base.pth holds besides the backbone: the pretraining heads, dropped on loading.
PRETRAINING_ONLY = {
    "student.mask_token",
    "student.lm_head.weight",
    "student.lm_head.bias",
    "lm_head.weight",
    "lm_head.bias",
    "projection_head.0.weight",
    "projection_head.0.bias",
}


# --------------------------------------------------------------------------- files in the authors' layout


def _neural_transformer(g, *, depth, heads, qkv_bias, qk_norm, layer_scale, final_norm) -> dict:
    """The tensors of the authors' NeuralTransformer, under their names, with random values."""

    def rand(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    def norm(n):
        return 1 + rand(n, scale=0.2), rand(n)

    s = {"cls_token": rand(1, 1, DIM, scale=0.5), "pos_embed": rand(1, 129, DIM, scale=0.5)}
    s["time_embed"] = rand(1, 16, DIM, scale=0.5)
    for i, (inputs, kernel) in enumerate([(1, 15), (8, 3), (8, 3)], start=1):
        s[f"patch_embed.conv{i}.weight"] = rand(8, inputs, 1, kernel, scale=0.3)
        s[f"patch_embed.conv{i}.bias"] = rand(8)
        s[f"patch_embed.norm{i}.weight"], s[f"patch_embed.norm{i}.bias"] = norm(8)
    for b in range(depth):
        p = f"blocks.{b}."
        s[p + "norm1.weight"], s[p + "norm1.bias"] = norm(DIM)
        s[p + "attn.qkv.weight"] = rand(3 * DIM, DIM)
        if qkv_bias:
            s[p + "attn.q_bias"], s[p + "attn.v_bias"] = rand(DIM), rand(DIM)
        if qk_norm:
            s[p + "attn.q_norm.weight"], s[p + "attn.q_norm.bias"] = norm(DIM // heads)
            s[p + "attn.k_norm.weight"], s[p + "attn.k_norm.bias"] = norm(DIM // heads)
        s[p + "attn.proj.weight"], s[p + "attn.proj.bias"] = rand(DIM, DIM), rand(DIM)
        s[p + "norm2.weight"], s[p + "norm2.bias"] = norm(DIM)
        s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"] = rand(4 * DIM, DIM), rand(4 * DIM)
        s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"] = rand(DIM, 4 * DIM), rand(DIM)
        if layer_scale:
            s[p + "gamma_1"], s[p + "gamma_2"] = 0.1 + rand(DIM), 0.1 + rand(DIM)
    s[f"{final_norm}.weight"], s[f"{final_norm}.bias"] = norm(DIM)
    return s


def labram_base_state(seed: int = 0) -> dict:
    """labram-base.pth's state dict: NeuralTransformerForMEM, the backbone under student. (qk norms, layer scales)."""
    g = torch.Generator().manual_seed(seed)
    student = _neural_transformer(
        g, depth=2, heads=2, qkv_bias=False, qk_norm=True, layer_scale=True, final_norm="norm"
    )
    student["mask_token"] = torch.randn(1, 1, DIM, generator=g)
    student["lm_head.weight"], student["lm_head.bias"] = torch.randn(VOCAB, DIM, generator=g), torch.zeros(VOCAB)
    state = {f"student.{k}": v for k, v in student.items()}
    state["lm_head.weight"], state["lm_head.bias"] = torch.randn(VOCAB, DIM, generator=g), torch.zeros(VOCAB)
    state["projection_head.0.weight"], state["projection_head.0.bias"] = (
        torch.randn(DIM, DIM, generator=g),
        torch.zeros(DIM),
    )
    return state


def vqnsp_state(seed: int = 1) -> dict:
    """vqnsp.pth's state dict: VQNSP with its encoder, decoder, codebook and task layers."""
    g = torch.Generator().manual_seed(seed)
    # get_model_default_params: q/v biases, no q/k norms, no layer scales (init_values=0), mean pooling (fc_norm).
    config = dict(heads=10, qkv_bias=True, qk_norm=False, layer_scale=False, final_norm="fc_norm")
    encoder = _neural_transformer(g, depth=1, **config)
    decoder = {k: v for k, v in _neural_transformer(g, depth=1, **config).items() if not k.startswith("patch_embed")}
    decoder["patch_embed.proj.weight"] = torch.randn(DIM, CODE_DIM, 1, 1, generator=g)  # codes in, a 1x1 conv
    decoder["patch_embed.proj.bias"] = torch.zeros(DIM)
    state = {f"encoder.{k}": v for k, v in encoder.items()} | {f"decoder.{k}": v for k, v in decoder.items()}
    state["quantize.embedding.weight"] = F.normalize(torch.randn(CODES, CODE_DIM, generator=g), dim=-1)
    state["quantize.embedding.cluster_size"] = torch.rand(CODES, generator=g)
    state["quantize.embedding.embed_avg"] = torch.randn(CODES, CODE_DIM, generator=g)
    state["quantize.embedding.initted"] = torch.tensor([1.0])
    state["quantize.cluster_size"] = torch.rand(CODES, generator=g)
    state["encode_task_layer.0.weight"], state["encode_task_layer.0.bias"] = (
        torch.randn(DIM, DIM, generator=g) * 0.1,
        torch.zeros(DIM),
    )
    state["encode_task_layer.2.weight"] = torch.randn(CODE_DIM, DIM, generator=g) * 0.1
    state["encode_task_layer.2.bias"] = torch.zeros(CODE_DIM)
    for head in ("decode_task_layer", "decode_task_layer_angle"):
        state[f"{head}.0.weight"], state[f"{head}.0.bias"] = torch.randn(DIM, DIM, generator=g), torch.zeros(DIM)
        state[f"{head}.2.weight"], state[f"{head}.2.bias"] = torch.randn(200, DIM, generator=g), torch.zeros(200)
    return state


def save_like_the_authors(path, state: dict, model: str) -> str:
    """torch.save as the authors' utils.save_model: the state dict beside the optimizer, epoch and arguments."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))]).state_dict()
    args = argparse.Namespace(
        model=model, input_size=1600, codebook_size=8192, codebook_emd_dim=64, opt_betas=[0.9, 0.98]
    )
    torch.save({"model": state, "optimizer": optimizer, "epoch": 49, "args": args}, path)
    return str(path)


def copy_by_hand(module: Labram, state: dict, prefix: str) -> Labram:
    """The authors' tensors put into braindecode's Labram attribute by attribute: the independent expectation."""

    def t(name):
        return state[prefix + name]

    with torch.no_grad():
        module.cls_token.copy_(t("cls_token"))
        module.position_embedding.copy_(t("pos_embed"))
        # Both implementations read the time table from row 0 for the window's patches.
        module.temporal_embedding.copy_(t("time_embed")[:, : module.temporal_embedding.shape[1]])
        conv = module.patch_embed.temporal_conv
        for layer in ("conv1", "norm1", "conv2", "norm2", "conv3", "norm3"):
            getattr(conv, layer).weight.copy_(t(f"patch_embed.{layer}.weight"))
            getattr(conv, layer).bias.copy_(t(f"patch_embed.{layer}.bias"))
        for i, block in enumerate(module.blocks):
            p = f"blocks.{i}."
            pairs = [
                (block.norm1, "norm1"),
                (block.norm2, "norm2"),
                (block.attn.proj, "attn.proj"),
                (block.mlp[0], "mlp.fc1"),
                (block.mlp[2], "mlp.fc2"),
            ]
            if block.attn.q_norm is not None:
                pairs += [(block.attn.q_norm, "attn.q_norm"), (block.attn.k_norm, "attn.k_norm")]
            for layer, name in pairs:
                layer.weight.copy_(t(p + name + ".weight"))
                layer.bias.copy_(t(p + name + ".bias"))
            block.attn.qkv.weight.copy_(t(p + "attn.qkv.weight"))
            if block.attn.q_bias is not None:
                block.attn.q_bias.copy_(t(p + "attn.q_bias"))
                block.attn.v_bias.copy_(t(p + "attn.v_bias"))
            if block.gamma_1 is not None:
                block.gamma_1.copy_(t(p + "gamma_1"))
                block.gamma_2.copy_(t(p + "gamma_2"))
        final, name = (module.fc_norm, "fc_norm") if module.fc_norm is not None else (module.norm, "norm")
        final.weight.copy_(t(name + ".weight"))
        final.bias.copy_(t(name + ".bias"))
    return module.eval()


def _signal():
    info = SignalInfo(sfreq=160.0, ch_names=tuple(STANDARD_1020_19), units=("V",) * 19)
    return plan_adaptation(get_model_spec("labram"), info, 640).target


@pytest.fixture(scope="module")
def labram_base(tmp_path_factory):
    state = labram_base_state()
    path = save_like_the_authors(tmp_path_factory.mktemp("labram") / "labram-base.pth", state, "labram_base")
    return path, state


@pytest.fixture(scope="module")
def vqnsp(tmp_path_factory):
    state = vqnsp_state()
    path = save_like_the_authors(tmp_path_factory.mktemp("vqnsp") / "vqnsp.pth", state, "vqnsp_encoder_base")
    return path, state


# --------------------------------------------------------------------------- labram-base.pth as weights


def test_labram_base_loads_strictly_and_computes_what_a_hand_copy_computes(labram_base):
    path, state = labram_base
    signal = _signal()
    loaded = create_backbone("labram", signal, path, model_kwargs=TINY, random_state=3)
    report = loaded.report
    assert report["random_init"] is False and not report["missing_keys"] and not report["unexpected_keys"]
    converted = report["converted"]
    assert set(converted["dropped_keys"]) == PRETRAINING_ONLY
    assert converted["mapped_tensors"] == len(state) - len(PRETRAINING_ONLY)
    assert converted["architecture"]["depth"] == 2 and converted["architecture"]["heads"] == 2

    torch.manual_seed(99)  # the hand copy starts from other random weights: only the copying makes them equal
    hand = Labram(n_chans=signal.n_chans, n_times=signal.n_times, sfreq=signal.sfreq, n_outputs=2, **TINY)
    copy_by_hand(hand, state, "student.")
    ours = loaded.module.state_dict()
    for key, value in hand.state_dict().items():
        if not key.startswith("final_layer."):  # the classifier is neurofm's own, never the file's
            assert torch.equal(ours[key], value), key

    x = torch.randn(3, signal.n_chans, signal.n_times)
    tokens, cls = get_model_spec("labram").extract(loaded.module, x, signal)
    with torch.no_grad():
        expected = hand(x, ch_names=list(signal.ch_names), return_features=True)
    assert torch.equal(tokens, expected["features"]) and torch.equal(cls, expected["cls_token"])


def test_labram_base_embeds_as_the_hand_copy_saved_in_braindecode_layout(labram_base, tmp_path, windows_19ch):
    path, state = labram_base
    signal = _signal()
    hand = copy_by_hand(
        Labram(n_chans=signal.n_chans, n_times=signal.n_times, sfreq=200.0, n_outputs=2, **TINY), state, "student."
    )
    torch.save(hand.state_dict(), tmp_path / "braindecode_layout.pth")

    def embed(weights):
        emb = FoundationEmbedder(
            "labram",
            weights=weights,
            sfreq=160.0,
            ch_names=list(STANDARD_1020_19),
            cache_embeddings=False,
            verbose=False,
            model_kwargs=TINY,
        )
        return emb.fit(windows_19ch).transform(windows_19ch), emb

    original, emb = embed(path)
    reference, _ = embed(str(tmp_path / "braindecode_layout.pth"))
    np.testing.assert_array_equal(original, reference)
    assert np.abs(original).sum() > 0
    assert set(emb.backbone_.report["converted"]["dropped_keys"]) == PRETRAINING_ONLY


def test_labram_base_serves_frozen_probe_full_and_lora_fine_tuning(labram_base, tmp_path):
    from neurofm import Experiment
    from neurofm.configs import (
        ClassicalModelConfig,
        CVConfig,
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
        LoRAConfig,
        NeuralFineTuneConfig,
        TrainerConfig,
    )
    from neurofm.simulate import simulate_eeg_dataset

    path, _ = labram_base
    X, y, meta, info = simulate_eeg_dataset(n_subjects=2, n_windows_per_class=4, window_seconds=2.0, random_state=0)
    trainer = TrainerConfig(max_epochs=1, batch_size=8, early_stopping_patience=None)
    tuned = {
        mode: NeuralFineTuneConfig(
            model_key="labram", weights=path, train_mode=mode, model_kwargs=TINY, trainer=trainer, lora=LoRAConfig(r=4)
        )
        for mode in ("full", "lora")
    }
    probe = FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(model_key="labram", weights=path, model_kwargs=TINY),
        head=ClassicalModelConfig(estimator="LogisticRegression"),
    )
    cfg = ExperimentConfig(
        models={"frozen": probe, **tuned},
        cv=CVConfig(n_splits=2),
        metrics=["balanced_accuracy"],
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    result = Experiment(cfg).run(X, y, sample_metadata=meta, **info)
    assert result.get_detailed_scores()["Value"].notna().all()
    artifacts = result.get_model_artifacts()
    for name in ("frozen", "full", "lora"):
        values = artifacts.loc[artifacts["Model"] == name, "ArtifactValue"].astype(str)
        assert values.str.contains(f"'location': '{path}'", regex=False).any(), f"{name} did not read {path}"
        assert values.str.contains("'random_init': False", regex=False).any(), f"{name} was not loaded"
        # Each mode loaded it through the mapping, and reports the pretraining heads it left out.
        assert values.str.contains("'layout': 'LaBraM original (935963004/LaBraM)'", regex=False).any(), name
        assert values.str.contains("'student.mask_token': 'the mask embedding", regex=False).any(), name


def test_an_unknown_key_in_the_original_layout_is_refused_by_name(labram_base, tmp_path):
    _, state = labram_base
    signal = _signal()
    for extra in ("student.blocks.0.attn.relative_position_bias_table", "momentum_encoder.weight"):
        bad = save_like_the_authors(tmp_path / "bad.pth", {**state, extra: torch.zeros(3)}, "labram_base")
        with pytest.raises(WeightsError, match=rf"bad\.pth: .*layout does not have: \['{re.escape(extra)}'\]"):
            create_backbone("labram", signal, bad, model_kwargs=TINY)
    # A tensor the backbone needs is missing: the file is incomplete, not loaded partly.
    incomplete = {k: v for k, v in state.items() if k != "student.blocks.1.mlp.fc2.bias"}
    with pytest.raises(WeightsError, match=r"missing key\(s\) \['blocks\.1\.mlp\.2\.bias'\]"):
        create_backbone(
            "labram", signal, save_like_the_authors(tmp_path / "inc.pth", incomplete, "m"), model_kwargs=TINY
        )


def test_an_architecture_other_than_the_file_is_refused_with_what_differs(labram_base):
    path, _ = labram_base
    signal = _signal()
    with pytest.raises(WeightsError) as caught:
        create_backbone("labram", signal, path)  # braindecode's defaults: 12 blocks, 10 heads
    message = str(caught.value)
    assert "transformer blocks: file 2, model 12" in message and "attention heads: file 2, model 10" in message
    assert "model_kwargs={'num_layers': 2, 'num_heads': 2}" in message
    with pytest.raises(WeightsError, match="q/v biases: file False, model True"):
        create_backbone("labram", signal, path, model_kwargs={**TINY, "qkv_bias": True})


def test_the_tokenizer_file_is_refused_as_backbone_weights(vqnsp):
    path, _ = vqnsp
    with pytest.raises(WeightsError, match="holds LaBraM's VQ-NSP tokenizer .* as tokenizer_run"):
        create_backbone("labram", _signal(), path, model_kwargs=TINY)


# --------------------------------------------------------------------------- vqnsp.pth as stage 2's tokenizer


def test_vqnsp_gives_the_codes_of_the_original_encoder_and_codebook(vqnsp, tmp_path):
    path, state = vqnsp
    tokenizer, meta = load_tokenizer(path, "labram", n_times=800)
    assert torch.equal(tokenizer.quantizer.codebook, state["quantize.embedding.weight"])
    assert torch.equal(tokenizer.quantizer.cluster_size, state["quantize.cluster_size"])
    assert meta["n_times"] == 800 and meta["tokenizer"]["codebook_size"] == CODES
    assert meta["tokenizer"]["code_dim"] == CODE_DIM and meta["tokenizer"]["depth"] == 1
    dropped = meta["original"]["dropped_keys"]
    assert all(k.startswith(("decoder.", "decode_task_layer")) or "embedding." in k for k in dropped)
    assert "decoder.patch_embed.proj.weight" in dropped and "quantize.embedding.embed_avg" in dropped
    json.dumps(meta)  # the metadata is plain data

    # The original's encoder (q/v biases, no q/k norms nor layer scales, fc_norm) with the file's tensors.
    hand = Labram(n_chans=1, n_times=800, sfreq=200.0, n_outputs=1, num_layers=1, num_heads=10, qkv_bias=True,
                  qk_norm=None, init_values=0.0, use_mean_pooling=True)  # fmt: skip
    copy_by_hand(hand, state, "encoder.")
    x = torch.randn(4, 3, 800)
    names = ["C3", "CZ", "C4"]
    with torch.no_grad():
        tokens = hand(x, ch_names=names, return_features=True)["features"]
        hidden = torch.tanh(F.linear(tokens, state["encode_task_layer.0.weight"], state["encode_task_layer.0.bias"]))
        z = F.normalize(
            F.linear(hidden, state["encode_task_layer.2.weight"], state["encode_task_layer.2.bias"]), dim=-1
        )
        codebook = state["quantize.embedding.weight"]
        # The original's nearest code: the smallest squared distance to the normalised vector.
        distance = z.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(-1) - 2 * z @ codebook.T
        expected = distance.argmin(-1)
    got = tokenizer.get_codebook_indices(x, names)[0]
    assert got.shape == (4, 12) and len(expected.unique()) > 1
    assert torch.equal(got, expected)

    # A folder holding vqnsp.pth is the same tokenizer; without a decoder it only gives codes.
    folder = tmp_path / "original"
    folder.mkdir()
    (folder / "vqnsp.pth").write_bytes(open(path, "rb").read())
    again, _ = load_tokenizer(folder, n_times=800)
    assert torch.equal(again.get_codebook_indices(x, names)[0], expected)
    with pytest.raises(RuntimeError, match="has no decoder"):
        again(x, names, None)


def test_stage_2_trains_on_the_codes_of_vqnsp(vqnsp, tmp_path, corpus_dir, monkeypatch):
    path, state = vqnsp
    used = {}

    def recording_load(*args, **kwargs):
        used["tokenizer"], used["meta"] = load_tokenizer(*args, **kwargs)
        return used["tokenizer"], used["meta"]

    monkeypatch.setattr(trainer_module, "load_tokenizer", recording_load)
    config = {
        "stage": "masked",
        "output_dir": str(tmp_path / "masked"),
        "tokenizer_run": path,
        "corpus": {"paths": [str(corpus_dir)], "window_seconds": 8.0},  # the original tokenizer's 1600 samples
        "backbone_kwargs": {"num_layers": 1, "num_heads": 2},
        "optimizer": {"max_steps": 2, "batch_size": 2, "lr": 1e-3},
        "checkpoint_every": 2,
        "progress": False,
    }
    result = pretrain(PretrainConfig.model_validate(config))
    assert result.steps == 2 and np.isfinite(result.final_loss)
    assert torch.equal(used["tokenizer"].quantizer.codebook, state["quantize.embedding.weight"])
    architecture = json.loads((tmp_path / "masked" / "config.json").read_text())
    assert architecture["patch_size"] == 200
    # The backbone stage 2 wrote loads back as weights like any other.
    assert create_backbone("labram", _signal(), str(tmp_path / "masked"), random_state=0).report["random_init"] is False

    # Other windows: the released tokenizer is built for the corpus's, any whole number of patches its time
    # table covers (2 s: 2 patches), with the same codebook.
    short = {**config, "output_dir": str(tmp_path / "short"), "corpus": {**config["corpus"], "window_seconds": 2.0}}
    result = pretrain(PretrainConfig.model_validate(short))
    assert result.steps == 2 and np.isfinite(result.final_loss) and used["meta"]["n_times"] == 400
    assert torch.equal(used["tokenizer"].quantizer.codebook, state["quantize.embedding.weight"])
    # Longer than its 15-patch table: refused before any training, the run folder untouched.
    long = {**config, "output_dir": str(tmp_path / "long"), "corpus": {**config["corpus"], "window_seconds": 16.0}}
    with pytest.raises(WeightsError, match=r"at most 15 of them.*3200 samples"):
        pretrain(PretrainConfig.model_validate(long))
    assert not (tmp_path / "long").exists()


def test_a_mismatched_tokenizer_file_is_refused_clearly(vqnsp, labram_base, tmp_path, corpus_dir):
    path, state = vqnsp

    def refused(bad: dict, match: str, **kwargs):
        target = save_like_the_authors(tmp_path / "bad.pth", bad, "vqnsp")
        with pytest.raises(WeightsError, match=match):
            load_tokenizer(target, "labram", **kwargs)

    wider = dict(state)
    wider["encode_task_layer.2.weight"] = torch.zeros(CODE_DIM + 1, DIM)
    refused(wider, r"encode_task_layer has shapes \(200, 200\) and \(9, 200\).*8-dimensional codes")
    refused({**state, "quantize.embedding.extra": torch.zeros(2)}, r"does not have: \['quantize\.embedding\.extra'\]")
    refused({**state, "encoder.blocks.0.attn.extra": torch.zeros(2)}, r"\['encoder\.blocks\.0\.attn\.extra'\]")
    refused({k: v for k, v in state.items() if k != "encoder.blocks.0.mlp.fc1.bias"}, r"not filled.*mlp\.0\.bias")
    refused({**state, "quantize.embedding.initted": torch.tensor([0.0])}, "never initialised")
    refused({**state, "quantize.embedding.weight": 2 * state["quantize.embedding.weight"]}, "not unit vectors")
    refused(state, r"at most 15 of them .*3400 samples do not fit", n_times=3400)
    with pytest.raises(WeightsError, match="serves recipe 'labram', not 'codebrain'"):
        load_tokenizer(path, "codebrain")
    # The backbone file given as stage 2's tokenizer is refused before any training.
    backbone, _ = labram_base
    config = {
        "stage": "masked",
        "output_dir": str(tmp_path / "masked"),
        "tokenizer_run": backbone,
        "corpus": {"paths": [str(corpus_dir)], "window_seconds": 8.0},
        "progress": False,
    }
    with pytest.raises(WeightsError, match="is not LaBraM's VQ-NSP tokenizer.*a LaBraM backbone"):
        pretrain(PretrainConfig.model_validate(config))
    assert not (tmp_path / "masked").exists()
