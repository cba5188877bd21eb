"""Validation of windows, labels and metadata, before any compute."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import neurofm.embed
import neurofm.estimators.frozen as frozen
from neurofm import Experiment
from neurofm.configs import (
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    FoundationEmbeddingModelConfig,
    FrozenBackboneDecoderConfig,
)
from neurofm.data import prepare_inputs
from neurofm.exceptions import ConfigError, CVSplitError, DataValidationError


@pytest.fixture()
def data(small_dataset):
    X, y, meta, info = small_dataset
    return X.copy(), y.copy(), meta.copy(), dict(info)


def _classical_experiment(**cv) -> Experiment:
    cv = cv or {"strategy": "stratified_group_kfold", "n_splits": 3, "group_key": "Subject"}
    return Experiment(
        ExperimentConfig(
            models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
            metrics=["balanced_accuracy"],
            cv=CVConfig(**cv),
            verbose=False,
        )
    )


# -- prepare_inputs -----------------------------------------------------------------


def test_valid_numpy_inputs_are_brought_to_one_form(data):
    X, y, meta, info = data
    inputs = prepare_inputs(X, y, meta, **info)
    assert inputs.X.dtype == np.float32 and inputs.X.flags.c_contiguous
    assert inputs.X.shape == X.shape
    assert inputs.info.sfreq == 160.0
    assert inputs.info.ch_names == tuple(info["ch_names"])
    assert inputs.info.units == ("V",) * 19
    pd.testing.assert_frame_equal(inputs.metadata, meta)
    np.testing.assert_array_equal(inputs.y, y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_windows_are_named(data, bad):
    X, y, meta, info = data
    X[5, 2, 3] = bad
    X[11, 0, 0] = bad
    with pytest.raises(DataValidationError) as err:
        prepare_inputs(X, y, meta, **info)
    message = str(err.value)
    assert "NaN or Inf" in message
    assert "2 window(s)" in message
    assert "indices 5, 11" in message


def test_many_non_finite_windows_are_abbreviated(data):
    X, y, meta, info = data
    X[:15, 0, 0] = np.nan
    with pytest.raises(DataValidationError, match=r"15 window\(s\) \(indices 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 \.\.\.\)"):
        prepare_inputs(X, y, meta, **info)


def test_two_dimensional_x_is_rejected_with_the_fix(data):
    X, y, meta, info = data
    with pytest.raises(DataValidationError) as err:
        prepare_inputs(X[0], y, meta, **info)
    message = str(err.value)
    assert "3 dimensions" in message and "got 2" in message and "(19, 640)" in message
    assert "X[np.newaxis]" in message


def test_four_dimensional_x_is_rejected_with_the_fix(data):
    X, y, meta, info = data
    with pytest.raises(DataValidationError) as err:
        prepare_inputs(X[None], y, meta, **info)
    message = str(err.value)
    assert "got 4" in message and "(1, 48, 19, 640)" in message
    assert "reshape" in message


def test_non_numeric_x_is_rejected():
    with pytest.raises(DataValidationError, match="must hold real numbers"):
        prepare_inputs(np.full((2, 2, 4), "a"), sfreq=100, ch_names=["a", "b"])


def test_y_length_mismatch(data):
    X, y, meta, info = data
    with pytest.raises(DataValidationError, match="y has 47 entries but X has 48 windows"):
        prepare_inputs(X, y[:-1], meta, **info)


@pytest.mark.parametrize("as_dict", [False, True])
def test_metadata_length_mismatch(data, as_dict):
    X, y, meta, info = data
    short = meta.iloc[:40]
    short = {c: list(short[c]) for c in short.columns} if as_dict else short
    with pytest.raises(DataValidationError, match="sample_metadata has 40 rows but X has 48 windows"):
        prepare_inputs(X, y, short, **info)


def test_metadata_dict_with_ragged_columns_is_a_data_error(data):
    X, y, meta, info = data
    with pytest.raises(
        DataValidationError, match="sample_metadata could not become a table: All arrays must be of the same length"
    ):
        prepare_inputs(X, y, {"Subject": list(meta["Subject"]), "Trial": [1, 2]}, **info)


def test_metadata_of_wrong_type_is_rejected(data):
    X, y, _, info = data
    with pytest.raises(
        DataValidationError, match="sample_metadata must be a pandas DataFrame or a dict of columns, got list"
    ):
        prepare_inputs(X, y, ["sub-01"] * len(X), **info)


def test_missing_sfreq(data):
    X, y, meta, info = data
    with pytest.raises(DataValidationError, match="sampling rate is missing.*sfreq="):
        prepare_inputs(X, y, meta, ch_names=info["ch_names"])


@pytest.mark.parametrize("sfreq", [0, -160.0, np.nan, "fast"])
def test_invalid_sfreq(data, sfreq):
    X, y, meta, info = data
    with pytest.raises(DataValidationError, match=rf"sfreq must be a (positive )?number (of|in) Hz, got '?{sfreq}"):
        prepare_inputs(X, y, meta, sfreq=sfreq, ch_names=info["ch_names"])


def test_missing_ch_names(data):
    X, y, meta, _ = data
    with pytest.raises(DataValidationError, match="Channel names are missing.*ch_names="):
        prepare_inputs(X, y, meta, sfreq=160.0)


def test_ch_names_length_mismatch(data):
    X, y, meta, info = data
    with pytest.raises(DataValidationError, match=r"ch_names has 18 names but X has 19 channels"):
        prepare_inputs(X, y, meta, sfreq=160.0, ch_names=info["ch_names"][:-1])


@pytest.mark.parametrize("dup", ["Cz", "CZ", " cz "])
def test_duplicate_channel_names(data, dup):
    X, y, meta, info = data
    names = list(info["ch_names"])
    names[0] = dup  # Cz already sits at index 9
    with pytest.raises(DataValidationError) as err:
        prepare_inputs(X, y, meta, sfreq=160.0, ch_names=names)
    message = str(err.value)
    assert "unique" in message and "Cz" in message


@pytest.mark.parametrize("label", ["left_hand", 1])
def test_single_class_is_rejected(data, label):
    X, _, meta, info = data
    y = np.full(len(X), label)
    with pytest.raises(DataValidationError) as err:
        prepare_inputs(X, y, meta, **info)
    message = str(err.value)
    assert "single class" in message and "two classes" in message
    assert str(label) in message


@pytest.mark.parametrize("label", ["left_hand", 1])
def test_single_class_message_shows_the_plain_label(data, label):
    X, _, meta, info = data
    with pytest.raises(DataValidationError) as err:
        prepare_inputs(X, np.full(len(X), label), meta, **info)
    assert "np." not in str(err.value)


def test_nan_label_is_rejected(data):
    X, _, meta, info = data
    y = np.tile([0.0, 1.0], len(X) // 2)
    y[3] = np.nan
    with pytest.raises(DataValidationError, match="y contains NaN; remove the unlabeled windows before running"):
        prepare_inputs(X, y, meta, **info)


def test_microvolts_passed_as_volts_are_implausible(data):
    X, y, meta, info = data
    X_uv = X * 1e6  # values ~ 20, declared as volts
    assert 1 < np.median(np.abs(X_uv)) < 100
    with pytest.raises(DataValidationError) as err:
        prepare_inputs(X_uv, y, meta, sfreq=160.0, ch_names=info["ch_names"], units="V")
    message = str(err.value)
    assert "implausible" in message
    assert "units='uV'" in message


def test_implausible_units_message_names_the_unit_plainly(data):
    X, y, meta, info = data
    with pytest.raises(DataValidationError) as err:
        prepare_inputs(X * 1e6, y, meta, sfreq=160.0, ch_names=info["ch_names"], units="V")
    assert "declared in 'V'" in str(err.value)


@pytest.mark.parametrize("unit", ["uV", "µV"])
def test_microvolt_data_with_microvolt_units_is_accepted(data, unit):
    X, y, meta, info = data
    inputs = prepare_inputs(X * 1e6, y, meta, sfreq=160.0, ch_names=info["ch_names"], units=unit)
    assert inputs.info.units == (unit,) * 19
    np.testing.assert_allclose(inputs.X, (X * 1e6).astype(np.float32))


def test_unknown_unit_and_wrong_number_of_units(data):
    X, y, meta, info = data
    with pytest.raises(DataValidationError, match="Unknown unit 'microvolt'; use one of 'T', 'T/m', 'V', "):
        prepare_inputs(X, y, meta, sfreq=160.0, ch_names=info["ch_names"], units="microvolt")
    with pytest.raises(DataValidationError, match="units has 2 entries but X has 19 channels; give one per channel"):
        prepare_inputs(X, y, meta, sfreq=160.0, ch_names=info["ch_names"], units=["V", "V"])


# -- mne.Epochs ---------------------------------------------------------------------


@pytest.fixture()
def epochs(data):
    mne = pytest.importorskip("mne")
    X, _, meta, info = data
    mne_info = mne.create_info(info["ch_names"], info["sfreq"], ch_types="eeg")
    return mne.EpochsArray(X, mne_info, metadata=meta, verbose=False)


def test_epochs_input_reads_signal_info_and_metadata(epochs, data):
    X, y, meta, info = data
    inputs = prepare_inputs(epochs, y)
    assert inputs.info.sfreq == 160.0
    assert inputs.info.ch_names == tuple(info["ch_names"])
    assert inputs.info.units == ("V",) * 19
    np.testing.assert_array_equal(inputs.X, X.astype(np.float32))  # the windows themselves, not something close
    pd.testing.assert_frame_equal(inputs.metadata, meta, check_exact=True)


def test_epochs_with_sfreq_argument_is_rejected(epochs, data):
    _, y, _, _ = data
    with pytest.raises(
        DataValidationError, match=r"sfreq given together with mne\.Epochs, which carry their own; drop "
    ):
        prepare_inputs(epochs, y, sfreq=160.0)


def test_experiment_runs_on_epochs_with_their_metadata(epochs, data):
    X, y, meta, info = data
    result = _classical_experiment().run(epochs, y)  # group_key 'Subject' comes from epochs.metadata
    reference = _classical_experiment().run(X, y, meta, **info)
    # The same windows as an array: the same scores, bit for bit.
    pd.testing.assert_frame_equal(result.get_detailed_scores(), reference.get_detailed_scores(), check_exact=True)
    pd.testing.assert_frame_equal(result.get_splits(), reference.get_splits(), check_exact=True)
    assert result.meta["signal"]["ch_names"] == info["ch_names"]
    # Groups never straddle a split, which proves the Subject column was used.
    for _, fold in result.get_splits().groupby("Fold"):
        subj = meta["Subject"].to_numpy()
        train = set(subj[fold.loc[fold["Set"] == "train", "SampleIndex"]])
        test = set(subj[fold.loc[fold["Set"] == "test", "SampleIndex"]])
        assert not train & test


# -- label types --------------------------------------------------------------------


def test_string_and_integer_labels_give_the_same_scores(data):
    X, y, meta, info = data
    y_int = (y == "right_hand").astype(int)  # same order as the sorted strings
    res_str = _classical_experiment().run(X, y, meta, **info)
    res_int = _classical_experiment().run(X, y_int, meta, **info)
    pd.testing.assert_frame_equal(res_str.get_detailed_scores(), res_int.get_detailed_scores(), check_exact=True)
    pred_str = res_str.get_predictions()
    pred_int = res_int.get_predictions()
    assert {"proba_left_hand", "proba_right_hand"} <= set(pred_str.columns)
    assert {"proba_0", "proba_1"} <= set(pred_int.columns)
    assert set(pred_str["y_pred"]) <= {"left_hand", "right_hand"}
    assert set(pred_int["y_pred"]) <= {0, 1}
    np.testing.assert_array_equal(pred_int["y_pred"].to_numpy(), (pred_str["y_pred"] == "right_hand").astype(int))
    np.testing.assert_array_equal(pred_int["proba_1"], pred_str["proba_right_hand"])


def test_object_labels_are_accepted(data):
    X, y, meta, info = data
    inputs = prepare_inputs(X, list(y.astype(object)), meta, **info)
    assert inputs.y.dtype.kind == "U"
    assert set(inputs.y) == {"left_hand", "right_hand"}


# -- errors before any compute ------------------------------------------------------


class ComputeReached(AssertionError):
    pass


@pytest.fixture()
def no_compute(monkeypatch):
    """Make every backbone entry point fail loudly and record that it was reached."""
    calls: list[str] = []

    def guard(name):
        def _raise(*args, **kwargs):
            calls.append(name)
            raise ComputeReached(f"{name} was called")

        return _raise

    monkeypatch.setattr(neurofm.embed, "embed_windows", guard("neurofm.embed.embed_windows"))
    monkeypatch.setattr(frozen, "embed_windows", guard("frozen.embed_windows"))  # the name frozen imported
    monkeypatch.setattr(frozen.FoundationEmbedder, "fit", guard("FoundationEmbedder.fit"))
    monkeypatch.setattr(frozen.FoundationEmbedder, "transform", guard("FoundationEmbedder.transform"))
    monkeypatch.setattr(frozen, "create_backbone", guard("create_backbone"))
    return calls


def _frozen_experiment(cache_dir, head_params=None, **cv) -> Experiment:
    cv = cv or {"strategy": "stratified_group_kfold", "n_splits": 3, "group_key": "Subject"}
    return Experiment(
        ExperimentConfig(
            models={
                "fm": FrozenBackboneDecoderConfig(
                    backbone=FoundationEmbeddingModelConfig(model_key="cbramod", weights="random"),
                    head=ClassicalModelConfig(estimator="LogisticRegression", params=head_params or {}),
                ),
                "bp": ClassicalModelConfig(estimator="bandpower_lr"),
            },
            metrics=["balanced_accuracy"],
            cv=CVConfig(**cv),
            cache_dir=cache_dir,
            verbose=False,
        )
    )


def _nan_x(X, y, meta, info):
    X = X.copy()
    X[7, 3, 100] = np.nan
    return (X, y, meta), info, r"NaN or Inf in 1 window\(s\) \(indices 7\); drop or repair these windows"


def _bad_y(X, y, meta, info):
    return (X, y[:-2], meta), info, "y has 46 entries but X has 48 windows; give exactly one label per window"


def _short_meta(X, y, meta, info):
    return (
        (X, y, meta.iloc[:-1]),
        info,
        "sample_metadata has 47 rows but X has 48 windows; give exactly one row per window",
    )


def _no_sfreq(X, y, meta, info):
    return (X, y, meta), {"ch_names": info["ch_names"]}, r"The sampling rate is missing: pass sfreq=<Hz>"


def _no_ch_names(X, y, meta, info):
    return (X, y, meta), {"sfreq": info["sfreq"]}, r"Channel names are missing: pass ch_names=\[\.\.\.\]"


def _volts(X, y, meta, info):
    return (X * 1e6, y, meta), info, r"median standard deviation of .* V, implausible for EEG/MEG.*pass units='uV'"


def _one_class(X, y, meta, info):
    return (
        (X, np.full(len(X), "left_hand"), meta),
        info,
        (
            r"y holds a single class \('left_hand'\); classification "
            r"needs at least two classes.*task='regression'"
        ),
    )


def _flat(X, y, meta, info):
    return (X.reshape(len(X), -1), y, meta), info, r"X must have 3 dimensions .* got 2 with shape \(48, 12160\)"


@pytest.mark.parametrize("corrupt", [_nan_x, _bad_y, _short_meta, _no_sfreq, _no_ch_names, _volts, _one_class, _flat])
def test_data_errors_are_raised_before_any_compute(no_compute, data, cache_dir, corrupt):
    X, y, meta, info = data
    args, kwargs, fragment = corrupt(X, y, meta, info)
    with pytest.raises(DataValidationError, match=fragment):
        _frozen_experiment(cache_dir).run(*args, **kwargs)
    assert no_compute == []


def test_cv_errors_are_raised_before_any_compute(no_compute, data, cache_dir):
    X, y, meta, info = data
    with pytest.raises(
        CVSplitError,
        match=r"needs at least 5 groups in column 'Subject', but the data hold 4; "
        r"lower n_splits to at most 4",
    ):
        _frozen_experiment(cache_dir, strategy="group_kfold", n_splits=5, group_key="Subject").run(X, y, meta, **info)
    with pytest.raises(
        CVSplitError,
        match=r"group_key 'Session' is not a column of sample_metadata \(columns: "
        r"\['Subject', 'Trial'\]\); pass sample_metadata with that column",
    ):
        _frozen_experiment(cache_dir, strategy="group_kfold", n_splits=3, group_key="Session").run(X, y, meta, **info)
    assert no_compute == []


def test_guard_is_effective_on_valid_input(no_compute, data, cache_dir):
    """Sanity check of the guard itself: valid input does reach the backbone."""
    X, y, meta, info = data
    with pytest.raises(ComputeReached):
        _frozen_experiment(cache_dir).run(X, y, meta, **info)
    assert no_compute  # at least one guarded entry point was called


def test_invalid_head_params_are_reported_before_any_compute(no_compute, data, cache_dir):
    X, y, meta, info = data
    with pytest.raises(
        ConfigError,
        match=r"Invalid params for estimator 'LogisticRegression': The 'C' parameter of "
        r"LogisticRegression must be a float in the range \(0\.0, inf\]\. Got -1\.0",
    ):
        _frozen_experiment(cache_dir, head_params={"C": -1.0}).run(X, y, meta, **info)
    assert no_compute == []
