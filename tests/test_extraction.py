"""Extraction settings: CPU streams give the embeddings of one stream, in order; kernels, flags and warnings around them."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch

import neurofm.embed as embed
from neurofm.estimators.frozen import FoundationEmbedder
from neurofm.exceptions import ConfigError
from neurofm.models import get_model_spec, list_model_keys
from neurofm.models.specs import _capture_output


def _embedder(key, info, **kw):
    return FoundationEmbedder(
        key,
        weights="random",
        sfreq=info["sfreq"],
        ch_names=info["ch_names"],
        cache_embeddings=False,
        verbose=False,
        model_kwargs=get_model_spec(key).tiny_kwargs,
        **kw,
    )


def _agree_to_float_rounding(got, expected):
    """The README's tolerance where bits are not promised (1 vs 2 streams, other batch sizes): every entry within
    1e-6 of the largest magnitude. Measured on the tiny configs: at most 2.2e-7 (BENDR, CodeBrain), else 0."""
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("key", list_model_keys())
def test_streams_give_the_embeddings_of_one_stream_in_order(key, small_dataset, monkeypatch, two_threads):
    X, _, _, info = small_dataset
    X = X[:11]  # 6 batches of 2, the last one short: streams get unequal shares
    emb = _embedder(key, info, batch_size=2).fit(X)
    monkeypatch.setenv("NEUROFM_CPU_STREAMS", "2")  # two streams of one thread each
    two = emb.transform(X)
    monkeypatch.setenv("NEUROFM_CPU_STREAMS", "3")  # three streams of one thread each, other batches per stream
    assert np.array_equal(emb.transform(X), two), f"{key}: the share of batches per stream changed the embeddings"
    monkeypatch.setenv("NEUROFM_CPU_STREAMS", "1")  # one stream of two threads: some kernels round differently
    _agree_to_float_rounding(emb.transform(X), two)
    # a window's embedding is its own and does not depend on how many are embedded with it
    monkeypatch.setenv("NEUROFM_CPU_STREAMS", "2")
    assert np.array_equal(emb.transform(X[2:4]), two[2:4])


def test_a_captured_output_belongs_to_the_thread_that_computed_it():
    # Thread "a" opens its capture first and computes last, so every hook is registered
    # while "b" computes: a capture that kept whatever passed through would hold b's output.
    module = torch.nn.Sequential(torch.nn.Identity())
    a_open, b_done = threading.Event(), threading.Event()
    got: dict[str, torch.Tensor] = {}

    def a():
        with _capture_output(module, "0") as store:
            a_open.set()
            b_done.wait(5)
            module(torch.full((1,), 1.0))
            got["a"] = store["out"]

    def b():
        a_open.wait(5)
        with _capture_output(module, "0") as store:
            module(torch.full((1,), 2.0))
            got["b"] = store["out"]
        b_done.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert got["a"].item() == 1.0 and got["b"].item() == 2.0


def test_stream_count_follows_threads_batches_and_the_environment(monkeypatch):
    monkeypatch.delenv("NEUROFM_CPU_STREAMS", raising=False)
    threads = torch.get_num_threads()
    streams, each = embed.cpu_streams(1000)
    assert streams == min(threads, embed.MAX_CPU_STREAMS) and each == max(1, threads // streams)
    assert embed.cpu_streams(1) == (1, each)  # one batch runs alone, on as many threads as a stream has
    monkeypatch.setenv("NEUROFM_CPU_STREAMS", "1")
    assert embed.cpu_streams(1000) == (1, threads)
    monkeypatch.setenv("NEUROFM_CPU_STREAMS", "4")
    assert embed.cpu_streams(3)[0] == 3
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv("NEUROFM_CPU_STREAMS", bad)
        # "two" is not a number (the message says how to fix it); "0" and "-1" are below one stream.
        with pytest.raises(
            ConfigError,
            match=rf"NEUROFM_CPU_STREAMS='{bad}' (is not a whole number; set it to 1 or "
            r"more, or unset it|must be at least 1)",
        ):
            embed.cpu_streams(10)


def test_a_failing_batch_stops_the_streams_and_restores_the_threads(small_dataset, monkeypatch):
    X, _, _, info = small_dataset
    emb = _embedder("cbramod", info, batch_size=2).fit(X[:12])
    backbone = emb.backbone_
    calls = {"n": 0}
    real_extract = backbone.extract

    def failing(module, x, signal):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("batch three failed")
        return real_extract(module, x, signal)

    monkeypatch.setattr(backbone, "extract", failing)
    monkeypatch.setenv("NEUROFM_CPU_STREAMS", "2")
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="batch three failed"):
        emb.transform(X[:12])
    assert torch.get_num_threads() == threads
    assert not any(p.requires_grad for p in backbone.module.parameters())  # frozen again
    assert calls["n"] < 6 + 2  # the other stream stopped at its next batch instead of running to the end


def test_short_attention_models_get_the_math_kernel_on_the_cpu_only():
    flash_before = torch.backends.cuda.flash_sdp_enabled()
    with embed.attention_kernels(get_model_spec("cbramod"), "cpu"):
        assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled() == flash_before
    for spec, device in ((get_model_spec("labram"), "cpu"), (get_model_spec("cbramod"), "cuda")):
        with embed.attention_kernels(spec, device):
            assert torch.backends.cuda.flash_sdp_enabled() == flash_before


@pytest.mark.parametrize("fast", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_warns_before_compute(fast, small_dataset, monkeypatch):
    X, _, _, info = small_dataset
    monkeypatch.setattr(embed, "cpu_has_fast_bf16", lambda: fast)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb = _embedder("cbramod", info, precision="bf16").fit(X[:2])
        _embedder("cbramod", info, precision="fp32").fit(X[:2])
    slow = [w for w in caught if "slower than fp32" in str(w.message)]
    assert len(slow) == (0 if fast else 1)
    assert emb._backbone is None  # nothing was built or computed to find this out


def test_a_frozen_backbone_embeds_with_grad_flags_on_and_comes_back_frozen(small_dataset, monkeypatch):
    # torch reads requires_grad to choose kernels (autocast's weight cache, matmul folding) even under no_grad
    X, _, _, info = small_dataset
    emb = _embedder("codebrain", info, batch_size=4, precision="bf16").fit(X[:8])
    module = emb.backbone_.module
    assert not any(p.requires_grad for p in module.parameters())
    seen = []
    real_extract = emb.backbone_.extract

    def watching(mod, x, signal):
        seen.append((torch.is_grad_enabled(), all(p.requires_grad for p in mod.parameters())))
        return real_extract(mod, x, signal)

    monkeypatch.setattr(emb.backbone_, "extract", watching)
    emb.transform(X[:8])
    assert seen and all(flags == (False, True) for flags in seen)  # no graph, flags on
    assert not any(p.requires_grad for p in module.parameters())


def test_auto_batch_size_is_32_on_the_cpu_and_64_elsewhere_and_bad_sizes_are_refused():
    assert embed.resolve_batch_size("auto", "cpu") == 32
    assert embed.resolve_batch_size("auto", "cuda:1") == 64
    assert embed.resolve_batch_size(np.int64(7), "cpu") == 7
    for bad in (0, -3, 2.5, "big", True, None):
        with pytest.raises(
            ConfigError,
            match=r"batch_size=.* must be a whole number of at least 1, or 'auto' \(32 on the "
            r"CPU, 64 on a GPU\)",
        ):
            embed.resolve_batch_size(bad, "cpu")


def test_auto_batch_size_embeds_as_an_explicit_one_and_a_bad_one_fails_before_compute(small_dataset, monkeypatch):
    from pydantic import ValidationError

    from neurofm.configs import FoundationEmbeddingModelConfig

    X, _, _, info = small_dataset
    X = X[:40]  # more windows than one automatic batch
    auto = _embedder("cbramod", info).fit(X)
    assert auto.batch_size == "auto" and auto.batch_size_ == 32
    _agree_to_float_rounding(auto.transform(X), _embedder("cbramod", info, batch_size=40).fit(X).transform(X))

    forwards = []
    monkeypatch.setattr("neurofm.estimators.frozen.embed_windows", lambda *a, **k: forwards.append(a))
    with pytest.raises(ConfigError, match="batch_size=0 must be a whole number of at least 1, or 'auto'"):
        _embedder("cbramod", info, batch_size=0).fit(X).transform(X)
    assert forwards == []

    assert FoundationEmbeddingModelConfig(model_key="cbramod").batch_size == "auto"
    assert FoundationEmbeddingModelConfig(model_key="cbramod", batch_size=16).batch_size == 16
    for bad in (0, "big"):
        with pytest.raises(ValidationError, match=r"batch_size\.constrained-int\s+Input should be"):
            FoundationEmbeddingModelConfig(model_key="cbramod", batch_size=bad)
