"""MEG and MEG+EEG windows on a real Neuromag sensor layout through the same workflow as EEG."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA

from neurofm import Experiment
from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
)
from neurofm.data import prepare_inputs
from neurofm.exceptions import AdaptationError, DataValidationError
from neurofm.models import get_model_spec

SAMPLE = SHARED_DATA / "meg" / "sample_audvis_trunc_raw_sss.fif"
pytestmark = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"the MNE sample MEG recording is not at {SAMPLE}")
# Typical amplitudes of each sensor type in SI units (see neurofm.adapt.MEG_TYPICAL_STD).
TYPICAL = {"mag": 190e-15, "grad": 3.6e-12, "eeg": 16e-6}


@pytest.fixture(scope="module")
def meg_epochs():
    """16 windows of 1 s on the sample recording's info: MEG (mag + grad) and EEG, two classes, two subjects."""
    import mne

    info = mne.io.read_info(SAMPLE, verbose="error")
    picks = mne.pick_types(info, meg=True, eeg=True, exclude=[])
    info = mne.pick_info(info, picks)
    types = info.get_channel_types()
    rng = np.random.default_rng(0)
    n, n_times = 16, int(round(info["sfreq"]))
    scale = np.array([TYPICAL[t] for t in types])
    data = rng.standard_normal((n, len(types), n_times)) * scale[None, :, None]
    y = np.array(["left", "right"] * (n // 2))
    t = np.arange(n_times) / info["sfreq"]
    data[y == "right"] += 0.5 * scale[None, :, None] * np.sin(2 * np.pi * 10 * t)[None, None, :]
    epochs = mne.EpochsArray(data, info, verbose="error")
    epochs.metadata = __import__("pandas").DataFrame({"Subject": np.repeat([1, 2], n // 2), "label": y})
    return epochs, y


def _counts(epochs, **kinds):
    import mne

    return len(mne.pick_types(epochs.info, exclude="bads", **kinds))


def _probe(key="cbramod"):
    return FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key=key, weights="random", batch_size=8, model_kwargs=get_model_spec(key).tiny_kwargs
        ),
        head=ClassicalModelConfig(estimator="LogisticRegression"),
    )


def _above_chance(result):
    """Each held-out subject's 8 windows (4 per class, chance 0.5) decoded with at most 2 errors.

    The right class carries a 10 Hz rhythm of half the noise amplitude on every sensor; measured: 1.0 on both folds
    (CBraMod and LUNA probes). A pipeline that lost the signal (MEG left at 1e-13, sensors misplaced, labels
    shuffled) guesses: at most 2 errors in 8 on both folds by chance has probability (37 / 256)^2 = 0.02.
    """
    scores = result.scores.query("Metric == 'balanced_accuracy'")["Value"]
    assert len(scores) == 2 and (scores >= 0.75).all(), scores.tolist()


def _by_subject(n_splits=2):
    return CVConfig(strategy="stratified_group_kfold", n_splits=n_splits, group_key="Subject")


def _config(tmp_path, models, **kw):
    kw.setdefault("cv", _by_subject())
    return ExperimentConfig(
        models=models, metrics=["balanced_accuracy"], cache_dir=str(tmp_path / "cache"), verbose=False, **kw
    )


def test_meg_and_eeg_epochs_go_in_unchanged_and_the_sensors_kept_are_recorded(meg_epochs, tmp_path):
    epochs, y = meg_epochs
    result = Experiment(_config(tmp_path, {"probe": _probe()})).run(epochs, y)
    kept = result.meta["signal"]["sensor_types"]
    assert kept == {
        "grad": _counts(epochs, meg="grad"),
        "mag": _counts(epochs, meg="mag"),
        "eeg": _counts(epochs, meg=False, eeg=True),
    }  # default: every EEG and MEG channel, bads excluded
    _above_chance(result)
    units = result.get_model_artifacts(artifact_type="input_adaptation").query("ArtifactKey == 'units'")
    assert "tesla to EEG-equivalent microvolts" in units["ArtifactValue"].iloc[0]


@pytest.mark.parametrize(
    ("sensor_types", "expected"),
    [
        (["grad"], {"grad"}),
        (["mag"], {"mag"}),
        (["meg"], {"mag", "grad"}),
        (["eeg", "mag"], {"eeg", "mag"}),
    ],
)
def test_sensor_types_pick_channels(meg_epochs, sensor_types, expected):
    epochs, y = meg_epochs
    inputs = prepare_inputs(epochs, y, sensor_types=sensor_types)
    assert set(inputs.info.sensor_types) == expected
    assert (
        inputs.X.shape[1]
        == len(inputs.info.ch_names)
        == sum(_counts(epochs, meg=kind if kind != "eeg" else False, eeg=kind == "eeg") for kind in expected)
    )


def test_an_eeg_montage_model_refuses_meg_and_names_the_models_that_take_it(meg_epochs, tmp_path, monkeypatch):
    import neurofm.embed

    def never(*args, **kwargs):
        raise AssertionError("no window may be embedded before the refusal")

    monkeypatch.setattr(neurofm.embed, "embed_windows", never)
    epochs, y = meg_epochs
    with pytest.raises(AdaptationError, match=r"'labram' takes only eeg.*cbramod.*codebrain.*sensor_types=\['eeg'\]"):
        Experiment(
            _config(tmp_path, {"bp": ClassicalModelConfig(estimator="bandpower_lr"), "labram": _probe("labram")})
        ).run(epochs, y)


def test_asking_for_absent_sensor_types_fails_before_any_compute(meg_epochs, tmp_path):
    epochs, y = meg_epochs
    meg_only = epochs.copy().pick("meg")
    with pytest.raises(DataValidationError, match=r"asks for \['eeg'\].*'mag': 102"):
        Experiment(_config(tmp_path, {"probe": _probe()}, sensor_types=["eeg"])).run(meg_only, y)
    assert not (tmp_path / "cache").exists()


def test_numpy_windows_with_per_channel_units_are_typed_by_their_units():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, 3, 200)) * np.array([1e-13, 1e-12, 1e-5])[None, :, None]
    inputs = prepare_inputs(
        X,
        [0, 1, 0, 1],
        sfreq=200.0,
        ch_names=["MEG0111", "MEG0112", "EEG001"],
        units=["T", "T/m", "V"],
        sensor_types=["meg"],
    )
    assert inputs.info.sensor_types == ("mag", "grad") and inputs.X.shape == (4, 2, 200)


def test_a_lazy_source_picks_the_same_channels_as_memory(meg_epochs, tmp_path):
    epochs, y = meg_epochs
    data = epochs.get_data().astype(np.float32)
    np.save(tmp_path / "w.npy", data)
    names = epochs.ch_names
    units = ["V" if t == "eeg" else "T" if t == "mag" else "T/m" for t in epochs.get_channel_types()]
    lazy = prepare_inputs(
        np.load(tmp_path / "w.npy", mmap_mode="r"),
        y,
        sfreq=epochs.info["sfreq"],
        ch_names=names,
        units=units,
        sensor_types=["grad"],
    )
    memory = prepare_inputs(data, y, sfreq=epochs.info["sfreq"], ch_names=names, units=units, sensor_types=["grad"])
    np.testing.assert_array_equal(lazy.X.to_array(), memory.X)
    assert lazy.X.block(3, 9).read(0, 6).shape == (6, memory.X.shape[1], memory.X.shape[2])


def test_position_aware_models_place_sensors_where_the_recording_says(meg_epochs):
    """REVE and LUNA take MEG with the positions of the recording's info: MEG moved to the head frame, never a
    download; then to the frame of REVE's position bank for REVE (LUNA was pretrained in the head frame)."""
    import mne

    from neurofm.adapt import plan_adaptation
    from neurofm.montage import head_to_template

    epochs, y = meg_epochs
    inputs = prepare_inputs(epochs, y)
    plan = plan_adaptation(get_model_spec("reve"), inputs.info, inputs.X.shape[-1])
    assert plan.target.n_chans == len(inputs.info.ch_names)  # every MEG and EEG sensor has a position
    assert "366 from the recording's info" in next(s["detail"] for s in plan.steps if s["step"] == "positions")
    mag = mne.pick_types(epochs.info, meg="mag", exclude="bads")[0]
    head = mne.transforms.apply_trans(epochs.info["dev_head_t"], epochs.info["chs"][mag]["loc"][:3])
    np.testing.assert_allclose(plan.target.positions[epochs.ch_names[mag]], head_to_template(head), atol=1e-6)
    luna = plan_adaptation(get_model_spec("luna"), inputs.info, inputs.X.shape[-1])
    np.testing.assert_allclose(luna.target.positions[epochs.ch_names[mag]], head, atol=1e-6)

    module = get_model_spec("reve").build(plan.target, **get_model_spec("reve").tiny_kwargs)
    np.testing.assert_allclose(
        module.default_pos.numpy(), [plan.target.positions[n] for n in plan.target.ch_names], atol=1e-6
    )

    moved = epochs.copy()
    with moved.info._unlock():
        moved.info["chs"][mag]["loc"][:3] += 0.01
    replanned = plan_adaptation(get_model_spec("reve"), prepare_inputs(moved, y).info, inputs.X.shape[-1])
    assert replanned.describe() != plan.describe()  # positions are part of the cache key


def test_meg_without_positions_is_refused_by_a_position_model_before_any_compute():
    from neurofm.adapt import plan_adaptation

    rng = np.random.default_rng(2)
    X = rng.standard_normal((4, 2, 400)) * np.array([1e-13, 1e-12])[None, :, None]
    inputs = prepare_inputs(X, [0, 1, 0, 1], sfreq=200.0, ch_names=["MEG0111", "MEG0112"], units=["T", "T/m"])
    with pytest.raises(AdaptationError, match="needs sensor positions.*pass mne.Epochs whose info holds"):
        plan_adaptation(get_model_spec("luna"), inputs.info, 400)


def test_a_continuous_recording_is_refused_with_the_way_to_cut_windows():
    import mne

    raw = mne.io.read_raw_fif(SAMPLE, verbose="error")
    with pytest.raises(DataValidationError, match=r"continuous recording.*windows_from_raw"):
        prepare_inputs(raw, None)


def test_meg_declared_as_volts_is_refused(meg_epochs):
    """One unit for a MEG+EEG array would scale the magnetometers as EEG: refused, naming per-channel units."""
    epochs, y = meg_epochs
    with pytest.raises(DataValidationError, match=r"less than a nanovolt.*units=\['T', 'T/m', 'V'"):
        prepare_inputs(epochs.get_data(), y, sfreq=epochs.info["sfreq"], ch_names=epochs.ch_names, units="V")


def test_a_run_config_asking_for_meg_keeps_meg_when_reading_files():
    from neurofm.configs import RunConfig

    base = {
        "models": {"bp": {"kind": "classical", "estimator": "bandpower_lr"}},
        "sensor_types": ["meg"],
        "data": {"source": "recording", "path": "x.fif", "window": 1.0},
    }
    with pytest.raises(ValueError, match=r"picks is 'eeg', which drops MEG.*\[meg, eeg\]"):
        RunConfig.model_validate(base)
    ok = RunConfig.model_validate({**base, "data": {**base["data"], "preprocessing": {"picks": ["meg", "eeg"]}}})
    assert ok.sensor_types == ["meg"]


@pytest.fixture(scope="module")
def simulated_meg_eeg():
    """Four simulated subjects on the sample recording's layout: MEG at its rank after SSS, EEG, two classes."""
    import mne

    from neurofm.simulate import simulate_meg_eeg_epochs

    epochs = simulate_meg_eeg_epochs(
        mne.io.read_info(SAMPLE, verbose="error"), n_subjects=4, n_windows_per_class=12, random_state=0
    )
    return epochs, epochs.metadata["label"].to_numpy(dtype=str)


def test_simulated_meg_eeg_is_decoded_above_chance_by_a_probe_lora_and_a_baseline(simulated_meg_eeg, tmp_path):
    from neurofm.configs import CheckpointConfig, LoRAConfig, NeuralFineTuneConfig, TrainerConfig
    from neurofm.results import ExperimentResult

    epochs, y = simulated_meg_eeg
    tiny = get_model_spec("cbramod").tiny_kwargs
    # The class lives in which hemisphere responds: flattened per-sensor features keep it, a mean over
    # 366 sensors would average left and right away.
    probe = FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key="cbramod", weights="random", batch_size=16, pooling="flatten", model_kwargs=tiny
        ),
        head=ClassicalModelConfig(estimator="LogisticRegression"),
    )
    lora = NeuralFineTuneConfig(
        model_key="cbramod",
        weights="random",
        train_mode="lora",
        pooling="flatten",
        lora=LoRAConfig(r=4),
        model_kwargs=tiny,
        checkpoints=CheckpointConfig(save="none"),
        trainer=TrainerConfig(max_epochs=3, batch_size=12, lr=1e-3, early_stopping_patience=None),
    )
    # ts_lr: covariances of 366 sensors at rank ~128, in the tangent space without standardising.
    models = {
        "bandpower_lr": ClassicalModelConfig(estimator="bandpower_lr"),
        "probe": probe,
        "lora": lora,
        "ts_lr": ClassicalModelConfig(estimator="ts_lr"),
    }
    result = Experiment(_config(tmp_path, models, cv=_by_subject(4))).run(epochs, y, output_dir=tmp_path / "out")
    scores = result.summary().set_index("Model")["mean"]
    assert (scores[list(models)] > 0.6).all(), scores  # four held-out subjects, 24 windows each, chance 0.5
    assert result.meta["signal"]["sensor_types"] == {"grad": 204, "mag": 102, "eeg": 60}

    # The cache and the results behave exactly as for EEG: a rerun reads every embedding back and
    # gives the same scores, and the results load back from the output folder.
    again = Experiment(_config(tmp_path, {"probe": probe}, cv=_by_subject(4))).run(epochs, y)
    hits = again.get_model_artifacts(artifact_type="embedding_cache", model="probe").query("ArtifactKey == 'hits'")
    assert int(hits["ArtifactValue"].iloc[0]) == len(y)
    assert again.summary().set_index("Model")["mean"]["probe"] == scores["probe"]
    loaded = ExperimentResult.load(tmp_path / "out")
    np.testing.assert_array_equal(loaded.scores["Value"], result.scores["Value"])


def test_the_covariance_baseline_projects_meg_onto_its_rank_after_sss(simulated_meg_eeg):
    """306 MEG channels after SSS carry about 70 signals: ts_lr keeps those and drops the empty directions."""
    from neurofm.estimators.classical import build_window_estimator

    epochs, y = simulated_meg_eeg
    inputs = prepare_inputs(epochs, y, sensor_types=["meg"])
    fitted = build_window_estimator("ts_lr", {}, inputs.info.sfreq, 0, units=inputs.info.units).fit(inputs.X, y)
    assert 55 <= fitted.named_steps["rankprojection"].rank_ <= 85 < inputs.X.shape[1]


def test_positions_reach_the_backbone_estimators_of_an_experiment(meg_epochs, tmp_path):
    """The experiment hands the recording's positions to LUNA's embedder: MEG is placed, not refused."""
    epochs, y = meg_epochs
    result = Experiment(_config(tmp_path, {"luna": _probe("luna")})).run(epochs, y)
    _above_chance(result)
    steps = result.get_model_artifacts(artifact_type="input_adaptation").set_index("ArtifactKey")["ArtifactValue"]
    assert "366 from the recording's info" in steps["positions"]


def test_positions_of_numpy_windows_are_checked_and_kept():
    X = np.random.default_rng(3).standard_normal((4, 2, 200)) * 1e-5
    kw = dict(sfreq=200.0, ch_names=["Cz", "X1"], units="V")
    info = prepare_inputs(X, [0, 1, 0, 1], positions=[(0.0, 0.0, 0.1), None], **kw).info
    assert info.positions == ((0.0, 0.0, 0.1), None)
    with pytest.raises(DataValidationError, match="positions has 1 entries but X has 2 channels"):
        prepare_inputs(X, [0, 1, 0, 1], positions=[(0.0, 0.0, 0.1)], **kw)
    with pytest.raises(DataValidationError, match=r"positions\[1\] must be 3 finite numbers"):
        prepare_inputs(X, [0, 1, 0, 1], positions=[None, (0.0, float("nan"), 0.1)], **kw)


def test_numpy_meg_with_positions_runs_like_the_epochs_it_came_from(meg_epochs, tmp_path):
    """positions= places numpy MEG for LUNA; rounded like info positions, the signal (and cache key) is the same."""
    epochs, y = meg_epochs
    from_epochs = prepare_inputs(epochs, y).info
    unrounded = [None if p is None else tuple(np.asarray(p) + 1e-9) for p in from_epochs.positions]
    as_numpy = dict(sfreq=epochs.info["sfreq"], ch_names=list(from_epochs.ch_names), units=list(from_epochs.units))
    info = prepare_inputs(epochs.get_data(picks=list(from_epochs.ch_names)), y, positions=unrounded, **as_numpy).info
    assert info.to_dict() == from_epochs.to_dict()

    config = _config(tmp_path, {"luna": _probe("luna")})
    direct = Experiment(config).run(epochs, y)
    numpy_run = Experiment(config).run(
        epochs.get_data(picks=list(from_epochs.ch_names)), y, epochs.metadata, positions=unrounded, **as_numpy
    )
    assert numpy_run.scores["Value"].tolist() == direct.scores["Value"].tolist()
    with pytest.raises(DataValidationError, match="positions given together with mne.Epochs"):
        prepare_inputs(epochs, y, positions=unrounded)
