"""Where torch computes and in which precision: resolved in the process that computes.

A run may be configured on a login node without a GPU and computed on GPU
workers (Slurm, Ray, Dask). ``device="auto"`` and ``precision="auto"`` are
therefore resolved where the model runs (:func:`resolve_device`,
:func:`resolve_precision`); the process that only plans the run checks that
the names make sense (:func:`check_device` with ``here=False``).

``deterministic_algorithms`` is the one switch behind ``deterministic=True``:
PyTorch's deterministic algorithms, cuDNN's deterministic convolutions,
cuBLAS's fixed workspace and the math attention kernel on CUDA.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

from .exceptions import ConfigError
from .utils.check import format_choices
from .utils.logging import logger

__all__ = [
    "PRECISIONS",
    "check_device",
    "check_precision",
    "cuda_has_native_bf16",
    "deterministic_algorithms",
    "device_key",
    "resolve_device",
    "resolve_precision",
]

#: Precision settings: ``auto`` is bf16 on a GPU that multiplies bf16 natively, fp32 everywhere else.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: cuBLAS's workspace setting under which its products are reproducible (NVIDIA's cuBLAS documentation).
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"

#: Whether this process set the workspace before cuBLAS first read it (then later calls need not warn).
_CUBLAS_WORKSPACE_SET = False


def _mps_available() -> bool:
    import torch  # heavy: estimators.frozen and embed import this module without torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str) -> str:
    """The torch device to compute on in this process.

    ``"auto"`` is CUDA when this process sees a CUDA device, else Apple's MPS
    where torch offers it, else the CPU. Other names are checked against
    what this process has.

    Raises
    ------
    ConfigError
        When the device named is not available here.
    """
    import torch  # heavy: estimators.frozen and embed import this module without torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    check_device(device, here=False)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} was requested but CUDA is not available here; use device='cpu' or 'auto'."
        )
    if device.startswith("mps") and not _mps_available():
        raise ConfigError(f"device={device!r} was requested but MPS is not available here; use device='cpu' or 'auto'.")
    return device


def check_device(device: str, here: bool = True) -> None:
    """Check a device setting before any compute.

    Parameters
    ----------
    device : str
        ``"auto"`` or a torch device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
    here : bool
        Also check that this process has the device. ``False`` where the run
        is planned in one process and computed in others (a Slurm, Ray or Dask
        cluster): only the name is checked, and the workers resolve it.

    Raises
    ------
    ConfigError
        When torch does not know the name, or (``here``) the device is missing.
    """
    import torch  # heavy: estimators.frozen and embed import this module without torch

    if device != "auto":
        try:
            torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' ({exc})."
            ) from None
    if here:
        resolve_device(device)


def cuda_has_native_bf16(device: str = "cuda") -> bool:
    """Whether this CUDA device multiplies bf16 in hardware (compute capability 8.0, Ampere, and later)."""
    import torch  # heavy: estimators.frozen and embed import this module without torch

    if not torch.cuda.is_available():
        return False
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    return major >= 8


def check_precision(precision: str, device: str) -> None:
    """Refuse a precision the resolved ``device`` cannot run, before any compute.

    Raises
    ------
    ConfigError
        For fp16 off CUDA and MPS, and for bf16 on a CUDA device older than
        Ampere (torch would emulate it, slower than fp32).
    """
    kind = device.split(":")[0]
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not known; use one of {format_choices(PRECISIONS)}.")
    if precision == "fp16" and kind not in ("cuda", "mps", "meta"):
        raise ConfigError("precision='fp16' needs a GPU; use 'bf16' or 'fp32' on the CPU.")
    if precision == "bf16" and kind == "cuda" and not cuda_has_native_bf16(device):
        raise ConfigError(
            f"precision='bf16' on {device!r}: this GPU predates bf16 hardware (compute capability "
            "below 8.0) and would emulate it; use 'fp16' (with loss scaling) or 'fp32', or 'auto'."
        )


def resolve_precision(precision: str, device: str) -> str:
    """The autocast precision on the resolved ``device``: ``auto`` is bf16 on CUDA devices with bf16 hardware.

    Everywhere else ``auto`` is fp32: on CPUs, where bf16 changes results and
    pays off only with AMX, neurofm never switches on its own; on MPS and
    pre-Ampere GPUs, where bf16 is emulated or partial. fp32 on CUDA follows
    PyTorch's TF32 settings (by default convolutions in TF32, matrix products
    in full fp32); the embedding cache keys on them.
    """
    check_precision(precision, device)
    if precision != "auto":
        return precision
    return "bf16" if device.startswith("cuda") and cuda_has_native_bf16(device) else "fp32"


def device_key(device: str) -> dict[str, Any]:
    """What the device adds to a cache key: nothing on the CPU (its keys stay as they were), else its type and,
    on CUDA, whether fp32 products may run in TF32 (they then differ well beyond the last bits)."""
    import torch  # heavy: estimators.frozen and embed import this module without torch

    kind = device.split(":")[0]
    if kind == "cpu":
        return {}
    key: dict[str, Any] = {"device": kind}
    if kind == "cuda":
        key["tf32"] = bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
    return key


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: str) -> Iterator[None]:
    """Run the enclosed torch work with reproducible algorithms (``deterministic=True``).

    Sets :func:`torch.use_deterministic_algorithms`, cuDNN's deterministic
    mode without autotuning, cuBLAS's fixed workspace
    (``CUBLAS_WORKSPACE_CONFIG``) and, on CUDA, the math attention kernel
    (the flash and memory-efficient kernels' backward passes add in an
    order that changes from run to run). Everything is restored on exit.
    On the CPU, torch's kernels are already deterministic: results are the
    same bits with or without it.

    cuBLAS reads its workspace setting when a process first uses it; when
    this process already ran CUDA products under another setting, a
    warning says that products may still vary, and the fix (set
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` before starting Python).
    """
    if not enabled:
        yield
        return
    import torch  # heavy: estimators.frozen and embed import this module without torch

    global _CUBLAS_WORKSPACE_SET
    on_cuda = device.startswith("cuda")
    saved_env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if on_cuda and saved_env is None:
        if torch.cuda.is_initialized() and not _CUBLAS_WORKSPACE_SET:
            msg = (
                "deterministic=True: CUDA was already in use in this process, so cuBLAS may keep a workspace "
                "under which products vary; set CUBLAS_WORKSPACE_CONFIG=:4096:8 before starting Python."
            )
            logger.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
        elif not torch.cuda.is_initialized():
            _CUBLAS_WORKSPACE_SET = True  # cuBLAS will read it: later calls in this process need not warn
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC_WORKSPACE
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        if on_cuda:
            from torch.nn.attention import SDPBackend, sdpa_kernel  # heavy: as torch above

            with sdpa_kernel(SDPBackend.MATH):
                yield
        else:
            yield
    except RuntimeError as exc:
        if "does not have a deterministic implementation" not in str(exc):
            raise
        raise ConfigError(
            f"deterministic=True, but this model runs an operation PyTorch cannot make reproducible on "
            f"{device!r}: {str(exc).splitlines()[0]} Set deterministic=False (results then vary in "
            "the last bits from run to run), or run on the CPU, which is reproducible."
        ) from exc
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        if on_cuda and saved_env is None:  # cuBLAS keeps the workspace it read; the environment is the caller's again
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
