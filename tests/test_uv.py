"""Texture baking support: texel rasterization in UV space, seam padding, and xatlas unwrapping with a bake
round trip (skipped without xatlas)."""
from __future__ import annotations

import pytest
import torch

from pipelines.core.raster import interpolate
from pipelines.core.uv import pad_seams, rasterize_uv, uv_unwrap


def _texel_centres(size: int) -> torch.Tensor:
    """(size, size, 2) UV of each texel centre: row 0 at the top (v near 1)."""
    r, c = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return torch.stack([c / size, 1 - r / size], -1)


def test_rasterize_uv_covers_the_layout_and_recovers_texel_centres():
    size = 16
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    frags = rasterize_uv(uv, faces, size)
    assert frags.face_idx.shape == (size, size) and frags.mask.all()
    assert torch.allclose(interpolate(uv, faces, frags), _texel_centres(size), atol=1e-5)
    # The lower-right triangle (u > v) is face 0; texel rows run downwards, so it is the upper-right half.
    centre = _texel_centres(size)
    assert (frags.face_idx[centre[..., 0] > centre[..., 1] + 1e-3] == 0).all()
    # A smaller triangle: exactly the texel centres inside it.
    tri = torch.tensor([[0.1, 0.2], [0.8, 0.25], [0.3, 0.9]])
    frags = rasterize_uv(tri, torch.tensor([[0, 1, 2]]), 32)
    c = _texel_centres(32)

    def side(a, b):
        return (b[0] - a[0]) * (c[..., 1] - a[1]) - (b[1] - a[1]) * (c[..., 0] - a[0])

    inside = (side(tri[0], tri[1]) > 0) & (side(tri[1], tri[2]) > 0) & (side(tri[2], tri[0]) > 0)
    assert torch.equal(frags.mask, inside) and inside.sum() > 150


def test_pad_seams_bleeds_colour_ring_by_ring():
    tex = torch.zeros(12, 12, 3)
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[4:7, 5:8] = True
    tex[mask] = torch.tensor([0.2, 0.4, 0.6])
    tex[~mask] = 7.0  # garbage in empty texels must not leak in
    out = pad_seams(tex, mask, iterations=2)
    grown = torch.zeros_like(mask)
    grown[2:9, 3:10] = True  # two rings (8-neighbourhood) around the block
    assert torch.allclose(out[grown], torch.tensor([0.2, 0.4, 0.6]).expand(int(grown.sum()), 3))
    assert (out[~grown] == 7.0).all()
    # Two colours side by side: a new texel touching both takes their mean.
    tex2, m2 = torch.zeros(3, 3, 1), torch.zeros(3, 3, dtype=torch.bool)
    tex2[0, 0], tex2[0, 2] = 1.0, 0.0
    m2[0, 0] = m2[0, 2] = True
    assert pad_seams(tex2, m2, 1)[0, 1, 0] == pytest.approx(0.5)


def test_uv_unwrap_and_bake_round_trip():
    pytest.importorskip("xatlas")
    trimesh = pytest.importorskip("trimesh")
    ico = trimesh.creation.icosphere(subdivisions=1)
    verts, faces = torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces)
    vmapping, faces_uv, uv = uv_unwrap(verts, faces, resolution=64)
    assert faces_uv.shape == faces.shape and uv.shape == (len(vmapping), 2) and vmapping.dtype == torch.int64
    assert torch.equal(vmapping[faces_uv], faces)  # same triangles in the same order, seam vertices split
    assert uv.min() >= 0 and uv.max() <= 1 and len(vmapping) > len(verts)
    # Bake the surface position into a texture, pad it, then read it back at each face's UV centroid.
    size = 64
    frags = rasterize_uv(uv, faces_uv, size)
    new_verts = verts[vmapping]
    baked = pad_seams(interpolate(new_verts, faces_uv, frags), frags.mask, 4)
    t = uv[faces_uv].mean(1)  # (F, 2)
    col = (t[:, 0] * size).long().clamp(0, size - 1)
    row = ((1 - t[:, 1]) * size).long().clamp(0, size - 1)
    assert frags.mask[row, col].all()
    err = (baked[row, col] - new_verts[faces_uv].mean(1)).norm(dim=-1)
    assert err.max() < 0.1  # within a texel's worth of surface (faces are ~0.6 across, 64 texels)
    # Charts do not overlap: the covered texels add up to the charts' total UV area.
    tri = uv[faces_uv]
    area = 0.5 * ((tri[:, 1] - tri[:, 0])[:, 0] * (tri[:, 2] - tri[:, 0])[:, 1]
                  - (tri[:, 1] - tri[:, 0])[:, 1] * (tri[:, 2] - tri[:, 0])[:, 0]).abs().sum()
    assert frags.mask.sum().item() == pytest.approx(area.item() * size * size, rel=0.1)
