"""Procedural furniture (issue 21: more training shapes than the machine's mesh sources hold): every kind builds a
sound shape, the same id always the same one, and the builder's catalog reaches every kind."""
import numpy as np
import pytest

from pipelines.train.mesh_library import catalog, load_parts
from pipelines.train.procedural_furniture import COUNT, KINDS, _Builder, procedural_mesh
from pipelines.train.shape_builds import spread


def _areas(v, f):
    return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)


def test_primitives_are_closed_forms():
    b = _Builder()
    b.box((0, 0, 0), (1, 2, 3))
    v, f = b.verts[0], b.faces[0]
    assert len(f) == 12 and _areas(v, f).sum() == pytest.approx(2 * (1 * 2 + 2 * 3 + 1 * 3))
    b.cylinder(0, 0, 0, 2, 1, segments=256)
    v, f = b.verts[1], b.faces[1] - b.faces[1].min()
    assert _areas(v, f).sum() == pytest.approx(2 * np.pi * 2 + 2 * np.pi, rel=1e-3)  # side + two caps
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    assert (np.unique(edges, axis=0, return_counts=True)[1] == 2).all()  # closed: every edge in two faces


def test_lathe_and_ellipsoid_are_closed_and_measure_right():
    b = _Builder()
    b.lathe(0, 0, [(1.0, 0.0), (1.0, 1.0), (0.5, 2.0)], segments=512)  # a cylinder under a frustum
    v, f = b.verts[0], b.faces[0]
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    assert (np.unique(edges, axis=0, return_counts=True)[1] == 2).all()
    frustum_side = np.pi * (1.0 + 0.5) * np.hypot(0.5, 1.0)
    assert _areas(v, f).sum() == pytest.approx(2 * np.pi + frustum_side + np.pi + np.pi * 0.25, rel=1e-3)
    assert _volume(v, f) == pytest.approx(np.pi + np.pi / 3 * (1 + 0.5 + 0.25), rel=1e-3)  # outward faces
    b.ellipsoid((1, 2, 3), (0.5, 1.0, 2.0), rings=200, segments=400)
    v, f = b.verts[1], b.faces[1] - b.faces[1].min()
    assert _volume(v, f) == pytest.approx(4 / 3 * np.pi * 0.5 * 1.0 * 2.0, rel=2e-2)  # the poles' caps cut a little
    assert np.allclose(v.mean(0), (1, 2, 3), atol=1e-2)


def _volume(v, f):
    """Signed volume of a closed triangle mesh (divergence theorem): positive when its faces point outwards."""
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6)


def test_catalog_reaches_every_kind_and_ids_are_unique():
    shapes = catalog("procedural")
    assert len(shapes) == COUNT and len({s.id for s in shapes}) == COUNT
    assert {s.category for s in spread(shapes, 20)} == set(KINDS)  # a small --limit build still mixes kinds
    assert all(s.license == "CC0" and s.source == "procedural" for s in shapes)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_a_sound_shape_and_the_id_fixes_it(kind):
    shapes = [s for s in catalog("procedural") if s.category == kind][:3]
    (v, f, mat, col), again, other = (procedural_mesh(s.id) for s in (shapes[0], shapes[0], shapes[1]))
    assert np.array_equal(v, again[0]) and np.array_equal(col, again[3])
    assert v.shape != other[0].shape or not np.allclose(v, other[0])
    assert v[:, 2].min() == pytest.approx(0.0)  # stands on the floor, z up
    assert f.max() < len(v) and len(mat) == len(f) and set(mat) <= {0, 1} and col.shape == (2, 3)
    assert (_areas(v, f) > 0).all()
    ext = v.max(0) - v.min(0)
    assert 0.1 < ext.max() < 3.0  # metres: from a glass to a bed
    canon = load_parts(shapes[0])  # through the builders' loader: centred, longest side 1
    lo, hi = canon.verts.min(0), canon.verts.max(0)
    assert (hi - lo).max() == pytest.approx(1.0) and np.allclose((hi + lo) / 2, 0, atol=1e-9)


def test_an_unknown_id_is_refused():
    with pytest.raises(ValueError, match="not a procedural shape"):
        procedural_mesh("procedural-throne-0001")
