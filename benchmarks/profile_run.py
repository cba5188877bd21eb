"""Where the time of a full ``Experiment.run`` goes: validation, adaptation, backbone, cache, heads, I/O.

Runs one experiment under ``cProfile`` twice (cold cache, then warm) and sorts
its wall time into stages by the cumulative time of the functions that own
them. Data: simulated motor imagery (19 channels, 160 Hz, 4 s, volts; the
backbones run at 200 Hz, so adaptation resamples). Models: full-size CBraMod
(random weights) with a logistic-regression head, and the band-power baseline;
LaBraM fine-tuned with LoRA (random weights, two layers, 2 epochs); 5-fold group
CV; ``--permutations`` label permutations (of the frozen and classical models:
trainable ones are not permuted by default); results saved to disk.

The last line splits the wall time into the backbones' own work (building
them, their forward passes, the training and prediction loops) and neurofm's
overhead around them: what "prepare once" is measured on. ``--scores FILE``
writes the warm run's scores with every bit (``float.hex``), so that two trees
can be compared: run the script once per tree, the other tree's ``src`` on
``PYTHONPATH``.

Usage: python benchmarks/profile_run.py [--subjects 6 --per-class 40 --permutations 5 --scores scores.txt]
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
    ("pooling", "neurofm/embed.py", "pool_tokens"),
    ("fine-tuning: training loop", "neurofm/training.py", "train_network"),
    ("fine-tuning: prediction", "neurofm/training.py", "predict_network"),
    ("fold fits and scores", "neurofm/tasks.py", "run_fold"),
    ("permutation refits", "neurofm/experiment.py", "_permutation_test"),
    ("save results", "neurofm/results.py", "save"),
]


# The backbones' own work; everything else is neurofm's overhead around them.
BACKBONE_STAGES = (
    "build backbone (first: import braindecode)",
    "backbone forward",
    "fine-tuning: training loop",
    "fine-tuning: prediction",
)


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    return sum(row[3] for (path, _, func), row in stats.stats.items() if func == name and path.endswith(suffix))


def _by_caller(stats: pstats.Stats, suffix: str, name: str, caller_suffix: str) -> tuple[float, float]:
    """Cumulative time of a function: called from the module ``caller_suffix``, and from everywhere else."""
    inside = outside = 0.0
    for (path, _, func), row in stats.stats.items():
        if func == name and path.endswith(suffix):
            for (caller_path, _, _), caller_row in row[4].items():
                if caller_path.endswith(caller_suffix):
                    inside += caller_row[3]
                else:
                    outside += caller_row[3]
    return inside, outside


def profile_once(data, cache_dir: str, out_dir: str, permutations: int) -> tuple[float, dict[str, float], object]:
    """One run under the profiler: its wall time, its stages' times and its result."""
    from neurofm import Experiment
    from neurofm.configs import (
        ClassicalModelConfig,
        CVConfig,
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
        NeuralFineTuneConfig,
        TrainerConfig,
    )
    from neurofm.models import get_model_spec

    X, y, meta, info = data
    config = ExperimentConfig(
        models={
            "cbramod_lr": FrozenBackboneDecoderConfig(
                backbone=FoundationEmbeddingModelConfig(model_key="cbramod", weights="random"),
                head=ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 1000}),
            ),
            "bandpower_lr": ClassicalModelConfig(estimator="bandpower_lr"),
            "labram_lora": NeuralFineTuneConfig(
                model_key="labram",
                weights="random",
                train_mode="lora",
                model_kwargs=get_model_spec("labram").tiny_kwargs,
                trainer=TrainerConfig(max_epochs=2, batch_size=32),
            ),
        },
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=5, group_key="Subject"),
        n_permutations=permutations,
        cache_dir=cache_dir,
        verbose=False,
    )
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    result = Experiment(config).run(X, y, sample_metadata=meta, **info)
    result.save(out_dir)
    profiler.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    stages = {stage: _cumulative(stats, suffix, name) for stage, suffix, name in STAGES}
    embed = _cumulative(stats, "neurofm/embed.py", "embed_windows")
    # Extraction adapts in embed.py (on a GPU in a thread of its own, which the profiler does not see);
    # the fine-tuner adapts its windows elsewhere.
    frozen_adaptation, tuning_adaptation = _by_caller(stats, "neurofm/adapt/plan.py", "apply", "neurofm/embed.py")
    tuning_build, _ = _by_caller(stats, "neurofm/models/registry.py", "create_backbone", "estimators/neural.py")
    stages["input adaptation (frozen)"] = frozen_adaptation
    stages["input adaptation (fine-tuning)"] = tuning_adaptation
    # The backbone's own forward: extraction minus the adaptation and pooling it also runs.
    stages["backbone forward"] = max(0.0, embed - frozen_adaptation - stages["pooling"])
    # Fold fits hold the training and prediction loops (and the fine-tuner's adaptation): counted once, there.
    stages["fold fits and scores"] -= stages["fine-tuning: training loop"] + stages["fine-tuning: prediction"]
    # Adapted inside the folds' fits, or once per run ahead of them (``_trainable_windows``, where it exists).
    ahead = _cumulative(stats, "neurofm/experiment.py", "_trainable_windows")
    stages["fold fits and scores"] -= tuning_adaptation - ahead + tuning_build
    # The stages do not nest (the backbone is built before its first forward, outside embed_windows).
    stages["other (assembly, bookkeeping)"] = max(0.0, wall - sum(stages.values()))
    return wall, stages, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--permutations", type=int, default=5)
    parser.add_argument("--scores", help="write the warm run's scores here, every bit (float.hex), to compare trees")
    args = parser.parse_args()

    from neurofm.simulate import simulate_eeg_dataset

    data = simulate_eeg_dataset(n_subjects=args.subjects, n_windows_per_class=args.per_class, random_state=0)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            label: profile_once(data, f"{tmp}/cache", f"{tmp}/{label}", args.permutations)
            for label in ("cold cache", "warm cache")
        }
    print(
        f"Experiment.run profile: {len(data[0])} windows (19 ch, 160 Hz, 4 s), full-size CBraMod + LR head, "
        f"bandpower_lr and a two-layer LaBraM LoRA (2 epochs), 5-fold group CV, {args.permutations} permutations, "
        "results saved\n"
    )
    stages = list(runs["cold cache"][1])
    print(f"{'stage':<44}" + "".join(f"{label:>22}" for label in runs))
    for stage in stages:
        cells = "".join(
            f"{runs[label][1][stage]:>12.2f} s {100 * runs[label][1][stage] / runs[label][0]:>6.1f} %" for label in runs
        )
        print(f"{stage:<44}{cells}")
    print(f"{'wall':<44}" + "".join(f"{runs[label][0]:>12.2f} s {100.0:>6.1f} %" for label in runs))
    backbone_stages = BACKBONE_STAGES
    for label in runs:
        wall, stages, _ = runs[label]
        own = sum(stages[stage] for stage in backbone_stages)
        print(f"{label}: backbones {own:.2f} s, neurofm around them {wall - own:.2f} s")
    if args.scores:
        result = runs["warm cache"][2]
        chance = result.artifacts[result.artifacts["ArtifactType"] == "permutation_test"]
        with open(args.scores, "w") as out:
            for row in result.scores.itertuples(index=False):
                out.write(f"{row.Model} {row.Fold} {row.Metric} {float(row.Value).hex()}\n")
            for row in chance.itertuples(index=False):
                if isinstance(row.ArtifactValue, str):  # "skipped" notes
                    continue
                out.write(f"{row.Model} {row.ArtifactKey} {float(row.ArtifactValue).hex()}\n")
        print(f"scores written to {args.scores}")


if __name__ == "__main__":
    main()
