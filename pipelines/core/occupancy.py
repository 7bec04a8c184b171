"""Occupancy grid that skips empty space during ray marching (Instant-NGP; nerfacc's OccGridEstimator).

Contract: the grid covers the box [-bound, bound]^3 with ``resolution``^3 cells, each holding an EMA of
sigma * step_size seen at random points inside it. ``render_rays`` marches a batch of rays with a fixed step
through occupied cells only (compactly: candidates are made a chunk at a time and only those in occupied cells
kept), drops samples hidden behind opaque ones (a density-only pass without gradients), and composites the
rest with gradients, as packed samples. With ``max_samples`` no field evaluation sees more points than that:
training renders the leading rays that fit the budget, previews evaluate the field in chunks.
"""
from __future__ import annotations

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
        ray_idx, t, _ = self.march_packed(origins, dirs, step_size, perturb, generator)
        return ray_idx, t

    def march_packed(self, origins: torch.Tensor, dirs: torch.Tensor, step_size: float, perturb: bool,
                     generator: torch.Generator | None = None, max_samples: int = 0,
                     chunk: int = 2 ** 21) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Compact marching: fixed-step candidates inside the box, ``chunk`` at a time, of which only those in
        occupied cells are kept; no (rays, max steps) tensor is ever built.

        Args:
            max_samples: stop once this many samples are kept (0: march every ray); the rays are then a prefix
                of the batch, each marched whole (rays come in random order, so the prefix is a random subset).
            chunk: candidates looked up at a time (bounds the temporary memory).
        Returns:
            packed ray_idx (N,) and t (N,), sorted by ray and t, and the number of leading rays marched (all
            ray_idx are below it).
        """
        n_rays, dev = origins.shape[0], origins.device
        near, far, hit = ray_aabb(origins, dirs, -self.bound, self.bound)
        offset = torch.rand(n_rays, device=dev, generator=generator) if perturb else torch.full((n_rays,), 0.5, device=dev)
        # Samples t_k = near + (k + offset) * step for k = 0, 1, ... while t_k < far.
        counts = torch.where(hit, torch.ceil((far - near) / step_size - offset).clamp_min(0), 0).long()
        ends = torch.cumsum(counts, 0)
        starts = ends - counts
        total = int(ends[-1]) if n_rays else 0  # the one host sync of an unbudgeted march
        parts_r, parts_t, kept, n_used = [], [], 0, n_rays
        for a in range(0, total, chunk):
            flat = torch.arange(a, min(a + chunk, total), device=dev)
            r = torch.searchsorted(ends, flat, right=True)
            t = near[r] + ((flat - starts[r]).to(near.dtype) + offset[r]) * step_size
            keep = self.occupied(origins[r] + t[:, None] * dirs[r])
            parts_r.append(r[keep])
            parts_t.append(t[keep])
            if max_samples:
                kept += len(parts_r[-1])
                if kept >= max_samples and a + chunk < total:  # keep the rays marched to their end
                    n_used = int(torch.searchsorted(ends, torch.tensor(a + chunk, device=dev), right=True))
                    break
        if not parts_r:
            return torch.zeros(0, dtype=torch.long, device=dev), near.new_zeros(0), n_used
        ray_idx, t = torch.cat(parts_r), torch.cat(parts_t)
        if n_used < n_rays:
            sel = ray_idx < n_used
            ray_idx, t = ray_idx[sel], t[sel]
        return ray_idx, t, n_used


def _in_chunks(fn: Callable, chunk: int, *tensors: torch.Tensor):
    """``fn`` applied to ``chunk`` rows of the tensors at a time (0: all at once); results concatenated."""
    n = tensors[0].shape[0]
    if not chunk or n <= chunk:
        return fn(*tensors)
    outs = [fn(*(x[i:i + chunk] for x in tensors)) for i in range(0, n, chunk)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)


def render_rays(field: Field, grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor,
                step_size: float, background: torch.Tensor | float, perturb: bool = False,
                generator: torch.Generator | None = None, early_stop_eps: float = 1e-4,
                max_samples: int = 0, march_factor: int = 8, view_dirs: torch.Tensor | None = None) -> RenderOut:
    """Occupancy-grid ray marching with a density-only culling pass, then a differentiable pass.

    ``max_samples`` (0: no bound) bounds the points any one field evaluation sees. With autograd on (training)
    it is a per-step budget: marching stops after ``march_factor * max_samples`` candidates in occupied cells,
    and after culling only the leading rays whose samples fit in ``max_samples`` are rendered, so the returned
    ``RenderOut`` has ``extras['rays']`` rows (the caller keeps that many targets). Without autograd (previews,
    scoring) every ray is rendered and the field is evaluated ``max_samples`` points at a time.

    ``view_dirs`` (R, 3), when given, are the directions the field's colour sees instead of ``dirs`` (NDC rays:
    the world directions, as the NeRF paper's viewdirs; NDC's own directions nearly all point down +z).

    Extras: ``samples`` (rendered), ``rays`` (rows of the result), ``samples_per_ray`` (before the budget cut:
    what a ray costs, for adapting the batch size).
    """
    training = torch.is_grad_enabled()
    n_rays = origins.shape[0]
    ray_idx, t, n_used = grid.march_packed(origins, dirs, step_size, perturb, generator,
                                           march_factor * max_samples if training else 0)
    delta = torch.full_like(t, step_size)
    if len(t):
        with torch.no_grad():  # drop samples the rays never reach (T < eps): they cost but add nothing
            sigma = _in_chunks(lambda r, tt: field.density(origins[r] + tt[:, None] * dirs[r]).float(),
                               max_samples, ray_idx, t)
            pre = composite_packed(sigma, sigma.new_zeros(len(t), 3), t, delta, ray_idx, n_used, 0.0)
            keep = (pre.extras["transmittance"] > early_stop_eps) & (sigma > 0)
        ray_idx, t, delta = ray_idx[keep], t[keep], delta[keep]
    samples_per_ray = len(t) / max(n_used, 1)
    if training and max_samples and len(t) > max_samples:  # the budget: whole rays, a prefix of the batch
        ends = torch.cumsum(torch.bincount(ray_idx, minlength=n_used), 0)
        n_used = int(torch.searchsorted(ends, torch.tensor(max_samples, device=ends.device), right=True))
        sel = ray_idx < n_used
        ray_idx, t, delta = ray_idx[sel], t[sel], delta[sel]
    if n_used < n_rays and isinstance(background, torch.Tensor) and background.dim() == 2:
        background = background[:n_used]

    view = dirs if view_dirs is None else view_dirs

    def shade(r: torch.Tensor, tt: torch.Tensor):
        sigma, rgb = field(origins[r] + tt[:, None] * dirs[r], view[r])
        return sigma.float(), rgb.float()

    sigma, rgb = shade(ray_idx, t) if training else _in_chunks(shade, max_samples, ray_idx, t)
    out = composite_packed(sigma, rgb, t, delta, ray_idx, n_used, background)
    out.extras.update(rays=n_used, samples_per_ray=samples_per_ray)
    return out
