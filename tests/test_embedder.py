"""FoundationEmbedder follows scikit-learn's estimator contract."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

from neurofm.estimators.frozen import FoundationEmbedder
from neurofm.exceptions import ConfigError
from neurofm.models import get_model_spec


def embedder(info, cache_dir, **kw):
    return FoundationEmbedder(
        "cbramod",
        weights="random",
        sfreq=info["sfreq"],
        ch_names=info["ch_names"],
        cache_dir=cache_dir,
        verbose=False,
        model_kwargs=get_model_spec("cbramod").tiny_kwargs,
        **kw,
    )


def test_init_stores_and_clone_round_trips(small_dataset, cache_dir):
    _, _, _, info = small_dataset
    emb = embedder(info, cache_dir, pooling="max")
    params = emb.get_params()
    assert params["pooling"] == "max" and params["model_key"] == "cbramod"
    twin = clone(emb)
    assert twin.get_params() == params
    assert not hasattr(twin, "fingerprint_")
    twin.set_params(pooling="mean")
    assert twin.pooling == "mean" and emb.pooling == "max"


def test_transform_before_fit_says_so(small_dataset, cache_dir):
    X, _, _, info = small_dataset
    with pytest.raises(NotFittedError, match="This FoundationEmbedder instance is not fitted yet. Call 'fit'"):
        embedder(info, cache_dir).transform(X)


def test_inside_a_user_pipeline_with_sklearn_cv(small_dataset, cache_dir):
    X, y, _, info = small_dataset
    pipe = make_pipeline(embedder(info, cache_dir), LogisticRegression(max_iter=500))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


def test_windows_of_another_shape_after_fit_are_refused(small_dataset, cache_dir):
    X, _, _, info = small_dataset
    emb = embedder(info, cache_dir).fit(X)
    with pytest.raises(
        ConfigError,
        match=r"transform got windows of shape \(19, 320\), but the embedder was fitted on "
        r"\(19, 640\); fit it again on these windows",
    ):
        emb.transform(X[:, :, :320])


def test_bf16_extraction_is_close_to_fp32_and_cached_apart(small_dataset, cache_dir):
    X, _, _, info = small_dataset
    fp32 = embedder(info, cache_dir).fit(X[:8])
    bf16 = embedder(info, cache_dir, precision="bf16").fit(X[:8])
    assert fp32.fingerprint_ != bf16.fingerprint_  # bf16 embeddings never answer for fp32 ones
    a, b = fp32.transform(X[:8]), bf16.transform(X[:8])
    assert bf16.cache_misses_ == 8 and not np.array_equal(a, b)
    np.testing.assert_allclose(b, a, rtol=0.1, atol=0.05 * np.abs(a).max())
    with pytest.raises(
        ConfigError, match="precision='fp8' is not known; use one of 'auto', 'fp32', 'bf16', and 'fp16'"
    ):
        embedder(info, cache_dir, precision="fp8").check_input(X.shape)
