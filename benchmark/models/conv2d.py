"""The image backbone ``conv2d`` (the default): a small VQGAN-style convolutional encoder and decoder.

Architecture after Esser et al., "Taming Transformers" (2021) — the backbone the SimVQ paper (Zhu et al.
2024, arXiv 2411.02038, Sec. 5) trains its quantizers in — scaled down for CPUs:

    encoder: conv_in -> [num_res_blocks x ResidualBlock -> stride-2 conv] x num_downsamples
             -> num_res_blocks x ResidualBlock -> GroupNorm, SiLU -> 1x1 conv to latent_dim
    decoder: 1x1 conv from latent_dim -> num_res_blocks x ResidualBlock
             -> [nearest 2x upsample + conv -> num_res_blocks x ResidualBlock] x num_downsamples
             -> GroupNorm, SiLU -> conv_out

One width at every resolution (VQGAN multiplies channels per level; one knob is enough at 32 px and keeps
the cost per level predictable). The 1x1 projections make latent_dim and codebook size independent of
the backbone, so a comparison changes only the quantizer.

Identical initialization across latent dims (issue 11): the encoder body, the decoder body and the two
latent projections are drawn from three separately seeded RNG streams (:func:`build_backbone`), so two
trials that differ only in latent dim or quantizer share every parameter whose shape they share.

Images enter in [0, 1] and are centred to [-1, 1] inside the encoder (VQGAN's input range). The decoder's
output is linear, not squashed by a sigmoid: a sigmoid's gradient vanishes on saturated pixels, which
slows short CPU budgets; reconstructions are clamped to [0, 1] only for the evaluation metrics.
"""
from __future__ import annotations

import math
from torch import Tensor, nn

from benchmark.models.registry import register_backbone, square_token_grid
from benchmark.models.seeding import seeded_backbone
from quantizers.base import check_int


def group_norm(channels: int) -> nn.GroupNorm:
    # VQGAN uses 32 groups; the gcd keeps any width valid (a width of 48 gets 16 groups).
    return nn.GroupNorm(num_groups=math.gcd(32, channels), num_channels=channels, eps=1e-6)


class ResidualBlock(nn.Module):
    """x + conv(SiLU(GroupNorm(conv(SiLU(GroupNorm(x)))))), channel count unchanged (VQGAN's ResnetBlock)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """Images ``(B, C, H, W)`` in [0, 1] -> latents ``(B, latent_dim, H / 2^n, W / 2^n)``."""

    def __init__(self, in_channels: int, width: int, num_res_blocks: int, num_downsamples: int,
                 latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1)]
        for _ in range(num_downsamples):
            layers += [ResidualBlock(width) for _ in range(num_res_blocks)]
            layers.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        layers += [ResidualBlock(width) for _ in range(num_res_blocks)]
        layers += [group_norm(width), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.to_latent = nn.Conv2d(width, latent_dim, 1)

    def forward(self, images: Tensor) -> Tensor:
        return self.to_latent(self.body(images * 2.0 - 1.0))


class Decoder(nn.Module):
    """Latents ``(B, latent_dim, h, w)`` -> images ``(B, C, h·2^n, w·2^n)`` in [0, 1] space (unclamped)."""

    def __init__(self, out_channels: int, width: int, num_res_blocks: int, num_downsamples: int,
                 latent_dim: int):
        super().__init__()
        self.from_latent = nn.Conv2d(latent_dim, width, 1)
        layers: list[nn.Module] = [ResidualBlock(width) for _ in range(num_res_blocks)]
        for _ in range(num_downsamples):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1)]
            layers += [ResidualBlock(width) for _ in range(num_res_blocks)]
        layers += [group_norm(width), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, latents: Tensor) -> Tensor:
        # The network predicts in [-1, 1] like the encoder's input; map back to image space.
        return (self.body(self.from_latent(latents)) + 1.0) / 2.0


def build_backbone(*, channels: int, width: int, num_res_blocks: int, num_downsamples: int,
                   latent_dim: int, seed: int | None = None) -> tuple[Encoder, Decoder]:
    """The encoder and decoder for ``channels``-channel images; validates the sizes first.

    With ``seed``, the encoder body, the decoder body and the latent projections are each drawn from
    their own stream (:func:`benchmark.models.seeding.draw_streams`) and the global RNG is left
    untouched; without it, everything is drawn from the global RNG in order.
    """
    check_int("channels", channels, minimum=1)
    check_int("width", width, minimum=1)
    check_int("num_res_blocks", num_res_blocks, minimum=0)
    check_int("num_downsamples", num_downsamples, minimum=0)
    check_int("latent_dim", latent_dim, minimum=1)
    if seed is None:
        return (Encoder(channels, width, num_res_blocks, num_downsamples, latent_dim),
                Decoder(channels, width, num_res_blocks, num_downsamples, latent_dim))
    return seeded_backbone(lambda: Encoder(channels, width, num_res_blocks, num_downsamples, latent_dim), lambda: Decoder(channels, width, num_res_blocks, num_downsamples, latent_dim), seed)


@register_backbone("conv2d", modality="image", tokens=lambda config: square_token_grid(config) ** 2,
                   token_grid=square_token_grid)
def _build(config, channels: int):
    """VQGAN-style conv encoder/decoder (width, num_res_blocks, num_downsamples)."""
    return build_backbone(channels=channels, width=config.width, num_res_blocks=config.num_res_blocks,
                          num_downsamples=config.num_downsamples, latent_dim=config.latent_dim,
                          seed=config.seed)
