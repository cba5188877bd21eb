"""A config is data: no value in it runs code, imports a module or makes a library read or write at its path.

Each test reproduces an attack a config from someone else could carry (a shell line for submitit, joblib's
``memory=`` cache, an import path to a module beside the config, a YAML alias bomb) and checks that it is refused
when the config is made, before anything runs, and that the payload never ran.
"""

from __future__ import annotations

import sys
import time

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

import neurofm
from neurofm.cli import app
from neurofm.configs import ClassicalModelConfig, CVConfig, ExecutionConfig, ExperimentConfig, RunConfig
from neurofm.exceptions import ConfigError
from neurofm.policy import (
    ALLOWED_IMPORT_PACKAGES,
    MAX_YAML_ALIASES,
    MAX_YAML_VALUES,
    SUBMITIT_PARAMETERS,
    allowed_import_packages,
    load_yaml,
)


def _run_config(recording, tmp_path, **overrides) -> dict:
    config = {
        "task": "classification",
        "data": {"source": "recording", "path": str(recording), "tmin": 0.0, "tmax": 2.0},
        "models": {"bp": {"estimator": "bandpower_lr"}},
        "metrics": ["balanced_accuracy"],
        "cv": {"strategy": "stratified_kfold", "n_splits": 3},
        "cache_dir": str(tmp_path / "cache"),
        "verbose": False,
        "output_dir": str(tmp_path / "out"),
    }
    config.update(overrides)
    return config


def _invoke_run(config: dict, tmp_path, *extra: str):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return CliRunner().invoke(app, ["run", str(path), *extra])


# -- submitit: resource requests only -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["local_setup", "slurm_setup", "slurm_teardown", "slurm_srun_args", "slurm_additional_parameters", "slurm_python"],
)
def test_submitit_parameters_that_run_commands_are_refused_before_anything_runs(key, recording, tmp_path):
    marker = tmp_path / "payload-ran"
    value = {"slurm_additional_parameters": {"chdir": str(tmp_path)}}.get(key, [f"touch {marker}"])
    if key == "slurm_python":
        value = f"touch {marker}; python"
    config = _run_config(
        recording,
        tmp_path,
        execution={"backend": "submitit", "submitit_cluster": "local", "submitit_parameters": {key: value}},
    )
    result = _invoke_run(config, tmp_path)
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError), result.output
    assert f"submitit parameter {key!r} is refused" in str(result.exception)
    assert "a config may not run commands" in str(result.exception)
    assert not marker.exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("value", ["gpu\ntouch /tmp/x", "gpu\r", "gpu\x00", ["gpu"], {"a": 1}])
def test_a_submitit_value_that_could_add_a_script_line_is_refused(value):
    with pytest.raises(
        ValidationError,
        match=r"submitit parameter 'slurm_partition' must be a number, a boolean or a "
        r"one-line string without control characters",
    ):
        ExecutionConfig(backend="submitit", submitit_parameters={"slurm_partition": value})


def test_resource_requests_are_accepted_and_are_parameters_submitit_knows():
    from submitit.auto.auto import AutoExecutor
    from submitit.slurm.slurm import SlurmExecutor

    known = set(AutoExecutor._valid_parameters()) | {f"slurm_{p}" for p in SlurmExecutor._valid_parameters()}
    assert SUBMITIT_PARAMETERS <= known, sorted(SUBMITIT_PARAMETERS - known)
    for refused in ("slurm_setup", "slurm_srun_args", "slurm_additional_parameters", "slurm_teardown"):
        assert refused in known and refused not in SUBMITIT_PARAMETERS
    requests = {
        "slurm_partition": "gpu",
        "timeout_min": 120,
        "cpus_per_task": 4,
        "mem_gb": 16.5,
        "gpus_per_node": 1,
        "slurm_array_parallelism": 8,
        "slurm_exclusive": True,
        "slurm_comment": "lab run 3",
    }
    cfg = ExecutionConfig(backend="submitit", submitit_parameters=requests)
    assert ExecutionConfig.from_yaml(cfg.to_yaml()) == cfg


# -- estimator parameters: plain data, no paths ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("estimator", "params"),
    [
        ("bandpower_lr", {"memory": "JOBLIB"}),  # a named baseline is a Pipeline: memory= caches pickles at the path
        ("csp_lda", {"memory": "JOBLIB"}),
        ("FeatureAgglomeration", {"memory": "JOBLIB"}),
        ("LogisticRegression", {"pipeline__memory": "JOBLIB"}),
    ],
)
def test_estimator_params_that_read_or_write_at_a_path_are_refused(estimator, params, small_dataset, tmp_path):
    target = tmp_path / "joblib-cache"
    params = {key: str(target) for key in params}
    with pytest.raises(
        ValidationError,
        match=rf"Estimator parameter '{next(iter(params))}' is refused: it makes the "
        r"estimator write or read files at a path .* Remove",
    ):
        ClassicalModelConfig(estimator=estimator, params=params)
    text = yaml.safe_dump({"models": {"m": {"estimator": estimator, "params": params}}})
    with pytest.raises(ConfigError, match=r"models\.m\.classical\.params: .*is refused"):
        ExperimentConfig.from_yaml(text)
    assert not target.exists()


@pytest.mark.parametrize("value", [print, object(), (lambda: 1), {"nested": [1, object()]}])
def test_estimator_params_that_are_not_plain_data_are_refused(value):
    with pytest.raises(ValidationError, match=r"Estimator parameter 'C' is a \w+; a config holds plain data only"):
        ClassicalModelConfig(estimator="LogisticRegression", params={"C": value})


def test_plain_data_params_are_accepted_and_round_trip():
    import numpy as np

    params = {"C": 0.5, "max_iter": np.int64(200), "class_weight": {"left": 1.0, "right": 2}, "penalty": None}
    cfg = ClassicalModelConfig(estimator="LogisticRegression", params=params)
    assert cfg.params["class_weight"] == {"left": 1.0, "right": 2}


# -- import paths: an allow-list, widened from Python only --------------------------------------------------------

_EVIL_MODULE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
from sklearn.linear_model import LogisticRegression


class Decoder(LogisticRegression):
    pass
"""


@pytest.fixture()
def evil_module(tmp_path, monkeypatch):
    """A module beside the config whose import leaves a marker file; importable, as a planted file would be."""
    name = f"evilmod_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported-marker"
    (tmp_path / f"{name}.py").write_text(_EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield name, marker
    sys.modules.pop(name, None)


def test_an_import_path_outside_the_allow_list_is_refused_without_importing_it(evil_module):
    name, marker = evil_module
    text = yaml.safe_dump({"models": {"m": {"estimator": f"{name}.Decoder"}}})
    with pytest.raises(
        ConfigError,
        match=rf"Estimator '{name}\.Decoder' would import '{name}', which a config may not "
        rf"do.*neurofm\.allow_imports\('{name}'\).*--allow-import {name}",
    ):
        ExperimentConfig.from_yaml(text)
    with pytest.raises(ValidationError, match=rf"would import '{name}'"):
        ClassicalModelConfig(estimator=f"{name}.Decoder")
    assert not marker.exists() and name not in sys.modules


def test_allow_imports_from_python_lets_a_config_name_your_own_estimator(evil_module):
    name, marker = evil_module
    text = yaml.safe_dump({"models": {"m": {"estimator": f"{name}.Decoder"}}})
    with neurofm.allow_imports(name):
        assert allowed_import_packages() == (*ALLOWED_IMPORT_PACKAGES, name)
        cfg = ExperimentConfig.from_yaml(text)
    assert cfg.models["m"].estimator == f"{name}.Decoder" and marker.exists()
    assert allowed_import_packages() == ALLOWED_IMPORT_PACKAGES  # the with block allowed it inside only
    with pytest.raises(ConfigError, match=rf"would import '{name}'"):
        ExperimentConfig.from_yaml(text)
    assert ExperimentConfig.from_yaml(text, allow_imports=[name]).models["m"].estimator == f"{name}.Decoder"
    neurofm.policy._user_allowed.discard(name)  # from_yaml(allow_imports=) allows for the process: undo it here


def test_neurofm_run_refuses_a_module_beside_the_config_unless_allowed_on_the_command_line(
    evil_module, recording, tmp_path
):
    name, marker = evil_module
    config = _run_config(recording, tmp_path, models={"mine": {"estimator": f"{name}.Decoder"}})
    refused = _invoke_run(config, tmp_path)
    assert isinstance(refused.exception, ConfigError) and f"would import '{name}'" in str(refused.exception)
    assert not marker.exists() and not (tmp_path / "out").exists()
    allowed = _invoke_run(config, tmp_path, "--allow-import", name)
    assert allowed.exit_code == 0, allowed.output
    assert marker.exists() and (tmp_path / "out" / "scores.parquet").is_file()
    assert allowed_import_packages() == ALLOWED_IMPORT_PACKAGES  # allowed for that run only


def test_an_allowed_estimator_runs_in_parallel_workers(evil_module, small_dataset, tmp_path):
    """The allow-list is checked where the config is made; workers get the built estimator, not the check."""
    name, _ = evil_module
    X, y, meta, info = small_dataset
    with neurofm.allow_imports(name):
        cfg = ExperimentConfig(
            models={"mine": ClassicalModelConfig(estimator=f"{name}.Decoder")},
            cv=CVConfig(strategy="group_kfold", n_splits=3, group_key="Subject"),
            execution=ExecutionConfig(backend="joblib", n_jobs=2),
            metrics=["accuracy"],
            cache_dir=str(tmp_path / "cache"),
            verbose=False,
        )
    result = neurofm.Experiment(cfg).run(X, y, meta, **info)
    assert result.get_detailed_scores().query("Model == 'mine'")["Fold"].tolist() == [0, 1, 2]


def test_allow_imports_takes_package_names_only():
    with pytest.raises(
        ConfigError,
        match=r"allow_imports takes top-level package names such as 'mylab', got "
        r"'\.\./evil'",
    ):
        neurofm.allow_imports(["../evil"])


# -- YAML aliases ----------------------------------------------------------------------------------------------


def _alias_bomb(levels: int, width: int) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_config_is_refused_at_once():
    text = "models:\n  m: {estimator: LogisticRegression}\n" + _alias_bomb(levels=9, width=9)
    assert len(text) < 1000  # 9^9 = 387 million values in under a kilobyte
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"The YAML text uses more than {MAX_YAML_ALIASES} aliases"):
        ExperimentConfig.from_yaml(text)
    assert time.perf_counter() - start < 5


def test_few_aliases_that_stand_for_too_many_values_are_refused():
    text = _alias_bomb(levels=6, width=10)  # 50 aliases, 10^6 values
    assert text.count("*") <= MAX_YAML_ALIASES
    with pytest.raises(
        ConfigError,
        match=rf"stands for \d+ values once its aliases \(\*name\) are expanded, more "
        rf"than the {MAX_YAML_VALUES}",
    ):
        load_yaml(text)


def test_a_config_that_shares_a_block_by_alias_is_read(recording, tmp_path):
    config = _run_config(recording, tmp_path)
    text = yaml.safe_dump(config).replace("cv:\n", "cv: &folds\n") + "\n"
    text = text.replace("metrics:", "x_folds_again: *folds\nmetrics:", 1)
    data = load_yaml(text)
    assert data["x_folds_again"] == data["cv"]
    del data["x_folds_again"]
    assert RunConfig.model_validate(data).cv.n_splits == 3
