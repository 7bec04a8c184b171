"""Shape representations for single-view reconstruction: icosphere template, surface sampling, voxels.

Contract: meshes are (V, 3) float verts + (F, 3) long faces (a batch shares one ``faces``: (B, V, 3) verts),
faces wound counter-clockwise seen from outside. Voxel grids are (R, R, R) indexed [x, y, z] and
cell-centred: cell (i, j, k) covers [lo + i*s, lo + (i+1)*s) along x (and so on), s = (hi - lo) / R, so
``cell_centers`` and ``voxelize_points`` are each other's inverse. Everything is PyTorch, CPU or CUDA.
"""
from __future__ import annotations

import math

import torch

from .cameras import Camera, look_at
from .geometry import Mesh
from .raster import project, rasterize


# --------------------------------------------------------------------------------------------- icosphere
def icosphere(level: int = 4, radius: float = 1.0, device=None) -> Mesh:
    """The icosahedron subdivided ``level`` times, projected onto the sphere.

    Returns:
        Mesh with 10 * 4**level + 2 vertices and 20 * 4**level faces, normals facing out.
    """
    t = (1.0 + math.sqrt(5.0)) / 2.0
    verts = torch.tensor([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t],
                          [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=torch.float64)
    faces = torch.tensor([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                          [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                          [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], dtype=torch.long)
    verts = torch.nn.functional.normalize(verts, dim=-1)
    for _ in range(level):
        # One new vertex per undirected edge, shared by the two faces that meet there.
        edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])  # (3F, 2): ab, bc, ca
        uniq, inverse = torch.unique(edges.sort(dim=1).values, dim=0, return_inverse=True)
        mids = torch.nn.functional.normalize(verts[uniq].mean(1), dim=-1)
        m = inverse.view(3, -1) + len(verts)  # mid-vertex index of edge ab, bc, ca of each face
        a, b, c = faces.unbind(1)
        faces = torch.cat([torch.stack([a, m[0], m[2]], 1), torch.stack([b, m[1], m[0]], 1),
                           torch.stack([c, m[2], m[1]], 1), torch.stack([m[0], m[1], m[2]], 1)])
        verts = torch.cat([verts, mids])
    return Mesh((verts * radius).float().to(device), faces.to(device))


def mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    """(E, 2) unique undirected edges (lower index first) of a triangle mesh."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return torch.unique(edges.sort(dim=1).values, dim=0)


# ------------------------------------------------------------------------------------- surface sampling
def face_areas(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(..., F) triangle areas of verts (..., V, 3)."""
    v0, v1, v2 = verts[..., faces[:, 0], :], verts[..., faces[:, 1], :], verts[..., faces[:, 2], :]
    return 0.5 * torch.linalg.cross(v1 - v0, v2 - v0, dim=-1).norm(dim=-1)


def sample_surface(verts: torch.Tensor, faces: torch.Tensor, n: int, generator: torch.Generator | None = None,
                   return_normals: bool = False):
    """Points uniform over the surface (faces picked by area, uniform barycentrics); differentiable w.r.t.
    ``verts`` (the choice of faces is not).

    Args:
        verts: (V, 3) or (B, V, 3) vertices; a batch shares ``faces``.
        faces: (F, 3) long.
        n: points per mesh.
        generator: a torch.Generator on the verts' device, for reproducible samples.
        return_normals: also return the unit face normal of each sample.

    Returns:
        (n, 3) or (B, n, 3) points [, normals of the same shape].
    """
    batched = verts.dim() == 3
    v = verts if batched else verts[None]
    faces = faces.to(v.device)
    areas = face_areas(v.detach(), faces).float()  # (B, F)
    areas = torch.where(areas.sum(-1, keepdim=True) > 0, areas, torch.ones_like(areas))
    idx = torch.multinomial(areas, n, replacement=True, generator=generator)  # (B, n)
    u = torch.rand(v.shape[0], n, 2, device=v.device, generator=generator, dtype=v.dtype)
    su = u[..., 0].sqrt()  # (1 - sqrt(u0), sqrt(u0) (1 - u1), sqrt(u0) u1) is uniform on a triangle
    w0, w1, w2 = 1 - su, su * (1 - u[..., 1]), su * u[..., 1]
    tri = faces[idx]  # (B, n, 3)
    corner = [torch.gather(v, 1, tri[..., k, None].expand(-1, -1, 3)) for k in range(3)]
    pts = w0[..., None] * corner[0] + w1[..., None] * corner[1] + w2[..., None] * corner[2]
    pts = pts if batched else pts[0]
    if not return_normals:
        return pts
    nrm = torch.nn.functional.normalize(torch.linalg.cross(corner[1] - corner[0], corner[2] - corner[0], dim=-1),
                                        dim=-1)
    return pts, (nrm if batched else nrm[0])


# ------------------------------------------------------------------------------------------------ voxels
def cell_centers(resolution: int, lo: float = -0.5, hi: float = 0.5, device=None) -> torch.Tensor:
    """(R, R, R, 3) centres of the grid's cells, indexed [x, y, z]."""
    s = (hi - lo) / resolution
    ax = lo + (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) * s
    return torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1)


def voxelize_points(points: torch.Tensor, resolution: int, lo: float = -0.5, hi: float = 0.5) -> torch.Tensor:
    """(R, R, R) bool: the cells that hold at least one of the (N, 3) points (points outside are dropped)."""
    idx = torch.floor((points - lo) / (hi - lo) * resolution).long()
    ok = ((idx >= 0) & (idx < resolution)).all(-1)
    idx = idx[ok]
    grid = torch.zeros(resolution ** 3, dtype=torch.bool, device=points.device)
    grid[(idx[:, 0] * resolution + idx[:, 1]) * resolution + idx[:, 2]] = True
    return grid.view(resolution, resolution, resolution)


def cubify(occupancy: torch.Tensor, threshold: float = 0.5, lo: float = -0.5, hi: float = 0.5) -> Mesh:
    """The boundary of the occupied cells as a closed quad mesh (two triangles per exposed cell face).

    Args:
        occupancy: (R, R, R) bool or probabilities, indexed [x, y, z], cell-centred over [lo, hi]^3.
        threshold: cells with occupancy > threshold (or True) are solid.

    Returns:
        Mesh with shared lattice vertices and outward normals; empty if nothing is solid.
    """
    occ = occupancy if occupancy.dtype == torch.bool else occupancy > threshold
    R = occ.shape[0]
    dev = occ.device
    padded = torch.nn.functional.pad(occ[None, None].float(), (1, 1, 1, 1, 1, 1))[0, 0] > 0.5
    solid = padded[1:-1, 1:-1, 1:-1]
    quads = []
    for axis in range(3):
        for sign in (1, -1):
            sl = [slice(1, -1)] * 3
            sl[axis] = slice(1 + sign, R + 1 + sign)
            exposed = solid & ~padded[tuple(sl)]
            cells = exposed.nonzero()  # (K, 3)
            if len(cells) == 0:
                continue
            b, c = (axis + 1) % 3, (axis + 2) % 3  # (b, c, axis) is right-handed
            base = cells.clone()
            base[:, axis] += 1 if sign > 0 else 0
            corners = []
            order = ((0, 0), (1, 0), (1, 1), (0, 1)) if sign > 0 else ((0, 0), (0, 1), (1, 1), (1, 0))
            for db, dc in order:
                p = base.clone()
                p[:, b] += db
                p[:, c] += dc
                corners.append(p)
            quads.append(torch.stack(corners, 1))  # (K, 4, 3) lattice coordinates
    if not quads:
        return Mesh(torch.zeros(0, 3, device=dev), torch.zeros(0, 3, dtype=torch.long, device=dev))
    q = torch.cat(quads)
    key = (q[..., 0] * (R + 1) + q[..., 1]) * (R + 1) + q[..., 2]
    uniq, inv = torch.unique(key.reshape(-1), return_inverse=True)
    inv = inv.view(-1, 4)
    lattice = torch.stack([uniq // (R + 1) ** 2, uniq // (R + 1) % (R + 1), uniq % (R + 1)], -1)
    verts = lo + lattice.float() * ((hi - lo) / R)
    faces = torch.cat([inv[:, [0, 1, 2]], inv[:, [0, 2, 3]]])
    return Mesh(verts, faces)


# --------------------------------------------------------------------------------------- occupancy of a mesh
def carving_cameras(n: int = 32, radius: float = 3.0, size: int = 128, min_elevation_deg: float = -5.0,
                    half_extent: float = 0.87) -> list[Camera]:
    """``n`` cameras looking at the origin from a Fibonacci spiral over the sphere above
    ``min_elevation_deg``, framed to see a ball of radius ``half_extent`` whole."""
    z_lo = math.sin(math.radians(min_elevation_deg))
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - (1 - z_lo) * i / n  # from the top down to the lowest elevation
    phi = i * math.pi * (3 - math.sqrt(5))
    r = (1 - z ** 2).clamp_min(0).sqrt()
    eyes = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1).float() * radius
    fov = 2 * math.asin(min(half_extent / radius, 0.99)) * 1.05
    return [Camera.from_fov(c2w, fov, size, size) for c2w in look_at(eyes)]


class CarvedVolume:
    """Inside test for meshes that need not be watertight, by space carving with depth maps.

    A point is outside when some camera sees past it: it projects off the object's silhouette or lies in
    front of the visible surface. What no camera can reach (the inside of a closed cabinet, or of one whose
    underside is open when the cameras stay above the floor) counts as inside. Thin parts between pixel
    centres can be carved away: unite the result with the surface's own cells (``voxelize_points``).
    """

    def __init__(self, verts: torch.Tensor, faces: torch.Tensor, cameras: list[Camera]):
        self.cameras = cameras
        with torch.no_grad():
            self.depths = [rasterize(verts, faces, cam).depth for cam in cameras]  # (H, W), inf where empty

    @torch.no_grad()
    def inside(self, points: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
        """(N,) bool for (N, 3) points."""
        out = torch.ones(len(points), dtype=torch.bool, device=points.device)
        for cam, depth in zip(self.cameras, self.depths):
            depth = depth.to(points.device)
            for s in range(0, len(points), chunk):
                p = points[s:s + chunk]
                uv, z = project(p, cam)
                px, py = torch.floor(uv[:, 0]).long(), torch.floor(uv[:, 1]).long()
                on = (px >= 0) & (px < cam.width) & (py >= 0) & (py < cam.height) & (z > 0)
                d = torch.full_like(z, float("inf"))
                d[on] = depth[py[on], px[on]]
                seen_past = ~on | torch.isinf(d) | (z < d)
                out[s:s + chunk] &= ~seen_past
        return out


def occupancy_grid(verts: torch.Tensor, faces: torch.Tensor, resolution: int = 32, lo: float = -0.5,
                   hi: float = 0.5, transform=None, carve: CarvedVolume | None = None,
                   surface: torch.Tensor | None = None) -> torch.Tensor:
    """(R, R, R) bool occupancy of a mesh: carved solid united with the cells the surface passes through.

    Args:
        verts, faces: the mesh (any watertightness).
        transform: optional (points in the grid's frame -> points in the mesh's frame), to voxelize the
            mesh in another frame (e.g. rotated to a camera) from one ``carve``.
        carve: a ``CarvedVolume`` of this mesh (made here with 32 cameras if None).
        surface: (N, 3) dense surface samples in the grid's frame (made here if None).
    """
    centers = cell_centers(resolution, lo, hi, verts.device).reshape(-1, 3)
    carve = carve if carve is not None else CarvedVolume(verts, faces, carving_cameras())
    query = centers if transform is None else transform(centers)
    solid = carve.inside(query).view(resolution, resolution, resolution)
    if surface is None:
        n = max(50000, 60 * resolution ** 2)
        surface = sample_surface(verts, faces, n, torch.Generator(verts.device).manual_seed(0))
        if transform is not None:
            raise ValueError("pass surface samples in the grid's frame when a transform is given")
    return solid | voxelize_points(surface, resolution, lo, hi)
