"""Resolve, read and strictly load backbone weights.

``weights`` may be:

- ``"random"``: explicit random initialisation (seeded; recorded as such);
- a local checkpoint file: ``.safetensors``, or ``.pt``/``.pth``/``.bin`` read
  with ``torch.load(weights_only=True)`` (never unpickling code);
- a local directory in the hub layout that braindecode's ``save_pretrained``
  writes (``config.json`` + ``model.safetensors``); its architecture
  arguments are used to build the model;
- a hub id ``"org/name"`` or ``"org/name@revision"``: downloaded once into the
  Hugging Face cache on first use, served from it afterwards, offline too
  (:mod:`neurofm.models.hub`);
- ``None``: the spec's published checkpoint, as a hub id.

Loading is strict: every key of the checkpoint must fill a parameter of the
module and every parameter must be filled, except the heads the spec names.
braindecode's own ``from_pretrained`` is lenient and once loaded 0 of 99
tensors without a word (braindecode issue 992); neurofm refuses instead.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import WeightsError
from ..sharing import EntryKey, check_trusted_folder, make_folders, share_with_group
from ..utils.check import check_fits_in_memory, format_choices
from ..utils.files import atomic_write
from ..utils.logging import logger
from .hub import fetch_snapshot

if TYPE_CHECKING:
    import torch

    from ..adapt import AdaptedSignal
    from .specs import ModelSpec

__all__ = [
    "LoadedBackbone",
    "WeightsSource",
    "directory_weights_file",
    "download_published",
    "load_backbone",
    "resolve_weights",
    "state_dict_hash",
    "weights_identity",
]

_SIGNAL_ARGS = ("n_chans", "n_times", "sfreq", "chs_info", "n_outputs", "input_window_seconds")
_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
#: The weights files of a braindecode ``save_pretrained`` folder, in order of preference.
_STANDARD_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class WeightsSource:
    """Where weights come from, resolved before any compute."""

    kind: str  # random | file | directory | hub
    location: str | None = None
    revision: str | None = None  # as asked for (a hub id's @revision)
    commit: str | None = None  # what a hub revision resolved to
    repo: str | None = None  # a hub id's org/name

    def describe(self) -> dict[str, Any]:
        out = {"kind": self.kind, "location": self.location, "revision": self.revision}
        return out | ({"commit": self.commit, "repo": self.repo} if self.commit else {})

    def pinned(self) -> str:
        """``weights=`` that finds these very weights again: a hub checkpoint at its commit (served from the
        cache without a request, however its branch moved since), a path, or ``"random"``."""
        if self.kind == "hub" and self.repo and self.commit:
            return f"{self.repo}@{self.commit}"
        return "random" if self.kind == "random" else str(self.location)


@dataclass
class LoadedBackbone:
    """A backbone module ready for inference, and what was loaded into it."""

    module: torch.nn.Module
    spec: ModelSpec
    source: WeightsSource
    architecture: dict[str, Any]
    weight_hash: str
    backend: str
    extract: Callable[..., Any]
    report: dict[str, Any] = field(default_factory=dict)


def _looks_like_hub_id(text: str) -> bool:
    base = text.split("@", 1)[0]
    parts = base.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def resolve_weights(spec: ModelSpec, weights: str | None, backend: str = "braindecode") -> WeightsSource:
    """Find the weights without reading them (a hub checkpoint is downloaded once, if not cached); errors name the fix.

    A hub checkpoint for the ``braindecode`` backend brings only the files
    loading reads (the spec's weights file or the standard names, and
    ``config.json``); for ``hugging_face``, the whole repository.

    Raises
    ------
    WeightsError
        When a path does not exist, or a hub checkpoint is neither in the cache nor downloadable.
    """
    if weights is None:
        if spec.hub_repo is None:
            raise WeightsError(
                f"{spec.key!r} has no published checkpoint; pass weights='random' or a local checkpoint path."
            )
        weights = spec.hub_repo if spec.hub_revision in (None, "main") else f"{spec.hub_repo}@{spec.hub_revision}"
    if weights == "random":
        return WeightsSource("random")
    path = Path(weights).expanduser()
    if path.is_file():
        if path.suffix not in _FILE_SUFFIXES:
            raise WeightsError(
                f"Unsupported checkpoint file {path.name!r}; use one of {format_choices(_FILE_SUFFIXES)}."
            )
        return WeightsSource("file", str(path.resolve()))
    if path.is_dir():
        return WeightsSource("directory", str(path.resolve()))
    if _looks_like_hub_id(weights):
        repo, _, revision = weights.partition("@")
        snapshot = _fetch_checkpoint(spec, repo, revision or None, backend)
        return WeightsSource("hub", str(snapshot.path), revision or None, snapshot.commit, repo)
    raise WeightsError(
        f"weights={weights!r} is neither 'random', an existing file or directory, nor a hub id 'org/name'. "
        "Check the path, or pass weights='random' for an explicitly random backbone."
    )


def _fetch_checkpoint(spec: ModelSpec, repo: str, revision: str | None, backend: str):
    """A hub checkpoint's files that loading reads, from the cache or downloaded once.

    For ``braindecode``: ``config.json`` and the first weights file the repository has, in the order loading
    prefers them (braindecode's ``save_pretrained`` writes the same weights twice, and a repository may hold
    several checkpoints); for ``hugging_face``, every file.
    """
    if backend == "hugging_face":
        return fetch_snapshot(repo, revision, model=spec.key)
    for name in _weights_file_names(spec):
        snapshot = fetch_snapshot(repo, revision, model=spec.key, files=[name, "config.json"])
        if (snapshot.path / name).is_file():
            break
        revision = snapshot.commit  # every try reads the commit the first resolved
    return snapshot  # without any weights file, loading names what the folder holds


def download_published(key: str, revision: str | None = None, backend: str = "braindecode"):
    """Download a model's published checkpoint into the hub cache (for runs without internet later).

    Parameters
    ----------
    key : str
        Registry key.
    revision : str | None
        A commit, branch or tag; ``None``: the one the spec pins (else ``main``).
    backend : str
        Which files: the braindecode checkpoint's, or the whole repository.

    Returns
    -------
    snapshot : neurofm.models.hub.HubSnapshot
    """
    from .registry import get_model_spec  # import cycle: the registry imports this module

    spec = get_model_spec(key)
    if spec.hub_repo is None:
        raise WeightsError(f"{key!r} has no published checkpoint to download.")
    pinned = revision or (spec.hub_revision if spec.hub_revision not in (None, "main") else None)
    return _fetch_checkpoint(spec, spec.hub_repo, pinned, backend)


def _file_digest(path: Path, memo_dir: Path | None, key: EntryKey | None = None) -> str:
    """blake2b of a file's bytes, remembered per (path, size, mtime) so large checkpoints are read once.

    Memos are read only from a private cache or, in a shared one, when keyed
    with ``key``: a planted memo would give other weights this file's identity.
    """
    stat = path.stat()
    memo = None
    # A file rewritten within the file system's timestamp granularity keeps its mtime
    # ("racy git"): only files left untouched for a while are remembered.
    if memo_dir is not None and time.time() - stat.st_mtime > 2.0:
        check_trusted_folder(memo_dir, memo_dir.parent, key, "cache_dir")
        tag = f"{path.resolve()}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
        name = hashlib.blake2b(tag.encode(), digest_size=16).hexdigest()
        memo = memo_dir / (f"{name}.txt" if key is None else f"{name}-{key.key_id}.txt")
        try:
            value, _, mac = memo.read_text().strip().partition(" ")
        except OSError:  # none yet, or one this user may not read (another's, in a shared cache): hash the file
            value = None
        if value is not None and (key is None or mac == key.sign(b"neurofm-memo", tag.encode(), value.encode())):
            return value
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    value = digest.hexdigest()  # the digest _bytes_and_digest gives the same bytes
    if memo is not None:
        text = value if key is None else f"{value} {key.sign(b'neurofm-memo', tag.encode(), value.encode())}"

        def write(tmp: Path) -> None:
            tmp.write_text(text)
            share_with_group(tmp, key)

        make_folders(memo_dir, key)
        atomic_write(memo, write, private=True)
    return value


def weights_identity(
    source: WeightsSource,
    spec: ModelSpec,
    backend: str,
    random_state: int,
    memo_dir: str | Path | None = None,
    key: EntryKey | None = None,
) -> dict[str, Any]:
    """What identifies the weights without building the model.

    A checkpoint is identified by the bytes of the files that loading reads
    (a braindecode directory: its weights file and ``config.json``; a
    transformers directory: every file but the README), a hub checkpoint
    also by the commit its revision resolved to, a random initialisation by
    its seed (the library versions enter the fingerprint beside it). Never by
    where the weights live: a checkpoint overwritten in place gets another
    identity. This one identity keys both the embedding cache (embeddings are
    served without loading the backbone at all) and an experiment's progress
    records (a resumed run never serves results of other weights).

    Digests are remembered under ``memo_dir`` (a cache folder), which must be
    private unless ``key`` authenticates them (:mod:`neurofm.sharing`).
    """
    memo = Path(memo_dir).expanduser() / "weight-digests" if memo_dir is not None else None
    if source.kind == "random":
        return {"kind": "random", "seed": int(random_state)}
    path = Path(source.location)
    if source.kind == "file":
        files = [path]
    elif backend == "hugging_face":
        files = [p for p in path.iterdir() if p.is_file() and p.name != "README.md" and not p.name.startswith(".")]
    else:
        files = [directory_weights_file(path, spec)] + [p for p in [path / "config.json"] if p.is_file()]
    return _checkpoint_identity(source, {p.name: _file_digest(p, memo, key) for p in files})


def _checkpoint_identity(source: WeightsSource, digests: dict[str, str]) -> dict[str, Any]:
    """A checkpoint's identity from the digests of its files (by name): what fit identifies and what loading read."""
    if source.kind == "file":
        [digest] = digests.values()
        return {"kind": "checkpoint", "file": digest}
    identity: dict[str, Any] = {"kind": "checkpoint", "files": dict(sorted(digests.items()))}
    if source.kind == "hub":
        identity["commit"] = Path(source.location).name  # huggingface_hub names a snapshot folder by its commit
    return identity


def _bytes_and_digest(path: Path) -> tuple[bytes, str]:
    """A file's bytes, read once, and their digest (as :func:`_file_digest` computes it)."""
    data = path.read_bytes()
    return data, hashlib.blake2b(data, digest_size=16).hexdigest()


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict in ``path`` and the digest of the very bytes it was parsed from.

    Hashing the bytes that are loaded, not the file before or after, means a
    checkpoint rewritten while a run uses it can never pass for the one that
    was identified (and cached under) earlier.
    """
    import torch  # heavy: import neurofm does not load torch

    try:
        data, digest = _bytes_and_digest(path)
        if path.suffix == ".safetensors":
            from safetensors.torch import load  # heavy: loads torch

            state = load(data)
        else:
            # Training scripts built on argparse (LaBraM's utils.save_model) store their arguments beside the
            # weights; a Namespace only holds the plain values weights_only admits anyway, and runs no code.
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        del data
    except Exception as exc:  # noqa: BLE001 - any read failure gets the same fix
        raise WeightsError(
            f"Could not read checkpoint {path}: {exc}. Files are read with weights_only=True (no pickled code); "
            "re-save the checkpoint as a plain state dict or as .safetensors."
        ) from exc
    # Upstream training scripts wrap the state dict ({"model": ...}, {"state_dict": ...}).
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items()}, digest


def _weights_file_names(spec: ModelSpec) -> list[str]:
    """The weights files a checkpoint folder may hold, in the order loading prefers them."""
    return [*([spec.hub_filename] if spec.hub_filename else []), *_STANDARD_WEIGHTS]


def directory_weights_file(folder: Path, spec: ModelSpec) -> Path:
    """The weights file a braindecode checkpoint directory is loaded from."""
    candidates = _weights_file_names(spec)
    weights_file = next((folder / c for c in candidates if (folder / c).is_file()), None)
    if weights_file is None:
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise WeightsError(
            f"{folder} holds no checkpoint ({' or '.join(candidates)}); found {found}. "
            "Point weights at the checkpoint file itself or at a directory written by save_pretrained."
        )
    return weights_file


def _directory_checkpoint(folder: Path, spec: ModelSpec) -> tuple[Path, dict[str, Any], dict[str, str]]:
    """The weights file, the saved config, and the digest of the config bytes read (by file name)."""
    weights_file = directory_weights_file(folder, spec)
    config: dict[str, Any] = {}
    digests: dict[str, str] = {}
    if (folder / "config.json").is_file():
        data, digests["config.json"] = _bytes_and_digest(folder / "config.json")
        raw = json.loads(data)
        config = {k: v for k, v in raw.items() if k not in _SIGNAL_ARGS and k != "braindecode_version"}
    return weights_file, config, digests


def _is_published(spec: ModelSpec, source: WeightsSource) -> bool:
    """Whether ``source`` is a snapshot of the registry's published repository (huggingface_hub's cache layout)."""
    return (
        source.kind == "hub"
        and spec.hub_repo is not None
        and Path(source.location).parent.parent.name == f"models--{spec.hub_repo.replace('/', '--')}"
    )


def _restore_types(config: dict[str, Any]) -> dict[str, Any]:
    """braindecode writes module classes as dotted strings; turn them back into classes."""
    restored = {}
    for key, value in config.items():
        if isinstance(value, str) and value.startswith("torch.nn."):
            module_name, _, attr = value.rpartition(".")
            try:
                value = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError):
                pass
        restored[key] = value
    return restored


_SMALLER = "lower the dimensions in model_kwargs (or in the checkpoint folder's config.json, which sets them too)."


def _check_model_fits_in_memory(spec: ModelSpec, signal: AdaptedSignal, kwargs: dict[str, Any]) -> None:
    """Refuse dimensions (from model_kwargs or a checkpoint's config.json) whose weights cannot fit in memory.

    The model is first built on PyTorch's meta device, which records shapes and allocates nothing, so any
    dimensions are cheap to check. A model whose construction computes on real values cannot be built there;
    the real build is then the check (its MemoryError becomes a WeightsError naming the dimensions).
    """
    import torch  # heavy: import neurofm does not load torch

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            shapes = spec.build(signal, **kwargs)
    except Exception:  # noqa: BLE001 - not buildable on the meta device: the real build decides
        return
    tensors = [*shapes.parameters(), *shapes.buffers()]
    n_bytes = sum(t.numel() * t.element_size() for t in tensors)
    # Two copies at the peak: the module, and the state dict it is loaded from.
    check_fits_in_memory(2 * n_bytes, f"{spec.key!r} with {kwargs or 'its default dimensions'}", _SMALLER)


def check_loaded_weights(identified: dict[str, Any], loaded: LoadedBackbone) -> None:
    """Refuse weights whose loaded bytes are not the ones identified before (and cached or recorded under).

    Raises
    ------
    WeightsError
        When a checkpoint file was rewritten between its identification and
        its loading (another process saving into the same path).
    """
    got = loaded.report.get("identity")
    if got is None or identified.get("kind") != "checkpoint" or got == identified:
        return  # random weights (identified by their seed), or a backend that loads the files itself
    raise WeightsError(
        f"The checkpoint at {loaded.source.location} changed while this run was using it: the bytes loaded are not "
        f"the ones identified when the run started ({identified} vs {got}). Another process is probably saving into "
        "that path; wait until it is done, then rerun (nothing computed from the old weights is mixed in)."
    )


def state_dict_hash(module: torch.nn.Module) -> str:
    """Hash of every tensor of the module's state dict (names, shapes, bytes)."""
    import torch  # heavy: import neurofm does not load torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _strict_load(module, state: dict, spec: ModelSpec, origin: str) -> dict[str, Any]:
    conversion = None
    if spec.convert_checkpoint is not None:  # a checkpoint in the authors' own layout, recognised by its keys
        try:
            converted = spec.convert_checkpoint(state, module)
        except WeightsError as exc:
            raise WeightsError(f"{origin}: {exc}") from exc
        if converted is not None:
            state, conversion = converted
    skipped = sorted(k for k in state if k.startswith(spec.head_prefixes) or k in spec.module_owned_keys)
    state = {k: v for k, v in state.items() if k not in skipped}
    if spec.adapt_state_dict is not None:
        state = spec.adapt_state_dict(state, module)
    own = module.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise WeightsError(
            f"The checkpoint {origin} does not fit {spec.key!r} as built for this input: "
            f"{'; '.join(mismatched[:5])}. The architecture arguments (model_kwargs) or the channel count differ "
            "from the checkpoint's."
        )
    result = module.load_state_dict(state, strict=False)
    missing = [
        k for k in result.missing_keys if not k.startswith(spec.head_prefixes) and k not in spec.module_owned_keys
    ]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise WeightsError(
            f"The checkpoint {origin} does not match {spec.key!r}: {len(missing)} missing key(s) "
            f"{missing[:5]} and {len(unexpected)} unexpected key(s) {unexpected[:5]}. Refusing to run with partly "
            "loaded weights; check that the checkpoint belongs to this model and its model_kwargs."
        )
    loaded = len(state)
    logger.info(
        "Loaded %d tensors into %s from %s (skipped: %d head/input keys)", loaded, spec.key, origin, len(skipped)
    )
    report = {"loaded_tensors": loaded, "skipped_keys": skipped, "missing_keys": missing, "unexpected_keys": unexpected}
    return report if conversion is None else report | {"converted": conversion}


def load_backbone(
    spec: ModelSpec,
    signal: AdaptedSignal,
    weights: str | None,
    *,
    backend: str = "braindecode",
    model_kwargs: dict[str, Any] | None = None,
    random_state: int = 0,
    trust_remote_code: bool = False,
) -> LoadedBackbone:
    """Build the backbone for ``signal`` and load ``weights`` strictly.

    See :func:`neurofm.models.create_backbone` for the parameters.
    """
    import torch  # heavy: import neurofm does not load torch

    source = resolve_weights(spec, weights, backend)
    if backend == "hugging_face":
        from .hf import load_hf_backbone  # import cycle: models.hf imports models.weights

        return load_hf_backbone(spec, source, trust_remote_code=trust_remote_code)

    kwargs = dict(model_kwargs or {})
    state = None
    digests: dict[str, str] = {}  # of the bytes loaded, by file name
    if source.kind in ("directory", "hub"):
        weights_file, saved_config, digests = _directory_checkpoint(Path(source.location), spec)
        corrections = spec.published_kwargs if _is_published(spec, source) else {}
        kwargs = {**_restore_types(saved_config), **corrections, **kwargs}
        state, digests[weights_file.name] = _read_state_dict(weights_file)
        origin = str(weights_file)
    elif source.kind == "file":
        state, digests[Path(source.location).name] = _read_state_dict(Path(source.location))
        origin = source.location

    _check_model_fits_in_memory(spec, signal, kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        try:
            module = spec.build(signal, **kwargs)
        except TypeError as exc:
            raise WeightsError(f"Could not build {spec.key!r} with model_kwargs {sorted(kwargs)}: {exc}.") from exc
        except MemoryError as exc:
            raise WeightsError(f"Building {spec.key!r} with {kwargs} ran out of memory; {_SMALLER}") from exc
    report: dict[str, Any] = {"random_init": source.kind == "random"}
    if state is not None:
        report |= _strict_load(module, state, spec, origin)
        report["identity"] = _checkpoint_identity(source, digests)
    else:
        logger.info("%s is randomly initialised (weights='random', seed %d)", spec.key, random_state)
        report["seed"] = random_state
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    architecture = _architecture(module, spec, kwargs)
    return LoadedBackbone(
        module=module,
        spec=spec,
        source=source,
        architecture=architecture,
        weight_hash=state_dict_hash(module),
        backend=backend,
        extract=spec.extract,
        report=report,
    )


def _architecture(module, spec: ModelSpec, kwargs: dict[str, Any]) -> dict[str, Any]:
    config = module.get_config() if hasattr(module, "get_config") else {}
    config.pop("chs_info", None)  # positions are part of the adaptation record
    return {
        "class": type(module).__name__,
        "config": json.loads(json.dumps(config, default=str)),
        "kwargs": json.loads(json.dumps(kwargs, default=str)),
    }
