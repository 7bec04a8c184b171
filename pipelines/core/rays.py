"""Rays from pinhole cameras, and ray-box intersection.

Contract: directions are unit vectors in world space; a pixel (i, j) shoots through its centre
(i + 0.5, j + 0.5); depth is distance along the ray. Works batched for random pixels of many images.
"""
from __future__ import annotations

import torch

from .cameras import Camera


def pixel_rays(c2w: torch.Tensor, px: torch.Tensor, py: torch.Tensor, fx: float, fy: float, cx: float,
               cy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel coordinates.

    Args:
        c2w: (B, 4, 4) or (4, 4) camera-to-world, one per pixel or shared.
        px, py: (B,) pixel coordinates (column, row), pixel centres at +0.5.
    Returns:
        origins (B, 3), unit directions (B, 3).
    """
    d_cam = torch.stack([(px - cx) / fx, -(py - cy) / fy, -torch.ones_like(px)], dim=-1)
    rot = c2w[..., :3, :3]
    dirs = (rot @ d_cam.unsqueeze(-1)).squeeze(-1) if rot.dim() == 3 else d_cam @ rot.T
    origins = c2w[..., :3, 3].expand_as(dirs)
    return origins, torch.nn.functional.normalize(dirs, dim=-1)


def camera_rays(cam: Camera, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """All rays of a camera: origins and unit directions, each (H, W, 3)."""
    device = device or cam.c2w.device
    j, i = torch.meshgrid(torch.arange(cam.height, device=device, dtype=torch.float32) + 0.5,
                          torch.arange(cam.width, device=device, dtype=torch.float32) + 0.5, indexing="ij")
    o, d = pixel_rays(cam.c2w.to(device), i.reshape(-1), j.reshape(-1), cam.fx, cam.fy, cam.cx, cam.cy)
    return o.reshape(cam.height, cam.width, 3), d.reshape(cam.height, cam.width, 3)


def ray_aabb(origins: torch.Tensor, dirs: torch.Tensor, lo: float, hi: float,
             min_near: float = 0.05) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test against the box [lo, hi]^3.

    Returns:
        near (R,), far (R,) distances (near clamped to ``min_near``), and hit (R,) bool.
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(min_near)
    far = torch.maximum(t0, t1).amin(-1)
    hit = far > near
    return near, torch.where(hit, far, near), hit
