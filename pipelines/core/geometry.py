"""Plain geometry containers and the density/SDF grid -> mesh step (marching cubes via PyMCubes).

Contract: tensors live on any device; ``Mesh.verts`` (V, 3) float, ``faces`` (F, 3) long, optional
``vert_colors`` (V, 3) in [0, 1], or ``uv`` (V, 2) and a ``texture`` image. Conversion to trimesh happens only
in ``export.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..events import check_cancelled


@dataclass
class Mesh:
    verts: torch.Tensor
    faces: torch.Tensor
    vert_colors: torch.Tensor | None = None
    uv: torch.Tensor | None = None
    """(V, 2) texture coordinates per vertex, (0, 0) the texture's bottom-left corner (with ``texture``)."""
    texture: torch.Tensor | None = None
    """(H, W, 3) colour image in [0, 1], row 0 at the top."""

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


@dataclass
class PointCloud:
    xyz: torch.Tensor  # (N, 3)
    rgb: torch.Tensor | None = None  # (N, 3) in [0, 1]


@dataclass
class Voxels:
    occupancy: torch.Tensor  # (D, H, W) bool or probabilities, indexed [x, y, z]
    bounds: tuple[float, float] = (-0.5, 0.5)


def grid_points(resolution: int, lo, hi, device=None) -> torch.Tensor:
    """(R, R, R, 3) cell-corner coordinates of a regular grid over the box [lo, hi]^3, indexed [x, y, z]."""
    lo_t = torch.as_tensor(lo, dtype=torch.float32).expand(3)
    hi_t = torch.as_tensor(hi, dtype=torch.float32).expand(3)
    axes = [torch.linspace(float(lo_t[i]), float(hi_t[i]), resolution, device=device) for i in range(3)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


@torch.no_grad()
def evaluate_grid(fn: Callable[[torch.Tensor], torch.Tensor], resolution: int, lo, hi, device=None,
                  chunk: int = 262144) -> torch.Tensor:
    """Evaluates a scalar field ``fn((N, 3)) -> (N,)`` on the grid, in chunks; returns (R, R, R) on CPU."""
    pts = grid_points(resolution, lo, hi, device).reshape(-1, 3)
    parts = []
    for i in range(0, len(pts), chunk):
        check_cancelled()  # a Stop ends a mesh extraction within one chunk
        parts.append(fn(pts[i:i + chunk]).float().reshape(-1).cpu())
    out = torch.cat(parts)
    return out.reshape(resolution, resolution, resolution)


def marching_cubes(grid: torch.Tensor | np.ndarray, level: float, lo, hi, close: bool = True) -> Mesh:
    """Iso-surface of a (R, R, R) grid sampled at ``grid_points(R, lo, hi)``; empty Mesh if none.

    For densities pass the density threshold; for SDFs pass ``-sdf`` and level 0 so normals face outwards.
    ``close`` pads the grid with one layer of empty cells, so matter touching the box is capped and the mesh
    stays watertight (and a field that is solid everywhere still yields the box's surface).
    """
    import mcubes

    g = grid.detach().cpu().numpy() if isinstance(grid, torch.Tensor) else np.asarray(grid)
    g = np.nan_to_num(g.astype(np.float64), nan=-1e9, posinf=1e9, neginf=-1e9)
    lo_a = np.broadcast_to(np.asarray(lo, dtype=np.float64), (3,)).copy()
    hi_a = np.broadcast_to(np.asarray(hi, dtype=np.float64), (3,)).copy()
    if close:
        cell = (hi_a - lo_a) / (np.array(g.shape) - 1)
        g = np.pad(g, 1, constant_values=min(float(g.min()), level) - 1.0)
        lo_a, hi_a = lo_a - cell, hi_a + cell
    verts, faces = mcubes.marching_cubes(g, level)
    verts = lo_a + verts / (np.array(g.shape) - 1) * (hi_a - lo_a)
    # PyMCubes winds faces so that normals point from above ``level`` to below it: outwards for densities.
    return Mesh(torch.from_numpy(verts.astype(np.float32)), torch.from_numpy(faces.astype(np.int64)))


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(V, 3) unit normals: area-weighted sums of the adjacent faces' normals."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    fn = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
    n = torch.zeros_like(verts).index_add(0, faces.reshape(-1), fn.repeat_interleave(3, dim=0))
    return torch.nn.functional.normalize(n, dim=-1)
