"""Embedding extraction speed: a plain braindecode loop vs neurofm, and the hardware's limit.

For each model, on the same windows (19 channels of the 10-20 system, 4 s at
200 Hz, volts), side by side in one run:

(a) plain: the loop a user writes: ``model(x, return_features=True)`` under
    ``torch.no_grad()``, batch 64, windows already scaled for the model;
(b) neurofm: ``FoundationEmbedder(...).transform(X)`` from windows in volts, with
    its input adaptation and pooling included, cache off.

Each measurement runs in its own process (so nothing one variant sets, such as
allocator thresholds, helps the other); variants alternate for ``--rounds``
rounds and the median is reported, because this machine's speed drifts by 20 %
from minute to minute.

The limit is the model's FLOPs per window (counted with
``torch.utils.flop_counter`` on one forward) divided by the fp32 matrix-multiply
rate measured here (best of square products of 1024 to 4096, measured again
in every round because it drifts too). A model cannot beat it. Two things keep
a model below it: its own matrix products run slower than large square ones
(skinny shapes), and the time spent in everything else; the last column (the
share of time in matrix products, from the torch profiler) separates them.

Usage::

    python benchmarks/extract_speed.py                    # labram, cbramod, codebrain
    python benchmarks/extract_speed.py --models cbramod --batch-sizes 16 32 64 --rounds 5
    python benchmarks/extract_speed.py --device cuda --precision bf16 --batch-sizes 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

N_WINDOWS = 256
CHANNELS = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3", "Pz", "P4", "P8",
            "O1", "O2"]
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
    model = getattr(bd, spec.braindecode_class)(n_chans=len(CHANNELS), n_times=int(SFREQ * SECONDS), sfreq=SFREQ,
                                                n_outputs=2)
    forward_kwargs = {"return_features": True} | ({"ch_names": CHANNELS} if key == "labram" else {})  # LaBraM maps names
    return model.eval(), forward_kwargs


def matmul_peak(device: str, precision: str) -> float:
    """Best GFLOP/s of square matrix products on this device."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    best = 0.0
    for n in (1024, 2048, 4096):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        reps = 3 if device == "cpu" else 50
        for _ in range(3):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            _sync(device)
            best = max(best, reps * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def gflop_per_window(key: str) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, forward_kwargs = _plain_model(key)
    x = torch.from_numpy(_windows(1) * 1e4)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, **forward_kwargs)
    return counter.get_total_flops() / 1e9


def _rate(step, n_per_step: int, seconds: float, device: str) -> float:
    step()  # warm-up: first-call allocations and kernel choices
    _sync(device)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        done += n_per_step
    _sync(device)
    return done / (time.perf_counter() - t0)


def measure(variant: str, key: str, batch: int, seconds: float, device: str, precision: str) -> float:
    """Windows per second of one variant (runs in a child process)."""
    import contextlib

    import torch

    X = _windows(N_WINDOWS)
    autocast = (torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    if variant == "plain":
        model, forward_kwargs = _plain_model(key)
        model = model.to(device)
        scaled = torch.from_numpy(X * 1e4)  # volts -> the models' 100 µV units

        def step():
            with torch.no_grad(), autocast:
                for start in range(0, N_WINDOWS, batch):
                    model(scaled[start : start + batch].to(device), **forward_kwargs)

        return _rate(step, N_WINDOWS, seconds, device)
    from neurofm.estimators.frozen import FoundationEmbedder

    embedder = FoundationEmbedder(key, weights="random", sfreq=SFREQ, ch_names=CHANNELS, cache_embeddings=False,
                                  batch_size=batch, device=device, precision=precision, verbose=False).fit(X)
    return _rate(lambda: embedder.transform(X), N_WINDOWS, seconds, device)


_MATMUL_OPS = {"aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
               "aten::_scaled_dot_product_flash_attention_for_cpu"}


def matmul_share(key: str, batch: int, device: str, precision: str) -> float:
    """Share of neurofm's extraction time spent in matrix products and convolutions (torch profiler)."""
    from torch.profiler import profile

    from neurofm.estimators.frozen import FoundationEmbedder

    X = _windows(batch * 2)
    embedder = FoundationEmbedder(key, weights="random", sfreq=SFREQ, ch_names=CHANNELS, cache_embeddings=False,
                                  batch_size=batch, device=device, precision=precision, verbose=False).fit(X)
    embedder.transform(X)
    with profile() as prof:
        embedder.transform(X)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in _MATMUL_OPS) / total


def _child(args, *command) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", *map(str, command), "--device", args.device,
                          "--precision", args.precision], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["labram", "cbramod", "codebrain"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None,
                        help="neurofm batch sizes to compare (default: the config default)")
    parser.add_argument("--plain-batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--child", nargs=4, metavar=("VARIANT", "MODEL", "BATCH", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, key, batch, seconds = args.child
        if variant == "peak":
            print(json.dumps(matmul_peak(args.device, args.precision)))
        elif variant == "flops":
            print(json.dumps(gflop_per_window(key)))
        elif variant == "share":
            print(json.dumps(matmul_share(key, int(batch), args.device, args.precision)))
        else:
            print(json.dumps(measure(variant, key, int(batch), float(seconds), args.device, args.precision)))
        return

    from neurofm.configs import FoundationEmbeddingModelConfig

    batches = args.batch_sizes or [FoundationEmbeddingModelConfig.model_fields["batch_size"].default]
    peaks: list[float] = []
    header = (f"{'model':<10} {'GFLOP/win':>9} {'limit win/s':>11} {'(a) plain':>10} {'(b) neurofm':>12} "
              f"{'batch':>5} {'(b)/(a)':>7} {'(a) % limit':>11} {'(b) % limit':>11} {'matmul time':>11}")
    print(header)
    print("-" * len(header))
    for key in args.models:
        gflop = _child(args, "flops", key, 0, 0)
        plain, ours, model_peaks = [], {b: [] for b in batches}, []
        for _ in range(args.rounds):
            model_peaks.append(_child(args, "peak", "-", 0, 0))  # the limit drifts with the machine: measured each round
            plain.append(_child(args, "plain", key, args.plain_batch, args.seconds))
            for b in batches:
                ours[b].append(_child(args, "neurofm", key, b, args.seconds))
        peaks += model_peaks
        limit = statistics.median(model_peaks) / gflop
        a = statistics.median(plain)
        for b in batches:
            rate = statistics.median(ours[b])
            share = _child(args, "share", key, b, 0)
            print(f"{key:<10} {gflop:>9.3f} {limit:>11.1f} {a:>10.1f} {rate:>12.1f} {b:>5} {rate / a:>7.2f} "
                  f"{100 * a / limit:>10.0f}% {100 * rate / limit:>10.0f}% {100 * share:>10.0f}%", flush=True)
    print(f"\nmatrix multiply, {args.precision} on {args.device}: median {statistics.median(peaks):.1f} GFLOP/s "
          f"(range {min(peaks):.1f}-{max(peaks):.1f}; best square product of each round)")
    print("matmul time: share of (b)'s time in matrix products and convolutions (torch profiler, one pass)")
    print(f"medians of {args.rounds} alternating rounds of {args.seconds:.0f} s, {N_WINDOWS} windows "
          f"(19 ch, 4 s, 200 Hz), random weights, plain batch {args.plain_batch}")


if __name__ == "__main__":
    main()
