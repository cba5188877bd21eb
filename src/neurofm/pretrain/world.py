"""The processes of a pretraining run: one, or many started by ``torchrun``, and what they decide together.

Every process trains a replica of the model on its own shard of the corpus;
these helpers start and end the process group, agree on whether a step's
losses are finite, average the logged values and check that the replicas
end identical. With one process they do no communication at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..exceptions import ConfigError
from ..models.weights import state_dict_hash
from .config import PretrainConfig


@dataclass(frozen=True)
class _World:
    rank: int
    size: int
    device: Any
    started_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _start_world(config: PretrainConfig) -> _World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA device; use device='cpu' or 'auto'.")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    started_here = size > 1 and not dist.is_initialized()
    if started_here:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _World(rank, size, device, started_here)


def _stop_world(world: _World) -> None:
    """End the process group this run started (one the caller started is the caller's to end)."""
    if world.started_here and dist.is_initialized():
        dist.destroy_process_group()


def _all_finite(local_ok, world: _World) -> bool:
    """Whether the step's losses are finite on every process (``local_ok``: a bool, or this process's loss).

    Decided together, after every process's backward pass (the gradients'
    all-reduce) and before any update: a process that stopped alone would
    leave the others waiting forever in the next all-reduce.
    """
    if isinstance(local_ok, torch.Tensor):
        local_ok = bool(torch.isfinite(local_ok.detach()).all())
    finite = torch.tensor([1.0 if local_ok else 0.0], dtype=torch.float32, device=world.device)
    if world.size > 1:
        import torch.distributed as dist  # per call, not the module's: a test swaps in its own torch.distributed

        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def _mean_over_processes(values: dict[str, float], world: _World) -> dict[str, float]:
    if world.size == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor)
    return {k: float(v) / world.size for k, v in zip(keys, tensor.tolist(), strict=True)}


def _replicas_identical(model, world: _World) -> bool:
    """Whether every process ends with the same weights and buffers (codebooks included)."""
    if world.size == 1:
        return True
    digest = bytes.fromhex(state_dict_hash(model))
    mine = torch.tensor(list(digest), dtype=torch.int64, device=world.device)
    gathered = [torch.empty_like(mine) for _ in range(world.size)]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _barrier(world: _World) -> None:
    if world.size > 1:
        dist.barrier()
