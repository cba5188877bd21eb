"""Devices and precisions resolved where the work runs; deterministic algorithms on request (issue 21).

Which device ``"auto"`` picks, which precision ``"auto"`` gives on a GPU with
or without bf16 hardware, and what ``deterministic=True`` switches are checked
here by standing in for the hardware query (``cuda_has_native_bf16``,
``resolve_device``): the logic is neurofm's, the answers would be the GPU's.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

import neurofm.devices as devices
from neurofm.configs import CheckpointConfig, DeviceConfig, NeuralFineTuneConfig, QuantizationConfig, TrainerConfig
from neurofm.estimators.frozen import FoundationEmbedder
from neurofm.estimators.neural import NeuralFineTuner
from neurofm.exceptions import ConfigError
from neurofm.models import get_model_spec
from neurofm.simulate import STANDARD_1020_19

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without CUDA does")


def test_auto_precision_is_bf16_only_on_gpus_with_bf16_hardware(monkeypatch):
    from neurofm.adapters import quantization_compute_dtype

    assert devices.resolve_precision("auto", "cpu") == "fp32"  # nothing changes on the CPU
    assert devices.resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(devices, "cuda_has_native_bf16", lambda device="cuda": True)  # an Ampere or later GPU
    assert devices.resolve_precision("auto", "cuda") == "bf16"
    assert devices.resolve_precision("auto", "cuda:1") == "bf16"
    assert quantization_compute_dtype("auto", "cuda") == "bfloat16"
    assert quantization_compute_dtype("auto", "cpu") == "float32"
    assert QuantizationConfig().compute_dtype == "auto" and DeviceConfig().precision == "auto"
    monkeypatch.setattr(devices, "cuda_has_native_bf16", lambda device="cuda": False)  # a V100 or T4
    assert devices.resolve_precision("auto", "cuda") == "fp32"
    assert quantization_compute_dtype("auto", "cuda") == "float32"
    with pytest.raises(ConfigError, match="predates bf16 hardware.*use 'fp16'"):
        devices.resolve_precision("bf16", "cuda")
    assert devices.resolve_precision("auto", "mps") == "fp32"
    with pytest.raises(ConfigError, match="'fp16' needs a GPU"):
        devices.resolve_precision("fp16", "cpu")


@needs_no_gpu
def test_auto_device_is_cuda_then_mps_then_cpu(monkeypatch):
    assert devices.resolve_device("auto") == "cpu"
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert devices.resolve_device("auto") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == "cuda"


@needs_no_gpu
def test_a_device_is_checked_here_only_when_the_work_runs_here():
    with pytest.raises(ConfigError, match="CUDA is not available here"):
        devices.check_device("cuda")
    devices.check_device("cuda:1", here=False)  # a Slurm or Ray worker resolves it
    with pytest.raises(ConfigError, match="'gpu0' is not a torch device"):
        devices.check_device("gpu0", here=False)


def test_where_each_backend_computes():
    from neurofm.configs import ExecutionConfig
    from neurofm.execution import computes_here

    assert computes_here(ExecutionConfig(backend="sequential")) and computes_here(ExecutionConfig(backend="joblib"))
    assert computes_here(ExecutionConfig(backend="ray")) and computes_here(ExecutionConfig(backend="dask"))
    assert not computes_here(ExecutionConfig(backend="ray", address="ray://head:10001"))
    assert not computes_here(ExecutionConfig(backend="dask", address="tcp://scheduler:8786"))
    assert not computes_here(ExecutionConfig(backend="submitit", submitit_cluster="slurm"))
    assert computes_here(ExecutionConfig(backend="submitit", submitit_cluster="local"))


def _tuner(tmp_path, device="cuda", **device_settings):
    config = NeuralFineTuneConfig(
        model_key="cbramod",
        weights="random",
        train_mode="full",
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        device=DeviceConfig(device=device, **device_settings),
        trainer=TrainerConfig(max_epochs=1, batch_size=4, validation_fraction=0, early_stopping_patience=None),
        checkpoints=CheckpointConfig(save="none", monitor="train_loss"),
    )
    return NeuralFineTuner(
        config=config, sfreq=200.0, ch_names=list(STANDARD_1020_19), verbose=False, cache_dir=str(tmp_path)
    )


def _cuda_embedder(tmp_path):
    """A tiny CBraMod embedder named for CUDA (which the planning machine may lack)."""
    return FoundationEmbedder(
        "cbramod",
        weights="random",
        sfreq=160.0,
        ch_names=list(STANDARD_1020_19),
        device="cuda",
        cache_dir=str(tmp_path),
        verbose=False,
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
    )


@needs_no_gpu
def test_a_run_planned_without_a_gpu_for_gpu_workers_is_not_refused(tmp_path, windows_19ch):
    shape = (8, 19, 800)
    with pytest.raises(ConfigError, match="CUDA is not available here"):
        _tuner(tmp_path).check_input(shape)
    _tuner(tmp_path).check_input(shape, device_here=False)
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA device"):  # wrong on every machine: refused anyway
        _tuner(tmp_path, device="cpu", precision="fp16").check_input(shape, device_here=False)

    embedder = _cuda_embedder(tmp_path)
    with pytest.raises(ConfigError, match="CUDA is not available here"):
        copy.deepcopy(embedder).check_input(windows_19ch.shape)
    prepared = embedder.check_input(windows_19ch.shape, device_here=False)
    embedder.fit(windows_19ch, prepared=prepared)  # plans (and takes recording statistics) without the device
    with pytest.raises(ConfigError, match="CUDA is not available here"):  # computing here still needs it
        embedder.transform(windows_19ch)
    bf16 = copy.deepcopy(embedder).set_params(precision="bf16")  # whether this GPU has bf16 is the worker's to judge
    prepared = bf16.check_input(windows_19ch.shape, device_here=False)
    assert bf16.fit(windows_19ch, prepared=prepared).device_ is None and bf16.precision_ == "bf16"


@needs_no_gpu
def test_fit_after_a_check_without_the_device_still_plans_without_it_but_warns(tmp_path, windows_19ch):
    """Deprecated for one release: the check's result, not the estimator, now carries 'planned elsewhere'."""
    embedder = _cuda_embedder(tmp_path)
    embedder.check_input(windows_19ch.shape, device_here=False)
    with pytest.warns(FutureWarning, match="prepared="):
        assert embedder.fit(windows_19ch).device_ is None


@needs_no_gpu
def test_a_worker_settles_auto_precision_for_the_device_the_planner_named(tmp_path, windows_19ch, monkeypatch):
    """Planned without the GPU for device='cuda', a worker with an Ampere GPU embeds in bf16 and keys it so."""
    import neurofm.estimators.frozen as frozen
    from neurofm.sources import as_window_source
    from neurofm.tasks import ExtractionTask, run_extraction

    planned = _cuda_embedder(tmp_path)
    planned.fit(windows_19ch, prepared=planned.check_input(windows_19ch.shape, device_here=False))
    assert planned.device_ is None and planned.precision_ == "auto"
    worker = copy.copy(planned)
    monkeypatch.setattr(frozen, "resolve_device", lambda device: device)  # the worker has the GPU
    monkeypatch.setattr(devices, "cuda_has_native_bf16", lambda device="cuda": True)
    with pytest.raises((RuntimeError, AssertionError)):  # settled, it goes to a CUDA device this machine lacks
        run_extraction(ExtractionTask(worker, as_window_source(windows_19ch)))
    assert (worker.device_, worker.precision_) == ("cuda", "bf16")
    assert worker.manifest_["precision"] == "bf16" and worker.fingerprint_ != planned.fingerprint_


def test_an_extraction_shard_resolves_auto_where_it_runs(tmp_path, windows_19ch, monkeypatch):
    """A shard planned on a machine without a GPU, run on a worker with one, embeds there under that device's key."""
    import neurofm.estimators.frozen as frozen
    from neurofm.sources import as_window_source
    from neurofm.tasks import ExtractionTask, run_extraction

    planned = FoundationEmbedder(
        "cbramod",
        weights="random",
        sfreq=160.0,
        ch_names=list(STANDARD_1020_19),
        device="cpu" if torch.cuda.is_available() else "auto",
        cache_dir=str(tmp_path),
        verbose=False,
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
    ).fit(windows_19ch)
    assert planned.device_ == "cpu"
    worker = copy.copy(planned)  # what a shard receives
    worker.device = "auto"
    monkeypatch.setattr(frozen, "resolve_device", lambda device: "meta" if device == "auto" else device)
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta tensor"):
        run_extraction(ExtractionTask(worker, as_window_source(windows_19ch)))
    assert worker.device_ == "meta" and worker.fingerprint_ != planned.fingerprint_
    assert worker.manifest_["device"] == "meta" and "device" not in planned.manifest_


def test_deterministic_switches_torch_and_cuda_settings_and_restores_them(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.flash_sdp_enabled(),
    )
    with devices.deterministic_algorithms(True, "cuda"):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.flash_sdp_enabled()
        assert not torch.backends.cuda.mem_efficient_sdp_enabled()
    after = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.flash_sdp_enabled(),
    )
    assert after == before
    with devices.deterministic_algorithms(True, "cpu"):  # the CPU's attention kernels stay as they are
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cuda.flash_sdp_enabled() == before[3]


def test_deterministic_training_on_the_cpu_gives_the_same_bits(tmp_path, monkeypatch):
    import neurofm.estimators.neural as neural

    rng = np.random.default_rng(0)
    X = (rng.standard_normal((8, 19, 800)) * 20e-6).astype(np.float32)
    y = np.tile([0, 1], 4)
    seen = []
    train = neural.train_network

    def spy(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return train(*args, **kwargs)

    monkeypatch.setattr(neural, "train_network", spy)
    plain = _tuner(tmp_path, device="cpu").fit(X, y)
    strict = _tuner(tmp_path, device="cpu", deterministic=True).fit(X, y)
    assert seen == [False, True] and not torch.are_deterministic_algorithms_enabled()
    np.testing.assert_array_equal(strict.predict_proba(X), plain.predict_proba(X))
    assert strict.precision_ == plain.precision_ == "fp32"


class _FakeRay:
    """What neurofm asks of Ray, recorded: a running runtime whose cluster has ``gpus`` GPUs."""

    def __init__(self, gpus: float):
        self.gpus, self.requests = gpus, []

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return {"CPU": 8.0, **({"GPU": self.gpus} if self.gpus else {})}

    def put(self, value):
        return value

    def get(self, values):
        return list(values)

    def remote(self, function):
        fake = self

        class Remote:
            def options(self, num_gpus):
                fake.requests.append(num_gpus)
                return self

            def remote(self, *args):
                return function(*args)

        return Remote()


@pytest.mark.parametrize(
    ("cluster_gpus", "setting", "expected"), [(2, "auto", [1.0, 0]), (0, "auto", [0.0, 0]), (2, 0.5, [0.5, 0])]
)
def test_ray_tasks_that_compute_on_a_gpu_ask_for_one(cluster_gpus, setting, expected, monkeypatch):
    """Ray hides GPUs from a task that asks for none: device='auto' would silently run on the CPU there."""
    import sys

    from neurofm.configs import ExecutionConfig
    from neurofm.execution import map_tasks

    fake = _FakeRay(cluster_gpus)
    monkeypatch.setitem(sys.modules, "ray", fake)
    config = ExecutionConfig(backend="ray", gpus_per_task=setting)
    assert map_tasks(config, abs, [-1, -2], on_gpu=[True, False]) == [1, 2]
    assert fake.requests == expected


def test_experiment_marks_trainable_models_on_a_gpu_device_as_gpu_tasks(tmp_path):
    from neurofm.tasks import FoldTask, computes_on_gpu

    def task(device, trainable=True):
        return FoldTask("m", 0, _tuner(tmp_path, device=device), trainable, np.arange(2), np.arange(2), None, ())

    assert computes_on_gpu(task("auto")) and computes_on_gpu(task("cuda"))
    assert not computes_on_gpu(task("cpu")) and not computes_on_gpu(task("auto", trainable=False))


def test_prefetched_items_come_in_order_errors_surface_and_an_early_exit_stops_the_reader():
    import itertools
    import threading

    from neurofm.utils.prefetch import prefetched

    assert list(prefetched(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise OSError("recording 7 is truncated")

    stream = prefetched(failing())
    assert next(stream) == 1
    with pytest.raises(OSError, match="recording 7 is truncated"):
        next(stream)

    endless = prefetched(itertools.count())
    assert [next(endless) for _ in range(5)] == [0, 1, 2, 3, 4]
    endless.close()
    assert not any(t.name == "neurofm-prefetch" and t.is_alive() for t in threading.enumerate())


def test_micro_batches_bound_for_a_gpu_are_the_same_batches_gathered_ahead(monkeypatch):
    from neurofm.training.finetune import _micro_batches

    X = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    y = torch.arange(10)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    pinned = []

    def pin(self):  # page-locked memory needs a CUDA driver; what matters here is that each batch is pinned
        pinned.append(self.shape[0])
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    ahead = list(_micro_batches(X, y, order, 4, "cuda"))
    in_turn = list(_micro_batches(X, y, order, 4, "cpu"))
    assert len(ahead) == len(in_turn) == 3 and pinned == [4, 4, 4, 4, 2, 2]
    for (xa, ya), (xb, yb) in zip(ahead, in_turn, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_an_operation_without_a_deterministic_implementation_gets_a_clear_error():
    def forward():  # what torch raises for such an operation (on CUDA, e.g. some backward passes)
        raise RuntimeError(
            "adaptive_max_pool2d_backward_cuda does not have a deterministic implementation, but you "
            "set 'torch.use_deterministic_algorithms(True)'."
        )

    with pytest.raises(ConfigError, match="deterministic=True, but this model runs an operation.*deterministic=False"):
        with devices.deterministic_algorithms(True, "cuda"):
            forward()
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError, match="out of memory"), devices.deterministic_algorithms(True, "cuda"):
        raise RuntimeError("CUDA out of memory")


def test_training_and_a_run_leave_the_callers_generator_and_log_level_as_they_were(tmp_path):
    """No global side effect outlives the call that needed it: torch's global generator, neurofm's log level."""
    from neurofm.simulate import simulate_eeg_dataset
    from neurofm.utils.logging import logger

    rng = np.random.default_rng(0)
    X = (rng.standard_normal((8, 19, 800)) * 20e-6).astype(np.float32)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _tuner(tmp_path, device="cpu").fit(X, np.tile([0, 1], 4))
    assert torch.equal(torch.rand(3), expected)

    from neurofm import Experiment
    from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig

    X, y, meta, info = simulate_eeg_dataset(n_subjects=3, n_windows_per_class=4, random_state=0)
    config = ExperimentConfig(
        task="classification",
        models={"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        cv=CVConfig(strategy="group_kfold", n_splits=3, group_key="Subject"),
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )
    logger.setLevel("DEBUG")
    try:
        experiment = Experiment(config)
        experiment.run(X, y, sample_metadata=meta, **info)
        assert logger.level == 10  # DEBUG, as the caller set it
        assert vars(experiment) == {"config": config}  # the run's state lived in its own object, now gone
    finally:
        logger.setLevel("INFO")


def test_the_cublas_setting_lasts_only_as_long_as_the_deterministic_call(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with devices.deterministic_algorithms(True, "cuda"):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
