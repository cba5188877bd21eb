"""Fitted scikit-learn heads written as arrays and parameters (safetensors + JSON), never pickled."""

from __future__ import annotations

import importlib
import json
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import ConfigError
from ..utils.files import jsonable

if TYPE_CHECKING:
    pass


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
}
_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_]*_")


def head_unsaved_reason(head: Any) -> str | None:
    """Why a head cannot be written without pickle (``None``: it can)."""
    name = type(head).__name__
    module = LINEAR_HEADS.get(name)
    if module is None or not type(head).__module__.startswith(module):
        return (
            f"its head {name} is not one neurofm writes without pickle (it writes linear heads from their arrays: "
            f"{', '.join(sorted(LINEAR_HEADS))}; skops is not installed)"
        )
    return None


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
