"""Image metrics: PSNR and SSIM (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5, as in NeRF papers).

Contract: images are float tensors in [0, 1], (H, W, 3) or (B, H, W, 3); results are Python floats.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def mse_to_psnr(mse: float | torch.Tensor) -> float:
    return -10.0 * math.log10(max(float(mse), 1e-10))


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    return mse_to_psnr(F.mse_loss(pred.float(), target.float()))


def _gaussian_window(size: int, sigma: float, channels: int, device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM over the valid (unpadded) region, per channel then averaged, data range 1."""
    p = pred.float().reshape(-1, *pred.shape[-3:]).permute(0, 3, 1, 2)
    t = target.float().reshape(-1, *target.shape[-3:]).permute(0, 3, 1, 2)
    window = min(window, p.shape[-1], p.shape[-2])
    c = p.shape[1]
    w = _gaussian_window(window, sigma, c, p.device)
    conv = lambda x: F.conv2d(x, w, groups=c)  # noqa: E731
    mu_p, mu_t = conv(p), conv(t)
    var_p = conv(p * p) - mu_p ** 2
    var_t = conv(t * t) - mu_t ** 2
    cov = conv(p * t) - mu_p * mu_t
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2))
    return float(s.mean())
