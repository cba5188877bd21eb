"""neurofm run CONFIG.yaml: data source, preprocessing, models and CV from one file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import SHARED_DATA
from pydantic import ValidationError
from typer.testing import CliRunner

from neurofm import ExperimentResult
from neurofm.cli import app
from neurofm.configs import RunConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _config(path, tmp_path):
    return {
        "task": "classification",
        "data": {
            "source": "recording",
            "path": str(path),
            "tmin": 0.0,
            "tmax": 2.0,
            "preprocessing": {"l_freq": 1.0, "h_freq": 40.0, "notch": 50.0, "reference": "average"},
        },
        "models": {
            "bandpower_lr": {"estimator": "bandpower_lr"},
            "probe": {"backbone": {"model_key": "cbramod", "weights": "random", "model_kwargs": {"n_layer": 1}}},
        },
        "metrics": ["balanced_accuracy"],
        "cv": {"strategy": "stratified_kfold", "n_splits": 3},
        "cache_dir": str(tmp_path / "cache"),
        "verbose": False,
        "output_dir": "out",
    }


def test_run_writes_a_results_directory_and_prints_the_summary(recording, tmp_path):
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(_config(recording, tmp_path)))
    result = CliRunner().invoke(app, ["run", str(config_path)])
    assert result.exit_code == 0, result.output
    assert "bandpower_lr" in result.output and "probe" in result.output
    out = tmp_path / "out"  # relative output_dir is relative to the config file
    for name in (
        "scores.parquet",
        "predictions.parquet",
        "splits.parquet",
        "artifacts.parquet",
        "config.yaml",
        "meta.json",
    ):
        assert (out / name).exists(), name
    saved = ExperimentResult.load(out)
    assert saved.config["data"]["source"] == "recording"
    assert saved.meta["data"]["preprocessing"][1] == "re-reference to average"
    assert saved.meta["versions"]["mne"]
    assert saved.summary().set_index("Model").loc["bandpower_lr", "mean"] > 0.7
    assert "report.html" in result.output and "<h1>Classification of" in (out / "report.html").read_text()
    # --no-report: the results, no report (a report of an earlier run there is made afresh, never left stale).
    quiet = CliRunner().invoke(app, ["run", str(config_path), "--out", str(tmp_path / "quiet"), "--no-report"])
    assert quiet.exit_code == 0, quiet.output
    assert (tmp_path / "quiet" / "scores.parquet").exists() and not (tmp_path / "quiet" / "report.html").exists()


def test_run_config_rejects_unknown_keys(recording, tmp_path):
    raw = _config(recording, tmp_path)
    raw["data"]["preprocesing"] = {}  # typo
    with pytest.raises(ValidationError, match=r"data\.preprocesing\s+Extra inputs are not permitted"):
        RunConfig.model_validate(raw)


@pytest.mark.skipif(not (SHARED_DATA / "eegmmi").is_dir(), reason=f"real recordings not found at {SHARED_DATA}")
def test_example_config_runs_offline_on_shared_data(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the example caches under ~/.cache/neurofm
    result = CliRunner().invoke(app, ["run", str(EXAMPLES / "eegmmi_motor_imagery.yaml"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "csp_lda" in result.output
    assert (tmp_path / "r" / "scores.parquet").exists()
