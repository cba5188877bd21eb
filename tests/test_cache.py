"""The content-addressed embedding cache."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import neurofm.embed
from neurofm.cache import EmbeddingCache, hash_windows
from neurofm.estimators.frozen import FoundationEmbedder
from neurofm.models import get_model_spec
from neurofm.simulate import STANDARD_1020_19


def make(cache_dir, **kw):
    spec = get_model_spec(kw.pop("key", "cbramod"))
    params = dict(weights="random", sfreq=160.0, ch_names=list(STANDARD_1020_19), cache_dir=cache_dir, verbose=False,
                  model_kwargs=spec.tiny_kwargs)
    params.update(kw)
    return FoundationEmbedder(spec.key, **params)


@pytest.fixture()
def count_forwards(monkeypatch):
    calls = {"windows": 0}
    original = neurofm.embed.embed_windows

    def counting(backbone, plan, X, *args, **kwargs):
        calls["windows"] += len(X)
        return original(backbone, plan, X, *args, **kwargs)

    monkeypatch.setattr("neurofm.estimators.frozen.embed_windows", counting)
    return calls


def test_second_identical_run_computes_nothing(cache_dir, windows_19ch, count_forwards):
    first = make(cache_dir).fit(windows_19ch)
    E1 = first.transform(windows_19ch)
    assert (first.cache_hits_, first.cache_misses_) == (0, 3)
    assert count_forwards["windows"] == 3
    second = make(cache_dir).fit(windows_19ch)
    E2 = second.transform(windows_19ch)
    assert (second.cache_hits_, second.cache_misses_) == (3, 0)
    assert count_forwards["windows"] == 3  # no new forward pass
    np.testing.assert_array_equal(E1, E2)
    # All windows were cached, so the backbone was never even built.
    artifacts = {(t, k): v for _, t, k, v in second.get_artifacts()}
    assert artifacts[("backbone", "loaded")] is False


def test_checkpoint_bytes_are_part_of_the_key(cache_dir, tmp_path, windows_19ch):
    import torch

    first = make(cache_dir)
    module = first.fit(windows_19ch).backbone_.module
    path = tmp_path / "w.pth"
    torch.save(module.state_dict(), path)
    a = make(cache_dir, weights=str(path)).fit(windows_19ch)
    state = module.state_dict()
    name = next(k for k in state if k.endswith("weight"))
    state[name] = state[name] + 1.0
    torch.save(state, path)
    b = make(cache_dir, weights=str(path)).fit(windows_19ch)
    assert a.fingerprint_ != b.fingerprint_
    # The same bytes elsewhere share the key: the location is not part of it.
    copy = tmp_path / "copy.pth"
    copy.write_bytes(path.read_bytes())
    assert make(cache_dir, weights=str(copy)).fit(windows_19ch).fingerprint_ == b.fingerprint_


def test_only_new_windows_are_computed(cache_dir, windows_19ch, count_forwards):
    make(cache_dir).fit(windows_19ch).transform(windows_19ch[:2])
    emb = make(cache_dir).fit(windows_19ch)
    E = emb.transform(windows_19ch)
    assert (emb.cache_hits_, emb.cache_misses_) == (2, 1)
    assert count_forwards["windows"] == 3
    reference = make(cache_dir, cache_embeddings=False).fit(windows_19ch).transform(windows_19ch)
    np.testing.assert_allclose(E, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "change",
    [
        {"pooling": "max"},
        {"random_state": 1},  # other weights
        {"sfreq": 128.0},  # other adaptation (resampling ratio)
        {"units": "uV"},  # other unit conversion
        {"key": "labram"},
    ],
)
def test_fingerprint_covers_weights_pooling_and_adaptation(cache_dir, windows_19ch, change):
    base = make(cache_dir).fit(windows_19ch * (1e-6 if "units" in change else 1))
    other = make(cache_dir, **change).fit(windows_19ch * (1e6 if "units" in change else 1))
    assert base.fingerprint_ != other.fingerprint_


def test_fingerprint_ignores_labels_and_location(cache_dir, tmp_path, windows_19ch):
    a = make(cache_dir).fit(windows_19ch, y=np.array([0, 1, 0]))
    b = make(str(tmp_path / "elsewhere")).fit(windows_19ch, y=np.array([1, 1, 0]))
    assert a.fingerprint_ == b.fingerprint_


def test_packs_hold_no_pickle_and_no_temporary_files(cache_dir, windows_19ch):
    emb = make(cache_dir).fit(windows_19ch)
    emb.transform(windows_19ch)
    folder = EmbeddingCache(cache_dir, emb.fingerprint_).directory
    packs = list(folder.glob("pack-*.npz"))
    assert len(packs) == 1
    with np.load(packs[0], allow_pickle=False) as data:
        assert data["keys"].dtype.kind == "S"
        assert data["embeddings"].dtype == np.float32
    assert not list(folder.glob(".tmp-*"))
    assert (folder / "manifest.json").exists()


def test_window_keys_depend_on_content_only():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 2, 10)).astype(np.float32)
    keys = hash_windows(X)
    assert len(set(keys)) == 4
    np.testing.assert_array_equal(hash_windows(X[[2, 0]]), keys[[2, 0]])
    X2 = X.copy()
    X2[1, 0, 0] += 1e-3
    changed = hash_windows(X2)
    assert changed[1] != keys[1] and changed[0] == keys[0]


def test_concurrent_writers_stay_consistent(tmp_path):
    cache = EmbeddingCache(tmp_path, "f" * 32)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2, 8)).astype(np.float32)
    keys = hash_windows(X)
    values = rng.standard_normal((40, 5)).astype(np.float32)

    def writer(part):
        EmbeddingCache(tmp_path, "f" * 32).store(keys[part], values[part])

    threads = [threading.Thread(target=writer, args=(slice(i, i + 20),)) for i in range(0, 40, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found_values, found = cache.lookup(keys)
    assert found.all()
    np.testing.assert_array_equal(found_values, values)


def test_a_cache_sees_packs_other_processes_add_after_it_indexed(tmp_path):
    rng = np.random.default_rng(1)
    keys = hash_windows(rng.standard_normal((30, 2, 8)).astype(np.float32))
    values = rng.standard_normal((30, 4)).astype(np.float32)
    reader = EmbeddingCache(tmp_path, "e" * 32)
    reader.store(keys[:10], values[:10])
    assert reader.lookup(keys)[1].sum() == 10
    EmbeddingCache(tmp_path, "e" * 32).store(keys[10:], values[10:])  # another writer, after the reader indexed
    found_values, found = reader.lookup(keys)
    assert found.all()
    np.testing.assert_array_equal(found_values, values)
    # A key stored twice resolves to the same pack for an incremental and a fresh index.
    EmbeddingCache(tmp_path, "e" * 32).store(keys[:5], values[:5] + 1)
    np.testing.assert_array_equal(reader.lookup(keys)[0], EmbeddingCache(tmp_path, "e" * 32).lookup(keys)[0])
