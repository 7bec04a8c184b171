"""Occupancy grid that skips empty space during ray marching (Instant-NGP; nerfacc's OccGridEstimator).

Contract: the grid covers the box [-bound, bound]^3 with ``resolution``^3 cells, each holding an EMA of
sigma * step_size seen at random points inside it. ``render_rays`` marches a batch of rays with a fixed step
through occupied cells only, drops samples hidden behind opaque ones (a density-only pass without
gradients), and composites the rest with gradients, as packed samples.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .rays import ray_aabb
from .volume import Field, RenderOut, composite_packed


class OccupancyGrid(nn.Module):
    def __init__(self, bound: float, resolution: int = 128):
        super().__init__()
        self.bound, self.resolution = float(bound), int(resolution)
        self.register_buffer("occs", torch.zeros(resolution ** 3))
        self.register_buffer("binary", torch.ones(resolution ** 3, dtype=torch.bool))

    def _cells(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N,) flat cell indices (points outside are clamped to the border)."""
        ijk = ((x + self.bound) / (2 * self.bound) * self.resolution).long().clamp(0, self.resolution - 1)
        return (ijk[:, 0] * self.resolution + ijk[:, 1]) * self.resolution + ijk[:, 2]

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        inside = (x.abs() <= self.bound).all(-1)
        return self.binary[self._cells(x)] & inside

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], step_size: float, step: int,
               warmup_steps: int = 256, decay: float = 0.95, threshold: float = 0.01, chunk: int = 2 ** 20) -> None:
        """Refreshes the grid: every cell while warming up, afterwards a quarter of the cells at random
        plus as many occupied ones (nerfacc's schedule)."""
        n = self.resolution ** 3
        dev = self.occs.device
        if step < warmup_steps:
            cells = torch.arange(n, device=dev)
        else:
            rand = torch.randint(0, n, (n // 4,), device=dev)
            occ_idx = self.binary.nonzero().squeeze(1)
            if len(occ_idx):
                occ_idx = occ_idx[torch.randint(0, len(occ_idx), (n // 4,), device=dev)]
            cells = torch.cat([rand, occ_idx])
        r = self.resolution
        ijk = torch.stack([cells // (r * r), (cells // r) % r, cells % r], -1).float()
        x = (ijk + torch.rand_like(ijk)) / r * (2 * self.bound) - self.bound
        occ = torch.cat([density_fn(x[i:i + chunk]).float() for i in range(0, len(x), chunk)]) * step_size
        self.occs[cells] = torch.maximum(self.occs[cells] * decay, occ)
        # ">=": a freshly initialised field gives (nearly) equal values everywhere, and all of it must count.
        self.binary = self.occs >= torch.clamp(self.occs.mean(), max=threshold)

    def march(self, origins: torch.Tensor, dirs: torch.Tensor, step_size: float, perturb: bool,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-step samples in occupied cells. Returns packed (ray_idx (N,), t (N,)), sorted by ray and t."""
        near, far, hit = ray_aabb(origins, dirs, -self.bound, self.bound)
        n_max = int(math.ceil(2 * math.sqrt(3) * self.bound / step_size))  # a static bound: no host sync
        offset = torch.rand(origins.shape[0], 1, device=origins.device, generator=generator) if perturb else 0.5
        t = near[:, None] + (torch.arange(n_max, device=origins.device) + offset) * step_size  # (R, n_max)
        x = origins[:, None, :] + t[..., None] * dirs[:, None, :]
        keep = (t < far[:, None]) & hit[:, None]
        keep &= self.occupied(x.reshape(-1, 3)).reshape(keep.shape)
        ray_idx, k = keep.nonzero(as_tuple=True)
        return ray_idx, t[ray_idx, k]


def render_rays(field: Field, grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor,
                step_size: float, background: torch.Tensor | float, perturb: bool = False,
                generator: torch.Generator | None = None, early_stop_eps: float = 1e-4) -> RenderOut:
    """Occupancy-grid ray marching with a density-only culling pass, then a differentiable pass."""
    n_rays = origins.shape[0]
    ray_idx, t = grid.march(origins, dirs, step_size, perturb, generator)
    delta = torch.full_like(t, step_size)
    if len(t):
        with torch.no_grad():  # drop samples the rays never reach (T < eps): they cost but add nothing
            x = origins[ray_idx] + t[:, None] * dirs[ray_idx]
            sigma = field.density(x).float()
            pre = composite_packed(sigma, sigma.new_zeros(len(t), 3), t, delta, ray_idx, n_rays, 0.0)
            keep = (pre.extras["transmittance"] > early_stop_eps) & (sigma > 0)
        ray_idx, t, delta = ray_idx[keep], t[keep], delta[keep]
    x = origins[ray_idx] + t[:, None] * dirs[ray_idx]
    sigma, rgb = field(x, dirs[ray_idx])
    return composite_packed(sigma.float(), rgb.float(), t, delta, ray_idx, n_rays, background)
