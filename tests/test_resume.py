"""Crash-resume: finished (model, fold) and permutation work is recorded at once and never redone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pandas.testing import assert_frame_equal

import neurofm.experiment
import neurofm.progress
from neurofm import Experiment
from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
)
from neurofm.exceptions import ConfigError
from neurofm.models import get_model_spec
from neurofm.progress import RunProgress
from neurofm.results import ExperimentResult
from neurofm.simulate import simulate_eeg_dataset
from neurofm.utils.files import TMP_MARK


@pytest.fixture(scope="module")
def data():
    return simulate_eeg_dataset(n_subjects=3, n_windows_per_class=5, random_state=7)


def _config(cache_dir, head="LogisticRegression", n_permutations=3):
    models = {
        "bandpower": ClassicalModelConfig(estimator="bandpower_lr"),
        "probe": FrozenBackboneDecoderConfig(
            backbone=FoundationEmbeddingModelConfig(model_key="cbramod", weights="random", batch_size=8,
                                                    model_kwargs=get_model_spec("cbramod").tiny_kwargs),
            head=ClassicalModelConfig(estimator=head)),
    }
    return ExperimentConfig(models=models, metrics=["balanced_accuracy", "roc_auc"], cache_dir=str(cache_dir),
                            n_permutations=n_permutations, verbose=False,
                            cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"))


@pytest.fixture()
def count_work(monkeypatch):
    """Counts fold fits and permutations actually computed (not read back from records)."""
    calls = {"folds": [], "permutations": 0}
    run_fold, run_permutation = neurofm.experiment._run_fold, neurofm.experiment._run_permutation

    def counting_fold(task, shared):
        calls["folds"].append((task.model_name, task.fold))
        return run_fold(task, shared)

    def counting_permutation(task, shared):
        calls["permutations"] += 1
        return run_permutation(task, shared)

    monkeypatch.setattr(neurofm.experiment, "_run_fold", counting_fold)
    monkeypatch.setattr(neurofm.experiment, "_run_permutation", counting_permutation)
    return calls


def _same_results(a: ExperimentResult, b: ExperimentResult) -> None:
    assert_frame_equal(a.scores, b.scores)
    assert_frame_equal(a.predictions, b.predictions)
    assert_frame_equal(a.splits, b.splits)
    assert_frame_equal(a.get_statistics(), b.get_statistics())


def _records(out, kind):
    return sorted((out / "progress").rglob(f"{kind}-*.json"))


def _run(config, data, **kwargs):
    X, y, meta, info = data
    return Experiment(config).run(X, y, sample_metadata=meta, **info, **kwargs)


def _reset(count_work):
    count_work["folds"].clear()
    count_work["permutations"] = 0


def test_a_rerun_skips_finished_work_and_gives_the_same_results(data, tmp_path, count_work):
    out = tmp_path / "out"
    first = _run(_config(tmp_path / "cache"), data, output_dir=out)
    assert len(count_work["folds"]) == 6 and count_work["permutations"] == 6
    assert len(_records(out, "fold")) == 6 and len(_records(out, "permutation")) == 6
    saved = ExperimentResult.load(out)  # run() saved the final tables too
    _same_results(saved, first)

    # A run that stopped after some folds: their records are there, the rest are not.
    for record in _records(out, "fold")[::2] + _records(out, "permutation")[:1]:
        record.unlink()
    _reset(count_work)
    resumed = _run(_config(tmp_path / "cache"), data, output_dir=out)
    assert len(count_work["folds"]) == 3 and count_work["permutations"] == 1  # only what was missing
    _same_results(resumed, first)
    _same_results(ExperimentResult.load(out), first)

    # Everything on record: no window is embedded again, not even from the cache.
    done = _run(_config(tmp_path / "cache"), data, output_dir=out)
    _same_results(done, first)
    cache = done.get_model_artifacts(artifact_type="embedding_cache", model="probe")
    assert "skipped" in set(cache["ArtifactKey"])

    # Without an output folder nothing is recorded or read back.
    plain = _run(_config(tmp_path / "cache"), data)
    _same_results(plain, first)


def test_a_changed_model_is_redone_alone_and_more_permutations_reuse_the_first(data, tmp_path, count_work):
    out = tmp_path / "out"
    _run(_config(tmp_path / "cache"), data, output_dir=out)
    _reset(count_work)
    changed = _run(_config(tmp_path / "cache", head="LinearDiscriminantAnalysis"), data, output_dir=out)
    assert sorted({name for name, _ in count_work["folds"]}) == ["probe"]
    assert count_work["permutations"] == 3  # the probe's three; bandpower's were recorded
    fresh = _run(_config(tmp_path / "cache2", head="LinearDiscriminantAnalysis"), data)
    _same_results(changed, fresh)

    _reset(count_work)
    more = _run(_config(tmp_path / "cache", head="LinearDiscriminantAnalysis", n_permutations=5), data, output_dir=out)
    assert count_work["folds"] == [] and count_work["permutations"] == 2 * 2
    reference = _run(_config(tmp_path / "cache", head="LinearDiscriminantAnalysis", n_permutations=5), data)
    _same_results(more, reference)


def test_other_data_never_reads_these_records(data, tmp_path, count_work):
    X, y, meta, info = data
    out = tmp_path / "out"
    _run(_config(tmp_path / "cache"), data, output_dir=out)
    count_work["folds"].clear()
    X2 = X.copy()
    X2[0, 0, 0] += 1e-6
    Experiment(_config(tmp_path / "cache")).run(X2, y, sample_metadata=meta, **info, output_dir=out)
    assert len(count_work["folds"]) == 6
    count_work["folds"].clear()
    Experiment(_config(tmp_path / "cache")).run(X, y[::-1].copy(), sample_metadata=meta, **info, output_dir=out)
    assert len(count_work["folds"]) == 6


def test_records_of_an_older_neurofm_that_computed_differently_are_not_resumed(data, tmp_path, count_work,
                                                                                   monkeypatch):
    out = tmp_path / "out"
    _run(_config(tmp_path / "cache", n_permutations=0), data, output_dir=out)
    _reset(count_work)
    monkeypatch.setattr(neurofm.progress, "RECORD_SEMANTICS", neurofm.progress.RECORD_SEMANTICS + 1)
    _run(_config(tmp_path / "cache", n_permutations=0), data, output_dir=out)
    assert len(count_work["folds"]) == 6  # same config and data, but results now mean something else


def test_a_damaged_record_is_reported_and_its_work_redone(data, tmp_path, count_work, caplog):
    out = tmp_path / "out"
    first = _run(_config(tmp_path / "cache", n_permutations=0), data, output_dir=out)
    record = _records(out, "fold")[0]
    content = json.loads(record.read_text())
    content["payload"] = content["payload"].replace("0.", "1.", 1)  # a flipped digit: the checksum no longer holds
    record.write_text(json.dumps(content))
    _records(out, "fold")[1].write_text('{"format": 1, "chec')  # truncated
    count_work["folds"].clear()
    with caplog.at_level("WARNING", logger="neurofm"):
        again = _run(_config(tmp_path / "cache", n_permutations=0), data, output_dir=out)
    assert len(count_work["folds"]) == 2
    assert "fails its checksum" in caplog.text and "cannot be read" in caplog.text
    _same_results(again, first)


def test_one_run_at_a_time_per_folder_and_dead_temporary_files_are_cleared(data, tmp_path):
    out = tmp_path / "out"
    leftover = out / "progress" / f".fold-00001.json{TMP_MARK}abc"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("half a rec")
    with RunProgress(out).session():
        with pytest.raises(ConfigError, match="Another neurofm run is writing to"):
            _run(_config(tmp_path / "cache"), data, output_dir=out)
        assert not (out / "scores.parquet").exists()
    assert not leftover.exists()  # cleared by the session that held the folder
    _run(_config(tmp_path / "cache", n_permutations=0), data, output_dir=out)
    assert not list(out.rglob(f"*{TMP_MARK}*"))


def test_model_names_never_become_paths(data, tmp_path):
    X, y, meta, info = data
    out = tmp_path / "nested" / "out"
    config = ExperimentConfig(models={"../../escape": ClassicalModelConfig(estimator="bandpower_lr")},
                              cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
                              cache_dir=str(tmp_path / "cache"), verbose=False)
    result = Experiment(config).run(X, y, sample_metadata=meta, **info, output_dir=out)
    assert list(result.scores["Model"].unique()) == ["../../escape"]
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert written and all(out in p.parents or (tmp_path / "cache") in p.parents for p in written)
    assert np.isfinite(result.scores["Value"]).all()


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    """Two trials of the fault-injection campaign (tests/crash_resume.py runs 20): a write cut mid-file, a kill
    during extraction; after each, every file reads back whole and the resumed run equals an uninterrupted one."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("crash_resume.py")
    spec = importlib.util.spec_from_file_location("crash_resume", path)
    campaign = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(campaign)
    campaign.KINDS = ("writing", "extraction")
    lines = []
    summary = campaign.run_trials(2, seed=3, root=tmp_path, log=lines.append)
    assert summary["kills"] == 2, lines
    assert summary["resumed_equal"] == 2 and summary["files_checked"] > 0


def test_a_full_disk_stops_the_run_with_a_clear_error_and_keeps_what_was_recorded(data, tmp_path, monkeypatch,
                                                                                     count_work):
    import errno

    import neurofm.utils.files as files
    from neurofm.exceptions import StorageError

    out = tmp_path / "out"
    reference = _run(_config(tmp_path / "cache"), data)
    real_replace, calls = files.os.replace, {"n": 0}

    def disk_fills_up(src, dst):
        calls["n"] += 1
        if calls["n"] > 4:  # room for four files, then none
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", disk_fills_up)
    with pytest.raises(StorageError, match=r"No room to write .*files written before are intact"):
        _run(_config(tmp_path / "cache"), data, output_dir=out)
    monkeypatch.setattr(files.os, "replace", real_replace)
    kept = _records(out, "fold")
    assert len(kept) == 4 and not list(out.rglob(f"*{TMP_MARK}*"))  # four whole records, no partial file
    count_work["folds"].clear()
    resumed = _run(_config(tmp_path / "cache"), data, output_dir=out)
    assert len(count_work["folds"]) == 2  # room again: only the two missing folds run
    _same_results(resumed, reference)


def test_records_written_by_parallel_workers_are_read_back_by_a_sequential_rerun(data, tmp_path, count_work):
    from neurofm.configs import ExecutionConfig

    out = tmp_path / "out"
    parallel = _config(tmp_path / "cache").model_copy(update={"execution": ExecutionConfig(backend="joblib", n_jobs=2)})
    first = _run(parallel, data, output_dir=out)
    assert count_work["folds"] == []  # the folds ran in worker processes, which wrote their own records
    assert len(_records(out, "fold")) == 6 and len(_records(out, "permutation")) == 6
    again = _run(_config(tmp_path / "cache"), data, output_dir=out)
    assert count_work["folds"] == [] and count_work["permutations"] == 0
    _same_results(again, first)


def test_a_model_failing_on_a_fold_names_it_and_keeps_the_folds_that_finished(data, tmp_path):
    from neurofm.exceptions import ModelFitError

    # A combination scikit-learn accepts when set and refuses only when fitting.
    broken = ClassicalModelConfig(estimator="bandpower_lr", params={"logisticregression__penalty": "elasticnet",
                                                                   "logisticregression__solver": "liblinear"})
    config = _config(tmp_path / "cache", n_permutations=0).model_copy(
        update={"models": {"bandpower": ClassicalModelConfig(estimator="bandpower_lr"), "broken": broken}})
    out = tmp_path / "out"
    with pytest.raises(ModelFitError, match=r"Model 'broken' failed on fold 0: ValueError: Only 'saga'") as info:
        _run(config, data, output_dir=out)
    assert isinstance(info.value.__cause__, ValueError)
    assert len(_records(out, "fold")) == 3  # bandpower's three folds finished first and are kept
