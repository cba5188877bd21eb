"""A config writes only where it says (docs/concepts/guarantees.md).

A run is started in a fresh process whose HOME, TMPDIR and working folder are
fresh folders, next to its output and cache folders; only the libraries it
uses have been imported there once before (their own first-import caches are
checked against the list in the guarantees page). Every file and folder of that whole tree
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
import re
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
# does: braindecode imports moabb, which imports matplotlib, which saves its font list (docs/concepts/guarantees.md).
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
    return sorted(
        f"{'created' if path not in before else 'removed' if path not in after else 'modified'}: {path}"
        for path in set(before) | set(after)
        if before.get(path) != after.get(path)
    )


def _python(code: str, args: list[str], root: Path, timeout: float) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "PYTHONPATH": str(Path(neurofm.__file__).parents[1]),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code, *args],
        cwd=root / "cwd",
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
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
    # What importing the libraries wrote on this fresh machine is theirs, and only the caches the guarantees page names.
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


# -- only into folders of neurofm's own ------------------------------------------------------------------------


def _home_like(folder):
    """A folder of someone's own files, as a home or project folder is."""
    folder.mkdir(parents=True)
    (folder / ".bashrc").write_text("# theirs\n")
    (folder / "config.yaml").write_text("theirs: true\n")
    return {path.name: path.read_text() for path in folder.iterdir()}


@pytest.mark.parametrize("field", ["output_dir", "cache_dir"])
def test_a_config_aimed_at_a_folder_of_someone_elses_files_is_refused(field, recording, tmp_path, caplog):
    import yaml
    from typer.testing import CliRunner

    from neurofm.cli import app
    from neurofm.exceptions import ConfigError

    home = tmp_path / "home"
    before = _home_like(home)
    config = {
        "data": {"source": "recording", "path": str(recording), "tmin": 0.0, "tmax": 2.0},
        "models": {"bp": {"estimator": "bandpower_lr"}},
        "verbose": False,
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
        field: str(home),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "run.yaml")])
    assert isinstance(result.exception, ConfigError), result.output
    assert re.search(
        rf"{re.escape(str(home))} already holds files neurofm did not write \(\.bashrc(, config\.yaml)?\) "
        r"and no \.neurofm marker\. .* Use a new or empty folder",
        str(result.exception),
    )
    assert {path.name: path.read_text() for path in home.iterdir()} == before  # nothing added, changed or removed


def test_checkpoints_aimed_at_a_folder_of_someone_elses_files_are_refused_before_training(
    small_dataset, tmp_path, monkeypatch
):
    from neurofm import Experiment
    from neurofm.configs import CheckpointConfig, ExperimentConfig, NeuralFineTuneConfig, TrainerConfig
    from neurofm.exceptions import ConfigError
    from neurofm.models import get_model_spec

    X, y, meta, info = small_dataset
    home = tmp_path / "home"
    before = _home_like(home)
    tuned = NeuralFineTuneConfig(
        model_key="cbramod",
        weights="random",
        train_mode="full",
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        trainer=TrainerConfig(max_epochs=1, batch_size=32, validation_fraction=0, early_stopping_patience=None),
        checkpoints=CheckpointConfig(save="last", monitor="train_loss", directory=str(home)),
    )
    monkeypatch.setattr("neurofm.estimators.neural.train_network", lambda *a, **k: pytest.fail("training started"))
    cfg = ExperimentConfig(models={"tuned": tuned}, cache_dir=str(tmp_path / "c"), verbose=False)
    with pytest.raises(
        ConfigError,
        match=rf"checkpoints.directory {re.escape(str(home))} already holds files "
        r"neurofm did not write \(\.bashrc, config\.yaml\)",
    ):
        Experiment(cfg).run(X, y, meta, **info)
    assert {path.name: path.read_text() for path in home.iterdir()} == before
    # A folder of neurofm's own takes the checkpoints, each fit in a folder of its own.
    monkeypatch.undo()
    mine = tmp_path / "checkpoints"
    tuned = tuned.model_copy(
        update={"checkpoints": CheckpointConfig(save="last", monitor="train_loss", directory=str(mine))}
    )
    Experiment(cfg.model_copy(update={"models": {"tuned": tuned}})).run(X, y, meta, **info)
    names = sorted(path.name for path in mine.iterdir())
    assert (
        names[0] == ".neurofm"
        and len(names) == 1 + 5
        and all(re.fullmatch(r"cbramod-full-[0-9a-f]{12}", name) for name in names[1:])
    )


def test_a_new_folder_gets_a_marker_and_the_run_says_where_it_writes(small_dataset, tmp_path, caplog):
    import json

    from neurofm import Experiment, __version__
    from neurofm.configs import ClassicalModelConfig, ExperimentConfig

    X, y, meta, info = small_dataset
    cfg = ExperimentConfig(models={"bp": ClassicalModelConfig(estimator="bandpower_lr")}, cache_dir=str(tmp_path / "c"))
    with caplog.at_level("INFO", logger="neurofm"):
        Experiment(cfg).run(X, y, meta, output_dir=tmp_path / "o", **info)
    assert f"neurofm writes into {tmp_path / 'c'} (cache) and {tmp_path / 'o'} (results)" in caplog.text
    assert json.loads((tmp_path / "o" / ".neurofm").read_text()) == {
        "neurofm": __version__,
        "kind": "The output folder",
    }
    assert (tmp_path / "c" / ".neurofm").is_file()


def test_folders_written_before_markers_existed_are_taken_over(small_dataset, tmp_path):
    from neurofm import Experiment
    from neurofm.configs import ClassicalModelConfig, ExperimentConfig

    X, y, meta, info = small_dataset
    cfg = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")}, cache_dir=str(tmp_path / "c"), verbose=False
    )
    Experiment(cfg).run(X, y, meta, output_dir=tmp_path / "o", **info)
    for folder in (tmp_path / "c", tmp_path / "o"):
        (folder / ".neurofm").unlink()  # as an older neurofm left them: its own names only
    (tmp_path / "c" / "submitit-4242").mkdir()  # another user's jobs in a shared cache
    again = Experiment(cfg).run(X, y, meta, output_dir=tmp_path / "o", **info)
    assert len(again.get_detailed_scores()) > 0
    assert (tmp_path / "c" / ".neurofm").is_file() and (tmp_path / "o" / ".neurofm").is_file()


def test_saving_a_result_into_someone_elses_folder_is_refused(small_dataset, tmp_path):
    from neurofm import Experiment
    from neurofm.configs import ClassicalModelConfig, ExperimentConfig
    from neurofm.exceptions import ConfigError

    X, y, meta, info = small_dataset
    cfg = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")}, cache_dir=str(tmp_path / "c"), verbose=False
    )
    result = Experiment(cfg).run(X, y, meta, **info)
    before = _home_like(tmp_path / "home")
    with pytest.raises(ConfigError, match=r"The output folder .*home already holds files neurofm did not write"):
        result.save(tmp_path / "home")
    assert {path.name: path.read_text() for path in (tmp_path / "home").iterdir()} == before


@pytest.mark.parametrize("planted", [".neurofm", ".neurofm.lock"])
def test_links_planted_under_neurofms_own_names_are_refused(planted, small_dataset, tmp_path):
    from neurofm import Experiment
    from neurofm.configs import ClassicalModelConfig, ExperimentConfig
    from neurofm.exceptions import ConfigError

    X, y, meta, info = small_dataset
    out = tmp_path / "o"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("theirs\n")
    if planted == ".neurofm.lock":
        (out / ".neurofm").write_text("{}\n")
    (out / planted).symlink_to(victim)
    cfg = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")}, cache_dir=str(tmp_path / "c"), verbose=False
    )
    with pytest.raises(
        ConfigError,
        match=rf"{re.escape(str(out / planted))} is (not a regular file \(a link\?\)|a "
        r"symbolic link)",
    ):
        Experiment(cfg).run(X, y, meta, output_dir=out, **info)
    assert victim.read_text() == "theirs\n"
