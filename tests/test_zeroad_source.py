"""0 A.D.'s props as a shape source of the data builders (issue 21: more openly licensed shapes): the PMD mesh
reader, the catalog's filter and the loading into the canonical frame, on small PMD files written here."""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.train.mesh_formats import read_pmd
from pipelines.train.mesh_library import ShapeSource, catalog, load_parts, zeroad_catalog


def pmd_bytes(verts, faces, version: int = 4, n_uv: int = 1) -> bytes:
    """A PMD file as 0 A.D. writes it: header, vertices (position, normal, UV sets, bone weights), triangles,
    then (not read) zero bones and zero prop points."""
    verts = np.asarray(verts, np.float32)
    body = struct.pack("<I", len(verts)) + (struct.pack("<I", n_uv) if version >= 4 else b"")
    for i, p in enumerate(verts):
        body += struct.pack("<3f3f", *p, 0.0, 1.0, 0.0)
        body += b"".join(struct.pack("<2f", 0.1 * i, 0.2 * k) for k in range(n_uv))
        body += bytes([255, 255, 255, 255]) + struct.pack("<4f", 0, 0, 0, 0)
    body += struct.pack("<I", len(faces)) + np.asarray(faces, "<u2").tobytes() + struct.pack("<II", 0, 0)
    return b"PSMD" + struct.pack("<II", version, len(body)) + body


def box(w, h, d):
    """A closed box of 12 triangles, y up."""
    v = np.array([[x, y, z] for x in (0, w) for y in (0, h) for z in (0, d)], np.float32)
    f = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],
         [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    return v, f


@pytest.mark.parametrize("version,n_uv", [(3, 1), (4, 1), (4, 2)])
def test_read_pmd_gives_back_what_was_written(version, n_uv):
    v, f = box(1.0, 2.0, 0.5)
    verts, uv, faces = read_pmd(pmd_bytes(v, f, version, n_uv))
    assert np.allclose(verts, v) and np.array_equal(faces, np.asarray(f))
    assert np.allclose(uv[:, 0], 0.1 * np.arange(8)) and np.allclose(uv[:, 1], 0)  # the first UV set


def test_read_pmd_refuses_what_it_cannot_read():
    v, f = box(1, 1, 1)
    good = pmd_bytes(v, f)
    for bad, why in [(b"OBJ " + good[4:], "not a PMD"), (good[:60], "truncated"),
                     (good[:4] + struct.pack("<I", 9) + good[8:], "version"),
                     (pmd_bytes(v, [[0, 1, 99]]), "out of range")]:
        with pytest.raises(ValueError, match=why):
            read_pmd(bad)


def test_catalog_keeps_object_sized_props_and_loads_them_z_up(tmp_path: Path):
    zpath = tmp_path / "public.zip"
    big = [box(1.0, 2.0, 0.5)] * 6  # 72 triangles: six boxes in one mesh
    v = np.concatenate([b[0] + 0.01 * i for i, b in enumerate(big)])
    f = np.concatenate([np.asarray(b[1]) + 8 * i for i, b in enumerate(big)])
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("art/meshes/props/chest_01.dae.cached.pmd", pmd_bytes(v, f))
        zf.writestr("art/meshes/props/banner.dae.cached.pmd", pmd_bytes(v * [1, 1, 0.01], f))  # flat
        zf.writestr("art/meshes/props/temple.dae.cached.pmd", pmd_bytes(v * 10, f))  # a building's size
        zf.writestr("art/meshes/props/cup.dae.cached.pmd", pmd_bytes(*box(0.5, 0.5, 0.5)))  # too few faces
        zf.writestr("art/meshes/structural/wall.dae.cached.pmd", pmd_bytes(v, f))  # not a prop
        zf.writestr("art/meshes/props/broken.dae.cached.pmd", b"PSMD\x04")
    shapes = zeroad_catalog(zpath)
    assert [s.id for s in shapes] == ["zeroad-chest_01"]
    s = shapes[0]
    assert (s.source, s.license, s.member) == ("zeroad", "CC-BY-SA 3.0", "art/meshes/props/chest_01.dae.cached.pmd")
    assert [x.id for x in catalog("zeroad", zeroad_zip=zpath)] == ["zeroad-chest_01"]
    assert zeroad_catalog(tmp_path / "missing.zip") == []
    parts = load_parts(s)
    ext = parts.verts.max(0) - parts.verts.min(0)
    assert np.isclose(ext.max(), 1.0) and np.isclose(ext[2], 1.0)  # y (2 high) is now z
    assert np.allclose(parts.verts.max(0) + parts.verts.min(0), 0)  # centred
    assert parts.faces.shape == (72, 3) and parts.textures == [None]


def test_load_parts_reads_a_prop_by_its_member(tmp_path: Path):
    zpath = tmp_path / "public.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("art/meshes/props/a.pmd", pmd_bytes(*box(2.0, 1.0, 1.0)))
    src = ShapeSource(id="zeroad-a", name="a", source="zeroad", license="CC-BY-SA 3.0", path=str(zpath),
                      member="art/meshes/props/a.pmd")
    parts = load_parts(src)
    assert np.allclose(parts.verts.max(0) - parts.verts.min(0), [1.0, 0.5, 0.5])
