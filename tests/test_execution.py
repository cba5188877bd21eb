"""Execution backends: the same config gives the same scores on every engine."""

from __future__ import annotations

import pytest
from pandas.testing import assert_frame_equal

from neurofm import Experiment
from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExecutionConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
)
from neurofm.exceptions import MissingDependencyError
from neurofm.models import get_model_spec
from neurofm.simulate import simulate_eeg_dataset


@pytest.fixture(scope="module")
def data():
    return simulate_eeg_dataset(n_subjects=3, n_windows_per_class=6, random_state=4)


def _config(cache_dir, execution):
    models = {
        "bandpower_lr": ClassicalModelConfig(estimator="bandpower_lr"),
        "probe": FrozenBackboneDecoderConfig(
            backbone=FoundationEmbeddingModelConfig(
                model_key="cbramod", weights="random", batch_size=8, model_kwargs=get_model_spec("cbramod").tiny_kwargs
            ),
            head=ClassicalModelConfig(estimator="LogisticRegression"),
        ),
    }
    return ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy", "roc_auc"],
        cache_dir=str(cache_dir),
        n_permutations=2,
        verbose=False,
        execution=execution,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
    )


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    X, y, meta, info = data
    cache = tmp_path_factory.mktemp("cache")
    return cache, Experiment(_config(cache, ExecutionConfig())).run(X, y, sample_metadata=meta, **info)


def _same(result, reference):
    """Bit for bit: the README promises the sequential run's numbers exactly, on every engine."""
    assert_frame_equal(result.scores, reference.scores, check_exact=True)
    assert_frame_equal(result.predictions, reference.predictions, check_exact=True)
    assert_frame_equal(result.splits, reference.splits, check_exact=True)
    assert_frame_equal(result.get_statistics(), reference.get_statistics(), check_exact=True)


@pytest.mark.parametrize(
    "execution",
    [
        {"backend": "joblib", "n_jobs": 2},
        {"backend": "dask", "n_jobs": 2},
        {"backend": "ray", "n_jobs": 2},
        {"backend": "submitit", "submitit_cluster": "local", "submitit_parameters": {"timeout_min": 10}},
    ],
    ids=lambda e: e["backend"],
)
def test_every_backend_gives_the_sequential_scores(execution, data, reference, tmp_path, short_folder):
    if execution["backend"] == "submitit":
        execution = {**execution, "submitit_folder": str(tmp_path / "submitit")}
    if execution["backend"] == "ray":  # pytest's tmp_path is too long for the local runtime's socket paths
        execution = {**execution, "scratch_folder": str(short_folder)}
    module = {"dask": "distributed", "ray": "ray", "submitit": "submitit"}.get(execution["backend"])
    if module:
        pytest.importorskip(module, reason=f"{module} is not installed (pip install 'neurofm[cluster]')")
    X, y, meta, info = data
    _, expected = reference
    cache = tmp_path / "cache"  # empty: the workers extract, each shard writing its own packs at once
    config = _config(cache, ExecutionConfig(**execution, extraction_shards=2))
    result = Experiment(config).run(X, y, sample_metadata=meta, **info)
    _same(result, expected)
    cached = result.get_model_artifacts(artifact_type="embedding_cache").set_index("ArtifactKey")["ArtifactValue"]
    assert int(cached["misses"]) == len(X) and int(cached["hits"]) == 0
    packs = list((cache / "embeddings").rglob("pack-*.npz"))
    assert len(packs) == 2
    # What the shards wrote is what a sequential run reads back: every window is a hit.
    again = Experiment(_config(cache, ExecutionConfig())).run(X, y, sample_metadata=meta, **info)
    _same(again, expected)
    hits = again.get_model_artifacts(artifact_type="embedding_cache").query("ArtifactKey == 'hits'")
    assert int(hits["ArtifactValue"].iloc[0]) == len(X)
    if execution["backend"] == "submitit":  # private while it ran, and nothing left of the jobs once read back
        folder = tmp_path / "submitit"
        assert folder.stat().st_mode & 0o777 == 0o700 and list(folder.iterdir()) == []


@pytest.fixture()
def short_folder():
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="nfm-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_ray_folder_too_long_for_its_sockets_is_refused_before_any_compute(data, tmp_path, short_folder):
    import sys

    from neurofm.exceptions import ConfigError
    from neurofm.execution import check_backend, map_tasks

    pytest.importorskip("ray", reason="ray is not installed (pip install 'neurofm[ray]')")
    X, y, meta, info = data
    cache = tmp_path / ("c" * 40)
    with pytest.raises(
        ConfigError,
        match=r"sockets with paths of \d+ bytes, more than the 10[37] the system allows\. "
        r"Set execution\.scratch_folder to a folder of at most 3\d characters",
    ):
        Experiment(_config(cache, ExecutionConfig(backend="ray"))).run(X, y, sample_metadata=meta, **info)
    assert not cache.exists()  # refused before anything was computed or written
    # A folder at the limit works, sockets inside it: the bound is Ray's, not a guess.
    room = 35 if sys.platform == "darwin" else 39
    at_limit = short_folder / ("x" * (room - len(str(short_folder)) - 1))
    assert len(str(at_limit)) == room
    config = ExecutionConfig(backend="ray", n_jobs=1, scratch_folder=str(at_limit))
    check_backend(config)
    assert map_tasks(config, abs, [-3]) == [3] and list((at_limit / "ray").glob("session_*/sockets/plasma_store"))


def test_a_missing_backend_package_fails_before_any_compute(data, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    monkeypatch.delitem(__import__("sys").modules, "ray", raising=False)
    X, y, meta, info = data
    with pytest.raises(MissingDependencyError, match="execution backend 'ray'.*neurofm\\[ray\\]"):
        Experiment(_config(tmp_path, ExecutionConfig(backend="ray"))).run(X, y, sample_metadata=meta, **info)
    assert not (tmp_path / "embeddings").exists()


def test_engines_leave_the_callers_environment_as_it_was(monkeypatch, tmp_path):
    import os

    from neurofm.configs import ExecutionConfig
    from neurofm.execution import map_tasks

    pytest.importorskip("distributed", reason="distributed is not installed (pip install 'neurofm[cluster]')")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = dict(os.environ)
    assert map_tasks(ExecutionConfig(backend="dask", n_jobs=1), abs, [-3, 4]) == [3, 4]
    assert dict(os.environ) == before


def _pid(_):
    import os

    return os.getpid()


def test_one_local_cluster_serves_every_call_of_a_session():
    from neurofm.configs import ExecutionConfig
    from neurofm.execution import _SESSION, engine_session, map_tasks

    pytest.importorskip("distributed", reason="distributed is not installed (pip install 'neurofm[cluster]')")
    config = ExecutionConfig(backend="dask", n_jobs=1)
    with engine_session():
        first = map_tasks(config, _pid, [0, 1])
        second = map_tasks(config, _pid, [2])
    assert set(second) == set(first)  # the same worker process: the cluster was not restarted
    assert not _SESSION  # and it was closed with the session
    assert map_tasks(config, _pid, [3]) != first  # outside a session every call starts its own


def _shared_identity(task, shared):
    return task, id(shared), float(shared["x"].sum())


@pytest.mark.parametrize("backend", ["sequential", "dask"])
def test_shared_inputs_reach_every_task_as_one_object(backend):
    import numpy as np

    from neurofm.configs import ExecutionConfig
    from neurofm.execution import map_tasks

    if backend == "dask":
        pytest.importorskip("distributed", reason="distributed is not installed (pip install 'neurofm[cluster]')")
    shared = {"x": np.arange(1000.0)}
    out = map_tasks(ExecutionConfig(backend=backend, n_jobs=1), _shared_identity, [0, 1, 2], shared)
    assert [task for task, _, _ in out] == [0, 1, 2] and {total for _, _, total in out} == {499500.0}
    # One worker, one copy: Dask scattered it once rather than shipping it inside every task.
    assert len({identity for _, identity, _ in out}) == 1


def _add_shared(task, shared):
    return task + int(shared.sum())


def test_dask_serves_equal_shared_data_to_back_to_back_calls_of_one_session(tmp_path):
    """Each call's shared data gets its own key: with keys made from the content, a call's equal data took the key
    of the call before, whose release was still under way, and its tasks died of "lost dependencies" (it failed
    every run of this test before)."""
    pytest.importorskip("distributed", reason="distributed is not installed (pip install 'neurofm[cluster]')")
    import numpy as np

    from neurofm.execution import engine_session, map_tasks

    config = ExecutionConfig(backend="dask", n_jobs=2, scratch_folder=str(tmp_path))
    shared = np.ones(1000, dtype=np.int64)
    with engine_session():
        for _ in range(30):
            assert map_tasks(config, _add_shared, [0, 1, 2, 3], shared) == [1000, 1001, 1002, 1003]


# -- the submitit folder holds pickles of the data and of the results: this user's only ----------------------------


def _submitit_config(cache, folder):
    return _config(cache, ExecutionConfig(backend="submitit", submitit_cluster="local", submitit_folder=str(folder)))


@pytest.mark.parametrize("make", ["writable by others", "readable by others", "a link", "another user's"])
def test_a_submitit_folder_that_is_not_private_is_refused_before_any_compute(make, data, tmp_path, monkeypatch):
    import os

    import neurofm.execution
    from neurofm.exceptions import ConfigError

    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'neurofm[cluster]')")
    X, y, meta, info = data
    folder = tmp_path / "jobs"
    folder.mkdir(mode=0o700)
    if make == "writable by others":
        folder.chmod(0o777)  # anyone could swap a result pickle the driver then loads
        why = r"others may read or write it \(mode 0o777\)"
    elif make == "readable by others":
        folder.chmod(0o755)  # the job pickles hold the windows and labels
        why = r"others may read or write it \(mode 0o755\)"
    elif make == "a link":
        target, folder = folder, tmp_path / "link"
        folder.symlink_to(target)
        why = "it is a symbolic link"
    else:
        monkeypatch.setattr(neurofm.execution.os, "getuid", lambda: os.stat(folder).st_uid + 1)
        why = rf"it belongs to another user \(uid {os.stat(folder).st_uid}\)"
    cache = tmp_path / "cache"
    with pytest.raises(
        ConfigError,
        match=rf"The submitit folder {folder} cannot hold this run's jobs: {why}\. It holds "
        r"pickles of the windows, labels and results .*`chmod 700",
    ):
        Experiment(_submitit_config(cache, folder)).run(X, y, sample_metadata=meta, **info)
    assert not cache.exists()


def test_the_default_submitit_folder_is_this_users_own_private_and_emptied(data, tmp_path):
    import os

    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'neurofm[cluster]')")
    X, y, meta, info = data
    cfg = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        cache_dir=str(tmp_path),
        execution=ExecutionConfig(backend="submitit", submitit_cluster="local"),
        verbose=False,
        cv=CVConfig(strategy="group_kfold", n_splits=3, group_key="Subject"),
    )
    Experiment(cfg).run(X, y, sample_metadata=meta, **info)
    folder = tmp_path / f"submitit-{os.getuid()}"
    assert folder.stat().st_mode & 0o777 == 0o700 and list(folder.iterdir()) == []


# -- engines started here admit this run only ---------------------------------------------------------------------


def test_a_local_dask_cluster_admits_no_one_but_this_run():
    """Another local user (here: a client without this run's certificates) cannot reach the scheduler."""
    pytest.importorskip("distributed", reason="distributed is not installed (pip install 'neurofm[cluster]')")
    from distributed import Client
    from distributed.security import Security

    from neurofm.execution import engine_session, map_tasks

    def scheduler_address(_):
        from distributed import get_worker

        return get_worker().scheduler.address

    with engine_session():
        [address] = map_tasks(ExecutionConfig(backend="dask", n_jobs=1), scheduler_address, [0])
        assert address.startswith("tls://")
        for intruder in ({}, {"security": Security.temporary()}, {"address": address.replace("tls://", "tcp://")}):
            try:  # distributed refuses in several ways (TLS errors, closed comms, its own assertions)
                with Client(**{"address": address, **intruder}, timeout=5) as client:
                    ran = client.submit(sum, [1]).result(timeout=5)
            except Exception:  # noqa: BLE001
                ran = None
            assert ran is None, f"a client with {intruder or 'no credentials'} ran code in the cluster"


def test_a_local_ray_runtime_is_started_here_whatever_the_temp_folder_says(tmp_path, monkeypatch, short_folder):
    """Any local user can write Ray's ray_current_cluster file first; a local start must not join that address."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'neurofm[ray]')")
    import ray

    from neurofm.execution import map_tasks

    planted = "127.0.0.1:9"  # discard port: joining it would fail or hang, never compute
    for temp in (tmp_path / "tmp" / "ray", short_folder / "ray"):
        temp.mkdir(parents=True, exist_ok=True)
        (temp / "ray_current_cluster").write_text(planted)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "tmp"))
    config = ExecutionConfig(backend="ray", n_jobs=1, scratch_folder=str(short_folder))
    assert map_tasks(config, abs, [-1, -2]) == [1, 2]
    assert not ray.is_initialized()  # started for the call and shut down with it
