"""A config writes only where it says (README, Guarantees).

A run is started in a fresh process whose HOME, TMPDIR and working folder are
fresh folders, next to its output and cache folders; only the libraries it
uses have been imported there once before (their own first-import caches are
checked against the README's list). Every file and folder of that whole tree
is listed with its modification time and size before and after the run:
outside ``output_dir`` and ``cache_dir`` nothing may be created, changed or
removed (a file made and deleted again still changes its folder's time). The
environment holds nothing else, so no variable of the user's (``MNE_DATA``,
``JOBLIB_TEMP_FOLDER``, ``RAY_TMPDIR``, ``MPLCONFIGDIR`` ...) can move a write
out of sight.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import neurofm

# The run: a model whose name looks like a path, and REVE (its position bank) with a tiny config, on
# the backend given. Arguments: backend, cache_dir, output_dir, whether to add REVE.
RUN = """
import sys
from neurofm import Experiment
from neurofm.configs import (ClassicalModelConfig, CVConfig, ExecutionConfig, ExperimentConfig,
                             FoundationEmbeddingModelConfig, FrozenBackboneDecoderConfig)
from neurofm.models import get_model_spec
from neurofm.simulate import simulate_eeg_dataset

backend, cache_dir, output_dir, with_reve = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
X, y, meta, info = simulate_eeg_dataset(n_subjects=3, n_windows_per_class=4, random_state=7)
models = {"../../escape": ClassicalModelConfig(estimator="bandpower_lr")}
if with_reve:
    backbone = FoundationEmbeddingModelConfig(model_key="reve", weights="random", batch_size=8,
                                              model_kwargs=get_model_spec("reve").tiny_kwargs)
    head = ClassicalModelConfig(estimator="LogisticRegression")
    models["reve"] = FrozenBackboneDecoderConfig(backbone=backbone, head=head)
config = ExperimentConfig(models=models, cache_dir=cache_dir, n_permutations=1, verbose=False,
                          execution=ExecutionConfig(backend=backend, n_jobs=2),
                          cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"))
result = Experiment(config).run(X, y, sample_metadata=meta, **info, output_dir=output_dir)
assert sorted(result.scores["Model"].unique()) == sorted(models)
"""

# What the imported libraries write into HOME on their first import on a machine, whatever neurofm
# does: braindecode imports moabb, which imports matplotlib, which saves its font list (README, Guarantees).
IMPORT_CACHES = (".cache/matplotlib", ".config/matplotlib")


@pytest.fixture(scope="module")
def machine():
    """A fresh short folder (a local Ray runtime's socket paths must stay short) holding home, tmp and cwd, where
    the libraries a run imports have been imported once; and what those imports wrote."""
    root = Path(tempfile.mkdtemp(prefix="nfm-", dir="/tmp" if os.path.isdir("/tmp") else None))
    for name in ("home", "tmp", "cwd", "run"):
        (root / name).mkdir()
    empty = _listing(root, set())
    engines = [name for name in ("distributed", "ray") if importlib.util.find_spec(name)]
    _python(", ".join(["import neurofm", "braindecode.models", "joblib", *engines]), [], root, timeout=300)
    yield root, _changes(empty, _listing(root, set()))
    shutil.rmtree(root, ignore_errors=True)


def _listing(root: Path, skip: set[Path]) -> dict[str, tuple[int, int]]:
    """Every file, folder and link under ``root`` (itself included) but ``skip``: (mtime in ns, size)."""
    found = {}
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if Path(folder, name) not in skip]
        for path in [folder, *(os.path.join(folder, name) for name in files + folders)]:
            status = os.lstat(path)
            found[os.path.relpath(path, root)] = (status.st_mtime_ns, status.st_size)
    return found


def _changes(before: dict, after: dict) -> list[str]:
    return sorted(f"{'created' if path not in before else 'removed' if path not in after else 'modified'}: {path}"
                  for path in set(before) | set(after) if before.get(path) != after.get(path))


def _python(code: str, args: list[str], root: Path, timeout: float) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root / "home"), "TMPDIR": str(root / "tmp"),
           "PYTHONPATH": str(Path(neurofm.__file__).parents[1]), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code, *args], cwd=root / "cwd", env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]


def _run_writes_only_where_it_says(root: Path, backend: str, with_reve: bool) -> Path:
    """Run on ``backend`` into fresh output and cache folders under ``root``; returns the cache folder."""
    out, cache = Path(tempfile.mkdtemp(dir=root / "run")) / "out", root / "run" / f"cache-{backend}"
    out.mkdir()
    cache.mkdir()
    before = _listing(root, {out, cache})
    _python(RUN, [backend, str(cache), str(out), "1" if with_reve else "0"], root, timeout=300)
    changes = _changes(before, _listing(root, {out, cache}))
    assert not changes, "written outside output_dir and cache_dir:\n" + "\n".join(changes)
    assert (out / "scores.parquet").is_file() and (cache / backend).is_dir()  # the engine's scratch: in cache_dir
    return cache


def test_a_run_writes_only_in_its_output_and_cache_folders(machine):
    """joblib workers, REVE's position bank and a model named like a path: nothing lands outside the two folders."""
    root, imported = machine
    # What importing the libraries wrote on this fresh machine is theirs, and only the caches the README names.
    caches = [Path("home", cache) for cache in IMPORT_CACHES]
    parents = {parent for cache in caches for parent in cache.parents} - {Path(".")}  # their folders: home, home/.cache
    paths = [Path(change.split(": ", 1)[1]) for change in imported]
    assert [p for p in paths if p not in parents and not any(p == c or c in p.parents for c in caches)] == []
    cache = _run_writes_only_where_it_says(root, "joblib", with_reve=True)
    assert (cache / "embeddings").is_dir()


@pytest.mark.parametrize("backend", ["dask", "ray"])
def test_local_dask_and_ray_keep_their_scratch_in_the_cache_folder(machine, backend):
    module = {"dask": "distributed", "ray": "ray"}[backend]
    pytest.importorskip(module, reason=f"{module} is not installed (pip install 'neurofm[cluster]' or '[ray]')")
    _run_writes_only_where_it_says(machine[0], backend, with_reve=False)
