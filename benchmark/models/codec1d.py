"""The audio backbone: a small 1-D convolutional codec (SoundStream/EnCodec-style) scaled down for CPUs.

The SimVQ paper (arXiv 2411.02038, Sec. 5.2) trains its audio quantizers inside a WavTokenizer-style
codec at 16 kHz; this is the same shape of model, small enough to train on two CPU cores:

    encoder: strided conv (k = 2s, stride s) -> [num_res_blocks x ResidualUnit -> SiLU -> strided conv]
             for the remaining strides -> num_res_blocks x ResidualUnit -> SiLU -> 1x1 conv to latent_dim
    decoder: 1x1 conv from latent_dim -> num_res_blocks x ResidualUnit
             -> [SiLU -> transposed conv (k = 2s, stride s) -> num_res_blocks x ResidualUnit]
             for the strides in reverse but the first -> SiLU -> transposed conv to the waveform

Hop: the default strides (4, 4, 4, 5) give ``HOP_LENGTH = 320`` samples, 20 ms at 16 kHz: 50 tokens per
second, WavTokenizer's and the paper's token rate. Inputs must be a whole number of hops long.

Why this shape (measured on one CPU thread, one training step of 16 one-second clips, width 32, with
Adam): every layer at a high sample rate costs far more than its FLOPs, because convolutions with 1-8
channels run at a few GFLOP/s. So nothing but the first strided conv (and the decoder's last transposed
conv) runs at the input rate, the first stride is 4 rather than EnCodec's 2 (strides (2, 4, 5, 8) put a
residual unit at 8 kHz: 0.13-0.2 s a step; (4, 4, 4, 5): 0.045-0.05 s), and channels double with every
downsampling up to ``width`` at the token rate (``level_channels``: width 32 gives 4, 8, 16, 32 channels
at 4,000, 1,000, 250 and 50 Hz) instead of the image backbone's one width everywhere, as SoundStream and
EnCodec grow channels with depth.

One normalization, a BatchNorm right before the latent projection. Without it (SoundStream uses none) the
latents at initialization were a shared bias vector with a signal-dependent part 2 % of its size (token
spread 0.015 against an offset of 0.69, measured on the speech set), so every token picked the same 2 codes
and SimVQ used 1 of 1,024 codes after 300 steps: a measurement of the set-up, not the quantizer. With it,
42 codes are hit by 800 tokens at initialization. BatchNorm (statistics over the batch and time, running
averages at evaluation) keeps each clip's loudness relative to the others; GroupNorm over time would divide
it out, and the decoder must reproduce it. The residual unit is EnCodec's: x + 1x1(SiLU(k3 dilated
conv(SiLU(x)))), dilations 1, 3, 9 over a level's units. The decoder's output is linear; evaluation
clamps reconstructions to [-1, 1].

Identical initialization across latent dims: the encoder body, the decoder body and the two latent
projections are drawn from separately seeded streams (:func:`benchmark.models.seeding.draw_streams`,
as the image backbone), so trials that differ only in latent dim or quantizer share every parameter
whose shape they share.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from benchmark.models.registry import register_backbone
from benchmark.models.seeding import seeded_backbone
from quantizers.base import check_int

DEFAULT_STRIDES = (4, 4, 4, 5)
HOP_LENGTH = math.prod(DEFAULT_STRIDES)   # 320 samples = 20 ms at 16 kHz: 50 tokens per second
MIN_CHANNELS = 4
DILATIONS = (1, 3, 9)


def hop_length(strides=DEFAULT_STRIDES) -> int:
    """Input samples per latent token."""
    return math.prod(strides)


def level_channels(width: int, levels: int) -> list[int]:
    """Channels after each downsampling, highest rate first: doubling per level, ``width`` at the last."""
    return [max(MIN_CHANNELS, width >> (levels - 1 - level)) if level < levels - 1 else width
            for level in range(levels)]


class ResidualUnit(nn.Module):
    """x + 1x1(SiLU(dilated k3 conv(SiLU(x)))): EnCodec's residual unit, channels unchanged."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.SiLU(), nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation),
            nn.SiLU(), nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def residual_units(channels: int, count: int) -> list[nn.Module]:
    return [ResidualUnit(channels, DILATIONS[i % len(DILATIONS)]) for i in range(count)]


class CodecEncoder(nn.Module):
    """Waveforms ``(B, channels, T)`` in [-1, 1] -> latents ``(B, latent_dim, T / hop)``."""

    def __init__(self, in_channels: int, width: int, num_res_blocks: int, latent_dim: int, strides):
        super().__init__()
        self.hop = hop_length(strides)
        sizes = [in_channels] + level_channels(width, len(strides))
        layers: list[nn.Module] = []
        for level, stride in enumerate(strides):
            if level:  # nothing but the first strided conv runs at the input rate (see the docstring)
                layers += residual_units(sizes[level], num_res_blocks) + [nn.SiLU()]
            layers.append(strided_conv(sizes[level], sizes[level + 1], stride))
        # BatchNorm before the projection: see the module docstring ("One normalization")
        layers += residual_units(width, num_res_blocks) + [nn.SiLU(), nn.BatchNorm1d(width)]
        self.body = nn.Sequential(*layers)
        self.to_latent = nn.Conv1d(width, latent_dim, 1)

    def forward(self, waveforms: Tensor) -> Tensor:
        if waveforms.dim() != 3 or waveforms.shape[-1] % self.hop:
            raise ValueError(f"expected waveforms (B, C, T) with T a multiple of the hop {self.hop}, "
                             f"got shape {tuple(waveforms.shape)}")
        return self.to_latent(self.body(waveforms))


class CodecDecoder(nn.Module):
    """Latents ``(B, latent_dim, L)`` -> waveforms ``(B, channels, L * hop)`` (linear, unclamped)."""

    def __init__(self, out_channels: int, width: int, num_res_blocks: int, latent_dim: int, strides):
        super().__init__()
        sizes = [out_channels] + level_channels(width, len(strides))
        self.from_latent = nn.Conv1d(latent_dim, width, 1)
        layers: list[nn.Module] = residual_units(width, num_res_blocks)
        for level in reversed(range(len(strides))):
            layers += [nn.SiLU(), transposed_conv(sizes[level + 1], sizes[level], strides[level])]
            if level:
                layers += residual_units(sizes[level], num_res_blocks)
        self.body = nn.Sequential(*layers)

    def forward(self, latents: Tensor) -> Tensor:
        return self.body(self.from_latent(latents))


def strided_conv(in_channels: int, out_channels: int, stride: int) -> nn.Conv1d:
    """Kernel 2s, padding ceil(s/2): exactly T / s outputs for T divisible by s."""
    return nn.Conv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=(stride + 1) // 2)


def transposed_conv(in_channels: int, out_channels: int, stride: int) -> nn.ConvTranspose1d:
    """The inverse shape of :func:`strided_conv`: exactly L * s outputs (output padding 2p - s)."""
    padding = (stride + 1) // 2
    return nn.ConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride, padding=padding,
                              output_padding=2 * padding - stride)


def build_codec_backbone(*, channels: int = 1, width: int, latent_dim: int, seed: int | None = None,
                         num_res_blocks: int = 1, strides=DEFAULT_STRIDES
                         ) -> tuple[CodecEncoder, CodecDecoder]:
    """The encoder and decoder for ``channels``-channel audio; validates the sizes first.

    With ``seed``, the encoder body, the decoder body and the latent projections each come from their
    own stream (``draw_streams``) and the global RNG is left untouched; without it, everything is drawn
    from the global RNG in order."""
    check_int("channels", channels, minimum=1)
    check_int("width", width, minimum=1)
    check_int("latent_dim", latent_dim, minimum=1)
    check_int("num_res_blocks", num_res_blocks, minimum=0)
    strides = tuple(strides)
    if not strides:
        raise ValueError("strides must name at least one downsampling")
    for stride in strides:
        check_int("stride", stride, minimum=1)
    if seed is None:
        return (CodecEncoder(channels, width, num_res_blocks, latent_dim, strides),
                CodecDecoder(channels, width, num_res_blocks, latent_dim, strides))
    return seeded_backbone(lambda: CodecEncoder(channels, width, num_res_blocks, latent_dim, strides),
                           lambda: CodecDecoder(channels, width, num_res_blocks, latent_dim, strides), seed)


@register_backbone("codec1d", modality="audio", tokens=lambda config: config.clip_samples // HOP_LENGTH)
def _build(config, channels: int):
    """1-D strided conv codec: hop 320 samples (50 tokens/s at 16 kHz), channels doubling up to ``width``."""
    if config.clip_samples % HOP_LENGTH:
        raise ValueError(f"clip_samples must be a multiple of the codec's hop, {HOP_LENGTH}; got {config.clip_samples}")
    return build_codec_backbone(channels=channels, width=config.width, latent_dim=config.latent_dim,
                                seed=config.seed, num_res_blocks=config.num_res_blocks)
