"""The config reference (every field documented) and the starter configs of `neurofm init` (each one valid)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import neurofm.configs
from neurofm.cli import app
from neurofm.configs import BaseConfig, RunConfig
from neurofm.configs.reference import MISSING, config_classes, config_reference, field_descriptions, first_sentence
from neurofm.pretrain.config import PretrainConfig
from neurofm.starters import STARTER_KINDS, starter_class, starter_yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


def test_the_reference_covers_every_public_config_class():
    exported = [getattr(neurofm.configs, name) for name in neurofm.configs.__all__]
    exported += [getattr(neurofm.pretrain.config, name) for name in neurofm.pretrain.config.__all__]
    public = {c for c in exported if isinstance(c, type) and issubclass(c, BaseConfig) and c is not BaseConfig}
    missing = sorted(c.__name__ for c in public - set(config_classes()))
    assert not missing, f"config classes missing from neurofm.configs.reference._SECTIONS: {missing}"


@pytest.mark.parametrize("cls", config_classes(), ids=lambda c: c.__name__)
def test_every_field_of_every_config_class_is_described(cls):
    undescribed = [name for name, text in field_descriptions(cls).items() if not text.strip()]
    assert not undescribed, (
        f"{cls.__name__} fields without a description: {undescribed}; describe them in the class's numpydoc "
        "'Parameters' section"
    )


def test_the_reference_page_lists_each_class_and_field_with_its_default():
    text = config_reference()
    assert MISSING not in text
    for cls in config_classes():
        section = text.split(f"### {cls.__name__}\n", 1)[1].split("\n### ", 1)[0]
        for name in cls.model_fields:
            assert f"| `{name}` |" in section, (cls.__name__, name)
        assert "```yaml" in section
    # parsed details: "l_freq, h_freq : ..." describes both, an inherited field keeps its base's words,
    # "as in FoundationEmbeddingModelConfig" takes that class's, constraints and allowed values are shown
    assert field_descriptions(neurofm.configs.PreprocessingConfig)["h_freq"].startswith("Band-pass edges")
    assert field_descriptions(RunConfig)["cv"] == "The outer cross-validation."
    assert field_descriptions(neurofm.configs.NeuralFineTuneConfig)["model_key"].startswith("Registry key")
    assert "| `n_splits` | int (≥ 2) | `5` |" in text
    assert '"stratified_kfold"' in text


def test_first_sentence_keeps_abbreviations():
    assert first_sentence("Line-noise frequencies (e.g. 50 or [50, 100]). More.") == (
        "Line-noise frequencies (e.g. 50 or [50, 100])."
    )
    assert first_sentence("``best`` keeps the epoch\nwith the best value.\n\nOther.") == (
        "best keeps the epoch with the best value."
    )


@pytest.mark.parametrize("kind", STARTER_KINDS)
def test_each_starter_is_written_commented_and_validates_as_written(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = runner.invoke(app, ["init", kind])
    assert done.exit_code == 0, done.output
    written = tmp_path / f"{kind}.yaml"
    config = starter_class(kind).from_yaml(written)
    assert isinstance(config, PretrainConfig if kind == "pretrain" else RunConfig)
    assert written.read_text() == starter_yaml(kind)
    shown = runner.invoke(app, ["config", "--show", kind])
    assert shown.exit_code == 0 and shown.output == written.read_text()
    # every key has a comment above it (a model's name excepted, which is the user's)
    models = yaml.safe_load(written.read_text()).get("models", {})
    lines = written.read_text().splitlines()
    for before, line in zip(lines, lines[1:], strict=False):
        if line.strip() and not line.lstrip().startswith("#") and line.strip().rstrip(":") not in models:
            assert before.lstrip().startswith("#"), f"{kind}: no comment above {line!r}"


def test_init_refuses_to_overwrite_a_file_unless_forced(tmp_path):
    target = tmp_path / "mine.yaml"
    target.write_text("my edits\n")
    refused = runner.invoke(app, ["init", "bids", "--out", str(target)])
    assert refused.exit_code == 2
    assert "--force" in refused.output
    assert target.read_text() == "my edits\n"
    forced = runner.invoke(app, ["init", "bids", "--out", str(target), "--force"])
    assert forced.exit_code == 0, forced.output
    assert RunConfig.from_yaml(target).data.source == "bids"


@pytest.mark.parametrize("command", [["init", "decodng"], ["config", "--show", "decodng"]])
def test_an_unknown_kind_lists_the_kinds(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = runner.invoke(app, command)
    assert done.exit_code == 2
    output = " ".join(done.output.replace("│", " ").split())
    for kind in STARTER_KINDS:
        assert repr(kind) in output
    assert "Did you mean 'decoding'?" in output
    assert not list(tmp_path.iterdir())
    listed = runner.invoke(app, ["config"])
    assert all(kind in listed.output for kind in STARTER_KINDS)


@pytest.mark.parametrize("kind", ["bids", "moabb", "finetune", "meg"])
def test_the_examples_are_the_starters_and_validate(kind):
    path = EXAMPLES / f"starter_{kind}.yaml"
    config = RunConfig.from_yaml(path)
    assert yaml.safe_load(path.read_text()) == yaml.safe_load(starter_yaml(kind)), (
        f"{path.name} differs from the starter; regenerate it: neurofm init {kind} --out examples/{path.name} --force"
    )
    assert config.data.source == {"bids": "bids", "moabb": "moabb"}.get(kind, "recording")


def test_the_decoding_starter_runs_on_a_recording(recording, tmp_path):
    """The decoding starter, its path pointed at a recording and its backbone made tiny, runs offline."""
    data = yaml.safe_load(starter_yaml("decoding"))
    data["data"]["path"] = str(recording)
    data["models"]["cbramod_probe"]["backbone"].update(weights="random", model_kwargs={"n_layer": 1})
    data["cv"]["n_splits"] = 3
    data.update(cache_dir=str(tmp_path / "cache"), verbose=False)
    path = tmp_path / "decoding.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    done = runner.invoke(app, ["run", str(path)])
    assert done.exit_code == 0, done.output
    assert "bandpower_lr" in done.output and "cbramod_probe" in done.output
    assert (tmp_path / "results" / "scores.parquet").exists()


def test_the_bids_example_runs_on_a_bids_root(tmp_path):
    """examples/starter_bids.yaml as committed, its root and task pointed at a BIDS folder, its backbone tiny."""
    import mne
    import mne_bids
    import numpy as np

    rng = np.random.default_rng(3)
    names = ["C3", "Cz", "C4", "Fz", "Pz"]
    for subject in ("01", "02", "03"):
        data = rng.standard_normal((len(names), 6000)) * 10e-6
        raw = mne.io.RawArray(data, mne.create_info(names, 200.0, "eeg"), verbose=False)
        onsets = np.arange(2, 27, 3.0)
        labels = ["left", "right"] * (len(onsets) // 2) + ["left"] * (len(onsets) % 2)
        raw.set_annotations(mne.Annotations(onsets, [1.0] * len(onsets), labels))
        path = mne_bids.BIDSPath(subject=subject, task="mi", datatype="eeg", root=tmp_path / "bids")
        mne_bids.write_raw_bids(raw, path, allow_preload=True, format="EDF", overwrite=True, verbose=False)
    data = yaml.safe_load((EXAMPLES / "starter_bids.yaml").read_text())
    data["data"].update(path=str(tmp_path / "bids"), tasks=["mi"])
    data["models"]["cbramod_probe"]["backbone"].update(weights="random", model_kwargs={"n_layer": 1})
    data.update(cache_dir=str(tmp_path / "cache"), verbose=False)
    path = tmp_path / "bids.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    done = runner.invoke(app, ["run", str(path), "--no-report"])
    assert done.exit_code == 0, done.output
    assert "csp_lda" in done.output and "cbramod_probe" in done.output
    assert (tmp_path / "results" / "scores.parquet").exists()


def _run_example(name: str, tmp_path, change) -> str:
    """``examples/<name>`` as committed, changed by ``change(data)`` (paths, tiny models), run with neurofm run."""
    data = yaml.safe_load((EXAMPLES / name).read_text())
    change(data)
    data.update(cache_dir=str(tmp_path / "cache"), verbose=False)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    done = runner.invoke(app, ["run", str(path), "--no-report"])
    assert done.exit_code == 0, done.output
    return done.output


def test_the_finetune_example_runs_on_a_recording(recording, tmp_path):
    from neurofm.models import get_model_spec

    def change(data):
        data["data"].update(path=str(recording), tmax=2.0)
        tuned = data["models"]["cbramod_lora"]
        tuned.update(weights="random", model_kwargs=get_model_spec("cbramod").tiny_kwargs)
        tuned["trainer"].update(max_epochs=1, batch_size=8, early_stopping_patience=None)
        tuned["device"].update(device="cpu")
        data["cv"]["n_splits"] = 2

    output = _run_example("starter_finetune.yaml", tmp_path, change)
    assert "cbramod_lora" in output and (tmp_path / "results" / "checkpoints" / "cbramod_lora").is_dir()


def test_the_meg_example_runs_on_a_neuromag_recording(tmp_path):
    """Neuromag channels (the MNE sample file's, with their positions), a minute of noise and trigger events."""
    import mne
    import numpy as np
    from conftest import SHARED_DATA

    from neurofm.models import get_model_spec

    sample = mne.io.read_raw(SHARED_DATA / "meg" / "sample_audvis_trunc_raw_sss.fif", verbose=False)
    info = sample.pick(["meg", "eeg", "stim"]).info
    rng = np.random.default_rng(0)
    n = int(60 * info["sfreq"])
    data = rng.standard_normal((len(info["ch_names"]), n)) * 1e-12
    eeg = mne.pick_types(info, meg=False, eeg=True)
    data[eeg] *= 1e7  # tens of microvolts
    stim = mne.pick_types(info, meg=False, stim=True)
    data[stim] = 0
    trigger = info["ch_names"].index("STI 014")  # the channel MNE reads Neuromag events from
    data[trigger, np.arange(1, 29) * int(2 * info["sfreq"])] = [1, 2] * 14
    mne.io.RawArray(data, info, verbose=False).save(tmp_path / "meg_raw.fif", verbose=False)

    def change(data):
        data["data"].update(path=str(tmp_path / "meg_raw.fif"), event_id={"left": 1, "right": 2})
        probe = data["models"]["reve_probe"]["backbone"]
        probe.update(weights="random", model_kwargs=get_model_spec("reve").tiny_kwargs)
        data["models"].pop("ts_lr")  # a tangent space of 300+ channels on 28 windows: minutes, and nothing tested
        data["cv"]["n_splits"] = 2

    assert "reve_probe" in _run_example("starter_meg.yaml", tmp_path, change)


def test_the_moabb_example_runs_on_moabbs_fake_data_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MNE_DATA", str(tmp_path / "mne_data"))

    def change(data):
        data["data"]["moabb"].update(
            dataset="FakeDataset",
            dataset_params={"event_list": ["left_hand", "right_hand"], "n_subjects": 3, "n_sessions": 1, "n_runs": 1},
        )
        data["models"]["cbramod_probe"]["backbone"].update(weights="random", model_kwargs={"n_layer": 1})

    assert "cbramod_probe" in _run_example("starter_moabb.yaml", tmp_path, change)


def test_the_adaptation_matrix_example_runs_every_kind_of_model_with_seeds_and_sweeps(tmp_path):
    """examples/adaptation_matrix_eegmmi.yaml on the real EEGMMI subject, one model of each kind, tiny and brief."""
    from conftest import SHARED_DATA

    from neurofm import ExperimentResult
    from neurofm.models import get_model_spec

    tiny = get_model_spec("cbramod").tiny_kwargs

    def change(data):
        data["data"].update(path=str(SHARED_DATA / "eegmmi"))
        kept = ("cbramod_ridge", "cbramod_attentive", "cbramod_lora", "eegnet", "bandpower_lr")
        data["models"] = {name: model for name, model in data["models"].items() if name in kept}
        for name in ("cbramod_ridge", "cbramod_attentive"):
            data["models"][name]["backbone"]["model_kwargs"] = tiny
        data["models"]["cbramod_attentive"]["head"].update(max_epochs=2)
        data["models"]["cbramod_lora"].update(model_kwargs=tiny, trainer={"max_epochs": 1, "batch_size": 8})
        data["models"]["eegnet"].update(trainer={"max_epochs": 1, "batch_size": 8})
        data.update(n_seeds=2, cv={"strategy": "stratified_kfold", "n_splits": 2}, output_dir=str(tmp_path / "out"))
        data["sweeps"].update(train_fractions=[0.5], channel_counts=[8])

    _run_example("adaptation_matrix_eegmmi.yaml", tmp_path, change)
    result = ExperimentResult.load(tmp_path / "out")
    seeds = result.scores.groupby("Model")["Seed"].nunique().to_dict()
    # each of these draws random numbers: random backbone weights, a training, or (bandpower_lr) the shuffled
    # inner split that tunes its logistic regression's C
    assert seeds == dict.fromkeys(["cbramod_ridge", "cbramod_attentive", "cbramod_lora", "eegnet", "bandpower_lr"], 2)
    levels = set(result.get_sweep_scores()["Level"])
    assert levels == {"0.5", "8 random", "sensorimotor"}
    assert set(result.get_sweep_scores()["Model"]) == set(seeds)
