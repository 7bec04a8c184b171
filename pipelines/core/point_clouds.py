"""Coloured point clouds to meshes and pictures: Point-E's SDF mesh step and a point splatter for previews.

Contract: clouds are ``PointCloud(xyz (N, 3), rgb (N, 3) in [0, 1])``, z up, xyz in Point-E's units (about
[-0.5, 0.5]). ``sdf_volume(model, xyz, R)`` evaluates an SDF model (``encode_point_clouds`` + ``predict_sdf``, as
core.point_diffusion's CrossAttentionPointCloudSDFModel) on an R^3 grid over a cube of side 1.02;
``mesh_from_sdf(volume)`` runs marching cubes with outward-facing triangles whatever sign the field gives the
inside; ``color_vertices`` takes each vertex's colour from its nearest cloud point. ``render_points`` splats a
cloud into a uint8 HxWx3 picture with a depth test (white background).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .geometry import Mesh, PointCloud, grid_points, marching_cubes

SIDE = 1.02
"""Side of the cube (centred at the origin) the released SDF model's mesh is extracted in."""


@torch.no_grad()
def sdf_volume(model, xyz: torch.Tensor, resolution: int = 128, side: float = SIDE, chunk: int = 0,
               autocast: torch.dtype | None = None) -> torch.Tensor:
    """(R, R, R) SDF values on CPU at ``grid_points(R, -side/2, side/2)`` for the cloud ``xyz`` (N, 3).

    The cloud is encoded once; query points go through the decoder in chunks (0: 32768 on CUDA, whose attention
    kernels never hold the query x point matrix, 4096 on a CPU, whose do), all on the model's device, with one
    copy to the host at the end.
    """
    dev = xyz.device
    chunk = chunk or (32768 if dev.type == "cuda" else 4096)
    ctx = torch.autocast(dev.type, dtype=autocast) if autocast else torch.autocast(dev.type, enabled=False)
    with ctx:
        latents = model.encode_point_clouds(xyz.t()[None].float())
        pts = grid_points(resolution, -side / 2, side / 2, dev).reshape(-1, 3)
        out = [model.predict_sdf(pts[i:i + chunk].t()[None], latents)[0].float() for i in range(0, len(pts), chunk)]
    return torch.cat(out).reshape(resolution, resolution, resolution).cpu()


def mesh_from_sdf(volume: torch.Tensor, side: float = SIDE) -> Mesh:
    """Marching cubes of an SDF volume at level 0, triangles facing outwards.

    The inside is the sign the box's boundary does not have (Point-E's model and the usual convention
    disagree, so the field decides); a volume of one sign is centred on its mean first, as the released code
    does, so something is still extracted.
    """
    v = volume.detach().float().cpu().clone()
    if bool((v < 0).all()) or bool((v > 0).all()):
        v -= v.mean()
    shell = torch.cat([v[[0, -1]].flatten(), v[:, [0, -1]].flatten(), v[:, :, [0, -1]].flatten()])
    inside_positive = float(shell.mean()) < 0
    mesh = marching_cubes(v if inside_positive else -v, 0.0, -side / 2, side / 2)
    if mesh.num_faces and signed_volume(mesh) < 0:
        mesh.faces = mesh.faces[:, [0, 2, 1]]
    return mesh


def signed_volume(mesh: Mesh) -> float:
    """Volume enclosed by a closed mesh: positive when its triangles face outwards."""
    a, b, c = (mesh.verts[mesh.faces[:, i]].double() for i in range(3))
    return float((a * torch.linalg.cross(b, c, dim=-1)).sum() / 6.0)


def color_vertices(mesh: Mesh, cloud: PointCloud) -> Mesh:
    """Each vertex takes the colour of its nearest cloud point (in place; returns the mesh)."""
    from .shape_losses import nearest

    if mesh.num_faces and cloud.rgb is not None:
        dev = cloud.xyz.device
        idx = nearest(mesh.verts.to(dev)[None], cloud.xyz[None].float())[0]
        mesh.vert_colors = cloud.rgb[idx].float().cpu()
    return mesh


def cloud_mesh(model, cloud: PointCloud, resolution: int = 128, autocast: torch.dtype | None = None) -> Mesh:
    """Point-E's mesh step: SDF on a grid, marching cubes, colours from the nearest points."""
    return color_vertices(mesh_from_sdf(sdf_volume(model, cloud.xyz, resolution, autocast=autocast)), cloud)


@torch.no_grad()
def render_points(cloud: PointCloud, size: int = 256, elevation: float = 20.0, azimuth: float = 30.0,
                  extent: float = 0.6, radius: int = 1) -> np.ndarray:
    """(size, size, 3) uint8 orthographic picture of the cloud from the given angles (degrees; z up), each point
    a (2 radius + 1)^2 pixel square, nearer points in front. ``extent``: half the width shown."""
    xyz = cloud.xyz.detach().float().cpu()
    rgb = cloud.rgb.detach().float().cpu() if cloud.rgb is not None else torch.full_like(xyz, 0.3)
    el, az = math.radians(elevation), math.radians(azimuth)
    toward = torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    right = torch.nn.functional.normalize(torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0]), toward), dim=0)
    up = torch.linalg.cross(toward, right)
    u = ((xyz @ right) / extent * 0.5 + 0.5) * (size - 1)
    v = ((-(xyz @ up)) / extent * 0.5 + 0.5) * (size - 1)
    depth = -(xyz @ toward)  # smaller: nearer the viewer
    img = torch.ones(size * size, 3)
    keys = torch.full((size * size,), torch.iinfo(torch.int64).max, dtype=torch.int64)
    order = ((depth - depth.min()) / (float(depth.max() - depth.min()) + 1e-9) * (2 ** 20)).long()
    n = len(xyz)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            px, py = u.round().long() + dx, v.round().long() + dy
            ok = (px >= 0) & (px < size) & (py >= 0) & (py < size)
            key = order * n + torch.arange(n)  # nearest point wins; its index is recoverable from the key
            keys.scatter_reduce_(0, (py * size + px)[ok], key[ok], "amin")
    hit = keys < torch.iinfo(torch.int64).max
    img[hit] = rgb[keys[hit] % n]
    return (img.reshape(size, size, 3).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
