"""The same experiment on every execution backend: wall time, and scores that must not change.

Simulated motor imagery (19 channels, 160 Hz, 4 s), 5-fold group CV,
``--permutations`` label permutations, three models: a frozen CBraMod
(full size, random weights) with a logistic-regression head, a Riemannian
tangent-space baseline (ts_lr) and band power (bandpower_lr). Every backend
starts from an empty embedding cache, so its workers run the extraction
shards too. Local engines get ``--workers`` processes (a cluster would give
more). The script checks that every backend's scores and p-values equal the
sequential run's.

Usage: python benchmarks/backends.py [--workers 2 --permutations 10 --backends sequential joblib dask ray submitit]
"""

from __future__ import annotations

import argparse
import tempfile
import time


def run(backend: str, workers: int, permutations: int, data, tmp: str):
    from neurofm import Experiment
    from neurofm.configs import (
        ClassicalModelConfig,
        CVConfig,
        ExecutionConfig,
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
    )

    X, y, meta, info = data
    extra = {"submitit_cluster": "local", "submitit_folder": f"{tmp}/submitit"} if backend == "submitit" else {}
    config = ExperimentConfig(
        models={
            "cbramod_lr": FrozenBackboneDecoderConfig(
                backbone=FoundationEmbeddingModelConfig(model_key="cbramod", weights="random"),
                head=ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 1000}),
            ),
            "ts_lr": ClassicalModelConfig(estimator="ts_lr"),
            "bandpower_lr": ClassicalModelConfig(estimator="bandpower_lr"),
        },
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=5, group_key="Subject"),
        n_permutations=permutations,
        cache_dir=f"{tmp}/cache-{backend}",
        verbose=False,
        execution=ExecutionConfig(backend=backend, n_jobs=workers, **extra),
    )
    t0 = time.perf_counter()
    result = Experiment(config).run(X, y, sample_metadata=meta, **info)
    return time.perf_counter() - t0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--permutations", type=int, default=10)
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--backends", nargs="+", default=["sequential", "joblib", "dask", "ray", "submitit"])
    args = parser.parse_args()

    from neurofm.simulate import simulate_eeg_dataset

    data = simulate_eeg_dataset(n_subjects=args.subjects, n_windows_per_class=args.per_class, random_state=0)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            seconds, result = run(backend, args.workers, args.permutations, data, tmp)
            same = None
            if reference is None:
                reference = result
            else:
                same = result.scores.equals(reference.scores) and result.get_statistics().equals(
                    reference.get_statistics()
                )
            rows.append((backend, seconds, same))
    base = rows[0][1]
    print(
        f"{len(data[0])} windows, 3 models x 5 folds, {args.permutations} permutations, "
        f"{args.workers} workers, cold cache\n"
    )
    print(f"{'backend':<12} {'wall s':>8} {'vs ' + rows[0][0]:>16} {'same scores':>12}")
    for backend, seconds, same in rows:
        print(f"{backend:<12} {seconds:>8.1f} {base / seconds:>15.2f}x {'reference' if same is None else same!s:>12}")


if __name__ == "__main__":
    main()
