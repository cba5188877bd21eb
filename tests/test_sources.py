"""Windows read from disk in slices: memmap, HDF5, zarr and lazy MNE epochs."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

from neurofm import Experiment
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig
from neurofm.data import prepare_inputs
from neurofm.estimators.frozen import FoundationEmbedder
from neurofm.exceptions import DataValidationError
from neurofm.models import get_model_spec
from neurofm.simulate import simulate_eeg_dataset
from neurofm.sources import ArraySource, MemmapSource, WindowSource, as_window_source


@pytest.fixture(scope="module")
def data():
    return simulate_eeg_dataset(n_subjects=3, n_windows_per_class=5, random_state=2)


def _memmap(path, X):
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    mm.flush()
    return np.load(path, mmap_mode="r")


def _embedder(info, cache_dir, **kwargs):
    return FoundationEmbedder(
        model_key="cbramod",
        weights="random",
        sfreq=info["sfreq"],
        ch_names=info["ch_names"],
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        cache_dir=str(cache_dir),
        batch_size=8,
        verbose=False,
        **kwargs,
    )


def _h5(path, X):
    h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install 'neurofm[lazy]')")
    with h5py.File(path, "w") as f:
        f.create_dataset("eeg/windows", data=X, chunks=(4, *X.shape[1:]))
    return h5py.File(path, "r")["eeg/windows"]


def _zarr(path, X):
    zarr = pytest.importorskip("zarr", reason="zarr is not installed (pip install 'neurofm[lazy]')")
    z = zarr.open_array(str(path), mode="w", shape=X.shape, chunks=(4, *X.shape[1:]), dtype="float32")
    z[:] = X
    return zarr.open_array(str(path), mode="r")


@pytest.mark.parametrize("make", [_memmap, _h5, _zarr], ids=["memmap", "hdf5", "zarr"])
def test_on_disk_windows_embed_like_the_same_windows_in_memory(make, data, tmp_path):
    X, _, _, info = data
    on_disk = make(tmp_path / "windows", X)
    source = as_window_source(on_disk)
    assert not source.in_memory
    # A source pickles as a reference to the file, never as the windows.
    assert len(pickle.dumps(source.block(0, len(X)))) < X.nbytes / 20
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(source.block(3, 11))).read(0, 8), X[3:11].astype(np.float32)
    )
    expected = _embedder(info, tmp_path / "a", cache_embeddings=False).fit(X).transform(X)
    streamed = _embedder(info, tmp_path / "b", cache_embeddings=False).fit(on_disk).transform(on_disk)
    np.testing.assert_array_equal(streamed, expected)


def test_a_memmap_view_is_read_from_its_own_offset(data, tmp_path):
    X, _, _, _ = data
    mm = _memmap(tmp_path / "w.npy", X)
    view = mm[7:19]
    source = as_window_source(view)
    assert isinstance(source, MemmapSource)
    np.testing.assert_array_equal(source.read(0, len(view)), X[7:19].astype(np.float32))
    np.testing.assert_array_equal(source.block(2, 5).read(0, 3), X[9:12].astype(np.float32))
    with pytest.raises(DataValidationError, match="not C-contiguous"):
        as_window_source(mm[:, ::2])


def test_the_cache_is_shared_between_memory_and_disk(data, tmp_path):
    X, _, _, info = data
    _embedder(info, tmp_path).fit(X).transform(X)
    mm = _memmap(tmp_path / "w.npy", X)
    embedder = _embedder(info, tmp_path).fit(mm)
    embedder.transform(mm)
    assert (embedder.cache_hits_, embedder.cache_misses_) == (len(X), 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads resident file pages from /proc (Linux)")
def test_streaming_a_memmap_does_not_keep_its_pages_resident(tmp_path):
    def resident_file_kb() -> int:
        for line in open("/proc/self/status"):
            if line.startswith("RssFile:"):
                return int(line.split()[1])
        raise AssertionError("no RssFile line")

    n, size = 512, 19 * 2000  # 512 windows of 152 kB: 78 MB
    mm = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(n, 19, 2000))
    for start in range(0, n, 64):
        mm[start : start + 64] = start
    mm.flush()
    del mm
    source = as_window_source(np.load(tmp_path / "big.npy", mmap_mode="r"))
    before = resident_file_kb()
    total = 0.0
    for _, chunk in source.chunks(32):
        total += float(chunk[:, 0, 0].sum())
    assert total == sum(64 * s for s in range(0, n, 64))  # every window was read
    assert resident_file_kb() - before < n * size * 4 / 1024 / 4  # far less than the file stayed mapped


def test_lazy_epochs_stream_and_match_preloaded_epochs(data, tmp_path):
    import mne

    X, _, _, info = data
    raw = mne.io.RawArray(
        np.concatenate(list(X[:10]), axis=-1), mne.create_info(info["ch_names"], info["sfreq"], "eeg"), verbose=False
    )
    raw.save(tmp_path / "rec_raw.fif", verbose=False)
    lazy_raw = mne.io.read_raw_fif(tmp_path / "rec_raw.fif", preload=False, verbose=False)
    events = mne.make_fixed_length_events(lazy_raw, duration=X.shape[-1] / info["sfreq"])
    kwargs = dict(tmin=0, tmax=(X.shape[-1] - 1) / info["sfreq"], baseline=None, verbose=False)
    lazy = mne.Epochs(lazy_raw, events, preload=False, **kwargs)
    loaded = mne.Epochs(lazy_raw, events, preload=True, **kwargs)
    inputs = prepare_inputs(lazy)
    assert isinstance(inputs.X, WindowSource) and not inputs.X.in_memory
    assert inputs.info.ch_names == tuple(info["ch_names"])
    np.testing.assert_allclose(inputs.X.read(0, len(loaded)), loaded.get_data(), rtol=1e-6)
    emb_lazy = _embedder(info, tmp_path / "a", cache_embeddings=False).fit(lazy).transform(lazy)
    emb_loaded = _embedder(info, tmp_path / "b", cache_embeddings=False).fit(loaded).transform(loaded)
    np.testing.assert_array_equal(emb_lazy, emb_loaded)


def test_bad_windows_on_disk_fail_before_any_compute(data, tmp_path, monkeypatch):
    X, y, meta, info = data
    bad = X.copy()
    bad[9, 3, 100] = np.nan
    mm = _memmap(tmp_path / "w.npy", bad)
    monkeypatch.setattr("neurofm.estimators.frozen.embed_windows", lambda *a, **k: pytest.fail("computed"))
    with pytest.raises(DataValidationError, match=r"NaN or Inf in 1 window\(s\) \(indices 9\)"):
        prepare_inputs(mm, y, meta, **info)
    with pytest.raises(
        DataValidationError,
        match=r"X must have 3 dimensions .* got 2 with shape \(19, 640\); store the windows as one 3-D array",
    ):
        prepare_inputs(np.load(tmp_path / "w.npy", mmap_mode="r")[0], **info)


def test_experiment_on_a_memmap_scores_like_the_array(data, tmp_path, caplog):
    X, y, meta, info = data
    mm = _memmap(tmp_path / "w.npy", X)
    config = ExperimentConfig(
        models={"bandpower": ClassicalModelConfig(estimator="bandpower_lr")},
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    expected = Experiment(config).run(X, y, sample_metadata=meta, **info)
    with caplog.at_level("WARNING", logger="neurofm"):
        result = Experiment(config).run(mm, y, sample_metadata=meta, **info)
    assert "needs every window in memory" in caplog.text
    assert result.scores.equals(expected.scores)


def test_in_memory_arrays_are_sources_too():
    X = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    source = as_window_source(X)
    assert isinstance(source, ArraySource) and source.in_memory
    assert source.read(0, 2).dtype == np.float32
    assert source.chunk_size(multiple_of=8, max_bytes=10) == 8
    np.testing.assert_array_equal(source.block(1, 2).to_array(), X[1:2])
