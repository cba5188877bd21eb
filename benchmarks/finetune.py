"""Train modes side by side: trainable parameters, peak memory and seconds per epoch.

One backbone at full size (REVE by default: 69 M parameters, mostly linear
layers, so quantisation and adapters matter), the same simulated windows
(19 channels, 160 Hz, 4 s) and the same trainer for every mode. Each mode runs
in its own process so that its peak resident memory is its own; "peak MB" is
that process's maximum resident set, "state MB" the bytes of parameters,
gradients and AdamW moments that the mode keeps (counted, not sampled).

Usage: python benchmarks/finetune.py [--model reve --windows 64 --epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODES = ("frozen", "full", "lora", "qlora", "dora", "ia3", "adalora", "oft")


def child(args) -> None:
    import warnings

    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    from neurofm.configs import CheckpointConfig, DeviceConfig, LoRAConfig, NeuralFineTuneConfig, TrainerConfig
    from neurofm.estimators.neural import NeuralFineTuner
    from neurofm.simulate import simulate_eeg_dataset

    X, y, meta, info = simulate_eeg_dataset(n_subjects=2, n_windows_per_class=args.windows // 4, random_state=0)
    cfg = NeuralFineTuneConfig(
        model_key=args.model,
        weights="random",
        train_mode=args.mode,
        lora=LoRAConfig(r=8, alpha=16),
        device=DeviceConfig(device="cpu"),
        checkpoints=CheckpointConfig(save="none", monitor="train_loss"),
        trainer=TrainerConfig(
            max_epochs=args.epochs, batch_size=8, validation_fraction=0.0, early_stopping_patience=None
        ),
    )
    est = NeuralFineTuner(cfg, sfreq=info["sfreq"], ch_names=info["ch_names"], verbose=False)
    start = time.perf_counter()
    est.fit(X, y)
    seconds = time.perf_counter() - start
    card = est.get_model_card_info()
    state = 0
    for p in est.net_.parameters():
        size = p.numel() * p.element_size()
        state += size + (3 * size if p.requires_grad else 0)  # + gradient + two AdamW moments
    history = est.get_training_history()
    print(
        json.dumps(
            {
                "trainable": card["trainable_parameters"],
                "total": card["total_parameters"],
                "seconds_per_epoch": float(sum(r["seconds"] for r in history) / len(history)),
                "fit_seconds": seconds,
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "state_mb": state / 2**20,
                "quantized_layers": card["quantized_layers"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="reve")
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", dest="mode", default=None)
    args = parser.parse_args()
    if args.mode is not None:
        child(args)
        return
    from neurofm.models import get_model_spec

    modes = [m for m in MODES if m in get_model_spec(args.model).train_modes]
    print(
        f"{args.model} at full size, {args.windows} windows (19 ch, 160 Hz, 4 s), batch 8, {args.epochs} epochs, "
        f"{args.threads} threads, CPU"
    )
    rows = {}
    for mode in modes:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--model",
            args.model,
            "--windows",
            str(args.windows),
            "--epochs",
            str(args.epochs),
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if out.returncode != 0:
            rows[mode] = None
            print(f"{mode}: failed\n{out.stderr[-2000:]}")
            continue
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    full = rows.get("full")
    print(f"{'mode':<9}{'trainable':>12}{'% of full':>11}{'state MB':>10}{'peak MB':>9}{'s/epoch':>9}")
    for mode, r in rows.items():
        if r is None:
            continue
        share = 100 * r["trainable"] / full["trainable"] if full else float("nan")
        print(
            f"{mode:<9}{r['trainable']:>12,}{share:>10.2f}%{r['state_mb']:>10.1f}{r['peak_mb']:>9.0f}{r['seconds_per_epoch']:>9.1f}"
        )


if __name__ == "__main__":
    main()
