"""Each backbone receives what its published weights saw in pretraining (issue 20).

Every other test runs on random weights, where a wrong input convention never
shows in a score; these pin each convention to its source (the model's
``sources`` in the registry, ``docs/fidelity.md``).
"""

from __future__ import annotations

import numpy as np
import pytest

from neurofm.adapt import plan_adaptation
from neurofm.data import SignalInfo
from neurofm.exceptions import AdaptationError
from neurofm.models import get_model_spec


def _info(names, sfreq=256.0):
    return SignalInfo(sfreq=sfreq, ch_names=tuple(names), units=("uV",) * len(names))


_NAMES = ("Fz", "Cz", "Pz", "C3", "C4", "O1", "O2", "Oz", "EOG")  # EOG is in no vocabulary


@pytest.mark.parametrize("key", ["eegpt", "signaljepa"])
def test_average_referenced_models_get_the_average_of_the_channels_they_receive(key):
    spec = get_model_spec(key)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, len(_NAMES), 512)) * 10.0
    X += 200.0 * rng.standard_normal((3, 1, 512))  # a common mode, as a mastoid or Cz reference leaves
    sfreq = spec.sfreq  # no resampling: the adapted window is the input, re-referenced and scaled
    n = 512 - 512 % (spec.patch_size or 1)
    plan = plan_adaptation(spec, _info(_NAMES, sfreq), n)
    upper = [name.upper() for name in _NAMES]
    fed = [upper.index(name.upper()) for name in plan.target.ch_names]  # in the model's own order
    assert sorted(fed) == [i for i, name in enumerate(_NAMES) if name != "EOG"]
    expected = (X[:, fed, :n] - X[:, fed, :n].mean(axis=1, keepdims=True)) * spec.amplitude_scale
    np.testing.assert_allclose(plan.apply(X[..., :n]), expected, rtol=1e-5, atol=1e-5 * spec.amplitude_scale)
    assert "re-referenced to the average of the 8 channels" in str(plan.steps)
    kept = plan_adaptation(spec, _info(_NAMES, sfreq), n, {"reference": "as_recorded"})
    np.testing.assert_allclose(kept.apply(X[..., :n]), X[:, fed, :n] * spec.amplitude_scale, rtol=1e-5)
    assert "kept as recorded (reference='as_recorded')" in str(kept.steps)
    assert plan.describe() != kept.describe()  # so the embedding cache never serves one for the other
    with pytest.raises(AdaptationError, match="average of 1 channel is the channel itself"):
        plan_adaptation(spec, _info(["Cz"], sfreq), n)


def test_models_pretrained_as_recorded_are_not_re_referenced():
    for key in ("labram", "cbramod", "codebrain", "luna", "reve"):
        plan = plan_adaptation(get_model_spec(key), _info(_NAMES[:8], 200.0), 800)
        assert not any(step["step"] == "reference" for step in plan.steps), key


def test_eegpt_never_feeds_the_four_names_it_was_not_trained_on():
    spec = get_model_spec("eegpt")
    names = ("AF7", "AF8", "PO5", "PO6", "Fz", "Cz", "Pz")
    with pytest.warns(UserWarning, match=r"'eegpt' does not receive \['AF7', 'AF8', 'PO5', 'PO6'\]: .* never trained"):
        plan = plan_adaptation(spec, _info(names), 512)
    assert plan.target.ch_names == ("FZ", "CZ", "PZ")
    step = next(s["detail"] for s in plan.steps if "never trained" in s["detail"])
    assert all(name in step for name in ("AF7", "AF8", "PO5", "PO6"))
    fed = plan_adaptation(spec, _info(names), 512, {"untrained_channels": "feed"})
    assert set(fed.target.ch_names) == {name.upper() for name in names}
    assert "fed the recorded signal (untrained_channels='feed')" in str(fed.steps)
    with (
        pytest.raises(
            AdaptationError,
            match=r"never trained on any of the input channels it knows \(\['AF7', 'PO6'\]\)"
            r".*adaptation=\{'untrained_channels': 'feed'\}",
        ),
        pytest.warns(UserWarning),
    ):
        plan_adaptation(spec, _info(("AF7", "PO6", "TP9")), 512)


def test_unknown_adaptation_options_are_refused():
    from neurofm.configs import FoundationEmbeddingModelConfig

    with pytest.raises(Exception, match="reference"):
        plan_adaptation(get_model_spec("eegpt"), _info(_NAMES), 512, {"reference": "mastoids"})
    with pytest.raises(Exception, match="extra"):
        FoundationEmbeddingModelConfig(model_key="eegpt", adaptation={"referenc": "as_recorded"})


def test_eegpt_patches_do_not_overlap_unless_the_checkpoint_says_so(tmp_path):
    import json

    from safetensors.torch import save_file

    from neurofm.models import create_backbone

    spec = get_model_spec("eegpt")
    plan = plan_adaptation(spec, _info(_NAMES), 512)
    module = create_backbone("eegpt", plan.target, "random", model_kwargs=spec.tiny_kwargs).module
    assert module.patch_stride == 64
    folder = tmp_path / "eegpt-overlapping"
    folder.mkdir()
    overlapping = create_backbone("eegpt", plan.target, "random", model_kwargs={**spec.tiny_kwargs, "patch_stride": 32})
    assert overlapping.module.patch_stride == 32
    save_file(
        {k: v.contiguous() for k, v in overlapping.module.state_dict().items()}, str(folder / "model.safetensors")
    )
    (folder / "config.json").write_text(json.dumps({**spec.tiny_kwargs, "patch_stride": 32}))
    assert create_backbone("eegpt", plan.target, str(folder)).module.patch_stride == 32


def _template_native(names):
    import warnings

    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        montage = mne.channels.make_standard_montage("standard_1005")  # what REVE's positions.json holds
    return {name: np.asarray(montage.get_positions()["ch_pos"][name]) for name in names}


def _epochs_with_montage(names, digitised=None):
    import mne

    info = mne.create_info(list(names), 200.0, "eeg")
    info.set_montage("standard_1005")
    if digitised is not None:  # only some channels digitised: the others have no position in info
        for ch in info["chs"]:
            if ch["ch_name"] not in digitised:
                ch["loc"][:3] = np.nan
    return mne.EpochsArray(np.zeros((2, len(names), 400)), info, verbose=False)


@pytest.mark.parametrize("digitised", [None, ("Cz", "C3", "Pz")])
def test_reve_gets_its_position_banks_positions_whatever_frame_the_recording_uses(digitised):
    from neurofm.data import prepare_inputs

    names = ("Fz", "Cz", "Pz", "C3", "C4", "O1", "O2", "T7")
    inputs = prepare_inputs(_epochs_with_montage(names, digitised), np.array([0, 1]))
    assert digitised is not None or all(p is not None for p in inputs.info.positions)  # head frame, from info
    plan = plan_adaptation(get_model_spec("reve"), inputs.info, 400)
    bank = _template_native(names)
    for name in names:  # info holds positions in float32: 1 micrometre
        np.testing.assert_allclose(plan.target.positions[name], bank[name], atol=1e-6, err_msg=name)
    assert "template's native frame" in str(plan.steps)
    locs = {ch["ch_name"]: ch["loc"][:3] for ch in plan.target.chs_info()}
    np.testing.assert_allclose(locs["Cz"], bank["Cz"], atol=1e-6)


def test_luna_gets_head_frame_positions_for_recorded_and_template_channels_alike():
    from neurofm.data import prepare_inputs

    names = ("Fz", "Cz", "Pz", "C3", "C4")
    epochs = _epochs_with_montage(names)
    head = {ch["ch_name"]: ch["loc"][:3] for ch in epochs.info["chs"]}  # where MNE puts the montage
    recorded = prepare_inputs(epochs, np.array([0, 1])).info
    by_name = _info(names, 200.0)  # no positions: the template's, by name
    for info in (recorded, by_name):
        plan = plan_adaptation(get_model_spec("luna"), info, 1280)
        for name in names:
            np.testing.assert_allclose(plan.target.positions[name], head[name], atol=1e-6, err_msg=name)


def test_bendr_feeds_zeros_where_its_pretraining_did_and_scales_against_the_tueg_range():
    from neurofm.simulate import STANDARD_1020_19

    spec = get_model_spec("bendr")
    names = [name for name in STANDARD_1020_19 if name not in ("T7", "T8")]  # no need to record them ...
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2, len(STANDARD_1020_19), 1024)) * 20.0
    plan = plan_adaptation(spec, _info(STANDARD_1020_19), 1024)
    out = plan.apply(X)
    t7, t8 = plan.target.ch_names.index("T7"), plan.target.ch_names.index("T8")
    assert np.array_equal(out[:, [t7, t8]], np.zeros((2, 2, 1024), np.float32))  # exactly zero, after normalising
    assert not np.any(out[:, :t7] == 0.0)
    partial = plan_adaptation(spec, _info(names), 1024)  # ... nor to interpolate them
    assert not any(step["step"] == "interpolate_channels" for step in partial.steps)
    fed = plan_adaptation(spec, _info(STANDARD_1020_19), 1024, {"untrained_channels": "feed"}).apply(X)
    assert np.all(fed[:, [t7, t8]] != 0.0)
    # The scale channel: peak-to-peak over the TUEG range 3276.7 - (-1583.93) uV, clipped, mapped to [-1, 1].
    seen = X.copy()
    seen[:, [STANDARD_1020_19.index("T7"), STANDARD_1020_19.index("T8")]] = 0.0  # the zero slots included
    ptp = seen.max(axis=(1, 2)) - seen.min(axis=(1, 2))
    np.testing.assert_allclose(out[:, -1, 0], 2 * np.minimum(ptp / 4860.6258304722666, 1) - 1, rtol=1e-6)


def test_the_published_eegpt_checkpoint_gets_its_pretraining_stride_over_its_config(tmp_path):
    """braindecode uploaded EEGPT with its default patch_stride=32 in config.json; pretraining used 64."""
    import json
    from pathlib import Path

    import huggingface_hub.constants as hfc
    from safetensors.torch import save_file

    from neurofm.models import create_backbone

    spec = get_model_spec("eegpt")
    plan = plan_adaptation(spec, _info(_NAMES), 512)
    module = create_backbone(
        "eegpt", plan.target, "random", model_kwargs={**spec.tiny_kwargs, "patch_stride": 32}
    ).module
    root = Path(hfc.HF_HUB_CACHE) / f"models--{spec.hub_repo.replace('/', '--')}"
    snapshot = root / "snapshots" / ("1" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps({**spec.tiny_kwargs, "patch_stride": 32}))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(snapshot.name)
    assert create_backbone("eegpt", plan.target, None).module.patch_stride == 64
    assert create_backbone("eegpt", plan.target, None, model_kwargs={"patch_stride": 32}).module.patch_stride == 32


def _reve_windows():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((6, 5, 400)) * 10.0 + 50.0  # an offset, as a DC drift leaves in a recording
    X[1] *= 3.0  # a loud window of recording 0 (an artefact): its amplitude should survive normalising
    return X.astype(np.float32), np.array([0, 0, 0, 1, 1, 1])


def test_reve_normalises_with_each_recordings_statistics_when_recordings_are_known():
    from neurofm.adapt import recording_statistics

    spec = get_model_spec("reve")
    names = ("Fz", "Cz", "Pz", "C3", "C4")
    X, recordings = _reve_windows()
    plan = plan_adaptation(spec, _info(names, 200.0), 400, recordings_known=True)
    assert plan.recording_statistics and "each recording's mean and standard deviation" in str(plan.steps)
    stats = recording_statistics(plan, X, recordings)
    for recording in (0, 1):  # over all the recording's windows, per channel, after the linear steps
        adapted = plan.adapt_signal(X[recordings == recording]).transpose(1, 0, 2).reshape(5, -1)
        np.testing.assert_allclose(stats[recording], np.stack([adapted.mean(axis=1), adapted.std(axis=1)]), rtol=1e-12)
    out = plan.apply(X, np.stack([stats[r] for r in recordings]))
    assert 2.5 < out[1].std() / out[0].std() < 3.5  # the loud window stays loud ...
    per_window = plan_adaptation(spec, _info(names, 200.0), 400).apply(X)
    assert abs(per_window[1].std() / per_window[0].std() - 1) < 1e-6  # ... which per-window z-scores erase
    unknown = plan_adaptation(spec, _info(names, 200.0), 400)
    assert not unknown.recording_statistics and "recordings are not known" in str(unknown.steps)
    chosen = plan_adaptation(
        spec, _info(names, 200.0), 400, {"normalization_statistics": "window"}, recordings_known=True
    )
    assert not chosen.recording_statistics and "normalization_statistics='window'" in str(chosen.steps)
    assert len({str(p.describe()) for p in (plan, unknown, chosen)}) == 3  # three cache namespaces


def test_a_reve_embedder_uses_recording_statistics_and_keys_the_cache_on_them(tmp_path):
    from neurofm.estimators.frozen import FoundationEmbedder
    from neurofm.exceptions import ConfigError

    X, recordings = _reve_windows()

    def make():
        return FoundationEmbedder(
            "reve",
            weights="random",
            sfreq=200.0,
            ch_names=["Fz", "Cz", "Pz", "C3", "C4"],
            units="uV",
            cache_dir=str(tmp_path / "cache"),
            verbose=False,
            batch_size=4,
            model_kwargs=get_model_spec("reve").tiny_kwargs,
        )

    by_recording = make().fit(X, recordings=recordings)
    E = by_recording.transform(X, recordings=recordings)
    with pytest.raises(ConfigError, match="give transform the windows' recordings"):
        by_recording.transform(X)
    with pytest.raises(ConfigError, match=r"recordings \['7'\] were not among the windows fit saw"):
        by_recording.transform(X[:1], recordings=[7])
    # The same windows grouped otherwise are other inputs: never served from the first grouping's entries.
    regrouped = make().fit(X, recordings=np.array([0, 0, 1, 1, 1, 1]))
    E2 = regrouped.transform(X, recordings=np.array([0, 0, 1, 1, 1, 1]))
    assert regrouped.cache_hits_ == 0 and not np.allclose(E2[1:], E[1:])
    again = make().fit(X, recordings=recordings)
    np.testing.assert_array_equal(again.transform(X, recordings=recordings), E)
    assert again.cache_hits_ == len(X)
    assert not np.allclose(make().fit(X).transform(X), E)  # each window's own statistics: another embedding


def test_an_experiment_gives_reve_the_recordings_of_its_windows(tmp_path):
    import pandas as pd

    from neurofm import Experiment
    from neurofm.configs import (
        ClassicalModelConfig,
        CVConfig,
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
    )

    rng = np.random.default_rng(5)
    X = (rng.standard_normal((12, 5, 400)) * 10e-6).astype(np.float32)
    y = np.tile([0, 1], 6)
    probe = FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(
            model_key="reve", weights="random", batch_size=4, model_kwargs=get_model_spec("reve").tiny_kwargs
        ),
        head=ClassicalModelConfig(estimator="LogisticRegression"),
    )
    config = ExperimentConfig(
        models={"reve": probe},
        metrics=["accuracy"],
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
        cv=CVConfig(strategy="group_kfold", n_splits=3, group_key="subject"),
    )
    steps = {}
    for column in ("recording", "subject"):  # a 'recording' column names each window's recording
        meta = pd.DataFrame({column: np.repeat(np.arange(6), 2)} | ({"subject": np.repeat(np.arange(6), 2)}))
        result = Experiment(config).run(
            X, y, sample_metadata=meta, sfreq=200.0, ch_names=["Fz", "Cz", "Pz", "C3", "C4"]
        )
        adaptation = result.get_model_artifacts(artifact_type="input_adaptation", model="reve")
        steps[column] = dict(zip(adaptation["ArtifactKey"], adaptation["ArtifactValue"], strict=False))["normalize"]
    assert "each recording's mean and standard deviation" in steps["recording"]
    assert "recordings are not known" in steps["subject"]


def test_every_convention_of_every_model_cites_its_source_and_the_docs_hold_the_registrys_table():
    import runpy
    from pathlib import Path

    from neurofm.models.registry import list_model_keys, model_conventions

    for key in list_model_keys():
        table = model_conventions(key)
        assert {"sfreq", "units", "reference", "passband", "channels", "normalization"} <= set(table["convention"])
        assert all(source.strip() for source in table["source"]), key
    docs = Path(__file__).parents[1] / "docs"
    generated = runpy.run_path(str(docs / "fidelity_table.py"))["fidelity_table"]()
    assert generated in (docs / "fidelity.md").read_text(), "rerun: python docs/fidelity_table.py"
    assert "unconfirmed" in model_conventions("codebrain").set_index("convention").loc["units", "source"]


def test_models_details_prints_each_convention_with_its_source():
    from typer.testing import CliRunner

    from neurofm.cli import app

    result = CliRunner().invoke(app, ["models", "--details", "eegpt"])
    assert result.exit_code == 0, result.output
    assert "reference\n  pretraining: average of the channels" in result.output
    assert "instead:     adaptation.reference: as_recorded" in result.output
    assert (
        "source:      BINE022/EEGPT datasets/pretrain/prepare_pretrain_dataset.py temporal_interpolation"
        in result.output
    )
    assert CliRunner().invoke(app, ["models", "--details", "nope"]).exit_code != 0


def test_a_loaded_recording_names_its_windows_recording(recording):
    from neurofm.loaders import load_recording

    epochs = load_recording(recording, tmin=0.0, tmax=1.0)
    assert set(epochs.metadata["recording"]) == {0} and len(epochs) > 1


def test_bendr_cls_is_the_last_context_vector_as_in_the_authors_classifier(tmp_path):
    from neurofm.estimators.frozen import FoundationEmbedder
    from neurofm.simulate import STANDARD_1020_19

    X = (np.random.default_rng(4).standard_normal((2, 19, 640)) * 20e-6).astype(np.float32)

    def make(pooling):
        return FoundationEmbedder(
            "bendr",
            weights="random",
            pooling=pooling,
            sfreq=160.0,
            ch_names=list(STANDARD_1020_19),
            cache_dir=str(tmp_path / "cache"),
            verbose=False,
            model_kwargs=get_model_spec("bendr").tiny_kwargs,
        ).fit(X)

    embedder = make("cls")
    captured = {}
    module = embedder.backbone_.module
    handle = module.contextualizer.register_forward_hook(lambda _m, _i, out: captured.setdefault("out", out))
    cls = embedder.transform(X)
    handle.remove()
    np.testing.assert_array_equal(cls, captured["out"][: len(X), :, -1].numpy())
    assert make("mean").fingerprint_ != embedder.fingerprint_
    assert "cls_token" in embedder.manifest_ and "cls_token" not in make("mean").manifest_


_LEGACY = {"reference": "as_recorded", "untrained_channels": "feed", "normalization_statistics": "window"}


@pytest.mark.parametrize("key", ["eegpt", "signaljepa", "bendr", "reve", "luna", "cbramod", "labram"])
def test_every_convention_taken_is_part_of_the_cache_key(key):
    """Embeddings made under one convention are never served for another: the plan's description, which the
    embedding cache keys on, changes with each option that changes what the model receives, and only then."""
    from neurofm.simulate import STANDARD_1020_19

    spec = get_model_spec(key)
    names = [*STANDARD_1020_19, "AF7", "PO6"]
    info = _info(names, spec.sfreq)
    n = 4 * int(spec.sfreq)
    rng = np.random.default_rng(6)
    X = rng.standard_normal((2, len(names), n)) * 10.0
    default = plan_adaptation(spec, info, n, recordings_known=True)
    for option, value in _LEGACY.items():
        other = plan_adaptation(spec, info, n, {option: value}, recordings_known=True)
        if spec.normalization_statistics == "recording":  # the same statistics, so that only the option differs
            stats = np.stack([X.mean(axis=(0, 2)), X.std(axis=(0, 2))])[None].repeat(2, axis=0) * spec.amplitude_scale
        else:
            stats = None
        receives_the_same = np.array_equal(default.apply(X, stats), other.apply(X, stats)) and all(
            default.target.positions.get(c) == other.target.positions.get(c) for c in default.target.ch_names
        )
        assert (default.describe() == other.describe()) == receives_the_same, option


def test_a_fine_tuned_reve_normalises_each_side_with_its_own_recordings_statistics(tmp_path):
    import pandas as pd

    from neurofm import Experiment
    from neurofm.adapt import recording_statistics
    from neurofm.configs import CheckpointConfig, CVConfig, ExperimentConfig, NeuralFineTuneConfig, TrainerConfig
    from neurofm.estimators.neural import NeuralFineTuner
    from neurofm.exceptions import ConfigError

    X, recordings = _reve_windows()
    y = np.array([0, 1, 0, 1, 0, 1])
    config = NeuralFineTuneConfig(
        model_key="reve",
        weights="random",
        train_mode="full",
        model_kwargs=get_model_spec("reve").tiny_kwargs,
        trainer=TrainerConfig(max_epochs=1, batch_size=4, validation_fraction=0, early_stopping_patience=None),
        checkpoints=CheckpointConfig(save="none", monitor="train_loss"),
    )
    tuner = NeuralFineTuner(
        config=config,
        sfreq=200.0,
        ch_names=["Fz", "Cz", "Pz", "C3", "C4"],
        units="uV",
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    tuner.fit(X, y, recordings=recordings)
    assert tuner.plan_.recording_statistics
    stats = recording_statistics(tuner.plan_, X, recordings)
    np.testing.assert_array_equal(
        tuner._adapt(X, recordings), tuner.plan_.apply(X, np.stack([stats[r] for r in recordings]))
    )
    with pytest.raises(ConfigError, match="give the windows' recordings here too"):
        tuner.predict(X)
    assert tuner.predict_proba(X, recordings=recordings).shape == (6, 2)
    assert "each recording's mean" in tuner.get_artifact_metadata()["input_adaptation"]["normalize"]

    # In an experiment, the recordings of a 'recording' column reach the fine-tuner on both sides of each fold.
    meta = pd.DataFrame({"recording": np.repeat(np.arange(3), 2)})
    windows = np.concatenate([X, X]).astype(np.float32) * 1e-6
    labels = np.tile([0, 1], 6)
    result = Experiment(
        ExperimentConfig(
            models={"tuned": config},
            metrics=["accuracy"],
            verbose=False,
            cache_dir=str(tmp_path / "cache"),
            cv=CVConfig(strategy="group_kfold", n_splits=3, group_key="recording"),
        )
    ).run(
        windows,
        labels,
        sample_metadata=pd.concat([meta, meta + 3], ignore_index=True),
        sfreq=200.0,
        ch_names=["Fz", "Cz", "Pz", "C3", "C4"],
    )
    steps = result.get_model_artifacts(artifact_type="input_adaptation", model="tuned")
    normalize = steps.query("ArtifactKey == 'normalize'")["ArtifactValue"]
    assert len(normalize) == 3 and all("each recording's mean" in text for text in normalize)
