"""Embeddings for windows larger than memory: peak resident memory while streaming a memmap.

Writes ``--gigabytes`` of float32 windows (19 channels, 4 s at 200 Hz, volts)
to a ``.npy`` file, then, in a fresh process, runs a whole
``Experiment.run`` on ``np.load(path, mmap_mode="r")``: validation (one pass
over the file), embedding by a frozen CBraMod (tiny config by default, so the
run takes minutes, not hours; ``--full`` for the published size) into the
embedding cache, and 5-fold CV of a logistic-regression head. It prints the
process's peak resident memory (``ru_maxrss``) next to the size of the file and
the baseline: the memory the process held after importing what the run uses
(torch, braindecode's models, MNE, scikit-learn, neurofm) and before reading
any window, so that the peak minus the baseline is the run's own cost.

Usage: python benchmarks/memmap_extract.py [--gigabytes 8] [--dir /tmp] [--full]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from neurofm.simulate import STANDARD_1020_19

CHANNELS = list(STANDARD_1020_19)  # the 10-20 system's 19 channels, in that order
N_TIMES = 800


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def write(path: str, gigabytes: float) -> int:
    """Write the windows with plain file writes, chunk by chunk (this process never maps the file)."""
    import numpy as np

    window_bytes = 4 * len(CHANNELS) * N_TIMES
    n = int(gigabytes * 2**30 // window_bytes)
    rng = np.random.default_rng(0)
    header = {"descr": "<f4", "fortran_order": False, "shape": (n, len(CHANNELS), N_TIMES)}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for start in range(0, n, 1024):
            count = min(1024, n - start)
            chunk = 20e-6 * rng.standard_normal((count, len(CHANNELS), N_TIMES), dtype=np.float32)
            chunk[:, :, :50] += (np.arange(start, start + count) % 2)[:, None, None] * 5e-6  # a learnable class
            fh.write(chunk.tobytes())
    return n


def run(path: str, cache_dir: str, full: bool) -> dict:
    # neurofm imports torch and braindecode lazily, inside the run: import them first so the baseline holds
    # the libraries and the peak above it is the run's cost alone.
    import braindecode.models  # noqa: F401  (imports torch and MNE)
    import numpy as np
    import sklearn.linear_model  # noqa: F401

    from neurofm import Experiment
    from neurofm.configs import (
        ClassicalModelConfig,
        CVConfig,
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
    )
    from neurofm.models import get_model_spec

    after_imports = _peak_mb()
    X = np.load(path, mmap_mode="r")
    y = np.arange(len(X)) % 2
    kwargs = {} if full else get_model_spec("cbramod").tiny_kwargs
    config = ExperimentConfig(
        models={
            "cbramod": FrozenBackboneDecoderConfig(
                backbone=FoundationEmbeddingModelConfig(model_key="cbramod", weights="random", model_kwargs=kwargs),
                head=ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 200}),
            )
        },
        cv=CVConfig(strategy="stratified_kfold", n_splits=5),
        cache_dir=cache_dir,
        verbose=False,
    )
    t0 = time.perf_counter()
    result = Experiment(config).run(X, y, sfreq=200.0, ch_names=CHANNELS)
    return {
        "windows": len(X),
        "seconds": time.perf_counter() - t0,
        "after_imports_mb": after_imports,
        "peak_mb": _peak_mb(),
        "balanced_accuracy": float(result.scores["Value"].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=8.0)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--full", action="store_true", help="full-size CBraMod (about 100 windows/s on 2 cores)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(*args.child, args.full)))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = os.path.join(tmp, "windows.npy")
        t0 = time.perf_counter()
        n = write(path, args.gigabytes)
        size_gb = os.path.getsize(path) / 2**30
        print(f"wrote {n} windows, {size_gb:.2f} GB, in {time.perf_counter() - t0:.0f} s")
        command = [sys.executable, __file__, "--child", path, os.path.join(tmp, "cache")] + (["--full"] * args.full)
        out = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    print(
        f"Experiment.run on a {size_gb:.2f} GB memmap ({out['windows']} windows, "
        f"{'full' if args.full else 'tiny'} CBraMod, 5-fold CV): {out['seconds']:.0f} s"
    )
    print(
        f"peak resident memory: {out['peak_mb'] / 1024:.2f} GB "
        f"(after importing torch, braindecode and neurofm: {out['after_imports_mb'] / 1024:.2f} GB, so the run's "
        f"own: {(out['peak_mb'] - out['after_imports_mb']) / 1024:.2f} GB; the file: {size_gb:.2f} GB)"
    )
    print(f"balanced accuracy {out['balanced_accuracy']:.3f}")


if __name__ == "__main__":
    main()
