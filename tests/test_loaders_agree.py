"""Loaders agree and hide nothing: event_id as names or a mapping, classes said aloud, rejections counted per file."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import yaml
from conftest import SHARED_DATA
from pydantic import ValidationError

from neurofm.configs import DataConfig
from neurofm.exceptions import DataValidationError, MissingDependencyError
from neurofm.loaders import load_bids, load_eegmmi, load_recording, rejected_windows
from neurofm.loaders.naming import entity_number, same_entity, subject_id

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real recordings not found at {SHARED_DATA}")


def _recording(path, artefact=False):
    """A 60 s, 3-channel FIF recording with left/right/rest annotations (and a 500 µV artefact at 29.6 s)."""
    import mne

    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 6000)) * 10e-6
    if artefact:
        data[0, 2980:3030] += 500e-6
    raw = mne.io.RawArray(data, mne.create_info(["C3", "Cz", "C4"], 100.0, "eeg"), verbose=False)
    onsets = [2, 8, 14, 20, 26, 29.5, 38, 44]
    names = ["left", "right", "rest", "left", "right", "left", "rest", "right"]
    raw.set_annotations(mne.Annotations(onsets, [1] * len(onsets), names))
    raw.save(path, verbose=False)
    return path


# -- event_id: a list of names or a mapping ----------------------------------------------------------------------


def test_event_id_as_a_list_or_a_mapping_selects_those_events(tmp_path):
    path = _recording(tmp_path / "rec_raw.fif")
    by_list = load_recording(path, tmax=1.0, event_id=["left", "right"])
    by_mapping = load_recording(path, tmax=1.0, event_id={"left": 7, "right": 9})
    assert list(by_list.metadata["label"]) == ["left", "right", "left", "right", "left", "right"]
    assert list(by_mapping.metadata["label"]) == list(by_list.metadata["label"])
    np.testing.assert_array_equal(by_list.get_data(), by_mapping.get_data())
    assert set(by_mapping.events[:, 2]) == {7, 9}  # the mapping's codes number the windows' events
    assert DataConfig(source="recording", path="x", event_id=["left", "right"]).event_id == ["left", "right"]
    with pytest.raises(ValidationError, match="gives the code"):
        DataConfig(source="recording", path="x", event_id={"left": 1, "right": 1})
    with pytest.raises(ValidationError, match="event_id is empty"):
        DataConfig(source="recording", path="x", event_id=[])


def test_a_list_of_names_for_trigger_codes_says_to_give_a_mapping(tmp_path):
    import mne

    info = mne.create_info(["C3", "Cz", "STI"], 100.0, ["eeg", "eeg", "stim"])
    data = np.zeros((3, 2000))
    data[2, [200, 600, 1000]] = [1, 2, 1]
    raw = mne.io.RawArray(data, info, verbose=False)
    from neurofm.loaders import windows_from_raw

    assert len(windows_from_raw(raw, tmax=1.0, event_id=["1"])) == 2
    with pytest.raises(DataValidationError, match=r"carry only the trigger codes \[1, 2\].*\{'left': 1"):
        windows_from_raw(raw, tmax=1.0, event_id=["left"])


@pytest.mark.parametrize(
    ("source", "field", "fix"),
    [
        ("muse_csv", {"event_id": ["face"]}, "Marker0"),
        ("uci_smni", {"event_id": {"s1_obj": 1}}, "stimulus conditions"),
        ("eegmmi", {"window": 2.0}, "set tmin/tmax"),
        ("eegmmi", {"sessions": ["1"]}, "remove data.sessions"),
        ("recording", {"subjects": [1]}, "remove data.subjects"),
        ("muse_csv", {"runs": [1]}, "remove data.runs"),
    ],
)
def test_a_field_the_sources_loader_ignores_is_refused(source, field, fix):
    with pytest.raises(ValidationError, match=rf"data\.{next(iter(field))} does not apply to source '{source}'.*{fix}"):
        DataConfig(source=source, path="x", **field)


def test_moabb_refuses_event_id_and_with_a_paradigm_its_own_window():
    with pytest.raises(ValidationError, match=r"data\.event_id does not apply to source 'moabb'.*paradigm_params"):
        DataConfig(source="moabb", moabb={"dataset": "FakeDataset"}, event_id=["left_hand"])
    with pytest.raises(ValidationError, match=r"data\.tmax does not apply.*paradigm_params: \{tmin"):
        DataConfig(source="moabb", moabb={"dataset": "FakeDataset", "paradigm": "LeftRightImagery"}, tmax=2.0)
    assert DataConfig(source="moabb", moabb={"dataset": "FakeDataset"}, tmax=2.0).tmax == 2.0


@needs_data
def test_eegmmi_honours_event_id():
    root = SHARED_DATA / "eegmmi"
    epochs = load_eegmmi(root, runs=[4], event_id=["left_fist", "right_fist", "rest"])
    counts = epochs.metadata["label"].value_counts().to_dict()
    assert set(counts) == {"left_fist", "right_fist", "rest"} and counts["rest"] > 0
    left = load_eegmmi(root, runs=[4], event_id={"left_fist": 5})
    assert set(left.metadata["label"]) == {"left_fist"} and set(left.events[:, 2]) == {5}
    assert len(left) == counts["left_fist"]
    with pytest.raises(
        DataValidationError, match=r"\['left_fst'\].*choose among \['rest', 'left_fist', 'right_fist'\]"
    ):
        load_eegmmi(root, runs=[4], event_id=["left_fst"])


# -- a class nobody asked for is said aloud ---------------------------------------------------------------------


def test_without_event_id_the_classes_found_are_logged_with_counts(tmp_path, caplog):
    path = _recording(tmp_path / "rec_raw.fif")
    with caplog.at_level("WARNING", logger="neurofm"):
        epochs = load_recording(path, tmax=1.0)
    assert set(epochs.metadata["label"]) == {"left", "right", "rest"}
    assert "3 class(es)" in caplog.text and "'rest': 2" in caplog.text and "'left': 3" in caplog.text
    assert "event_id: [left, rest]" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="neurofm"):
        load_recording(path, tmax=1.0, event_id=["left", "right"])
    assert "No event_id given" not in caplog.text


# -- peak-to-peak rejections, per file, up to the run's result ---------------------------------------------------


def test_rejected_windows_are_counted_per_file_and_reach_the_result(tmp_path, caplog, recwarn):
    path = _recording(tmp_path / "rec_raw.fif", artefact=True)
    with caplog.at_level("INFO", logger="neurofm"):
        epochs = load_recording(path, tmax=1.0, event_id=["left", "right"], reject_peak_to_peak=200e-6)
    assert len(epochs) == 5 and rejected_windows(epochs) == {"rec_raw.fif": 1}
    assert "Peak-to-peak rejection dropped 1 window(s), 5 kept: rec_raw.fif: 1" in caplog.text
    assert not [w for w in recwarn if "drop" in str(w.message).lower()]  # MNE's own chatter stays silent
    assert rejected_windows(load_recording(path, tmax=1.0, event_id=["left"])) == {}

    from neurofm.run import run_config

    config = {
        "data": {
            "source": "recording",
            "path": str(path),
            "tmax": 1.0,
            "event_id": ["left", "right"],
            "reject_peak_to_peak": 200e-6,
        },
        "models": {"bp": {"estimator": "bandpower_lr"}},
        "cv": {"strategy": "stratified_kfold", "n_splits": 2},
        "cache_dir": str(tmp_path / "cache"),
        "verbose": False,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result, _ = run_config(tmp_path / "run.yaml", tmp_path / "out")
    assert result.meta["data"]["rejected"] == {"rec_raw.fif": 1}
    assert result.meta["data"]["n_windows"] == 5


# -- one spelling of subjects, sessions, runs and channels ---------------------------------------------------------


def test_one_spelling_of_entities():
    assert (
        subject_id(1) == subject_id("01") == subject_id("001") == "001" and subject_id("co2a0000364") == "co2a0000364"
    )
    assert entity_number("04") == 4 and entity_number(12) == 12 and entity_number("pre") == "pre"
    assert sorted(entity_number(r) for r in ["12", "4", "08"]) == [4, 8, 12]
    assert same_entity(4, "04") and not same_entity("4", "14") and same_entity("a", "a")


@needs_data
def test_eegmmi_and_its_bids_copy_give_the_same_windows(tmp_path):
    import mne
    import mne_bids

    names = {"T0": "rest", "T1": "left_fist", "T2": "right_fist"}
    for run in (4, 12):
        raw = mne.io.read_raw_edf(SHARED_DATA / "eegmmi" / "S001" / f"S001R{run:02d}.edf", verbose=False)
        ann = raw.annotations
        raw.set_annotations(mne.Annotations(ann.onset, ann.duration, [names[d] for d in ann.description]))
        # Run 4 unpadded, run 12 padded: both must read back as integers, in numeric order.
        path = mne_bids.BIDSPath(
            subject="001", task="imagery", run=str(run).zfill(2 if run == 12 else 1), datatype="eeg", root=tmp_path
        )
        mne_bids.write_raw_bids(raw, path, overwrite=True, verbose=False)  # copies the EDF file unchanged
    common = {"tmin": 0.0, "tmax": 4.0, "reject_peak_to_peak": 800e-6}
    direct = load_eegmmi(SHARED_DATA / "eegmmi", subjects=[1], runs=[12, 4], **common)
    bids = load_bids(tmp_path, subjects=[1], runs=[4, 12], event_id=["left_fist", "right_fist"], **common)
    assert bids.ch_names == direct.ch_names and "FC5" in bids.ch_names
    np.testing.assert_array_equal(bids.get_data(), direct.get_data())
    assert np.array_equal(bids.get_data(), direct.get_data())
    shared = ["label", "subject", "run", "recording"]
    assert bids.metadata[shared].equals(direct.metadata[shared])
    assert list(direct.metadata["run"].unique()) == [4, 12] and direct.metadata["subject"].iloc[0] == "001"
    assert list(bids.metadata[shared].dtypes) == list(direct.metadata[shared].dtypes)
    assert list(rejected_windows(bids).values()) == list(rejected_windows(direct).values())
    assert len(rejected_windows(direct)) == 2


def test_load_bids_without_mne_bids_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mne_bids", None)  # import mne_bids now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'neurofm\[bids\]'"):
        load_bids(tmp_path, tmax=1.0)


def test_rejection_of_every_window_is_one_clear_error_without_mne_warnings(tmp_path, recwarn):
    path = _recording(tmp_path / "rec_raw.fif")
    with pytest.raises(
        DataValidationError, match=r"dropped every window \(6: \{'rec_raw.fif': 6\}\); raise the threshold"
    ):
        load_recording(path, tmax=1.0, event_id=["left", "right"], reject_peak_to_peak=1e-6)
    assert not [w for w in recwarn if "epochs were dropped" in str(w.message)]
