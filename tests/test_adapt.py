"""Input adaptation: channels, units, rates, lengths, derived channels; errors before compute."""

from __future__ import annotations

import numpy as np
import pytest

from neurofm.adapt import plan_adaptation
from neurofm.data import SignalInfo
from neurofm.exceptions import AdaptationError
from neurofm.models import get_model_spec
from neurofm.montage import canonical_name, interpolation_matrix, standard_positions
from neurofm.simulate import STANDARD_1020_19


def info(names, sfreq=160.0, units="V"):
    return SignalInfo(sfreq=sfreq, ch_names=tuple(names), units=tuple([units] * len(names)))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Fc5.", "fc5"), ("EEG FP1-REF", "fp1"), ("T3", "t7"), ("t6", "p8"), (" Cz ", "cz"), ("A1", "a1")],
)
def test_channel_names_are_matched_case_insensitively_and_undecorated(raw, expected):
    assert canonical_name(raw) == expected


def test_units_volts_and_microvolts_give_the_same_model_input():
    spec = get_model_spec("cbramod")
    rng = np.random.default_rng(0)
    X_v = rng.standard_normal((2, 19, 640)) * 1e-5
    plan_v = plan_adaptation(spec, info(STANDARD_1020_19, units="V"), 640)
    plan_uv = plan_adaptation(spec, info(STANDARD_1020_19, units="uV"), 640)
    np.testing.assert_allclose(plan_v.apply(X_v), plan_uv.apply(X_v * 1e6), rtol=1e-5, atol=1e-6)
    # CBraMod expects microvolts / 100: a 10 µV sample becomes 0.1.
    constant = np.full((1, 19, 800), 1e-5)
    out = plan_adaptation(spec, info(STANDARD_1020_19, sfreq=200.0), 800).apply(constant)
    np.testing.assert_allclose(out, 0.1, rtol=1e-5)


def test_resampling_changes_length_and_keeps_a_sine():
    spec = get_model_spec("labram")
    plan = plan_adaptation(spec, info(["Cz"], sfreq=160.0), 640)
    t = np.arange(640) / 160.0
    X = (np.sin(2 * np.pi * 10 * t) * 1e-5)[None, None, :]
    out = plan.apply(X)[0, 0]
    assert out.shape == (800,)
    t2 = np.arange(800) / 200.0
    expected = np.sin(2 * np.pi * 10 * t2) * 0.1
    np.testing.assert_allclose(out[50:-50], expected[50:-50], atol=5e-3)


def test_vocabulary_model_drops_unknown_channels_and_records_it():
    spec = get_model_spec("labram")
    plan = plan_adaptation(spec, info(["FP1", "cz", "EMG_left", "O2"]), 800)
    assert [n.upper() for n in plan.target.ch_names] == ["FP1", "CZ", "O2"]
    assert any(s["step"] == "drop_channels" and "EMG_left" in s["detail"] for s in plan.steps)


def test_no_known_channel_is_an_error():
    with pytest.raises(
        AdaptationError,
        match=r"None of the input channels \['foo', 'bar'\] is in 'eegpt''s channel "
        r"vocabulary .*; rename the channels to standard 10-20 names",
    ):
        plan_adaptation(get_model_spec("eegpt"), info(["foo", "bar"]), 640)


def test_bipolar_derivations_use_old_names_and_positions():
    spec = get_model_spec("biot")
    names = [{"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}.get(n, n) for n in STANDARD_1020_19]
    plan = plan_adaptation(spec, info(names, sfreq=200.0), 800)
    assert plan.target.n_chans == 16
    assert plan.target.ch_names[0] == "FP1-F7"
    rng = np.random.default_rng(1)
    X = rng.standard_normal((1, 19, 800)) * 1e-5
    matrix_only = plan.channel_matrix @ X[0]
    fp1, f7 = names.index("Fp1"), names.index("F7")
    np.testing.assert_allclose(matrix_only[0], (X[0, fp1] - X[0, f7]) * 1e6, rtol=1e-6)
    assert plan.apply(X).shape == (1, 16, 800)


def test_bendr_gets_its_fixed_order_and_a_scale_channel():
    spec = get_model_spec("bendr")
    plan = plan_adaptation(spec, info(STANDARD_1020_19[::-1]), 640)  # reversed input order
    assert plan.target.ch_names[-1] == "SCALE" and plan.target.n_chans == 20
    assert plan.target.sfreq == 256.0 and plan.target.n_times == 1024
    X = np.random.default_rng(2).standard_normal((2, 19, 640)) * np.array([5e-6, 50e-6])[:, None, None]
    out = plan.apply(X)
    assert out[:, :19].min() >= -1.0 - 1e-6 and out[:, :19].max() <= 1.0 + 1e-6
    # The scale channel is constant in time and grows with the window's amplitude.
    assert np.ptp(out[:, 19], axis=-1).max() == 0
    assert out[1, 19, 0] > out[0, 19, 0]


def test_missing_fixed_channels_are_interpolated_and_recorded():
    spec = get_model_spec("bendr")
    names = [n for n in STANDARD_1020_19 if n not in ("Fz", "Pz")]
    plan = plan_adaptation(spec, info(names), 640)
    step = next(s for s in plan.steps if s["step"] == "interpolate_channels")
    assert "FZ" in step["detail"] and "PZ" in step["detail"]
    assert plan.target.n_chans == 20


def test_too_few_channels_for_a_fixed_layout_is_an_error():
    with pytest.raises(
        AdaptationError,
        match=r"only 3 of its 19 electrodes are present, missing \['FP1', .*\]\. Record or "
        r"rename these channels .* or choose a model that accepts",
    ):
        plan_adaptation(get_model_spec("bendr"), info(["Cz", "C3", "C4"]), 640)


def test_spherical_spline_interpolates_a_smooth_field():
    names = list(STANDARD_1020_19)
    target = "Cz"
    sources = [n for n in names if n != target]
    weights = interpolation_matrix(sources, [target])
    pos = standard_positions(names)
    field = lambda p: 1.0 + 3.0 * p[0] + 2.0 * p[1]  # noqa: E731 - smooth over the scalp
    estimate = weights @ np.array([field(pos[n]) for n in sources])
    assert abs(estimate[0] - field(pos[target])) < 0.05


@pytest.mark.parametrize(
    ("key", "seconds", "message"),
    [
        (
            "labram",
            0.5,
            r"'labram' works on patches of 200 samples \(1 s at 200 Hz\) but the window has 100 samples after "
            r"resampling; use windows of at least 1 s",
        ),
        (
            "cbramod",
            0.5,
            r"'cbramod' works on patches of 200 samples .* has 100 samples .*; use windows of at least 1 s",
        ),
        (
            "bendr",
            1.0,
            r"'bendr' needs windows of at least 2 s \(512 samples at 256 Hz\), got 256 samples after resampling; "
            r"use longer windows",
        ),
    ],
)
def test_window_too_short_is_an_error(key, seconds, message):
    n = int(160 * seconds)
    with pytest.raises(AdaptationError, match=message):
        plan_adaptation(get_model_spec(key), info(STANDARD_1020_19), n)


def test_labram_window_longer_than_its_temporal_table_is_an_error():
    with pytest.raises(
        AdaptationError,
        match=r"'labram' accepts at most 15 patches per channel \(15 s at 200 Hz\); the "
        r"window has 20\. Cut the recording into shorter windows",
    ):
        plan_adaptation(get_model_spec("labram"), info(STANDARD_1020_19, sfreq=200.0), 200 * 20)


def test_crop_or_pad_to_the_patch_multiple_is_recorded():
    spec = get_model_spec("cbramod")
    cropped = plan_adaptation(spec, info(["Cz"], sfreq=200.0), 850)
    padded = plan_adaptation(spec, info(["Cz"], sfreq=200.0), 950)
    assert cropped.target.n_times == 800 and any(s["step"] == "crop" for s in cropped.steps)
    assert padded.target.n_times == 1000 and any(s["step"] == "pad" for s in padded.steps)
    assert cropped.apply(np.ones((1, 1, 850)) * 1e-5).shape == (1, 1, 800)


def test_models_needing_positions_drop_unplaceable_channels():
    plan = plan_adaptation(get_model_spec("reve"), info(["Cz", "C3", "XYZ1"]), 640)
    assert plan.target.ch_names == ("Cz", "C3")
    assert set(plan.target.positions) == {"Cz", "C3"}


def test_reve_never_downloads_its_position_bank(monkeypatch, windows_19ch, ch_names_19):
    import os

    import pooch

    def refuse(*args, **kwargs):
        raise AssertionError("REVE tried to download its position bank")

    monkeypatch.setattr(pooch, "retrieve", refuse)
    before = os.environ.get("REVE_POSITIONS_PATH")
    from neurofm.estimators.frozen import FoundationEmbedder

    spec = get_model_spec("reve")
    emb = FoundationEmbedder(
        "reve",
        weights="random",
        sfreq=160.0,
        ch_names=ch_names_19,
        cache_embeddings=False,
        verbose=False,
        model_kwargs=spec.tiny_kwargs,
    )
    assert emb.fit(windows_19ch).transform(windows_19ch).shape[0] == 3
    assert os.environ.get("REVE_POSITIONS_PATH") == before


def test_meg_channels_become_eeg_equivalent_microvolts():
    from neurofm.adapt import MEG_TYPICAL_STD

    spec = get_model_spec("cbramod")
    meg = SignalInfo(sfreq=200.0, ch_names=("MEG0111", "MEG0112", "EEG001"), units=("T", "T/m", "V"))
    typical = np.stack(
        [
            np.full(800, MEG_TYPICAL_STD["mag_fT"] * 1e-15),  # a typical magnetometer ...
            np.full(800, MEG_TYPICAL_STD["grad_fT_per_cm"] * 1e-13),  # ... gradiometer ...
            np.full(800, MEG_TYPICAL_STD["eeg_uV"] * 1e-6),
        ]
    )  # ... and EEG channel
    plan = plan_adaptation(spec, meg, 800)
    out = plan.apply(typical[None])
    np.testing.assert_allclose(out[0], MEG_TYPICAL_STD["eeg_uV"] * 0.01, rtol=1e-5)  # all alike, then the model's /100
    units = next(step["detail"] for step in plan.steps if step["step"] == "units")
    assert "tesla to EEG-equivalent microvolts (x8.611e13)" in units and "1 fT = 0.08611 uV" in units


def test_a_vocabulary_with_old_and_new_names_uses_each_input_once():
    """LaBraM lists both T3 and T7; an input T7 must not be fed twice."""
    spec = get_model_spec("labram")
    names = ["T7", "T8", "P7", "Cz", "Fc5."]
    plan = plan_adaptation(spec, info(names), 800)
    assert plan.target.n_chans == 5
    assert {n.upper() for n in plan.target.ch_names} == {"T7", "T8", "P7", "CZ", "FC5"}
    old = plan_adaptation(spec, info(["T3", "Cz"]), 800)
    assert {n.upper() for n in old.target.ch_names} == {"T3", "CZ"}
    assert ((plan.channel_matrix != 0).sum(axis=0) == 1).all()  # every input used exactly once
