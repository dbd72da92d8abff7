"""The cheap image backbone ``patch-mlp``: every image patch becomes one token through a small MLP, and
back. The decisive experiment's backbone (issue 20): it reproduces the collapse phenomenon (VQ's
utilization falls with K, SimVQ's does not) at a fraction of the conv backbone's cost per token.

    encoder: (B, C, H, W) in [0, 1] -> non-overlapping p x p patches (p = 2^num_downsamples)
             -> Linear(C·p², width) -> SiLU -> Linear(width, latent_dim)      one token per patch
    decoder: Linear(latent_dim, width) -> SiLU -> Linear(width, C·p²) -> patches -> image

The token grid is the conv backbone's (32 px, num_downsamples = 2: 8 x 8 tokens of 4 x 4 patches), so the
test set has the same token count and the same uniform ceilings. The encoder is trained jointly with
the quantizer, the paper's setting; nothing here is frozen. Each token sees only its own patch (no
receptive field across patches), which is what makes a step cheap. Parts are drawn from separately
seeded streams (:mod:`benchmark.models.seeding`), so the backbone is identical across latent dims.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.models.registry import register_backbone, square_token_grid
from benchmark.models.seeding import seeded_backbone
from quantizers.base import check_int


class PatchEncoder(nn.Module):
    def __init__(self, channels: int, patch: int, width: int, latent_dim: int):
        super().__init__()
        self.patch = patch
        self.body = nn.Sequential(nn.Linear(channels * patch * patch, width), nn.SiLU())
        self.to_latent = nn.Linear(width, latent_dim)

    def forward(self, images: Tensor) -> Tensor:
        batch, _, height, width = images.shape
        patches = F.unfold(images * 2.0 - 1.0, self.patch, stride=self.patch)      # (B, C·p², n)
        latents = self.to_latent(self.body(patches.transpose(1, 2)))               # (B, n, d)
        return latents.transpose(1, 2).reshape(batch, -1, height // self.patch, width // self.patch)


class PatchDecoder(nn.Module):
    def __init__(self, channels: int, patch: int, width: int, latent_dim: int):
        super().__init__()
        self.patch = patch
        self.from_latent = nn.Linear(latent_dim, width)
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(width, channels * patch * patch))

    def forward(self, latents: Tensor) -> Tensor:
        batch, _, rows, cols = latents.shape
        patches = self.body(self.from_latent(latents.flatten(2).transpose(1, 2)))  # (B, n, C·p²)
        images = F.fold(patches.transpose(1, 2), (rows * self.patch, cols * self.patch), self.patch,
                        stride=self.patch)
        return (images + 1.0) / 2.0


def build_patch_mlp(*, channels: int, patch: int, width: int, latent_dim: int, seed: int):
    for name, value in (("channels", channels), ("patch", patch), ("width", width), ("latent_dim", latent_dim)):
        check_int(name, value, minimum=1)

    return seeded_backbone(lambda: PatchEncoder(channels, patch, width, latent_dim), lambda: PatchDecoder(channels, patch, width, latent_dim), seed)


@register_backbone("patch-mlp", modality="image", tokens=lambda config: square_token_grid(config) ** 2,
                   token_grid=square_token_grid)
def _build(config, channels: int):
    """Per-patch MLP tokenizer: patch 2^num_downsamples px, hidden width ``width`` (cheap; issue 20)."""
    return build_patch_mlp(channels=channels, patch=2 ** config.num_downsamples, width=config.width,
                           latent_dim=config.latent_dim, seed=config.seed)
