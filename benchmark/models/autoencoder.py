"""The model every quantizer is trained in: a registered backbone's encoder and decoder around it."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from quantizers.base import Quantizer, QuantizerOutput


class NonFiniteLatentError(FloatingPointError):
    """The encoder produced NaN or infinite latents (training diverged before the quantizer ran)."""


@dataclass
class AutoencoderOutput:
    """reconstruction ``(B, C, H, W)``; quantizer: the quantizer's result on the tokens; latents: the
    encoder's output as tokens ``(B, h·w, latent_dim)`` (what the latent effective-rank probe reads)."""

    reconstruction: Tensor
    quantizer: QuantizerOutput
    latents: Tensor


def to_tokens(latents: Tensor) -> Tensor:
    """``(B, d, *grid)`` -> ``(B, n, d)``: one token per latent position (``h·w`` for images, ``t`` for
    audio), the quantizer's layout."""
    return latents.flatten(2).transpose(1, 2)


def from_tokens(tokens: Tensor, grid: tuple[int, ...]) -> Tensor:
    """``(B, n, d)`` -> ``(B, d, *grid)``, the inverse of :func:`to_tokens` (grid ``(h, w)`` or ``(t,)``)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


class VQAutoencoder(nn.Module):
    """Encoder -> quantizer on ``(B, tokens, latent_dim)`` -> decoder, for any registered backbone."""

    def __init__(self, encoder: nn.Module, quantizer: Quantizer, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder

    def forward(self, inputs: Tensor) -> AutoencoderOutput:
        latents = self.encoder(inputs)
        grid = tuple(latents.shape[2:])
        tokens = to_tokens(latents)
        if not torch.isfinite(tokens).all():
            # Raised here rather than as the quantizer's ValueError: non-finite latents mean training
            # diverged, which the trainer reports as a non-finite loss, not as bad input.
            raise NonFiniteLatentError("the encoder output contains NaN or infinite values")
        quantized = self.quantizer(tokens)
        reconstruction = self.decoder(from_tokens(quantized.quantized, grid))
        return AutoencoderOutput(reconstruction=reconstruction, quantizer=quantized, latents=tokens)
