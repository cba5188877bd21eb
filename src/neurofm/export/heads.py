"""Fitted scikit-learn heads written without pickle: linear ones (standardised or not) as arrays and parameters
(safetensors + JSON), others with skops, read back trusting scikit-learn, numpy and scipy types only."""

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
#: Steps a pipeline may put before its linear head and still be written as arrays (an experiment standardises a
#: frozen backbone's embeddings): name -> public module, as in :data:`LINEAR_HEADS`.
SCALER_STEPS = {"StandardScaler": "sklearn.preprocessing"}
_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_]*_")
_PIPELINE = "Pipeline"


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


def _listed(step: Any, table: dict[str, str]) -> bool:
    module = table.get(type(step).__name__)
    return module is not None and type(step).__module__.startswith(module)


def _is_linear(head: Any) -> bool:
    return _listed(head, LINEAR_HEADS)


def _is_scaled_linear(head: Any) -> bool:
    """A plain scikit-learn pipeline of scalers (:data:`SCALER_STEPS`) and a linear head: written as arrays too."""
    from sklearn.pipeline import Pipeline  # start-up: would add ~100 ms to import neurofm

    return (
        type(head) is Pipeline
        and head.memory is None
        and getattr(head, "transform_input", None) is None
        and len(head.steps) >= 2
        and all(isinstance(name, str) and _listed(step, SCALER_STEPS) for name, step in head.steps[:-1])
        and isinstance(head.steps[-1][0], str)
        and _is_linear(head.steps[-1][1])
    )


def head_description(head: Any) -> str:
    """The head's class, or its pipeline's steps' classes: ``"StandardScaler + LogisticRegression"``."""
    steps = getattr(head, "steps", None)
    if type(head).__name__ == _PIPELINE and steps:
        return " + ".join(type(step).__name__ for _, step in steps)
    return type(head).__name__


def head_unsaved_reason(head: Any) -> str | None:
    """Why a head cannot be written without pickle (``None``: it can)."""
    if _is_linear(head) or _is_scaled_linear(head):
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
    if _is_linear(head) or _is_scaled_linear(head):
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
    """A fitted linear head as JSON (class, parameters, small attributes) and arrays (for safetensors).

    A pipeline of scalers and a linear head is written step by step:
    ``{"estimator": "Pipeline", "steps": [{"name": ..., <the step's own
    description>}, ...]}``, step ``i``'s arrays under ``steps.<i>.<attribute>``.
    """
    reason = head_unsaved_reason(head)
    if reason is not None:
        raise ConfigError(f"This frozen probe cannot be exported: {reason}.")
    if not _is_scaled_linear(head):
        return _step_state(head)
    steps: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for i, (name, step) in enumerate(head.steps):
        doc, own = _step_state(step)
        steps.append({"name": name, **doc})
        arrays |= {f"steps.{i}.{key}": value for key, value in own.items()}
    return {"estimator": _PIPELINE, "steps": steps}, arrays


def _step_state(head: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One fitted estimator of :data:`LINEAR_HEADS` or :data:`SCALER_STEPS` as JSON and arrays."""
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
    if doc.get("estimator") != _PIPELINE:
        return _read_step(doc, arrays, LINEAR_HEADS)
    from sklearn.pipeline import Pipeline  # start-up: would add ~100 ms to import neurofm

    entries = doc.get("steps")
    if not isinstance(entries, list) or len(entries) < 2 or not all(isinstance(e, dict) for e in entries):
        raise ConfigError("The export's head is a pipeline without the steps neurofm writes (scalers, a linear head).")
    steps = []
    for i, entry in enumerate(entries):
        prefix = f"steps.{i}."
        own = {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}
        table = LINEAR_HEADS if i == len(entries) - 1 else SCALER_STEPS
        name = entry.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"The export's head names its step {i} with {name!r}, not a string.")
        steps.append((name, _read_step(entry, own, table)))
    return Pipeline(steps)


def _read_step(doc: dict[str, Any], arrays: dict[str, np.ndarray], table: dict[str, str]) -> Any:
    """One estimator :func:`_step_state` wrote, its class from ``table`` (an allow-list)."""
    name = doc.get("estimator")
    if name not in table:
        raise ConfigError(f"The export's head {name!r} is not one neurofm reads ({', '.join(sorted(table))}).")
    cls = getattr(importlib.import_module(table[name]), name)
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
