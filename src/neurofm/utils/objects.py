"""Python objects in configs: an estimator given from Python, written down as data.

A config is data (:mod:`neurofm.policy`), yet a model may be an estimator
object built in Python (``ClassicalModelConfig(estimator=make_pipeline(...))``).
Wherever such a config is written (YAML, a result's ``config.yaml``, the keys
of a run's records) it is written as what the object is: the import path of
its class and its constructor parameters (``get_params(deep=False)``, the
parameters that are estimators described the same way, down to the last
step), never pickled. Two objects with equal parameters are described alike,
so a run resumes the records of the other; objects that differ in any
parameter are described apart.

A description cannot become an object again: reading it back into a config
raises an error that names the class and says to pass the object from Python
(:func:`object_refusal`).
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["OBJECT_KEY", "class_path", "describe_object", "is_described_object", "object_refusal"]

#: The key that marks a described object in a dumped config (its value is the class's import path).
OBJECT_KEY = "python_object"


def class_path(value: Any) -> str:
    """The import path of ``value``'s class (of ``value`` itself when it is a class or a function)."""
    target = value if isinstance(value, type) or inspect.isroutine(value) else type(value)
    return f"{target.__module__}.{target.__qualname__}"


def describe_object(value: Any) -> dict[str, Any]:
    """What an estimator object is, as plain data: its class's import path and its parameters, recursively.

    Parameters
    ----------
    value : estimator
        An object with scikit-learn's ``get_params``.

    Returns
    -------
    description : dict
        ``{"python_object": "package.module.Class", "params": {...}}``, JSON-
        and YAML-ready; parameters that are estimators are described alike,
        arrays by shape, dtype and a digest of their bytes.
    """
    return {OBJECT_KEY: class_path(value), "params": _describe(value.get_params(deep=False))}


def is_described_object(value: Any) -> bool:
    """Whether ``value`` is what :func:`describe_object` wrote (a config read back from a file)."""
    return isinstance(value, Mapping) and OBJECT_KEY in value


def object_refusal(description: Mapping[str, Any], field: str = "estimator") -> str:
    """The message refusing to rebuild a described object from a file: what it was and how to give it again."""
    path = str(description.get(OBJECT_KEY))
    params = description.get("params")
    steps = params.get("steps") if isinstance(params, Mapping) else None
    parts = [
        str(step[1][OBJECT_KEY])
        for step in (steps if isinstance(steps, list) else [])
        if isinstance(step, list) and len(step) == 2 and is_described_object(step[1])
    ]
    of = f" of {', '.join(parts)}" if parts else ""
    short = path.rpartition(".")[2]
    return (
        f"{field} was an estimator object given from Python, a {path}{of} (the file holds its description, with its "
        "parameters); an object is not data, so a config file cannot rebuild it. Pass the object again from Python: "
        f"ClassicalModelConfig(estimator={short}(...)). A config file names its estimator by name, or by import path "
        "with plain params (your own packages after neurofm.allow_imports)."
    )


def _describe(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}  # JSON has no NaN: written as null it would read as None, another value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        digest = hashlib.blake2b(data.tobytes() if data.dtype != object else repr(data.tolist()).encode())
        return {"array": {"shape": list(data.shape), "dtype": str(data.dtype), "digest": digest.hexdigest()[:32]}}
    if isinstance(value, Mapping):
        return {str(key): _describe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_describe(item) for item in value), key=repr)
    if isinstance(value, np.random.RandomState):
        # Its repr is the same for every seed: the state decides what it draws.
        return {OBJECT_KEY: class_path(value), "state": _digest(value.get_state(legacy=False))}
    if isinstance(value, np.random.Generator):
        return {OBJECT_KEY: class_path(value), "state": _digest(value.bit_generator.state)}
    if isinstance(value, type) or inspect.isroutine(value):
        path = class_path(value)
        # A lambda or a local function has no import path of its own: its repr (with its address) keeps two apart.
        return {OBJECT_KEY: path} if "<" not in path else {OBJECT_KEY: path, "repr": repr(value)}
    if hasattr(value, "get_params"):
        try:
            return describe_object(value)
        except Exception:  # noqa: BLE001 - a get_params that fails is described by its repr below
            pass
    # Anything else by its repr; a default repr holds the object's address, so such objects never share a key.
    return {OBJECT_KEY: class_path(value), "repr": repr(value)}


def _digest(state: Any) -> str:
    text = repr(_describe(state))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
