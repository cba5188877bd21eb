"""Reading an export back (:func:`load_exported`) and pushing one to a hub (:func:`push_to_hub`)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..configs.models import SCRATCH_MODELS
from ..exceptions import ConfigError
from ..models.hub import hub_endpoint
from ..models.registry import get_model_spec
from .files import _PROBE_FORMAT
from .folders import export_model
from .probes import _read_json, _read_probe
from .refit import load_fine_tuned

if TYPE_CHECKING:
    from ..results import ExperimentResult


def load_exported(
    path: str | Path,
    *,
    weights: str | None = None,
    cache_dir: str = "~/.cache/neurofm",
    cache_embeddings: bool = False,
    device: str = "auto",
    trust_remote_code: bool = False,
) -> Any:
    """Rebuild a model that :meth:`ExperimentResult.export_model` wrote.

    Reading runs no code: JSON and safetensors only, classes from fixed lists.

    Parameters
    ----------
    path : str | Path
        The exported folder.
    weights : str | None
        A frozen probe's backbone weights, where they are now (a file, a
        folder, a hub id); ``None``: as exported. Their identity must match
        the one recorded.
    cache_dir, cache_embeddings, device
        Where a frozen probe's embedder remembers weight digests (and caches
        embeddings, when ``cache_embeddings``), and where it runs.
    trust_remote_code : bool
        Allow a ``hugging_face`` backbone's own code to run.

    Returns
    -------
    model : FrozenProbe | braindecode model | NeuralFineTuner
        A frozen probe (``predict``/``predict_proba`` on raw windows); the
        braindecode model of a ``braindecode`` export (in eval mode; it takes
        adapted windows); a :class:`~neurofm.estimators.neural.NeuralFineTuner`
        of a ``checkpoint`` export.
    """
    folder = Path(path).expanduser()
    doc = _read_json(folder)
    fmt = doc.get("format")
    if fmt == _PROBE_FORMAT:
        return _read_probe(
            folder,
            weights=weights,
            cache_dir=cache_dir,
            cache_embeddings=cache_embeddings,
            device=device,
            trust_remote_code=trust_remote_code,
        )
    if fmt == "checkpoint":
        return load_fine_tuned(folder)
    if fmt == "braindecode":
        import braindecode.models  # heavy: torch and braindecode load on use

        if doc.get("scratch"):  # a from-scratch network: one of the classes neurofm trains, never another
            name = doc.get("class")
            if name not in SCRATCH_MODELS:
                raise ConfigError(f"{folder} names a braindecode class {name!r} neurofm does not train from scratch.")
        else:
            name = get_model_spec(doc["model_key"]).braindecode_class  # the registry's class, never the file's
        return getattr(braindecode.models, name).from_pretrained(str(folder)).eval()
    raise ConfigError(f"{folder} holds an export of unknown format {fmt!r}.")


def push_to_hub(
    result: ExperimentResult,
    name: str,
    repo_id: str,
    *,
    fold: int | None = None,
    format: str | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
) -> str:
    """Export a model to a temporary folder and upload it; see :meth:`ExperimentResult.push_to_hub`."""
    from huggingface_hub import HfApi  # start-up: huggingface_hub would add ~250 ms to import neurofm

    with tempfile.TemporaryDirectory(prefix="neurofm-export-") as tmp:
        folder = export_model(result, name, Path(tmp) / "export", fold=fold, format=format)
        api = HfApi(endpoint=hub_endpoint(), token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message=commit_message or f"neurofm: {name} ({'refit' if fold is None else f'fold {fold}'})",
        )
    return info.oid
