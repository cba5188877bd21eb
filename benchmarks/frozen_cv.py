"""Frozen-backbone CV: a naive braindecode loop vs neurofm with a cold and a warm cache.

About 2000 simulated windows (19 channels, 160 Hz, 4 s), CBraMod at full size with
random weights, 5-fold stratified group CV by subject, 3 heads. Each variant runs
in its own process so that its wall time and peak resident memory are its own.
The wall time runs from data in memory to scores: imports and the simulation of
the data, the same for every variant, are timed apart ("setup s").

(a) naive: for every fold and head, resample and scale the windows and run a plain
    braindecode forward loop (torch.no_grad, batch 64) over train and test windows;
(b) neurofm, cold cache (embeddings computed once, shared by folds and heads);
(c) neurofm, warm cache (the same run again).

It prints how many windows each neurofm run embedded (cache misses): every
window in (b), none in (c). A warm run that misses is not what (c) claims to
measure, so the benchmark then fails.

Usage: python benchmarks/frozen_cv.py [--subjects 10 --per-class 100]
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

HEADS = {
    "LogisticRegression": {"max_iter": 1000},
    "LinearDiscriminantAnalysis": {},
    "RidgeClassifier": {},
}


def _data(args):
    from neurofm.simulate import simulate_eeg_dataset

    return simulate_eeg_dataset(n_subjects=args.subjects, n_windows_per_class=args.per_class, random_state=0)


def naive(data) -> dict:
    import warnings

    import numpy as np
    import torch
    from mne.filter import resample
    from sklearn import discriminant_analysis, linear_model
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold

    warnings.simplefilter("ignore")
    from braindecode.models import CBraMod

    X, y, meta, info = data
    torch.manual_seed(0)
    model = CBraMod(n_chans=19, n_times=800, sfreq=200, n_outputs=2).eval()

    def embed(windows):
        out = []
        with torch.no_grad():
            for start in range(0, len(windows), 64):
                batch = resample(windows[start : start + 64], up=5, down=4, axis=-1, verbose=False) * 1e6 / 100
                feats = model(torch.as_tensor(batch[..., :800], dtype=torch.float32), return_features=True)["features"]
                out.append(feats.mean(dim=(1, 2)).numpy())
        return np.concatenate(out)

    classes = {
        "LogisticRegression": linear_model.LogisticRegression,
        "RidgeClassifier": linear_model.RidgeClassifier,
        "LinearDiscriminantAnalysis": discriminant_analysis.LinearDiscriminantAnalysis,
    }
    scores = []
    cv = StratifiedGroupKFold(5, shuffle=True, random_state=0)
    for train, test in cv.split(X, y, meta["Subject"]):
        for head, params in HEADS.items():
            estimator = classes[head](**params).fit(embed(X[train]), y[train])
            scores.append(balanced_accuracy_score(y[test], estimator.predict(embed(X[test]))))
    return {"mean_balanced_accuracy": float(np.mean(scores))}


def neurofm_run(data, args) -> dict:
    from neurofm import Experiment
    from neurofm.configs import (
        ClassicalModelConfig,
        CVConfig,
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
    )

    X, y, meta, info = data
    backbone = FoundationEmbeddingModelConfig(model_key="cbramod", weights="random", pooling="mean")
    models = {
        head: FrozenBackboneDecoderConfig(backbone=backbone, head=ClassicalModelConfig(estimator=head, params=params))
        for head, params in HEADS.items()
    }
    cfg = ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy"],
        cache_dir=args.cache_dir,
        verbose=False,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=5, group_key="Subject"),
    )
    result = Experiment(cfg).run(X, y, sample_metadata=meta, **info)
    cache = result.get_model_artifacts(artifact_type="embedding_cache")
    misses = int(cache.query("ArtifactKey == 'misses'")["ArtifactValue"].sum())  # over the heads' models
    return {"mean_balanced_accuracy": float(result.summary()["mean"].mean()), "cache_misses": misses}


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    setup_start = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import braindecode.models  # noqa: F401 - both variants need it; import before timing

        import neurofm.experiment  # noqa: F401
    data = _data(args)
    setup = time.perf_counter() - setup_start
    start = time.perf_counter()
    extra = naive(data) if args.variant == "naive" else neurofm_run(data, args)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "setup_seconds": setup, "peak_mb": peak_mb, **extra}))


def run_variant(variant: str, args, cache_dir: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--cache-dir",
        cache_dir,
        "--subjects",
        str(args.subjects),
        "--per-class",
        str(args.per_class),
        "--threads",
        str(args.threads),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", dest="variant", default=None)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    if args.variant is not None:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="neurofm-bench-") as cache_dir:
        n = args.subjects * args.per_class * 2
        print(
            f"{n} windows (19 ch, 160 Hz, 4 s), CBraMod full size (random weights), 5-fold stratified group CV, "
            f"{len(HEADS)} heads, {args.threads} threads"
        )
        results = {
            "(a) naive braindecode loop": run_variant("naive", args, cache_dir),
            "(b) neurofm, cold cache": run_variant("neurofm", args, cache_dir),
            "(c) neurofm, warm cache": run_variant("neurofm", args, cache_dir),
        }
    print(f"{'variant':<30}{'wall s':>10}{'setup s':>10}{'peak MB':>10}{'bal. acc.':>11}{'misses':>8}")
    for name, r in results.items():
        print(
            f"{name:<30}{r['seconds']:>10.1f}{r['setup_seconds']:>10.1f}{r['peak_mb']:>10.0f}"
            f"{r['mean_balanced_accuracy']:>11.3f}{r.get('cache_misses', '-'):>8}"
        )
    a, b, c = (r["seconds"] for r in results.values())
    print(f"(a)/(b) = {a / b:.1f}x   (b)/(c) = {b / c:.1f}x   (goals: >= 10x each)")
    warm_misses = results["(c) neurofm, warm cache"]["cache_misses"]
    print(f"warm run: {warm_misses} cache misses (must be 0)")
    if warm_misses != 0:
        raise SystemExit(
            f"FAILED: the warm run embedded {warm_misses} window(s) again, so (c) did not measure a warm "
            "cache; find why the cache missed (its key changed between the two runs?) before quoting (c)."
        )


if __name__ == "__main__":
    main()
