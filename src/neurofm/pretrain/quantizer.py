"""Vector quantiser on the unit sphere with exponential-moving-average codebook updates.

The codebook of LaBraM's VQ-NSP tokenizer (and of each branch of CodeBrain's
dual tokenizer) lives on the unit sphere: encoder outputs and codes are
L2-normalised, the nearest code is the one with the largest dot product, and
codes move by an exponential moving average of the vectors assigned to them
rather than by gradients. A spherical k-means on the first batch places the
codes where the data is, which keeps most of them in use from the start.
Codes that no vector has picked for ``dead_after`` steps are counted as dead
and, when ``restart_dead`` is set, moved onto vectors of the current batch.
Without restarts, a small LaBraM tokenizer trained on ../shared/data collapsed
to a single code within 25 steps (perplexity 1.0, 1023 of 1024 codes dead after
150 steps); with restarts after 20 unused steps it kept 150+ codes in use, so
restarts are on by default.

Under ``torch.distributed`` the per-code counts and sums are summed over
processes before each update and the initialisation and restarts come from
rank 0, so every process keeps the same codebook.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NormEMAQuantizer", "QuantizerOutput"]


@dataclass
class QuantizerOutput:
    """What one quantisation step returns."""

    quantized: torch.Tensor  # straight-through: gradients flow to the encoder output
    indices: torch.Tensor
    loss: torch.Tensor  # commitment loss (the codebook itself moves by EMA)
    perplexity: float  # exp(entropy) of the codes used in this batch
    used: int  # distinct codes used in this batch
    dead: int  # codes unused for ``dead_after`` steps (before any restart of this step)
    restarted: int  # dead codes moved onto current vectors in this step


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        torch.distributed.all_reduce(tensor)
    return tensor


def _broadcast(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        torch.distributed.broadcast(tensor, src=0)
    return tensor


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` in float32 even under autocast: in bf16 the nearest code of about 2 % of the vectors changes."""
    kind = a.device.type
    # A device without autocast (meta, in the device-placement tests) has nothing to switch off.
    off = (
        torch.autocast(device_type=kind, enabled=False)
        if torch.amp.is_autocast_available(kind)
        else contextlib.nullcontext()
    )
    with off:
        return a.float() @ b.float().T


class NormEMAQuantizer(nn.Module):
    """Nearest-code quantisation of L2-normalised vectors, EMA codebook updates.

    Parameters
    ----------
    n_codes : int
        Codebook size (LaBraM: 8192).
    dim : int
        Code dimension (LaBraM: 64 in its README, 32 in its code defaults).
    decay : float
        EMA decay of the per-code counts and sums.
    commitment_weight : float
        Weight of ``||z - sg(q)||^2``.
    kmeans_init : bool
        Initialise the codebook by spherical k-means on the first training batch.
    kmeans_iters : int
        Iterations of that k-means.
    dead_after : int
        Steps without use after which a code counts as dead.
    restart_dead : bool
        Move dead codes onto random vectors of the current batch.
    """

    def __init__(
        self,
        n_codes: int,
        dim: int,
        *,
        decay: float = 0.99,
        commitment_weight: float = 1.0,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_after: int = 20,
        restart_dead: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.n_codes, self.dim = n_codes, dim
        self.decay, self.commitment_weight, self.eps = decay, commitment_weight, eps
        self.kmeans_iters, self.dead_after, self.restart_dead = kmeans_iters, dead_after, restart_dead
        self.register_buffer("codebook", F.normalize(torch.randn(n_codes, dim), dim=-1))
        self.register_buffer("cluster_size", torch.zeros(n_codes))
        self.register_buffer("code_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("steps_unused", torch.zeros(n_codes, dtype=torch.long))

    @torch.no_grad()
    def _kmeans(self, z: torch.Tensor) -> None:
        n = z.shape[0]
        generator = torch.Generator(device="cpu").manual_seed(0)
        # With fewer vectors than codes, codes start on repeated vectors and separate as data arrives.
        pick = (
            torch.randperm(n, generator=generator)
            if n >= self.n_codes
            else torch.randint(n, (self.n_codes,), generator=generator)
        )
        centers = z[pick[: self.n_codes].to(z.device)].clone()
        for _ in range(self.kmeans_iters):
            assign = _cosine(z, centers).argmax(dim=-1)
            sums = torch.zeros_like(centers).index_add_(0, assign, z)
            counts = torch.bincount(assign, minlength=self.n_codes)
            centers = torch.where(counts[:, None] > 0, F.normalize(sums, dim=-1), centers)
        self.codebook.copy_(_broadcast(centers))
        self.code_sum.copy_(self.codebook)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> tuple[int, int]:
        counts = torch.bincount(indices, minlength=self.n_codes).to(z.dtype)
        sums = torch.zeros(self.n_codes, self.dim, device=z.device, dtype=z.dtype).index_add_(0, indices, z)
        counts, sums = _all_reduce_sum(counts), _all_reduce_sum(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.code_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Codes nobody picked in this batch keep their place instead of shrinking towards zero.
        moved = F.normalize(self.code_sum, dim=-1)
        self.codebook.copy_(torch.where(counts[:, None] > 0, moved, self.codebook))
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        dead = self.steps_unused >= self.dead_after
        n_dead = int(dead.sum())
        if not (self.restart_dead and n_dead):
            return n_dead, 0
        # All processes use rank 0's draw so that the codebooks stay identical.
        draw = _broadcast(z[torch.randint(z.shape[0], (self.n_codes,), device=z.device)].contiguous())
        self.codebook.copy_(torch.where(dead[:, None], draw, self.codebook))
        self.code_sum.copy_(torch.where(dead[:, None], draw, self.code_sum))
        self.cluster_size.masked_fill_(dead, 1.0)
        self.steps_unused.masked_fill_(dead, 0)
        return n_dead, n_dead

    def lookup(self, z: torch.Tensor) -> torch.Tensor:
        """Indices of the nearest codes of (unnormalised) vectors ``z`` of shape ``(..., dim)``."""
        flat = F.normalize(z.reshape(-1, self.dim).float(), dim=-1)
        return _cosine(flat, self.codebook).argmax(dim=-1).reshape(z.shape[:-1])

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantise ``z`` of shape ``(..., dim)``; in training mode also update the codebook."""
        shape = z.shape
        flat = F.normalize(z.reshape(-1, self.dim).float(), dim=-1)
        if self.training and not bool(self.initialized):
            self._kmeans(flat.detach())
        indices = _cosine(flat.detach(), self.codebook).argmax(dim=-1)
        quantized = self.codebook[indices]
        dead, restarted = int((self.steps_unused >= self.dead_after).sum()), 0
        if self.training:
            dead, restarted = self._ema_update(flat.detach(), indices)
        loss = self.commitment_weight * F.mse_loss(flat, quantized.detach())
        straight_through = flat + (quantized - flat).detach()
        counts = _all_reduce_sum(torch.bincount(indices, minlength=self.n_codes).float())
        probs = counts / counts.sum().clamp_min(1.0)
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
        return QuantizerOutput(
            quantized=straight_through.reshape(shape),
            indices=indices.reshape(shape[:-1]),
            loss=loss,
            perplexity=float(math.exp(entropy.item())),
            used=int((counts > 0).sum()),
            dead=dead,
            restarted=restarted,
        )
