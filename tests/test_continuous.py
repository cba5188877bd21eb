"""Continuous recordings (mne.io.Raw) go into Experiment.run unchanged and are cut as the config says."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA

from neurofm import Experiment
from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    RunConfig,
    WindowConfig,
)
from neurofm.exceptions import ConfigError, DataValidationError
from neurofm.loaders import windows_from_recordings

SAMPLE = SHARED_DATA / "meg" / "sample_audvis_trunc_raw_sss.fif"
needs_sample = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"the MNE sample MEG recording is not at {SAMPLE}")


def _eeg_recordings(small_dataset, with_stim=True):
    """One continuous 19-channel recording per subject: its windows back to back, events on a stim channel."""
    import mne

    X, y, metadata, info = small_dataset
    subjects = metadata["Subject"].to_numpy()
    codes = {"left_hand": 1, "right_hand": 2}
    raws = []
    for subject in np.unique(subjects):
        windows = X[subjects == subject]
        n_times = windows.shape[-1]
        data = np.concatenate(list(windows), axis=-1)
        names, types = list(info["ch_names"]), ["eeg"] * len(info["ch_names"])
        if with_stim:
            stim = np.zeros((1, data.shape[-1]))
            stim[0, np.arange(len(windows)) * n_times] = [codes[label] for label in y[subjects == subject]]
            data, names, types = np.vstack([data, stim]), names + ["STI"], types + ["stim"]
        raw = mne.io.RawArray(data, mne.create_info(names, info["sfreq"], types), verbose=False)
        raws.append(raw)
    return raws, codes


def _classical(**kwargs):
    base = {
        "models": {"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        "verbose": False,
        "cv": CVConfig(strategy="group_kfold", group_key="subject", n_splits=4),
    }
    return ExperimentConfig(**(base | kwargs))


def _fingerprint(raw):
    return (
        hashlib.sha256(raw.get_data().tobytes()).hexdigest(),
        list(raw.annotations.description),
        list(raw.info["bads"]),
        list(raw.ch_names),
    )


def test_windows_cut_from_stim_channel_events_equal_the_windows_they_came_from(small_dataset, cache_dir):
    X, y, metadata, info = small_dataset
    raws, codes = _eeg_recordings(small_dataset)
    before = [_fingerprint(raw) for raw in raws]
    n_times = X.shape[-1]
    windows = WindowConfig(tmin=0.0, tmax=n_times / info["sfreq"], event_id=codes)
    subjects = sorted(metadata["Subject"].unique())

    result = Experiment(_classical(windows=windows, cache_dir=cache_dir)).run(raws, None, {"subject": subjects})
    direct = Experiment(_classical(cache_dir=cache_dir)).run(
        X, y, metadata.rename(columns={"Subject": "subject"}), sfreq=info["sfreq"], ch_names=info["ch_names"]
    )

    # Same windows, same labels, same folds: the same scores as when the windows were given directly.
    pd.testing.assert_frame_equal(result.scores, direct.scores, check_exact=True)
    assert result.meta["recordings"] == {
        "n_recordings": 4,
        "windows_per_recording": [12, 12, 12, 12],
        "labels_from": "events",
    }
    assert result.config["windows"]["tmax"] == pytest.approx(4.0)
    assert [_fingerprint(raw) for raw in raws] == before  # the recordings themselves are untouched

    epochs = windows_from_recordings(raws, windows, recording_metadata=pd.DataFrame({"subject": subjects}))
    np.testing.assert_allclose(epochs.get_data(picks="eeg"), X)
    assert list(epochs.metadata["label"]) == list(y)
    assert list(epochs.metadata["recording"]) == list(np.repeat(range(4), 12))


def test_fixed_length_windows_take_one_label_per_recording_and_need_recordings_kept_apart(small_dataset, cache_dir):
    raws, _ = _eeg_recordings(small_dataset)
    labels = ["patient", "control", "patient", "control"]
    windows = WindowConfig(window=2.0, stride=1.0)
    grouped = _classical(
        windows=windows,
        cache_dir=cache_dir,
        cv=CVConfig(strategy="stratified_group_kfold", group_key="recording", n_splits=2),
    )
    result = Experiment(grouped).run(raws, labels)
    # 12 windows of 4 s per recording: 47 s of signal, so 47 two-second windows every second.
    assert result.meta["recordings"]["windows_per_recording"] == [47] * 4
    assert result.meta["recordings"]["labels_from"] == "one label per recording"
    tested = result.splits.query("Set == 'test'")
    recording_of = np.repeat(range(4), 47)
    per_fold = tested.groupby("Fold")["SampleIndex"].apply(lambda idx: set(recording_of[idx]))
    assert sorted(r for recordings in per_fold for r in recordings) == [0, 1, 2, 3]  # each tested once, whole
    assert len(tested) == 4 * 47

    with pytest.raises(ConfigError, match="keep each recording's windows together.*group_key='recording'"):
        Experiment(_classical(windows=windows, cache_dir=cache_dir, cv=CVConfig(strategy="stratified_kfold"))).run(
            raws, labels
        )
    with pytest.raises(DataValidationError, match=r"one label per recording \(4\), got \(3,\); or leave y=None"):
        Experiment(grouped).run(raws, labels[:3])
    with pytest.raises(
        DataValidationError, match="Fixed-length windows carry no event to label them: give one label per recording"
    ):
        Experiment(grouped).run(raws, None)


def test_a_recording_without_windows_settings_or_events_is_refused_before_any_compute(small_dataset, cache_dir):
    X, y, metadata, info = small_dataset
    raws, _ = _eeg_recordings(small_dataset, with_stim=False)
    with pytest.raises(ConfigError, match=r"continuous recording; say how to cut it.*WindowConfig\(tmin"):
        Experiment(_classical(cache_dir=cache_dir)).run(raws[0], None)
    with pytest.raises(
        DataValidationError, match=r"neither annotations nor a stim channel.*Add them with raw\.set_annotations"
    ):
        Experiment(_classical(windows=WindowConfig(tmax=1.0), cache_dir=cache_dir)).run(raws, None)
    with pytest.raises(ConfigError, match="X already holds windows; set windows=None"):
        Experiment(_classical(windows=WindowConfig(tmax=1.0), cache_dir=cache_dir)).run(
            X, y, metadata, sfreq=info["sfreq"], ch_names=info["ch_names"]
        )
    with pytest.raises(
        DataValidationError, match=r"column\(s\) \['recording'\], which neurofm fills in .*; rename them"
    ):
        windows_from_recordings(
            raws,
            WindowConfig(window=1.0),
            recording_metadata={"recording": ["a", "b", "c", "d"]},
            recording_labels=[0, 1, 0, 1],
        )
    with pytest.raises(
        DataValidationError,
        match=r"2 row\(s\) for 4 recording\(s\); with continuous recordings it gives one row per recording",
    ):
        windows_from_recordings(
            raws, WindowConfig(window=1.0), recording_metadata={"subject": [1, 2]}, recording_labels=[0, 1, 0, 1]
        )


def test_recordings_that_cannot_share_windows_are_refused_and_bad_channels_are_dropped_from_all(small_dataset, caplog):
    raws, codes = _eeg_recordings(small_dataset)
    windows = WindowConfig(tmax=1.0, event_id=codes)
    resampled = raws[1].copy().resample(128.0, verbose=False)
    with pytest.raises(DataValidationError, match="sampled at 128.0 Hz.*raw.resample"):
        windows_from_recordings([raws[0], resampled], windows)
    fewer = raws[1].copy().drop_channels(["Cz"])
    with pytest.raises(DataValidationError, match=r"lacks channels \['Cz'\].*same channels"):
        windows_from_recordings([raws[0], fewer], windows)

    marked = raws[1].copy()
    marked.info["bads"] = ["O1"]
    reordered = raws[2].copy().reorder_channels(list(reversed(raws[2].ch_names)))
    with caplog.at_level("WARNING", logger="neurofm"):
        epochs = windows_from_recordings([raws[0], marked, reordered], windows)
    assert "dropped from all of them: ['O1']" in caplog.text
    assert epochs.info["bads"] == ["O1"] and epochs.ch_names == raws[0].ch_names
    assert raws[0].info["bads"] == []  # the given recordings keep their own marks


def test_window_settings_are_validated_and_round_trip_through_yaml():
    with pytest.raises(ValueError, match="not both and not neither"):
        WindowConfig(tmax=1.0, window=2.0)
    with pytest.raises(ValueError, match="not both and not neither"):
        WindowConfig()
    with pytest.raises(ValueError, match=r"tmax \(0\.2\) must be after tmin \(0\.5\)"):
        WindowConfig(tmin=0.5, tmax=0.2)
    with pytest.raises(ValueError, match="stride .* longer than window"):
        WindowConfig(window=1.0, stride=2.0)
    with pytest.raises(ValueError, match="stride applies to fixed-length windows"):
        WindowConfig(tmax=1.0, stride=0.5)
    config = _classical(windows=WindowConfig(tmin=-0.2, tmax=0.8, event_id={"left": 1, "right": 2}))
    assert ExperimentConfig.from_yaml(config.to_yaml()) == config
    with pytest.raises(ValueError, match="data section cuts the windows"):
        RunConfig(models=config.models, windows=WindowConfig(tmax=1.0), data={"source": "recording", "path": "x.fif"})


@needs_sample
def test_meg_eeg_recordings_decode_like_their_windows_and_sensor_types_apply(cache_dir, caplog):
    import mne

    from neurofm.simulate import simulate_meg_eeg_epochs, simulate_meg_eeg_recordings

    info = mne.io.read_info(SAMPLE, verbose="error")
    raws = simulate_meg_eeg_recordings(info, n_subjects=3, n_windows_per_class=8)
    epochs = simulate_meg_eeg_epochs(info, n_subjects=3, n_windows_per_class=8)
    windows = WindowConfig(tmin=-0.2, tmax=0.8)
    cv = CVConfig(strategy="group_kfold", group_key="subject", n_splits=3)
    config = _classical(windows=windows, cv=cv, cache_dir=cache_dir, sensor_types=["meg"])
    result = Experiment(config).run(raws, None, {"subject": [1, 2, 3]})
    direct = Experiment(_classical(cv=cv, cache_dir=cache_dir, sensor_types=["meg"])).run(
        epochs, epochs.metadata["label"].to_numpy(dtype=str), epochs.metadata.rename(columns={"Subject": "subject"})
    )
    pd.testing.assert_frame_equal(result.scores, direct.scores, check_exact=True)
    assert result.meta["signal"]["sensor_types"] == {"grad": 204, "mag": 102}
    assert result.scores.query("Metric == 'balanced_accuracy'")["Value"].mean() > 0.6

    # A head that sat 5 mm higher in one recording: MEG sensor positions then differ in head coordinates.
    moved = raws[1].copy()
    transform = moved.info["dev_head_t"]["trans"].copy()
    transform[2, 3] -= 0.005
    moved.info["dev_head_t"] = mne.transforms.Transform("meg", "head", transform)
    with caplog.at_level("WARNING", logger="neurofm"):
        windows_from_recordings([raws[0], moved], windows)
    assert "sensors move up to 5.0 mm" in caplog.text and "maxwell_filter" in caplog.text


def test_a_recording_whose_windows_are_all_rejected_is_left_out_with_a_warning(small_dataset, caplog):
    raws, codes = _eeg_recordings(small_dataset)
    loud = raws[2].copy()
    loud.apply_function(lambda x: x * 1e3, picks="eeg")  # every window far above the rejection threshold
    windows = WindowConfig(tmax=1.0, event_id=codes, reject_peak_to_peak=1e-3)
    with caplog.at_level("WARNING", logger="neurofm"):
        epochs = windows_from_recordings([raws[0], raws[1], loud], windows)
    assert "Recording 2 gives no window" in caplog.text
    assert sorted(set(epochs.metadata["recording"])) == [0, 1] and len(epochs) == 24
    with pytest.raises(
        DataValidationError, match="No recording gives a window with .*; check the events and the lengths"
    ):
        windows_from_recordings([loud], windows)


def test_event_names_as_a_list_choose_the_classes_from_annotations(small_dataset, cache_dir):
    import mne

    X, y, metadata, info = small_dataset
    raws, _ = _eeg_recordings(small_dataset, with_stim=False)
    n_times = X.shape[-1]
    subjects = metadata["Subject"].to_numpy()
    for raw, subject in zip(raws, np.unique(subjects), strict=True):
        labels = list(y[subjects == subject])
        onsets = np.arange(len(labels)) * n_times / info["sfreq"]
        raw.set_annotations(mne.Annotations(onsets, [0.1] * len(labels), labels))
    listed = WindowConfig(tmax=(n_times - 1) / info["sfreq"], event_id=["left_hand", "right_hand"])
    result = Experiment(_classical(windows=listed, cache_dir=cache_dir)).run(
        raws, None, {"subject": sorted(np.unique(subjects))}
    )
    assert result.meta["recordings"]["windows_per_recording"] == [12, 12, 12, 12]
    assert sorted(result.predictions["y_true"].unique()) == ["left_hand", "right_hand"]
    only_left = listed.model_copy(update={"event_id": ["left_hand"]})
    left = windows_from_recordings(raws, only_left, recording_metadata=pd.DataFrame({"subject": range(4)}))
    assert set(left.metadata["label"]) == {"left_hand"} and len(left) == 24
