"""Embedding extraction speed: a plain braindecode loop vs neurofm, and the hardware's limit.

For each model and precision, on the same windows (19 channels of the 10-20
system, 4 s at 200 Hz, volts), side by side in one run:

(a) plain: the loop a user writes: ``model(x, return_features=True)`` under
    ``torch.no_grad()`` (and ``torch.autocast`` for bf16), batch 64, windows
    already scaled for the model;
(b) neurofm: ``FoundationEmbedder(...).transform(X)`` from windows in volts,
    with its input adaptation and pooling included, cache off.

The limit is the model's FLOPs per window (counted with
``torch.utils.flop_counter`` on one forward, with attention run as plain
products so that every one is counted) divided by the rate at which this
machine multiplies matrices (best square product of 1024 to 4096). Both the
fp32 rate and, where the precision runs, the bf16 rate are measured: a bf16
row is reported against the fp32 limit and against its own.

The ceiling column replays the model's own matrix products and convolutions
alone, at their shapes: the share of the limit that (b) would reach if every
other operator took no time. Where it is below a goal, no tuning of the rest
reaches that goal; only faster products at those shapes would.

Every variant lives in its own process (so nothing one sets, such as allocator
thresholds or thread counts, helps another), started once; the processes take
turns for ``--rounds`` rounds of ``--seconds`` each, with the matrix-multiply
rate measured between them, and each figure is the median over rounds of
what was measured within one round (this machine's speed drifts by 20 % or
more from minute to minute, so only figures taken side by side compare).

On CUDA (``--device cuda``) every figure is a GPU figure:

- rates are wall times with the device synchronised at both ends, so each
  counts until the last kernel of the pass has finished;
- the limits are square products of 1024 to 8192 (large enough to fill an
  H100/H200), timed with CUDA events: fp32 under the matmul setting of the run
  (PyTorch's default is IEEE fp32, ``float32_matmul_precision='highest'``),
  bf16 on the tensor cores; while convolutions run in TF32
  (``cudnn.allow_tf32``, on by default) the TF32 product rate is measured too,
  for reference, since an fp32 model's convolutions can run up to that rate;
- the matmul share is the share of the pass's GPU kernel time (the
  profiler's self device time) in kernels that multiply matrices: cuBLAS and
  CUTLASS products, flash and memory-efficient attention, cuDNN convolutions,
  told apart by kernel name;
- the ceiling replays the products with the attention kernels PyTorch picks
  on the GPU (flash or memory-efficient), not the math kernel the CPU replay
  and the FLOP count use.

The device, GPU, torch, CUDA and cuDNN versions and the TF32 settings the
figures come from are printed above the table.

Usage::

    python benchmarks/extract_speed.py                    # labram, cbramod, codebrain; fp32 (+ bf16 on AMX CPUs)
    python benchmarks/extract_speed.py --models cbramod --batch-sizes 32 64 --rounds 7
    python benchmarks/extract_speed.py --device cuda --precisions bf16 --batch-sizes 256
    python benchmarks/extract_speed.py --device cuda --batch-sizes 64 256   # fp32 and bf16 rows of a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import re
import statistics
import subprocess
import sys
import time

from neurofm.simulate import STANDARD_1020_19

N_WINDOWS = 256
CHANNELS = list(STANDARD_1020_19)  # the 10-20 system's 19 channels, in that order
SFREQ, SECONDS = 200.0, 4.0


def _windows(n: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return (20e-6 * rng.standard_normal((n, len(CHANNELS), int(SFREQ * SECONDS)))).astype(np.float32)


def _plain_model(key: str):
    import warnings

    import torch

    warnings.simplefilter("ignore")
    import braindecode.models as bd

    from neurofm.models import get_model_spec

    spec = get_model_spec(key)
    torch.manual_seed(0)
    model = getattr(bd, spec.braindecode_class)(
        n_chans=len(CHANNELS), n_times=int(SFREQ * SECONDS), sfreq=SFREQ, n_outputs=2
    )
    forward_kwargs = {"return_features": True} | (
        {"ch_names": CHANNELS} if key == "labram" else {}
    )  # LaBraM maps names
    return model.eval(), forward_kwargs


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def environment(device: str) -> dict:
    """Where the figures come from: device, versions and, on CUDA, GPU and TF32 settings.

    Read in the benchmark's own processes (the peak process answers it), so a
    setting made through the environment, such as
    ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE``, shows as the runs see it.
    """
    import torch

    env = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if not _is_cuda(device):
        return env
    properties = torch.cuda.get_device_properties(torch.device(device))
    return env | {
        "gpu": properties.name,
        "capability": f"sm_{properties.major}{properties.minor}",
        "sms": properties.multi_processor_count,
        "memory_gib": properties.total_memory / 2**30,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "bf16_reduced_precision_reduction": torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
    }


def _conv_mode(env: dict) -> str:
    """How fp32 convolutions run on this GPU, with the flag that decides it."""
    mode = "TF32" if env["cudnn_allow_tf32"] else "IEEE fp32"
    return f"convolutions {mode} (cudnn.allow_tf32={env['cudnn_allow_tf32']})"


def _matmul_mode(env: dict) -> str:
    """How fp32 matrix products run on this GPU, with the flags that decide it."""
    # allow_tf32 is what cuBLAS obeys: precision 'high' or 'medium' (which also allows bf16 passes) turns it
    # on, and so does TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1, which the precision does not show
    if not env["matmul_allow_tf32"]:
        mode = "IEEE fp32"
    else:
        mode = "TF32 or bf16" if env["float32_matmul_precision"] == "medium" else "TF32"
    return (
        f"matmul {mode} (float32_matmul_precision={env['float32_matmul_precision']}, "
        f"cuda.matmul.allow_tf32={env['matmul_allow_tf32']})"
    )


def describe(env: dict) -> str:
    """The device, versions and settings of ``env`` (from :func:`environment`), in a line (two on CUDA)."""
    if "gpu" not in env:
        return f"figures from {env['device']}: torch {env['torch']}, {env['threads']} intra-op threads"
    return (
        f"figures from {env['device']}: {env['gpu']} ({env['capability']}, {env['sms']} SMs, "
        f"{env['memory_gib']:.0f} GiB), torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}\n"
        f"fp32: {_conv_mode(env)}, {_matmul_mode(env)}; bf16: autocast, "
        f"reduced-precision reductions {'allowed' if env['bf16_reduced_precision_reduction'] else 'off'} "
        f"(cuda.matmul.allow_bf16_reduced_precision_reduction={env['bf16_reduced_precision_reduction']})"
    )


# Square sizes of the CUDA limit: an H100/H200's tensor cores come near their best rate only in products of
# several thousand, so the CPU's 1024 to 4096 would understate its limit.
_CUDA_PEAK_SIZES = (1024, 2048, 4096, 8192)


def _cuda_matmul_peak(device: str, precision: str) -> float:
    """Best GFLOP/s of square products on a GPU, timed with CUDA events.

    ``precision`` is ``fp32`` (under the run's own matmul setting), ``tf32``
    (fp32 tensors with ``cuda.matmul.allow_tf32`` on: the rate TF32
    convolutions run at) or ``bf16``. Events time the products on the device
    alone, without the launch of the first one or the wait for the last.
    """
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    if precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
    best = 0.0
    try:
        with torch.cuda.device(torch.device(device)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for n in _CUDA_PEAK_SIZES:
                a, b, c = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(3))
                torch.mm(a, b, out=c)  # the first call chooses cuBLAS's kernel
                reps = 1
                for _ in range(3):  # the first timing only sizes the next two to about 0.1 s each
                    start.record()
                    for _ in range(reps):
                        torch.mm(a, b, out=c)
                    end.record()
                    end.synchronize()
                    seconds = start.elapsed_time(end) / 1e3
                    best = max(best, reps * 2 * n**3 / seconds / 1e9)
                    reps = max(1, min(200, round(reps * 0.1 / seconds)))
                del a, b, c
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32_before
    return best


def matmul_peak(device: str, precision: str) -> float:
    """Best GFLOP/s of square matrix products on this device at this precision."""
    import torch

    if _is_cuda(device):
        return _cuda_matmul_peak(device, precision)

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    best = 0.0
    for n in (1024, 2048, 4096):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        reps = 3 if device == "cpu" else 50
        for _ in range(2):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            _sync(device)
            best = max(best, reps * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


@contextlib.contextmanager
def _every_product_visible(math: bool = True):
    """Run attention as plain aten products, so the FLOP counter (and the recorder below) see each one.

    PyTorch's fused multi-head attention (its "fast path", taken under
    ``no_grad``) and the CPU flash kernel are single operators the FLOP
    counter has no formula for: CBraMod's attention projections and scores,
    a fifth of its FLOPs, were counted as zero (0.60 instead of 0.75 GFLOP
    per window), which made its limit look higher than it is.

    Parameters
    ----------
    math : bool
        Also force the math kernel of ``scaled_dot_product_attention``. The
        GPU replay passes ``False``: there the model runs flash or
        memory-efficient attention, which the recorder takes as products
        whole, and the math kernel's separate products and softmax would
        make its ceiling that of a kernel the run never uses. The fast path
        stays off either way, since it hides the projections as well.
    """
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH) if math else contextlib.nullcontext():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def gflop_per_window(key: str) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, forward_kwargs = _plain_model(key)
    x = torch.from_numpy(_windows(1) * 1e4)
    with torch.no_grad(), _every_product_visible(), FlopCounterMode(display=False) as counter:
        model(x, **forward_kwargs)
    return counter.get_total_flops() / 1e9


def _products_step(key: str, batch: int, device: str, precision: str):
    """The model's own matrix products and convolutions, replayed alone: what a pass would cost if nothing else did.

    One forward of a ``batch`` is recorded below autocast (so bf16 products are
    recorded as bf16); each product is replayed on fresh tensors of the same
    shapes, strides and dtypes, in the streams neurofm's extraction uses. The
    rate of this step is the ceiling of any tuning that leaves the products'
    kernels as they are. On CUDA, attention is recorded and replayed as the
    fused kernel PyTorch picks there (see :func:`_every_product_visible`).
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from neurofm.embed import _intra_op_threads, autocast, cpu_streams

    aten = torch.ops.aten
    products = {aten.addmm.default, aten.mm.default, aten.bmm.default, aten.baddbmm.default, aten.convolution.default}
    if _is_cuda(device):  # the fused attention kernels; on the CPU the math kernel spells them out
        products |= {
            aten._scaled_dot_product_flash_attention.default,
            aten._scaled_dot_product_efficient_attention.default,
            aten._scaled_dot_product_cudnn_attention.default,
        }

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in products:
                self.calls.append(
                    (func, [(a.shape, a.stride(), a.dtype) if isinstance(a, torch.Tensor) else a for a in args], kwargs)
                )
            return func(*args, **kwargs)

    model, forward_kwargs = _plain_model(key)
    model = model.to(device)
    x = torch.from_numpy(_windows(batch) * 1e4).to(device)
    with (
        torch.no_grad(),
        autocast(device, precision),
        _every_product_visible(math=not _is_cuda(device)),
        Recorder() as recorder,
    ):
        model(x, **forward_kwargs)

    def fresh(arg):
        if isinstance(arg, tuple) and len(arg) == 3 and isinstance(arg[0], torch.Size):
            return torch.empty_strided(arg[0], arg[1], dtype=arg[2], device=device).normal_()
        return arg

    replay = [(func, [fresh(a) for a in args], kwargs) for func, args, kwargs in recorder.calls]
    n_batches = -(-N_WINDOWS // batch)
    streams, threads_each = cpu_streams(n_batches) if device == "cpu" else (1, 0)

    def one_stream(n: int) -> None:
        with torch.no_grad():
            for _ in range(n):
                for func, args, kwargs in replay:
                    func(*args, **kwargs)

    def step():
        from concurrent.futures import ThreadPoolExecutor

        if device != "cpu":
            one_stream(n_batches)
            return
        shares = [n_batches // streams + (i < n_batches % streams) for i in range(streams)]
        with _intra_op_threads(threads_each), ThreadPoolExecutor(streams) as pool:
            list(pool.map(one_stream, shares))

    step.windows = n_batches * batch  # whole batches only: the replay has no short last batch

    return step


def _rate(step, n_per_step: int, seconds: float, device: str) -> float:
    """Windows per second of ``step``, repeated for ``seconds``.

    On a GPU the device is synchronised before the clock starts and before it
    stops, so the time runs until the last kernel has finished. Wall time
    rather than CUDA events: a pass's host work (input adaptation, copies,
    embeddings back to numpy) and kernels on any stream belong to its rate,
    while events would time only the kernels queued between them on one stream.
    """
    _sync(device)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        done += n_per_step
    _sync(device)
    return done / (time.perf_counter() - t0)


def _variant_step(variant: str, key: str, batch: int, device: str, precision: str):
    """The function one measurement repeats: embed all N_WINDOWS windows once."""
    import torch

    from neurofm.embed import autocast

    X = _windows(N_WINDOWS)
    if variant == "plain":
        model, forward_kwargs = _plain_model(key)
        model = model.to(device)
        scaled = torch.from_numpy(X * 1e4)  # volts -> the models' 100 µV units

        def step():
            with torch.no_grad(), autocast(device, precision):
                for start in range(0, N_WINDOWS, batch):
                    model(scaled[start : start + batch].to(device), **forward_kwargs)

        return step
    from neurofm.estimators.frozen import FoundationEmbedder

    embedder = FoundationEmbedder(
        key,
        weights="random",
        sfreq=SFREQ,
        ch_names=CHANNELS,
        cache_embeddings=False,
        batch_size=batch,
        device=device,
        precision=precision,
        verbose=False,
    ).fit(X)
    return lambda: embedder.transform(X)


_MATMUL_OPS = {
    "aten::addmm",
    "aten::mm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::mkldnn_convolution",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
}

# GPU kernels that multiply matrices, by name. On the GPU the profiler's time
# is the kernels', and their names come from the libraries, not from aten:
# cuBLAS (ampere_sgemm_*, sm90_xmma_gemm_*, nvjet_* from cuBLAS 12.8 on,
# gemv2T_kernel, cublasLt::splitKreduce_kernel), CUTLASS (cutlass::Kernel,
# cutlass_80_tensorop_*), flash and memory-efficient attention (flash_fwd_kernel,
# fmha_cutlassF_*) and cuDNN's (cudnn_generated_fort_native_sdpa_*), and cuDNN
# and PyTorch convolutions (*_fprop_implicit_gemm_*, implicit_convolve_sgemm,
# ampere_scudnn_*, winograd, conv2d_grouped_direct_kernel, conv_depthwise2d_*).
# Anything else (elementwise, reductions, normalisation, softmax, copies,
# memsets, FFTs) is not a product. "conv" is matched only where it does not
# start "convert"/"conversion", and "mma" only in mma-kernel spellings, since
# "gamma" contains it.
_MATMUL_KERNEL = re.compile(
    r"gemm|gemv|nvjet|cublas|cutlass|tensorop|[hwxi]mma|sm\d+_\w*mma|splitkreduce"  # products
    r"|flash|fmha|sdpa"  # fused attention
    r"|(?<![a-z])conv(?!ert|ersion)|fprop|winograd|[0-9sh]cudnn",  # convolutions
    re.IGNORECASE,
)
# cuDNN helpers that run next to its convolutions but only reorder or add: not products
_NOT_MATMUL_KERNEL = re.compile(r"nchwtonhwc|nhwctonchw|generic_tensor", re.IGNORECASE)


def is_matmul_kernel(name: str) -> bool:
    """Whether the GPU kernel ``name`` (as the profiler reports it) multiplies matrices.

    Matrix products, fused attention and convolutions count, as on the CPU,
    where their aten operators (:data:`_MATMUL_OPS`) do.
    """
    return bool(_MATMUL_KERNEL.search(name)) and not _NOT_MATMUL_KERNEL.search(name)


def _self_device_time(event) -> float:
    # ``self_device_time_total`` since torch 2.4; ``self_cuda_time_total`` before
    time = getattr(event, "self_device_time_total", None)
    return event.self_cuda_time_total if time is None else time


def cuda_kernel_share(events) -> float:
    """Share of the GPU kernel time in ``events`` (``profile.key_averages()``) spent in matrix products.

    Only the device's own events count (kernels, copies, memsets): an aten
    operator's self device time is that of the kernels it launched, which
    are listed too, so counting both would count that time twice. NaN when
    the profiler saw no kernel (e.g. CUPTI missing).
    """
    from torch.autograd import DeviceType

    kernels = [e for e in events if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    total = sum(_self_device_time(e) for e in kernels)
    if not total:
        print("warning: the profiler recorded no CUDA kernel time; matmul share unknown", file=sys.stderr)
        return float("nan")
    return sum(_self_device_time(e) for e in kernels if is_matmul_kernel(e.key)) / total


def matmul_share(step, device: str = "cpu") -> float:
    """Share of one pass's operator time spent in matrix products and convolutions (torch profiler).

    On the CPU: the self CPU time of the product operators (:data:`_MATMUL_OPS`).
    The pass runs in one stream: the profiler records the operators of the
    thread that starts it, and the streams' operators are the same ones.

    On CUDA: the self device time of the GPU kernels that multiply matrices
    (:func:`is_matmul_kernel`), out of all kernel time, the CPU time of the
    launches being no measure of the GPU's work.
    """
    import os
    from unittest import mock

    from torch.profiler import ProfilerActivity, profile

    if _is_cuda(device):
        _sync(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step()
            _sync(device)  # every kernel of the pass ends inside the profile
        return cuda_kernel_share(prof.key_averages())
    with mock.patch.dict(os.environ, {"NEUROFM_CPU_STREAMS": "1"}), profile() as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in _MATMUL_OPS) / total


def serve(args) -> None:
    """Child process: build one variant, then answer ``run SECONDS`` / ``share`` / ``describe`` / ``quit`` on stdin."""
    kind, key, batch = args.serve
    if kind == "peak":

        def answer(command: list[str]) -> float:
            return matmul_peak(args.device, args.precision)
    else:
        make = _products_step if kind == "products" else functools.partial(_variant_step, kind)
        step = make(key, int(batch), args.device, args.precision)
        step()  # warm-up: first-call allocations and kernel choices

        def answer(command: list[str]) -> float:
            if command[0] == "share":
                return matmul_share(step, args.device)
            return _rate(step, getattr(step, "windows", N_WINDOWS), float(command[1]), args.device)

    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "quit":
            return
        print(json.dumps(environment(args.device) if command[0] == "describe" else answer(command)), flush=True)


class _Child:
    """One variant in its own process, answering one command at a time."""

    def __init__(self, args, kind: str, key: str, batch: int, precision: str):
        command = [
            sys.executable,
            __file__,
            "--serve",
            kind,
            key,
            str(batch),
            "--device",
            args.device,
            "--precision",
            precision,
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._read() != "ready":
            raise RuntimeError(f"{kind} {key} did not start")

    def _read(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"a benchmark process ended early (exit {self.process.wait()})")
        return line.strip()

    def ask(self, *command):
        self.process.stdin.write(" ".join(map(str, command)) + "\n")
        self.process.stdin.flush()
        return json.loads(self._read())

    def close(self) -> None:
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        self.process.wait()


def _one_shot(args, *command) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--once", *map(str, command)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["labram", "cbramod", "codebrain"])
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16"],
        default=None,
        help="default: fp32, plus bf16 where this device multiplies bf16 natively",
    )
    parser.add_argument(
        "--batch-sizes",
        nargs="+",
        type=int,
        default=None,
        help="neurofm batch sizes to compare (default: what batch_size='auto' gives this device)",
    )
    parser.add_argument("--plain-batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "MODEL", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--once", nargs=1, metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if args.once:
        print(json.dumps(gflop_per_window(args.once[0])))
        return

    from neurofm.configs import FoundationEmbeddingModelConfig
    from neurofm.embed import cpu_has_fast_bf16, resolve_batch_size

    if args.precisions is None:
        args.precisions = ["fp32"] + (["bf16"] if args.device.startswith("cuda") or cpu_has_fast_bf16() else [])
    batches = args.batch_sizes or [
        resolve_batch_size(FoundationEmbeddingModelConfig.model_fields["batch_size"].default, args.device)
    ]
    peak_children = {p: _Child(args, "peak", "-", 0, p) for p in dict.fromkeys(["fp32", *args.precisions])}
    env = peak_children["fp32"].ask("describe")
    on_cuda = "gpu" in env
    if on_cuda and env["cudnn_allow_tf32"] and not env["matmul_allow_tf32"]:
        # fp32 convolutions run on TF32 tensor cores, the limit's products do not: the TF32 rate, for reference
        peak_children["tf32"] = _Child(args, "peak", "-", 0, "tf32")
    peaks: dict[str, list[float]] = {p: [] for p in peak_children}
    print(describe(env))
    header = (
        f"{'model':<10} {'prec':<5} {'GFLOP/win':>9} {'limit win/s':>11} {'(a) plain':>10} {'(b) neurofm':>12} "
        f"{'batch':>5} {'(b)/(a)':>7} {'(a) % lim':>9} {'(b) % lim':>9} {'(b) % own':>9} {'matmul':>6} {'ceiling':>7}"
    )
    print(header)
    print("-" * len(header), flush=True)
    for key in args.models:
        gflop = _one_shot(args, key)
        for precision in args.precisions:
            children = {("plain", args.plain_batch): _Child(args, "plain", key, args.plain_batch, precision)}
            children |= {
                (kind, b): _Child(args, kind, key, b, precision) for b in batches for kind in ("neurofm", "products")
            }
            rounds: list[dict] = []
            for _ in range(args.rounds):
                measured = {name: child.ask("run", args.seconds) for name, child in children.items()}
                for p, child in peak_children.items():  # the limit drifts with the machine: measured every round
                    measured[("peak", p)] = child.ask("run", 0)
                    peaks[p].append(measured[("peak", p)])
                rounds.append(measured)
            plain = [r[("plain", args.plain_batch)] for r in rounds]
            for b in batches:
                ours = [r[("neurofm", b)] for r in rounds]

                def share_of_limit(rates, p, gflop=gflop, rounds=rounds):
                    return statistics.median(
                        rate * gflop / r[("peak", p)] for rate, r in zip(rates, rounds, strict=True)
                    )

                limit = statistics.median(r[("peak", "fp32")] for r in rounds) / gflop
                share = children[("neurofm", b)].ask("share")
                own = f"{100 * share_of_limit(ours, precision):>8.0f}%" if precision != "fp32" else f"{'':>9}"
                ceiling = share_of_limit([r[("products", b)] for r in rounds], precision)
                print(
                    f"{key:<10} {precision:<5} {gflop:>9.3f} {limit:>11.1f} {statistics.median(plain):>10.1f} "
                    f"{statistics.median(ours):>12.1f} {b:>5} "
                    f"{statistics.median(o / a for o, a in zip(ours, plain, strict=True)):>7.2f} "
                    f"{100 * share_of_limit(plain, 'fp32'):>8.0f}% {100 * share_of_limit(ours, 'fp32'):>8.0f}% "
                    f"{own} {100 * share:>5.0f}% {100 * ceiling:>6.0f}%",
                    flush=True,
                )
            for child in children.values():
                child.close()
    for child in peak_children.values():
        child.close()
    print()
    for p, values in peaks.items():
        if on_cuda:
            how = {
                "fp32": _matmul_mode(env),
                "bf16": "tensor cores",
                "tf32": "cuda.matmul.allow_tf32=True, what TF32 convolutions can reach; reference, not a limit",
            }[p]
            how = f"{how}; square products of {_CUDA_PEAK_SIZES[0]} to {_CUDA_PEAK_SIZES[-1]}, CUDA events"
        else:
            how = "best square product of each round"
        print(
            f"matrix multiply, {p} on {args.device}: median {statistics.median(values):.1f} GFLOP/s "
            f"(range {min(values):.1f}-{max(values):.1f}; {how})"
        )
    print(
        "limit win/s: fp32 rate / GFLOP per window; % lim: share of the fp32 limit (median over rounds of the share "
        "within each round); % own: share of the limit at the row's own precision; matmul: share of (b)'s operator "
        "time in matrix products and convolutions (torch profiler, one pass in one stream); ceiling: the share of the "
        "limit at the row's own precision reached by the model's own matrix products and convolutions replayed "
        "alone at their shapes, in (b)'s streams (what (b) would reach if nothing else took time)"
    )
    if on_cuda:
        tf32_note = (
            ". With convolutions in TF32 and products in IEEE fp32, an fp32 row's convolutions can beat the "
            "fp32 limit, so its % lim and ceiling can pass 100 % (up to tf32 rate / fp32 rate)"
        )
        print(
            "on CUDA: rates run until the device is synchronised; matmul is the share of (b)'s GPU kernel time "
            "(self device time) in kernels that multiply matrices (cuBLAS/CUTLASS products, flash and "
            "memory-efficient attention, cuDNN convolutions, by kernel name); the ceiling replays attention as "
            "the fused kernel PyTorch picks on this GPU" + (tf32_note if "tf32" in peaks else "")
        )
    print(
        f"medians of {args.rounds} rounds of {args.seconds:.0f} s per variant, {N_WINDOWS} windows "
        f"(19 ch, 4 s, 200 Hz), random weights, plain batch {args.plain_batch}"
    )


if __name__ == "__main__":
    main()
