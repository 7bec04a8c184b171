"""Random backgrounds (DreamFields' augmentation): uniform noise, checkerboards and random Fourier textures,
optionally Gaussian-blurred, so that the scorer cannot be satisfied by a see-through scene painted on the sky.

Contract: every generator returns (B, H, W, 3) float images in [0, 1] on ``device``, drawn with the given
``torch.Generator`` (CPU), so a seed fixes them.
"""
from __future__ import annotations

import math

import torch

KINDS = ("noise", "checkerboard", "fourier")


def noise(b: int, h: int, w: int, generator: torch.Generator, device=None) -> torch.Tensor:
    """Per-pixel uniform noise in [0, 1]."""
    return torch.rand(b, h, w, 3, generator=generator).to(device)


def checkerboard(b: int, h: int, w: int, generator: torch.Generator, period: int | None = None,
                 period_range: tuple[int, int] = (2, 16), device=None) -> torch.Tensor:
    """Squares of ``period`` pixels (random in ``period_range``, capped at half the image, per image when None)
    in two random colours;
    pixel (i, j) has the first colour when (i // period + j // period) is even."""
    colors = torch.rand(b, 2, 3, generator=generator)
    if period is None:
        hi = min(period_range[1], max(period_range[0], min(h, w) // 2))  # at least two squares a side
        periods = torch.randint(period_range[0], hi + 1, (b,), generator=generator)
    else:
        periods = torch.full((b,), int(period))
    i = torch.arange(h).view(1, h, 1)
    j = torch.arange(w).view(1, 1, w)
    p = periods.view(b, 1, 1)
    odd = ((i // p + j // p) % 2).unsqueeze(-1).float()  # (B, H, W, 1)
    out = colors[:, None, None, 0] * (1 - odd) + colors[:, None, None, 1] * odd
    return out.to(device)


def fourier(b: int, h: int, w: int, generator: torch.Generator, decay: float = 1.5, device=None) -> torch.Tensor:
    """Random Fourier textures: Gaussian complex spectra with amplitude |f|^-decay (a power spectrum falling as
    |f|^(-2 decay)), inverse-transformed, each channel stretched to [0, 1]."""
    fy = torch.fft.fftfreq(h).view(h, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    f = torch.sqrt(fx ** 2 + fy ** 2)
    amp = torch.where(f > 0, f.clamp_min(1e-6) ** -decay, torch.zeros_like(f))  # no DC: the stretch sets it
    re = torch.randn(b, 3, *f.shape, generator=generator)
    im = torch.randn(b, 3, *f.shape, generator=generator)
    x = torch.fft.irfft2(torch.complex(re, im) * amp, s=(h, w))  # (B, 3, H, W)
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-8)
    return x.permute(0, 2, 3, 1).contiguous().to(device)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W, 3) with standard deviation ``sigma`` pixels (reflect padding)."""
    if sigma <= 0:
        return images
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, images.shape[1] - 1, images.shape[2] - 1)
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device) / sigma) ** 2)
    k = k / k.sum()
    x = images.permute(0, 3, 1, 2).reshape(-1, 1, images.shape[1], images.shape[2])
    x = torch.nn.functional.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1))
    x = torch.nn.functional.pad(x, (0, 0, radius, radius), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1))
    return x.reshape(images.shape[0], 3, images.shape[1], images.shape[2]).permute(0, 2, 3, 1)


def random_backgrounds(b: int, h: int, w: int, generator: torch.Generator, kinds: tuple[str, ...] = KINDS,
                       blur_prob: float = 0.5, blur_sigma: tuple[float, float] = (0.0, 3.0),
                       device=None) -> tuple[torch.Tensor, list[str]]:
    """One background per image, of a kind drawn from ``kinds``, blurred with probability ``blur_prob`` by a
    sigma uniform in ``blur_sigma`` (a fraction of the image side scaled to 64 px). Returns images and kinds."""
    unknown = set(kinds) - set(KINDS)
    if not kinds or unknown:
        raise ValueError(f"unknown background kinds {sorted(unknown)}; choose from {KINDS}")
    makers = {"noise": noise, "checkerboard": checkerboard, "fourier": fourier}
    picks = torch.randint(len(kinds), (b,), generator=generator).tolist()
    u = torch.rand(b, 2, generator=generator).tolist()
    out, names = [], []
    for k, (roll, s) in zip(picks, u):
        img = makers[kinds[k]](1, h, w, generator)
        if roll < blur_prob:
            img = gaussian_blur(img, (blur_sigma[0] + (blur_sigma[1] - blur_sigma[0]) * s) * min(h, w) / 64)
        out.append(img)
        names.append(kinds[k])
    images = torch.cat(out).clamp(0, 1)
    if torch.device(device or "cpu").type == "cuda":  # from pinned memory the copy does not wait for the GPU
        return images.pin_memory().to(device, non_blocking=True), names
    return images.to(device), names
