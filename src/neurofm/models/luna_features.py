"""LUNA's frequency features, with a phase whose bits do not depend on the window's row in the batch.

torch computes elementwise ops in SIMD blocks and the few elements left at the
end of each thread's share of the tensor one by one, with scalar code. For
``torch.angle`` the two round differently (about one element in six on an
AVX-512 CPU), so in braindecode's LUNA the last patches of the window that
ended a thread's share came out different in the last bit from the same
window in another row: a window's embedding depended on where it sat in its
batch. numpy's ``angle`` runs its SIMD loop over the remainder too (partial
loads), so every element is computed alike wherever it lies.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RowStableFrequencyEmbedder", "stable_angle"]


def stable_angle(z: torch.Tensor) -> torch.Tensor:
    """``torch.angle(z)``, each element's bits independent of its position in ``z`` on the CPU.

    On other devices, or when a gradient must flow through the phase, this is
    ``torch.angle`` itself (GPU kernels compute every element with the same code).
    """
    if z.device.type != "cpu" or z.requires_grad:
        return torch.angle(z)
    return torch.from_numpy(np.angle(z.detach().resolve_conj().numpy()))


class RowStableFrequencyEmbedder(nn.Module):
    """braindecode's LUNA ``_FrequencyFeatureEmbedder`` with its phase from :func:`stable_angle`.

    It takes over the original's ``frequency_to_embed`` MLP, so parameter
    names, state dicts, checkpoints and adapter targets are unchanged
    (braindecode 1.8.1's forward, otherwise the same operations).

    Parameters
    ----------
    original : braindecode.models.luna._FrequencyFeatureEmbedder
        The embedder built by ``LUNA``.
    """

    def __init__(self, original: nn.Module):
        super().__init__()
        self.patch_size = original.patch_size
        self.embed_dim = original.embed_dim
        self.frequency_to_embed = original.frequency_to_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patches of ``x`` (B, C, T) to embedded spectra (B, C * S, D), S patches per channel."""
        n_batch, n_chans, n_times = x.shape
        if n_times % self.patch_size:
            x = F.pad(x, (0, self.patch_size - n_times % self.patch_size))
        spectrum = torch.fft.rfft(x.reshape(n_batch, n_chans, -1, self.patch_size), dim=-1)
        features = torch.cat((torch.abs(spectrum), stable_angle(spectrum)), dim=-1)
        return self.frequency_to_embed(features).flatten(1, 2)
