"""Look-up and construction of registered backbones.

:func:`create_backbone` is the only place a backbone is built; everything it
needs to know about a model comes from that model's :class:`ModelSpec`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from ..adapt import describe_normalization
from ..exceptions import UnknownModelError
from ..utils.check import closest_matches, format_choices
from .specs import MODEL_SPECS, ModelSpec
from .weights import LoadedBackbone, load_backbone

if TYPE_CHECKING:
    from ..adapt import AdaptedSignal

__all__ = ["create_backbone", "get_model_spec", "list_foundation_models", "list_model_keys", "model_conventions"]

_COLUMNS = [
    "key",
    "display_name",
    "hub_repo",
    "embedding_dim",
    "sfreq",
    "channels",
    "sensors",
    "interpolation",
    "train_modes",
    "backend",
]


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


_AMPLITUDE = {1.0: "microvolts", 0.01: "microvolts / 100", 1e-3: "millivolts"}


def model_conventions(key: str) -> pd.DataFrame:
    """What the model's published weights saw in pretraining, what neurofm feeds it, and where that is written.

    One row per input convention: ``convention``, ``pretraining`` (what the
    checkpoint saw), ``neurofm`` (what neurofm does by default),
    ``alternative`` (the option that turns it off, if any) and ``source``
    (the authors' code, model card or paper; "unconfirmed: ..." where no
    primary source confirms it). ``neurofm models --details KEY`` prints it.
    """
    spec = get_model_spec(key)
    rows = [
        ("sfreq", f"{spec.sfreq:g} Hz", "resampled to it (polyphase)", ""),
        (
            "units",
            _AMPLITUDE.get(spec.amplitude_scale, f"microvolts x {spec.amplitude_scale:g}"),
            "converted from the input's units",
            "",
        ),
        (
            "reference",
            "average of the channels" if spec.reference == "average" else "as recorded",
            "re-referenced to the average of the channels fed" if spec.reference == "average" else "as recorded",
            "adaptation.reference: as_recorded" if spec.reference == "average" else "",
        ),
        (
            "passband",
            f"{spec.passband[0]:g}-{spec.passband[1]:g} Hz" if spec.passband else "none stated",
            "reported, not applied to windows (filter recordings before cutting)" if spec.passband else "",
            "",
        ),
        ("channels", spec.channels, _channel_handling(spec), ""),
    ]
    if spec.untrained_channels:
        never_fed = spec.channel_mode == "vocabulary"
        rows.append(
            (
                "untrained_channels",
                f"{list(spec.untrained_channels)} never saw signal",
                "not fed" if never_fed else "fed zeros",
                "adaptation.untrained_channels: feed",
            )
        )
    if spec.patch_size is not None:
        rows.append(
            ("patching", f"patches of {spec.patch_size} samples", "windows cropped or padded to a multiple", "")
        )
    normalization = describe_normalization(spec.normalization) or "none"
    if spec.normalization_statistics == "recording":
        by_recording = describe_normalization(spec.normalization, by_recording=True)
        rows.append(
            (
                "normalization",
                by_recording,
                f"{by_recording} when the windows' recordings are known, else each window's",
                "adaptation.normalization_statistics: window",
            )
        )
    else:
        rows.append(("normalization", normalization, normalization, ""))
    if spec.needs_positions:
        rows.append(("positions", "3-D sensor positions", "the recording's own, else MNE's template by name", ""))
    if "cls" in spec.poolings:
        rows.append(("cls", spec.cls_token, "what pooling='cls' returns", ""))
    if spec.scale_channel_reference_uv is not None:
        rows.append(
            (
                "scale_channel",
                f"relative amplitude against {spec.scale_channel_reference_uv:g} uV",
                "appended as the last channel",
                "",
            )
        )
    table = pd.DataFrame(rows, columns=["convention", "pretraining", "neurofm", "alternative"])
    table["source"] = [spec.sources.get(name, "") for name in table["convention"]]
    return table


def _channel_handling(spec: ModelSpec) -> str:
    return {
        "any": "every channel, in input order",
        "vocabulary": "the channels in its vocabulary, in its order",
        "fixed": "its fixed layout, missing channels interpolated" if spec.interpolation else "its fixed layout",
        "bipolar": "derived from its electrodes, missing ones interpolated",
    }[spec.channel_mode]


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
