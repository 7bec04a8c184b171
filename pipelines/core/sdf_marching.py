"""VolSDF's density rendered by occupancy-grid marching: the SDF only where the surface or the inside is.

``render_sdf`` (core/sdf.py) spends 64 stratified + 64 surface samples on every ray, most of them in empty space.
Here the SDF's Laplace density is marched like the NeRF ``fast`` model (``core.occupancy.render_rays``: fixed steps
through occupied cells, samples behind opaque ones dropped, a per-step sample budget), so a ray costs the dozen
or so samples around its first surface crossing and a step renders many more rays (instant-nsr-pl and NeuS2 march
their SDFs the same way).

Two things make the fixed step safe for a sharp surface (beta far below the step):

- ``interval_density``: the density is averaged over each sample's interval exactly, for an SDF linear along the
  ray (slope = grad d . ray direction), instead of read at the midpoint; a surface thinner than the step then
  still gets its full opacity and a gradient (NeuS computes its alpha from the SDF at both interval ends for the
  same reason).
- ``occupancy_density``: the grid is refreshed with the density of a surface at least one cell thick, so a cell
  the zero level crosses is never culled because its random probe point missed a thin shell.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .occupancy import OccupancyGrid, render_rays
from .sdf import LaplaceDensity, geometry_and_gradient, laplace_cdf
from .volume import RenderOut


def _laplace_cdf_integral(s: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """G(s) = integral of Psi_beta from -inf to s: max(s, 0) + beta / 2 * exp(-|s| / beta)."""
    return s.clamp_min(0) + 0.5 * beta * torch.exp(-s.abs() / beta)


def interval_density(sdf: torch.Tensor, slope: torch.Tensor, delta: float | torch.Tensor,
                     density: LaplaceDensity) -> torch.Tensor:
    """Mean of sigma = alpha * Psi_beta(-d) over an interval of length ``delta`` centred on each sample, for
    d(t) = sdf + slope * (t - t_mid); sigma * delta is then the interval's exact optical depth.

    Falls back to the midpoint density where the SDF hardly changes across the interval (the difference
    quotient would cancel)."""
    beta, alpha = density.beta, density.alpha
    s0 = -sdf + 0.5 * slope * delta  # s = -d at the interval's start and end
    s1 = -sdf - 0.5 * slope * delta
    ds = s1 - s0
    flat = ds.abs() < 1e-4
    quotient = (_laplace_cdf_integral(s1, beta) - _laplace_cdf_integral(s0, beta)) / torch.where(flat, 1.0, ds)
    return alpha * torch.where(flat, laplace_cdf(-sdf, beta), quotient)


def occupancy_density(sdf: torch.Tensor, beta: torch.Tensor | float, cell: float) -> torch.Tensor:
    """The density the occupancy grid sees: VolSDF's with beta widened to at least one grid cell."""
    width = torch.clamp(torch.as_tensor(beta, dtype=sdf.dtype, device=sdf.device), min=cell)
    return laplace_cdf(-sdf, width) / width


class SDFRadiance(nn.Module):
    """An SDF field and its density seen as a radiance field (``density(x)``, ``forward(x, dirs) -> sigma, rgb``)
    for ``render_rays``. Each forward records its SDF gradients, which ``take_gradients`` hands over (the eikonal
    loss, the composited normals); the sigma it returns is ``interval_density`` over ``step`` (the march's)."""

    def __init__(self, field, density: LaplaceDensity, step: float, gradient: str = "analytic",
                 fd_eps: Callable[[], float] = lambda: 1e-3, half: torch.Tensor | None = None):
        super().__init__()
        self.field, self.laplace, self.step = field, density, step
        self.gradient, self.fd_eps = gradient, fd_eps
        self.half = half  # (3,): the SDF is empty outside the box [-half, half] (a capture's foreground box)
        self._grads: list[torch.Tensor] = []

    def _in_box(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return sigma if self.half is None else sigma * (x.abs() <= self.half).all(-1)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self._in_box(x, self.laplace(self.field.sdf(x).float()))

    def forward(self, x: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sdf, feat, grad = geometry_and_gradient(self.field, x, self.gradient, self.fd_eps())
        self._grads.append(grad)
        normals = nn.functional.normalize(grad, dim=-1)
        rgb = self.field.color(x, normals, dirs, feat)
        slope = (grad * dirs).sum(-1)
        return self._in_box(x, interval_density(sdf.float(), slope.float(), self.step, self.laplace)), rgb

    def take_gradients(self) -> torch.Tensor:
        grads, self._grads = self._grads, []
        return torch.cat(grads) if grads else torch.zeros(0, 3, device=self.laplace.b.device)


def render_sdf_marched(radiance: SDFRadiance, grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor,
                       background: torch.Tensor | float, perturb: bool, max_samples: int = 0) -> RenderOut:
    """``render_rays`` of an ``SDFRadiance``; extras as ``render_sdf``'s: ``normal`` (composited unit normals)
    and ``grad`` (the SDF gradient at every rendered sample), plus ``rays`` (rows rendered: with a sample
    budget while training, a prefix of the batch)."""
    radiance.take_gradients()  # drop any left from an interrupted render
    out = render_rays(radiance, grid, origins, dirs, radiance.step, background, perturb, max_samples=max_samples)
    grad = radiance.take_gradients()
    w, idx = out.extras["weights"], out.extras["ray_idx"]
    normals = nn.functional.normalize(grad.float(), dim=-1)
    normal = torch.zeros(out.rgb.shape[0], 3, device=out.rgb.device).index_add(0, idx, w[:, None] * normals)
    out.extras.update(normal=normal, grad=grad)
    return out
