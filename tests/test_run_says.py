"""A run says what it is doing: the data and the plan before compute, log lines clear of progress bars, no
third-party notices on paths that do not use them, and what an interrupted run kept."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import pytest
from tqdm import tqdm

import neurofm.run
from neurofm import Experiment
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig
from neurofm.utils.logging import logger


def test_data_and_plan_are_said_before_compute(small_dataset, tmp_path, caplog, monkeypatch):
    X, y, meta, info = small_dataset
    cfg = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr"), "csp": ClassicalModelConfig(estimator="csp_lda")},
        cv=CVConfig(strategy="group_kfold", n_splits=2, group_key="Subject"),
        n_permutations=3,
        refit=True,
        cache_dir=str(tmp_path),
        verbose=True,
    )
    said = []
    monkeypatch.setattr(logger, "handlers", [logging.Handler()])
    logger.handlers[0].emit = lambda record: said.append(record.getMessage())
    Experiment(cfg).run(X, y, sample_metadata=meta, **info)
    data = next(m for m in said if m.startswith("Data: "))
    plan = next(m for m in said if m.startswith("Plan: "))
    classes = sorted(set(map(str, y)))
    assert f"{len(X)} windows ({classes[0]}: {list(map(str, y)).count(classes[0])}" in data
    assert (
        "4 groups of Subject (12 windows each)" in data
        and "19 channels (Fp1" in data
        and "160 Hz, 640 samples (4 s)" in data
    )
    assert (
        "2 models x 2 folds = 4 fits" in plan and "3 label permutations x 2 folds for 2 of them = 12 more fits" in plan
    )
    assert "refit" in plan
    # Both before the first fit's work is reported.
    assert said.index(data) < said.index(plan) < next(i for i, m in enumerate(said) if "model(s) x" in m)


def test_log_lines_go_above_progress_bars_not_onto_them(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(logger.handlers[0], "stream", stream)
    bar = tqdm(total=3, file=stream, desc="Training", leave=False, disable=False)
    bar.update(1)
    logger.warning("a line of its own")
    bar.close()
    assert "\rWARNING [neurofm] a line of its own\n" in stream.getvalue()


def test_no_bitsandbytes_notice_when_peft_comes_in_for_adapters():
    code = "from neurofm.adapters import _import_peft; _import_peft('lora'); import bitsandbytes"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kernels" not in done.stderr


def test_an_interrupted_run_says_what_it_kept_and_how_to_resume(tmp_path, monkeypatch, caplog):
    records = tmp_path / "out" / "progress" / "model-abc"
    records.mkdir(parents=True)
    for i in range(3):
        (records / f"fold-{i}.json").write_text("{}")
    message = neurofm.run.interrupted_message(tmp_path / "out", tmp_path / "run.yaml")
    assert message.startswith("Interrupted. 3 finished fit record(s) are kept in")
    assert f"neurofm run {tmp_path / 'run.yaml'}` again" in message

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(neurofm.run.Experiment, "run", interrupted)
    monkeypatch.setattr(neurofm.run, "load_data", lambda *a, **k: _Epochs())
    (tmp_path / "run.yaml").write_text(
        "data: {source: recording, path: x.fif, tmin: 0, tmax: 1}\nmodels: {bp: {estimator: bandpower_lr}}\n"
        f"output_dir: {tmp_path / 'out'}\ncache_dir: {tmp_path / 'cache'}\n"
    )
    said = []
    monkeypatch.setattr(logger, "handlers", [logging.Handler()])
    logger.handlers[0].emit = lambda record: said.append(record.getMessage())
    with pytest.raises(KeyboardInterrupt):
        neurofm.run.run_config(tmp_path / "run.yaml")
    assert any(m.startswith("Interrupted. 3 finished fit record(s)") for m in said)


class _Epochs:
    """Just enough of mne.Epochs for run_config to reach the experiment."""

    import pandas as pd

    metadata = pd.DataFrame({"label": ["a", "b"]})
