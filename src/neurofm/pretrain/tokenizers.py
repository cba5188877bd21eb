"""Stage 1 of pretraining: neural tokenizers that turn channel patches into code indices.

:class:`VQNSPTokenizer` follows LaBraM's vector-quantised neural spectrum
prediction: a LaBraM-style transformer encodes every (channel, patch) token, a
small task layer maps it to the code space, :class:`NormEMAQuantizer` picks the
nearest code, and a transformer decoder must recover each patch's Fourier
amplitude and phase from the codes alone. Predicting the spectrum rather than
the raw samples is what makes the codes carry rhythm rather than noise.
The encoder is braindecode's own ``Labram`` in its tokenizer layout, so the
temporal convolution and the channel vocabulary are those the student uses.

:class:`TFDualTokenizer` is CodeBrain's dual tokenizer as neurofm builds it:
two branches with their own codebooks, one encoding each patch's waveform and
reconstructing it, one encoding its amplitude spectrum and reconstructing
amplitude and phase. The temporal and the frequency code of a patch are
predicted separately in stage 2 (braindecode's ``CodeBrain`` has one head per
codebook). CodeBrain is montage-free, so these branches know a token's place
in time but not its channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import NormEMAQuantizer

__all__ = ["TFDualTokenizer", "TokenizerOutput", "VQNSPTokenizer", "labram_token_width", "spectrum_targets"]


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
    return _zscore(spectrum.abs()), _zscore(torch.angle(spectrum))


def _zscore(values: torch.Tensor) -> torch.Tensor:
    """Standardise over all tokens and features of each window."""
    mean = values.mean(dim=(1, 2), keepdim=True)
    std = values.std(dim=(1, 2), keepdim=True)
    return (values - mean) / (std + 1e-5)


class _TokenTransformer(nn.Module):
    """Transformer over per-token vectors with learned time (and optionally channel) embeddings."""

    def __init__(
        self, in_dim: int, dim: int, depth: int, num_heads: int, n_patches: int, n_channel_slots: int | None = None
    ) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, dim)
        self.channel_embedding = nn.Embedding(n_channel_slots, dim) if n_channel_slots else None
        self.time_embedding = nn.Embedding(n_patches, dim)
        layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, n_patches: int, channel_ids: torch.Tensor | None = None) -> torch.Tensor:
        # Tokens are ordered channel-major: (c0 p0, c0 p1, ..., c1 p0, ...), as LaBraM's patch embedding orders them.
        n_chans = tokens.shape[1] // n_patches
        x = self.project(tokens) + self.time_embedding(torch.arange(n_patches, device=tokens.device)).repeat(n_chans, 1)
        if self.channel_embedding is not None and channel_ids is not None:
            x = x + self.channel_embedding(channel_ids).repeat_interleave(n_patches, dim=0)
        return self.norm(self.blocks(x))


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
    encoder_kwargs : dict
        More braindecode ``Labram`` arguments of the encoder. LaBraM's released
        tokenizer has q/v biases and a final ``fc_norm`` but no q/k norms and no
        layer scales (:func:`neurofm.models.labram_original.vqnsp_tokenizer_state`
        derives them from the file).
    decoder : bool
        Build the decoder and its spectrum heads. Without them the tokenizer
        only gives codes (stage 2), as when it holds LaBraM's released
        ``vqnsp.pth``, whose decoder neurofm's cannot represent.
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
        encoder_kwargs: dict | None = None,
        decoder: bool = True,
    ) -> None:
        super().__init__()
        from braindecode.models import Labram  # heavy: import neurofm.pretrain does not load braindecode (~5 s)

        encoder_kwargs = {"use_mean_pooling": False, **(encoder_kwargs or {})}
        width = labram_token_width(patch_size, encoder_kwargs.get("conv_out_channels", 8))
        self.patch_size, self.n_patches = patch_size, n_times // patch_size
        self.encoder = Labram(
            n_chans=1,
            n_times=n_times,
            sfreq=200.0,
            n_outputs=1,
            patch_size=patch_size,
            embed_dim=width,
            num_layers=depth,
            num_heads=num_heads,
            **encoder_kwargs,
        )
        self.encode_task = _regression_head(width, code_dim)
        self.quantizer = NormEMAQuantizer(codebook_size, code_dim, **(quantizer_kwargs or {}))
        self.decoder = self.amplitude_head = self.phase_head = None
        if decoder:
            self.decoder = _TokenTransformer(code_dim, width, decoder_depth, num_heads, self.n_patches, n_channel_slots)
            self.amplitude_head = _regression_head(width, patch_size // 2)
            self.phase_head = _regression_head(width, patch_size // 2)

    def _encode(self, x: torch.Tensor, ch_names: list[str]) -> torch.Tensor:
        tokens = self.encoder(x, ch_names=ch_names, return_features=True)["features"]
        return self.encode_task(tokens)

    @torch.no_grad()
    def get_codebook_indices(self, x: torch.Tensor, ch_names: list[str]) -> list[torch.Tensor]:
        """Code index of every (channel, patch) token: one ``(batch, n_chans * n_patches)`` tensor."""
        return [self.quantizer.lookup(self._encode(x, ch_names))]

    def forward(self, x: torch.Tensor, ch_names: list[str], channel_ids: torch.Tensor) -> TokenizerOutput:
        """Losses of one batch of windows ``(batch, n_chans, n_times)``."""
        if self.decoder is None:
            raise RuntimeError(
                "This tokenizer has no decoder (it holds LaBraM's released vqnsp.pth, or was built with "
                "decoder=False): it gives codes for stage 2 and cannot be trained."
            )
        quantized = self.quantizer(self._encode(x, ch_names))
        decoded = self.decoder(quantized.quantized, self.n_patches, channel_ids)
        patches = x.reshape(x.shape[0], -1, self.patch_size)
        amplitude, phase = spectrum_targets(patches)
        amplitude_loss = F.mse_loss(self.amplitude_head(decoded), amplitude)
        phase_loss = F.mse_loss(self.phase_head(decoded), phase)
        loss = quantized.loss + amplitude_loss + phase_loss
        parts = {
            "commitment": quantized.loss.item(),
            "amplitude": amplitude_loss.item(),
            "phase": phase_loss.item(),
            "perplexity": quantized.perplexity,
            "codes_used": quantized.used,
            "dead_codes": quantized.dead,
            "restarted_codes": quantized.restarted,
        }
        return TokenizerOutput(loss=loss, parts=parts, indices=quantized.indices)


class TFDualTokenizer(nn.Module):
    """CodeBrain's dual tokenizer: a temporal and a frequency codebook per patch.

    Parameters
    ----------
    n_times, patch_size : int
        Samples per window and per patch.
    codebook_size, code_dim : int
        Size and dimension of each of the two codebooks.
    dim, depth, num_heads, decoder_depth : int
        Width, encoder layers, heads and decoder layers of each branch.
    quantizer_kwargs : dict
        Passed to both :class:`NormEMAQuantizer`.
    """

    def __init__(
        self,
        *,
        n_times: int,
        patch_size: int = 200,
        codebook_size: int = 4096,
        code_dim: int = 64,
        dim: int = 200,
        depth: int = 12,
        num_heads: int = 10,
        decoder_depth: int = 3,
        quantizer_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.patch_size, self.n_patches = patch_size, n_times // patch_size
        n_freqs = patch_size // 2
        branch = {"dim": dim, "depth": depth, "num_heads": num_heads, "n_patches": self.n_patches}
        self.temporal_encoder = _TokenTransformer(patch_size, **branch)
        self.frequency_encoder = _TokenTransformer(n_freqs, **branch)
        self.temporal_task = _regression_head(dim, code_dim)
        self.frequency_task = _regression_head(dim, code_dim)
        self.temporal_quantizer = NormEMAQuantizer(codebook_size, code_dim, **(quantizer_kwargs or {}))
        self.frequency_quantizer = NormEMAQuantizer(codebook_size, code_dim, **(quantizer_kwargs or {}))
        decoder = {**branch, "depth": decoder_depth}
        self.temporal_decoder = _TokenTransformer(code_dim, **decoder)
        self.frequency_decoder = _TokenTransformer(code_dim, **decoder)
        self.waveform_head = _regression_head(dim, patch_size)
        self.amplitude_head = _regression_head(dim, n_freqs)
        self.phase_head = _regression_head(dim, n_freqs)

    def _branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        patches = x.reshape(x.shape[0], -1, self.patch_size)
        log_amplitude = torch.log1p(torch.fft.rfft(patches.float(), dim=-1)[..., : self.patch_size // 2].abs())
        temporal = self.temporal_task(self.temporal_encoder(patches, self.n_patches))
        frequency = self.frequency_task(self.frequency_encoder(log_amplitude, self.n_patches))
        return patches, temporal, frequency

    @torch.no_grad()
    def get_codebook_indices(self, x: torch.Tensor, ch_names: list[str] | None = None) -> list[torch.Tensor]:
        """Temporal and frequency code of every (channel, patch) token, each ``(batch, n_tokens)``."""
        _, temporal, frequency = self._branches(x)
        return [self.temporal_quantizer.lookup(temporal), self.frequency_quantizer.lookup(frequency)]

    def forward(
        self, x: torch.Tensor, ch_names: list[str] | None = None, channel_ids: torch.Tensor | None = None
    ) -> TokenizerOutput:
        """Losses of one batch of windows ``(batch, n_chans, n_times)``."""
        patches, temporal, frequency = self._branches(x)
        q_time, q_freq = self.temporal_quantizer(temporal), self.frequency_quantizer(frequency)
        decoded_time = self.temporal_decoder(q_time.quantized, self.n_patches)
        decoded_freq = self.frequency_decoder(q_freq.quantized, self.n_patches)
        amplitude, phase = spectrum_targets(patches)
        waveform_loss = F.mse_loss(self.waveform_head(decoded_time), _zscore(patches.float()))
        amplitude_loss = F.mse_loss(self.amplitude_head(decoded_freq), amplitude)
        phase_loss = F.mse_loss(self.phase_head(decoded_freq), phase)
        loss = q_time.loss + q_freq.loss + waveform_loss + amplitude_loss + phase_loss
        parts = {
            "commitment": q_time.loss.item() + q_freq.loss.item(),
            "waveform": waveform_loss.item(),
            "amplitude": amplitude_loss.item(),
            "phase": phase_loss.item(),
            "perplexity_temporal": q_time.perplexity,
            "perplexity_frequency": q_freq.perplexity,
            "codes_used_temporal": q_time.used,
            "codes_used_frequency": q_freq.used,
            "dead_codes_temporal": q_time.dead,
            "dead_codes_frequency": q_freq.dead,
            "restarted_codes_temporal": q_time.restarted,
            "restarted_codes_frequency": q_freq.restarted,
        }
        return TokenizerOutput(loss=loss, parts=parts, indices=q_time.indices)
