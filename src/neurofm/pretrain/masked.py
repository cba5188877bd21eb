"""Stage 2 of pretraining: masked modelling of channel patches on a braindecode backbone.

A ratio of the (channel, patch) tokens of each window is hidden; the backbone
must predict the code index the frozen stage-1 tokenizer gives each hidden
token. LaBraM's recipe also runs the complementary mask (every token hidden
once per step), which :func:`masked_code_loss` does when ``symmetric``.

The student is the registry's own backbone (braindecode ``Labram`` or
``CodeBrain``), so what pretraining produces loads like any other checkpoint.
For ``Labram`` the mask is applied by a forward hook on its patch embedding:
braindecode's forward runs unchanged and a learned mask token replaces the
hidden tokens before positions are added. ``CodeBrain`` takes the mask in its
own forward (its pretraining mode) and predicts both of its codebooks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskedCodeBrain", "MaskedLabram", "random_token_mask", "masked_code_loss"]


def random_token_mask(batch: int, n_tokens: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Exactly ``round(ratio * n_tokens)`` hidden tokens per window, at random places (bool, True = hidden)."""
    n_hidden = min(max(int(round(ratio * n_tokens)), 1), n_tokens - 1)
    order = torch.rand(batch, n_tokens, generator=generator).argsort(dim=1)
    return order < n_hidden


class MaskedLabram(nn.Module):
    """braindecode ``Labram`` with a mask token and a code-prediction head."""

    def __init__(self, backbone: nn.Module, codebook_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.backbone = backbone
        width = backbone.cls_token.shape[-1]
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.heads = nn.ModuleList(nn.Linear(width, size) for size in codebook_sizes)
        self._mask: torch.Tensor | None = None
        backbone.patch_embed.register_forward_hook(self._hide_tokens)

    def _hide_tokens(self, module, inputs, tokens):
        if self._mask is None:
            return tokens
        hidden = self._mask.unsqueeze(-1).to(tokens.dtype)
        return tokens * (1 - hidden) + self.mask_token.to(tokens.dtype) * hidden

    def forward(self, x: torch.Tensor, ch_names: list[str], mask: torch.Tensor) -> list[torch.Tensor]:
        """Logits over each codebook for the hidden tokens, in ``mask`` order."""
        self._mask = mask
        try:
            tokens = self.backbone(x, ch_names=ch_names, return_features=True)["features"]
        finally:
            self._mask = None
        hidden = tokens[mask]
        return [head(hidden) for head in self.heads]


class MaskedCodeBrain(nn.Module):
    """braindecode ``CodeBrain`` in its pretraining mode: it takes the mask and has one head per codebook."""

    def __init__(self, backbone: nn.Module, codebook_sizes: tuple[int, ...]) -> None:
        super().__init__()
        heads = (backbone.lm_head_t.out_features, backbone.lm_head_f.out_features)
        if tuple(codebook_sizes) != heads:
            raise ValueError(f"CodeBrain's heads predict {heads} codes, the tokenizer has {tuple(codebook_sizes)}.")
        self.backbone = backbone

    def forward(self, x: torch.Tensor, ch_names: list[str], mask: torch.Tensor) -> list[torch.Tensor]:
        """Logits over the temporal and the frequency codebook for the hidden tokens, in ``mask`` order."""
        # CodeBrain's mask is (batch, channels, patches), 1 = hidden; flattened it is our channel-major order.
        grid = mask.reshape(x.shape[0], x.shape[1], -1).long()
        self.backbone.pretrain_mode = True
        try:
            return list(self.backbone(x, mask=grid))
        finally:
            self.backbone.pretrain_mode = False


def masked_code_loss(
    model: nn.Module,
    x: torch.Tensor,
    ch_names: list[str],
    targets: list[torch.Tensor],
    mask: torch.Tensor,
    symmetric: bool,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of the hidden tokens' code indices (and of the complement when ``symmetric``).

    The complementary pass runs in the same forward call, on the batch stacked
    twice, so that one backward pass follows one forward pass (as
    ``DistributedDataParallel`` requires).

    Parameters
    ----------
    targets : list of Tensor, shape (batch, n_tokens)
        Code indices from the frozen tokenizer, one tensor per codebook.
    mask : Tensor of bool, shape (batch, n_tokens)
        True where a token is hidden.
    """
    batch = x.shape[0]
    if symmetric:
        x = torch.cat([x, x])
        mask = torch.cat([mask, ~mask])
        targets = [torch.cat([t, t]) for t in targets]
    logits = model(x, ch_names, mask)
    # Which pass each hidden token belongs to, in the order tokens[mask] returns them.
    which = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(mask)[mask] >= batch
    total = x.new_zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    correct = count = 0
    passes = (("masked", ~which), ("complement", which)) if symmetric else (("masked", ~which),)
    for book, (book_logits, book_targets) in enumerate(zip(logits, targets, strict=True)):
        wanted = book_targets[mask]
        for name, rows in passes:
            loss = F.cross_entropy(book_logits[rows].float(), wanted[rows])
            total = total + loss / len(passes)
            parts[f"ce_{name}_{book}"] = loss.item()
        correct += int((book_logits.argmax(-1) == wanted).sum())
        count += wanted.numel()
    parts["code_accuracy"] = correct / max(count, 1)
    return total, parts
