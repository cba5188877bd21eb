"""Permutation test of a ridge probe: closed form vs refitting, side by side in one run.

2000 cached embeddings (simulated, 200 dimensions as CBraMod's, two classes with
a small mean shift, 10 subjects), 5-fold stratified group CV by subject, the
ridge probe with its default 19 penalties chosen by 5 inner group folds. Both paths
are the experiment's own functions on the same permuted labels:

(a) refit: ``neurofm.tasks.run_permutation`` (what every other head gets), timed on
    ``--refit`` permutations (the whole 1000 take minutes on 2 cores; each
    permutation costs the same, so the per-permutation time is what is compared);
(b) closed form: ``neurofm.tasks.ridge_permutations`` on all ``--permutations``.

It checks that (a) and (b) give the same scores, bit for bit, on the permutations
(a) ran, then prints seconds per permutation of each and their ratio; the issue's
goal is a ratio of at least 50. ``--refit 1000`` times (a) on every permutation.
Both are timed ``--rounds`` times, back to back in each round; the fastest
round of each path is the least disturbed by other work on the machine.

Usage: python benchmarks/permutations.py [--permutations 1000 --refit 40 --rounds 2 --dim 200 --windows 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--refit", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from neurofm.configs import CVConfig
    from neurofm.cv import make_splits
    from neurofm.estimators.ridge_probe import RidgeProbe
    from neurofm.tasks import PermutationTask, SharedInputs, permute_labels, ridge_permutations, run_permutation

    rng = np.random.default_rng(0)
    y = np.asarray(["left", "right"])[rng.integers(0, 2, args.windows)]
    subjects = np.repeat(np.arange(10), -(-args.windows // 10))[: args.windows]
    shift = rng.standard_normal(args.dim) * 0.15
    X = (rng.standard_normal((args.windows, args.dim)) + np.where(y == "right", 1.0, 0.0)[:, None] * shift).astype(
        np.float32
    )
    meta = {"Subject": subjects}
    import pandas as pd

    cv = CVConfig(strategy="stratified_group_kfold", n_splits=args.folds, group_key="Subject")
    splits = make_splits(cv, y, pd.DataFrame(meta), "classification", 0)
    classes = np.unique(y)
    metrics = ("balanced_accuracy", "roc_auc")
    permuted_rng = np.random.default_rng(0)
    permuted = [permute_labels(y, subjects, permuted_rng) for _ in range(args.permutations)]
    probe = RidgeProbe(task="classification", random_state=0)

    n_refit = min(args.refit, args.permutations)
    shared = SharedInputs({"probe": X}, y, subjects)
    rows = []
    for round_ in range(1, args.rounds + 1):
        # Each round times both paths back to back: a load that comes and goes then reaches both alike.
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        closed = ridge_permutations(probe, X, permuted, splits, classes, metrics, groups=subjects)
        closed_s = time.perf_counter() - started
        started = time.perf_counter()
        refitted = [
            run_permutation(PermutationTask(probe, False, labels, splits, classes, metrics), shared)
            for labels in permuted[:n_refit]
        ]
        refit_s = time.perf_counter() - started
        if refitted != closed[:n_refit]:
            raise SystemExit("closed form and refit disagree on the same permutations: the comparison is void")
        rows.append((round_, refit_s / n_refit, closed_s / args.permutations, load_before, os.getloadavg()[0]))

    print(f"machine: {_cpu_name()}, {os.cpu_count()} cores, numpy {np.__version__}")
    print(
        f"{args.windows} embeddings x {args.dim}, {args.folds} folds, {len(probe.alphas)} penalties x "
        f"{probe.inner_splits} inner folds; (a) refit timed on {n_refit} permutations, (b) closed form on "
        f"{args.permutations}; scores identical on {n_refit} in every round"
    )
    # Contention inflates the refit (6 decompositions per fold and permutation) more than the closed form: the load is shown.
    print(
        "| round | (a) refit, ms per permutation | (b) closed form, ms per permutation | ratio | load before, after |"
    )
    print("|---|---:|---:|---:|---|")
    for round_, per_refit, per_closed, before, after in rows:
        print(
            f"| {round_} | {1000 * per_refit:.1f} | {1000 * per_closed:.2f} | {per_refit / per_closed:.0f}x | "
            f"{before:.2f}, {after:.2f} |"
        )
    best_refit, best_closed = min(row[1] for row in rows), min(row[2] for row in rows)
    print(
        f"fastest round of each: {1000 * best_refit:.1f} vs {1000 * best_closed:.2f} ms per permutation, "
        f"closed form {best_refit / best_closed:.0f}x faster"
    )
    print(f"(first permutation's balanced accuracy: {closed[0]['balanced_accuracy']:.3f})")


def _cpu_name() -> str:
    """The processor's model name as ``lscpu`` shows it (Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
