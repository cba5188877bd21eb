"""The registry table and the nine backbones, each on the reference input."""

from __future__ import annotations

import numpy as np
import pytest

from neurofm import UnknownModelError, get_model_spec, list_foundation_models
from neurofm.estimators.frozen import FoundationEmbedder
from neurofm.exceptions import ConfigError
from neurofm.models import list_model_keys

NINE = {"bendr", "biot", "cbramod", "codebrain", "eegpt", "labram", "luna", "reve", "signaljepa"}
SPEC_DIMS = {"bendr": 512, "biot": 256, "cbramod": 200, "eegpt": 2048, "labram": 200, "luna": 256, "reve": 512,
             "signaljepa": 64, "codebrain": 200}  # fmt: skip


def test_table_has_nine_models_and_the_documented_columns():
    table = list_foundation_models()
    assert list(table.columns) == [
        "key", "display_name", "hub_repo", "embedding_dim", "sfreq", "channels", "sensors", "interpolation",
        "train_modes", "backend",
    ]  # fmt: skip
    assert set(table["key"]) == NINE
    # Backbones free of electrode names take MEG: any channels (CBraMod, CodeBrain) or any positioned sensors (LUNA, REVE).
    takes_meg = {key for key, sensors in zip(table["key"], table["sensors"], strict=True) if "mag" in sensors}
    assert takes_meg == {"cbramod", "codebrain", "luna", "reve"}
    assert dict(zip(table["key"], table["embedding_dim"], strict=True)) == SPEC_DIMS


def test_unknown_key_suggests_the_closest():
    with pytest.raises(UnknownModelError, match="Did you mean 'labram'") as err:
        get_model_spec("labrum")
    for key in NINE:
        assert key in str(err.value)


def test_lookup_is_case_insensitive():
    assert get_model_spec("CBraMod").key == "cbramod"


@pytest.mark.parametrize("key", list_model_keys())
def test_reference_input_gives_registry_dimension(key, windows_19ch, ch_names_19):
    """19-channel 10-20, 160 Hz, 4 s windows in volts reach every backbone at its full size."""
    spec = get_model_spec(key)
    emb = FoundationEmbedder(
        key, weights="random", sfreq=160.0, ch_names=ch_names_19, cache_embeddings=False, verbose=False
    )
    E = emb.fit(windows_19ch).transform(windows_19ch)
    assert E.dtype == np.float32
    assert E.shape == (3, spec.embedding_dim)
    assert np.isfinite(E).all()
    # Different windows give different embeddings: the backbone really saw the data.
    assert not np.allclose(E[0], E[1])
    steps = {step["step"] for step in emb.plan_.steps}
    assert {"units", "resample"} <= steps
    assert emb.plan_.target.sfreq == spec.sfreq
    assert emb.get_artifacts()  # adaptation and backbone are recorded


@pytest.mark.parametrize("key", list_model_keys())
@pytest.mark.parametrize("pooling", ["mean", "max", "flatten", "cls"])
def test_pooling_modes(key, pooling, windows_19ch, ch_names_19):
    spec = get_model_spec(key)
    emb = FoundationEmbedder(
        key,
        weights="random",
        pooling=pooling,
        sfreq=160.0,
        ch_names=ch_names_19,
        cache_embeddings=False,
        verbose=False,
        model_kwargs=spec.tiny_kwargs,
    )
    if pooling not in spec.poolings:
        with pytest.raises(ConfigError, match=rf"pooling='{pooling}' is not available for '{key}'; use one of"):
            emb.check_input(windows_19ch.shape)
        return
    E = emb.fit(windows_19ch).transform(windows_19ch)
    mean = (
        FoundationEmbedder(
            key,
            weights="random",
            pooling="mean",
            sfreq=160.0,
            ch_names=ch_names_19,
            cache_embeddings=False,
            verbose=False,
            model_kwargs=spec.tiny_kwargs,
        )
        .fit(windows_19ch)
        .transform(windows_19ch)
    )
    assert E.dtype == np.float32 and E.ndim == 2 and len(E) == 3
    if pooling == "flatten":
        assert E.shape[1] > mean.shape[1] and E.shape[1] % mean.shape[1] == 0
    else:
        assert E.shape[1] == mean.shape[1]
    if pooling in ("max", "cls"):
        assert not np.allclose(E, mean)


@pytest.mark.parametrize("key", list_model_keys())
def test_embeddings_are_deterministic(key, windows_19ch, ch_names_19):
    spec = get_model_spec(key)
    make = lambda: FoundationEmbedder(  # noqa: E731
        key,
        weights="random",
        sfreq=160.0,
        ch_names=ch_names_19,
        cache_embeddings=False,
        verbose=False,
        model_kwargs=spec.tiny_kwargs,
        random_state=3,
    )
    a = make().fit(windows_19ch).transform(windows_19ch)
    b = make().fit(windows_19ch).transform(windows_19ch)
    np.testing.assert_array_equal(a, b)
