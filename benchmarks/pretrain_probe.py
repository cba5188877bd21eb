"""Does pretraining on unlabeled recordings help? A small LaBraM, pretrained here, against random weights.

1. Pretrain a small LaBraM with neurofm's two-stage recipe (VQ-NSP tokenizer,
   then masked code prediction) on unlabeled recordings from ../shared/data:
   the continuous Muse recordings of the pretraining subjects and the EEGMMI
   runs. The probe subjects are left out of pretraining entirely.
2. Probe: face vs house (muse-n170) windows of the held-out subjects only,
   frozen backbone + logistic regression, stratified 5-fold CV over those
   windows, for the pretrained backbone and for the same architecture with
   random weights (and band power + LR for reference). Balanced accuracy mean
   and spread over folds, and a paired comparison on the same folds.

Prints the pretraining cost (steps, wall time, peak memory) and the probe table.
The defaults are the run of the README's table (about 17 minutes on 2 CPU cores).

Usage: python benchmarks/pretrain_probe.py [--tokenizer-steps 1000] [--masked-steps 1500] [--batch-size 32]
       [--window 2] [--out /tmp/neurofm-pretrain-probe]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

HELD_OUT = ("subject2", "subject3")
BACKBONE = {"num_layers": 4, "num_heads": 4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--out", default="/tmp/neurofm-pretrain-probe")
    parser.add_argument("--tokenizer-steps", type=int, default=1000)
    parser.add_argument("--masked-steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--window", type=float, default=2.0, help="pretraining window (s)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import mne

    from neurofm import Experiment
    from neurofm.configs import (
        ClassicalModelConfig,
        CVConfig,
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
        PreprocessingConfig,
    )
    from neurofm.loaders import load_muse_csv
    from neurofm.pretrain import PretrainConfig, pretrain

    mne.set_log_level("ERROR")
    data, out = Path(args.data), Path(args.out)
    corpus = {
        "paths": [str(data / "muse-n170"), str(data / "eegmmi")],
        "exclude": [f"*/{subject}/*" for subject in HELD_OUT],
        "window_seconds": args.window,
        "reject_peak_to_peak": 500e-6,
    }
    common = {"corpus": corpus, "progress": False, "checkpoint_every": 100, "seed": 0}
    stages = [
        PretrainConfig(
            stage="tokenizer",
            output_dir=str(out / "tokenizer"),
            tokenizer={"codebook_size": 1024, "code_dim": 32, "depth": 2, "num_heads": 4, "decoder_depth": 1},
            optimizer={
                "max_steps": args.tokenizer_steps,
                "batch_size": args.batch_size,
                "lr": 5e-4,
                "warmup_steps": 20,
                "weight_decay": 1e-4,
                "betas": (0.9, 0.99),
            },
            **common,
        ),
        PretrainConfig(
            stage="masked",
            output_dir=str(out / "masked"),
            tokenizer_run=str(out / "tokenizer"),
            backbone_kwargs=BACKBONE,
            optimizer={"max_steps": args.masked_steps, "batch_size": args.batch_size, "lr": 5e-4, "warmup_steps": 30},
            **common,
        ),
    ]
    print(
        f"Pretraining corpus: Muse recordings without {', '.join(HELD_OUT)}, and EEGMMI S001 (runs 4, 8, 12); "
        f"{args.window:g} s windows at 200 Hz; batch {args.batch_size}."
    )
    for stage in stages:
        result = pretrain(stage)
        import pandas as pd

        history = pd.read_csv(result.output_dir / "history.csv")
        extra = (
            f"perplexity {history['perplexity'].iloc[-1]:.1f}, dead codes {int(history['dead_codes'].iloc[-1])}"
            if stage.stage == "tokenizer"
            else f"masked-code accuracy {history['code_accuracy'].iloc[-10:].mean():.3f}"
        )
        print(
            f"  {stage.stage:<9} {result.steps} steps, {result.wall_seconds:.0f} s "
            f"({result.wall_seconds / max(result.steps - result.resumed_from, 1):.2f} s/step), peak memory "
            f"{result.peak_memory_mb:.0f} MB; loss {history['loss'].iloc[0]:.3f} -> {history['loss'].iloc[-10:].mean():.3f}; "
            f"{extra}"
        )

    epochs = load_muse_csv(
        data / "muse-n170",
        tmin=0.0,
        tmax=1.0,
        reject_peak_to_peak=200e-6,
        preprocessing=PreprocessingConfig(l_freq=1.0, h_freq=30.0),
    )
    epochs = epochs[epochs.metadata["subject"].isin(HELD_OUT).to_numpy()]
    head = ClassicalModelConfig(estimator="LogisticRegression", params={"max_iter": 2000})
    models = {
        "labram pretrained here": FrozenBackboneDecoderConfig(
            backbone=FoundationEmbeddingModelConfig(model_key="labram", weights=str(out / "masked")), head=head
        ),
        "labram random": FrozenBackboneDecoderConfig(
            backbone=FoundationEmbeddingModelConfig(model_key="labram", weights="random", model_kwargs=BACKBONE),
            head=head,
        ),
        "bandpower_lr": ClassicalModelConfig(estimator="bandpower_lr"),
    }
    config = ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy"],
        verbose=False,
        cache_dir=str(out / "cache"),
        cv=CVConfig(strategy="stratified_kfold", n_splits=5),
    )
    start = time.perf_counter()
    result = Experiment(config).run(epochs, epochs.metadata["label"].to_numpy())
    summary = result.summary().set_index("Model")
    counts = {k: int(v) for k, v in epochs.metadata["label"].value_counts().items()}
    print(
        f"\nProbe: face vs house, held-out subjects {', '.join(HELD_OUT)}: {len(epochs)} windows {counts}, 1 s, "
        f"4 channels; stratified 5-fold; {time.perf_counter() - start:.0f} s"
    )
    print(f"{'model':<26}{'bal. acc.':>10}{'± sd':>8}")
    for name in models:
        print(f"{name:<26}{summary.loc[name, 'mean']:>10.3f}{summary.loc[name, 'std']:>8.3f}")
    comparison = result.compare("labram pretrained here", "labram random", "balanced_accuracy")
    print(
        f"pretrained - random, paired over the same folds: mean {comparison['mean_difference']:+.3f}, "
        f"corrected resampled t-test p = {comparison['corrected_t_p']:.3f}, Wilcoxon p = {comparison['wilcoxon_p']:.3f}"
    )


if __name__ == "__main__":
    main()
