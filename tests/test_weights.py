"""Weights in every supported form load back strictly and give identical embeddings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from neurofm.adapt import plan_adaptation
from neurofm.data import SignalInfo
from neurofm.estimators.frozen import FoundationEmbedder
from neurofm.exceptions import WeightsError
from neurofm.models import create_backbone, get_model_spec, list_model_keys
from neurofm.simulate import STANDARD_1020_19


def _signal(key, n_times=640, sfreq=160.0):
    info = SignalInfo(sfreq=sfreq, ch_names=tuple(STANDARD_1020_19), units=("V",) * 19)
    return plan_adaptation(get_model_spec(key), info, n_times).target


def _embed(key, weights, X, model_kwargs=None, **kw):
    emb = FoundationEmbedder(
        key,
        weights=weights,
        sfreq=160.0,
        ch_names=list(STANDARD_1020_19),
        cache_embeddings=False,
        verbose=False,
        model_kwargs=model_kwargs,
        **kw,
    )
    return emb.fit(X).transform(X), emb


def _random_backbone(key, seed=7):
    spec = get_model_spec(key)
    return create_backbone(key, _signal(key), "random", model_kwargs=spec.tiny_kwargs, random_state=seed).module


def _fake_hub_cache(repo: str, files: dict[str, Path]) -> None:
    """Lay files out as huggingface_hub's cache does, so resolution runs offline."""
    import huggingface_hub.constants as hfc

    commit = "0123456789abcdef0123456789abcdef01234567"
    root = Path(hfc.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for name, src in files.items():
        (snapshot / name).write_bytes(src.read_bytes())


def test_safetensors_and_pt_files_reproduce_embeddings(tmp_path, windows_19ch):
    spec = get_model_spec("cbramod")
    module = _random_backbone("cbramod")
    reference, _ = _embed("cbramod", "random", windows_19ch, spec.tiny_kwargs, random_state=7)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, tmp_path / "w.safetensors")
    torch.save(module.state_dict(), tmp_path / "w.pth")
    torch.save({"model": module.state_dict()}, tmp_path / "wrapped.pt")  # upstream scripts wrap the state dict
    for name in ("w.safetensors", "w.pth", "wrapped.pt"):
        loaded, emb = _embed("cbramod", str(tmp_path / name), windows_19ch, spec.tiny_kwargs)
        np.testing.assert_array_equal(loaded, reference)
        assert emb.backbone_.report["random_init"] is False
        assert emb.backbone_.source.kind == "file"


@pytest.mark.parametrize("key", list_model_keys())
def test_save_pretrained_directory_and_hub_cache_reproduce_embeddings(key, tmp_path, windows_19ch):
    spec = get_model_spec(key)
    module = _random_backbone(key, seed=11)
    reference, _ = _embed(key, "random", windows_19ch, spec.tiny_kwargs, random_state=11)
    folder = tmp_path / "saved"
    module.save_pretrained(str(folder))
    # The directory carries the architecture: no model_kwargs needed to load it.
    loaded, emb = _embed(key, str(folder), windows_19ch)
    np.testing.assert_array_equal(loaded, reference)
    assert emb.backbone_.source.kind == "directory"
    assert emb.backbone_.report["loaded_tensors"] > 0

    repo = f"neurofm-test/{key}-tiny"
    _fake_hub_cache(repo, {"config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors"})
    from_hub, emb = _embed(key, repo, windows_19ch)
    np.testing.assert_array_equal(from_hub, reference)
    assert emb.backbone_.source.kind == "hub"


def test_hub_id_not_in_cache_names_the_id():
    with pytest.raises(WeightsError, match="someone/missing-model") as err:
        FoundationEmbedder(
            "cbramod", weights="someone/missing-model", sfreq=160.0, ch_names=list(STANDARD_1020_19)
        ).check_input((2, 19, 640))
    assert "hf download someone/missing-model" in str(err.value)


def test_default_weights_are_the_published_checkpoint_and_fail_clearly_offline():
    with pytest.raises(WeightsError, match="braindecode/labram-pretrained"):
        FoundationEmbedder("labram", sfreq=160.0, ch_names=list(STANDARD_1020_19)).check_input((2, 19, 640))


def test_nonexistent_path_is_an_error():
    with pytest.raises(WeightsError, match="neither 'random'"):
        FoundationEmbedder(
            "cbramod", weights="./no/such/file.pth", sfreq=160.0, ch_names=list(STANDARD_1020_19)
        ).check_input((2, 19, 640))


def test_missing_keys_fail_loudly(tmp_path, windows_19ch):
    spec = get_model_spec("cbramod")
    state = _random_backbone("cbramod").state_dict()
    dropped = [k for k in state if k.startswith("encoder.")][:3]
    save_file({k: v.contiguous() for k, v in state.items() if k not in dropped}, tmp_path / "partial.safetensors")
    with pytest.raises(
        WeightsError,
        match=r"does not match 'cbramod': 3 missing key\(s\) \['encoder\..*Refusing to run "
        r"with partly loaded weights; check that the checkpoint belongs to this model",
    ) as err:
        _embed("cbramod", str(tmp_path / "partial.safetensors"), windows_19ch, spec.tiny_kwargs)
    assert dropped[0] in str(err.value)


def test_unexpected_keys_fail_loudly(tmp_path, windows_19ch):
    spec = get_model_spec("cbramod")
    state = dict(_random_backbone("cbramod").state_dict())
    state["encoder.not_a_parameter"] = torch.zeros(3)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "extra.safetensors")
    with pytest.raises(
        WeightsError,
        match=r"0 missing key\(s\) \[\] and 1 unexpected key\(s\) "
        r"\['encoder\.not_a_parameter'\]\. Refusing to run",
    ):
        _embed("cbramod", str(tmp_path / "extra.safetensors"), windows_19ch, spec.tiny_kwargs)


def test_wrong_architecture_is_reported_as_a_shape_mismatch(tmp_path, windows_19ch):
    state = _random_backbone("cbramod").state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "tiny.safetensors")
    with pytest.raises(
        WeightsError,
        match=r"does not fit 'cbramod' as built for this input: .*linear1\.bias: checkpoint "
        r"\(64,\) vs model \(32,\)",
    ):
        _embed("cbramod", str(tmp_path / "tiny.safetensors"), windows_19ch, {"n_layer": 1, "dim_feedforward": 32})


class NotATensor:
    """Stands for arbitrary pickled code in a checkpoint."""


class RunsCode:
    """Unpickling this calls ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_pickled_code_is_refused(tmp_path, windows_19ch):
    torch.save({"weights": NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(
        WeightsError,
        match=r"(?s)Could not read checkpoint .*evil\.pt: .*Files are read with weights_only=True "
        r"\(no pickled code\); re-save the checkpoint as a plain state dict",
    ):
        _embed("cbramod", str(tmp_path / "evil.pt"), windows_19ch, get_model_spec("cbramod").tiny_kwargs)


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_a_checkpoint_that_would_run_code_is_refused_before_running_it(tmp_path, windows_19ch, suffix):
    marker = tmp_path / "pwned"
    state = {k: v for k, v in _random_backbone("cbramod").state_dict().items()}
    state["payload"] = RunsCode(marker)
    torch.save(state, tmp_path / f"evil{suffix}")
    with pytest.raises(
        WeightsError,
        match=rf"(?s)Could not read checkpoint .*evil{suffix}: .*Files are read with "
        r"weights_only=True \(no pickled code\); re-save the checkpoint",
    ):
        _embed("cbramod", str(tmp_path / f"evil{suffix}"), windows_19ch, get_model_spec("cbramod").tiny_kwargs)
    assert not marker.exists()  # the payload never ran


def test_labram_checkpoint_for_long_windows_accepts_shorter_ones(tmp_path, windows_19ch):
    """braindecode issue 1153: a LaBraM built for 15 s must still embed 4 s windows."""
    spec = get_model_spec("labram")
    long_signal = _signal("labram", n_times=3000, sfreq=200.0)
    long_model = create_backbone("labram", long_signal, "random", model_kwargs=spec.tiny_kwargs, random_state=5).module
    assert long_model.temporal_embedding.shape[1] == 16
    folder = tmp_path / "labram15s"
    long_model.save_pretrained(str(folder))
    E, emb = _embed("labram", str(folder), windows_19ch)
    assert E.shape == (3, 200) and np.isfinite(E).all()
    table = emb.backbone_.module.temporal_embedding
    assert table.shape[1] == 5  # 4 patches + cls
    torch.testing.assert_close(table, long_model.temporal_embedding[:, :5])


def test_eegpt_checkpoint_cannot_overwrite_channel_ids(tmp_path, windows_19ch):
    spec = get_model_spec("eegpt")
    module = _random_backbone("eegpt")
    state = dict(module.state_dict())
    state["chans_id"] = torch.flip(state["chans_id"], dims=[-1])  # a checkpoint saved for another montage
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "eegpt.safetensors")
    _, emb = _embed("eegpt", str(tmp_path / "eegpt.safetensors"), windows_19ch, spec.tiny_kwargs)
    torch.testing.assert_close(emb.backbone_.module.chans_id, module.chans_id)


def test_random_init_is_recorded(windows_19ch):
    _, emb = _embed("cbramod", "random", windows_19ch, get_model_spec("cbramod").tiny_kwargs)
    artifacts = {(t, k): v for _, t, k, v in emb.get_artifacts()}
    assert artifacts[("backbone", "random_init")] is True
    assert artifacts[("backbone", "weights")]["kind"] == "random"
    json.dumps([list(row) for row in emb.get_artifacts()], default=str)


def test_directory_key_covers_only_the_files_loading_reads(tmp_path, windows_19ch):
    """A hub snapshot may hold other checkpoints (LUNA ships base, large, huge): they are not read or hashed."""
    module = _random_backbone("cbramod")
    folder = tmp_path / "snap"
    module.save_pretrained(str(folder))

    def make():
        return FoundationEmbedder(
            "cbramod", weights=str(folder), sfreq=160.0, ch_names=list(STANDARD_1020_19), verbose=False
        ).fit(windows_19ch)

    before = make().fingerprint_
    (folder / "other_variant.safetensors").write_bytes(b"\0" * 1024)
    assert make().fingerprint_ == before
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(WeightsError, match="holds no checkpoint"):
        FoundationEmbedder("cbramod", weights=str(folder), sfreq=160.0, ch_names=list(STANDARD_1020_19)).check_input(
            windows_19ch.shape
        )


@pytest.mark.parametrize("layout", ["file", "directory"])
def test_a_checkpoint_rewritten_between_fit_and_loading_is_refused_not_cached(tmp_path, windows_19ch, layout):
    """fit identifies the weights (the cache's namespace); if other bytes are loaded later, nothing is cached."""
    spec = get_model_spec("cbramod")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    path = folder / ("weights.safetensors" if layout == "file" else "model.safetensors")
    save_file({k: v.contiguous() for k, v in _random_backbone("cbramod", seed=1).state_dict().items()}, path)
    emb = FoundationEmbedder(
        "cbramod",
        weights=str(path if layout == "file" else folder),
        sfreq=160.0,
        ch_names=list(STANDARD_1020_19),
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
        model_kwargs=spec.tiny_kwargs,
    ).fit(windows_19ch)
    identified = emb.fingerprint_
    # Another process saves other weights into the same path (as a training run saving its best epoch would).
    save_file({k: v.contiguous() for k, v in _random_backbone("cbramod", seed=2).state_dict().items()}, path)
    with pytest.raises(
        WeightsError,
        match=rf"The checkpoint at {re.escape(str(path if layout == 'file' else folder))} "
        r"changed while this run was using it: the bytes loaded are not the ones "
        r"identified when the run started .* wait until it is done, then rerun",
    ):
        emb.transform(windows_19ch)
    assert not list((tmp_path / "cache").rglob("pack-*.npz"))  # nothing stored under the old weights' identity
    refit = emb.fit(windows_19ch)  # identified again: the new bytes, under their own identity
    assert refit.fingerprint_ != identified and refit.transform(windows_19ch).shape[0] == len(windows_19ch)
