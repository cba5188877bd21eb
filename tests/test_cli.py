"""The neurofm command."""

from __future__ import annotations

from typer.testing import CliRunner

from neurofm.cli import app

runner = CliRunner()


def test_models_lists_the_nine_backbones():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for key in ("bendr", "biot", "cbramod", "codebrain", "eegpt", "labram", "luna", "reve", "signaljepa"):
        assert key in result.output
    assert "embedding_dim" in result.output


def test_demo_runs_offline_and_the_second_run_hits_the_cache(tmp_path):
    cache = str(tmp_path / "cache")
    first = runner.invoke(app, ["demo", "--cache-dir", cache, "--quiet", "--out", str(tmp_path / "res")])
    assert first.exit_code == 0, first.output
    assert "RANDOMLY INITIALISED" in first.output
    for model in ("cbramod_random_probe", "labram_random_probe", "bandpower_lr"):
        assert model in first.output
    assert "misses=240" in first.output
    assert (tmp_path / "res" / "scores.parquet").exists()
    second = runner.invoke(app, ["demo", "--cache-dir", cache, "--quiet"])
    assert second.exit_code == 0, second.output
    assert "hits=240 misses=0" in second.output


def test_a_bad_config_prints_one_clear_message_without_a_traceback(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: {estimator: Nope}\ndata: {source: eegmmi, path: x}\n")
    done = subprocess.run([sys.executable, "-m", "neurofm", "run", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "Error (ConfigError)" in done.stderr and "Unknown estimator 'Nope'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) < 10
