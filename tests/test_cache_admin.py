"""``neurofm cache info|prune``: what a cache holds, and freeing it without touching anything neurofm did not write."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurofm import Experiment
from neurofm.cache import EmbeddingCache, hash_windows
from neurofm.cache_admin import cache_info, prune_cache
from neurofm.cli import app
from neurofm.configs import (
    CheckpointConfig,
    CVConfig,
    ExperimentConfig,
    NeuralFineTuneConfig,
    TrainerConfig,
)
from neurofm.exceptions import ConfigError
from neurofm.experiment import fold_checkpoint_folder
from neurofm.models import get_model_spec
from neurofm.utils.files import MARKER_NAME

runner = CliRunner()
OLD = time.time() - 30 * 86400


def _store(root: Path, fingerprint: str, model_key: str, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2, 8)).astype(np.float32)
    manifest = {
        "model_key": model_key,
        "weights": {"kind": "checkpoint", "file": "ab" * 16},
        "adaptation": {"target": {"sfreq": 200.0, "ch_names": ["C3", "C4"], "n_times": 8}, "steps": [{"step": "x"}]},
    }
    cache = EmbeddingCache(root, fingerprint, manifest)
    cache.store(hash_windows(X), rng.standard_normal((n, 4)).astype(np.float32))
    return cache.directory


def _age(path: Path, when: float = OLD) -> None:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (when, when), follow_symlinks=False)


@pytest.fixture()
def cache(tmp_path):
    """A cache of two models' embeddings (one old), a checkpoint, a weight digest, a foreign file and a link."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / MARKER_NAME).write_text("{}\n")
    old = _store(root, "a" * 32, "labram", 5)
    _age(old)
    _store(root, "b" * 32, "cbramod", 3, seed=1)
    ckpt = root / "checkpoints" / "cbramod-lora-0123456789ab"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps({"config": {"model_key": "cbramod", "train_mode": "lora"}}))
    (ckpt / "best.safetensors").write_bytes(b"0" * 1000)
    (root / "weight-digests").mkdir()
    (root / "weight-digests" / ("c" * 32 + ".txt")).write_text("d" * 32)
    # Not neurofm's: a file of another name inside a fingerprint folder, and a link to a file outside the cache.
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (old / "notes.txt").write_text("mine, not neurofm's")
    (root / "embeddings" / "v2" / ("e" * 32)).symlink_to(tmp_path, target_is_directory=True)
    (root / "checkpoints" / "link-lora-0123456789ab").symlink_to(outside)
    _age(old / "notes.txt")
    return root, old, outside


def _files(root: Path) -> dict[str, int]:
    """Every regular file below root (links not followed) and its size, markers aside."""
    out = {}
    for here, _, names in os.walk(root):
        for name in names:
            path = Path(here) / name
            if not path.is_symlink() and name != MARKER_NAME:
                out[str(path)] = path.stat().st_size
    return out


def test_info_lists_each_kind_and_model_and_its_sizes_add_up(cache):
    root, old, _ = cache
    info = cache_info(root)
    embeddings = info[info.Kind == "embeddings"].set_index("Model")
    assert embeddings.loc["labram", "Entries"] == 5 and embeddings.loc["cbramod", "Entries"] == 3
    assert "checkpoint file=abababab" in embeddings.loc["labram", "Weights"]
    assert embeddings.loc["labram", "Adaptation"] == "200.0 Hz x 2 ch x 8 samples: x"
    assert (embeddings.loc["labram", "LastUsed"] - embeddings.loc["cbramod", "LastUsed"]).days <= -29
    [checkpoints] = info[(info.Kind == "checkpoints") & (info.Model == "cbramod")].itertuples()
    assert checkpoints.Adaptation == "lora" and checkpoints.Entries == 1
    assert info[info.Kind == "weight digests"].Entries.tolist() == [1]
    links = info[info.Note.fillna("").str.contains("symbolic link")]
    assert len(links) == 2 and (links.Bytes == 0).all()
    # Every byte counted once, nothing followed through a link.
    assert info.Bytes.sum() == sum(_files(root).values())
    shown = runner.invoke(app, ["cache", "info", "--cache-dir", str(root)])
    assert shown.exit_code == 0, shown.output
    assert "labram" in shown.output and "Total:" in shown.output and "embeddings:" in shown.output


def test_prune_without_a_selector_refuses_and_names_them(cache):
    root, _, _ = cache
    before = _files(root)
    done = runner.invoke(app, ["cache", "prune", "--cache-dir", str(root)])
    assert done.exit_code == 2
    assert "--older-than" in done.output and "--model" in done.output and "--all" in done.output
    with pytest.raises(ConfigError, match="older_than=DAYS"):
        prune_cache(root)
    assert _files(root) == before


def test_dry_run_lists_and_deletes_nothing(cache):
    root, old, _ = cache
    before = _files(root)
    done = runner.invoke(app, ["cache", "prune", "--cache-dir", str(root), "--all", "--dry-run"])
    assert done.exit_code == 0, done.output
    assert "Would remove" in done.output and "Would free" in done.output
    assert _files(root) == before


def test_prune_by_age_removes_old_entries_only_and_leaves_foreign_files_and_links(cache):
    root, old, outside = cache
    removed = prune_cache(root, older_than=7)
    assert removed.Model.tolist() == ["labram"]
    left = _files(root)
    assert removed.Bytes.sum() > 0 and (old / "notes.txt").read_text() == "mine, not neurofm's"
    assert not (old / "manifest.json").exists() and not list(old.glob("pack-*.npz"))
    assert any("notes.txt is not a file neurofm writes there" in n for n in removed.attrs["left_alone"])
    assert any("symbolic link" in n for n in removed.attrs["left_alone"])
    # The recent model, the links and what they point at are all still there.
    assert any("b" * 32 in path for path in left)
    assert (root / "embeddings" / "v2" / ("e" * 32)).is_symlink() and outside.read_text() == "keep me"
    assert (root / "checkpoints" / "link-lora-0123456789ab").is_symlink()


def test_prune_all_frees_what_info_reported_and_keeps_the_rest(cache):
    root, old, outside = cache
    (old / "notes.txt").unlink()
    reported = cache_info(root)
    done = runner.invoke(app, ["cache", "prune", "--cache-dir", str(root), "--all"])
    assert done.exit_code == 0, done.output
    assert "Freed" in done.output and "Left alone" in done.output
    assert _files(root) == {}  # every file was neurofm's
    assert not old.exists()  # emptied folders go too
    assert reported[reported.Note.isna()].Bytes.sum() > 0
    assert (root / "checkpoints" / "link-lora-0123456789ab").is_symlink() and outside.read_text() == "keep me"
    assert (root / MARKER_NAME).exists() and (root / "checkpoints").is_dir()


def test_prune_by_model_and_a_group_writable_folder_is_left_alone(cache):
    root, old, _ = cache
    removed = prune_cache(root, model="cbramod")
    assert sorted(removed.Kind) == ["checkpoints", "embeddings"]
    assert not (root / "checkpoints" / "cbramod-lora-0123456789ab").exists()
    assert (old / "manifest.json").exists()  # labram's
    os.chmod(old, 0o777)
    kept = prune_cache(root, model="labram")
    assert kept.empty and (old / "manifest.json").exists()
    assert any("can be written by others" in n for n in kept.attrs["left_alone"])


def test_prune_refuses_a_folder_that_is_not_a_neurofm_cache(tmp_path):
    (tmp_path / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError, match="not a neurofm cache folder"):
        prune_cache(tmp_path, all=True)
    assert (tmp_path / "thesis.tex").exists()


def test_a_model_name_becomes_a_plain_folder_name():
    assert fold_checkpoint_folder("lora", 2) == "checkpoints/lora/fold-2"
    for name in ("../../etc", "a/b", ".hidden", "with space"):
        folder = fold_checkpoint_folder(name, 0)
        parts = Path(folder).parts
        assert len(parts) == 3 and parts[1] not in ("..", ".") and "/" not in parts[1] and not parts[1].startswith(".")


def test_a_runs_checkpoints_land_in_its_output_folder_by_model_and_fold(small_dataset, tmp_path):
    X, y, meta, info = small_dataset
    tuned = NeuralFineTuneConfig(
        model_key="cbramod",
        weights="random",
        train_mode="full",
        pooling="flatten",
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        trainer=TrainerConfig(max_epochs=1, batch_size=8, early_stopping_patience=None),
        checkpoints=CheckpointConfig(save="best"),
    )
    config = ExperimentConfig(
        models={"ft": tuned},
        metrics=["balanced_accuracy"],
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),
    )
    out = tmp_path / "out"
    result = Experiment(config).run(X, y, sample_metadata=meta, output_dir=out, **info)
    directories = result.get_model_artifacts("checkpoints", "ft").query("ArtifactKey == 'directory'")
    for fold, directory in zip(directories.Fold, directories.ArtifactValue, strict=True):
        assert Path(directory).parent == out / "checkpoints" / "ft" / f"fold-{fold}"
        assert (Path(directory) / "best.safetensors").is_file()
    assert sorted(directories.Fold) == [0, 1]
    assert not list((tmp_path / "cache" / "checkpoints").glob("cbramod-*"))  # nothing in the cache
    # Without an output folder: the cache, as before, where `cache info` shows them.
    Experiment(config).run(X, y, sample_metadata=meta, **info)
    info_frame = cache_info(tmp_path / "cache")
    assert info_frame[(info_frame.Kind == "checkpoints") & (info_frame.Model == "cbramod")].Entries.tolist() == [2]
