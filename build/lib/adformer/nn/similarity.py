"""Image similarity maps for InTra's loss and anomaly map (InTra, arXiv:2104.13897 eq. 3, 6):
gradient magnitude similarity (GMS), SSIM (kornia) and the mean-then-Gaussian blur."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters import box_blur, gaussian_blur2d
from kornia.metrics import ssim

# GMSD (Xue et al. 2014) uses c = 170 for 8-bit images; for images in [0, 1] the gradient magnitudes
# shrink by 255, so c = 170 / 255² ≈ 0.0026 (the value RIAD (Zavrtanik et al., Pattern Recognition
# 2021) uses).
GMS_C = 170.0 / 255.0**2
SSIM_WINDOW = 11


def _prewitt(images: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude per channel with Prewitt kernels (1/3-normalised, as in GMSD)."""
    kernel = torch.tensor([[1.0, 0.0, -1.0]] * 3, device=images.device, dtype=images.dtype) / 3
    kernels = torch.stack([kernel, kernel.T])[:, None]  # (2, 1, 3, 3): x and y
    channels = images.shape[1]
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    grads = F.conv2d(padded, kernels.repeat(channels, 1, 1, 1), groups=channels)
    gx, gy = grads[:, 0::2], grads[:, 1::2]
    return (gx.square() + gy.square() + 1e-12).sqrt()


def gms(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) × 2 in [0, 1] → (B, H, W) GMS averaged over channels; 1 where equal."""
    mx, my = _prewitt(x), _prewitt(y)
    return ((2 * mx * my + GMS_C) / (mx.square() + my.square() + GMS_C)).mean(1)


def ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) × 2 in [0, 1] → (B, H, W) SSIM (11×11 Gaussian window) over channels."""
    window = min(SSIM_WINDOW, x.shape[-1] - (1 - x.shape[-1] % 2))  # odd, fits the patch
    return ssim(x, y, window).mean(1)


def blur_average(maps: torch.Tensor, kernel: int, sigma: float = 2.0) -> torch.Tensor:
    """InTra's bluravg (arXiv:2104.13897 eq. 6): a mean filter, then a Gaussian blur, same kernel
    size."""
    maps = box_blur(maps[:, None], kernel)
    return gaussian_blur2d(maps, kernel, (sigma, sigma))[:, 0]
