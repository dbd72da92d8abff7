"""Resizing helpers shared by the sources: antialiased, deterministic, uint8 in and out."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 (N, C, h, w) to (N, C, size, size): bilinear, antialiased when shrinking."""
    if images.shape[-2:] == (size, size):
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False,
                            antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def shrink_to_max_side(image: Image.Image, max_side: int) -> Image.Image:
    """Downscale (never upscale) so the longer side is at most ``max_side``, keeping the aspect."""
    width, height = image.size
    scale = max_side / max(width, height)
    if scale >= 1:
        return image
    return image.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                        Image.Resampling.LANCZOS)


def resize_center_crop(image: Image.Image, size: int) -> torch.Tensor:
    """Scale the shorter side to ``size`` and cut the centre square: uint8 (3, size, size), RGB."""
    image = image.convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return pil_to_tensor(image)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB/L image -> uint8 (C, H, W)."""
    import numpy as np

    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
