"""Fault injection: kill an experiment with SIGKILL at random moments, resume it, compare with an uninterrupted run.

Each trial starts an experiment in a child process (a classical model, a
frozen CBraMod probe, a fine-tuned CBraMod; 3 folds; 3 label permutations;
an embedding cache and an output folder of its own) and kills it with
SIGKILL at one moment drawn at random from one of four kinds:

- ``random``: after a random delay, wherever the run is;
- ``extraction``: at a random backbone forward of the embedding extraction;
- ``training``: at a random optimiser step of the fine-tuning;
- ``writing``: at a random file write, with the temporary file cut to half
  its bytes (as if the process died mid-write), before it is renamed.

After each kill it checks that no file is half-written (every result table,
progress record, cache pack and checkpoint reads back and verifies), resumes
the run to its end in a new process, and checks that the final results equal
those of an uninterrupted run.

Usage::

    python tests/crash_resume.py --kills 20          # prints one line per trial and a summary
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("random", "extraction", "training", "writing")


def _config(workdir: Path):
    from neurofm.configs import (
        CheckpointConfig,
        ClassicalModelConfig,
        CVConfig,
        ExperimentConfig,
        FoundationEmbeddingModelConfig,
        FrozenBackboneDecoderConfig,
        NeuralFineTuneConfig,
        TrainerConfig,
    )
    from neurofm.models import get_model_spec

    tiny = get_model_spec("cbramod").tiny_kwargs
    models = {
        "bandpower": ClassicalModelConfig(estimator="bandpower_lr"),
        "probe": FrozenBackboneDecoderConfig(
            backbone=FoundationEmbeddingModelConfig(
                model_key="cbramod", weights="random", batch_size=2, model_kwargs=tiny
            ),
            head=ClassicalModelConfig(estimator="LogisticRegression"),
        ),
        "finetune": NeuralFineTuneConfig(
            model_key="cbramod",
            weights="random",
            train_mode="full",
            model_kwargs=tiny,
            trainer=TrainerConfig(max_epochs=2, batch_size=8, early_stopping_patience=None),
            checkpoints=CheckpointConfig(save="best", directory=str(workdir / "out" / "checkpoints")),
        ),
    }
    return ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy", "roc_auc"],
        cache_dir=str(workdir / "cache"),
        n_permutations=3,
        verbose=False,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
    )


def _inject(kind: str, at: int, counts: dict[str, int]) -> None:
    """Patch this (child) process so it counts events and SIGKILLs itself at event number ``at`` of ``kind``."""
    import torch

    import neurofm.embed as embed
    import neurofm.estimators.neural  # noqa: F401 - binds the unpatched pool_tokens: fine-tuning is "training"
    import neurofm.utils.files as files

    def counted(name, original, before_kill=None):
        def wrapper(*args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            if name == kind and counts[name] == at:
                if before_kill is not None:
                    before_kill(*args)
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        return wrapper

    def cut_in_half(tmp, *_):
        size = os.path.getsize(tmp)
        os.truncate(tmp, size // 2)

    embed.pool_tokens = counted("extraction", embed.pool_tokens)  # once per batch of the extraction
    files.os.replace = counted("writing", os.replace, before_kill=cut_in_half)
    torch.optim.AdamW.step = counted("training", torch.optim.AdamW.step)


def child(workdir: Path, kind: str | None, at: int) -> None:
    import numpy as np

    from neurofm import Experiment
    from neurofm.simulate import simulate_eeg_dataset

    counts: dict[str, int] = {}
    if kind is not None:
        _inject(kind, at, counts)
    X, y, meta, info = simulate_eeg_dataset(n_subjects=3, n_windows_per_class=4, random_state=11)
    print("READY", flush=True)
    Experiment(_config(workdir)).run(X.astype(np.float32), y, sample_metadata=meta, **info, output_dir=workdir / "out")
    print("COUNTS " + json.dumps(counts), flush=True)


def _spawn(workdir: Path, kind: str | None = None, at: int = 0) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, __file__, "--child", str(workdir), kind or "none", str(at)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(process: subprocess.Popen, kill_after: float | None = None) -> tuple[int, str]:
    if kill_after is None:
        out, err = process.communicate()
        return process.returncode, out + err
    assert process.stdout is not None
    line = process.stdout.readline()  # "READY": imports and data are done, the run begins
    if not line.startswith("READY"):
        out, err = process.communicate()
        return process.returncode, line + out + err
    time.sleep(kill_after)
    process.send_signal(signal.SIGKILL)
    out, err = process.communicate()
    return process.returncode, out + err


def check_files_whole(workdir: Path) -> int:
    """Read back and verify every file that is not a temporary one; returns how many were checked."""
    import numpy as np
    import pandas as pd
    from safetensors.numpy import load_file

    from neurofm.cache import entry_checksums
    from neurofm.progress import read_record
    from neurofm.utils.files import TMP_MARK

    checked = 0
    for path in sorted(p for p in workdir.rglob("*") if p.is_file() and TMP_MARK not in p.name):
        if path.name == ".neurofm.lock" or path.name.startswith("corrupt-"):
            continue
        if path.suffix == ".parquet":
            pd.read_parquet(path)
        elif path.parent.parent.name == "progress":
            if read_record(path) is None:
                raise AssertionError(f"damaged progress record {path}")
        elif path.name.startswith("pack-"):
            with np.load(path, allow_pickle=False) as data:
                if not (entry_checksums(data["keys"], data["embeddings"]) == data["checksums"]).all():
                    raise AssertionError(f"cache pack {path} fails its checksums")
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            import yaml

            yaml.safe_load(path.read_text())
        checked += 1
    return checked


def _final(workdir: Path):
    from neurofm.results import ExperimentResult

    return ExperimentResult.load(workdir / "out")


def same_results(a, b) -> None:
    from pandas.testing import assert_frame_equal

    # Bit for bit: pandas' default would let a resumed run differ from the uninterrupted one by 1e-5.
    assert_frame_equal(a.scores, b.scores, check_exact=True)
    assert_frame_equal(a.predictions, b.predictions, check_exact=True)
    assert_frame_equal(a.splits, b.splits, check_exact=True)
    assert_frame_equal(a.get_statistics(), b.get_statistics(), check_exact=True)


def run_trials(n_kills: int, seed: int = 0, root: Path | None = None, log=print) -> dict:
    """The whole fault-injection campaign; raises AssertionError at the first broken promise."""
    rng = random.Random(seed)
    root = Path(root or tempfile.mkdtemp(prefix="neurofm-crash-"))
    reference_dir = root / "reference"
    started = time.perf_counter()
    code, text = _finish(_spawn(reference_dir, "count", 0))
    if code != 0:
        raise RuntimeError(f"the uninterrupted run failed:\n{text}")
    seconds = time.perf_counter() - started
    counts = json.loads(text.split("COUNTS ", 1)[1].splitlines()[0])
    reference = _final(reference_dir)
    log(f"uninterrupted run: {seconds:.1f} s; events: {counts}")
    summary = {"kills": 0, "by_kind": {}, "files_checked": 0, "resumed_equal": 0}
    for trial in range(n_kills):
        kind = KINDS[trial % len(KINDS)]
        workdir = root / f"trial-{trial:02d}"
        if kind == "random":
            delay = rng.uniform(0.0, seconds * 0.8)
            code, _ = _finish(_spawn(workdir), kill_after=delay)
            moment = f"after {delay:.1f} s"
        else:
            at = rng.randint(1, max(1, counts.get(kind, 1)))
            code, _ = _finish(_spawn(workdir, kind, at))
            moment = f"at {kind} event {at} of {counts.get(kind)}"
        killed = code == -signal.SIGKILL
        checked = check_files_whole(workdir)
        code, text = _finish(_spawn(workdir))
        if code != 0:
            raise AssertionError(f"trial {trial}: the resumed run failed:\n{text}")
        same_results(_final(workdir), reference)
        check_files_whole(workdir)
        summary["kills"] += killed
        summary["by_kind"][kind] = summary["by_kind"].get(kind, 0) + killed
        summary["files_checked"] += checked
        summary["resumed_equal"] += 1
        log(
            f"trial {trial:2d}: {kind:<10} {moment:<32} killed={killed}  files whole: {checked:3d}  "
            "resumed results equal: yes"
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        workdir, kind, at = args.child
        child(Path(workdir), None if kind == "none" else kind, int(at))
        return
    summary = run_trials(args.kills, args.seed)
    print(
        f"\n{summary['kills']} of {args.kills} runs killed with SIGKILL ({summary['by_kind']}); "
        f"{summary['files_checked']} files read back whole after the kills; "
        f"{summary['resumed_equal']} resumed runs gave results equal to the uninterrupted run."
    )


if __name__ == "__main__":
    main()
