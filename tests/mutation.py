"""Mutation testing of the modules that carry neurofm's guarantees: can their tests fail? (Not run by CI.)

For each module below, mutmut (``pip install mutmut``; 3.8.1 measured) makes small changes to its code, one at a
time (``<`` for ``<=``, a string or number altered, a call argument dropped, ...), and runs the module's own fast
tests against each: a mutant is *killed* when a test fails. The share of mutants killed says how much of the
module's behaviour the tests would notice breaking.

Usage::

    nice -n 10 .venv/bin/python tests/mutation.py                 # every module (about an hour on 2 cores)
    nice -n 10 .venv/bin/python tests/mutation.py cv results      # some modules
    .venv/bin/python tests/mutation.py --figures                  # the last run's figures, running nothing
    .venv/bin/python tests/mutation.py --survivors cache          # and the diff of each mutant not killed
    nice -n 10 .venv/bin/python tests/mutation.py --retest cache  # after adding tests: the survivors again

Each module runs in its own folder ``mutants/<module>/`` (git-ignored): a copy of ``src/`` and ``tests/`` and a
``pyproject.toml`` whose ``[tool.mutmut]`` section this script writes (the module to mutate, its tests). A rerun
reuses what mutmut stored there and tests only mutants of functions that changed (``--retest``: and the mutants
not killed last time); ``--fresh`` starts over. To look at one mutant:
``cd mutants/<module> && ../../.venv/bin/mutmut show <mutant name>``.

The figures count a mutant as killed only when a test failed: a timeout is listed apart, and a mutant in a
function that no selected test calls ("no tests") counts as not killed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "mutants"


@dataclass(frozen=True)
class Target:
    """A module, the functions of it that are measured, and the tests that measure them."""

    path: str  # under src/
    functions: tuple[str, ...]  # mutant name patterns (fnmatch); empty: every function of the module
    tests: tuple[str, ...]  # pytest arguments selecting the module's fast tests (run from the copy's root)
    note: str


_NEUROFM_RESUME_SLOW = (
    # Slow (20-50 s each) or run the code in other processes, where mutmut's mutants are not active.
    "not test_sigkill_at_random_moments and not test_fine_tuned_weights_overwritten"
    " and not test_records_written_by_parallel_workers"
)

TARGETS = {
    "cv": Target(
        "neurofm/cv.py",
        (),
        ("tests/test_cv.py",),
        "the outer folds: no group on both sides, impossible splits refused",
    ),
    "cache": Target(
        "neurofm/cache.py",
        (),
        # The four-process test takes 45 s and its work happens in child processes (original code there).
        ("tests/test_cache.py", "-k", "not test_four_processes_on_one_cache"),
        "the embedding cache: keys, checksums, damaged packs, full disk",
    ),
    "progress": Target(
        "neurofm/progress.py",
        (),
        ("tests/test_resume.py", "-k", _NEUROFM_RESUME_SLOW),
        "progress records: checksums, the lock, record keys",
    ),
    "records": Target(
        "neurofm/experiment.py",
        # The record/resume path of the experiment, not the rest of experiment.py (fitting, extraction, ...).
        tuple(
            f"neurofm.experiment.{name}__mutmut_*"
            for name in (
                "xǁExperimentǁ_decisive",
                "xǁExperimentǁ_record_path",
                "xǁExperimentǁ_all_recorded",
                "xǁExperimentǁ_map_resumable",
            )
        ),
        ("tests/test_resume.py", "-k", _NEUROFM_RESUME_SLOW),
        "experiment.py's record/resume path: record keys, what is read back",
    ),
    "outcomes": Target(
        "neurofm/tasks.py",
        # How a fold's outcome and a permutation's means are recorded and read back.
        tuple(
            f"neurofm.tasks.{name}__mutmut_*"
            for name in (
                "xǁFoldOutcomeǁto_record",
                "xǁFoldOutcomeǁfrom_record",
                "x_encode_outcome",
                "x_decode_means",
            )
        ),
        ("tests/test_resume.py", "-k", _NEUROFM_RESUME_SLOW),
        "tasks.py's fold-outcome encoding",
    ),
    "results": Target(
        "neurofm/results.py",
        tuple(
            f"neurofm.results.xǁExperimentResultǁ{name}__mutmut_*"
            for name in (
                "get_statistics",
                "compare",
                "get_model_artifacts",
            )
        ),
        # The two end-to-end permutation runs take 25 s each; the p-values against hand computation stay.
        (
            "tests/test_statistics.py",
            "-k",
            "not test_permutation_p_values_separate_signal and not test_trainable_models_are_permuted",
        ),
        "results.py's statistics: get_statistics, compare and get_model_artifacts, which the first calls",
    ),
}

KILLED, TIMEOUT, NO_TESTS = {1, 3}, {36, 24, -24, 152, 255}, {5, 33}


def _mutmut_section(target: Target) -> str:
    return "\n".join(
        [
            "",
            "[tool.mutmut]  # written by tests/mutation.py",
            'source_paths = ["src"]',
            f'only_mutate = ["src/{target.path}"]',
            f"pytest_add_cli_args_test_selection = {json.dumps(list(target.tests))}",
            # -p no:cacheprovider: no .pytest_cache written by the mutants' runs.
            'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
            # torch is imported by the tests: fork workers from a server that never ran them, not from pytest itself.
            'process_isolation = "forkserver"',
            "",
        ]
    )


def _prepare(name: str, target: Target, fresh: bool) -> Path:
    """The module's folder: src, tests and pyproject.toml as in the checkout, with this module's mutmut section."""
    work = WORK / name
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis")
    for folder in ("src", "tests"):
        # copy2 keeps modification times, from which mutmut tells what changed since its last run.
        shutil.copytree(ROOT / folder, work / folder, ignore=ignore, dirs_exist_ok=True, copy_function=shutil.copy2)
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject = re.sub(r"\n\[tool\.mutmut\].*?(?=\n\[|\Z)", "", pyproject, flags=re.S)  # this script's section wins
    (work / "pyproject.toml").write_text(pyproject + _mutmut_section(target))
    return work


def _run(name: str, target: Target, max_children: int, retest: bool) -> None:
    work = _prepare(name, target, fresh=False)
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    print(f"== {name}: {target.path} ({target.note})\n   tests: {' '.join(target.tests)}", flush=True)
    # Mutants named explicitly are always tested again; the others only when their function changed.
    subprocess.run([*command, *target.functions], cwd=work, check=False)
    if retest:
        codes = _outcomes(name, target) or {}
        left = sorted(k for k, c in codes.items() if c is not None and c not in KILLED)
        if left:
            print(f"   testing the {len(left)} mutant(s) not killed last time again", flush=True)
            subprocess.run([*command, *left], cwd=work, check=False)


def _outcomes(name: str, target: Target) -> dict[str, int | None] | None:
    meta = WORK / name / "mutants" / "src" / (target.path + ".meta")
    if not meta.is_file():
        return None
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    if target.functions:
        codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatchcase(k, p) for p in target.functions)}
    return codes


def _figures(names: list[str], survivors: bool) -> None:
    print(
        f"\n{'module':<10} {'mutants':>8} {'killed':>7} {'survived':>9} {'no tests':>9} {'timeouts':>9} "
        f"{'other':>6} {'killed %':>9}"
    )
    for name in names:
        target = TARGETS[name]
        codes = _outcomes(name, target)
        if codes is None:
            print(f"{name:<10} not run yet")
            continue
        killed = sum(c in KILLED for c in codes.values())
        survived = sum(c == 0 for c in codes.values())
        no_tests = sum(c in NO_TESTS for c in codes.values())
        timeouts = sum(c in TIMEOUT for c in codes.values())
        other = len(codes) - killed - survived - no_tests - timeouts  # not checked yet, suspicious, segfault
        share = 100 * killed / len(codes) if codes else float("nan")
        print(
            f"{name:<10} {len(codes):>8} {killed:>7} {survived:>9} {no_tests:>9} {timeouts:>9} {other:>6} "
            f"{share:>8.1f}%"
        )
        if survivors:
            left = sorted(k for k, c in codes.items() if c is not None and c not in KILLED)
            for key in left:
                diff = subprocess.run(
                    [sys.executable, "-m", "mutmut", "show", key], cwd=WORK / name, capture_output=True, text=True
                ).stdout
                print(diff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help="any of " + ", ".join(TARGETS) + " (default: all)")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--fresh", action="store_true", help="forget earlier runs of these modules")
    parser.add_argument(
        "--retest", action="store_true", help="test the mutants not killed last time again (after adding tests)"
    )
    parser.add_argument("--figures", action="store_true", help="print the last figures, run nothing")
    parser.add_argument("--survivors", action="store_true", help="with the figures, show every mutant not killed")
    args = parser.parse_args()
    names = args.modules or list(TARGETS)
    if unknown := sorted(set(names) - set(TARGETS)):
        parser.error(f"unknown module(s) {unknown}; choose among {', '.join(TARGETS)}")
    if not (args.figures or args.survivors):
        for name in names:
            if args.fresh:
                shutil.rmtree(WORK / name, ignore_errors=True)
            _run(name, TARGETS[name], args.max_children, args.retest)
    _figures(names, args.survivors)


if __name__ == "__main__":
    main()
