"""A run says what it is doing: the data and the plan before compute, log lines clear of progress bars, no
third-party notices on paths that do not use them, and what an interrupted run kept."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import numpy as np
import pytest
from tqdm import tqdm

import neurofm.run
from neurofm import Experiment
from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
    WindowConfig,
)
from neurofm.models import get_model_spec
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


def _said(monkeypatch) -> list[str]:
    said: list[str] = []
    monkeypatch.setattr(logger, "handlers", [logging.Handler()])
    logger.handlers[0].emit = lambda record: said.append(record.getMessage())
    return said


def test_the_plan_says_what_the_output_folder_and_the_cache_already_hold(small_dataset, tmp_path, monkeypatch):
    X, y, meta, info = small_dataset
    probe = FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key="cbramod", weights="random", model_kwargs=get_model_spec("cbramod").tiny_kwargs
        ),
        head=ClassicalModelConfig(estimator="LogisticRegression"),
    )
    models = {"probe": probe, "bp": ClassicalModelConfig(estimator="bandpower_lr")}
    cfg = ExperimentConfig(
        models=models, cv=CVConfig(strategy="group_kfold", n_splits=2, group_key="Subject"), cache_dir=str(tmp_path)
    )
    said = _said(monkeypatch)
    Experiment(cfg).run(X, y, sample_metadata=meta, **info)  # no output folder
    plan = next(m for m in said if m.startswith("Plan: "))
    assert "no output folder, so nothing is recorded or resumed" in plan
    assert "embeddings already in the cache: probe none" in plan  # a cold cache

    said.clear()
    Experiment(cfg).run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    plan = next(m for m in said if m.startswith("Plan: "))
    assert "nothing on record yet in the output folder" in plan
    assert "embeddings already in the cache: probe all" in plan  # the first run filled it

    # One fold of one model lost: the plan counts the three records left, and the probe's folds run again.
    next((tmp_path / "out" / "progress").rglob("fold-00001.json")).unlink()
    said.clear()
    Experiment(cfg).run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    plan = next(m for m in said if m.startswith("Plan: "))
    assert "3 of 4 fold and permutation records already in the output folder" in plan


def test_an_estimate_of_the_cache_checks_a_sample_and_says_so(small_dataset, tmp_path):
    X, y, meta, info = small_dataset
    from neurofm.estimators.frozen import FoundationEmbedder

    embedder = FoundationEmbedder(
        model_key="cbramod", weights="random", model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        sfreq=info["sfreq"], ch_names=info["ch_names"], cache_dir=str(tmp_path), verbose=False,
    )  # fmt: skip
    embedder.fit(X)
    assert embedder.count_cached(X) == (0, len(X))
    embedder.transform(X[:10])
    assert embedder.count_cached(X) == (10, len(X))
    found, checked = embedder.count_cached(X, max_windows=8)
    assert checked == 8 and 0 < found < 8  # evenly spaced: the first window is in, the last is not


def test_windows_rejected_per_file_are_in_the_data_summary_and_the_result(small_dataset, tmp_path, monkeypatch):
    import mne

    X, _, meta, info = small_dataset
    subjects = meta["Subject"].to_numpy()
    raws = []
    for subject in np.unique(subjects):  # one recording per subject, its windows back to back
        data = np.concatenate(list(X[subjects == subject]), axis=-1)
        raws.append(mne.io.RawArray(data, mne.create_info(info["ch_names"], info["sfreq"], "eeg"), verbose=False))
    for raw in raws[:2]:
        raw._data[0, 100:110] = 1.0  # an artefact of a volt in the first 4 s window of recordings 0 and 1
    cfg = ExperimentConfig(
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        cv=CVConfig(strategy="group_kfold", n_splits=2, group_key="recording"),
        windows=WindowConfig(window=4.0, reject_peak_to_peak=1e-3),
        cache_dir=str(tmp_path),
    )
    said = _said(monkeypatch)
    result = Experiment(cfg).run(raws, ["a", "b", "a", "b"])
    data = next(m for m in said if m.startswith("Data: "))
    assert "2 windows rejected by peak-to-peak (recording 0: 1, recording 1: 1)" in data
    assert result.meta["rejected"] == {"recording 0": 1, "recording 1": 1, "recording 2": 0, "recording 3": 0}


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
