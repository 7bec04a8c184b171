"""A pure-PyTorch triangle rasterizer: z-buffer visibility, perspective-correct barycentrics, attribute
interpolation, nvdiffrast-style silhouette antialiasing, simple shading.

Contract: ``rasterize(verts, faces, camera or [cameras])`` -> ``Fragments`` (nearest face per pixel, its
barycentrics and view depth; (H, W) for one camera, (B, H, W) for a batch rasterized in one pass), then
``interpolate`` any per-vertex attribute, as in PyTorch3D's "rasterize, then shade", and ``antialias`` the
shaded image so silhouettes carry gradients to the vertices (Laine et al. 2020; in ``antialias.py``).
Pixel (row j, column i) has its centre at (u, v) = (i + 0.5, j + 0.5), v growing downwards, with
u = cx + fx * x / -z and v = cy - fy * y / -z in camera axes (x right, y up, looking down -z): the same
rays as ``rays.py``. Faces with a vertex behind the near plane are culled, not clipped; both sides of a
face are drawn. Visibility is not differentiable; barycentrics, depth and interpolated attributes are
differentiable w.r.t. the attributes and the vertices; the backward of rasterize, interpolate and antialias
never sorts (gathers use index_select or ``_Interpolate``: index_add backwards). CPU and CUDA, bounded memory.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence, Union

import torch
import torch.nn.functional as F

from .antialias import antialias, face_neighbours  # part of this module's API, kept in its own file for size
from .cameras import Camera

__all__ = ["Fragments", "antialias", "face_neighbours", "face_normals", "interpolate", "project", "rasterize",
           "rasterize_uv", "render_mesh", "vertex_normals"]

_EMPTY = torch.iinfo(torch.int64).max


Cameras = Union[Camera, Sequence[Camera]]


@dataclass
class Fragments:
    face_idx: torch.Tensor  # ([B,] H, W) long: the nearest face at each pixel centre, -1 where empty
    bary: torch.Tensor  # ([B,] H, W, 3) perspective-correct barycentrics of that face, 0 where empty
    depth: torch.Tensor  # ([B,] H, W) distance along the camera's -z axis, inf where empty
    pix: torch.Tensor | None = None  # (P,) flat indices of the covered pixels into face_idx.reshape(-1)

    @property
    def mask(self) -> torch.Tensor:
        """([B,] H, W) bool: pixels a face covers."""
        return self.face_idx >= 0

    @property
    def covered(self) -> torch.Tensor:
        """(P,) long: flat indices of the covered pixels (kept from ``rasterize``, so no second search)."""
        if self.pix is None:
            self.pix = self.mask.reshape(-1).nonzero().squeeze(1)
        return self.pix


def _camera_list(cameras: Cameras) -> tuple[list[Camera], bool]:
    """One camera -> ([it], False); a list, or one Camera whose c2w is (B, 4, 4) -> (B cameras, True)."""
    if isinstance(cameras, Camera):
        if cameras.c2w.dim() == 3:
            return [replace(cameras, c2w=c) for c in cameras.c2w], True
        return [cameras], False
    cams = list(cameras)
    if not cams or any((c.width, c.height) != (cams[0].width, cams[0].height) for c in cams):
        raise ValueError("batched cameras must be a non-empty list sharing one width and height")
    return cams, True


def project(verts: torch.Tensor, camera: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """World points to pixel coordinates.

    Args:
        verts: (V, 3) world-space points.
        camera: one pinhole camera, or B of them (a list, or a Camera with a (B, 4, 4) c2w).

    Returns:
        ([B,] V, 2) pixel coordinates (u, v) and ([B,] V) depths along the camera's -z (positive in front);
        the batch axis only for batched cameras. At least float32, also under autocast: half precision
        would put a 512 px image's coordinates on a grid of 2-4 px.
    """
    cams, batched = _camera_list(camera)
    if verts.dtype in (torch.float16, torch.bfloat16):
        verts = verts.float()
    c2w = torch.stack([c.c2w for c in cams]).to(verts)  # (B, 4, 4)
    k = torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in cams]).to(verts)[:, None]  # (B, 1, 4)
    with torch.autocast(verts.device.type, enabled=False):
        cam = (verts[None] - c2w[:, None, :3, 3]) @ c2w[:, :3, :3]  # orthonormal R: R^T (p - t), row-wise
    depth = -cam[..., 2]
    inv = 1.0 / torch.where(depth.abs() > 1e-12, depth, torch.full_like(depth, 1e-12))
    uv = torch.stack([k[..., 2] + k[..., 0] * cam[..., 0] * inv, k[..., 3] - k[..., 1] * cam[..., 1] * inv], -1)
    return (uv, depth) if batched else (uv[0], depth[0])


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


@torch.no_grad()
def _zbuffer(uv: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, H: int, W: int, near: float,
             max_pairs: int, cull_backfaces: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest face per pixel centre over B views: (B, V, 2) pixels, (B, V) depths -> face ids (B*H*W,),
    -1 where empty, and the covered pixels' flat indices (P,).

    Each view's faces are tested against the pixels of their screen bounding boxes; the (face, pixel) pairs
    of all views are walked together in chunks of ``max_pairs`` and merged with one ``scatter_reduce`` of a
    packed (depth, face) key, so memory stays bounded (about 100 bytes per pair) and ties go to the lower index.
    Per face, the screen barycentrics and 1/depth are affine in the pixel's offset (i, j) inside the face's
    box, so each pair costs one row gather and four dot products; pairs outside the face get the empty key
    instead of being compacted away (no data-dependent shapes, so no host sync inside the loop).
    """
    B, n_faces = uv.shape[0], faces.shape[0]
    device = uv.device
    tri = uv.float()[:, faces].reshape(-1, 3, 2)  # (B*F, 3, 2): face g is face g % F of view g // F
    tri_z = depth.float()[:, faces].reshape(-1, 3)
    lo, hi = tri.amin(1), tri.amax(1)
    # Pixels whose centres (i + 0.5) fall in [lo, hi], clamped to the image.
    x0 = torch.ceil(lo[:, 0] - 0.5).clamp(0, W).long()
    x1 = torch.floor(hi[:, 0] - 0.5).clamp(-1, W - 1).long()
    y0 = torch.ceil(lo[:, 1] - 0.5).clamp(0, H).long()
    y1 = torch.floor(hi[:, 1] - 0.5).clamp(-1, H - 1).long()
    bw, bh = (x1 - x0 + 1).clamp_min(0), (y1 - y0 + 1).clamp_min(0)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = ((tri_z > near).all(1) & torch.isfinite(tri).all(2).all(1) & (area.abs() > 1e-12) & (bw > 0) & (bh > 0))
    if cull_backfaces:  # counter-clockwise seen from the camera in world axes is clockwise in (u, v-down)
        ok &= area < 0
    keep = ok.nonzero().squeeze(1)
    # Affine maps per kept face, in the offset (i, j) from its box's first pixel centre:
    # b1 = (q - a) x e2 / area, b2 = e1 x (q - a) / area, b0 = 1 - b1 - b2, 1/z = sum_k b_k / z_k.
    t, e1, e2, inv_area = tri[keep], e1[keep], e2[keep], 1.0 / area[keep]
    r = torch.stack([x0[keep], y0[keep]], -1).float() + 0.5 - t[:, 0]  # first pixel centre - a
    c1 = torch.stack([e2[:, 1], -e2[:, 0], r[:, 0] * e2[:, 1] - r[:, 1] * e2[:, 0]], -1) * inv_area[:, None]
    c2 = torch.stack([-e1[:, 1], e1[:, 0], e1[:, 0] * r[:, 1] - e1[:, 1] * r[:, 0]], -1) * inv_area[:, None]
    c0 = -c1 - c2
    c0[:, 2] += 1.0
    iz = 1.0 / tri_z[keep]
    cz = c0 * iz[:, :1] + c1 * iz[:, 1:2] + c2 * iz[:, 2:]
    coef = torch.stack([c0, c1, c2, cz], 1)  # (K, 4, 3): rows b0, b1, b2, 1/z; columns i, j, 1
    base = torch.div(keep, n_faces, rounding_mode="floor") * (H * W) + y0[keep] * W + x0[keep]
    counts = bw[keep] * bh[keep]
    ends = counts.cumsum(0)
    total = int(ends[-1]) if len(ends) else 0
    ints = torch.stack([ends - counts, base, bw[keep], keep], -1)  # (K, 4): first pair, first pixel, width, face

    zbuf = torch.full((B * H * W,), _EMPTY, dtype=torch.int64, device=device)
    for start in range(0, total, max_pairs):
        pair = torch.arange(start, min(start + max_pairs, total), device=device)
        slot = torch.searchsorted(ends, pair, right=True)  # which kept face this pair belongs to
        first_pair, first, w, face = ints[slot].unbind(-1)
        k = pair - first_pair  # index inside that face's bounding box
        j = torch.div(k, w, rounding_mode="floor")
        i = k - j * w
        c = coef[slot]  # (P, 4, 3)
        val = torch.addcmul(torch.addcmul(c[..., 2], c[..., 0], i[:, None].float()), c[..., 1], j[:, None].float())
        inside = (val[:, :3] >= -1e-6).all(-1)
        z = 1.0 / val[:, 3]  # b0, b1, b2, 1/z at the pixel centre
        # Positive float32 bit patterns sort like the floats: pack (depth, face) into one int64 key.
        key = torch.where(inside, (z.view(torch.int32).long() << 32) | face, _EMPTY)
        zbuf.scatter_reduce_(0, first + j * W + i, key, reduce="amin")

    pix = (zbuf != _EMPTY).nonzero().squeeze(1)
    face_idx = torch.full((B * H * W,), -1, dtype=torch.long, device=device)
    face_idx[pix] = (zbuf[pix] & 0xFFFFFFFF) % max(n_faces, 1)
    return face_idx, pix


def _fragments(uv: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, H: int, W: int, near: float,
               max_pairs: int, cull_backfaces: bool = False) -> tuple[torch.Tensor, ...]:
    """The z-buffer, then the winners' barycentrics and depth recomputed under autograd from (B, V, 2)
    pixel positions and (B, V) depths: face ids, bary and depth flat over B*H*W, and the covered pixels."""
    B, V = depth.shape
    face_idx, pix = _zbuffer(uv.detach(), depth.detach(), faces, H, W, near, max_pairs, cull_backfaces)
    view, local = torch.div(pix, H * W, rounding_mode="floor"), pix % (H * W)
    corner = (faces[face_idx[pix]] + (view * V)[:, None]).reshape(-1)  # (P*3,) rows of the flattened views
    # index_select: its backward is an index_add, not the sorting index_put that x[idx] uses on CUDA.
    tri = uv.reshape(B * V, 2).index_select(0, corner).reshape(-1, 3, 2)
    tri_z = depth.reshape(B * V).index_select(0, corner).reshape(-1, 3)
    q = torch.stack([local % W, torch.div(local, W, rounding_mode="floor")], -1).to(uv.dtype) + 0.5
    b, z = _perspective(_screen_bary(tri, q), tri_z)
    bary = uv.new_zeros(B * H * W, 3).index_copy(0, pix, b)
    depth_img = torch.full((B * H * W,), float("inf"), dtype=uv.dtype, device=uv.device).index_copy(0, pix, z)
    return face_idx, bary, depth_img, pix


def rasterize(verts: torch.Tensor, faces: torch.Tensor, camera: Cameras, near: float = 1e-3,
              max_pairs: int = 1 << 20, cull_backfaces: bool = False) -> Fragments:
    """Nearest-face z-buffer over pixel centres, for one camera or a batch of cameras in one pass.

    All views' (face, pixel) pairs go through one chunked loop (see ``_zbuffer``); then the barycentrics
    and depth of each covered pixel's face are recomputed with autograd on, so they carry gradients to the
    vertices (visibility itself is piecewise constant; ``antialias`` gives silhouettes their gradient).

    Args:
        verts: (V, 3) world-space vertices.
        faces: (F, 3) long vertex indices.
        camera: one pinhole camera, or B cameras of one size (a list, or a Camera with a (B, 4, 4) c2w);
            its width x height is the output size.
        near: faces with a vertex closer than this (along -z) are culled.
        max_pairs: (face, pixel) tests per chunk.
        cull_backfaces: skip faces whose counter-clockwise side looks away from the camera: the same image
            at about half the work for closed, consistently wound meshes (``marching_tets``' output).

    Returns:
        ``Fragments`` of shape (H, W) for one camera, (B, H, W) for a batch.
    """
    cams, batched = _camera_list(camera)
    H, W = int(cams[0].height), int(cams[0].width)
    faces = faces.to(device=verts.device, dtype=torch.long)
    uv, depth = project(verts, cams)  # (B, V, 2), (B, V)
    face_idx, bary, depth_img, pix = _fragments(uv, depth, faces, H, W, near, max_pairs, cull_backfaces)
    shape = (len(cams), H, W) if batched else (H, W)
    return Fragments(face_idx.view(shape), bary.view(*shape, 3), depth_img.view(shape), pix)


def rasterize_uv(uv: torch.Tensor, faces_uv: torch.Tensor, size: int, max_pairs: int = 1 << 20) -> Fragments:
    """Rasterizes a mesh's UV layout, for baking: which face covers each texel centre, at which barycentrics.

    Texel (row r, column c) has its centre at UV ((c + 0.5) / size, 1 - (r + 0.5) / size): UV (0, 0) is the
    image's bottom-left corner, as ``render_mesh`` samples textures (trimesh flips v for glTF itself).
    ``interpolate(attr, faces, frags)`` then gives any per-vertex attribute per texel, e.g. the 3D surface
    point at which to query a colour field; ``frags.mask`` is the texels inside a chart.

    Args:
        uv: (T, 2) texture coordinates in [0, 1].
        faces_uv: (F, 3) long indices into ``uv`` per face corner.
        size: texture width and height in texels.

    Returns:
        ``Fragments`` of shape (size, size); depth is 1 where covered. Barycentrics are affine in UV space.
    """
    screen = torch.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], -1)[None].float()
    ones = torch.ones_like(screen[..., 0])
    faces_uv = faces_uv.to(device=uv.device, dtype=torch.long)
    face_idx, bary, depth, pix = _fragments(screen, ones, faces_uv, size, size, 0.5, max_pairs)
    return Fragments(face_idx.view(size, size), bary.view(size, size, 3), depth.view(size, size), pix)


class _Interpolate(torch.autograd.Function):
    """sum_k w_k * attr[idx_k]: (P, 3) vertex indices and weights -> (P, C).

    As ``encodings._InterpolateTable``: autograd's backward of ``attr[idx]`` sorts all P*3 indices on CUDA
    (a deterministic index_put), which was most of ``interpolate``'s backward; this one scatters with
    ``index_add_`` and never keeps the (P, 3, C) gathered corners. Its backward is made of differentiable ops.
    """

    @staticmethod
    def forward(ctx, attr, idx, w):
        ctx.save_for_backward(attr, idx, w)
        return (attr[idx] * w[..., None]).sum(1)

    @staticmethod
    def backward(ctx, grad):
        attr, idx, w = ctx.saved_tensors
        grad_attr = grad_w = None
        if ctx.needs_input_grad[0]:
            contrib = (w[..., None] * grad[:, None, :]).reshape(-1, attr.shape[1])
            grad_attr = torch.zeros_like(attr).index_add_(0, idx.reshape(-1), contrib.to(attr.dtype))
        if ctx.needs_input_grad[2]:
            grad_w = (attr[idx] * grad[:, None, :]).sum(-1)
        return grad_attr, None, grad_w


def interpolate(attr: torch.Tensor, faces: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes at each covered pixel.

    Args:
        attr: (V, C) attributes indexed by ``faces`` (vertex colours, normals, positions, or UVs with
            ``face_uv``), shared by all views of a batch.
        faces: (F, 3) long indices into ``attr``, the same faces (in the same order) that were rasterized.
        frags: the ``Fragments`` from ``rasterize`` (one view or a batch).

    Returns:
        ([B,] H, W, C); zero where no face covers the pixel. Differentiable w.r.t. ``attr`` and the
        barycentrics (so w.r.t. the vertices), without a sort in the backward.
    """
    pix = frags.covered
    faces = faces.to(device=attr.device, dtype=torch.long)
    f = frags.face_idx.reshape(-1).index_select(0, pix)
    w = frags.bary.reshape(-1, 3).index_select(0, pix).to(attr.dtype)
    vals = _Interpolate.apply(attr, faces[f], w)  # (P, C)
    out = attr.new_zeros(frags.face_idx.numel(), attr.shape[-1]).index_copy(0, pix, vals)
    return out.view(*frags.face_idx.shape, attr.shape[-1])


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
