"""Messages a first-time user met that said the wrong thing: each now says what is most likely and the fix."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from neurofm.adapt import plan_adaptation
from neurofm.cli import main
from neurofm.configs import CVConfig, ExperimentConfig, PreprocessingConfig, RunConfig
from neurofm.data import SignalInfo, prepare_inputs
from neurofm.exceptions import ConfigError, DataValidationError
from neurofm.models import get_model_spec
from neurofm.simulate import STANDARD_1020_19, simulate_eeg_dataset


@pytest.fixture(scope="module")
def data():
    return simulate_eeg_dataset(n_subjects=3, n_windows_per_class=4, random_state=0)


def _recording(path, sfreq=100.0):
    """A 30 s, 3-channel FIF recording with 'left'/'right' annotations; its path."""
    import mne

    rng = np.random.default_rng(0)
    raw = mne.io.RawArray(
        rng.standard_normal((3, int(30 * sfreq))) * 10e-6,
        mne.create_info(["C3", "Cz", "C4"], sfreq, "eeg"),
        verbose=False,
    )
    raw.set_annotations(mne.Annotations([2, 8, 14, 20], [1] * 4, ["left", "right", "left", "right"]))
    raw.save(path, verbose=False)
    return path


def _run_cli(monkeypatch, capsys, *args):
    """``neurofm ARGS`` as the console script runs it: its exit status and what it printed on stderr."""
    monkeypatch.setattr(sys, "argv", ["neurofm", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err


def _run_yaml(tmp_path, recording, **changes):
    """A run config for ``recording`` as YAML text, with ``changes`` merged into its top level."""
    import yaml

    config = {
        "data": {"source": "recording", "path": str(recording), "tmin": 0.0, "tmax": 1.0},
        "models": {"bp": {"estimator": "bandpower_lr"}},
        "cv": {"strategy": "stratified_kfold", "n_splits": 2},
        "cache_dir": str(tmp_path / "cache"),
        "verbose": False,
    }
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    return yaml.safe_dump(config)


# -- a. volts declared as microvolts --------------------------------------------------------------------------------


def test_volts_declared_as_microvolts_are_diagnosed_as_volts_not_meg(data):
    X, y, meta, info = data  # volts: a typical amplitude of ~1e-5
    with pytest.raises(DataValidationError) as err:
        prepare_inputs(X, y, meta, sfreq=info["sfreq"], ch_names=info["ch_names"], units="uV")
    message = str(err.value)
    assert "declared in 'uV'" in message and "most likely in volts: pass units='V'" in message
    assert "MEG" not in message and "tesla" not in message


def test_numbers_of_meg_size_declared_as_volts_keep_the_meg_diagnosis(data):
    X, y, meta, info = data
    with pytest.raises(DataValidationError, match=r"look like MEG in tesla.*units=\['T', 'T/m', 'V'"):
        prepare_inputs(X * 1e-8, y, meta, sfreq=info["sfreq"], ch_names=info["ch_names"], units="V")
    # Channels named MEG keep it too, whatever the size of their numbers.
    names = [f"MEG{i:04d}" for i in range(X.shape[1])]
    with pytest.raises(DataValidationError, match="look like MEG in tesla"):
        prepare_inputs(X, y, meta, sfreq=info["sfreq"], ch_names=names, units="uV")


# -- b. the units record -----------------------------------------------------------------------------------------


def _step(plan, name):
    return next(step["detail"] for step in plan.steps if step["step"] == name)


def test_units_record_names_each_operation_with_its_factor():
    names = tuple(STANDARD_1020_19)
    volts = SignalInfo(sfreq=200.0, ch_names=names, units=("V",) * len(names))
    units = _step(plan_adaptation(get_model_spec("labram"), volts, 800), "units")
    assert units == "volts to microvolts (x1e6), then divided by 100 (the model's input scale)"
    assert "multiplied by 0.01" not in units
    micro = SignalInfo(sfreq=200.0, ch_names=names, units=("uV",) * len(names))
    assert _step(plan_adaptation(get_model_spec("eegpt"), micro, 800), "units") == (
        "microvolts as they are, then divided by 1000 (the model's input scale)"
    )


# -- c. the passband note knows how the windows were filtered --------------------------------------------------------


def _passband_note(passband, key="labram", sfreq=256.0):
    names = tuple(STANDARD_1020_19)
    info = SignalInfo(sfreq=sfreq, ch_names=names, units=("V",) * len(names), passband=passband)
    return _step(plan_adaptation(get_model_spec(key), info, int(4 * sfreq)), "passband_note")


def test_windows_filtered_within_the_models_band_get_no_advice_to_filter():
    note = _passband_note((1.0, 40.0))  # LaBraM: pretrained on 0.1-75 Hz
    assert "already filtered to 1-40 Hz, within 0.1-75 Hz: nothing to filter" in note
    assert "filter the continuous recordings" not in note


def test_windows_filtered_in_part_are_told_what_remains():
    note = _passband_note((0.3, 128.0))  # high-passed only; resampled to LaBraM's 200 Hz, 75-100 Hz remain
    assert "remains 75-100 Hz" in note and "h_freq: 75" in note and "raw.filter(None, 75)" in note
    assert "l_freq" not in note and "below 0.1 Hz" not in note
    unfiltered = _passband_note((0.0, 128.0))
    assert "not band-passed" in unfiltered and "below 0.1 Hz (no high-pass) and 75-100 Hz" in unfiltered


def test_windows_of_unknown_filtering_get_conditional_advice():
    note = _passband_note(None)
    assert "not told how these windows were filtered: if they were not band-passed to 0.1-75 Hz" in note


def test_the_runs_preprocessing_reaches_the_passband_note(tmp_path):
    """What a run's loader filtered travels with the epochs (info) into SignalInfo, then into the plan."""
    from neurofm.estimators.frozen import FoundationEmbedder
    from neurofm.loaders import load_recording

    epochs = load_recording(
        _recording(tmp_path / "rec_raw.fif"), preprocessing=PreprocessingConfig(l_freq=1.0, h_freq=40.0), tmax=1.0
    )
    info = prepare_inputs(epochs, epochs.metadata["label"].to_numpy()).info
    assert info.passband == pytest.approx((1.0, 40.0))
    embedder = FoundationEmbedder(
        model_key="labram",
        weights="random",
        sfreq=info.sfreq,
        ch_names=list(info.ch_names),
        passband=info.passband,
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    note = _step(embedder.check_input((len(epochs), len(info.ch_names), 100)).plan, "passband_note")
    assert "nothing to filter" in note and "filter the continuous recordings" not in note


def test_a_run_config_s_filtering_reaches_the_recorded_passband_note(tmp_path):
    """neurofm run: the loader's band-pass travels through the experiment to the adaptation it records."""
    import json

    import yaml

    from neurofm.run import run_config

    recording = _recording(tmp_path / "rec_raw.fif")
    probe = {
        "backbone": {
            "model_key": "labram",
            "weights": "random",
            "batch_size": 4,
            "model_kwargs": get_model_spec("labram").tiny_kwargs,
        }
    }
    band = {"preprocessing": {"l_freq": 1.0, "h_freq": 40.0}}
    text = _run_yaml(tmp_path, recording, models={"probe": probe}, data=band)
    (tmp_path / "run.yaml").write_text(text)
    result, _ = run_config(tmp_path / "run.yaml", output_dir=tmp_path / "out")
    adaptations = result.get_model_artifacts(artifact_type="input_adaptation", model="probe")
    notes = json.dumps(adaptations["ArtifactValue"].tolist())
    assert "already filtered to 1-40 Hz" in notes and "nothing to filter" in notes, yaml.safe_dump(notes)


# -- d. YAML: syntax errors name file, line and column; typos get a suggestion --------------------------------------


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("models:\n  m:\n    estimator: LogisticRegression\ncv: n_splits: 3\n")
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_yaml(path)
    message = str(err.value)
    assert f"The config in {path} is not valid YAML at line 4, column 13" in message
    assert "line 4 reads 'cv: n_splits: 3'" in message and "<unicode string>" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metircs: [accuracy]\n", "metircs: Extra inputs are not permitted; did you mean 'metrics'? (line 3)"),
        ("cv: {strategy: kfold, n_split: 3}\n", "cv.n_split: Extra inputs are not permitted; did you mean 'n_splits'?"),
        (
            "models:\n  fm: {backbone: {model_key: cbramod, weigths: random}}\n",
            "backbone.weigths: Extra inputs are not permitted; did you mean 'weights'? (line 2)",
        ),
    ],
)
def test_yaml_key_typos_get_did_you_mean_and_the_file(tmp_path, text, expected):
    path = tmp_path / "exp.yaml"
    models = "" if text.startswith("models") else "models:\n  m: {estimator: LogisticRegression}\n"
    path.write_text(models + text)
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_yaml(path)
    assert f"Invalid ExperimentConfig in {path}" in str(err.value)
    assert expected in str(err.value)


def test_python_config_typos_get_did_you_mean():
    with pytest.raises(ValidationError, match=r"metircs\s+Extra inputs are not permitted; did you mean 'metrics'\?"):
        ExperimentConfig(models={"m": {"estimator": "LogisticRegression"}}, metircs=["accuracy"])
    with pytest.raises(ValidationError, match=r"n_split\s+Extra inputs are not permitted; did you mean 'n_splits'\?"):
        CVConfig(strategy="kfold", n_split=3)
    # Nothing close: pydantic's message as it was, other errors of the same config unchanged.
    with pytest.raises(ValidationError) as err:
        CVConfig(strategy="kfold", n_splits=1, zzz=3)
    assert "did you mean" not in str(err.value) and "greater than or equal to 2" in str(err.value)


# -- e. y given as a column name -------------------------------------------------------------------------------------


@pytest.mark.parametrize("y", ["label", 3])
def test_a_scalar_y_is_told_to_be_the_labels_array(data, y):
    X, _, meta, info = data
    with pytest.raises(DataValidationError) as err:
        prepare_inputs(X, y, meta, **info)
    message = str(err.value)
    assert f"y must be the labels array, one label per window ({len(X)} windows)" in message
    assert "y=meta['label'].to_numpy()" in message and "data.label" in message
    assert "shape ()" not in message


# -- f. and the CLI: a missing group column, wrong event names, exit status 2 -----------------------------------------


def test_run_names_the_group_key_field_and_the_loaders_columns(tmp_path, monkeypatch, capsys):
    recording = _recording(tmp_path / "rec_raw.fif")
    config = tmp_path / "run.yaml"
    config.write_text(
        _run_yaml(tmp_path, recording, cv={"strategy": "group_kfold", "group_key": "subject", "n_splits": 2})
    )
    code, err = _run_cli(monkeypatch, capsys, "run", config)
    assert code == 2
    assert "cv.group_key 'subject'" in err and "['label', 'recording']" in err
    assert "sample_metadata" not in err and "Traceback" not in err


def test_run_with_event_names_the_file_lacks_exits_2_listing_its_events(tmp_path, monkeypatch, capsys):
    recording = _recording(tmp_path / "rec_raw.fif")
    config = tmp_path / "run.yaml"
    config.write_text(_run_yaml(tmp_path, recording, data={"event_id": {"lft": 1, "rgt": 2}}))
    code, err = _run_cli(monkeypatch, capsys, "run", config)
    assert code == 2 and err.startswith("Error (DataValidationError): ")
    assert "None of the events ['lft', 'rgt']" in err and "name the events ['left', 'right']" in err
    assert "data.event_id" in err and "Could not find any of the events" not in err
    assert len(err.strip().splitlines()) == 1


def test_run_with_a_yaml_syntax_error_exits_2_naming_the_line(tmp_path, monkeypatch, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("models:\n  bp: {estimator: bandpower_lr\ndata: {source: recording, path: x.fif}\n")
    code, err = _run_cli(monkeypatch, capsys, "run", config)
    assert code == 2 and "Error (ConfigError)" in err and f"{config} is not valid YAML at line 3, column 5" in err


@pytest.mark.filterwarnings("ignore:Invalid tag:RuntimeWarning")  # MNE reads the garbage, then says so
def test_run_with_a_file_mne_cannot_read_exits_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "rec_raw.fif").write_text("not a recording")
    config = tmp_path / "run.yaml"
    config.write_text(_run_yaml(tmp_path, tmp_path / "rec_raw.fif"))
    code, err = _run_cli(monkeypatch, capsys, "run", config)
    assert code == 2 and "MNE could not read" in err and "Traceback" not in err


def test_report_on_a_folder_without_results_exits_2(tmp_path, monkeypatch, capsys):
    code, err = _run_cli(monkeypatch, capsys, "report", tmp_path)
    assert code == 2 and "is not a saved neurofm result" in err and "Traceback" not in err


def test_run_config_typo_in_yaml_suggests_the_field(tmp_path):
    recording = _recording(tmp_path / "rec_raw.fif")
    config = tmp_path / "run.yaml"
    config.write_text(_run_yaml(tmp_path, recording, data={"preprocesing": {"l_freq": 1.0}}))
    with pytest.raises(ConfigError, match=r"data\.preprocesing: Extra inputs are not permitted; did you mean"):
        RunConfig.from_yaml(config)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"preprocessing": {"picks": ["C3", "Oz"]}},
            r"preprocessing.picks=\['C3', 'Oz'\].*its channels are \['C3', 'Cz', 'C4'\]",
        ),
        ({"preprocessing": {"h_freq": 80.0}}, r"h_freq=80 Hz is not below the Nyquist frequency \(50 Hz\)"),
        ({"preprocessing": {"l_freq": 30.0, "h_freq": 20.0}}, r"l_freq=30 Hz is not below h_freq=20 Hz"),
        ({"tmax": 100.0}, r"No window fits: 0 to 100 s around each event runs past the recording's ends"),
    ],
)
def test_run_with_settings_the_recording_cannot_take_exits_2_saying_what_it_has(
    tmp_path, monkeypatch, capsys, data, expected
):
    recording = _recording(tmp_path / "rec_raw.fif")
    (tmp_path / "run.yaml").write_text(_run_yaml(tmp_path, recording, data=data))
    code, err = _run_cli(monkeypatch, capsys, "run", tmp_path / "run.yaml", "--no-report")
    assert code == 2 and re.search(expected, err) and "Traceback" not in err, err
