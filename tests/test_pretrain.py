"""Self-supervised pretraining: codebook, tokenizer, masked modelling, resume, many processes, export."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import SHARED_DATA

from neurofm.exceptions import ConfigError, DataValidationError, WeightsError
from neurofm.pretrain import PretrainConfig, pretrain
from neurofm.pretrain.corpus import Corpus
from neurofm.pretrain.masked import MaskedLabram, masked_code_loss, random_token_mask
from neurofm.pretrain.quantizer import NormEMAQuantizer
from neurofm.pretrain.tokenizers import spectrum_targets

TINY_TOKENIZER = {"codebook_size": 32, "code_dim": 8, "depth": 1, "num_heads": 2, "decoder_depth": 1}
TINY_BACKBONE = {"num_layers": 1, "num_heads": 2}
# The montage of the corpus_dir fixture's sub-03 and sub-04 (tests/conftest.py).
MONTAGE_B = ["AF7", "AF8", "TP9", "TP10"]


def stage_config(tmp, corpus_path, stage="tokenizer", **overrides):
    data = {
        "stage": stage,
        "output_dir": str(tmp / stage),
        "corpus": {"paths": [str(corpus_path)], "window_seconds": 2.0},
        "optimizer": {"max_steps": 6, "batch_size": 4, "lr": 1e-3},
        "checkpoint_every": 2,
        "progress": False,
    }
    if stage == "tokenizer":
        data["tokenizer"] = dict(TINY_TOKENIZER)
    else:
        data["tokenizer_run"] = str(tmp / "tokenizer")
        data["backbone_kwargs"] = dict(TINY_BACKBONE)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "backbone_kwargs":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return PretrainConfig.model_validate(data)


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory, corpus_dir):
    tmp = tmp_path_factory.mktemp("stage1")
    pretrain(stage_config(tmp, corpus_dir))
    return tmp


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# --------------------------------------------------------------------------- building blocks


def test_quantizer_kmeans_init_ema_updates_and_dead_code_restart():
    torch.manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    data = torch.cat([c + 0.01 * torch.randn(50, 8) for c in centers])
    quantizer = NormEMAQuantizer(4, 8, decay=0.5, kmeans_iters=20)
    out = quantizer(data)
    # k-means on the first batch puts one code on each cluster: all four used, perplexity near 4.
    assert out.used == 4 and out.perplexity > 3.9
    assert torch.allclose(quantizer.codebook.norm(dim=-1), torch.ones(4), atol=1e-5)
    # The straight-through output carries gradients to the input.
    z = data.clone().requires_grad_(True)
    quantizer(z).quantized.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0

    # Eight codes for data that only ever reaches two of them: six die, and restarts revive them.
    lonely = NormEMAQuantizer(8, 8, kmeans_init=False, dead_after=2, restart_dead=False)
    lonely.codebook.copy_(torch.nn.functional.normalize(torch.randn(8, 8), dim=-1))
    two = torch.cat([centers[0] + 0.01 * torch.randn(20, 8), centers[1] + 0.01 * torch.randn(20, 8)])
    for _ in range(3):
        stats = lonely(two)
    assert stats.dead >= 5
    reviving = NormEMAQuantizer(8, 8, kmeans_init=False, dead_after=2, restart_dead=True)
    reviving.load_state_dict(lonely.state_dict())
    before = reviving.codebook.clone()
    reviving(two)
    moved = (reviving.codebook - before).norm(dim=-1) > 1e-3
    assert moved.sum() >= 5 and int((reviving.steps_unused >= 2).sum()) == 0


def test_spectrum_targets_find_the_frequency_of_a_patch():
    t = torch.arange(200) / 200.0
    patches = torch.stack([torch.sin(2 * np.pi * 10 * t), torch.sin(2 * np.pi * 25 * t)])[None]
    amplitude, phase = spectrum_targets(patches)
    assert amplitude.shape == (1, 2, 100) and phase.shape == (1, 2, 100)
    assert amplitude[0, 0].argmax() == 10 and amplitude[0, 1].argmax() == 25
    assert abs(float(amplitude.mean())) < 1e-5 and abs(float(amplitude.std()) - 1) < 1e-3


def test_mask_token_replaces_exactly_the_hidden_patches():
    from braindecode.models import Labram

    torch.manual_seed(0)
    backbone = Labram(n_chans=3, n_times=600, sfreq=200, n_outputs=2, num_layers=1, num_heads=2).eval()
    model = MaskedLabram(backbone, (16,)).eval()
    x = torch.randn(2, 3, 600)
    names = ["C3", "CZ", "C4"]
    seen = {}
    backbone.patch_embed.register_forward_hook(lambda m, i, o: seen.__setitem__("tokens", o.detach().clone()))
    plain = backbone(x, ch_names=names, return_features=True)["features"]
    # Tokens are channel-major: changing channel 1's second patch changes token 1 * 3 + 1 (the others
    # only a little, through the group norms of LaBraM's temporal convolution, as in the original).
    reference = seen["tokens"]
    x2 = x.clone()
    x2[:, 1, 200:400] += 1.0
    backbone(x2, ch_names=names, return_features=True)
    change = (seen["tokens"] - reference).abs().sum(dim=(0, 2))
    assert int(change.argmax()) == 4 and change[4] > 5 * change[torch.arange(9) != 4].max()

    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, 4] = mask[1, 0] = True
    logits = model(x, names, mask)
    assert logits[0].shape == (2, 16)
    hidden = seen["tokens"]
    # Exactly: a hidden token is the mask token itself, the others are the tokens as they were.
    assert torch.equal(hidden[0, 4], model.mask_token[0, 0]) and torch.equal(hidden[1, 0], model.mask_token[0, 0])
    assert torch.equal(hidden[0, :4], reference[0, :4])
    # No mask leaves braindecode's forward untouched, bit for bit.
    assert torch.equal(backbone(x, ch_names=names, return_features=True)["features"], plain)


def test_symmetric_masking_trains_every_token_once_per_step():
    from braindecode.models import Labram

    backbone = Labram(n_chans=2, n_times=400, sfreq=200, n_outputs=2, num_layers=1, num_heads=2)
    model = MaskedLabram(backbone, (8,))
    mask = random_token_mask(3, 4, 0.5, torch.Generator().manual_seed(0))
    assert mask.sum(dim=1).tolist() == [2, 2, 2]
    targets = [torch.randint(8, (3, 4))]
    loss, parts = masked_code_loss(model, torch.randn(3, 2, 400), ["C3", "C4"], targets, mask, symmetric=True)
    assert loss.requires_grad and {"ce_masked_0", "ce_complement_0", "code_accuracy"} <= set(parts)
    # Chance cross-entropy over 8 codes is log(8).
    assert abs(parts["ce_masked_0"] - np.log(8)) < 1.5


def test_corpus_streams_montage_homogeneous_batches_at_the_model_rate(corpus_dir):
    from neurofm.models.registry import get_model_spec

    config = stage_config(corpus_dir, corpus_dir).corpus
    corpus = Corpus(config, get_model_spec("labram"), 200)
    summaries = corpus.check()
    assert len(summaries) == 4 and {len(s.model_ch_names) for s in summaries} == {11, 4}
    stream = corpus.batches(batch_size=5, seed=0)
    montages = set()
    for _ in range(20):
        windows, names = next(stream)
        assert windows.shape == (5, len(names), 400) and windows.dtype == np.float32
        montages.add(names)
    assert len(montages) == 2
    # µV / 100 (LaBraM's scaling) of ~20 µV signals: standard deviation near 0.2.
    assert 0.05 < float(windows.std()) < 1.0
    # Each process gets its own recordings; together they are the corpus.
    shards = [{s.path for s in corpus.shard(r, 2)} for r in range(2)]
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 4
    # The same seed gives the same stream.
    again = corpus.batches(batch_size=5, seed=0)
    first = next(corpus.batches(batch_size=5, seed=0))
    np.testing.assert_array_equal(next(again)[0], first[0])


# --------------------------------------------------------------------------- the stages


def test_tokenizer_stage_logs_codebook_usage_and_writes_a_tokenizer(tokenizer_run):
    import pandas as pd

    run = tokenizer_run / "tokenizer"
    history = pd.read_csv(run / "history.csv")
    assert list(history["step"]) == [1, 2, 3, 4, 5, 6]
    assert {"loss", "commitment", "amplitude", "phase", "perplexity", "codes_used", "dead_codes"} <= set(
        history.columns
    )
    assert np.isfinite(history["loss"]).all() and (history["perplexity"] >= 1).all()
    assert history["amplitude"].iloc[-1] < history["amplitude"].iloc[0]
    meta = json.loads((run / "tokenizer.json").read_text())
    assert meta["n_times"] == 400 and meta["tokenizer"]["codebook_size"] == 32
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000004.pt", "step-0000006.pt"]


def test_resumed_tokenizer_run_ends_where_an_uninterrupted_one_ends(tmp_path, corpus_dir, tokenizer_run, monkeypatch):
    import neurofm.pretrain.trainer as trainer

    original = trainer._save_checkpoint

    def crash_after_step_four(run, step, *args, **kwargs):
        original(run, step, *args, **kwargs)
        if step == 4:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(trainer, "_save_checkpoint", crash_after_step_four)
    config = stage_config(tmp_path, corpus_dir)
    with pytest.raises(KeyboardInterrupt):
        pretrain(config)
    monkeypatch.setattr(trainer, "_save_checkpoint", original)
    # What a kill in the middle of writing the next checkpoint leaves: its temporary file.
    leftover = tmp_path / "tokenizer" / "checkpoints" / ".step-0000006.pt.tmp-killed"
    leftover.write_bytes(b"half a checkpoint")
    result = pretrain(config)
    assert result.resumed_from == 4 and not leftover.exists()
    ours = _tensors(tmp_path / "tokenizer" / "tokenizer.safetensors")
    reference = _tensors(tokenizer_run / "tokenizer" / "tokenizer.safetensors")
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)
    a = (tmp_path / "tokenizer" / "history.csv").read_text().splitlines()
    b = (tokenizer_run / "tokenizer" / "history.csv").read_text().splitlines()
    assert [row.rsplit(",", 1)[0] for row in a] == [row.rsplit(",", 1)[0] for row in b]  # all but the timing column


def test_killed_masked_run_resumes_to_the_uninterrupted_result(tmp_path, corpus_dir, tokenizer_run):
    steps = {"optimizer": {"max_steps": 30, "batch_size": 4, "lr": 1e-3}, "checkpoint_every": 3}
    reference = stage_config(
        tmp_path / "a", corpus_dir, "masked", tokenizer_run=str(tokenizer_run / "tokenizer"), **steps
    )
    pretrain(reference)
    config = stage_config(tmp_path / "b", corpus_dir, "masked", tokenizer_run=str(tokenizer_run / "tokenizer"), **steps)
    (tmp_path / "b").mkdir()
    path = tmp_path / "b" / "masked.yaml"
    config.to_yaml(path)
    # Same thread count as this process: float sums are reproducible only for a fixed number of threads.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(
        [sys.executable, "-m", "neurofm", "pretrain", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    checkpoints = tmp_path / "b" / "masked" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not list(checkpoints.glob("step-*.pt")):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = sorted(checkpoints.glob("step-*.pt"))
    assert done, "the run was killed before its first checkpoint"
    result = pretrain(config)
    assert 0 < result.resumed_from < 30
    ours = _tensors(tmp_path / "b" / "masked" / "model.safetensors")
    theirs = _tensors(tmp_path / "a" / "masked" / "model.safetensors")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert not list(checkpoints.glob(".*tmp*")), "a half-written checkpoint was left behind"


def _decode_with_pretrained(run: str, model_key: str, modes: tuple[str, ...], tmp_path: Path):
    """Run an experiment whose models load ``run`` as weights in the given decoding modes."""
    from neurofm import Experiment
    from neurofm.configs import (
        ClassicalModelConfig,
        CVConfig,
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
        NeuralFineTuneConfig,
        TrainerConfig,
    )
    from neurofm.simulate import simulate_eeg_dataset

    X, y, meta, info = simulate_eeg_dataset(n_subjects=2, n_windows_per_class=4, window_seconds=2.0, random_state=0)
    trainer = TrainerConfig(max_epochs=1, batch_size=8, early_stopping_patience=None)
    models = {
        mode: FrozenBackboneDecoderConfig(
            backbone=FoundationEmbeddingModelConfig(model_key=model_key, weights=run),
            head=ClassicalModelConfig(estimator="LogisticRegression"),
        )
        if mode == "frozen"
        else NeuralFineTuneConfig(model_key=model_key, weights=run, train_mode=mode, trainer=trainer)
        for mode in modes
    }
    cfg = ExperimentConfig(
        models=models,
        cv=CVConfig(n_splits=2),
        metrics=["balanced_accuracy"],
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    return Experiment(cfg).run(X, y, sample_metadata=meta, **info)


def test_pretrained_backbone_loads_in_all_three_decoding_modes(tmp_path, corpus_dir, tokenizer_run):
    pretrain(stage_config(tmp_path, corpus_dir, "masked", tokenizer_run=str(tokenizer_run / "tokenizer")))
    run = str(tmp_path / "masked")
    result = _decode_with_pretrained(run, "labram", ("frozen", "full", "lora"), tmp_path)
    assert result.get_detailed_scores()["Value"].notna().all()
    artifacts = result.get_model_artifacts()
    for name in ("frozen", "full", "lora"):
        values = artifacts.loc[artifacts["Model"] == name, "ArtifactValue"].astype(str)
        assert values.str.contains(f"'location': '{run}'", regex=False).any(), f"{name} did not read {run}"
        assert values.str.contains("'random_init': False", regex=False).any(), f"{name} was not loaded"


# --------------------------------------------------------------------------- many processes


def test_torchrun_two_processes_keep_one_codebook(tmp_path, corpus_dir):
    config = stage_config(tmp_path, corpus_dir, optimizer={"max_steps": 3})
    path = tmp_path / "stage1.yaml"
    config.to_yaml(path)
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "-m", "neurofm", "pretrain", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((tmp_path / "tokenizer" / "tokenizer.json").read_text())
    assert meta["world_size"] == 2 and meta["replicas_identical"] is True
    shards = [set(s) for s in meta["shards"]]
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 4


# --------------------------------------------------------------------------- bad input


def test_bad_pretraining_input_fails_before_training(tmp_path, corpus_dir, tokenizer_run, write_eeg_recording):
    with pytest.raises(DataValidationError, match="not a multiple of the patch size 200"):
        pretrain(stage_config(tmp_path, corpus_dir, corpus={"window_seconds": 1.5}))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataValidationError, match="The corpus is empty"):
        pretrain(stage_config(tmp_path, empty))
    odd = tmp_path / "odd"
    odd.mkdir()
    write_eeg_recording(odd / "odd_eeg.fif", ["foo", "bar"], 200.0, 10.0, seed=0)
    with pytest.raises(DataValidationError, match="no channel LaBraM can use"):
        pretrain(stage_config(tmp_path, odd))
    token = str(tokenizer_run / "tokenizer")
    with pytest.raises(ConfigError, match="trained on windows of 400 samples"):
        pretrain(stage_config(tmp_path, corpus_dir, "masked", tokenizer_run=token, corpus={"window_seconds": 3.0}))
    with pytest.raises(ConfigError, match="does not match the tokenizer's patch size"):
        pretrain(
            stage_config(
                tmp_path,
                corpus_dir,
                "masked",
                tokenizer_run=token,
                backbone_kwargs={**TINY_BACKBONE, "patch_size": 100},
            )
        )
    with pytest.raises(ConfigError, match="Could not build the labram backbone with backbone_kwargs"):
        pretrain(stage_config(tmp_path, corpus_dir, "masked", tokenizer_run=token, backbone_kwargs={"depth": 1}))
    with pytest.raises(WeightsError, match="holds no finished tokenizer"):
        pretrain(stage_config(tmp_path, corpus_dir, "masked", tokenizer_run=str(tmp_path)))
    with pytest.raises(ValueError, match="stage 'masked' needs tokenizer_run: the run directory of a finished stage"):
        PretrainConfig.model_validate({"stage": "masked", "corpus": {"paths": ["x"]}, "output_dir": "o"})
    with pytest.raises(ValueError, match=r"\nlr\s+Extra inputs are not permitted"):
        PretrainConfig.model_validate({"stage": "tokenizer", "corpus": {"paths": ["x"]}, "output_dir": "o", "lr": 1})
    # A finished run is never overwritten by another config.
    with pytest.raises(
        ConfigError,
        match=r"holds a pretraining run with another config \(differs in \['tokenizer'\]\)\. "
        r"Use a new output_dir, or restore the original config to resume it",
    ):
        pretrain(stage_config(tokenizer_run, corpus_dir, tokenizer={"codebook_size": 16}))
    assert _tensors(tokenizer_run / "tokenizer" / "tokenizer.safetensors")["quantizer.codebook"].shape[0] == 32


def test_cli_pretrain_on_real_recordings(tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA}")
    config = {
        "stage": "tokenizer",
        "output_dir": "run",
        "corpus": {
            "paths": [str(SHARED_DATA / "eegmmi"), str(SHARED_DATA / "muse-n170" / "subject1")],
            "window_seconds": 2.0,
        },
        "tokenizer": TINY_TOKENIZER,
        "optimizer": {"max_steps": 2, "batch_size": 4},
        "progress": False,
    }
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "neurofm", "pretrain", str(path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tokenizer: 2 steps" in done.stdout
    meta = json.loads((tmp_path / "run" / "tokenizer.json").read_text())
    assert meta["recordings"] == 3 + 6  # three EEGMMI runs and subject 1's six Muse sessions


def test_codebrain_dual_tokenizer_and_masked_stage_load_downstream(tmp_path, corpus_dir):
    import pandas as pd

    tokenizer = {**TINY_TOKENIZER, "width": 16}
    pretrain(stage_config(tmp_path, corpus_dir, recipe="codebrain", tokenizer=tokenizer, optimizer={"max_steps": 4}))
    history = pd.read_csv(tmp_path / "tokenizer" / "history.csv")
    assert {
        "waveform",
        "amplitude",
        "phase",
        "perplexity_temporal",
        "perplexity_frequency",
        "dead_codes_temporal",
        "dead_codes_frequency",
    } <= set(history.columns)
    token = str(tmp_path / "tokenizer")
    with pytest.raises(ConfigError, match="do not match the tokenizer's codebooks"):
        pretrain(
            stage_config(
                tmp_path,
                corpus_dir,
                "masked",
                recipe="codebrain",
                tokenizer_run=token,
                backbone_kwargs={"num_res_layers": 1, "codebook_size_t": 64},
            )
        )
    with pytest.raises(WeightsError, match="belongs to recipe 'codebrain', not 'labram'"):
        pretrain(stage_config(tmp_path, corpus_dir, "masked", tokenizer_run=token))
    pretrain(
        stage_config(
            tmp_path,
            corpus_dir,
            "masked",
            recipe="codebrain",
            tokenizer_run=token,
            backbone_kwargs={"num_res_layers": 1},
            optimizer={"max_steps": 4},
        )
    )
    masked = pd.read_csv(tmp_path / "masked" / "history.csv")
    assert {"ce_masked_0", "ce_masked_1", "ce_complement_1"} <= set(masked.columns)
    architecture = json.loads((tmp_path / "masked" / "config.json").read_text())
    assert architecture == {"patch_size": 200, "num_res_layers": 1, "codebook_size_t": 32, "codebook_size_f": 32}

    run = str(tmp_path / "masked")
    result = _decode_with_pretrained(run, "codebrain", ("frozen", "lora"), tmp_path)
    assert result.get_detailed_scores()["Value"].notna().all()
    values = result.get_model_artifacts()["ArtifactValue"].astype(str)
    assert values.str.contains(f"'location': '{run}'", regex=False).sum() >= 2


def test_report_shows_the_pretraining_curves(tokenizer_run, tmp_path):
    import re
    import shutil

    from typer.testing import CliRunner

    from neurofm.cli import app

    run = tokenizer_run / "tokenizer"
    assert (run / "loss_curves.png").stat().st_size > 10_000
    outcome = CliRunner().invoke(app, ["report", str(run)])
    assert outcome.exit_code == 0, outcome.output
    page = (run / "report.html").read_text()
    assert 'id="fig-pretraining"' in page and "data:image/png;base64," in page and "codebook_size: 32" in page
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        ["chromium", *flags, "--dump-dom", (run / "report.html").as_uri()], capture_output=True, text=True, timeout=120
    )
    assert re.findall(r'data-rendered="(\w+)"', dom.stdout) == ["true"], dom.stdout[:500]


def test_corpus_takes_sources_of_any_loader(tmp_path, corpus_dir):
    from neurofm.models.registry import get_model_spec

    recording = str(next(corpus_dir.glob("sub-03/*.fif")))
    spec = get_model_spec("labram")
    config = PretrainConfig.model_validate(
        {
            "stage": "tokenizer",
            "output_dir": "o",
            "corpus": {
                "sources": [
                    {
                        "source": "recording",
                        "path": recording,
                        "window": 2.0,
                        "preprocessing": {"l_freq": 1.0, "resample": 200.0},
                    }
                ],
                "window_seconds": 2.0,
            },
        }
    ).corpus
    corpus = Corpus(config, spec, 200)
    (summary,) = corpus.check()
    assert summary.path == "source:0" and summary.n_windows == 12 and set(summary.model_ch_names) == set(MONTAGE_B)
    windows, names = next(corpus.batches(batch_size=4, seed=0))
    assert windows.shape == (4, 4, 400) and set(names) == set(MONTAGE_B)
    wrong = config.model_copy(update={"window_seconds": 4.0})
    with pytest.raises(DataValidationError, match="gives windows of 2 s .* the corpus uses 4 s"):
        Corpus(wrong, spec, 200).check()
    with pytest.raises(ValueError, match="the corpus needs recordings"):
        PretrainConfig.model_validate({"stage": "tokenizer", "output_dir": "o", "corpus": {}})


@pytest.mark.parametrize("recipe", ["labram", "codebrain"])
def test_bf16_autocast_path_trains(tmp_path, corpus_dir, recipe):
    # bf16 is meant for GPUs; on this CPU it only proves the autocast path runs and stays finite.
    import pandas as pd

    tokenizer = {**TINY_TOKENIZER, "width": 16} if recipe == "codebrain" else TINY_TOKENIZER
    pretrain(
        stage_config(
            tmp_path, corpus_dir, recipe=recipe, precision="bf16", tokenizer=tokenizer, optimizer={"max_steps": 2}
        )
    )
    history = pd.read_csv(tmp_path / "tokenizer" / "history.csv")
    assert len(history) == 2 and np.isfinite(history["loss"]).all()


def test_example_pretraining_configs_run_offline(tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA}")
    examples = Path(__file__).resolve().parents[1] / "examples"
    stage1 = PretrainConfig.from_yaml(examples / "pretrain_labram_tokenizer.yaml")
    stage2 = PretrainConfig.from_yaml(examples / "pretrain_labram_masked.yaml")
    assert stage2.tokenizer_run == stage1.output_dir and stage1.corpus == stage2.corpus
    short = {"max_steps": 2, "batch_size": 4}
    first = stage1.model_copy(
        update={
            "output_dir": str(tmp_path / "tok"),
            "progress": False,
            "optimizer": stage1.optimizer.model_copy(update=short),
        }
    )
    second = stage2.model_copy(
        update={
            "output_dir": str(tmp_path / "bb"),
            "tokenizer_run": str(tmp_path / "tok"),
            "progress": False,
            "optimizer": stage2.optimizer.model_copy(update=short),
        }
    )
    pretrain(first, base_dir=examples)
    result = pretrain(second, base_dir=examples)
    assert (result.output_dir / "model.safetensors").is_file()
    meta = json.loads((tmp_path / "bb" / "pretrain.json").read_text())
    held_out = [p for shard in meta["shards"] for p in shard if "/subject2/" in p or "/subject3/" in p]
    assert meta["recordings"] == 3 + 11 and not held_out


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_resume_checkpoint_that_would_run_code_is_refused(tmp_path, corpus_dir, tokenizer_run):
    import shutil

    run = tmp_path / "tokenizer"
    shutil.copytree(tokenizer_run / "tokenizer", run)
    config = stage_config(tmp_path, corpus_dir)  # the same run in a copy of its folder: it resumes from the latest
    marker = tmp_path / "pwned"
    latest = sorted((run / "checkpoints").glob("step-*.pt"))[-1]
    torch.save({"model": _RunsCode(marker)}, latest)
    with pytest.raises(WeightsError, match=r"weights_only=True.*Delete that file"):
        pretrain(config)
    assert not marker.exists()


def test_a_history_link_in_a_resumed_run_is_refused_and_its_target_untouched(tmp_path, corpus_dir, tokenizer_run):
    import shutil

    run = tmp_path / "tokenizer"
    shutil.copytree(tokenizer_run / "tokenizer", run)
    victim = tmp_path / "someone-elses.csv"
    victim.write_text("their data\n")
    (run / "history.csv").unlink()
    (run / "history.csv").symlink_to(victim)
    with pytest.raises(
        ConfigError,
        match=rf"{re.escape(str(run / 'history.csv'))} is a symbolic link \(to "
        rf"{re.escape(str(victim))}\); neurofm writes only its own files",
    ):
        pretrain(stage_config(tmp_path, corpus_dir))
    assert victim.read_text() == "their data\n" and (run / "history.csv").is_symlink()


def test_lines_that_are_not_history_rows_are_dropped_on_resuming(tmp_path, corpus_dir, tokenizer_run, caplog):
    import shutil

    run = tmp_path / "tokenizer"
    shutil.copytree(tokenizer_run / "tokenizer", run)
    rows = (run / "history.csv").read_text()
    (run / "history.csv").write_text(rows + "not,a,row\n\n" + rows.splitlines()[1][:5])  # edited, and cut by a kill
    with caplog.at_level("WARNING", logger="neurofm"):
        result = pretrain(stage_config(tmp_path, corpus_dir))
    assert result.resumed_from == 6
    assert (run / "history.csv").read_text() == rows
    assert "2 line(s) that are not rows of this history were dropped on resuming" in caplog.text


def test_a_pretraining_run_aimed_at_a_folder_of_someone_elses_files_is_refused(tmp_path, corpus_dir):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# theirs\n")
    (home / f".notes{'.tmp-'}x").write_text("looks like a leftover of ours\n")
    config = stage_config(tmp_path, corpus_dir, output_dir=str(home))
    with pytest.raises(
        ConfigError,
        match=rf"The pretraining output_dir {re.escape(str(home))} already holds files "
        r"neurofm did not write \(\.bashrc\) and no \.neurofm marker",
    ):
        pretrain(config)
    assert sorted(p.name for p in home.iterdir()) == [".bashrc", ".notes.tmp-x"]  # nothing written, nothing cleaned


def test_a_run_whose_checkpoints_others_could_write_is_not_resumed(tmp_path, corpus_dir, tokenizer_run):
    import shutil
    import stat

    from neurofm.sharing import SharedFolderError

    run = tmp_path / "tokenizer"
    shutil.copytree(tokenizer_run / "tokenizer", run)
    os.chmod(run / "checkpoints", 0o777)  # anyone could have swapped the checkpoint it would resume from
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    with pytest.raises(
        SharedFolderError,
        match=r"checkpoints can be written by others \(anyone can write it \(mode "
        r"0777\)\).*chmod go-w",
    ) as caught:
        pretrain(stage_config(tmp_path, corpus_dir))
    assert "shared_folders" not in str(caught.value)  # a run's folder cannot be declared shared
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before
    os.chmod(run / "checkpoints", stat.S_IRWXU)
    assert pretrain(stage_config(tmp_path, corpus_dir)).resumed_from == 6


def test_the_nearest_code_is_found_in_float32_under_autocast():
    """bf16 autocast rounds the similarities of a matrix product; the nearest code of some vectors then changes."""
    from neurofm.pretrain.quantizer import NormEMAQuantizer

    torch.manual_seed(0)
    quantizer = NormEMAQuantizer(512, 32, kmeans_init=False).eval()
    z = torch.randn(4000, 32)
    exact = quantizer.lookup(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(quantizer.lookup(z), exact)
        assert torch.equal(quantizer(z).indices, exact)
    trained = NormEMAQuantizer(64, 32, kmeans_init=True).train()
    reference = NormEMAQuantizer(64, 32, kmeans_init=True).train()
    reference.load_state_dict(trained.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained(z)
    reference(z)
    assert torch.equal(trained.codebook, reference.codebook)  # k-means and the EMA update alike


# --------------------------------------------------------------------------- devices


@pytest.mark.parametrize("stage", ["tokenizer", "masked"])
def test_pretraining_steps_run_wholly_on_the_device(stage, tmp_path, corpus_dir, tokenizer_run, monkeypatch):
    """Every step on PyTorch's meta device (see tests/test_device_placement.py): a model, batch, mask or
    codebook left on the CPU fails the step; with scalar reads answered (and sizes that depend on values
    taken as their largest), every step runs, and the export of the weights is the first copy back."""
    import neurofm.pretrain.trainer as trainer

    monkeypatch.setattr(trainer, "_start_world", lambda config: trainer._World(0, 1, torch.device("meta")))
    library = torch.library.Library("aten", "IMPL")
    library.impl("_local_scalar_dense", lambda t: True if t.dtype == torch.bool else 1, "Meta", allow_override=True)
    # Code counts and dead-code indices have data-dependent sizes: on meta, as many counts as codes, every index.
    library.impl(
        "bincount",
        lambda t, weights=None, minlength=0: torch.empty(minlength, dtype=torch.int64, device="meta"),
        "Meta",
    )
    from torch.fx.experimental import _config as fx_config

    try:
        extra = {"tokenizer_run": str(tokenizer_run / "tokenizer")} if stage == "masked" else {}
        with (
            fx_config.patch(meta_nonzero_assume_all_nonzero=True),
            pytest.raises(NotImplementedError, match="Cannot copy out of meta tensor"),
        ):
            pretrain(stage_config(tmp_path, corpus_dir, stage, **extra))
    finally:
        library._destroy()
    steps = (tmp_path / stage / "history.csv").read_text().splitlines()[1:]
    assert len(steps) == 6  # every step ran; the export of the trained weights is the first copy back


def test_a_non_finite_loss_on_one_process_stops_every_process_together(monkeypatch):
    """With one process's loss non-finite, every process must learn it before any update (none stops alone)."""
    import neurofm.pretrain.trainer as trainer

    world = trainer._World(0, 2, torch.device("cpu"))
    reduced = []

    class FakeDist:  # what torch.distributed does with a MIN all-reduce over a process whose loss is finite
        class ReduceOp:
            MIN = "min"

        @staticmethod
        def all_reduce(tensor, op=None):
            reduced.append(op)
            tensor.zero_()  # the other process's loss was not finite

    monkeypatch.setattr(torch, "distributed", FakeDist, raising=False)
    monkeypatch.setitem(sys.modules, "torch.distributed", FakeDist)
    assert trainer._all_finite(torch.tensor(1.0), world) is False and reduced == ["min"]
    assert trainer._all_finite(torch.tensor(float("nan")), trainer._World(0, 1, torch.device("cpu"))) is False


def test_the_recipes_a_config_offers_are_the_registrys():
    """What neurofm knows about pretraining a backbone lives in its spec; the config offers exactly those."""
    from typing import get_args

    from neurofm.models.registry import get_model_spec, list_model_keys

    offered = set(get_args(PretrainConfig.model_fields["recipe"].annotation))
    assert offered == {key for key in list_model_keys() if get_model_spec(key).pretraining is not None}


def test_pretraining_leaves_the_callers_generator_as_it_was(tmp_path, corpus_dir):
    """Every step seeds torch's global generator (dropout); the caller's stream continues as if nothing ran."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pretrain(stage_config(tmp_path, corpus_dir, optimizer={"max_steps": 2}))
    assert torch.equal(torch.rand(3), expected)
