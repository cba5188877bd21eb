"""bf16 against fp32 extraction on real recordings: how close the embeddings, how equal the decoding.

On CPUs with AMX (and on GPUs) ``precision: bf16`` embeds faster than fp32
(see ``extract_speed.py``); it also rounds every product to 8 significant
bits. This measures what that costs, on the two tasks of ``real_data.py``
(muse-n170 faces vs houses, uci-eeg-smni stimulus condition; stratified group
5-fold CV by subject):

- per window, the cosine similarity between the bf16 and the fp32 embedding
  (median and 1st percentile over windows), and the largest difference
  relative to the embeddings' spread;
- the balanced accuracy of a logistic-regression probe on each, fitted on
  the same folds, with the paired fold-by-fold comparison of the two
  (Nadeau-Bengio corrected t-test).

Backbones have RANDOM weights (none can be downloaded here): pretrained
weights may spread activations differently, so measure again on yours.

Usage: python benchmarks/bf16_fidelity.py [--models labram cbramod codebrain] [--data ../shared/data]
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np


def embeddings(epochs, key: str, precision: str, cache_dir: str) -> np.ndarray:
    from neurofm.estimators.frozen import FoundationEmbedder

    X = epochs.get_data()
    embedder = FoundationEmbedder(
        key,
        weights="random",
        sfreq=epochs.info["sfreq"],
        ch_names=epochs.ch_names,
        precision=precision,
        cache_dir=cache_dir,
        verbose=False,
    )
    return embedder.fit(X).transform(X)


def run_task(name: str, epochs, args) -> None:
    from neurofm import Experiment
    from neurofm.configs import (
        ClassicalModelConfig,
        CVConfig,
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
    )

    print(f"\n{name}: {len(epochs)} windows, {len(epochs.ch_names)} channels, {epochs.info['sfreq']:g} Hz")
    print(
        f"{'model':<11}{'cos median':>11}{'cos 1st pct':>12}{'max |diff| / sd':>16}{'bal. acc. fp32':>15}"
        f"{'bal. acc. bf16':>15}{'paired p':>9}{'s fp32':>8}{'s bf16':>8}"
    )
    for key in args.models:
        seconds = {}
        for precision in ("fp32", "bf16"):
            start = time.perf_counter()
            vectors = embeddings(epochs, key, precision, args.cache_dir)  # the run below reads them from the cache
            seconds[precision] = time.perf_counter() - start
            if precision == "fp32":
                reference = vectors
        cosine = np.sum(reference * vectors, axis=1) / (
            np.linalg.norm(reference, axis=1) * np.linalg.norm(vectors, axis=1)
        )
        worst = np.max(np.abs(vectors - reference)) / reference.std()
        models = {
            precision: FrozenBackboneDecoderConfig(
                backbone=FoundationEmbeddingModelConfig(model_key=key, weights="random", precision=precision),
                head=ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 1000}),
            )
            for precision in ("fp32", "bf16")
        }
        cfg = ExperimentConfig(
            models=models,
            metrics=["balanced_accuracy"],
            cache_dir=args.cache_dir,
            verbose=False,
            cv=CVConfig(strategy="stratified_group_kfold", n_splits=5, group_key="subject"),
        )
        result = Experiment(cfg).run(epochs, epochs.metadata["label"].to_numpy())
        summary = result.summary().set_index("Model")["mean"]
        p_value = result.compare("fp32", "bf16", "balanced_accuracy")["corrected_t_p"]  # nan when every fold ties
        print(
            f"{key:<11}{np.median(cosine):>11.5f}{np.percentile(cosine, 1):>12.5f}{worst:>16.3f}"
            f"{summary['fp32']:>15.3f}{summary['bf16']:>15.3f}{p_value:>9.2f}"
            f"{seconds['fp32']:>8.1f}{seconds['bf16']:>8.1f}",
            flush=True,
        )


def main() -> None:
    from real_data import load_tasks, task_parser  # the same recordings, cut and filtered the same way

    parser = task_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["labram", "cbramod", "codebrain"])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    for name, epochs in load_tasks(Path(args.data)):
        run_task(name, epochs, args)


if __name__ == "__main__":
    main()
