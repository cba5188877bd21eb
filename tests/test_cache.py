"""The content-addressed embedding cache."""

from __future__ import annotations

import errno
import re
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
    params = dict(
        weights="random",
        sfreq=160.0,
        ch_names=list(STANDARD_1020_19),
        cache_dir=cache_dir,
        verbose=False,
        model_kwargs=spec.tiny_kwargs,
    )
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
    # A partly warm cache gives the cold run's embeddings bit for bit (README: same experiment, same bits).
    np.testing.assert_array_equal(E, reference)


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
    base = make(cache_dir).fit(windows_19ch)  # volts
    other = make(cache_dir, **change).fit(windows_19ch * (1e6 if "units" in change else 1))  # the same in microvolts
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


def _only_pack(emb):
    packs = list(EmbeddingCache(emb.cache_dir, emb.fingerprint_).directory.glob("pack-*.npz"))
    assert len(packs) == 1
    return packs[0]


def _flip_one_embedding_value(pack):
    with np.load(pack, allow_pickle=False) as data:
        content = {name: data[name].copy() for name in data.files}
    content["embeddings"][1, 0] += 1.0  # the stored checksums now disagree with entry 1
    with open(pack, "wb") as fh:
        np.savez(fh, **content)


def _truncate(pack):
    raw = pack.read_bytes()
    pack.write_bytes(raw[: len(raw) // 2])


def _overwrite_with_garbage(pack):
    pack.write_bytes(b"not a pack" * 100)


@pytest.mark.parametrize("damage", [_flip_one_embedding_value, _truncate, _overwrite_with_garbage])
def test_a_damaged_entry_is_reported_set_aside_and_recomputed(cache_dir, windows_19ch, count_forwards, damage, caplog):
    clean = make(cache_dir).fit(windows_19ch)
    reference = clean.transform(windows_19ch)
    pack = _only_pack(clean)
    damage(pack)
    again = make(cache_dir).fit(windows_19ch)
    with caplog.at_level("WARNING", logger="neurofm"):
        E = again.transform(windows_19ch)
    np.testing.assert_array_equal(E, reference)  # the damaged value never reaches the caller
    assert count_forwards["windows"] == 3 + 3  # every window of the damaged pack was embedded again
    assert "damaged" in caplog.text and pack.name in caplog.text
    assert not pack.exists() and pack.with_name("corrupt-" + pack.name).exists()  # kept for inspection
    artifacts = {(t, k): v for _, t, k, v in again.get_artifacts()}
    assert artifacts[("embedding_cache", "damaged_packs_set_aside")] == 1
    # The recomputed entries went into a fresh pack that verifies: the next run is all hits.
    third = make(cache_dir).fit(windows_19ch)
    np.testing.assert_array_equal(third.transform(windows_19ch), reference)
    assert (third.cache_hits_, third.cache_misses_, third.cache_damaged_packs_) == (3, 0, 0)


def test_every_entry_carries_a_checksum_of_its_key_and_embedding(cache_dir, windows_19ch):
    from neurofm.cache import entry_checksums

    emb = make(cache_dir).fit(windows_19ch)
    emb.transform(windows_19ch)
    with np.load(_only_pack(emb), allow_pickle=False) as data:
        keys, embeddings, checksums = data["keys"], data["embeddings"], data["checksums"]
    assert len(checksums) == len(keys) == 3
    np.testing.assert_array_equal(checksums, entry_checksums(keys, embeddings))
    swapped = entry_checksums(keys[[1, 0, 2]], embeddings)
    assert (swapped != checksums)[
        :2
    ].all()  # an embedding filed under another window's key is caught  # an embedding filed under another window's key is caught


def test_a_full_disk_gives_a_clear_error_and_keeps_what_was_stored(cache_dir, windows_19ch, monkeypatch):
    import errno

    from neurofm.cache import CacheWriteError

    first = make(cache_dir).fit(windows_19ch)
    kept = first.transform(windows_19ch[:2])
    pack = _only_pack(first)
    before = pack.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", no_space)
    with pytest.raises(CacheWriteError, match="disk is full.*cache_dir.*intact"):
        make(cache_dir).fit(windows_19ch).transform(windows_19ch)
    monkeypatch.undo()
    folder = pack.parent
    assert sorted(p.name for p in folder.iterdir()) == sorted([pack.name, "manifest.json"])  # no partial file left
    assert pack.read_bytes() == before
    again = make(cache_dir).fit(windows_19ch)
    np.testing.assert_array_equal(again.transform(windows_19ch[:2]), kept)
    assert again.cache_hits_ == 2


_CONCURRENT_RUN = """
import sys
from neurofm import Experiment
from neurofm.configs import (ClassicalModelConfig, CVConfig, ExperimentConfig, FoundationEmbeddingModelConfig,
                             FrozenBackboneDecoderConfig)
from neurofm.models import get_model_spec
from neurofm.simulate import simulate_eeg_dataset

cache_dir, out = sys.argv[1], sys.argv[2]
X, y, meta, info = simulate_eeg_dataset(n_subjects=3, n_windows_per_class=6, random_state=5)
probe = FrozenBackboneDecoderConfig(
    backbone=FoundationEmbeddingModelConfig(model_key="cbramod", weights="random", batch_size=4,
                                            model_kwargs=get_model_spec("cbramod").tiny_kwargs),
    head=ClassicalModelConfig(estimator="LogisticRegression"))
config = ExperimentConfig(models={"probe": probe}, cache_dir=cache_dir, verbose=False, metrics=["balanced_accuracy"],
                          cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"))
Experiment(config).run(X, y, sample_metadata=meta, **info, output_dir=out)
"""


def test_four_processes_on_one_cache_get_correct_results_and_leave_it_whole(tmp_path):
    import os
    import subprocess
    import sys

    from pandas.testing import assert_frame_equal

    from neurofm.cache import entry_checksums
    from neurofm.results import ExperimentResult

    def start(cache, out):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        return subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_RUN, str(cache), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    reference = start(tmp_path / "own-cache", tmp_path / "reference")
    assert reference.wait() == 0, reference.stdout.read()
    shared = tmp_path / "shared-cache"
    runs = [start(shared, tmp_path / f"run-{i}") for i in range(4)]  # all four extract into one cache at once
    for process in runs:
        assert process.wait() == 0, process.stdout.read()
    expected = ExperimentResult.load(tmp_path / "reference")
    for i in range(4):
        got = ExperimentResult.load(tmp_path / f"run-{i}")
        assert_frame_equal(got.scores, expected.scores, check_exact=True)
        assert_frame_equal(got.predictions, expected.predictions, check_exact=True)
    packs = sorted((shared / "embeddings").rglob("pack-*.npz"))
    assert 1 <= len(packs) <= 4 and not list((shared / "embeddings").rglob("corrupt-*"))
    for pack in packs:
        with np.load(pack, allow_pickle=False) as data:
            assert (entry_checksums(data["keys"], data["embeddings"]) == data["checksums"]).all()
    # A fifth run finds every window in that cache.
    fifth = start(shared, tmp_path / "fifth")
    assert fifth.wait() == 0
    cached = ExperimentResult.load(tmp_path / "fifth").get_model_artifacts(artifact_type="embedding_cache")
    values = dict(zip(cached["ArtifactKey"], cached["ArtifactValue"], strict=True))
    assert (values["hits"], values["misses"]) == (36, 0)


# -- the cache on its own, without a model: its formats, several packs, damage, races and errors --------------------


def _keys_and_values(n, seed=0):
    rng = np.random.default_rng(seed)
    windows, embeddings = rng.standard_normal((n, 2, 8)), rng.standard_normal((n, 4))
    return hash_windows(windows.astype(np.float32)), embeddings.astype(np.float32)


def _packs_named(root, fingerprint, contents):
    """Each (keys, values) stored as its own pack, renamed pack-0.npz, pack-1.npz, ...: name order is list order."""
    writer = EmbeddingCache(root, fingerprint)
    return [
        writer.store(keys, values).rename(writer.directory / f"pack-{i}.npz")
        for i, (keys, values) in enumerate(contents)
    ]


_UNPICKLED: list[str] = []


def _record_unpickling(note):
    _UNPICKLED.append(note)


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return _record_unpickling, ("code ran",)


def test_keys_and_checksums_are_the_documented_hashes():
    import hashlib
    from pathlib import Path

    from neurofm.cache import entry_checksums, stable_hash

    # stable_hash: compact JSON with sorted keys, anything else as text.
    text = '{"a":{"x":"w.pth","y":null},"b":[1,2.5]}'
    assert (
        stable_hash({"b": [1, 2.5], "a": {"y": None, "x": Path("w.pth")}})
        == hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    )
    # A window's key: its float32 bytes and its shape; an entry's checksum: its key and float32 embedding.
    rng = np.random.default_rng(0)
    X, E = rng.standard_normal((3, 2, 5)), rng.standard_normal((3, 4))  # float64, as a caller may pass them
    keys, checksums = hash_windows(X), entry_checksums(hash_windows(X), E)
    assert keys.dtype == np.dtype("S32") and checksums.dtype == np.dtype("S16")
    for window, key, row, checksum in zip(X, keys, E, checksums, strict=True):
        digest = hashlib.blake2b(window.astype(np.float32).tobytes(), digest_size=16, person=b"neurofm-win")
        digest.update(b"(2, 5)")
        assert key == digest.hexdigest().encode()
        digest = hashlib.blake2b(bytes(key), digest_size=8, person=b"neurofm-entry")
        digest.update(row.astype(np.float32).tobytes())
        assert checksum == digest.hexdigest().encode()
    with pytest.raises(ValueError):  # one key short: refused, never checksummed in part
        entry_checksums(keys[:2], E)


def test_packs_and_manifest_are_laid_out_as_documented(tmp_path):
    import json
    import re
    from pathlib import Path

    keys, values = _keys_and_values(3)
    fingerprint = "ab" * 16
    cache = EmbeddingCache(tmp_path, fingerprint, manifest={"model": "cbramod", "weights": Path("w.pth")})
    assert cache.fingerprint == fingerprint and cache.directory == tmp_path / "embeddings" / "v2" / fingerprint
    pack = cache.store(keys.astype(object), values.astype(np.float64))  # as S32 and float32 whatever they were
    assert pack.parent == cache.directory and re.fullmatch(r"pack-[0-9a-f]{32}\.npz", pack.name)
    with np.load(pack, allow_pickle=False) as data:
        assert sorted(data.files) == ["checksums", "embeddings", "keys"]
        assert data["keys"].dtype == np.dtype("S32") and data["embeddings"].dtype == np.float32
    manifest = cache.directory / "manifest.json"
    assert manifest.read_text() == '{\n  "model": "cbramod",\n  "weights": "w.pth"\n}'  # readable: indented, sorted
    EmbeddingCache(tmp_path, fingerprint, manifest={"model": "other"}).store(keys, values)
    assert json.loads(manifest.read_text()) == {"model": "cbramod", "weights": "w.pth"}  # written once, never replaced
    bare = EmbeddingCache(tmp_path, "cd" * 16)
    bare.store(keys, values)
    assert not (bare.directory / "manifest.json").exists()  # no description given, none written
    found_values, found = EmbeddingCache(tmp_path, fingerprint).lookup(keys)
    assert found.all() and found_values.dtype == np.float32
    np.testing.assert_array_equal(found_values, values)


def test_a_key_in_several_packs_is_served_from_the_first_intact_pack_in_name_order(tmp_path, caplog):
    keys, values = _keys_and_values(4)
    first, _, _ = _packs_named(tmp_path, "e" * 32, [(keys, values), (keys, values + 1), (keys, values + 2)])
    cache = EmbeddingCache(tmp_path, "e" * 32)
    np.testing.assert_array_equal(cache.lookup(keys)[0], values)
    _flip_one_embedding_value(first)
    with caplog.at_level("WARNING", logger="neurofm"):
        damaged, found = cache.lookup(keys)
    assert damaged is None and not found.any()  # the whole damaged pack is missing this time: the caller recomputes
    assert (
        f"Embedding cache: {first} is damaged (1 entry fail their checksum); it is renamed corrupt-{first.name} "
        "and its windows are embedded again."
    ) in caplog.text
    # From the next lookup on, the copy in pack-1 serves, as a fresh index of the folder would.
    np.testing.assert_array_equal(cache.lookup(keys)[0], values + 1)
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, "e" * 32).lookup(keys)[0], values + 1)
    assert cache.damaged_packs == 1


def test_entries_failing_their_checksum_set_their_pack_aside_and_the_next_pack_still_serves(tmp_path, caplog):
    keys, values = _keys_and_values(6)
    first, _ = _packs_named(tmp_path, "e" * 32, [(keys[:3], values[:3]), (keys[3:], values[3:])])
    with np.load(first, allow_pickle=False) as data:
        content = {name: data[name].copy() for name in data.files}
    content["embeddings"][[0, 2]] += 1.0
    with open(first, "wb") as fh:
        np.savez(fh, **content)
    cache = EmbeddingCache(tmp_path, "e" * 32)
    with caplog.at_level("WARNING", logger="neurofm"):
        got, found = cache.lookup(keys)
    assert found.tolist() == [False] * 3 + [True] * 3
    np.testing.assert_array_equal(got[3:], values[3:])
    assert [record.getMessage() for record in caplog.records] == [
        f"Embedding cache: {first} is damaged (2 entries fail their checksum); it is renamed corrupt-{first.name} and "
        "its windows are embedded again."
    ]


def test_an_unreadable_pack_is_set_aside_and_the_others_still_serve(tmp_path, caplog):
    keys, values = _keys_and_values(6)
    first, second = _packs_named(tmp_path, "e" * 32, [(keys[:3], values[:3]), (keys[3:], values[3:])])
    first.write_bytes(b"not a pack" * 100)
    cache = EmbeddingCache(tmp_path, "e" * 32)
    with caplog.at_level("WARNING", logger="neurofm"):
        got, found = cache.lookup(keys)
    assert found.tolist() == [False] * 3 + [True] * 3
    np.testing.assert_array_equal(got[3:], values[3:])
    assert f"{first} is damaged (unreadable (" in caplog.text and not first.exists()
    _flip_one_embedding_value(second)
    cache.lookup(keys)
    assert cache.damaged_packs == 2


def test_a_pack_holding_pickled_objects_is_set_aside_and_never_unpickled(tmp_path, caplog):
    keys, values = _keys_and_values(4)
    first, _ = _packs_named(tmp_path, "e" * 32, [(keys[:2], values[:2]), (keys[2:], values[2:])])
    with np.load(first, allow_pickle=False) as data:
        content = {name: data[name] for name in data.files}
    content["embeddings"] = np.array([_RunsCodeWhenUnpickled(), _RunsCodeWhenUnpickled()], dtype=object)
    with open(first, "wb") as fh:
        np.savez(fh, **content)
    _UNPICKLED.clear()
    cache = EmbeddingCache(tmp_path, "e" * 32)
    with caplog.at_level("WARNING", logger="neurofm"):
        got, found = cache.lookup(keys)
    assert _UNPICKLED == []  # loading a file never runs code
    assert found.tolist() == [False, False, True, True] and cache.damaged_packs == 1
    np.testing.assert_array_equal(got[2:], values[2:])
    assert f"{first} is damaged (member embeddings is object of shape (2,), not what neurofm writes)" in caplog.text
    assert not first.exists()


def test_packs_that_another_process_removes_meanwhile_are_skipped(tmp_path, monkeypatch):
    from pathlib import Path

    keys, values = _keys_and_values(6)
    first, _, _ = _packs_named(
        tmp_path, "e" * 32, [(keys[:3], values[:3]), (keys[3:], values[3:]), (keys[:3], values[:3] + 1)]
    )
    both = np.concatenate([values[:3] + 1, values[3:]])
    # Removed between listing the folder and reading it: skipped, not counted as damaged, the others are read.
    import neurofm.cache

    real_read = neurofm.cache._read_pack

    def vanished(pack, *members):
        if Path(pack) == first:
            raise FileNotFoundError(pack)
        return real_read(pack, *members)

    monkeypatch.setattr(neurofm.cache, "_read_pack", vanished)
    racing = EmbeddingCache(tmp_path, "e" * 32)
    got, found = racing.lookup(keys)
    assert found.all() and racing.damaged_packs == 0 and first.exists()
    np.testing.assert_array_equal(got, both)
    monkeypatch.undo()

    # Set aside by another process after this one indexed it: its keys are missing this once, then served by a copy.
    cache = EmbeddingCache(tmp_path, "e" * 32)
    assert cache.lookup(keys)[1].all()
    first.rename(first.with_name("corrupt-" + first.name))
    got, found = cache.lookup(keys)
    assert found.tolist() == [False] * 3 + [True] * 3 and cache.damaged_packs == 0
    np.testing.assert_array_equal(got[3:], values[3:])
    got, found = cache.lookup(keys)
    assert found.all()
    np.testing.assert_array_equal(got, both)


@pytest.mark.parametrize(
    ("code", "problem", "fix"),
    [
        (errno.ENOSPC, "the disk is full", "free space there, or set cache_dir to a disk with room"),
        (errno.EACCES, "Permission denied", "check that the folder is writable, or set cache_dir elsewhere"),
    ],
)
def test_a_cache_folder_that_cannot_be_made_gives_a_clear_error(tmp_path, monkeypatch, code, problem, fix):
    import os
    from pathlib import Path

    from neurofm.cache import CacheWriteError

    keys, values = _keys_and_values(2)
    cache = EmbeddingCache(tmp_path, "e" * 32)

    def refuse(self, *args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(CacheWriteError) as err:
        cache.store(keys, values)
    assert err.value.errno == code
    assert err.value.strerror == (
        f"Cannot write to the embedding cache {cache.directory}: {problem}. Fix: {fix} (or turn the cache off with "
        "cache_embeddings: false). Embeddings stored before are intact and are reused on the next run."
    )


# -- packs from someone else: shared caches, crafted files ------------------------------------------------------


def _rewrite(pack, **members):
    """Rewrite ``pack`` with some members replaced (others as stored), as a crafted pack would be."""
    with np.load(pack, allow_pickle=False) as data:
        content = {name: data[name] for name in data.files}
    content.update(members)
    with open(pack, "wb") as fh:
        np.savez(fh, **content)


def _declare_shape(pack, member, shape):
    """Rewrite the npy header of ``member`` to claim ``shape``, keeping its (few) bytes: a lying header."""
    import zipfile

    with zipfile.ZipFile(pack) as archive:
        raw = {name: archive.read(name) for name in archive.namelist()}
    body = raw[f"{member}.npy"]
    header_len = int.from_bytes(body[8:10], "little")
    header = body[10 : 10 + header_len].decode("latin1")
    start, end = header.index("'shape': (") + len("'shape': ("), header.index(")")
    header = header[:start] + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + header[end:]
    header = header.rstrip("\n").rstrip(" ")
    header = header + " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    raw[f"{member}.npy"] = (
        body[:8] + len(header).to_bytes(2, "little") + header.encode("latin1") + body[10 + header_len :]
    )
    with zipfile.ZipFile(pack, "w") as archive:
        for name, data in raw.items():
            archive.writestr(name, data)


def _compress(pack):
    with np.load(pack, allow_pickle=False) as data:
        content = {name: data[name] for name in data.files}
    with open(pack, "wb") as fh:
        np.savez_compressed(fh, **content)


@pytest.mark.parametrize(
    ("craft", "reason"),
    [
        (
            lambda p: _declare_shape(p, "keys", (2**40,)),
            r"member keys declares shape \(1099511627776,\) but holds \d+ bytes",
        ),
        (lambda p: _declare_shape(p, "embeddings", (2**20, 2**20)), r"member embeddings declares shape"),
        (
            lambda p: _rewrite(p, keys=np.array(b"0" * 32)),
            r"member keys is \|S32 of shape \(\), not what neurofm writes",
        ),
        (lambda p: _rewrite(p, checksums=np.zeros(2)), r"member checksums is float64 of shape \(2,\)"),
        (
            lambda p: _rewrite(p, extra=np.zeros(2)),
            r"members \['checksums\.npy', 'embeddings\.npy', 'extra\.npy', 'keys\.npy'\]",
        ),
        (lambda p: _rewrite(p, embeddings=np.zeros((3, 4), np.float32)), r"members hold 2, 3 and 2 entries"),
        (_compress, r"member \w+ is compressed or larger than the file"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + b"\xff" * 100), r"unreadable \(BadZipFile: "),
        (lambda p: p.write_bytes(b"PK\x05\x06" + b"\x00" * 18), r"members \[\], not keys, embeddings, checksums"),
    ],
)
def test_a_crafted_pack_is_set_aside_without_loading_it_and_the_run_goes_on(tmp_path, caplog, craft, reason):
    import tracemalloc

    keys, values = _keys_and_values(4)
    first, _ = _packs_named(tmp_path, "e" * 32, [(keys[:2], values[:2]), (keys[2:], values[2:])])
    craft(first)
    cache = EmbeddingCache(tmp_path, "e" * 32)
    tracemalloc.start()
    with caplog.at_level("WARNING", logger="neurofm"):
        got, found = cache.lookup(keys)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5e6  # the header's claims are never allocated
    assert found.tolist() == [False, False, True, True] and cache.damaged_packs == 1
    np.testing.assert_array_equal(got[2:], values[2:])
    assert re.search(rf"{re.escape(str(first))} is damaged \({reason}", caplog.text), caplog.text
    assert not first.exists() and first.with_name("corrupt-" + first.name).exists()


def test_a_compressed_pack_is_never_expanded(tmp_path):
    """A small deflated pack could stand for hundreds of MB: neurofm writes packs uncompressed and refuses others."""
    import neurofm.cache

    keys, _ = _keys_and_values(2)
    pack = tmp_path / "pack-bomb.npz"
    with open(pack, "wb") as fh:
        np.savez_compressed(
            fh, keys=keys, embeddings=np.zeros((2, 50_000_000), np.float32), checksums=np.zeros(2, "S16")
        )
    assert pack.stat().st_size < 1_000_000
    with pytest.raises(
        neurofm.cache._UnusablePack, match=r"member (keys|embeddings) is compressed or larger than the file"
    ):
        neurofm.cache._read_pack(pack)


def test_a_pack_this_user_may_not_read_is_skipped_and_never_renamed(tmp_path, caplog, monkeypatch):
    """On a shared cache another user's pack may be unreadable to us: it is not damaged, and not ours to rename."""
    import os

    import neurofm.cache

    keys, values = _keys_and_values(4)
    theirs, _ = _packs_named(tmp_path, "e" * 32, [(keys[:2], values[:2]), (keys[2:], values[2:])])
    real_open = os.open

    def open_as_another_user(path, flags, *args, **kwargs):
        if os.fspath(path) == os.fspath(theirs):  # what os.open raises for a 0600 file of another uid
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(neurofm.cache.os, "open", open_as_another_user)
    cache = EmbeddingCache(tmp_path, "e" * 32)
    with caplog.at_level("WARNING", logger="neurofm"):
        got, found = cache.lookup(keys)
    assert found.tolist() == [False, False, True, True]
    assert cache.damaged_packs == 0 and cache.skipped_packs == 1
    assert theirs.exists() and not theirs.with_name("corrupt-" + theirs.name).exists()
    assert f"{theirs} is skipped (not readable by this user (Permission denied)); it is left as it is" in caplog.text
    np.testing.assert_array_equal(got[2:], values[2:])


def test_a_link_named_like_a_pack_is_never_followed(tmp_path, caplog):
    keys, values = _keys_and_values(4)
    elsewhere = EmbeddingCache(tmp_path / "elsewhere", "f" * 32).store(keys[:2], values[:2] + 7)
    _packs_named(tmp_path, "e" * 32, [(keys[2:], values[2:])])
    link = tmp_path / "embeddings" / "v2" / ("e" * 32) / "pack-link.npz"
    link.symlink_to(elsewhere)
    cache = EmbeddingCache(tmp_path, "e" * 32)
    with caplog.at_level("WARNING", logger="neurofm"):
        got, found = cache.lookup(keys)
    assert found.tolist() == [False, False, True, True]  # the linked file's planted values are never served
    assert cache.skipped_packs == 1 and cache.damaged_packs == 0 and link.is_symlink()
    assert f"{link} is skipped (not a regular file (" in caplog.text


def test_a_pipe_named_like_a_pack_cannot_hang_the_run(tmp_path, caplog):
    import os
    import threading

    keys, values = _keys_and_values(4)
    _packs_named(tmp_path, "e" * 32, [(keys[2:], values[2:])])
    fifo = tmp_path / "embeddings" / "v2" / ("e" * 32) / "pack-fifo.npz"
    os.mkfifo(fifo)
    cache = EmbeddingCache(tmp_path, "e" * 32)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(result=cache.lookup(keys)), daemon=True)
    with caplog.at_level("WARNING", logger="neurofm"):
        worker.start()
        worker.join(timeout=30)
    assert not worker.is_alive(), "the lookup hangs on a pipe named pack-*.npz"
    got, found = outcome["result"]
    assert found.tolist() == [False, False, True, True] and cache.skipped_packs == 1
    assert f"{fifo} is skipped (not a regular file (a pipe, a device or a folder))" in caplog.text


def test_skipped_packs_are_counted_in_the_artifacts(cache_dir, windows_19ch, tmp_path):
    import shutil

    clean = make(cache_dir).fit(windows_19ch)
    reference = clean.transform(windows_19ch)
    pack = _only_pack(clean)
    elsewhere = tmp_path / "elsewhere.npz"
    shutil.move(pack, elsewhere)
    pack.symlink_to(elsewhere)  # a link named like a pack: never opened
    again = make(cache_dir).fit(windows_19ch)
    np.testing.assert_array_equal(again.transform(windows_19ch), reference)
    artifacts = {(t, k): v for _, t, k, v in again.get_artifacts()}
    assert artifacts[("embedding_cache", "packs_skipped")] == 1
    assert artifacts[("embedding_cache", "damaged_packs_set_aside")] == 0
    assert (again.cache_hits_, again.cache_misses_) == (0, len(windows_19ch)) and pack.is_symlink()
