"""Image reconstruction quality: :func:`psnr` (mean of per-image PSNR, not PSNR of the batch mean MSE)
and :func:`ssim` (Wang et al. 2004, Gaussian 11×11 window, σ = 1.5), both over float images ``(N, C, H, W)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from quantizers.base import check_float


# ----------------------------------------------------------------------------- reconstruction
def _check_image_pair(originals: Tensor, reconstructions: Tensor, data_range: float) -> float:
    for name, t in (("originals", originals), ("reconstructions", reconstructions)):
        if not isinstance(t, Tensor) or t.dim() != 4 or not t.dtype.is_floating_point:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a float tensor (N, C, H, W); got {shape}")
        if t.shape[0] == 0:
            raise ValueError(f"{name} must hold at least one image")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals and reconstructions must have the same shape; got "
                         f"{tuple(originals.shape)} and {tuple(reconstructions.shape)}")
    return check_float("data_range", data_range, minimum=0.0, inclusive=False)


def psnr(originals: Tensor, reconstructions: Tensor, data_range: float = 1.0) -> float:
    """Mean over images of ``10·log10(data_range² / MSE_i)``, MSE_i over one image's C×H×W values.

    Per-image, then averaged (the convention of image-restoration papers); PSNR of the batch-mean MSE
    would weight bad images less. An exact reconstruction has infinite PSNR (returned as ``inf``).
    """
    data_range = _check_image_pair(originals, reconstructions, data_range)
    diff = originals.detach().double() - reconstructions.detach().double().to(originals.device)
    mse = diff.pow(2).flatten(1).mean(dim=1)
    per_image = 10.0 * torch.log10(data_range ** 2 / mse)  # mse == 0 -> +inf
    return float(per_image.mean())


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    kernel = torch.exp(-coords.pow(2) / (2 * sigma ** 2))
    return kernel / kernel.sum()


SSIM_WINDOW = 11   # Wang et al. 2004, Sec. III-C: 11×11 circular-symmetric Gaussian, σ = 1.5
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def ssim(originals: Tensor, reconstructions: Tensor, data_range: float = 1.0) -> float:
    """Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004, Eq. 13), mean over images.

    Local means, variances and covariance under an 11×11 Gaussian window (σ = 1.5), population (not
    sample) covariances, ``C1 = (0.01·L)²``, ``C2 = (0.03·L)²`` with L = data_range. Each channel is
    compared separately and the SSIM map is averaged over the positions where the window fits inside the
    image (no padding), then over channels and images. This equals scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=L, channel_axis=0)`` averaged over images. Images must be at least 11×11.
    """
    data_range = _check_image_pair(originals, reconstructions, data_range)
    n, c, h, w = originals.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}; got {h}x{w}")
    x = originals.detach().double().reshape(n * c, 1, h, w)
    y = reconstructions.detach().double().to(x.device).reshape(n * c, 1, h, w)
    g = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, x.dtype, x.device)

    def blur(t: Tensor) -> Tensor:  # separable Gaussian filter, valid region only
        t = F.conv2d(t, g.view(1, 1, 1, -1))
        return F.conv2d(t, g.view(1, 1, -1, 1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov_xy = blur(x * y) - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    )
    return float(ssim_map.mean())
