"""Where the time of a full ``Experiment.run`` goes: validation, adaptation, backbone, cache, heads, I/O.

Runs one experiment under ``cProfile`` twice (cold cache, then warm) and sorts
its wall time into stages by the cumulative time of the functions that own
them. Data: simulated motor imagery (19 channels, 160 Hz, 4 s, volts; the
backbones run at 200 Hz, so adaptation resamples). Models: full-size CBraMod
(random weights) with a logistic-regression head, and the band-power baseline;
5-fold group CV; ``--permutations`` label permutations; results saved to disk.

Usage: python benchmarks/profile_run.py [--subjects 6 --per-class 40 --permutations 5]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time

# (stage, module file suffix, function name): cumulative time of the function is the stage's time.
STAGES = [
    ("validate inputs", "neurofm/data.py", "prepare_inputs"),
    ("make folds", "neurofm/cv.py", "make_splits"),
    ("plan adaptations, resolve weights", "neurofm/experiment.py", "_prepare"),
    ("build backbone (first: import braindecode)", "neurofm/models/registry.py", "create_backbone"),
    ("cache: hash windows", "neurofm/cache.py", "hash_windows"),
    ("cache: look up", "neurofm/cache.py", "lookup"),
    ("cache: store packs", "neurofm/cache.py", "store"),
    ("input adaptation", "neurofm/adapt.py", "apply"),
    ("pooling", "neurofm/embed.py", "pool_tokens"),
    ("fold fits and scores", "neurofm/tasks.py", "run_fold"),
    ("permutation refits", "neurofm/experiment.py", "_permutation_test"),
    ("save results", "neurofm/results.py", "save"),
]


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    return sum(row[3] for (path, _, func), row in stats.stats.items() if func == name and path.endswith(suffix))


def profile_once(data, cache_dir: str, out_dir: str, permutations: int) -> tuple[float, dict[str, float]]:
    from neurofm import Experiment
    from neurofm.configs import (
        ClassicalModelConfig,
        CVConfig,
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
    )

    X, y, meta, info = data
    config = ExperimentConfig(
        models={
            "cbramod_lr": FrozenBackboneDecoderConfig(
                backbone=FoundationEmbeddingModelConfig(model_key="cbramod", weights="random"),
                head=ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 1000}),
            ),
            "bandpower_lr": ClassicalModelConfig(estimator="bandpower_lr"),
        },
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=5, group_key="Subject"),
        n_permutations=permutations,
        cache_dir=cache_dir,
        verbose=False,
    )
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    Experiment(config).run(X, y, sample_metadata=meta, **info).save(out_dir)
    profiler.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    stages = {stage: _cumulative(stats, suffix, name) for stage, suffix, name in STAGES}
    embed = _cumulative(stats, "neurofm/embed.py", "embed_windows")
    # The backbone's own forward: extraction minus the adaptation and pooling it also runs.
    stages["backbone forward"] = max(0.0, embed - stages["input adaptation"] - stages["pooling"])
    # The stages do not nest (the backbone is built before its first forward, outside embed_windows).
    stages["other (assembly, bookkeeping)"] = max(0.0, wall - sum(stages.values()))
    return wall, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--permutations", type=int, default=5)
    args = parser.parse_args()

    from neurofm.simulate import simulate_eeg_dataset

    data = simulate_eeg_dataset(n_subjects=args.subjects, n_windows_per_class=args.per_class, random_state=0)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            label: profile_once(data, f"{tmp}/cache", f"{tmp}/{label}", args.permutations)
            for label in ("cold cache", "warm cache")
        }
    print(
        f"Experiment.run profile: {len(data[0])} windows (19 ch, 160 Hz, 4 s), full-size CBraMod + LR head and "
        f"bandpower_lr, 5-fold group CV, {args.permutations} permutations, results saved\n"
    )
    stages = list(runs["cold cache"][1])
    print(f"{'stage':<44}" + "".join(f"{label:>22}" for label in runs))
    for stage in stages:
        cells = "".join(
            f"{runs[label][1][stage]:>12.2f} s {100 * runs[label][1][stage] / runs[label][0]:>6.1f} %" for label in runs
        )
        print(f"{stage:<44}{cells}")
    print(f"{'wall':<44}" + "".join(f"{runs[label][0]:>12.2f} s {100.0:>6.1f} %" for label in runs))


if __name__ == "__main__":
    main()
