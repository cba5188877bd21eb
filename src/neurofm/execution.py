"""Run independent units of work on an existing engine: joblib, Dask, Ray or Slurm (submitit).

neurofm never schedules work itself. :func:`map_tasks` hands a picklable
function and a list of picklable tasks to the engine the
:class:`~neurofm.configs.ExecutionConfig` names and returns the results in
task order, so that the caller assembles the same result whatever ran them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .configs import ExecutionConfig
from .utils.check import soft_import
from .utils.logging import logger

__all__ = ["check_backend", "engine_session", "map_tasks"]

# The package each backend needs, and the neurofm extra that installs it.
_NEEDS = {"dask": ("distributed", "cluster"), "ray": ("ray", "ray"), "submitit": ("submitit", "cluster")}


def check_backend(config: ExecutionConfig) -> None:
    """Fail before any compute when the configured backend's package is missing."""
    if config.backend in _NEEDS:
        module, extra = _NEEDS[config.backend]
        soft_import(module, f"execution backend {config.backend!r}", extra)


# Engines started inside an open engine_session, reused by every map_tasks call until it closes.
_SESSION: dict[str, Any] = {}


@contextlib.contextmanager
def engine_session():
    """Keep a local Dask cluster or Ray runtime up for every :func:`map_tasks` call inside.

    Without a session each call starts and stops its own engine (10 to 20 s
    each), and an experiment makes several calls (extraction, folds and
    permutations of each model). The engine still starts only when the first
    task is handed over, so bad input fails before anything is started.
    """
    if _SESSION.get("open"):
        yield
        return
    _SESSION["open"] = True
    try:
        yield
    finally:
        closers = _SESSION.get("closers", [])
        _SESSION.clear()
        with _preserved_environ():
            for close in reversed(closers):
                close()


def _reuse_or_start(backend: str, start: Callable[[], tuple[Any, Callable[[], None]]]):
    """The session's engine for ``backend``, or a new one; returns (engine, close-after-this-call or None)."""
    if backend in _SESSION:
        return _SESSION[backend], None
    engine, close = start()
    if _SESSION.get("open"):
        _SESSION[backend] = engine
        _SESSION.setdefault("closers", []).append(close)
        return engine, None
    return engine, close


def map_tasks(config: ExecutionConfig, function: Callable[..., Any], tasks: Sequence[Any], shared: Any = None) -> list[Any]:
    """``[function(task, shared) for task in tasks]`` on the configured backend, in task order.

    ``shared`` holds what every task reads (features, labels): Dask scatters it
    to every worker once and Ray puts it in its object store once, where
    shipping it inside each task would copy it per task; joblib hands large
    arrays over as memory maps. Without ``shared``, ``function(task)`` is called.
    """
    tasks = list(tasks)
    if not tasks:
        return []
    runner = _BACKENDS[config.backend]
    logger.info("Running %d task(s) on %s", len(tasks), config.backend)
    with _preserved_environ():
        return runner(config, function, tasks, shared)


@contextlib.contextmanager
def _preserved_environ():
    """Undo what an engine writes into this process's environment.

    Dask's local cluster sets ``OMP_NUM_THREADS=1`` (and MKL/OpenBLAS) for its
    workers in the calling process too, and leaves it there: later work of the
    caller, and every subprocess it starts, would then run with other thread
    counts, and float sums (hence results) would change.
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def _arguments(tasks: list, shared: Any) -> list[tuple]:
    return [(task,) if shared is None else (task, shared) for task in tasks]


def _sequential(config: ExecutionConfig, function, tasks: list, shared: Any) -> list:
    return [function(*args) for args in _arguments(tasks, shared)]


def _joblib(config: ExecutionConfig, function, tasks: list, shared: Any) -> list:
    from joblib import Parallel, delayed

    return Parallel(n_jobs=config.n_jobs, backend="loky")(delayed(function)(*a) for a in _arguments(tasks, shared))


def _dask(config: ExecutionConfig, function, tasks: list, shared: Any) -> list:
    def start():
        from distributed import Client, LocalCluster

        cluster = None
        if config.address is None:
            cluster = LocalCluster(n_workers=config.n_jobs, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(config.address or cluster)

        def close():
            client.close()
            if cluster is not None:
                cluster.close()

        return client, close

    client, close = _reuse_or_start("dask", start)
    try:
        # pure=False: two equal tasks are still two fits (Dask would otherwise merge them by content).
        if shared is None:
            return client.gather(client.map(function, tasks, pure=False))
        [on_workers] = client.scatter([shared], broadcast=True)  # one copy per worker, resolved in each call
        return client.gather(client.map(function, tasks, shared=on_workers, pure=False))
    finally:
        if close is not None:
            close()


def _ray(config: ExecutionConfig, function, tasks: list, shared: Any) -> list:
    import ray

    def start():
        if ray.is_initialized():  # the user's own runtime: use it, leave it running
            return ray, lambda: None
        kwargs = {"address": config.address} if config.address else {"num_cpus": config.n_jobs}
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
        return ray, ray.shutdown

    _, close = _reuse_or_start("ray", start)
    try:
        remote = ray.remote(_apply)  # ray.remote takes functions only; ``function`` may be a callable object
        if shared is None:
            return ray.get([remote.remote(function, task) for task in tasks])
        stored = ray.put(shared)  # one copy in the object store, read by every task
        return ray.get([remote.remote(function, task, stored) for task in tasks])
    finally:
        if close is not None:
            close()


def _apply(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


def _submitit(config: ExecutionConfig, function, tasks: list, shared: Any) -> list:
    import submitit

    cluster = config.submitit_cluster or ("slurm" if shutil.which("sbatch") else "local")
    if config.submitit_folder is None:
        raise ValueError("submitit_folder is unset; Experiment.run sets it to <cache_dir>/submitit.")
    folder = Path(config.submitit_folder).expanduser() / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    executor.update_parameters(**{"timeout_min": 60, **config.submitit_parameters})
    # Slurm jobs share no memory: each job's pickle carries the shared part.
    jobs = executor.map_array(function, tasks) if shared is None else executor.map_array(function, tasks, [shared] * len(tasks))
    return [job.result() for job in jobs]


_BACKENDS: dict[str, Callable[[ExecutionConfig, Callable, list, Any], list]] = {
    "sequential": _sequential,
    "joblib": _joblib,
    "dask": _dask,
    "ray": _ray,
    "submitit": _submitit,
}
