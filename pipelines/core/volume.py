"""Volume rendering: stratified and hierarchical sampling, and alpha compositing (dense or packed).

Contract: a field is a callable ``field(x (N, 3), d (N, 3)) -> (sigma (N,), rgb (N, 3))``. Compositing
follows NeRF's quadrature: alpha_i = 1 - exp(-sigma_i delta_i), T_i = prod_{j<i} (1 - alpha_j),
w_i = T_i alpha_i; colour = sum w_i c_i + (1 - sum w_i) * background.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..events import check_cancelled
from .cameras import Camera
from .rays import camera_rays

Field = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class RenderOut:
    """Per-ray results; ``rgb`` already composited on the background."""

    rgb: torch.Tensor  # (R, 3)
    depth: torch.Tensor  # (R,) expected distance, weighted by the opacity-normalised weights
    opacity: torch.Tensor  # (R,) sum of weights, 1 - final transmittance
    extras: dict


def stratified_samples(near: torch.Tensor, far: torch.Tensor, n: int, perturb: bool,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """(R,) near/far -> (R, n) sorted sample distances, one per equal bin (jittered when ``perturb``)."""
    u = torch.arange(n, device=near.device, dtype=near.dtype)
    u = u + (torch.rand(near.shape[0], n, device=near.device, generator=generator) if perturb else 0.5)
    return near[:, None] + (far - near)[:, None] * (u / n)


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, perturb: bool,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverse-transform sampling of the piecewise-constant PDF given by ``weights`` on ``bins``.

    Args:
        bins: (R, S + 1) sorted bin edges.
        weights: (R, S) non-negative weights of the bins.
    Returns:
        (R, n) sorted samples, detached (NeRF does not back-propagate through sample positions).
    """
    weights = weights.detach() + 1e-5  # keeps the PDF defined where the coarse pass saw nothing
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1).clamp_max(1.0)
    if perturb:
        u = torch.rand(bins.shape[0], n, device=bins.device, generator=generator)
    else:
        u = torch.linspace(0.5 / n, 1 - 0.5 / n, n, device=bins.device).expand(bins.shape[0], n)
    u = u.contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)
    below, above = (idx - 1).clamp(0, cdf.shape[-1] - 1), idx.clamp(0, cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.detach().gather(1, below), bins.detach().gather(1, above)
    denom = torch.where(cdf_hi - cdf_lo < 1e-5, torch.ones_like(cdf_lo), cdf_hi - cdf_lo)
    return (bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)).detach()


def quadrature_weights(tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NeRF's quadrature along dense rays: the one place its transmittance is written.

    Args:
        tau: (R, S) optical depth of each interval, sigma_i * delta_i.
    Returns:
        weights (R, S), w_i = T_i (1 - exp(-tau_i)), and transmittance (R, S) before each sample,
        T_i = exp(-sum_{j<i} tau_j) (an exclusive cumulative sum).
    """
    trans = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1]], -1), -1))
    return trans * (1.0 - torch.exp(-tau)), trans


def composite(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, delta: torch.Tensor,
              background: torch.Tensor | float) -> RenderOut:
    """Dense compositing of (R, S) samples. ``background`` is a colour (3,) or per-ray (R, 3)."""
    weights, trans = quadrature_weights(sigma * delta)
    opacity = weights.sum(-1)
    color = (weights[..., None] * rgb).sum(-2)
    depth = (weights * t).sum(-1) / opacity.clamp_min(1e-6)
    color = color + (1.0 - opacity[:, None]) * torch.as_tensor(background, dtype=color.dtype, device=color.device)
    return RenderOut(color, depth, opacity, {"weights": weights, "transmittance": trans})


def composite_packed(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, delta: torch.Tensor,
                     ray_idx: torch.Tensor, n_rays: int, background: torch.Tensor | float) -> RenderOut:
    """Compositing of packed samples: a flat list sorted by (ray, distance), as occupancy marching makes.

    Args:
        sigma, t, delta: (N,); rgb: (N, 3); ray_idx: (N,) long, non-decreasing.
    """
    tau = (sigma * delta).double()  # one cumulative sum over all rays: float64 keeps the per-ray sums exact
    excl = torch.cumsum(tau, 0) - tau
    counts = torch.bincount(ray_idx, minlength=n_rays)
    first = torch.cumsum(counts, 0) - counts
    start = excl[first.clamp_max(max(len(tau) - 1, 0))] if len(tau) else excl.new_zeros(n_rays)
    trans = torch.exp(-(excl - start[ray_idx])).to(sigma.dtype)
    weights = trans * (1.0 - torch.exp(-sigma * delta))
    opacity = sigma.new_zeros(n_rays).index_add(0, ray_idx, weights)
    color = rgb.new_zeros(n_rays, 3).index_add(0, ray_idx, weights[:, None] * rgb)
    depth = sigma.new_zeros(n_rays).index_add(0, ray_idx, weights * t) / opacity.clamp_min(1e-6)
    color = color + (1.0 - opacity[:, None]) * torch.as_tensor(background, dtype=color.dtype, device=color.device)
    return RenderOut(color, depth, opacity, {"weights": weights, "transmittance": trans, "samples": len(t),
                                             "ray_idx": ray_idx})


def intervals(t: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """(R, S) sorted distances -> (R, S) deltas; the last sample's interval ends at ``far``."""
    return torch.cat([t[:, 1:] - t[:, :-1], (far[:, None] - t[:, -1:]).clamp_min(1e-4)], -1)


@torch.no_grad()
def render_image(render_rays: Callable[[torch.Tensor, torch.Tensor], RenderOut], camera: Camera,
                 chunk: int = 16384, device=None, extras: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Renders a whole camera in chunks of rays; returns rgb (H, W, 3), depth (H, W), opacity (H, W), and
    each per-ray ``RenderOut.extras[key]`` named in ``extras`` as an (H, W, ...) image (e.g. SDF normals)."""
    o, d = camera_rays(camera, device)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    parts = []
    for i in range(0, o.shape[0], chunk):
        check_cancelled()  # a Stop ends a long render (a held-out view on a CPU) within one chunk
        parts.append(render_rays(o[i:i + chunk], d[i:i + chunk]))
    h, w = camera.height, camera.width
    out = {"rgb": torch.cat([p.rgb for p in parts]).reshape(h, w, 3),
           "depth": torch.cat([p.depth for p in parts]).reshape(h, w),
           "opacity": torch.cat([p.opacity for p in parts]).reshape(h, w)}
    for key in extras:
        values = torch.cat([p.extras[key] for p in parts])
        out[key] = values.reshape(h, w, *values.shape[1:])
    return out


def render_hierarchical(coarse: Field, fine: Field, origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor,
                        far: torch.Tensor, n_coarse: int, n_fine: int, background: torch.Tensor | float,
                        perturb: bool, generator: torch.Generator | None = None,
                        view_dirs: torch.Tensor | None = None) -> tuple[RenderOut, RenderOut]:
    """NeRF's two passes: stratified samples through ``coarse``, then ``n_fine`` more drawn from its weights;
    ``fine`` sees all n_coarse + n_fine samples. Returns (fine, coarse) results. ``view_dirs`` (R, 3), when given,
    are the directions the fields' colour sees instead of ``dirs`` (NDC rays: the world directions, the NeRF
    paper's viewdirs)."""
    n_rays = origins.shape[0]
    view = dirs if view_dirs is None else view_dirs

    def shade(field: Field, t: torch.Tensor) -> RenderOut:
        x = origins[:, None, :] + t[..., None] * dirs[:, None, :]
        sigma, rgb = field(x.reshape(-1, 3), view[:, None, :].expand_as(x).reshape(-1, 3))
        return composite(sigma.reshape(n_rays, -1).float(), rgb.reshape(n_rays, -1, 3).float(), t,
                         intervals(t, far), background)

    t_coarse = stratified_samples(near, far, n_coarse, perturb, generator)
    out_coarse = shade(coarse, t_coarse)
    if n_fine <= 0:
        return out_coarse, out_coarse
    mids = 0.5 * (t_coarse[:, 1:] + t_coarse[:, :-1])
    t_fine = sample_pdf(mids, out_coarse.extras["weights"][:, 1:-1], n_fine, perturb, generator)
    t_all, _ = torch.sort(torch.cat([t_coarse, t_fine], -1), -1)
    return shade(fine, t_all), out_coarse


def hidden_opacity(density: torch.Tensor, cell: float) -> torch.Tensor:
    """How hidden each cell of a density grid is from the most revealing of the six axis-aligned views.

    Args:
        density: (R, R, R) densities sampled on a grid whose cells have side ``cell``.
    Returns:
        (R, R, R) in [0, 1]: 1 - the largest transmittance reaching the cell's centre from outside the grid
        along +-x, +-y, +-z. Its 0.5 level set is the half-opacity surface volume rendering shows along the axes,
        a mesh level that needs no density threshold (a short run's faint field and a long run's sharp one alike).
    """
    tau = density.float().clamp_min(0) * cell
    best = torch.zeros_like(tau)
    for dim in range(3):
        for t in (tau, tau.flip(dim)):
            trans = torch.exp(-(t.cumsum(dim) - 0.5 * t))  # up to the cell's centre
            best = torch.maximum(best, trans if t is tau else trans.flip(dim))
    return 1.0 - best
