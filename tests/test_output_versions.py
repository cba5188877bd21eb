"""An output folder reused with another config: the change is said before compute and the earlier result kept."""

from __future__ import annotations

import logging

import pandas as pd
import yaml

from neurofm import Experiment, ExperimentResult
from neurofm.configs import ClassicalModelConfig, CVConfig, ExperimentConfig


def config(tmp_path, **models) -> ExperimentConfig:
    return ExperimentConfig(
        models=models or {"bp": ClassicalModelConfig(estimator="bandpower_lr")},
        cv=CVConfig(strategy="group_kfold", n_splits=2, group_key="Subject"),
        metrics=["balanced_accuracy"],
        cache_dir=str(tmp_path / "cache"),
        verbose=False,
    )


def test_a_changed_config_keeps_the_earlier_result_and_says_what_changed(small_dataset, tmp_path, caplog):
    X, y, meta, info = small_dataset
    out = tmp_path / "out"
    first = Experiment(config(tmp_path)).run(X, y, sample_metadata=meta, output_dir=out, **info)
    (out / "report.html").write_text("<html>made from the first result</html>")
    # The same config again: no version, the result replaced by the same numbers, the report made afresh.
    Experiment(config(tmp_path).model_copy(update={"verbose": True})).run(
        X, y, sample_metadata=meta, output_dir=out, **info
    )
    assert not (out / "versions").exists()
    assert "made from the first result" not in (out / "report.html").read_text()
    # Another model: said before compute, and the earlier result moved whole into versions/.
    changed = config(
        tmp_path, bp=ClassicalModelConfig(estimator="bandpower_lr"), csp=ClassicalModelConfig(estimator="csp_lda")
    )
    with caplog.at_level(logging.WARNING, logger="neurofm"):
        second = Experiment(changed).run(X, y, sample_metadata=meta, output_dir=out, **info)
    [message] = [r.getMessage() for r in caplog.records if "holds a result of another config" in r.getMessage()]
    assert "models added ['csp']" in message and "kept in" in message
    [version] = list((out / "versions").iterdir())
    assert {"scores.parquet", "config.yaml", "meta.json", "report.html"} <= {p.name for p in version.iterdir()}
    kept = ExperimentResult.load(version)
    pd.testing.assert_frame_equal(kept.get_detailed_scores(), first.get_detailed_scores())
    assert set(yaml.safe_load((out / "config.yaml").read_text())["models"]) == {"bp", "csp"}
    assert set(ExperimentResult.load(out).scores["Model"]) == {"bp", "csp"} == set(second.scores["Model"])
    # The unchanged model resumed from the folder's records: its scores are those of the first run.
    pd.testing.assert_frame_equal(
        second.get_detailed_scores().query("Model == 'bp'").reset_index(drop=True), first.get_detailed_scores()
    )


def test_saving_another_result_into_a_folder_keeps_the_one_there(small_dataset, tmp_path):
    X, y, meta, info = small_dataset
    a = Experiment(config(tmp_path)).run(X, y, sample_metadata=meta, **info)
    b = Experiment(config(tmp_path, csp=ClassicalModelConfig(estimator="csp_lda"))).run(
        X, y, sample_metadata=meta, **info
    )
    a.save(tmp_path / "out")
    b.save(tmp_path / "out")
    [version] = list((tmp_path / "out" / "versions").iterdir())
    assert set(ExperimentResult.load(version).scores["Model"]) == {"bp"}
    assert set(ExperimentResult.load(tmp_path / "out").scores["Model"]) == {"csp"}
