"""Entries read back from cache and output folders: only from private folders, or keyed in declared-shared ones.

Tests run as one user, so "another user" writes with this process's own
hands; what matters is that neither a folder others can write (its mode) nor
an entry without this run's key is ever trusted. The attacks reproduced here
were served silently before neurofm.sharing existed.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from neurofm import Experiment
from neurofm.cache import EmbeddingCache, entry_checksums, hash_windows
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig
from neurofm.exceptions import ConfigError
from neurofm.progress import RunProgress, read_record, write_record
from neurofm.sharing import SharedFolderError, default_key_file, entry_key, make_folders
from neurofm.simulate import simulate_eeg_dataset


def _group_writable(path):
    os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) | stat.S_IWGRP)


def _entries(n=4, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    windows = rng.standard_normal((n, 2, 8)).astype(np.float32)
    return hash_windows(windows), rng.standard_normal((n, dim)).astype(np.float32)


def _plant_unkeyed_pack(cache: EmbeddingCache, keys, embeddings, name="pack-" + "a" * 32 + ".npz"):
    """What anyone who can write the folder can make: a pack whose (unkeyed) checksums are all valid."""
    cache.directory.mkdir(parents=True, exist_ok=True)
    with open(cache.directory / name, "wb") as fh:
        np.savez(fh, keys=keys, embeddings=embeddings, checksums=entry_checksums(keys, embeddings))
    return cache.directory / name


def test_a_cache_others_can_write_is_refused_unless_declared_shared(tmp_path):
    keys, values = _entries()
    EmbeddingCache(tmp_path, "e" * 32).store(keys, values)
    assert EmbeddingCache(tmp_path, "e" * 32).lookup(keys)[1].all()  # private: served
    _group_writable(tmp_path)
    with pytest.raises(SharedFolderError, match=r"can be written by others.*group.*chmod go-w.*shared_folders: true"):
        EmbeddingCache(tmp_path, "e" * 32).lookup(keys)
    os.chmod(tmp_path, 0o700)
    # A folder deep inside counts too: whoever can write it can swap what lies below.
    _group_writable(tmp_path / "embeddings" / "v2")
    with pytest.raises(SharedFolderError, match="embeddings/v2"):
        EmbeddingCache(tmp_path, "e" * 32).lookup(keys)


def test_a_cache_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    keys, values = _entries()
    cache = EmbeddingCache(tmp_path, "e" * 32)
    cache.store(keys, values)
    if os.getuid() == 0:
        other = 65534
        os.chown(cache.directory, other, -1)  # nobody's now: they may chmod it open at any time
    else:  # without root, this user becomes someone else to the check: the folder is then another user's
        other = os.getuid()
        monkeypatch.setattr("neurofm.sharing.os.getuid", lambda: other + 1)
    with pytest.raises(SharedFolderError, match=f"belongs to user {other}"):
        EmbeddingCache(tmp_path, "e" * 32).lookup(keys)


def test_planted_packs_are_never_served_from_a_shared_cache(tmp_path):
    keys, honest = _entries()
    key = entry_key(True)
    _group_writable(tmp_path)
    victim = EmbeddingCache(tmp_path, "e" * 32, key=key)
    # The attacker plants entries for the victim's windows: with valid unkeyed checksums, ...
    forged = honest + 100
    planted = _plant_unkeyed_pack(victim, keys, forged)
    # ... and under the victim's key id, which is public (it names the packs).
    posing = _plant_unkeyed_pack(victim, keys, forged, name=f"pack-{key.key_id}-{'b' * 32}.npz")
    values, found = EmbeddingCache(tmp_path, "e" * 32, key=key).lookup(keys)
    assert not found.any() and values is None
    assert planted.exists()  # not ours to judge: left as it is
    assert not posing.exists() and (posing.parent / f"corrupt-{posing.name}").exists()  # fails the key: set aside
    EmbeddingCache(tmp_path, "e" * 32, key=key).store(keys, honest)
    values, found = EmbeddingCache(tmp_path, "e" * 32, key=key).lookup(keys)
    assert found.all()
    np.testing.assert_array_equal(values, honest)


def test_a_group_key_shares_entries_and_other_keys_are_left_alone(tmp_path, monkeypatch):
    group_key_file = tmp_path / "lab.key"
    group_key_file.write_text("a group secret of enough characters\n")
    os.chmod(group_key_file, 0o640)
    cache_dir = tmp_path / "cache"
    keys, values = _entries()
    alice, bob = entry_key(True, group_key_file), entry_key(True, str(group_key_file))
    EmbeddingCache(cache_dir, "e" * 32, key=alice).store(keys, values)
    got, found = EmbeddingCache(cache_dir, "e" * 32, key=bob).lookup(keys)
    assert found.all()
    np.testing.assert_array_equal(got, values)
    [pack] = EmbeddingCache(cache_dir, "e" * 32).directory.glob("pack-*.npz")
    assert stat.S_IMODE(pack.stat().st_mode) == 0o640  # the group may read it
    # Carol's own key does not read the group's packs, and leaves them as they are.
    carol = entry_key(True)
    assert carol.key_id != alice.key_id
    stranger = EmbeddingCache(cache_dir, "e" * 32, key=carol)
    assert not stranger.lookup(keys)[1].any()
    assert pack.exists() and stranger.damaged_packs == 0
    # Nor does a private reader trust keyed packs (nor keyed readers unkeyed ones: see above).
    assert not EmbeddingCache(cache_dir, "e" * 32).lookup(keys)[1].any()


def test_a_key_file_others_can_read_or_write_is_refused_and_the_users_own_is_private(tmp_path, monkeypatch):
    loose = tmp_path / "loose.key"
    loose.write_text("x" * 40)
    for mode, who in ((0o644, "anyone"), (0o660, "its group")):
        os.chmod(loose, mode)
        with pytest.raises(SharedFolderError, match=f"mode {mode:04o}: {who} can"):
            entry_key(True, loose)
    short = tmp_path / "short.key"
    short.write_text("tiny")
    os.chmod(short, 0o600)
    with pytest.raises(SharedFolderError, match="at least 16"):
        entry_key(True, short)
    with pytest.raises(ConfigError, match="shared_folders is false"):
        entry_key(False, loose)

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert not default_key_file().exists()
    first = entry_key(True)
    assert default_key_file() == tmp_path / "config" / "neurofm" / "shared-folders.key"
    assert stat.S_IMODE(default_key_file().stat().st_mode) == 0o600
    assert stat.S_IMODE(default_key_file().parent.stat().st_mode) == 0o700
    assert entry_key(True) == first and "secret" not in repr(first) and first.secret.hex() not in repr(first)
    assert entry_key(False) is None


def test_folders_neurofm_makes_are_private_whatever_the_umask(tmp_path):
    keys, values = _entries()
    before = os.umask(0o002)  # a group-writable umask, common with per-user groups
    try:
        EmbeddingCache(tmp_path / "cache", "e" * 32).store(keys, values)
        write_record(tmp_path / "out" / "progress" / "model-x" / "fold-00000.json", {"a": 1})
        shared = make_folders(tmp_path / "shared" / "deep", entry_key(True))
    finally:
        os.umask(before)
    for folder in [
        tmp_path / "cache",
        *(p for p in (tmp_path / "cache").rglob("*") if p.is_dir()),
        *(p for p in (tmp_path / "out").rglob("*") if p.is_dir()),
    ]:
        assert not stat.S_IMODE(folder.stat().st_mode) & 0o022, folder
    assert EmbeddingCache(tmp_path / "cache", "e" * 32).lookup(keys)[1].all()  # so they are trusted next time
    assert stat.S_IMODE(shared.stat().st_mode) & 0o020  # a shared one lets the group add entries


def test_a_planted_progress_record_is_never_read(tmp_path):
    key = entry_key(True)
    path = tmp_path / "fold-00000.json"
    write_record(path, {"scores": {"accuracy": 0.99}})  # unkeyed: as anyone could write it
    assert read_record(path) == {"scores": {"accuracy": 0.99}}
    assert read_record(path, key) is None
    write_record(path, {"scores": {"accuracy": 0.5}}, key)
    assert read_record(path, key) == {"scores": {"accuracy": 0.5}}
    assert read_record(path) is None  # nor does a private reader take a keyed record
    forged = path.read_text().replace("0.5", "0.9")
    path.write_text(forged)
    assert read_record(path, key) is None
    with pytest.raises(SharedFolderError):
        _group_writable(tmp_path)
        RunProgress(tmp_path).model_folder({"a": 1})


@pytest.fixture(scope="module")
def data():
    return simulate_eeg_dataset(n_subjects=3, n_windows_per_class=4, random_state=3)


def _config(tmp_path, **kwargs):
    return ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        cache_dir=str(tmp_path / "cache"),
        metrics=["accuracy"],
        verbose=False,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
        **kwargs,
    )


def test_an_experiment_refuses_folders_others_can_write_before_any_work(tmp_path, data, monkeypatch):
    import neurofm.experiment

    X, y, meta, info = data

    def no_work(*args, **kwargs):
        raise AssertionError("the run started working")

    monkeypatch.setattr(neurofm.experiment.ExperimentRun, "_prepare", no_work)
    for folder in ("cache", "out"):
        (tmp_path / folder).mkdir(mode=0o770)
        os.chmod(tmp_path / folder, 0o770)
        with pytest.raises(SharedFolderError, match=str(tmp_path / folder)):
            Experiment(_config(tmp_path)).run(X, y, sample_metadata=meta, **info, output_dir=tmp_path / "out")
        assert list((tmp_path / folder).iterdir()) == []  # nothing written there
        os.chmod(tmp_path / folder, 0o700)
    with pytest.raises(ValueError, match="shared_folders is false"):
        _config(tmp_path, shared_key_file=str(tmp_path / "k"))


def test_a_shared_output_folder_resumes_from_its_own_records_and_never_from_planted_ones(tmp_path, data):
    X, y, meta, info = data
    out = tmp_path / "out"
    for folder in (out, tmp_path / "cache"):
        folder.mkdir()
        _group_writable(folder)
    config = _config(tmp_path, shared_folders=True)
    first = Experiment(config).run(X, y, sample_metadata=meta, **info, output_dir=out)
    records = sorted((out / "progress").rglob("fold-*.json"))
    assert len(records) == 3
    key = entry_key(True)
    assert all(read_record(path, key) is not None for path in records)
    # Someone who can write the folder replaces a record with a valid unkeyed one claiming perfect predictions.
    forged = read_record(records[0], key)
    assert "y_pred" in str(forged)
    write_record(records[0], forged | {"scores": {"accuracy": 1.0}})
    assert read_record(records[0])["scores"] == {"accuracy": 1.0}
    again = Experiment(config).run(X, y, sample_metadata=meta, **info, output_dir=out)
    assert again.scores["Value"].tolist() == first.scores["Value"].tolist()
    assert read_record(records[0], key) is not None  # the work was redone and recorded with the key


def test_a_planted_weight_digest_memo_never_names_other_weights(tmp_path):
    import hashlib
    import time

    from neurofm.models.weights import _file_digest

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"the bytes of some weights")
    old = time.time() - 60  # memos are kept only for files untouched for a while
    os.utime(weights, (old, old))
    true_digest = hashlib.blake2b(weights.read_bytes(), digest_size=16).hexdigest()
    cache = tmp_path / "cache"
    memo_dir = cache / "weight-digests"
    assert _file_digest(weights, memo_dir) == true_digest
    [memo] = memo_dir.iterdir()
    memo.write_text("0" * 32)  # what anyone able to write the folder could do
    assert _file_digest(weights, memo_dir) == "0" * 32  # private: the user's own folder is believed
    _group_writable(memo_dir)
    with pytest.raises(SharedFolderError, match="weight-digests"):
        _file_digest(weights, memo_dir)

    key = entry_key(True)
    assert _file_digest(weights, memo_dir, key) == true_digest  # the unkeyed memo is not read
    keyed = next(p for p in memo_dir.iterdir() if key.key_id in p.name)
    digest, mac = keyed.read_text().split()
    assert digest == true_digest
    keyed.write_text(f"{'0' * 32} {mac}")
    assert _file_digest(weights, memo_dir, key) == true_digest  # a forged digest fails the key


def test_an_embedder_reads_a_shared_cache_only_when_told_it_is_shared(tmp_path, windows_19ch):
    from neurofm.estimators.frozen import FoundationEmbedder
    from neurofm.models import get_model_spec
    from neurofm.simulate import STANDARD_1020_19

    def make(**kwargs):
        return FoundationEmbedder(
            "cbramod",
            weights="random",
            sfreq=160.0,
            ch_names=list(STANDARD_1020_19),
            cache_dir=str(tmp_path / "cache"),
            verbose=False,
            model_kwargs=get_model_spec("cbramod").tiny_kwargs,
            **kwargs,
        )

    (tmp_path / "cache").mkdir()
    _group_writable(tmp_path / "cache")
    with pytest.raises(SharedFolderError, match="shared_folders"):
        make().fit(windows_19ch).transform(windows_19ch)
    first = make(shared_folders=True).fit(windows_19ch)
    E1 = first.transform(windows_19ch)
    second = make(shared_folders=True).fit(windows_19ch)
    np.testing.assert_array_equal(second.transform(windows_19ch), E1)
    assert (second.cache_hits_, second.cache_misses_) == (3, 0)
    assert make(shared_folders=True).get_params()["shared_key_file"] is None


def test_a_shared_digest_memo_is_readable_by_the_group_and_one_this_user_cannot_read_is_recomputed(
    tmp_path, monkeypatch
):
    import hashlib
    import time
    from pathlib import Path

    from neurofm.models.weights import _file_digest

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights shared by a lab")
    old = time.time() - 60
    os.utime(weights, (old, old))
    memo_dir = tmp_path / "cache" / "weight-digests"
    key = entry_key(True)
    true_digest = hashlib.blake2b(weights.read_bytes(), digest_size=16).hexdigest()
    assert _file_digest(weights, memo_dir, key) == true_digest
    [memo] = memo_dir.iterdir()
    assert stat.S_IMODE(memo.stat().st_mode) == 0o640  # the group's other key holders may read it
    # A memo written by another member with a private mode: reading it fails for permissions (simulated, as root
    # reads anything): the file is hashed instead of the run stopping.
    read_text = Path.read_text

    def refused(self, *args, **kwargs):
        if self.parent == memo_dir:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refused)
    assert _file_digest(weights, memo_dir, key) == true_digest
