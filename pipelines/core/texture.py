"""Texture baking: a colour field queried on a mesh's surface, written into a UV texture image.

Contract: ``bake_texture(verts, faces, color_fn, size)`` unwraps the mesh (``uv.uv_unwrap``: xatlas; without
xatlas, ``face_atlas``: one small chart per face), rasterizes its faces in UV space (``raster.rasterize_uv``),
evaluates ``color_fn`` at the 3D point of every covered texel and pads the charts' borders outwards
(``uv.pad_seams``) so bilinear lookups at seams do not pull in background. Returns a ``geometry.Mesh`` with
``uv`` (M, 2) and ``texture`` (size, size, 3), vertices split along seams (M >= V); UV (0, 0) is the image's
bottom-left corner (glTF/OBJ as trimesh writes them). ``filtered(color_fn, radius, samples)``: the same field
averaged over a fixed set of small offsets (a box-like blur of a volumetric texture read at one point a pixel).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .geometry import Mesh


def face_atlas(faces: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A trivial atlas when xatlas is missing: face pairs share square cells of a grid, each face the half of its
    cell below or above the diagonal, inset by a texel. Same returns as ``uv.uv_unwrap``: vmapping (3F,),
    faces_uv (F, 3) and uv (3F, 2); charts are single faces, so every edge is a seam."""
    n_faces, dev = faces.shape[0], faces.device
    cols = max(1, math.ceil(math.sqrt((n_faces + 1) // 2)))
    cell, inset = 1.0 / cols, 1.0 / size
    k = torch.arange(n_faces, device=dev)
    slot, upper = torch.div(k, 2, rounding_mode="floor"), (k % 2).bool()
    x0, y0 = (slot % cols).float() * cell, torch.div(slot, cols, rounding_mode="floor").float() * cell
    lo, hi = inset * 1.5, cell - inset * 1.5
    # lower triangle (lo, lo) (hi, lo) (lo, hi); upper (hi, hi) (lo, hi) (hi, lo): both counter-clockwise
    ux = torch.where(upper[:, None], torch.tensor([hi, lo, hi], device=dev), torch.tensor([lo, hi, lo], device=dev))
    uy = torch.where(upper[:, None], torch.tensor([hi, hi, lo], device=dev), torch.tensor([lo, lo, hi], device=dev))
    uv = torch.stack([x0[:, None] + ux, y0[:, None] + uy], -1).reshape(-1, 2)
    return faces.reshape(-1).long(), torch.arange(3 * n_faces, device=dev).view(n_faces, 3), uv


def filtered(color_fn: Callable[[torch.Tensor], torch.Tensor], radius: float, samples: int = 8, seed: int = 0,
             checkpoint: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """``color_fn`` averaged over ``samples`` fixed offsets (a seeded Gaussian draw of standard deviation
    ``radius``, centred so that a linear field is unchanged): a low-pass filter of a volumetric texture.

    A hash-grid colour field trained by volume rendering is only constrained as averages over many samples along
    each ray; its finest levels keep noise that a surface read at one point per pixel shows as speckles
    (Magic3D's fine stage). Averaging over about a pixel's footprint reads what the volume render saw. The
    offsets are fixed, so training, previews and the baked texture read the same function. ``radius`` <= 0 or
    ``samples`` <= 1: ``color_fn`` itself. ``checkpoint``: keep only the points for the backward and read the field
    again there (``torch.utils.checkpoint``): a hash grid's eight lookups keep about 19 KB a point otherwise."""
    if radius <= 0 or samples <= 1:
        return color_fn
    offsets = torch.randn(samples, 3, generator=torch.Generator().manual_seed(seed))
    offsets = (offsets - offsets.mean(0)) * radius
    cache: dict = {}

    def fn(x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in cache:
            cache[key] = offsets.to(x.device, x.dtype)
        off = cache[key]
        return color_fn((x[:, None, :] + off).reshape(-1, 3)).view(len(x), samples, -1).mean(1)

    if checkpoint:
        from torch.utils.checkpoint import checkpoint as recompute

        return lambda x: recompute(fn, x, use_reentrant=False) if torch.is_grad_enabled() else fn(x)
    return fn


@torch.no_grad()
def bake_texture(verts: torch.Tensor, faces: torch.Tensor, color_fn: Callable[[torch.Tensor], torch.Tensor],
                 size: int = 1024, pad_iterations: int = 16, chunk: int = 1 << 18) -> tuple[Mesh, float, str]:
    """Bakes ``color_fn`` ((N, 3) points -> (N, 3) colours in [0, 1]) on the mesh (verts (V, 3), faces (F, 3))
    into a size x size texture. Returns the textured mesh, the share of texels its charts cover, and the
    unwrapper used ('xatlas' or 'per-face')."""
    from .raster import interpolate, rasterize_uv
    from .uv import pad_seams, uv_unwrap

    try:
        vmap, faces_uv, uv = uv_unwrap(verts, faces, size)
        method = "xatlas"
    except ImportError:
        vmap, faces_uv, uv = face_atlas(faces, size)
        method = "per-face"
    dev = verts.device
    vmap, faces_uv, uv = vmap.to(dev).long(), faces_uv.to(dev).long(), uv.to(dev).float()
    split = verts[vmap]
    frags = rasterize_uv(uv, faces_uv, size)
    pix = frags.covered
    points = interpolate(split, faces_uv, frags).reshape(-1, 3).index_select(0, pix)
    texture = torch.zeros(size * size, 3, device=dev)
    if len(pix):
        texture[pix] = torch.cat([color_fn(points[i:i + chunk]).float() for i in range(0, len(points), chunk)])
    mask = frags.mask.reshape(size, size)
    texture = pad_seams(texture.view(size, size, 3), mask, pad_iterations).clamp(0, 1)
    return Mesh(split, faces_uv, uv=uv, texture=texture), float(mask.float().mean()), method
