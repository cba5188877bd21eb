"""A frozen probe (a backbone reference and a fitted head) in memory and in its folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from ..exceptions import ConfigError, WeightsError
from ..utils.files import atomic_write, jsonable
from .files import _FORMAT_VERSION, _PROBE_FORMAT, EXPORT_JSON
from .heads import head_description, read_head, write_head

_EMBEDDER_KEYS = (
    "model_key",
    "weights",
    "backend",
    "pooling",
    "model_kwargs",
    "adaptation",
    "random_state",
    "batch_size",
    "precision",
    "deterministic",
)
_SIGNAL_KEYS = ("sfreq", "ch_names", "units", "sensor_positions", "passband")


class FrozenProbe:
    """A frozen foundation backbone's embeddings through a fitted scikit-learn head.

    What a frozen decoder (``FrozenBackboneDecoderConfig``) is once refitted
    on all windows, and what :func:`load_exported` rebuilds from an export.
    The embedder plans its input adaptation on the windows it is given
    (label-free, as in the experiment) and must find the very weights the
    head was fitted on.

    Parameters
    ----------
    embedder : FoundationEmbedder
        The backbone's parameters (unfitted; cloned and fitted on each call).
    head : estimator
        The fitted head.
    weights : dict | None
        The identity the backbone's weights must have
        (:meth:`FoundationEmbedder.identify_weights`); ``None``: not checked.
    adaptation : dict | None
        The input adaptation the experiment took (for the record).
    """

    def __init__(self, embedder: Any, head: Any, weights: dict | None = None, adaptation: dict | None = None):
        self.embedder = embedder
        self.head = head
        self.weights = weights
        self.adaptation = adaptation

    def __repr__(self) -> str:
        head = head_description(self.head)
        return f"FrozenProbe({self.embedder.model_key}, pooling={self.embedder.pooling!r}, head={head})"

    @property
    def classes_(self) -> np.ndarray | None:
        """The head's classes (classification)."""
        return getattr(self.head, "classes_", None)

    def transform(self, X, recordings=None) -> np.ndarray:
        """Embeddings of windows ``X`` (raw, as the experiment received them).

        Raises
        ------
        WeightsError
            When the backbone's weights are not those the head was fitted on.
        """

        embedder = clone(self.embedder).fit(X, recordings=recordings)
        found = embedder.manifest_["weights"]
        if self.weights is not None and jsonable(found) != jsonable(self.weights):
            raise WeightsError(
                f"The backbone's weights ({embedder.weights!r}) are not those this head was fitted on: found "
                f"{found}, expected {self.weights}. Give the weights it was fitted on (weights=...)."
            )
        return embedder.transform(X, recordings=recordings)

    def predict(self, X, recordings=None) -> np.ndarray:
        """The head's predictions for windows ``X``."""
        return self.head.predict(self.transform(X, recordings))

    def predict_proba(self, X, recordings=None) -> np.ndarray:
        """The head's class probabilities for windows ``X`` (columns in the order of :attr:`classes_`)."""
        return self.head.predict_proba(self.transform(X, recordings))

    def decision_function(self, X, recordings=None) -> np.ndarray:
        """The head's decision function for windows ``X``."""
        return self.head.decision_function(self.transform(X, recordings))


def _write_probe(folder: Path, probe: FrozenProbe, extra: dict[str, Any] | None = None) -> list[str]:
    """Write a frozen probe's files into ``folder``; their names."""
    folder.mkdir(parents=True, exist_ok=True)
    head_doc, head_files = write_head(folder, probe.head)
    params = probe.embedder.get_params()
    doc = {
        "format": _PROBE_FORMAT,
        "format_version": _FORMAT_VERSION,
        "backbone": {key: jsonable(params[key]) for key in _EMBEDDER_KEYS},
        "weights_identity": jsonable(probe.weights),
        "trust_remote_code": bool(params.get("trust_remote_code", False)),
        "signal": {key: jsonable(params[key]) for key in _SIGNAL_KEYS},
        "input_adaptation": jsonable(probe.adaptation),
        "head": head_doc,
        **(extra or {}),
    }
    text = json.dumps(doc, indent=2)
    atomic_write(folder / EXPORT_JSON, lambda tmp: tmp.write_text(text))
    return [*head_files, EXPORT_JSON]


def _read_probe(
    folder: Path,
    *,
    weights: str | None = None,
    cache_dir: str = "~/.cache/neurofm",
    cache_embeddings: bool = False,
    device: str = "auto",
    trust_remote_code: bool = False,
    embedder: Any = None,
) -> FrozenProbe:
    """A :class:`FrozenProbe` from a folder :func:`_write_probe` wrote (``embedder``: use these parameters)."""
    from ..estimators.frozen import FoundationEmbedder  # heavy: torch and braindecode load on use

    doc = _read_json(folder)
    if doc.get("format") != _PROBE_FORMAT:
        raise ConfigError(f"{folder} holds a {doc.get('format')!r} export, not a frozen probe.")
    head = read_head(folder, doc["head"])
    if embedder is None:
        if doc.get("trust_remote_code") and not trust_remote_code:
            raise ConfigError(
                f"The backbone of {folder} runs code from its checkpoint (trust_remote_code); load it with "
                "trust_remote_code=True if you trust that code."
            )
        backbone = dict(doc["backbone"])
        if weights is not None:
            backbone["weights"] = weights
        embedder = FoundationEmbedder(
            **backbone,
            **doc["signal"],
            cache_embeddings=cache_embeddings,
            cache_dir=cache_dir,
            device=device,
            trust_remote_code=trust_remote_code,
            verbose=False,
        )
    return FrozenProbe(embedder, head, doc.get("weights_identity"), doc.get("input_adaptation"))


def _read_json(folder: Path) -> dict[str, Any]:
    path = Path(folder) / EXPORT_JSON
    if not path.is_file():
        raise ConfigError(f"{folder} is not a neurofm export: it has no {EXPORT_JSON}.")
    return json.loads(path.read_text())
