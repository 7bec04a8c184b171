"""A pure-PyTorch triangle rasterizer: z-buffer visibility, perspective-correct barycentrics, simple shading.

Contract: ``rasterize(verts, faces, camera)`` -> ``Fragments`` (nearest face per pixel, its barycentrics
and view depth), then ``interpolate`` any per-vertex attribute, as in PyTorch3D's "rasterize, then shade".
Pixel (row j, column i) has its centre at (u, v) = (i + 0.5, j + 0.5), v growing downwards, with
u = cx + fx * x / -z and v = cy - fy * y / -z in camera axes (x right, y up, looking down -z): the same
rays as ``rays.py``. Faces with a vertex behind the near plane are culled, not clipped; both sides of a
face are drawn. Visibility is not differentiable; barycentrics, depth and interpolated attributes are
differentiable w.r.t. the attributes and the vertices. Works on CPU and CUDA with bounded memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cameras import Camera

_EMPTY = torch.iinfo(torch.int64).max


@dataclass
class Fragments:
    face_idx: torch.Tensor  # (H, W) long: the nearest face at each pixel centre, -1 where empty
    bary: torch.Tensor  # (H, W, 3) perspective-correct barycentrics of that face, 0 where empty
    depth: torch.Tensor  # (H, W) distance along the camera's -z axis, inf where empty

    @property
    def mask(self) -> torch.Tensor:
        """(H, W) bool: pixels a face covers."""
        return self.face_idx >= 0


def project(verts: torch.Tensor, camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """World points to pixel coordinates.

    Args:
        verts: (V, 3) world-space points.
        camera: the pinhole camera.

    Returns:
        (V, 2) pixel coordinates (u, v) and (V,) depths along the camera's -z (positive in front).
    """
    c2w = camera.c2w.to(verts)
    cam = (verts - c2w[:3, 3]) @ c2w[:3, :3]  # rotation is orthonormal: R^T (p - t), written row-wise
    depth = -cam[:, 2]
    inv = 1.0 / torch.where(depth.abs() > 1e-12, depth, torch.full_like(depth, 1e-12))
    uv = torch.stack([camera.cx + camera.fx * cam[:, 0] * inv, camera.cy - camera.fy * cam[:, 1] * inv], dim=-1)
    return uv, depth


def _screen_bary(tri: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(P, 3, 2) triangles and (P, 2) points -> (P, 3) screen-space barycentrics (any winding)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    # Edge functions relative to vertex a keep the numbers small when the triangle sits far from the origin.
    ab, ac, aq = b - a, c - a, q - a
    area = ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]
    w1 = aq[:, 0] * ac[:, 1] - aq[:, 1] * ac[:, 0]
    w2 = ab[:, 0] * aq[:, 1] - ab[:, 1] * aq[:, 0]
    b1, b2 = w1 / area, w2 / area
    return torch.stack([1.0 - b1 - b2, b1, b2], dim=-1)


def _perspective(bary_screen: torch.Tensor, tri_depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen-space barycentrics (P, 3) and vertex depths (P, 3) -> perspective-correct ones and depth (P,).

    1/depth is affine in screen space, so weights b_i / d_i renormalised are the barycentrics in 3D.
    """
    w = bary_screen / tri_depth
    inv_depth = w.sum(-1)
    return w / inv_depth[:, None], 1.0 / inv_depth


def rasterize(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, near: float = 1e-3,
              max_pairs: int = 1 << 20) -> Fragments:
    """Nearest-face z-buffer over pixel centres.

    Each face is tested against the pixels of its screen bounding box; the (face, pixel) pairs are walked in
    chunks of ``max_pairs`` and merged into the z-buffer with one ``scatter_reduce`` of a packed
    (depth, face) key, so memory stays bounded (about 100 bytes per pair) and ties go to the lower index.

    Args:
        verts: (V, 3) world-space vertices.
        faces: (F, 3) long vertex indices.
        camera: the pinhole camera; its width x height is the output size.
        near: faces with a vertex closer than this (along -z) are culled.
        max_pairs: (face, pixel) tests per chunk.

    Returns:
        ``Fragments`` of shape (H, W).
    """
    H, W = int(camera.height), int(camera.width)
    device = verts.device
    faces = faces.to(device=device, dtype=torch.long)
    uv, depth = project(verts, camera)

    with torch.no_grad():
        uv_d, depth_d = uv.detach().float(), depth.detach().float()
        tri = uv_d[faces]  # (F, 3, 2)
        tri_z = depth_d[faces]  # (F, 3)
        lo, hi = tri.amin(1), tri.amax(1)
        # Pixels whose centres (i + 0.5) fall in [lo, hi], clamped to the image.
        x0 = torch.ceil(lo[:, 0] - 0.5).clamp(0, W).long()
        x1 = torch.floor(hi[:, 0] - 0.5).clamp(-1, W - 1).long()
        y0 = torch.ceil(lo[:, 1] - 0.5).clamp(0, H).long()
        y1 = torch.floor(hi[:, 1] - 0.5).clamp(-1, H - 1).long()
        bw, bh = (x1 - x0 + 1).clamp_min(0), (y1 - y0 + 1).clamp_min(0)
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        ok = ((tri_z > near).all(1) & torch.isfinite(tri).all(2).all(1) & (area.abs() > 1e-12)
              & (bw > 0) & (bh > 0))
        keep = ok.nonzero().squeeze(1)
        counts = (bw * bh)[keep]
        ends = counts.cumsum(0)
        total = int(ends[-1]) if len(ends) else 0

        zbuf = torch.full((H * W,), _EMPTY, dtype=torch.int64, device=device)
        for start in range(0, total, max_pairs):
            pair = torch.arange(start, min(start + max_pairs, total), device=device)
            slot = torch.searchsorted(ends, pair, right=True)  # which kept face this pair belongs to
            k = pair - (ends[slot] - counts[slot])  # index inside that face's bounding box
            f = keep[slot]
            px = x0[f] + k % bw[f]
            py = y0[f] + torch.div(k, bw[f], rounding_mode="floor")
            q = torch.stack([px, py], -1).float() + 0.5
            b = _screen_bary(tri[f], q)
            inside = (b >= -1e-6).all(-1)
            b, f, px, py = b[inside], f[inside], px[inside], py[inside]
            _, z = _perspective(b, tri_z[f])
            # Positive float32 bit patterns sort like the floats: pack (depth, face) into one int64 key.
            key = (z.float().view(torch.int32).long() << 32) | f
            zbuf.scatter_reduce_(0, py * W + px, key, reduce="amin")

        hit = zbuf != _EMPTY
        pix = hit.nonzero().squeeze(1)
        face_idx = torch.full((H * W,), -1, dtype=torch.long, device=device)
        face_idx[pix] = zbuf[pix] & 0xFFFFFFFF

    # Recompute barycentrics and depth of the winning faces with autograd on, so they carry gradients to verts.
    f = face_idx[pix]
    q = torch.stack([pix % W, torch.div(pix, W, rounding_mode="floor")], -1).to(uv.dtype) + 0.5
    b, z = _perspective(_screen_bary(uv[faces[f]], q), depth[faces[f]])
    bary = torch.zeros(H * W, 3, dtype=uv.dtype, device=device).index_copy(0, pix, b)
    depth_img = torch.full((H * W,), float("inf"), dtype=uv.dtype, device=device).index_copy(0, pix, z)
    return Fragments(face_idx.view(H, W), bary.view(H, W, 3), depth_img.view(H, W))


def interpolate(attr: torch.Tensor, faces: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes at each pixel.

    Args:
        attr: (V, C) attributes indexed by ``faces`` (vertex colours, normals, or UVs with ``face_uv``).
        faces: (F, 3) long indices into ``attr``, the same faces (in the same order) that were rasterized.
        frags: the ``Fragments`` from ``rasterize``.

    Returns:
        (H, W, C); zero where no face covers the pixel. Differentiable w.r.t. ``attr`` and the barycentrics.
    """
    mask = frags.mask
    corner = attr[faces.to(attr.device)[frags.face_idx.clamp_min(0)]]  # (H, W, 3, C)
    out = (frags.bary.unsqueeze(-1).to(attr.dtype) * corner).sum(-2)
    return out * mask.unsqueeze(-1).to(out.dtype)


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(F, 3) unit normals, counter-clockwise winding facing out."""
    v = verts[faces]
    return F.normalize(torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1), dim=-1)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(V, 3) unit normals: the area-weighted mean of the adjacent faces' normals."""
    v = verts[faces]
    fn = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)  # length = 2 x area
    vn = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), fn.repeat_interleave(3, dim=0))
    return F.normalize(vn, dim=-1)


def render_mesh(mesh, camera: Camera, texture: torch.Tensor | None = None, uv: torch.Tensor | None = None,
                face_uv: torch.Tensor | None = None, light_dir: torch.Tensor | None = None,
                background: float | torch.Tensor = 1.0, ambient: float = 0.35, smooth: bool = True,
                ssaa: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterizes and shades a mesh: albedo x (ambient + diffuse), composited on the background.

    The albedo comes from ``texture`` sampled at ``uv`` if given, else ``mesh.vert_colors``, else grey.

    Args:
        mesh: a ``Mesh`` (verts (V, 3), faces (F, 3), optional vert_colors (V, 3)).
        camera: the pinhole camera.
        texture: (Ht, Wt, 3) float image in [0, 1]; UV (0, 0) is its bottom-left corner (OBJ/trimesh).
        uv: (T, 2) texture coordinates; sampled with border clamping, bilinear.
        face_uv: (F, 3) indices into ``uv`` per face corner; default ``mesh.faces`` (one UV per vertex).
        light_dir: (3,) world direction towards the light; default a headlight from the camera. A fixed
            world light keeps the shading view-independent, as NeRF assumes.
        background: grey level or (3,) colour behind the mesh.
        ambient: share of light that reaches every surface.
        smooth: shade with interpolated vertex normals (else flat face normals).
        ssaa: render at ssaa x the resolution and area-average down (anti-aliased edges, fractional alpha).

    Returns:
        rgb (H, W, 3) and alpha (H, W, 1), both in [0, 1].
    """
    verts, faces = mesh.verts, mesh.faces.to(mesh.verts.device).long()
    cam = camera.scaled(ssaa) if ssaa > 1 else camera
    frags = rasterize(verts, faces, cam)
    mask = frags.mask.unsqueeze(-1).to(verts.dtype)

    if texture is not None and uv is not None:
        tuv = interpolate(uv.to(verts), faces if face_uv is None else face_uv, frags)
        grid = torch.stack([tuv[..., 0] * 2 - 1, 1 - tuv[..., 1] * 2], -1)[None]  # image rows run downwards
        tex = texture.to(verts).permute(2, 0, 1)[None]
        albedo = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        albedo = albedo.permute(1, 2, 0)
    elif getattr(mesh, "vert_colors", None) is not None:
        albedo = interpolate(mesh.vert_colors.to(verts), faces, frags)
    else:
        albedo = torch.full((cam.height, cam.width, 3), 0.8, dtype=verts.dtype, device=verts.device)

    if smooth:
        normals = F.normalize(interpolate(vertex_normals(verts, faces), faces, frags), dim=-1)
    else:
        normals = face_normals(verts, faces)[frags.face_idx.clamp_min(0)]
    # Two-sided lighting: turn each normal towards the camera (pixel ray direction in world space).
    c2w = cam.c2w.to(verts)
    i = torch.arange(cam.width, device=verts.device, dtype=verts.dtype) + 0.5
    j = torch.arange(cam.height, device=verts.device, dtype=verts.dtype) + 0.5
    jj, ii = torch.meshgrid(j, i, indexing="ij")
    dirs_cam = torch.stack([(ii - cam.cx) / cam.fx, -(jj - cam.cy) / cam.fy, -torch.ones_like(ii)], -1)
    view = dirs_cam @ c2w[:3, :3].T  # (H, W, 3) from the camera into the scene
    normals = torch.where((normals * view).sum(-1, keepdim=True) > 0, -normals, normals)
    light = c2w[:3, 2] if light_dir is None else F.normalize(torch.as_tensor(light_dir).to(verts), dim=0)
    diffuse = (normals * light).sum(-1, keepdim=True).clamp_min(0.0)
    shaded = albedo * (ambient + (1.0 - ambient) * diffuse) * mask

    if ssaa > 1:  # average premultiplied colour and coverage, so edges blend like a box filter
        pooled = F.avg_pool2d(torch.cat([shaded, mask], -1).permute(2, 0, 1)[None], ssaa)[0].permute(1, 2, 0)
        shaded, mask = pooled[..., :3], pooled[..., 3:]
    bg = torch.as_tensor(background, dtype=verts.dtype, device=verts.device)
    return (shaded + bg * (1.0 - mask)).clamp(0.0, 1.0), mask
