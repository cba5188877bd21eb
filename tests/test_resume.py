"""Crash-resume: finished (model, fold) and permutation work is recorded at once and never redone."""

from __future__ import annotations

import json
from pathlib import Path

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
from neurofm.exceptions import ConfigError, NeuroFMError
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
            backbone=FoundationEmbeddingModelConfig(
                model_key="cbramod", weights="random", batch_size=8, model_kwargs=get_model_spec("cbramod").tiny_kwargs
            ),
            head=ClassicalModelConfig(estimator=head),
        ),
    }
    return ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy", "roc_auc"],
        cache_dir=str(cache_dir),
        n_permutations=n_permutations,
        verbose=False,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
    )


@pytest.fixture()
def count_work(monkeypatch):
    """Counts fold fits and permutations actually computed (not read back from records)."""
    calls = {"folds": [], "permutations": 0}
    run_fold, run_permutation = neurofm.experiment.run_fold, neurofm.experiment.run_permutation

    def counting_fold(task, shared):
        calls["folds"].append((task.model_name, task.fold))
        return run_fold(task, shared)

    def counting_permutation(task, shared):
        calls["permutations"] += 1
        return run_permutation(task, shared)

    monkeypatch.setattr(neurofm.experiment, "run_fold", counting_fold)
    monkeypatch.setattr(neurofm.experiment, "run_permutation", counting_permutation)
    return calls


def _same_results(a: ExperimentResult, b: ExperimentResult) -> None:
    """Bit for bit: a resumed run ends with the uninterrupted run's numbers exactly (docs/concepts/guarantees.md)."""
    assert_frame_equal(a.scores, b.scores, check_exact=True)
    assert_frame_equal(a.predictions, b.predictions, check_exact=True)
    assert_frame_equal(a.splits, b.splits, check_exact=True)
    assert_frame_equal(a.get_statistics(), b.get_statistics(), check_exact=True)


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

    # Everything on record: no window is embedded again, not even from the cache; each record is read once.
    reads = []
    read_text = Path.read_text

    def counting_read_text(path, *args, **kwargs):
        if path in records:
            reads.append(path)
        return read_text(path, *args, **kwargs)

    records = set(_records(out, "fold") + _records(out, "permutation"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "read_text", counting_read_text)
        done = _run(_config(tmp_path / "cache"), data, output_dir=out)
    assert len(reads) == len(set(reads)) == 12  # 6 folds and 6 permutations, each read from disk once
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


def test_records_of_an_older_neurofm_that_computed_differently_are_not_resumed(data, tmp_path, count_work, monkeypatch):
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


def test_a_full_disk_stops_the_run_with_a_clear_error_and_keeps_what_was_recorded(
    data, tmp_path, monkeypatch, count_work
):
    import errno

    import neurofm.utils.files as files
    from neurofm.exceptions import StorageError

    out = tmp_path / "out"
    reference = _run(_config(tmp_path / "cache"), data)
    real_replace, calls = files.os.replace, {"n": 0}

    def disk_fills_up(src, dst):
        calls["n"] += 1
        if calls["n"] > 5:  # room for five files (the output folder's marker, four records), then none
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
    broken = ClassicalModelConfig(
        estimator="bandpower_lr",
        params={"logisticregression__penalty": "elasticnet", "logisticregression__solver": "liblinear"},
    )
    config = _config(tmp_path / "cache", n_permutations=0).model_copy(
        update={"models": {"bandpower": ClassicalModelConfig(estimator="bandpower_lr"), "broken": broken}}
    )
    out = tmp_path / "out"
    with pytest.raises(ModelFitError, match=r"Model 'broken' failed on fold 0: ValueError: Only 'saga'") as info:
        _run(config, data, output_dir=out)
    assert isinstance(info.value.__cause__, ValueError)
    assert len(_records(out, "fold")) == 3  # bandpower's three folds finished first and are kept


def _write_weights(form, seed, data, folder):
    """A tiny CBraMod's weights, seeded, written as ``form`` at a fixed place (overwriting in place); its ``weights``.

    Every file keeps one old modification time, as ``cp -p`` or ``rsync -t`` leave it: the digests of the first run
    are remembered (the memo only trusts files older than a few seconds), and only the content tells the two apart.
    """
    import os
    from pathlib import Path

    from safetensors.torch import save_file

    from neurofm.estimators.frozen import FoundationEmbedder

    X, _, _, info = data
    folder.mkdir(parents=True, exist_ok=True)
    key = "cbramod"
    module = (
        FoundationEmbedder(
            key,
            weights="random",
            model_kwargs=get_model_spec(key).tiny_kwargs,
            random_state=seed,
            cache_embeddings=False,
            verbose=False,
            **info,
        )
        .fit(X[:1])
        .backbone_.module
    )
    if form == "file":
        weights = location = folder / f"{key}.safetensors"
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(location))
    elif form == "directory":  # e.g. runs/labram, pretrained again in place
        weights = location = folder / "pretrained"
        module.save_pretrained(str(location))
    else:  # a hub id whose revision moved: a new commit's snapshot and the ref pointing at it (huggingface_hub layout)
        import huggingface_hub.constants as hfc

        weights = f"neurofm-test/resume-{folder.name}"
        root = Path(hfc.HF_HUB_CACHE) / f"models--{weights.replace('/', '--')}"
        location = root / "snapshots" / f"{seed:040x}"
        module.save_pretrained(str(location))
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(location.name)
    for path in [location, *location.rglob("*")]:
        os.utime(path, (1_600_000_000, 1_600_000_000))
    return str(weights)


def _changing_weights_config(cache_dir, changing, steady_weights):
    """A baseline, a probe on weights that do not change, and ``changing``, the model whose weights are overwritten."""
    key = "cbramod"
    steady = FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key=key, weights=steady_weights, batch_size=8, model_kwargs=get_model_spec(key).tiny_kwargs
        ),
        head=ClassicalModelConfig(estimator="LinearDiscriminantAnalysis"),
    )
    models = {"bandpower": ClassicalModelConfig(estimator="bandpower_lr"), "steady": steady, "changing": changing}
    return ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy", "roc_auc"],
        cache_dir=str(cache_dir),
        n_permutations=2,
        verbose=False,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
    )


def _check_new_weights_are_used_and_only_their_model_is_redone(data, tmp_path, count_work, form, changing):
    """Run, overwrite the changing model's weights in place, rerun into the same folder: the rerun equals a fresh
    run on the new bytes exactly, and the other models are read back from their records."""
    steady_weights = _write_weights("file", 5, data, tmp_path / "steady")
    out = tmp_path / "out"
    weights = _write_weights(form, 1, data, tmp_path)
    before = _run(_changing_weights_config(tmp_path / "cache", changing(weights), steady_weights), data, output_dir=out)
    assert _write_weights(form, 2, data, tmp_path) == weights  # same path or hub id, other bytes
    _reset(count_work)
    rerun = _run(_changing_weights_config(tmp_path / "cache", changing(weights), steady_weights), data, output_dir=out)
    redone_permutations = count_work["permutations"]
    assert sorted(set(count_work["folds"])) == [("changing", fold) for fold in range(3)]
    fresh = _run(
        _changing_weights_config(tmp_path / "cache-fresh", changing(weights), steady_weights),
        data,
        output_dir=tmp_path / "out-fresh",
    )
    _same_results(rerun, fresh)
    # Not vacuous: the old weights predicted otherwise, and only their model's numbers moved.
    old, new = (result.predictions.query("Model == 'changing'") for result in (before, rerun))
    probabilities = [column for column in new if column.startswith("proba_")]
    assert not np.array_equal(old[probabilities].to_numpy(), new[probabilities].to_numpy())
    others = "Model != 'changing'"
    assert_frame_equal(before.scores.query(others), rerun.scores.query(others), check_exact=True)
    return redone_permutations


@pytest.mark.parametrize("form", ["file", "directory", "hub"])
def test_frozen_weights_overwritten_in_place_are_never_served_old_results(data, tmp_path, count_work, form):
    def probe(weights):
        return FrozenBackboneDecoderConfig(
            backbone=FoundationEmbeddingModelConfig(
                model_key="cbramod", weights=weights, batch_size=8, model_kwargs=get_model_spec("cbramod").tiny_kwargs
            ),
            head=ClassicalModelConfig(estimator="LinearDiscriminantAnalysis"),
        )

    redone_permutations = _check_new_weights_are_used_and_only_their_model_is_redone(
        data, tmp_path, count_work, form, probe
    )
    assert redone_permutations == 2  # the changed probe's; the others' are on record
    if form == "hub":  # beside the files' digests, the commit the revision resolved to identifies hub weights
        [identity] = (
            ExperimentResult.load(tmp_path / "out")
            .get_model_artifacts("backbone", "changing")
            .query("ArtifactKey == 'weights_identity'")["ArtifactValue"]
        )
        assert identity["commit"] == f"{2:040x}" and set(identity["files"]) == {"config.json", "model.safetensors"}


def _tuned(weights):
    from neurofm.configs import CheckpointConfig, NeuralFineTuneConfig, TrainerConfig

    return NeuralFineTuneConfig(
        model_key="cbramod",
        weights=weights,
        train_mode="full",
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        trainer=TrainerConfig(max_epochs=1, batch_size=32, validation_fraction=0, early_stopping_patience=None),
        checkpoints=CheckpointConfig(save="none", monitor="train_loss"),
    )


def test_fine_tuned_weights_overwritten_in_place_are_never_served_old_results(data, tmp_path, count_work):
    redone_permutations = _check_new_weights_are_used_and_only_their_model_is_redone(
        data, tmp_path, count_work, "file", _tuned
    )
    assert redone_permutations == 0  # trainable models are not permuted by default; the others' are on record


def test_fine_tuned_weights_rewritten_while_the_run_uses_them_stop_it_before_training(data, tmp_path, monkeypatch):
    weights = _write_weights("file", 1, data, tmp_path)
    config = ExperimentConfig(
        models={"tuned": _tuned(weights)},
        metrics=["balanced_accuracy"],
        verbose=False,
        cache_dir=str(tmp_path / "cache"),
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
    )
    run_fold = neurofm.experiment.run_fold
    trained = []

    def rewritten_first(task, shared):
        _write_weights("file", 2, data, tmp_path)  # another process saves into the same path after the run started
        monkeypatch.setattr("neurofm.estimators.neural.train_network", lambda *a, **k: trained.append(1))
        return run_fold(task, shared)

    monkeypatch.setattr(neurofm.experiment, "run_fold", rewritten_first)
    with pytest.raises(NeuroFMError, match="changed while this run was using it"):
        _run(config, data, output_dir=tmp_path / "out")
    assert not trained and not _records(tmp_path / "out", "fold")  # nothing trained or recorded under the old identity


# -- records on their own: their format, their checksum, what is reported -------------------------------------------


def test_a_record_is_its_payload_as_sorted_json_with_a_checksum_and_keeps_nan_and_infinity(tmp_path, caplog):
    import hashlib

    from neurofm.progress import read_record, round_trip, write_record

    payload = {"scores": {"roc_auc": float("nan"), "balanced_accuracy": 0.75}, "seconds": float("inf")}
    path = tmp_path / "fold-00000.json"
    with caplog.at_level("WARNING", logger="neurofm"):
        write_record(path, payload)
        back = read_record(path)
    assert caplog.text == ""  # an intact record reads back without a word
    text = '{"scores": {"balanced_accuracy": 0.75, "roc_auc": NaN}, "seconds": Infinity}'
    assert json.loads(path.read_text()) == {
        "format": 1,
        "checksum": hashlib.blake2b(text.encode(), digest_size=16).hexdigest(),
        "payload": text,
    }
    assert np.isnan(back["scores"]["roc_auc"]) and back["seconds"] == float("inf")
    assert back["scores"]["balanced_accuracy"] == 0.75
    # round_trip gives a fresh result the form a resumed one reads back in, NaN and infinity included.
    fresh = round_trip(payload)
    assert np.isnan(fresh["scores"]["roc_auc"]) and fresh["seconds"] == float("inf")
    # The same payload with its keys in another order is the same file, byte for byte.
    write_record(
        tmp_path / "again.json",
        {"seconds": float("inf"), "scores": {"balanced_accuracy": 0.75, "roc_auc": float("nan")}},
    )
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()


def test_a_damaged_record_is_reported_with_its_path_and_the_reason(tmp_path, caplog):
    from neurofm.progress import read_record, write_record

    altered, cut = tmp_path / "altered.json", tmp_path / "cut.json"
    write_record(altered, {"scores": {"accuracy": 0.5}})
    content = json.loads(altered.read_text())
    altered.write_text(json.dumps({**content, "payload": content["payload"].replace("0.5", "0.9")}))
    cut.write_text('{"format": 1, "chec')
    with caplog.at_level("WARNING", logger="neurofm"):
        assert read_record(altered) is None and read_record(cut) is None and read_record(tmp_path / "none") is None
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == f"Progress record {altered} fails its checksum; that work is done again."
    assert messages[1].startswith(f"Progress record {cut} cannot be read (Unterminated string")
    assert messages[1].endswith("); that work is done again.") and len(messages) == 2  # an absent record: no word


def test_data_fingerprint_is_the_documented_hash_of_everything_that_decides_results():
    import hashlib
    from pathlib import Path

    from neurofm.progress import data_fingerprint

    rng = np.random.default_rng(0)
    X, y, groups = rng.standard_normal((6, 2, 8)), np.array([0, 1] * 3), np.array(["a", "b", "c"] * 2)
    info = {"sfreq": 160.0, "ch_names": ["C3", "C4"], "montage": Path("cap.elc")}
    digest = hashlib.blake2b(digest_size=16, person=b"neurofm-data")
    for part in (
        b"(6, 2, 8)",
        X.astype(np.float32).tobytes(),
        b"[0, 1, 0, 1, 0, 1]",
        b"|none|",
        b'{"ch_names": ["C3", "C4"], "montage": "cap.elc", "sfreq": 160.0}',
    ):
        digest.update(part)
    assert data_fingerprint(X, y, None, info) == digest.hexdigest()
    # float32 windows of the same values, the signal description in another order: the same data.
    assert data_fingerprint(X.astype(np.float32), y, None, dict(reversed(info.items()))) == digest.hexdigest()
    # Other window shape (same bytes), groups, or description: other data.
    others = [
        data_fingerprint(X.reshape(6, 4, 4), y, None, info),
        data_fingerprint(X, y, groups, info),
        data_fingerprint(X, y, None, {**info, "sfreq": 128.0}),
    ]
    assert len({digest.hexdigest(), *others}) == 4


def test_records_are_written_where_the_layout_says_by_whichever_worker_runs_the_task(tmp_path):
    from neurofm.cache import stable_hash
    from neurofm.progress import RECORD_SEMANTICS, RecordingCall, read_record

    progress = RunProgress(tmp_path)
    decisive = {"name": "m", "data": "abc"}
    folder = progress.model_folder(decisive)
    assert folder == tmp_path / "progress" / f"model-{stable_hash({'semantics': RECORD_SEMANTICS, **decisive})}"
    path = RunProgress.path(folder, "fold", 3)
    assert path == folder / "fold-00003.json"
    # Without shared data the function gets the task alone; a task without a record path writes none.
    assert RecordingCall(lambda task: {"double": task * 2}, dict)((4, path)) == {"double": 8}
    assert read_record(path) == {"double": 8}
    assert RecordingCall(lambda task, shared: task + shared, float)((4, None), 1) == 5
    assert sorted(p.name for p in folder.iterdir()) == ["fold-00003.json"]


def test_a_fold_outcome_reads_back_from_its_record_exactly_with_its_column_types():
    import pandas as pd

    from neurofm.progress import round_trip
    from neurofm.tasks import FoldOutcome

    frame = pd.DataFrame(
        {
            "Model": ["m", "m"],
            "SampleIndex": np.array([3, 7], dtype=np.int32),
            "y_true": np.array([1.5, -2.25], dtype=np.float32),
            "correct": [True, False],
            "proba_a": [0.1, 1 / 3],
        }
    )
    artifacts = [(0, "fit", "seconds", 1.25), (0, "head", "classes", ["a", "b"])]
    back = FoldOutcome.from_record(round_trip(FoldOutcome({"accuracy": 0.5}, frame, artifacts, 2.5).to_record()))
    assert_frame_equal(back.predictions, frame, check_exact=True)  # int32 and float32 stay what they were
    assert (back.scores, back.artifacts, back.seconds) == ({"accuracy": 0.5}, artifacts, 2.5)
    # A fold without predictions (a model that gives none) reads back without them.
    empty = FoldOutcome.from_record(round_trip(FoldOutcome({"accuracy": 0.5}, None, [], 0.0).to_record()))
    assert empty.predictions is None and empty.artifacts == []


def test_a_resumed_run_says_how_much_it_read_back(data, tmp_path, caplog):
    config = _config(tmp_path / "cache", n_permutations=0).model_copy(
        update={"models": {"bandpower": ClassicalModelConfig(estimator="bandpower_lr")}, "verbose": True}
    )
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="neurofm"):
        _run(config, data, output_dir=out)
    assert "Resuming" not in caplog.text  # nothing was on record
    _records(out, "fold")[1].unlink()
    caplog.clear()
    with caplog.at_level("INFO", logger="neurofm"):
        _run(config, data, output_dir=out)
    assert "Resuming: 2 of 3 task(s) read back from their records" in caplog.text
