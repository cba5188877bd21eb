"""Hub checkpoints download on first use, through the real huggingface_hub client, from a hub on 127.0.0.1."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_server import LocalHub  # tests/, on the path as pytest imports test files
from typer.testing import CliRunner

from neurofm.adapt import plan_adaptation
from neurofm.cli import app
from neurofm.data import SignalInfo
from neurofm.estimators.frozen import FoundationEmbedder
from neurofm.exceptions import WeightsError
from neurofm.models import create_backbone, get_model_spec
from neurofm.simulate import STANDARD_1020_19

KEY = "cbramod"
REPO = "someone/cbramod-tiny"


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    """A local hub the client is pointed at, online, with an empty cache of this test's own."""
    import huggingface_hub.constants as hfc

    served = LocalHub().start()
    monkeypatch.setenv("HF_ENDPOINT", served.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    # The client reads HF_HUB_OFFLINE once, at import (the tests import it offline): a user's process sets it first.
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    yield served
    served.stop()


def _checkpoint_files(tmp_path: Path, seed: int, key: str = KEY) -> tuple[dict[str, bytes], Path]:
    """A tiny model (CBraMod unless ``key``) as braindecode's ``save_pretrained`` writes it (what the published
    repos hold)."""
    spec = get_model_spec(key)
    info = SignalInfo(sfreq=160.0, ch_names=tuple(STANDARD_1020_19), units=("V",) * 19)
    signal = plan_adaptation(spec, info, 640).target
    module = create_backbone(key, signal, "random", model_kwargs=spec.tiny_kwargs, random_state=seed).module
    folder = tmp_path / f"saved-{key}-{seed}"
    module.save_pretrained(str(folder))
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}, folder


def _embedder(weights, **kw) -> FoundationEmbedder:
    return FoundationEmbedder(KEY, weights=weights, sfreq=160.0, ch_names=list(STANDARD_1020_19), verbose=False, **kw)


def _embed(weights, X, **kw) -> tuple[np.ndarray, FoundationEmbedder]:
    emb = _embedder(weights, cache_embeddings=False, **kw)
    return emb.fit(X).transform(X), emb


def test_first_use_downloads_then_runs_without_a_request_and_offline(hub, tmp_path, windows_19ch, monkeypatch):
    files, folder = _checkpoint_files(tmp_path, seed=3)
    commit = hub.publish(REPO, {**files, "README.md": b"# not read", "other-model.safetensors": b"x" * 4096})
    reference, _ = _embed(str(folder), windows_19ch)

    downloaded, emb = _embed(f"{REPO}@{commit}", windows_19ch)
    np.testing.assert_array_equal(downloaded, reference)
    source = emb.weights_source_
    assert source.kind == "hub" and source.commit == commit and Path(source.location).name == commit
    assert Path(source.location).is_relative_to(tmp_path / "hub-cache")  # HF_HUB_CACHE, read at the call
    assert emb.manifest_["weights"]["commit"] == commit  # the commit keys the cache and resume records
    # Only what loading reads came down: not the README, the same weights as pytorch_model.bin, or another
    # checkpoint of the repository.
    assert "pytorch_model.bin" in files and "README.md" in files
    read = ["config.json", "model.safetensors"]
    assert sorted(p.name for p in Path(source.location).iterdir()) == read
    assert sorted(path.rsplit("/", 1)[-1] for method, path in hub.file_requests() if method == "GET") == read

    hub.requests.clear()
    again, _ = _embed(f"{REPO}@{commit}", windows_19ch)
    np.testing.assert_array_equal(again, reference)
    assert hub.requests == []  # a pinned commit in the cache: no request at all

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.stop()
    offline, _ = _embed(f"{REPO}@{commit}", windows_19ch)
    np.testing.assert_array_equal(offline, reference)
    # Offline, a branch is what the cache last resolved it to; this cache never resolved main.
    with pytest.raises(WeightsError, match=f"{REPO} for 'cbramod' is not in the local Hugging Face cache"):
        _embedder(REPO).check_input(windows_19ch.shape)


def test_weights_none_downloads_the_published_repository(hub, tmp_path, windows_19ch, monkeypatch):
    files, folder = _checkpoint_files(tmp_path, seed=4)
    spec = get_model_spec(KEY)
    commit = hub.publish(spec.hub_repo, files)
    reference, _ = _embed(str(folder), windows_19ch)
    published, emb = _embed(None, windows_19ch)
    np.testing.assert_array_equal(published, reference)
    assert emb.weights_source_.commit == commit
    assert emb.backbone_.report["identity"]["commit"] == commit


def test_a_moved_branch_gives_new_weights_new_keys_and_a_pinned_commit_stays(hub, tmp_path, windows_19ch, monkeypatch):
    old_files, old_folder = _checkpoint_files(tmp_path, seed=5)
    new_files, new_folder = _checkpoint_files(tmp_path, seed=6)
    old = hub.publish(REPO, old_files)
    fitted = _embedder(REPO, cache_embeddings=False).fit(windows_19ch)  # identified, not loaded yet
    old_out, old_emb = _embed(REPO, windows_19ch)
    np.testing.assert_array_equal(old_out, _embed(str(old_folder), windows_19ch)[0])

    new = hub.publish(REPO, new_files)
    # An embedder loads the commit it identified, however the branch moved since, without asking again.
    hub.requests.clear()
    np.testing.assert_array_equal(fitted.transform(windows_19ch), old_out)
    assert fitted.weights_source_.commit == old and hub.requests == []

    new_out, new_emb = _embed(REPO, windows_19ch)  # a new resolution asks the hub and finds the new commit
    np.testing.assert_array_equal(new_out, _embed(str(new_folder), windows_19ch)[0])
    assert new_emb.weights_source_.commit == new != old
    assert new_emb.fingerprint_ != old_emb.fingerprint_  # cached embeddings of the old commit are never served
    assert ("GET", f"/api/models/{REPO}/revision/main") in hub.requests

    hub.requests.clear()
    pinned, pinned_emb = _embed(f"{REPO}@{old}", windows_19ch)
    np.testing.assert_array_equal(pinned, old_out)
    assert pinned_emb.fingerprint_ == old_emb.fingerprint_ and hub.requests == []


def test_a_download_cut_short_is_never_used(hub, tmp_path, windows_19ch, monkeypatch):
    files, folder = _checkpoint_files(tmp_path, seed=7)
    commit = hub.publish(REPO, files)
    hub.cut["model.safetensors"] = 1000  # the server goes down after 1000 bytes, at every try
    with pytest.raises(WeightsError, match="failed .*Nothing partial is used: run again to resume"):
        _embedder(REPO).check_input(windows_19ch.shape)
    cache = tmp_path / "hub-cache"
    assert not [p for p in cache.rglob("model.safetensors")]  # no half file under the name loading reads

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=REPO):
        _embedder(f"{REPO}@{commit}").check_input(windows_19ch.shape)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    hub.cut.clear()
    resumed, _ = _embed(REPO, windows_19ch)
    np.testing.assert_array_equal(resumed, _embed(str(folder), windows_19ch)[0])


def test_missing_repository_revision_and_file_and_a_gated_repository_name_the_fix(hub, tmp_path, windows_19ch):
    files, _ = _checkpoint_files(tmp_path, seed=8)
    hub.publish(REPO, files)
    cases = [
        ("nobody/nothing", "was not found at .*hf auth login"),
        (f"{REPO}@v9", "revision 'v9' does not exist"),
    ]
    for weights, message in cases:
        with pytest.raises(WeightsError, match=message):
            _embedder(weights).check_input(windows_19ch.shape)

    hub.publish("someone/only-config", {"config.json": files["config.json"]})
    with pytest.raises(WeightsError, match="holds no checkpoint"):
        _embedder("someone/only-config").check_input(windows_19ch.shape)

    hub.publish("someone/listed-not-served", files)
    hub.unserved.add("model.safetensors")  # in the tree, but its file is gone (404)
    with pytest.raises(WeightsError, match="A file of the hub checkpoint someone/listed-not-served"):
        _embedder("someone/listed-not-served").check_input(windows_19ch.shape)

    hub.publish("someone/gated", files)
    hub.gate("someone/gated")
    with pytest.raises(WeightsError, match="is gated: request access on .*/someone/gated.*HF_TOKEN"):
        _embedder("someone/gated").check_input(windows_19ch.shape)


def test_an_unreachable_hub_and_offline_mode_say_how_to_fetch_it(monkeypatch, tmp_path, windows_19ch):
    import huggingface_hub.constants as hfc

    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    with pytest.raises(WeightsError, match=rf"could not be reached.*`neurofm download {KEY}`"):
        _embedder(REPO).check_input(windows_19ch.shape)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=rf"HF_HUB_OFFLINE is set.*`neurofm download {KEY}`"):
        _embedder(REPO).check_input(windows_19ch.shape)


def test_neurofm_download_fetches_for_offline_runs_later(hub, tmp_path, windows_19ch, monkeypatch):
    files, folder = _checkpoint_files(tmp_path, seed=9)
    spec = get_model_spec(KEY)
    commit = hub.publish(spec.hub_repo, files)
    runner = CliRunner()
    result = runner.invoke(app, ["download", KEY])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith(f"{KEY}:"))
    assert f"{spec.hub_repo}@{commit[:12]}" in line and str(tmp_path / "hub-cache") in line and "MiB" in line

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.stop()
    offline, _ = _embed(None, windows_19ch)
    np.testing.assert_array_equal(offline, _embed(str(folder), windows_19ch)[0])
    refused = runner.invoke(app, ["download", KEY])
    assert refused.exit_code != 0 and "HF_HUB_OFFLINE is set" in refused.output
    assert runner.invoke(app, ["download"]).exit_code != 0
    assert runner.invoke(app, ["download", "--all", KEY]).exit_code != 0


def test_the_demo_with_published_weights_downloads_them_and_says_so_offline(hub, tmp_path, monkeypatch):
    from neurofm.demo import DEMO_BACKBONES, run_demo

    commits = {
        key: hub.publish(get_model_spec(key).hub_repo, _checkpoint_files(tmp_path, 1, key)[0]) for key in DEMO_BACKBONES
    }
    result = run_demo(cache_dir=str(tmp_path / "cache"), verbose=False, pretrained=True)
    assert set(result.summary_table().index) == {f"{key}_pretrained_probe" for key in DEMO_BACKBONES} | {"bandpower_lr"}
    weights = result.get_model_artifacts(artifact_type="backbone").query("ArtifactKey == 'weights'")
    assert sorted(w["commit"] for w in weights["ArtifactValue"]) == sorted(commits.values())

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"HF_HUB_OFFLINE is set.*`neurofm download cbramod`"):
        run_demo(cache_dir=str(tmp_path / "cache"), verbose=False, pretrained=True)


def test_a_spec_that_pins_a_commit_downloads_that_commit_however_main_moved(hub, tmp_path):
    from neurofm.models.weights import download_published

    spec = get_model_spec("codebrain")
    assert len(spec.hub_revision) == 40  # pinned in the registry, from the hub's commit page
    files, _ = _checkpoint_files(tmp_path, 0, "codebrain")
    published = hub.publish(spec.hub_repo, files)
    hub.repos[spec.hub_repo].commits[spec.hub_revision] = hub.repos[spec.hub_repo].commits.pop(published)
    hub.publish(spec.hub_repo, {**files, "config.json": b"{}"})  # main moves on
    snapshot = download_published("codebrain")
    assert snapshot.commit == spec.hub_revision
    assert (snapshot.path / "model.safetensors").read_bytes() == files["model.safetensors"]


def test_a_fine_tuner_trains_the_commit_its_check_identified(hub, tmp_path, windows_19ch):
    from safetensors.torch import load_file

    from neurofm.configs import CheckpointConfig, NeuralFineTuneConfig, TrainerConfig
    from neurofm.estimators.neural import NeuralFineTuner

    old_files, old_folder = _checkpoint_files(tmp_path, seed=10)
    new_files, _ = _checkpoint_files(tmp_path, seed=11)
    old = hub.publish(REPO, old_files)
    config = NeuralFineTuneConfig(
        model_key=KEY,
        weights=REPO,
        train_mode="frozen",
        trainer=TrainerConfig(max_epochs=1, batch_size=4, validation_fraction=0.0, early_stopping_patience=None),
        checkpoints=CheckpointConfig(save="none", monitor="train_loss"),
    )
    tuner = NeuralFineTuner(config=config, sfreq=160.0, ch_names=list(STANDARD_1020_19), verbose=False)
    y = np.array([0, 1, 0])
    prepared = tuner.check_input(windows_19ch.shape, y)
    hub.publish(REPO, new_files)  # main moves between the check and the fit (a fold in another process)
    tuner.fit(windows_19ch, y, prepared=prepared)
    assert prepared.weights["commit"] == old
    saved = load_file(str(old_folder / "model.safetensors"))
    backbone = tuner.net_.backbone.state_dict()
    # Frozen: the backbone holds the identified commit's tensors, not the new main's (the heads it leaves out aside).
    heads = get_model_spec(KEY).head_prefixes
    compared = [k for k in saved if k in backbone and not k.startswith(heads)]
    assert compared and all(torch.equal(backbone[k], saved[k]) for k in compared)
