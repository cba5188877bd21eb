"""Loaders: windows from continuous recordings, files MNE reads, and the three real data sets."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA

from neurofm.exceptions import DataValidationError
from neurofm.loaders import load_bids, load_eegmmi, load_muse_csv, load_recording, load_uci_smni, windows_from_raw


@pytest.fixture()
def raw():
    import mne

    rng = np.random.default_rng(0)
    sfreq = 100.0
    data = rng.standard_normal((3, 6000)) * 10e-6
    data[0, 3000:3050] += 500e-6  # an artifact inside the 30th second
    raw = mne.io.RawArray(data, mne.create_info(["C3", "Cz", "C4"], sfreq, "eeg"), verbose=False)
    raw.set_annotations(
        mne.Annotations(onset=[5, 15, 29.6, 40], duration=[1] * 4, description=["go", "stop", "go", "stop"])
    )
    return raw


def test_event_locked_windows_from_annotations(raw):
    epochs = windows_from_raw(raw, tmin=0.0, tmax=2.0, metadata={"subject": "s1"})
    assert len(epochs) == 4 and epochs.get_data().shape[-1] == 200
    assert list(epochs.metadata["label"]) == ["go", "stop", "go", "stop"]
    assert set(epochs.metadata["subject"]) == {"s1"}


def test_peak_to_peak_rejection_drops_the_artifact(raw):
    epochs = windows_from_raw(raw, tmin=0.0, tmax=2.0, reject_peak_to_peak=200e-6)
    assert list(epochs.metadata["label"]) == ["go", "stop", "stop"]


def test_fixed_length_windows_with_stride(raw):
    epochs = windows_from_raw(raw, window=4.0, stride=2.0)
    assert epochs.get_data().shape[-1] == 400
    assert len(epochs) == 29  # (60 - 4) / 2 + 1
    assert epochs.metadata["label"].isna().all()
    with pytest.raises(DataValidationError, match=r"stride must be in \(0, window\]; got stride=5\.0, window=4\.0"):
        windows_from_raw(raw, window=4.0, stride=5.0)


def test_any_file_mne_reads(raw, tmp_path):
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose=False)
    epochs = load_recording(path, tmin=0.0, tmax=1.0, event_id={"go": 1})
    assert list(epochs.metadata["label"]) == ["go", "go"]
    with pytest.raises(DataValidationError, match=r"No recording at .*missing\.edf"):
        load_recording(tmp_path / "missing.edf", tmax=1.0)


needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real recordings not found at {SHARED_DATA}")


@needs_data
def test_physionet_motor_imagery_local_copy():
    epochs = load_eegmmi(SHARED_DATA / "eegmmi", subjects=[1], runs=[4, 8, 12])
    assert len(epochs) == 45 and epochs.info["sfreq"] == 160.0
    assert set(epochs.metadata["label"]) == {"left_fist", "right_fist"}
    assert "FC5" in epochs.ch_names and not any(n.endswith(".") for n in epochs.ch_names)
    assert set(epochs.metadata["subject"]) == {"001"} and set(epochs.metadata["run"]) == {4, 8, 12}
    # Each run is one recording: REVE normalises its windows with that recording's statistics.
    assert epochs.metadata.groupby("run")["recording"].nunique().eq(1).all()
    assert epochs.metadata["recording"].nunique() == 3
    assert epochs.get_data().shape[-1] == 640
    with pytest.raises(DataValidationError, match="download=True"):
        load_eegmmi(SHARED_DATA / "eegmmi", subjects=[2])


@needs_data
def test_muse_csv_face_vs_house():
    epochs = load_muse_csv(SHARED_DATA / "muse-n170")
    assert epochs.ch_names == ["TP9", "AF7", "AF8", "TP10"]
    assert epochs.info["sfreq"] == 256.0
    assert set(epochs.metadata["label"]) == {"face", "house"}
    assert epochs.metadata["subject"].nunique() == 5
    std = epochs.get_data().std()
    assert 1e-6 < std < 1e-3  # volts, not microvolts


@needs_data
def test_uci_smni_trials():
    epochs = load_uci_smni(SHARED_DATA / "uci-eeg-smni", subjects=["co2a0000364", "co2c0000337"])
    assert epochs.info["sfreq"] == 256.0 and epochs.get_data().shape[1:] == (61, 256)
    assert {"Fp1", "Cz"} <= set(epochs.ch_names) and not {"X", "Y", "nd"} & set(epochs.ch_names)
    assert set(epochs.metadata["label"]) <= {"s1_obj", "s2_match", "s2_nomatch"}
    assert dict(epochs.metadata.groupby("subject")["group"].first()) == {
        "co2a0000364": "alcoholic",
        "co2c0000337": "control",
    }


def test_bids_root_with_entities_as_metadata(tmp_path):
    import mne
    import mne_bids

    rng = np.random.default_rng(1)
    for subject in ("01", "02"):
        for run in ("1", "2"):
            raw = mne.io.RawArray(
                rng.standard_normal((3, 3000)) * 10e-6, mne.create_info(["C3", "Cz", "C4"], 100.0, "eeg"), verbose=False
            )
            raw.set_annotations(mne.Annotations([2, 8, 14, 20], [1] * 4, ["left", "right", "left", "right"]))
            path = mne_bids.BIDSPath(subject=subject, session="a", task="mi", run=run, datatype="eeg", root=tmp_path)
            mne_bids.write_raw_bids(raw, path, allow_preload=True, format="EDF", overwrite=True, verbose=False)
    epochs = load_bids(tmp_path, subjects=["01", "02"], runs=["2"], tmin=0.0, tmax=1.0)
    assert len(epochs) == 8
    assert set(epochs.metadata["subject"]) == {"001", "002"} and set(epochs.metadata["run"]) == {2}
    assert set(epochs.metadata["label"]) == {"left", "right"}
    assert set(epochs.metadata["task"]) == {"mi"} and set(epochs.metadata["session"]) == {"a"}
    with pytest.raises(
        DataValidationError,
        match=r"No eeg recordings match subjects=\['03'\], sessions=None, tasks=None, "
        r"runs=None under the BIDS root",
    ):
        load_bids(tmp_path, subjects=["03"], tmax=1.0)


def test_braindecode_windows_dataset():
    import mne
    import pandas as pd
    from braindecode.datasets import BaseConcatDataset, RawDataset
    from braindecode.preprocessing import create_windows_from_events

    from neurofm.loaders import from_braindecode

    rng = np.random.default_rng(0)
    recordings = []
    for subject in (1, 2):
        raw = mne.io.RawArray(
            rng.standard_normal((3, 3000)) * 1e-5, mne.create_info(["C3", "Cz", "C4"], 100.0, "eeg"), verbose=False
        )
        raw.set_annotations(mne.Annotations([2, 8, 14, 20], [1] * 4, ["left", "right", "left", "right"]))
        recordings.append(RawDataset(raw, pd.Series({"subject": subject, "session": "0", "run": "0"})))
    windows = create_windows_from_events(
        BaseConcatDataset(recordings),
        trial_start_offset_samples=0,
        trial_stop_offset_samples=0,
        mapping={"left": 0, "right": 1},
    )
    epochs = from_braindecode(windows)
    assert len(epochs) == 8 and epochs.ch_names == ["C3", "Cz", "C4"] and epochs.info["sfreq"] == 100.0
    assert list(epochs.metadata["label"][:4]) == [0, 1, 0, 1]
    assert set(epochs.metadata["subject"]) == {1, 2}
    np.testing.assert_allclose(epochs.get_data()[0], windows[0][0], rtol=1e-6)


@pytest.fixture()
def fake_moabb(tmp_path, monkeypatch):
    pytest.importorskip("moabb", reason="moabb is not installed (pip install 'neurofm[moabb]')")
    monkeypatch.setenv("MNE_DATA", str(tmp_path))
    from moabb.datasets.fake import FakeDataset

    # MOABB's own synthetic data set: built locally, never downloaded.
    return FakeDataset(
        n_subjects=3,
        n_sessions=2,
        n_runs=2,
        event_list=("left_hand", "right_hand"),
        duration=30,
        n_events=8,
        channels=("C3", "Cz", "C4", "Pz"),
        sfreq=128,
        seed=3,
    )


def test_moabb_dataset_windows_follow_its_events_and_interval(fake_moabb):
    import mne

    from neurofm.loaders import from_moabb

    epochs = from_moabb(fake_moabb, subjects=[1, 3])
    assert set(epochs.metadata["subject"]) == {"001", "003"}
    assert epochs.metadata.groupby(["subject", "session", "run"]).ngroups == 2 * 2 * 2
    assert set(epochs.metadata["label"]) == {"left_hand", "right_hand"}
    start, stop = fake_moabb.interval
    assert epochs.get_data().shape[1:] == (4, int(round((stop - start) * 128)))
    # The first window of subject 1's first run is the raw signal from its first event on.
    first_session = next(iter(fake_moabb.get_data([1])[1].values()))
    raw = next(iter(first_session.values()))
    event = mne.find_events(raw, shortest_event=0, verbose=False)[0]
    onset = event[0] - raw.first_samp + int(round(start * 128))
    expected = raw.get_data(picks="eeg")[:, onset : onset + epochs.get_data().shape[-1]]
    np.testing.assert_allclose(epochs.get_data()[0], expected)


def test_moabb_paradigm_epochs_and_bad_selection(fake_moabb):
    from moabb.paradigms import LeftRightImagery

    from neurofm.loaders import from_moabb

    epochs = from_moabb(fake_moabb, paradigm=LeftRightImagery(resample=64), subjects=[2])
    assert epochs.info["sfreq"] == 64 and set(epochs.metadata["subject"].astype(int)) == {2}
    assert {"label", "session", "run"} <= set(epochs.metadata.columns)
    with pytest.raises(DataValidationError, match=r"Subjects \[7\] are not in FakeDataset"):
        from_moabb(fake_moabb, subjects=[7])
    with pytest.raises(DataValidationError, match="needs a MOABB data set"):
        from_moabb(object())


def test_moabb_source_in_a_run_config(fake_moabb, tmp_path):
    from neurofm.configs import DataConfig
    from neurofm.loaders import load_data

    params = {
        "n_subjects": 2,
        "n_sessions": 1,
        "n_runs": 1,
        "event_list": ["left_hand", "right_hand"],
        "duration": 30,
        "n_events": 8,
        "channels": ["C3", "Cz", "C4"],
        "seed": 3,
    }
    config = DataConfig(
        source="moabb",
        moabb={"dataset": "FakeDataset", "dataset_params": params},
        tmax=2.0,
        preprocessing={"l_freq": 1.0, "h_freq": 30.0},
    )
    epochs = load_data(config, tmp_path)
    assert set(epochs.metadata["subject"]) == {"001", "002"} and epochs.get_data().shape[-1] == 256
    with pytest.raises(DataValidationError, match="Did you mean 'FakeDataset'"):
        load_data(DataConfig(source="moabb", moabb={"dataset": "FakeDatset"}), tmp_path)
    with pytest.raises(ValueError, match="needs a 'moabb' section"):
        DataConfig(source="moabb")
    with pytest.raises(ValueError, match="needs a 'path'"):
        DataConfig(source="recording")


def test_picking_data_channels_keeps_the_stim_channel_the_events_are_read_from(tmp_path):
    """preprocessing.picks (the MEG starter's [meg, eeg]) must not drop the triggers windows are cut around."""
    import mne

    from neurofm.configs import PreprocessingConfig
    from neurofm.loaders import load_recording

    data = np.random.default_rng(0).standard_normal((4, 3000)) * 10e-6
    data[3] = 0
    data[3, [300, 900, 1500, 2100]] = [1, 2, 1, 2]
    info = mne.create_info(["C3", "Cz", "C4", "STI 014"], 100.0, ["eeg", "eeg", "eeg", "stim"])
    mne.io.RawArray(data, info, verbose=False).save(tmp_path / "trig_raw.fif", verbose=False)
    for picks in ("eeg", ["eeg"], ["C3", "Cz", "C4"]):
        epochs = load_recording(
            tmp_path / "trig_raw.fif",
            preprocessing=PreprocessingConfig(picks=picks),
            tmax=1.0,
            event_id={"left": 1, "right": 2},
        )
        assert list(epochs.metadata["label"]) == ["left", "right", "left", "right"], picks
        assert epochs.copy().pick("data").ch_names == ["C3", "Cz", "C4"]
