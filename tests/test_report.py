"""neurofm report: a self-contained HTML page whose figures render in a browser."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from neurofm import Experiment
from neurofm.cli import app
from neurofm.configs import (
    CheckpointConfig,
    ClassicalModelConfig,
    CVConfig,
    ExperimentConfig,
    NeuralFineTuneConfig,
    TrainerConfig,
)
from neurofm.models import get_model_spec
from neurofm.simulate import simulate_eeg_dataset

FIGURES = ("fig-scores", "fig-confusion", "fig-roc", "fig-training", "fig-reliability")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    X, y, meta, info = simulate_eeg_dataset(n_subjects=3, n_windows_per_class=5, random_state=1)
    models = {
        "bandpower_lr": ClassicalModelConfig(estimator="bandpower_lr"),
        "labram_frozen": NeuralFineTuneConfig(
            model_key="labram",
            weights="random",
            train_mode="frozen",
            model_kwargs=get_model_spec("labram").tiny_kwargs,
            trainer=TrainerConfig(max_epochs=3, batch_size=8, early_stopping_patience=None),
            checkpoints=CheckpointConfig(save="none"),
        ),
    }
    cfg = ExperimentConfig(
        models=models,
        metrics=["balanced_accuracy", "roc_auc"],
        cache_dir=str(tmp),
        verbose=False,
        n_permutations=3,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=3, group_key="Subject"),
    )
    return Experiment(cfg).run(X, y, sample_metadata=meta, **info).save(tmp / "results")


def test_report_is_self_contained_with_every_figure(results_dir):
    result = CliRunner().invoke(app, ["report", str(results_dir)])
    assert result.exit_code == 0, result.output
    page = (results_dir / "report.html").read_text()
    for fig_id in FIGURES:
        block = re.search(rf'<figure id="{fig_id}">.*?src="data:image/png;base64,([^"]+)"', page, re.S)
        assert block, fig_id
        assert base64.b64decode(block.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="https?://', page)  # nothing to fetch
    for section in ("Input adaptations", "Config", "Chance level", "Paired comparisons"):
        assert section in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_names_each_folds_held_out_subjects_and_scores_each_subject(results_dir):
    from neurofm import ExperimentResult

    assert CliRunner().invoke(app, ["report", str(results_dir)]).exit_code == 0
    page = (results_dir / "report.html").read_text()
    result = ExperimentResult.load(results_dir)
    fold_table = re.search(r'<table[^>]*id="fold-scores".*?</table>', page, re.S).group(0)
    for held_out in result.get_detailed_scores()["HeldOut"].unique():
        assert f"<td>{held_out}</td>" in fold_table
    group_table = re.search(r'<table[^>]*id="group-scores".*?</table>', page, re.S).group(0)
    for subject in ("sub-01", "sub-02", "sub-03"):
        assert f"<td>{subject}</td>" in group_table


def test_figures_render_in_headless_chromium(results_dir, tmp_path):
    from neurofm.report import write_report

    page = write_report(results_dir)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
        "--window-size=1300,2400",
    ]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    rendered = re.findall(r'data-rendered="(\w+)"', dom.stdout)
    assert len(rendered) == len(FIGURES) and set(rendered) == {"true"}, dom.stdout[:500]
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 50_000


def test_the_report_survives_any_string_as_a_model_label_or_column_name(tmp_path):
    """Names come from the user or from someone else's config: '$' (mathtext), TeX, HTML and control characters
    must be drawn and shown as written, never break the figures or reach the page unescaped."""
    import html

    import numpy as np

    from neurofm.report import write_report

    X, y, meta, info = simulate_eeg_dataset(n_subjects=3, n_windows_per_class=4, random_state=2)
    names = ["$x^{2$", "a\\b $\\alpha$", "<script>alert(1)</script>", "tab\tnew\nline", "%(x)s {0}", "x" * 200]
    labels = np.where(y == y[0], "$left$", "right_$")
    meta = meta.rename(columns={"Subject": "$Sub\\ject$"})
    info = {**info, "ch_names": [f"{name}$" for name in info["ch_names"]]}
    cfg = ExperimentConfig(
        models={name: ClassicalModelConfig(estimator="bandpower_lr") for name in names},
        metrics=["balanced_accuracy", "roc_auc"],
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
        cv=CVConfig(strategy="group_kfold", n_splits=3, group_key="$Sub\\ject$"),
    )
    saved = Experiment(cfg).run(X, labels, sample_metadata=meta, **info).save(tmp_path / "results")
    page = write_report(saved).read_text()
    for name in names:  # control characters are shown as their escapes, the rest as written
        assert html.escape(name.replace("\t", "\\t").replace("\n", "\\n")) in page
    assert "<script>alert(1)</script>" not in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 3


def test_report_says_what_was_run_how_scores_read_and_what_to_beware(results_dir):
    from neurofm import ExperimentResult

    assert CliRunner().invoke(app, ["report", str(results_dir)]).exit_code == 0
    page = (results_dir / "report.html").read_text()
    assert "<h1>Classification of 30 windows: bandpower_lr, labram_frozen</h1>" in page
    assert "<title>Classification of 30 windows" in page
    assert "mean ± sd (standard deviation) over the 3 cross-validation folds" in page
    assert "groups (Subject): 3" in page and "label permutations: 3" in page
    # Folds of 10 test windows: each moves accuracy by 10 points, and the report says so.
    warnings = ExperimentResult.load(results_dir).score_warnings()
    assert any("as few as 10 windows" in w for w in warnings)
    assert '<ul class="warnings"><li>Test folds hold as few as 10 windows' in page


def test_heads_fitted_on_more_features_than_windows_are_flagged():
    import pandas as pd

    from neurofm.result_statistics import score_warnings

    splits = pd.DataFrame(
        {
            "Model": "probe",
            "Fold": [0] * 40 + [1] * 40,
            "SampleIndex": list(range(40)) * 2,
            "Set": ["train"] * 30 + ["test"] * 10 + ["train"] * 30 + ["test"] * 10,
        }
    )
    artifacts = pd.DataFrame(
        [("probe", -1, "backbone", "embedding_dim", 51200)],
        columns=["Model", "Fold", "ArtifactType", "ArtifactKey", "ArtifactValue"],
    )
    [small, wide] = score_warnings(splits, artifacts)
    assert "as few as 10 windows" in small
    assert "51200 features from about 30 training windows" in wide
    assert score_warnings(splits, artifacts.assign(ArtifactValue=16)) == [small]


def test_a_regression_report_draws_predicted_against_true_and_its_chance_line(tmp_path):
    import numpy as np

    X, _, meta, info = simulate_eeg_dataset(n_subjects=3, n_windows_per_class=5, random_state=4)
    y = np.random.default_rng(0).normal(size=len(X))
    cfg = ExperimentConfig(
        task="regression",
        models={"ridge": ClassicalModelConfig(estimator="bandpower_ridge")},
        metrics=["r2", "mae"],
        verbose=False,
        cv=CVConfig(strategy="group_kfold", n_splits=3, group_key="Subject"),
    )
    folder = Experiment(cfg).run(X, y, sample_metadata=meta, **info).save(tmp_path / "out")
    assert CliRunner().invoke(app, ["report", str(folder)]).exit_code == 0
    page = (folder / "report.html").read_text()
    assert '<figure id="fig-regression">' in page and "residual" not in page.split("fig-regression")[0]
    assert "the dashed line is the chance level" in page  # the label-blind predictor's R2 and MAE are drawn
