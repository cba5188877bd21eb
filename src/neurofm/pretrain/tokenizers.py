"""Stage 1 of pretraining: neural tokenizers that turn channel patches into code indices.

:class:`VQNSPTokenizer` follows LaBraM's vector-quantised neural spectrum
prediction: a LaBraM-style transformer encodes every (channel, patch) token, a
small task layer maps it to the code space, :class:`NormEMAQuantizer` picks the
nearest code, and a transformer decoder must recover each patch's Fourier
amplitude and phase from the codes alone. Predicting the spectrum rather than
the raw samples is what makes the codes carry rhythm rather than noise.
The encoder is braindecode's own ``Labram`` in its tokenizer layout, so the
temporal convolution and the channel vocabulary are those the student uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import NormEMAQuantizer

__all__ = ["TokenizerOutput", "VQNSPTokenizer", "labram_token_width", "spectrum_targets"]


def labram_token_width(patch_size: int, conv_out_channels: int = 8) -> int:
    """Width of the tokens LaBraM's temporal convolution makes from a patch (200 for 200 samples)."""
    # Conv(1, 15), stride 8, padding 7, then two size-preserving convolutions.
    return conv_out_channels * ((patch_size + 2 * 7 - 15) // 8 + 1)


def spectrum_targets(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fourier amplitude and phase of each patch, z-scored per window.

    Parameters
    ----------
    patches : Tensor, shape (batch, n_tokens, patch_size)

    Returns
    -------
    amplitude, phase : Tensor, shape (batch, n_tokens, patch_size // 2)
        The first half of the spectrum (the signal is real, the rest mirrors it).
    """
    spectrum = torch.fft.fft(patches.float(), dim=-1)[..., : patches.shape[-1] // 2]

    def zscore(values: torch.Tensor) -> torch.Tensor:
        mean = values.mean(dim=(1, 2), keepdim=True)
        std = values.std(dim=(1, 2), keepdim=True)
        return (values - mean) / (std + 1e-5)

    return zscore(spectrum.abs()), zscore(torch.angle(spectrum))


class _TokenDecoder(nn.Module):
    """Transformer over code vectors with learned channel and time embeddings."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, n_channel_slots: int, n_patches: int) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, dim)
        self.channel_embedding = nn.Embedding(n_channel_slots, dim)
        self.time_embedding = nn.Embedding(n_patches, dim)
        layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, codes: torch.Tensor, channel_ids: torch.Tensor, n_patches: int) -> torch.Tensor:
        # Tokens are ordered channel-major: (c0 p0, c0 p1, ..., c1 p0, ...), as LaBraM's patch embedding orders them.
        n_chans = channel_ids.shape[0]
        channel = self.channel_embedding(channel_ids).repeat_interleave(n_patches, dim=0)
        time = self.time_embedding(torch.arange(n_patches, device=codes.device)).repeat(n_chans, 1)
        return self.norm(self.blocks(self.project(codes) + channel + time))


def _regression_head(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, out))


@dataclass
class TokenizerOutput:
    """Losses and codebook statistics of one tokenizer step."""

    loss: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)
    indices: torch.Tensor | None = None


class VQNSPTokenizer(nn.Module):
    """LaBraM's VQ-NSP tokenizer.

    Parameters
    ----------
    n_times : int
        Samples per window (a multiple of ``patch_size``).
    patch_size : int
        Samples per patch (LaBraM: 200 at 200 Hz).
    n_channel_slots : int
        Size of the channel vocabulary (LaBraM: 128 names + the [CLS] slot).
    codebook_size, code_dim : int
        The codebook (LaBraM: 8192 x 64).
    depth, num_heads : int
        Encoder transformer (LaBraM: 12 layers, 10 heads).
    decoder_depth : int
        Decoder transformer layers (LaBraM: 3).
    quantizer_kwargs : dict
        Passed to :class:`NormEMAQuantizer`.
    """

    def __init__(
        self,
        *,
        n_times: int,
        patch_size: int = 200,
        n_channel_slots: int = 129,
        codebook_size: int = 8192,
        code_dim: int = 64,
        depth: int = 12,
        num_heads: int = 10,
        decoder_depth: int = 3,
        quantizer_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        from braindecode.models import Labram

        width = labram_token_width(patch_size)
        self.patch_size, self.n_patches = patch_size, n_times // patch_size
        self.encoder = Labram(
            n_chans=1, n_times=n_times, sfreq=200.0, n_outputs=1, patch_size=patch_size, embed_dim=width,
            num_layers=depth, num_heads=num_heads, use_mean_pooling=False,
        )
        self.encode_task = _regression_head(width, code_dim)
        self.quantizer = NormEMAQuantizer(codebook_size, code_dim, **(quantizer_kwargs or {}))
        self.decoder = _TokenDecoder(code_dim, width, decoder_depth, num_heads, n_channel_slots, self.n_patches)
        self.amplitude_head = _regression_head(width, patch_size // 2)
        self.phase_head = _regression_head(width, patch_size // 2)

    def _encode(self, x: torch.Tensor, ch_names: list[str]) -> torch.Tensor:
        tokens = self.encoder(x, ch_names=ch_names, return_features=True)["features"]
        return self.encode_task(tokens)

    @torch.no_grad()
    def get_codebook_indices(self, x: torch.Tensor, ch_names: list[str]) -> torch.Tensor:
        """Code index of every (channel, patch) token, shape ``(batch, n_chans * n_patches)``."""
        return self.quantizer.lookup(self._encode(x, ch_names))

    def forward(self, x: torch.Tensor, ch_names: list[str], channel_ids: torch.Tensor) -> TokenizerOutput:
        """Losses of one batch of windows ``(batch, n_chans, n_times)``."""
        quantized = self.quantizer(self._encode(x, ch_names))
        decoded = self.decoder(quantized.quantized, channel_ids, self.n_patches)
        patches = x.reshape(x.shape[0], -1, self.patch_size)
        amplitude, phase = spectrum_targets(patches)
        amplitude_loss = F.mse_loss(self.amplitude_head(decoded), amplitude)
        phase_loss = F.mse_loss(self.phase_head(decoded), phase)
        loss = quantized.loss + amplitude_loss + phase_loss
        parts = {
            "commitment": quantized.loss.item(), "amplitude": amplitude_loss.item(), "phase": phase_loss.item(),
            "perplexity": quantized.perplexity, "codes_used": quantized.used, "dead_codes": quantized.dead,
        }
        return TokenizerOutput(loss=loss, parts=parts, indices=quantized.indices)
