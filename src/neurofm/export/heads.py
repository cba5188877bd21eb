"""Fitted scikit-learn heads written without pickle: linear ones as arrays and parameters (safetensors + JSON),
others with skops, read back trusting scikit-learn, numpy and scipy types only."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigError
from ..utils.files import atomic_write, jsonable
from .files import _HEAD_FILE

#: Heads a frozen probe can be written with: scikit-learn estimators whose predictions are computed from their
#: array attributes (``coef_``, ``intercept_``, ``classes_`` ...) alone, so that arrays and parameters rebuild
#: them exactly. Name -> the public module it is imported from (nothing else is ever imported on reading).
LINEAR_HEADS = {
    "LogisticRegression": "sklearn.linear_model",
    "LinearRegression": "sklearn.linear_model",
    "Ridge": "sklearn.linear_model",
    "RidgeCV": "sklearn.linear_model",
    "Lasso": "sklearn.linear_model",
    "ElasticNet": "sklearn.linear_model",
    "LinearSVC": "sklearn.svm",
    "LinearSVR": "sklearn.svm",
    "LinearDiscriminantAnalysis": "sklearn.discriminant_analysis",
    "RidgeProbe": "neurofm.estimators.ridge_probe",
}
_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_]*_")


#: The file of a head written with skops, and the only types reading it trusts: scikit-learn's, and the numpy and
#: scipy objects its estimators hold. skops rebuilds them without pickle; a file naming any other type is refused.
_SKOPS_FILE = "head.skops"
SKOPS_TRUSTED = ("sklearn.", "numpy.", "scipy.")
_SKOPS_MISSING = "skops is not installed (pip install skops, or neurofm[all])"


def _skops_io():
    try:
        import skops.io  # optional (the all extra): it writes the heads that are not linear
    except ImportError:
        return None
    return skops.io


def _foreign(types: list[str]) -> list[str]:
    return sorted(t for t in types if not t.startswith(SKOPS_TRUSTED))


def _is_linear(head: Any) -> bool:
    module = LINEAR_HEADS.get(type(head).__name__)
    return module is not None and type(head).__module__.startswith(module)


def head_unsaved_reason(head: Any) -> str | None:
    """Why a head cannot be written without pickle (``None``: it can)."""
    if _is_linear(head):
        return None
    name = type(head).__name__
    skops_io = _skops_io()
    if skops_io is None:
        return f"its head {name} is not linear ({', '.join(sorted(LINEAR_HEADS))}), and {_SKOPS_MISSING}"
    foreign = _foreign(skops_io.get_untrusted_types(data=skops_io.dumps(head)))
    if foreign:
        return (
            f"its head {name} holds types from outside scikit-learn, numpy and scipy ({', '.join(foreign[:5])}), "
            "which neurofm would not trust when reading it back"
        )
    return None


def write_head(folder: Path, head: Any) -> tuple[dict[str, Any], list[str]]:
    """Write a fitted head into ``folder``: its JSON description and the names of the files written."""
    reason = head_unsaved_reason(head)
    if reason is not None:
        raise ConfigError(f"This frozen probe cannot be exported: {reason}.")
    if _is_linear(head):
        # start-up: safetensors' extension adds ~12 ms to import neurofm, for exports only
        from safetensors.numpy import save_file

        doc, arrays = _head_state(head)
        atomic_write(folder / _HEAD_FILE, lambda tmp: save_file(arrays, str(tmp)))
        return doc, [_HEAD_FILE]
    data = _skops_io().dumps(head)
    atomic_write(folder / _SKOPS_FILE, lambda tmp: tmp.write_bytes(data))
    return {"estimator": type(head).__name__, "stored": "skops", "file": _SKOPS_FILE}, [_SKOPS_FILE]


def read_head(folder: Path, doc: dict[str, Any]) -> Any:
    """The head :func:`write_head` wrote into ``folder``; nothing outside the trusted types is built."""
    if doc.get("stored") != "skops":
        # start-up: safetensors' extension adds ~12 ms to import neurofm, for exports only
        from safetensors.numpy import load_file

        return _read_head(doc, load_file(str(folder / _HEAD_FILE)))
    skops_io = _skops_io()
    if skops_io is None:
        raise ConfigError(
            f"The head of {folder} ({doc.get('estimator')}) was written with skops, but {_SKOPS_MISSING}."
        )
    path = folder / _SKOPS_FILE
    types = skops_io.get_untrusted_types(file=path)
    foreign = _foreign(types)
    if foreign:
        raise ConfigError(
            f"The head in {path} names types from outside scikit-learn, numpy and scipy ({', '.join(foreign[:5])}); "
            "neurofm refuses to build them. Load it yourself with skops.io.load if you trust its author."
        )
    return skops_io.load(path, trusted=types)


def _head_state(head: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A fitted linear head as JSON (class, parameters, small attributes) and arrays (for safetensors)."""
    reason = head_unsaved_reason(head)
    if reason is not None:
        raise ConfigError(f"This frozen probe cannot be exported: {reason}.")
    params = jsonable(head.get_params(deep=False))
    json.dumps(params)  # parameters are plain data (scikit-learn's linear models take no objects)
    attributes: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for key, value in vars(head).items():
        if not _ATTRIBUTE.fullmatch(key):
            continue  # private state: the linear models predict from their public fitted attributes
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            arrays[key] = np.ascontiguousarray(value)
            attributes[key] = {"stored": "safetensors"}
        elif isinstance(value, np.ndarray) and (
            value.dtype.kind in "US" or (value.dtype.kind == "O" and all(isinstance(v, str) for v in value.ravel()))
        ):
            attributes[key] = {"stored": "json", "dtype": value.dtype.str, "value": value.tolist()}
        elif value is None or isinstance(value, (bool, int, float, str, np.generic)):
            attributes[key] = {"stored": "json", "value": jsonable(value)}
        else:
            raise ConfigError(
                f"This frozen probe cannot be exported: its head's attribute {key} is a {type(value).__name__}, "
                "which neurofm does not write (arrays, numbers and strings only, never pickle)."
            )
    return {"estimator": type(head).__name__, "params": params, "attributes": attributes}, arrays


def _read_head(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    """The head :func:`_head_state` wrote, rebuilt from its class name (allow-listed), parameters and arrays."""

    name = doc.get("estimator")
    if name not in LINEAR_HEADS:
        raise ConfigError(f"The export's head {name!r} is not one neurofm reads ({', '.join(sorted(LINEAR_HEADS))}).")
    cls = getattr(importlib.import_module(LINEAR_HEADS[name]), name)
    head = cls(**doc["params"])
    for key, entry in doc["attributes"].items():
        if not _ATTRIBUTE.fullmatch(key):
            raise ConfigError(f"The export's head names an attribute {key!r} that no fitted estimator has.")
        if entry["stored"] == "safetensors":
            value = arrays[key]
        elif "dtype" in entry:
            value = np.asarray(entry["value"], dtype=np.dtype(entry["dtype"]))
        else:
            value = entry["value"]
        setattr(head, key, value)
    return head
