"""Image conversions at the UI/file boundary: float [0, 1] HxWx3 tensors inside, uint8 arrays outside.

Contract: ``to_uint8`` and the colour maps take CPU or CUDA tensors and return HxWx3 uint8 numpy arrays.
"""
from __future__ import annotations

import numpy as np
import torch

# Control points of matplotlib's "turbo"-like ramp (dark blue -> green -> red), enough for depth previews.
_RAMP = np.array([[48, 18, 59], [70, 107, 227], [40, 188, 235], [50, 241, 152], [164, 252, 60],
                  [237, 208, 58], [251, 128, 34], [210, 49, 5], [122, 4, 3]], dtype=np.float32) / 255.0


def to_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """(H, W, C) float in [0, 1] -> (H, W, 3) uint8; a single channel is repeated."""
    if isinstance(img, torch.Tensor):
        img = img.detach().float().cpu().numpy()
    img = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return (np.clip(img[..., :3], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def colormap(values: torch.Tensor | np.ndarray, lo: float | None = None, hi: float | None = None,
             mask: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """(H, W) scalars -> (H, W, 3) uint8 through the ramp; pixels outside ``mask`` are white."""
    v = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, np.float32)
    v = np.squeeze(v, -1) if v.ndim == 3 else v
    m = np.ones_like(v, dtype=bool) if mask is None else (
        (mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)).reshape(v.shape) > 0.5)
    finite = np.isfinite(v) & m
    if lo is None:
        lo = float(v[finite].min()) if finite.any() else 0.0
    if hi is None:
        hi = float(v[finite].max()) if finite.any() else 1.0
    x = np.clip((np.nan_to_num(v) - lo) / max(hi - lo, 1e-8), 0, 1) * (len(_RAMP) - 1)
    i = np.minimum(x.astype(int), len(_RAMP) - 2)
    f = (x - i)[..., None]
    rgb = _RAMP[i] * (1 - f) + _RAMP[i + 1] * f
    rgb[~finite] = 1.0
    return to_uint8(rgb)


def normals_to_uint8(normals: torch.Tensor, opacity: torch.Tensor | None = None) -> np.ndarray:
    """(H, W, 3) unit normals in [-1, 1] -> the usual (n + 1) / 2 colouring, white where empty."""
    img = (normals * 0.5 + 0.5).clamp(0, 1)
    if opacity is not None:
        img = img * opacity + (1 - opacity)
    return to_uint8(img)
