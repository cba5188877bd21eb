"""Look-up and construction of registered backbones.

:func:`create_backbone` is the only place a backbone is built; everything it
needs to know about a model comes from that model's :class:`ModelSpec`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from ..exceptions import UnknownModelError
from ..utils.check import closest_matches, format_choices
from .specs import MODEL_SPECS, ModelSpec

if TYPE_CHECKING:
    from ..adapt import AdaptedSignal
    from .weights import LoadedBackbone

__all__ = ["create_backbone", "get_model_spec", "list_foundation_models", "list_model_keys"]

_COLUMNS = ["key", "display_name", "hub_repo", "embedding_dim", "sfreq", "channels", "sensors", "interpolation", "train_modes", "backend"]


def list_model_keys() -> list[str]:
    """Registry keys, sorted."""
    return sorted(MODEL_SPECS)


def get_model_spec(key: str) -> ModelSpec:
    """The spec registered under ``key`` (case-insensitive).

    Raises
    ------
    UnknownModelError
        With the closest keys and the full list.
    """
    spec = MODEL_SPECS.get(str(key).lower())
    if spec is not None:
        return spec
    close = closest_matches(str(key), list(MODEL_SPECS))
    hint = f" Did you mean {format_choices(close)}?" if close else ""
    raise UnknownModelError(f"Unknown model key {key!r}.{hint} Registered models: {format_choices(list_model_keys())}.")


def list_foundation_models() -> pd.DataFrame:
    """One row per registered foundation model.

    Returns
    -------
    table : DataFrame
        Columns ``key, display_name, hub_repo, embedding_dim, sfreq, channels,
        sensors, interpolation, train_modes, backend``.
    """
    rows = []
    for key in list_model_keys():
        spec = MODEL_SPECS[key]
        rows.append(
            {
                "key": spec.key,
                "display_name": spec.display_name,
                "hub_repo": spec.hub_repo,
                "embedding_dim": spec.embedding_dim,
                "sfreq": spec.sfreq,
                "channels": spec.channels,
                "sensors": ", ".join(spec.sensor_types),
                "interpolation": spec.interpolation,
                "train_modes": ", ".join(spec.train_modes),
                "backend": ", ".join(spec.backends),
            }
        )
    return pd.DataFrame(rows, columns=_COLUMNS)


def create_backbone(
    key: str,
    signal: AdaptedSignal,
    weights: str | None = None,
    *,
    backend: str = "braindecode",
    model_kwargs: dict[str, Any] | None = None,
    random_state: int = 0,
    trust_remote_code: bool = False,
) -> LoadedBackbone:
    """Build a backbone for an adapted signal and load its weights.

    Parameters
    ----------
    key : str
        Registry key.
    signal : AdaptedSignal
        Channels, rate and length the backbone will see.
    weights : str | None
        ``"random"``, a local file or directory, or a hub id; ``None`` uses the
        spec's published checkpoint.
    backend : str
        ``"braindecode"`` or ``"hugging_face"``.
    model_kwargs : dict | None
        Architecture overrides.
    random_state : int
        Seed of the random initialisation.
    trust_remote_code : bool
        Allow a hugging_face checkpoint to run its own code.

    Returns
    -------
    backbone : LoadedBackbone
        The module in eval mode plus a report of what was loaded.
    """
    from .weights import load_backbone

    spec = get_model_spec(key)
    return load_backbone(
        spec,
        signal,
        weights,
        backend=backend,
        model_kwargs=dict(model_kwargs or {}),
        random_state=random_state,
        trust_remote_code=trust_remote_code,
    )
