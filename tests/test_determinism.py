"""Determinism on the CPU: the same experiment gives bit-identical scores twice in one process and in another process.

The experiment is the one of the fault-injection campaign (``tests/crash_resume.py``):
a classical model, a frozen CBraMod probe and a fine-tuned CBraMod, with
label permutations. Every run starts from an empty embedding cache, so the
embeddings are computed each time, not read back.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pandas.testing import assert_frame_equal

from neurofm.results import ExperimentResult


def _campaign():
    path = Path(__file__).with_name("crash_resume.py")
    spec = importlib.util.spec_from_file_location("crash_resume", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bit_identical(a: ExperimentResult, b: ExperimentResult) -> None:
    assert_frame_equal(a.scores, b.scores, check_exact=True)
    assert_frame_equal(a.predictions, b.predictions, check_exact=True)
    assert_frame_equal(a.splits, b.splits, check_exact=True)
    assert_frame_equal(a.get_statistics(), b.get_statistics(), check_exact=True)


def test_same_experiment_twice_and_in_two_processes_is_bit_identical(tmp_path):
    campaign = _campaign()
    runs = []
    for name in ("in-process-1", "in-process-2"):
        campaign.child(tmp_path / name, kind=None, at=0)
        runs.append(ExperimentResult.load(tmp_path / name / "out"))
    code, text = campaign._finish(campaign._spawn(tmp_path / "other-process"))
    assert code == 0, text
    runs.append(ExperimentResult.load(tmp_path / "other-process" / "out"))
    assert len(runs[0].scores) == 3 * 3 * 2  # 3 models x 3 folds x 2 metrics, none of them NaN
    assert runs[0].scores["Value"].notna().all()
    for other in runs[1:]:
        _bit_identical(runs[0], other)
