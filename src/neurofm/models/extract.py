"""Forward adapters: how each backbone's token features are read from a forward pass.

A spec's ``extract`` (:class:`~neurofm.models.modelspec.ModelSpec`) is one of
the functions here: ``extract(module, x, signal) -> (tokens (B, N, D), cls (B, D) or None)``.
Which one a model uses, and why, is stated in its entry in
:mod:`neurofm.models.specs`.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..adapt import AdaptedSignal
    from .modelspec import Features


@contextlib.contextmanager
def _capture_output(module, submodule: str) -> Iterator[dict]:
    """Record the output of ``module.<submodule>`` during this thread's forward pass.

    Extraction runs batches in several threads through one module (see
    :func:`neurofm.embed.cpu_streams`); every thread's hook fires on every
    thread's forward, so each keeps only the output computed in its own thread.
    """
    store: dict[str, Any] = {}
    owner = threading.get_ident()

    def keep(_module, _inputs, out):
        if threading.get_ident() == owner:
            store["out"] = out

    target = module.get_submodule(submodule)
    handle = target.register_forward_hook(keep)
    try:
        yield store
    finally:
        handle.remove()


def _grid_tokens(features):
    """(B, C, P, D) channel-by-patch features to (B, C*P, D) tokens."""
    return features.reshape(features.shape[0], -1, features.shape[-1])


def _features_dict(module, x, **kwargs):
    return module(x, return_features=True, **kwargs)


def _extract_labram(module, x, signal: AdaptedSignal) -> Features:
    out = _features_dict(module, x, ch_names=list(signal.ch_names))
    return out["features"], out["cls_token"]


def _extract_cbramod(module, x, signal: AdaptedSignal) -> Features:
    # return_features passes through proj_out, the pretraining reconstruction head;
    # the encoder's own output is the representation upstream fine-tuning uses.
    with _capture_output(module, "encoder") as store:
        _features_dict(module, x)
    return _grid_tokens(store["out"]), None


def _extract_grid(module, x, signal: AdaptedSignal) -> Features:
    return _grid_tokens(_features_dict(module, x)["features"]), None


def _extract_biot(module, x, signal: AdaptedSignal) -> Features:
    with _capture_output(module, "encoder.transformer") as store, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch.stft window notice on every call
        module(x)
    return store["out"], None


def _extract_bendr(module, x, signal: AdaptedSignal) -> Features:
    # The context tokens carry the signal; the start token (what return_features gives) barely varies across
    # windows. The authors' classifier reads the last context vector (BENDRClassification in dn3_ext.py): "cls".
    with _capture_output(module, "contextualizer") as store:
        module(x)
    out = store["out"]  # (B, D, T + 1): the start token, then one vector per encoded step
    return out[:, :, 1:].transpose(1, 2), out[:, :, -1]


def _extract_tokens(module, x, signal: AdaptedSignal) -> Features:
    return _features_dict(module, x)["features"], None


def _extract_luna(module, x, signal: AdaptedSignal) -> Features:
    with _capture_output(module, "norm") as store:  # LUNA.forward has no return_features
        module(x)
    return store["out"], None


def _classify(module, x, signal: AdaptedSignal):
    """The class's own forward, its own head included (``trainer.head="native"``)."""
    return module(x)


def _classify_labram(module, x, signal: AdaptedSignal):
    # Without ch_names braindecode's Labram takes only its 128 channels in their canonical order.
    return module(x, ch_names=list(signal.ch_names))


def _classify_biot(module, x, signal: AdaptedSignal):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch.stft window notice on every call
        return module(x)
