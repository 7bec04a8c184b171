"""Texture atlases for textured exports: UV unwrapping (xatlas), texel rasterization, and seam padding.

Contract: ``uv_unwrap(verts, faces)`` -> (vmapping, faces_uv, uv): the mesh re-indexed with seam vertices
split (new vertex i is old vertex vmapping[i]; faces keep their order), UVs in [0, 1] with (0, 0) the
texture's bottom-left corner. ``rasterize_uv`` (from ``raster.py``) finds each texel's face and barycentrics;
``pad_seams`` bleeds baked colours into the empty texels around charts, so bilinear filtering and mipmaps at
chart borders do not pick up the background.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .raster import rasterize_uv

__all__ = ["pad_seams", "rasterize_uv", "uv_unwrap"]


def uv_unwrap(verts: torch.Tensor, faces: torch.Tensor, resolution: int = 1024,
              padding: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Charts and packs a UV atlas with xatlas (imported here: only the textured export needs it).

    Args:
        verts: (V, 3) positions.
        faces: (F, 3) long.
        resolution: the texture size the charts are packed for.
        padding: texels kept free between charts (bilinear lookups stay inside a chart).

    Returns:
        vmapping (V',) long into ``verts``, faces_uv (F, 3) long into the new vertices (and ``uv``), and
        uv (V', 2) float32, all on ``verts``' device.
    """
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(verts.detach().float().cpu().numpy(), faces.detach().cpu().numpy().astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding, pack.bilinear = int(resolution), int(padding), True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, indices, uv = atlas[0]
    dev = verts.device
    return (torch.from_numpy(vmapping.astype(np.int64)).to(dev), torch.from_numpy(indices.astype(np.int64)).to(dev),
            torch.from_numpy(uv.astype(np.float32)).to(dev))


@torch.no_grad()
def pad_seams(texture: torch.Tensor, mask: torch.Tensor, iterations: int = 8) -> torch.Tensor:
    """Dilates colours into empty texels: each round, every empty texel next to a filled one (8-neighbours)
    takes the mean of its filled neighbours.

    Args:
        texture: (H, W, C) baked colours (values at empty texels are ignored).
        mask: (H, W) bool, the texels that hold baked colours.
        iterations: rounds, i.e. how many texels deep the colours bleed.

    Returns:
        (H, W, C): filled texels unchanged, ``iterations`` rings around them filled, the rest as given.
    """
    filled = mask.to(texture.dtype)[None, None]
    col = (texture * filled[0, 0, ..., None]).permute(2, 0, 1)[None]  # (1, C, H, W)
    for _ in range(iterations):
        total = F.avg_pool2d(col, 3, 1, 1, count_include_pad=True)  # both divided by 9: the ratio is the mean
        count = F.avg_pool2d(filled, 3, 1, 1, count_include_pad=True)
        grow = (count > 0) & (filled == 0)
        if not grow.any():
            break
        col = torch.where(grow, total / count.clamp_min(1e-12), col)
        filled = filled + grow.to(filled.dtype)
    out = col[0].permute(1, 2, 0)
    return torch.where(filled[0, 0, ..., None] > 0, out, texture)
