"""The image modality: uint8 images in [0, 1], MSE/PSNR/SSIM, a reconstruction grid in MLflow."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.evaluation.image_quality import psnr, ssim
from benchmark.evaluation.modality import Modality, register_modality
from benchmark.tracking import keys

#: Upscaling of the reconstruction grid so 32 px images are visible in the MLflow UI.
GRID_SCALE = 4


def to_float_images(images: Tensor, device: torch.device) -> Tensor:
    """uint8 ``(N, C, H, W)`` -> float in [0, 1] on ``device``."""
    return images.to(device=device, non_blocking=True).float().div_(255.0)


def image_quality(originals: Tensor, reconstructions: Tensor, dataset=None) -> dict[str, float]:
    return {keys.EVAL_MSE: float(F.mse_loss(reconstructions, originals)),
            keys.EVAL_PSNR: psnr(originals, reconstructions),
            keys.EVAL_SSIM: ssim(originals, reconstructions)}


def reconstruction_grid(originals: Tensor, reconstructions: Tensor):
    """uint8 ``(H, W, 3)`` image: originals in the top row, their reconstructions below."""
    from torchvision.utils import make_grid

    images = torch.cat([originals, reconstructions])
    images = F.interpolate(images, scale_factor=GRID_SCALE, mode="nearest")
    grid = make_grid(images, nrow=len(originals), padding=2 * GRID_SCALE, pad_value=1.0)
    return (grid.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def log_image_examples(run, originals: Tensor, reconstructions: Tensor, dataset, run_name: str) -> None:
    run.log_image(reconstruction_grid(originals, reconstructions), "reconstructions.png")


IMAGE = register_modality(Modality(name="image", default_backbone="conv2d", to_float=to_float_images,
                                   value_range=(0.0, 1.0), quality=image_quality,
                                   log_examples=log_image_examples, sample_noun="image",
                                   supports_fid=True))
