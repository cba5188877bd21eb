"""Files and space: what a run writes for people to read follows the user's umask; caches stay private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from neurofm import Experiment
from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
)
from neurofm.models import get_model_spec
from neurofm.utils.files import atomic_write, current_umask


@pytest.fixture()
def umask():
    """Set the process umask for one test, and put it back."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_umask_is_read_without_being_changed(umask):
    umask(0o027)
    assert current_umask() == 0o027 and current_umask() == 0o027


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_what_the_umask_gives_and_private_ones_the_owners_alone(umask, tmp_path, mask, expected):
    umask(mask)
    assert _mode(atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))) == expected
    assert _mode(atomic_write(tmp_path / "b.txt", lambda tmp: tmp.write_text("x"), private=True)) == 0o600


def test_a_runs_results_are_readable_by_the_group_as_the_umask_says_and_its_cache_is_not(
    umask, small_dataset, tmp_path
):
    umask(0o022)
    X, y, meta, info = small_dataset
    probe = FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key="cbramod", weights="random", batch_size=8, model_kwargs=get_model_spec("cbramod").tiny_kwargs
        ),
        head=ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 200}),
    )
    cfg = ExperimentConfig(
        models={"probe": probe, "bp": ClassicalModelConfig(estimator="bandpower_lr")},
        cv=CVConfig(strategy="group_kfold", n_splits=2, group_key="Subject"),
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    Experiment(cfg).run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    for name in ("scores.parquet", "predictions.parquet", "metadata.parquet", "config.yaml", "meta.json"):
        assert _mode(tmp_path / "out" / name) == 0o644, name
    # The embeddings and their manifest: the owner's alone (a cache is shared only through a group key).
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != ".neurofm"]
    assert len(cached) >= 2 and all(_mode(p) == 0o600 for p in cached), {p.name: oct(_mode(p)) for p in cached}
