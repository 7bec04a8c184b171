"""DMTet (Shen et al. 2021) as Magic3D's fine stage uses it: a deformable tetrahedral grid fitted to a coarse
density field's surface, with learnable per-vertex SDF values and offsets, extracted by marching tetrahedra.

Contract: ``surface_threshold(density)`` picks the density level tau (the mean of the densities above 1e-5, as
threestudio); ``surface_box(points, density, tau)`` the box around everything denser than tau plus a margin (None
when nothing is); ``DMTet.from_density(density_fn, lo, hi, n, tau)`` makes the grid over that box with
SDF = clamp(-(density - tau), -1, 1) (negative inside) and zero offsets; ``dmtet()`` -> (verts (M, 3),
faces (F, 3)), differentiable w.r.t. both. Offsets move a vertex at most half a cell (tanh(offset) / n in the
grid's [-1, 1]^3 units). ``face_pairs`` (with ``shapes.mesh_edges``) feeds the normal-consistency and Laplacian
terms of ``core.shape_losses``, on meshes that may be open where the surface leaves the grid.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .tets import marching_tets, tet_grid


def surface_threshold(density: torch.Tensor, floor: float = 1e-5) -> float:
    """tau: the mean of the densities above ``floor`` (0 when there are none)."""
    dense = density[density > floor]
    return float(dense.mean()) if dense.numel() else 0.0


def surface_box(points: torch.Tensor, density: torch.Tensor, tau: float,
                margin: float = 0.1) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(lo, hi) each (3,): the bounding box of the points (N, 3) whose density (N,) exceeds tau, grown by
    ``margin`` of its size on every side (at least a hundredth of the points' extent); None if no point does."""
    inside = points[density > tau]
    if not len(inside):
        return None
    lo, hi = inside.amin(0), inside.amax(0)
    pad = torch.maximum(margin * (hi - lo), 0.01 * (points.amax(0) - points.amin(0)))
    return lo - pad, hi + pad


class DMTet(nn.Module):
    """A Kuhn-split tet grid of n^3 cells over the box [lo, hi], its SDF (V,) and offsets (V, 3) trainable.

    Args:
        n: cells per axis (V = (n + 1)^3 vertices, 6 n^3 tets).
        lo, hi: (3,) corners of the box the grid spans.
        sdf: (V,) initial SDF values, negative inside; None: all +1 (empty).
    """

    def __init__(self, n: int, lo: torch.Tensor, hi: torch.Tensor, sdf: torch.Tensor | None = None):
        super().__init__()
        base, tets = tet_grid(n, lo.device)
        self.n = int(n)
        self.register_buffer("base", base)  # (V, 3) in [-1, 1]^3
        self.register_buffer("tets", tets)
        self.register_buffer("center", (0.5 * (lo + hi)).float())
        self.register_buffer("half_size", (0.5 * (hi - lo)).float())
        self.sdf = nn.Parameter(sdf.float().clone() if sdf is not None else torch.ones(len(base), device=lo.device))
        self.offset = nn.Parameter(torch.zeros_like(base))

    @classmethod
    @torch.no_grad()
    def from_density(cls, density_fn: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor,
                     n: int, tau: float, chunk: int = 1 << 18) -> "DMTet":
        """The grid over [lo, hi] with SDF = clamp(-(density - tau), -1, 1) at its vertices (Magic3D's
        conversion of the coarse field)."""
        grid = cls(n, lo, hi)
        x = grid.world(grid.base)
        density = torch.cat([density_fn(x[i:i + chunk]).float() for i in range(0, len(x), chunk)])
        grid.sdf.copy_((tau - density).clamp(-1.0, 1.0))
        return grid

    def world(self, u: torch.Tensor) -> torch.Tensor:
        """Grid coordinates (..., 3) in [-1, 1]^3 -> world points."""
        return self.center + self.half_size * u

    def grid_verts(self) -> torch.Tensor:
        """(V, 3) deformed vertex positions in world space: base + tanh(offset) / n, at most half a cell."""
        return self.world(self.base + torch.tanh(self.offset) / self.n)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The surface: (verts (M, 3), faces (F, 3) int64), outward winding; empty when the SDF has one sign."""
        return marching_tets(self.grid_verts(), self.sdf, self.tets)


def face_pairs(faces: torch.Tensor) -> torch.Tensor:
    """(P, 2) pairs of faces that share an edge, over the edges that exactly two faces share (a DMTet surface
    is open where it leaves the grid, and those boundary edges have one face)."""
    n_faces = faces.shape[0]
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
    key = e[:, 0] * (int(faces.max()) + 1 if n_faces else 1) + e[:, 1]
    key, order = torch.sort(key, stable=True)
    face_of = (torch.arange(3 * n_faces, device=faces.device) % max(n_faces, 1))[order]
    same_next = key[1:] == key[:-1]
    # an edge of exactly two faces: equal to its successor, and different from the ones before and after them
    before = torch.cat([torch.zeros(1, dtype=torch.bool, device=faces.device), same_next[:-1]])
    after = torch.cat([same_next[1:], torch.zeros(1, dtype=torch.bool, device=faces.device)])
    first = (same_next & ~before & ~after).nonzero().squeeze(1)
    return torch.stack([face_of[first], face_of[first + 1]], -1)


def render_surface(verts: torch.Tensor, faces: torch.Tensor, cameras: list, albedo_fn: Callable,
                   background: torch.Tensor, shading: str = "albedo", lights: torch.Tensor | None = None,
                   ambient: float = 0.1) -> dict[str, torch.Tensor]:
    """Rasterizes a mesh in B views of one size and shades it with a volumetric texture (Magic3D's fine stage).

    Each covered pixel takes the albedo of ``albedo_fn`` at its interpolated 3D surface point and the
    interpolated vertex normal; silhouettes are antialiased analytically (``raster.antialias``), so the image
    and the coverage pass gradients to the vertices, hence to the SDF and the offsets.

    Args:
        verts, faces: (V, 3) world-space vertices and (F, 3) long faces, outward winding.
        cameras: B ``Camera`` of one width x height.
        albedo_fn: (N, 3) world points -> (N, 3) colours in [0, 1].
        background: (B, H, W, 3) or (3,) colour behind the mesh.
        shading: 'albedo', 'diffuse' (albedo x (ambient + (1 - ambient) max(0, n.l))) or 'textureless'.
        lights: (B, 3) point-light positions, for the diffuse shadings.
    Returns:
        rgb (B, H, W, 3) composited on the background, alpha (B, H, W) antialiased coverage, normal (B, H, W, 3)
        unit world-space normals (0 where empty), mask (B, H, W) bool: the pixels a face covers.
    """
    import torch.nn.functional as F

    from .raster import antialias, interpolate, project, rasterize, vertex_normals

    frags = rasterize(verts, faces, cameras)
    B, H, W = frags.face_idx.shape
    pts = interpolate(verts, faces, frags)
    normal = F.normalize(interpolate(vertex_normals(verts, faces), faces, frags), dim=-1)
    pix = frags.covered
    albedo = pts.new_zeros(B * H * W, 3).index_copy(0, pix, albedo_fn(pts.reshape(-1, 3).index_select(0, pix)))
    albedo = albedo.view(B, H, W, 3)
    if shading == "albedo":
        rgb = albedo
    else:
        to_light = F.normalize(lights[:, None, None, :] - pts, dim=-1)
        lambert = (normal * to_light).sum(-1, keepdim=True).clamp_min(0)
        base = albedo if shading == "diffuse" else torch.ones_like(albedo)
        rgb = base * (ambient + (1 - ambient) * lambert)
    mask = frags.mask[..., None].to(rgb.dtype)
    rgba = torch.cat([rgb * mask + background * (1 - mask), mask], -1)
    rgba = antialias(rgba, frags, project(verts, cameras)[0], faces)
    return {"rgb": rgba[..., :3], "alpha": rgba[..., 3], "normal": normal, "mask": frags.mask}


@torch.no_grad()
def surface_view(verts: torch.Tensor, faces: torch.Tensor, albedo_fn: Callable, c2w: torch.Tensor, fov_deg: float,
                 size: int) -> dict:
    """Preview and turntable images of a mesh from one camera (c2w (4, 4), square, ``fov_deg``): uint8 HxWx3
    rgb (the albedo on white), normal and opacity (the antialiased coverage); white when the mesh is empty."""
    import math

    from .cameras import Camera
    from .images import normals_to_uint8, to_uint8

    if len(faces) == 0:
        blank = torch.ones(size, size, 3)
        return {"rgb": to_uint8(blank), "normal": to_uint8(blank), "opacity": to_uint8(blank[..., 0] * 0)}
    cam = Camera.from_fov(c2w, math.radians(fov_deg), size, size)
    out = render_surface(verts, faces, [cam], albedo_fn, torch.ones(3, device=verts.device))
    alpha = out["alpha"][0].clamp(0, 1)
    return {"rgb": to_uint8(out["rgb"][0]), "normal": normals_to_uint8(out["normal"][0], alpha[..., None]),
            "opacity": to_uint8(alpha)}
