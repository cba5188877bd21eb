"""Run independent units of work on an existing engine: joblib, Dask, Ray or Slurm (submitit).

neurofm never schedules work itself. :func:`map_tasks` hands a picklable
function and a list of picklable tasks to the engine the
:class:`~neurofm.configs.ExecutionConfig` names and returns the results in
task order, so that the caller assembles the same result whatever ran them.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from joblib import Parallel, delayed

from .configs import ExecutionConfig
from .exceptions import ConfigError
from .utils.check import soft_import
from .utils.logging import logger

__all__ = ["check_backend", "computes_here", "engine_session", "map_tasks"]

# The package each backend needs, and the neurofm extra that installs it.
_NEEDS = {"dask": ("distributed", "cluster"), "ray": ("ray", "ray"), "submitit": ("submitit", "cluster")}

# A Unix socket's path holds at most 107 bytes (103 on macOS). A local Ray runtime puts its longest one,
# the object store's, at <temp folder>/session_<date>_<time>_<microseconds>_<pid>/sockets/plasma_store.
_SOCKET_PATH_MAX = 103 if sys.platform == "darwin" else 107
_RAY_SOCKET_TAIL = len("/session_2000-01-01_00-00-00_000000_4194304/sockets/plasma_store")


def check_backend(config: ExecutionConfig) -> None:
    """Fail before any compute when the configured backend's package is missing or its folder cannot work."""
    if config.backend in _NEEDS:
        module, extra = _NEEDS[config.backend]
        soft_import(module, f"execution backend {config.backend!r}", extra)
    if config.backend == "dask" and config.address is None:
        soft_import("cryptography", "a local Dask cluster only this run can reach (temporary TLS)", "cluster")
    if config.backend == "submitit" and config.submitit_folder is not None:
        private_folder(Path(config.submitit_folder).expanduser())
    if config.backend == "ray" and config.address is None and config.scratch_folder is not None:
        import ray  # optional: the [ray] extra

        folder = _scratch(config, "ray")
        longest = len(str(folder).encode()) + _RAY_SOCKET_TAIL
        if longest > _SOCKET_PATH_MAX and not ray.is_initialized():
            room = _SOCKET_PATH_MAX - _RAY_SOCKET_TAIL - len("/ray")
            raise ConfigError(
                f"A local Ray runtime in {folder} would open sockets with paths of {longest} bytes, more than the "
                f"{_SOCKET_PATH_MAX} the system allows. Set execution.scratch_folder to a folder of at most {room} "
                "characters (e.g. /tmp/neurofm), or set a shorter cache_dir, or start Ray yourself (ray.init or "
                "ray start, then execution.address='auto')."
            )


_SUBMITIT_FOLDER = (
    "submitit folder",
    "this run's jobs",
    "pickles of the windows, labels and results that the run loads back",
    "execution.submitit_folder",
)


def private_folder(folder: Path, role: tuple[str, str, str, str] = _SUBMITIT_FOLDER) -> Path:
    """``folder``, made if missing, checked to be this user's and closed to others (mode 0700).

    submitit's folder holds pickles of the tasks (windows and labels) and of
    their results, which the driver loads back: another user who could read
    it would read the data, one who could write it would run code. A local
    Dask cluster's TLS folder holds its private key.

    Raises
    ------
    ConfigError
        When the folder is a link, another user's, or open to others.
    """
    name, purpose, holds, setting = role
    try:
        folder.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        why = "it is a symbolic link" if stat.S_ISLNK(info.st_mode) else "it is not a folder"
    elif info.st_uid != os.getuid():
        why = f"it belongs to another user (uid {info.st_uid})"
    elif info.st_mode & 0o077:
        why = f"others may read or write it (mode {oct(info.st_mode & 0o777)})"
    else:
        return folder
    raise ConfigError(
        f"The {name} {folder} cannot hold {purpose}: {why}. It holds {holds}, so it must be a folder of your own "
        f"that only you can open: `chmod 700 {folder}` if it is yours, or set {setting} to a new folder (neurofm "
        "makes it with mode 0700)."
    )


def _private_dask_security(folder: Path | None):
    """TLS credentials of a new certificate authority, for a local Dask cluster only this process can join.

    ``distributed`` keeps temporary credentials in memory but writes them to
    a folder of the system temp folder each time it loads them; with
    ``folder`` (the run's private scratch) the key and certificate live there
    instead, mode 0600, and the caller removes them when the cluster closes.
    """
    from distributed.security import Security  # optional: the [cluster] extra

    generated = Security.temporary()
    if folder is None:
        return generated
    private_folder(
        folder,
        (
            "Dask TLS folder",
            "the local cluster's key",
            "the private key of the local Dask cluster",
            "execution.scratch_folder",
        ),
    )
    files = {
        "cert": (folder / "dask.crt", generated.tls_ca_file),
        "key": (folder / "dask.pem", generated.tls_client_key),
    }
    for path, text in files.values():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    cert, key = (str(path) for path, _ in files.values())
    return Security(
        require_encryption=True,
        tls_ca_file=cert,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
    )


def _scratch(config: ExecutionConfig, engine: str) -> Path | None:
    """The engine's own folder under ``scratch_folder`` (None: the engine picks, in the system temp folder)."""
    if config.scratch_folder is None:
        return None
    return Path(config.scratch_folder).expanduser().absolute() / engine


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


def computes_here(config: ExecutionConfig) -> bool:
    """Whether the tasks run on this machine (local pools) rather than on a cluster's machines.

    A run planned on a login node without a GPU and computed on GPU nodes
    must not have its devices resolved or refused where it is planned.
    """
    if config.backend in ("sequential", "joblib"):
        return True
    if config.backend == "submitit":
        return (config.submitit_cluster or ("slurm" if shutil.which("sbatch") else "local")) != "slurm"
    return config.address is None  # a local Dask or Ray cluster runs here


def map_tasks(
    config: ExecutionConfig,
    function: Callable[..., Any],
    tasks: Sequence[Any],
    shared: Any = None,
    on_gpu: Sequence[bool] | None = None,
) -> list[Any]:
    """``[function(task, shared) for task in tasks]`` on the configured backend, in task order.

    ``shared`` holds what every task reads (features, labels): Dask scatters it
    to every worker once and Ray puts it in its object store once, where
    shipping it inside each task would copy it per task; joblib hands large
    arrays over as memory maps. Without ``shared``, ``function(task)`` is called.
    ``on_gpu``: which tasks compute on a GPU when they find one; they ask
    their engine for ``config.gpus_per_task`` GPUs (see
    :class:`~neurofm.configs.ExecutionConfig`).
    """
    tasks = list(tasks)
    if not tasks:
        return []
    runner = _BACKENDS[config.backend]
    logger.info("Running %d task(s) on %s", len(tasks), config.backend)
    gpus = [0.0] * len(tasks) if on_gpu is None else [float(bool(flag)) for flag in on_gpu]
    with _preserved_environ():
        if any(gpus) and config.backend in ("dask", "ray", "submitit"):
            return runner(config, function, tasks, shared, gpus)
        return runner(config, function, tasks, shared)


def _gpu_request(config: ExecutionConfig, engine_has_gpus: Callable[[], bool]) -> float:
    """GPUs one GPU task asks for: the configured number, or for ``"auto"`` one where the engine has GPUs."""
    if config.gpus_per_task != "auto":
        return float(config.gpus_per_task)
    return 1.0 if engine_has_gpus() else 0.0


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
    # joblib hands large arrays to the workers as memory maps in temp_folder (by default /dev/shm or the
    # system temp folder); it deletes them when the call ends.
    folder = _scratch(config, "joblib")
    parallel = Parallel(n_jobs=config.n_jobs, backend="loky", temp_folder=None if folder is None else str(folder))
    return parallel(delayed(function)(*a) for a in _arguments(tasks, shared))


def _dask(config: ExecutionConfig, function, tasks: list, shared: Any, gpus: list[float] | None = None) -> list:
    def start():
        import dask  # optional: the [cluster] extra
        from distributed import Client, LocalCluster  # optional: the [cluster] extra

        cluster = tls = None
        if config.address is None:
            folder = _scratch(config, "dask")
            local = None if folder is None else str(folder)
            # TLS with certificates of this process's own CA: without them any local user could connect to the
            # scheduler and run code in the workers (and read the windows there).
            tls = None if folder is None else folder / f"tls-{secrets.token_hex(8)}"
            security = _private_dask_security(tls)
            # Workers keep spilled data and locks in local_directory, the scheduler its locks in the configured
            # temporary-directory (None: both in the system temp folder).
            with dask.config.set({} if local is None else {"temporary-directory": local}):
                cluster = LocalCluster(
                    n_workers=config.n_jobs,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    local_directory=local,
                    security=security,
                )
        client = Client(config.address or cluster)

        def close():
            client.close()
            if cluster is not None:
                cluster.close()
            if tls is not None:
                shutil.rmtree(tls, ignore_errors=True)

        return client, close

    client, close = _reuse_or_start("dask", start)
    # Dask knows GPUs only as resources its workers declare: asked for only when configured with a number.
    request = 0.0 if gpus is None or config.gpus_per_task == "auto" else float(config.gpus_per_task)
    try:
        extra = {} if shared is None else {"shared": None}
        if shared is not None:
            # One copy per worker, resolved in each call. hash=False gives it a fresh key: with a key made from the
            # content, the next call's equal data got the key of this one, whose release the scheduler may still be
            # carrying out, and its tasks failed with "lost dependencies" (seen under load).
            [extra["shared"]] = client.scatter([shared], broadcast=True, hash=False)
        if not request:
            # pure=False: two equal tasks are still two fits (Dask would otherwise merge them by content).
            return client.gather(client.map(function, tasks, pure=False, **extra))
        futures = [
            client.submit(function, task, pure=False, **extra, **({"resources": {"GPU": request}} if g else {}))
            for task, g in zip(tasks, gpus, strict=True)
        ]
        return client.gather(futures)
    finally:
        if close is not None:
            close()


def _ray(config: ExecutionConfig, function, tasks: list, shared: Any, gpus: list[float] | None = None) -> list:
    import ray  # optional: the [ray] extra

    def start():
        if ray.is_initialized():  # the user's own runtime: use it, leave it running
            return ray, lambda: None
        # "local": always a new runtime of our own. Without an address Ray would join whatever RAY_ADDRESS or the
        # file ray_current_cluster in its temp folder names, which any local user can write first.
        kwargs = {"address": config.address} if config.address else {"address": "local", "num_cpus": config.n_jobs}
        folder = _scratch(config, "ray")
        if not config.address and folder is not None:
            kwargs["_temp_dir"] = str(folder)  # the session: logs, sockets, spilled objects
            if not {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ) and not _ray_token_file().exists():
                # A new local runtime needs a token; finding none, Ray saves a new one in ~/.ray/auth_token. This one
                # lives in the environment the runtime starts with, and leaves it with this call (_preserved_environ).
                os.environ["RAY_AUTH_TOKEN"] = _ray_token()
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
        return ray, ray.shutdown

    _, close = _reuse_or_start("ray", start)
    try:
        remote = ray.remote(_apply)  # ray.remote takes functions only; ``function`` may be a callable object
        # A Ray task that asks for no GPU finds none (Ray empties CUDA_VISIBLE_DEVICES), so device="auto" would
        # fall back to the CPU on a GPU node.
        request = 0.0 if gpus is None else _gpu_request(config, lambda: ray.cluster_resources().get("GPU", 0) > 0)
        marks = gpus or [0.0] * len(tasks)
        stored = () if shared is None else (ray.put(shared),)  # one copy in the object store, read by every task
        return ray.get(
            [
                remote.options(num_gpus=request if g else 0).remote(function, task, *stored)
                for task, g in zip(tasks, marks, strict=True)
            ]
        )
    finally:
        if close is not None:
            close()


def _ray_token_file() -> Path:
    """Where Ray looks for a token when its environment names none (and where it saves one it makes)."""
    return Path.home() / ".ray" / "auth_token"


@functools.cache
def _ray_token() -> str:
    """One token per process: Ray's driver keeps the first token it reads, so every runtime started here needs it."""
    return secrets.token_hex(32)  # what ``ray get-auth-token --generate`` makes


def _apply(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


def _submitit(config: ExecutionConfig, function, tasks: list, shared: Any, gpus: list[float] | None = None) -> list:
    import submitit  # optional: the [cluster] extra

    cluster = config.submitit_cluster or ("slurm" if shutil.which("sbatch") else "local")
    if config.submitit_folder is None:
        raise ValueError("submitit_folder is unset; Experiment.run sets it to <cache_dir>/submitit-<uid>.")
    # One folder per call, inside the private one: removed once every result is read back.
    calls = private_folder(Path(config.submitit_folder).expanduser()) / f"call-{secrets.token_hex(8)}"
    executor = submitit.AutoExecutor(folder=str(calls / "%j"), cluster=cluster)
    parameters = {"timeout_min": 60, **config.submitit_parameters}
    if (
        gpus is not None
        and config.gpus_per_task != "auto"
        and not {"gpus_per_node", "slurm_gpus_per_task"} & set(parameters)
    ):
        # One job array for all tasks: each job gets the GPUs when any task computes on one.
        parameters["gpus_per_node"] = math.ceil(float(config.gpus_per_task))
    executor.update_parameters(**parameters)
    # Slurm jobs share no memory: each job's pickle carries the shared part.
    jobs = (
        executor.map_array(function, tasks)
        if shared is None
        else executor.map_array(function, tasks, [shared] * len(tasks))
    )
    try:
        results = [job.result() for job in jobs]
    except BaseException:
        logger.warning("submitit jobs failed; their scripts, logs and pickles are kept in %s", calls)
        raise
    shutil.rmtree(calls, ignore_errors=True)  # the pickles hold the data and the results: none is kept
    return results


_BACKENDS: dict[str, Callable[[ExecutionConfig, Callable, list, Any], list]] = {
    "sequential": _sequential,
    "joblib": _joblib,
    "dask": _dask,
    "ray": _ray,
    "submitit": _submitit,
}
