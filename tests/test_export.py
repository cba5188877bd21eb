"""Models out: refit on all windows, export in the hub layout plain braindecode loads, push to a hub."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hub_server import LocalHub  # tests/, on the path as pytest imports test files
from pandas.testing import assert_frame_equal

import neurofm
import neurofm.refit_step
from neurofm import Experiment, ExperimentResult
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
from neurofm.exceptions import ConfigError
from neurofm.export import EXPORT_JSON, FrozenProbe, braindecode_refusal, decoder_for_export
from neurofm.models import get_model_spec, list_foundation_models
from neurofm.training import predict_network
from neurofm.utils.versions import package_versions

TINY = get_model_spec("cbramod").tiny_kwargs
BATCH = 8  # windows per forward: the saved inputs are one full batch, the shape neurofm predicts in


def tuned(train_mode: str, **kw) -> NeuralFineTuneConfig:
    return NeuralFineTuneConfig(
        model_key="cbramod",
        weights="random",
        train_mode=train_mode,
        pooling="flatten",  # the head braindecode's CBraMod holds exactly
        model_kwargs=TINY,
        trainer=TrainerConfig(max_epochs=1, batch_size=BATCH, early_stopping_patience=None),
        checkpoints=CheckpointConfig(save="best"),
        **kw,
    )


def probe(estimator: str = "LogisticRegression") -> FrozenBackboneDecoderConfig:
    return FrozenBackboneDecoderConfig(
        backbone=FoundationEmbeddingModelConfig(model_key="cbramod", weights="random", batch_size=8, model_kwargs=TINY),
        head=ClassicalModelConfig(estimator=estimator, params={"max_iter": 1000} if "Logistic" in estimator else {}),
    )


MODELS = {
    "lora": tuned("lora"),
    "full": tuned("full"),
    "probe": probe(),
    "knn_probe": probe("KNeighborsClassifier"),
    "bandpower": ClassicalModelConfig(estimator="bandpower_lr"),
}


def experiment_config(cache_dir, refit: bool, models=None) -> ExperimentConfig:
    return ExperimentConfig(
        models=models or MODELS,
        metrics=["balanced_accuracy", "roc_auc"],
        cache_dir=str(cache_dir),
        n_permutations=2,
        verbose=False,
        refit=refit,
        cv=CVConfig(strategy="stratified_group_kfold", n_splits=2, group_key="Subject"),
    )


@pytest.fixture(scope="module")
def runs(small_dataset, tmp_path_factory):
    """One run with refit into an output folder, the same run without refit, and where things went."""
    X, y, meta, info = small_dataset
    root = tmp_path_factory.mktemp("export")
    refit = Experiment(experiment_config(root / "cache", refit=True)).run(
        X, y, sample_metadata=meta, output_dir=root / "out", **info
    )
    plain = Experiment(experiment_config(root / "cache", refit=False)).run(X, y, sample_metadata=meta, **info)
    return {"refit": refit, "plain": plain, "root": root, "out": root / "out"}


def _sorted(frame, keys):
    return frame.sort_values(keys).reset_index(drop=True)


def _braindecode_logits(folder: Path, windows: np.ndarray, tmp_path: Path, repo: str | None = None, env=None):
    """Logits of plain braindecode's CBraMod.from_pretrained(folder or hub repo), in a fresh process without neurofm."""
    return _plain_braindecode_logits([("CBraMod", repo or str(folder), windows, {})], tmp_path, env)[0]


def _plain_braindecode_logits(models, tmp_path: Path, env=None) -> list[np.ndarray]:
    """Logits of ``<Class>.from_pretrained(source)(windows, **call)`` for each ``(Class, source, windows, call)``,
    in one fresh process that never imports neurofm."""
    jobs = []
    for i, (cls, source, windows, call) in enumerate(models):
        np.save(tmp_path / f"in{i}.npy", windows)
        jobs.append((cls, source, str(tmp_path / f"in{i}.npy"), call, str(tmp_path / f"out{i}.npy")))
    script = (
        "import sys, numpy as np, torch\n"
        "import braindecode.models\n"
        f"for cls, source, inputs, call, outputs in {jobs!r}:\n"
        "    model = getattr(braindecode.models, cls).from_pretrained(source).eval()\n"
        "    with torch.no_grad():\n"
        "        out = model(torch.from_numpy(np.load(inputs)), **call)\n"
        "    np.save(outputs, out.numpy())\n"
        "assert not any(name.split('.')[0] == 'neurofm' for name in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [np.load(job[-1]) for job in jobs]


def _adapted_batch(estimator, X) -> tuple[np.ndarray, np.ndarray]:
    """One full batch of raw windows and the same windows adapted as neurofm feeds them to the backbone."""
    from neurofm.estimators.prepared import adapt_in_batches

    raw = np.asarray(X[:BATCH])
    return raw, adapt_in_batches(estimator.plan_, raw, None)


# -- priority 1: refit ---------------------------------------------------------------------------------------------


def test_refit_leaves_scores_predictions_and_statistics_exactly_as_without(runs):
    refit, plain = runs["refit"], runs["plain"]
    keys = ["Model", "Fold", "Metric"]
    assert_frame_equal(_sorted(refit.scores, keys), _sorted(plain.scores, keys))
    assert_frame_equal(
        _sorted(refit.predictions, ["Model", "Fold", "SampleIndex"]),
        _sorted(plain.predictions, ["Model", "Fold", "SampleIndex"]),
    )
    assert_frame_equal(refit.get_statistics(), plain.get_statistics())
    assert len(refit.get_statistics())  # the permutation test did run, and agrees
    assert plain.refit_names() == [] and "refit" not in plain.meta
    assert refit.refit_names() == list(MODELS)


def test_refit_models_are_fitted_on_all_windows_and_kept(runs, small_dataset):
    X, y, _, _ = small_dataset
    result = runs["refit"]
    models = result.refit_models
    assert set(models) == set(MODELS)
    lora = models["lora"]
    entry = result.meta["refit"]["lora"]
    assert entry["n_train"] + entry["n_validation"] == len(X) == entry["n_windows"]  # its own validation split
    assert entry["kind"] == "fine_tuned" and entry["folder"].startswith("models/model-")
    assert not hasattr(lora.net_.backbone, "merge_and_unload")  # kept with its adapters merged, as exported
    assert isinstance(models["probe"], FrozenProbe)
    assert np.array_equal(models["probe"].classes_, np.unique(y))
    assert models["probe"].predict(X).shape == (len(X),)
    assert models["bandpower"].predict(X).shape == (len(X),)
    # What cannot be written without pickle stays in memory, and the result says so.
    assert result.meta["refit"]["bandpower"]["folder"] is None
    assert "in memory only" in result.meta["refit"]["bandpower"]["note"]
    assert result.meta["refit"]["knn_probe"]["folder"] is not None  # not linear: written with skops


def test_saved_refit_models_load_back_and_predict_alike(runs, small_dataset):
    X = small_dataset[0]
    result, loaded = runs["refit"], ExperimentResult.load(runs["out"])
    assert loaded.refit_names() == result.refit_names()
    assert set(loaded.refit_models) == {"lora", "full", "probe", "knn_probe"}  # saved; the rest lived in memory
    np.testing.assert_array_equal(
        loaded.get_refit_model("lora").predict_proba(X), result.get_refit_model("lora").predict_proba(X)
    )
    np.testing.assert_array_equal(
        loaded.get_refit_model("probe").predict_proba(X), result.get_refit_model("probe").predict_proba(X)
    )
    np.testing.assert_array_equal(
        loaded.get_refit_model("knn_probe").predict_proba(X), result.get_refit_model("knn_probe").predict_proba(X)
    )
    with pytest.raises(KeyError, match="was not saved"):
        loaded.get_refit_model("bandpower")
    with pytest.raises(KeyError, match="refit=True"):
        runs["plain"].get_refit_model("lora")


def test_a_resumed_run_reads_saved_refits_back_and_refits_only_what_is_not_saved(
    runs, small_dataset, tmp_path, monkeypatch
):
    X, y, meta, info = small_dataset
    out = tmp_path / "out"
    shutil.copytree(runs["out"], out)
    refitted = []
    run_refit = neurofm.refit_step.run_refit

    def counting(task, shared):
        refitted.append(task.model_name)
        return run_refit(task, shared)

    monkeypatch.setattr(neurofm.refit_step, "run_refit", counting)
    config = experiment_config(runs["root"] / "cache", refit=True)
    again = Experiment(config).run(X, y, sample_metadata=meta, output_dir=out, **info)
    # What is saved is read back; what lives in memory only is cheap and fitted again.
    assert sorted(refitted) == ["bandpower"]
    assert again.meta["refit"]["lora"]["resumed"] and not again.meta["refit"]["bandpower"]["resumed"]
    np.testing.assert_array_equal(
        again.get_refit_model("lora").predict_proba(X), runs["refit"].get_refit_model("lora").predict_proba(X)
    )
    # A damaged saved model is not taken: it is fitted again (and the same model comes out).
    folder = out / again.meta["refit"]["lora"]["folder"]
    (folder / "best.safetensors").write_bytes(b"damaged")
    refitted.clear()
    third = Experiment(config).run(X, y, sample_metadata=meta, output_dir=out, **info)
    assert "lora" in refitted and not third.meta["refit"]["lora"]["resumed"]
    np.testing.assert_array_equal(
        third.get_refit_model("lora").predict_proba(X), runs["refit"].get_refit_model("lora").predict_proba(X)
    )


def test_refit_is_a_documented_config_field_off_by_default():
    assert ExperimentConfig(models={"b": ClassicalModelConfig(estimator="bandpower_lr")}).refit is False
    assert "refit : bool" in ExperimentConfig.__doc__


# -- priority 2: fine-tuned braindecode backbones ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["lora", "full"])
def test_exported_cbramod_loads_in_plain_braindecode_in_a_fresh_process_with_identical_logits(
    runs, name, small_dataset, tmp_path
):
    result = runs["refit"]
    folder = result.export_model(name, tmp_path / "export")
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", EXPORT_JSON, "README.md"}
    config = json.loads((folder / "config.json").read_text())
    assert config["n_outputs"] == 2 and config["return_encoder_output"] is False and "braindecode_version" in config
    model = result.get_refit_model(name)
    raw, adapted = _adapted_batch(model, small_dataset[0])
    neurofm_logits = model._outputs(raw)  # what neurofm's predict and predict_proba compute from
    assert np.array_equal(neurofm_logits, predict_network(model.net_, adapted, BATCH, "cpu"))
    logits = _braindecode_logits(folder, adapted, tmp_path)
    assert logits.dtype == np.float32 and logits.shape == (BATCH, 2)
    assert np.array_equal(logits, neurofm_logits)
    # The record says what input the model expects, and how the windows were adapted.
    record = json.loads((folder / EXPORT_JSON).read_text())
    assert record["input"]["shape"] == ["n_windows", 19, 800] and record["input"]["sfreq"] == 200.0
    assert [s["step"] for s in record["input_adaptation"]["steps"]][:2] == ["units", "resample"]
    assert record["outputs"]["classes"] == model.classes_.tolist() and record["train_mode"] == name


def test_a_folds_model_exports_from_its_checkpoint(runs, small_dataset, tmp_path):
    from neurofm.estimators.neural import NeuralFineTuner

    result = runs["refit"]
    folder = result.export_model("lora", tmp_path / "fold1", fold=1)
    assert json.loads((folder / EXPORT_JSON).read_text())["source"]["fitted_on"] == "fold 1"
    [directory] = result.get_model_artifacts("checkpoints", "lora").query("Fold == 1 and ArtifactKey == 'directory'")[
        "ArtifactValue"
    ]
    fold_model = NeuralFineTuner.from_checkpoint(directory, device="cpu")
    raw, adapted = _adapted_batch(fold_model, small_dataset[0])
    logits = _braindecode_logits(folder, adapted, tmp_path)
    # The fold kept its adapters (lora.save='adapters'): the export merges them, which rounds W + BA once.
    assert np.array_equal(logits, predict_network(decoder_for_export(fold_model), adapted, BATCH, "cpu"))
    np.testing.assert_allclose(logits, fold_model._outputs(raw), atol=1e-4)
    # Another fold is another model.
    other = result.export_model("lora", tmp_path / "fold0", fold=0)
    assert (other / "model.safetensors").read_bytes() != (folder / "model.safetensors").read_bytes()


def test_export_without_a_refit_model_or_a_saved_checkpoint_says_what_to_do(runs, tmp_path, small_dataset):
    with pytest.raises(ConfigError, match=r"refit=False.*fold=<k>.*refit=True"):
        runs["plain"].export_model("lora", tmp_path / "a")
    with pytest.raises(ConfigError, match=r"fold=5 is not a fold.*\[0, 1\]"):
        runs["refit"].export_model("lora", tmp_path / "a", fold=5)
    with pytest.raises(ConfigError, match="No model 'nope'"):
        runs["refit"].export_model("nope", tmp_path / "a")
    with pytest.raises(ConfigError, match="classical window estimator"):
        runs["refit"].export_model("bandpower", tmp_path / "a")
    with pytest.raises(ConfigError, match="are not kept"):
        runs["refit"].export_model("probe", tmp_path / "a", fold=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not an empty folder"):
        runs["refit"].export_model("lora", tmp_path / "full")
    assert not (tmp_path / "a").exists()  # refused before anything was written
    # A fold of a model that saved no checkpoint.
    X, y, meta, info = small_dataset
    unsaved = tuned("full").model_copy(update={"checkpoints": CheckpointConfig(save="none", monitor="train_loss")})
    result = copy.copy(runs["refit"])
    result.config = copy.deepcopy(result.config)
    result.config["models"]["lora"] = unsaved.model_dump(mode="json")
    result.artifacts = result.artifacts[result.artifacts["ArtifactType"] != "checkpoints"]
    with pytest.raises(ConfigError, match=r"saved no checkpoint.*checkpoints=CheckpointConfig\(save='best'\)"):
        result.export_model("lora", tmp_path / "a", fold=0)


def test_heads_braindecode_cannot_hold_exactly_are_refused_with_the_reason_and_the_alternative(runs, tmp_path):
    mean = tuned("lora").model_copy(update={"pooling": "mean"})
    assert "pooling='mean'" in braindecode_refusal(mean) and "'flatten'" in braindecode_refusal(mean)
    mlp = tuned("lora").model_copy(update={"trainer": TrainerConfig(head="mlp")})
    assert "trainer.head='mlp'" in braindecode_refusal(mlp)
    assert "quantised" in braindecode_refusal(tuned("qlora"))
    assert braindecode_refusal(tuned("lora")) is None
    for key in list_foundation_models()["key"]:  # every other backbone's linear head on mean pooling is refused
        if key != "cbramod":
            assert "final_layer" in braindecode_refusal(NeuralFineTuneConfig(model_key=key, weights="random")), key
    # Through the result: refused before anything is written, naming the alternative that works.
    result = copy.copy(runs["refit"])
    result.config = copy.deepcopy(result.config)
    result.config["models"]["lora"]["pooling"] = "mean"
    with pytest.raises(ConfigError, match=r"pooling='mean'.*format='checkpoint'"):
        result.export_model("lora", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def own_head(key: str, train_mode: str, **kw) -> NeuralFineTuneConfig:
    trainer = TrainerConfig(max_epochs=1, batch_size=BATCH, early_stopping_patience=None, **kw.pop("trainer", {}))
    return NeuralFineTuneConfig(
        model_key=key,
        weights="random",
        train_mode=train_mode,
        model_kwargs=get_model_spec(key).tiny_kwargs,
        trainer=trainer,
        checkpoints=CheckpointConfig(save="best"),
        **kw,
    )


#: Every backbone with the class's own head (LoRA and full fine-tuning in turn), and LaBraM's class token under
#: neurofm's linear head.
OWN_HEADS = {
    f"{key}_own": own_head(key, ("lora", "full")[i % 2], trainer={"head": "native"})
    for i, key in enumerate(sorted(list_foundation_models()["key"]))
} | {"labram_cls": own_head("labram", "lora", pooling="cls")}


@pytest.fixture(scope="module")
def own_head_run(small_dataset, tmp_path_factory):
    X, y, meta, info = small_dataset
    root = tmp_path_factory.mktemp("own_head")
    config = experiment_config(root / "cache", refit=True, models=OWN_HEADS)
    return Experiment(config).run(X, y, sample_metadata=meta, output_dir=root / "out", **info)


def test_backbones_trained_with_their_own_head_load_in_plain_braindecode_with_identical_logits(
    own_head_run, small_dataset, tmp_path
):
    result = own_head_run
    jobs, expected, refused = [], [], {}
    for name, cfg in OWN_HEADS.items():
        reason = braindecode_refusal(cfg)
        if reason is not None:  # refused before anything is written, with the reason and what works instead
            with pytest.raises(ConfigError, match=r"cannot be written for plain braindecode.*format='checkpoint'"):
                result.export_model(name, tmp_path / name)
            assert not (tmp_path / name).exists()
            refused[cfg.model_key] = reason
            continue
        folder = result.export_model(name, tmp_path / name)
        record = json.loads((folder / EXPORT_JSON).read_text())
        assert (
            record["head"]["kind"] == cfg.trainer.head
            and record["class"] == get_model_spec(cfg.model_key).braindecode_class
        )
        model = result.get_refit_model(name)
        raw, adapted = _adapted_batch(model, small_dataset[0])
        # What the forward takes besides the windows (LaBraM: the channel names), as the record and card give it.
        assert (record["call"] == {"ch_names": record["input"]["ch_names"]}) == (cfg.model_key == "labram")
        assert (
            "logits = model(adapted_windows" + "".join(f", {k}={k}" for k in record["call"])
            in (folder / "README.md").read_text()
        )
        jobs.append((record["class"], str(folder), adapted, record["call"]))
        expected.append((model._outputs(raw), record["check"]))
    # REVE cannot be rebuilt here as neurofm ran it, and says why.
    assert list(refused) == ["reve"] and "position bank" in refused["reve"]
    logits = _plain_braindecode_logits(jobs, tmp_path)
    for (cls, *_), found, (want, check) in zip(jobs, logits, expected, strict=True):
        assert found.shape == (BATCH, 2), cls
        if cls == "LUNA":  # neurofm's row-stable phases: float32 rounding apart, within the stated tolerance
            assert check["tolerance"] == 1e-5 and check["largest_difference"] <= 1e-5
            np.testing.assert_allclose(found, want, rtol=1e-5, atol=1e-5)
        else:
            assert check == check | {"tolerance": 0.0, "largest_difference": 0.0}, cls
            assert np.array_equal(found, want), cls


def test_linear_head_refusals_point_to_the_own_head_where_it_exports():
    refusal = braindecode_refusal(NeuralFineTuneConfig(model_key="biot", weights="random"))
    assert "ELU" in refusal and "trainer.head='native'" in refusal
    # Where the own head cannot be written either, the refusal does not send the user there.
    assert "trainer.head='native'" not in braindecode_refusal(NeuralFineTuneConfig(model_key="reve", weights="random"))
    labram = NeuralFineTuneConfig(model_key="labram", weights="random", pooling="mean")
    assert "pooling='cls'" in braindecode_refusal(labram)
    assert braindecode_refusal(labram.model_copy(update={"pooling": "cls"})) is None


def test_checkpoint_format_exports_any_fine_tuned_model_for_neurofm(runs, small_dataset, tmp_path):
    X = small_dataset[0]
    folder = runs["refit"].export_model("lora", tmp_path / "ckpt", format="checkpoint")
    assert {p.name for p in folder.iterdir()} == {"config.json", "best.safetensors", EXPORT_JSON, "README.md"}
    reloaded = neurofm.load_exported(folder)
    np.testing.assert_array_equal(reloaded.predict_proba(X), runs["refit"].get_refit_model("lora").predict_proba(X))
    with pytest.raises(ConfigError, match="not 'frozen-probe'"):
        runs["refit"].export_model("lora", tmp_path / "x", format="frozen-probe")


def test_a_loaded_result_exports_the_same_files_and_saves_its_models_elsewhere(runs, tmp_path):
    fresh = runs["refit"].export_model("full", tmp_path / "fresh")
    loaded = ExperimentResult.load(runs["out"])
    again = loaded.export_model("full", tmp_path / "again")
    for name in ("config.json", "model.safetensors"):
        assert (fresh / name).read_bytes() == (again / name).read_bytes()
    loaded.save(tmp_path / "copy")
    copied = ExperimentResult.load(tmp_path / "copy")
    third = copied.export_model("full", tmp_path / "third")
    assert (third / "model.safetensors").read_bytes() == (fresh / "model.safetensors").read_bytes()


# -- priority 3: frozen probes ---------------------------------------------------------------------------------


def test_frozen_probe_exports_its_backbone_reference_and_head_without_pickle(runs, small_dataset, tmp_path):
    X = small_dataset[0]
    result = runs["refit"]
    folder = result.export_model("probe", tmp_path / "probe")
    assert {p.name for p in folder.iterdir()} == {EXPORT_JSON, "head.safetensors", "README.md"}
    record = json.loads((folder / EXPORT_JSON).read_text())
    assert record["backbone"]["model_key"] == "cbramod" and record["backbone"]["pooling"] == "mean"
    assert record["weights_identity"] == {"kind": "random", "seed": 0}
    # The head standardises the embeddings first: the scaler's statistics are arrays too, as the model's are.
    assert record["head"]["estimator"] == "Pipeline"
    scaler, linear = record["head"]["steps"]
    assert scaler["estimator"] == "StandardScaler" and linear["estimator"] == "LogisticRegression"
    assert scaler["attributes"]["mean_"] == scaler["attributes"]["scale_"] == {"stored": "safetensors"}
    assert linear["attributes"]["coef_"] == {"stored": "safetensors"}
    assert record["input_adaptation"]["target"]["sfreq"] == 200.0
    loaded = neurofm.load_exported(folder, cache_dir=str(tmp_path / "other-cache"))
    assert isinstance(loaded, FrozenProbe)
    expected = result.get_refit_model("probe").predict_proba(X)
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    np.testing.assert_array_equal(loaded.predict(X), result.get_refit_model("probe").predict(X))
    # A head that is not linear is written with skops, and read back trusting scikit-learn's types only.
    for i, source in enumerate((result, ExperimentResult.load(runs["out"]))):  # in memory, or loaded: alike
        knn = source.export_model("knn_probe", tmp_path / f"knn{i}")
        assert {p.name for p in knn.iterdir()} == {EXPORT_JSON, "head.skops", "README.md"}
        assert json.loads((knn / EXPORT_JSON).read_text())["head"]["stored"] == "skops"
        np.testing.assert_array_equal(
            neurofm.load_exported(knn, cache_dir=str(tmp_path / "other-cache")).predict_proba(X),
            result.get_refit_model("knn_probe").predict_proba(X),
        )


def _distance(a, b):  # a metric defined here: a type skops cannot vouch for
    return float(np.abs(a - b).sum())


def test_heads_holding_foreign_types_are_neither_written_nor_read(tmp_path, monkeypatch):
    import skops.io
    from sklearn.neighbors import KNeighborsClassifier

    import neurofm.export.heads as heads

    X, y = np.random.default_rng(0).standard_normal((12, 3)), np.arange(12) % 2
    foreign = KNeighborsClassifier(n_neighbors=3, metric=_distance).fit(X, y)
    assert "_distance" in heads.head_unsaved_reason(foreign)
    with pytest.raises(ConfigError, match="cannot be exported: its head KNeighborsClassifier holds types from outside"):
        heads.write_head(tmp_path, foreign)
    assert not any(tmp_path.iterdir())
    # A file someone else wrote that names such a type is refused before anything in it is built.
    skops.io.dump(foreign, tmp_path / "head.skops")
    with pytest.raises(ConfigError, match="refuses to build them"):
        heads.read_head(tmp_path, {"estimator": "KNeighborsClassifier", "stored": "skops"})
    # Without skops, a head that is not linear says how to get it.
    plain = KNeighborsClassifier(n_neighbors=3).fit(X, y)
    assert heads.head_unsaved_reason(plain) is None
    monkeypatch.setattr(heads, "_skops_io", lambda: None)
    assert "skops is not installed (pip install skops" in heads.head_unsaved_reason(plain)
    with pytest.raises(ConfigError, match="was written with skops, but skops is not installed"):
        heads.read_head(tmp_path, {"estimator": "KNeighborsClassifier", "stored": "skops"})


def test_a_frozen_probe_checks_its_weights_and_reads_no_foreign_class(runs, small_dataset, tmp_path):
    from neurofm.exceptions import WeightsError

    folder = runs["refit"].export_model("probe", tmp_path / "probe")
    record = json.loads((folder / EXPORT_JSON).read_text())
    record["weights_identity"] = {"kind": "random", "seed": 1}
    (folder / EXPORT_JSON).write_text(json.dumps(record))
    with pytest.raises(WeightsError, match="not those this head was fitted on"):
        neurofm.load_exported(folder, cache_dir=str(tmp_path / "c")).predict(small_dataset[0][:2])
    for step in (0, 1):  # a step of the standardised head's pipeline, then the head itself
        changed = copy.deepcopy(record)
        changed["head"]["steps"][step]["estimator"] = "os.system"
        (folder / EXPORT_JSON).write_text(json.dumps(changed))
        with pytest.raises(ConfigError, match="not one neurofm reads"):
            neurofm.load_exported(folder)
    record["head"]["estimator"] = "os.system"
    (folder / EXPORT_JSON).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="not one neurofm reads"):
        neurofm.load_exported(folder)


def test_a_run_without_output_folder_saves_its_frozen_probe_with_the_result(small_dataset, runs, tmp_path):
    X, y, meta, info = small_dataset
    models = {"probe": probe()}
    result = Experiment(experiment_config(runs["root"] / "cache", refit=True, models=models)).run(
        X, y, sample_metadata=meta, **info
    )
    result.save(tmp_path / "saved")
    loaded = ExperimentResult.load(tmp_path / "saved")
    np.testing.assert_array_equal(
        loaded.get_refit_model("probe").predict_proba(X), result.get_refit_model("probe").predict_proba(X)
    )


# -- priorities 4 and 5: hub and model card --------------------------------------------------------------------


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    """A local hub the client is pointed at, online (the tests import huggingface_hub offline)."""
    import huggingface_hub.constants as hfc

    served = LocalHub().start()
    monkeypatch.setenv("HF_ENDPOINT", served.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    yield served
    served.stop()


def test_push_to_hub_uploads_the_export_and_braindecode_downloads_it(runs, hub, small_dataset, tmp_path):
    result = runs["refit"]
    commit = result.push_to_hub("lora", "lab/cbramod-lora", token="hf_dummy")
    assert ("POST", "/api/repos/create") in hub.requests
    assert hub.repos["lab/cbramod-lora"].refs["main"] == commit
    files = hub.repos["lab/cbramod-lora"].commits[commit]
    assert set(files) == {"config.json", "model.safetensors", EXPORT_JSON, "README.md"}
    # Pushing again commits to the repository that now exists (exist_ok), not an error.
    second = result.push_to_hub("lora", "lab/cbramod-lora", fold=1, token="hf_dummy")
    assert hub.repos["lab/cbramod-lora"].refs["main"] == second != commit
    commit = result.push_to_hub("lora", "lab/cbramod-lora", token="hf_dummy")
    model = result.get_refit_model("lora")
    raw, adapted = _adapted_batch(model, small_dataset[0])
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "downloads")}
    logits = _braindecode_logits(None, adapted, tmp_path, repo="lab/cbramod-lora", env=env)
    assert np.array_equal(logits, model._outputs(raw))
    assert any(path.startswith("/lab/cbramod-lora/resolve/") for _, path in hub.file_requests())


def test_push_to_hub_without_a_token_is_refused_by_the_hub(runs, hub, monkeypatch, tmp_path):
    from huggingface_hub.errors import HfHubHTTPError

    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))
    with pytest.raises(HfHubHTTPError):
        runs["refit"].push_to_hub("lora", "lab/anonymous", token=False)


def test_model_card_records_data_scores_config_versions_adaptation_and_weights(runs, tmp_path):

    result = runs["refit"]
    card = (result.export_model("full", tmp_path / "card") / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: braindecode\n")
    assert "CBraMod.from_pretrained" in card
    assert "- windows: 48" in card and "- channels (19): Fp1, Fp2" in card and "160.0 Hz" in card
    assert "left_hand" in card
    summary = result.summary().query("Model == 'full'")
    for row in summary.itertuples():
        assert f"| {row.Metric} | {row.mean:.4f} ± {row.std:.4f} | 2 |" in card
    assert "units: volts to microvolts (x1e6), then divided by 100" in card and "resample: 160 Hz -> 200 Hz" in card
    assert "train_mode: full" in card and "pooling: flatten" in card  # the config, as YAML
    versions = package_versions(["torch", "braindecode"])
    assert f"- torch: {versions['torch']}" in card and f"- braindecode: {versions['braindecode']}" in card
    assert f"- neurofm: {package_versions(['neurofm'])['neurofm']}" in card
    assert '"kind": "random"' in card  # the weights' origin
    probe_card = (result.export_model("probe", tmp_path / "probe-card") / "README.md").read_text()
    assert "neurofm.load_exported" in probe_card and "LogisticRegression" in probe_card


def test_a_frozen_probe_whose_head_was_an_object_exports_and_reloads(small_dataset, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, meta, info = small_dataset
    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))  # standardised already: not twice
    probe_config = probe().model_copy(update={"head": ClassicalModelConfig(estimator=head)})
    config = experiment_config(tmp_path / "cache", refit=True, models={"mine": probe_config})
    result = Experiment(config).run(X, y, sample_metadata=meta, output_dir=tmp_path / "out", **info)
    steps = result.get_refit_model("mine").head.steps
    assert [type(step).__name__ for _, step in steps] == ["StandardScaler", "LogisticRegression"]
    for source in (result, ExperimentResult.load(tmp_path / "out")):  # the saved config holds the head's description
        folder = source.export_model("mine", tmp_path / f"export-{id(source)}")
        assert (folder / "head.safetensors").is_file()  # a scaler and a linear model: arrays, not skops
        np.testing.assert_array_equal(
            neurofm.load_exported(folder, cache_dir=str(tmp_path / "cache")).predict_proba(X),
            result.get_refit_model("mine").predict_proba(X),
        )
