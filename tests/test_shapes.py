"""Shape core against closed forms: icosphere, Laplacian, Chamfer, F-score, IoU, cubify, sampling, carving."""
import math

import pytest
import torch

from pipelines.core.shape_losses import (chamfer_distance, edge_face_pairs, f_score, laplacian_smoothing, nearest,
                                         normal_consistency, precision_recall, uniform_laplacian, voxel_iou)
from pipelines.core.shapes import (CarvedVolume, carving_cameras, cell_centers, cubify, face_areas, icosphere,
                                   mesh_edges, occupancy_grid, sample_surface, voxelize_points)


def signed_volume(verts, faces):
    v0, v1, v2 = verts[faces].unbind(1)
    return float((v0 * torch.linalg.cross(v1, v2, dim=-1)).sum() / 6)


def box_mesh(lo=(-0.5, -0.5, -0.5), hi=(0.5, 0.5, 0.5), drop=()):
    """An axis-aligned box (12 triangles, outward), optionally without the faces named in ``drop``."""
    import trimesh

    tm = trimesh.creation.box(bounds=[lo, hi])
    keep = [i for i, n in enumerate(tm.face_normals)
            if not (("bottom" in drop and n[2] < -0.9) or ("top" in drop and n[2] > 0.9))]
    return torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces[keep], dtype=torch.long)


@pytest.mark.parametrize("level", [0, 1, 2, 4])
def test_icosphere_counts_radius_and_orientation(level):
    m = icosphere(level, radius=0.5)
    V, F, E = len(m.verts), len(m.faces), len(mesh_edges(m.faces))
    assert (V, F) == (10 * 4 ** level + 2, 20 * 4 ** level)
    assert V - E + F == 2 and E == 3 * F // 2  # a closed genus-0 triangle mesh
    assert torch.allclose(m.verts.norm(dim=-1), torch.full((V,), 0.5), atol=1e-6)
    assert signed_volume(m.verts, m.faces) > 0  # faces wind outwards
    if level == 4:
        assert face_areas(m.verts, m.faces).sum() == pytest.approx(math.pi, rel=2e-3)  # 4 pi r^2
        assert signed_volume(m.verts, m.faces) == pytest.approx(4 / 3 * math.pi / 8, rel=3e-3)


def test_uniform_laplacian_closed_forms():
    ico = icosphere(0)  # each vertex's 5 neighbours average to v / sqrt(5)
    lap = uniform_laplacian(ico.verts, mesh_edges(ico.faces))[0]
    assert torch.allclose(lap.norm(dim=-1), torch.full((12,), 1 - 1 / math.sqrt(5)), atol=1e-6)
    assert torch.allclose(lap, -ico.verts * (1 - 1 / math.sqrt(5)), atol=1e-6)  # pointing at the centre
    # A flat, regular triangulated grid: interior vertices have zero Laplacian.
    n = 5
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2)
    verts = torch.cat([ij.float(), torch.zeros(n * n, 1)], -1)
    q = torch.tensor([[i * n + j, (i + 1) * n + j, (i + 1) * n + j + 1, i * n + j + 1]
                      for i in range(n - 1) for j in range(n - 1)])
    faces = torch.cat([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
    lap = uniform_laplacian(verts, mesh_edges(faces))[0].norm(dim=-1).view(n, n)
    assert lap[1:-1, 1:-1].abs().max() < 1e-6 and lap[0, 0] > 0.1
    assert float(laplacian_smoothing(verts[None] * 2, mesh_edges(faces))) == pytest.approx(
        2 * float(laplacian_smoothing(verts[None], mesh_edges(faces))), rel=1e-6)


def test_normal_consistency_of_a_cube_and_a_plane():
    verts, faces = box_mesh()
    pairs = edge_face_pairs(faces)
    assert len(pairs) == 18  # 12 cube edges at 90 degrees + 6 face diagonals at 0
    assert float(normal_consistency(verts, faces, pairs)) == pytest.approx(12 / 18, abs=1e-6)
    with pytest.raises(ValueError):
        edge_face_pairs(faces[:-1])  # open mesh


def test_chamfer_and_f_score_closed_forms():
    grid = torch.stack(torch.meshgrid(*[torch.arange(4.0)] * 3, indexing="ij"), -1).reshape(1, -1, 3) * 0.1
    shifted = grid + torch.tensor([0.015, 0.0, 0.0])  # every nearest neighbour is 0.015 away
    assert float(chamfer_distance(grid, grid)) == 0.0
    assert float(chamfer_distance(grid, shifted)) == pytest.approx(2 * 0.015 ** 2, rel=1e-4)
    f = f_score(grid, shifted, (0.01, 0.02))
    assert float(f[0.01]) == 0.0 and float(f[0.02]) == 1.0
    # Half of the prediction far away: precision 1/2, recall 1 -> F = 2/3.
    pred = torch.cat([grid, grid + 10.0], 1)
    assert float(f_score(pred, grid, (0.01,))[0.01]) == pytest.approx(2 / 3, rel=1e-6)
    (precision, recall), = precision_recall(pred, grid, (0.01,)).values()
    assert float(precision) == 0.5 and float(recall) == 1.0
    # Gradient of the squared distance pulls each point towards its neighbour: d/dx mean (x - y)^2 = 2 (x - y) / N.
    x = shifted.clone().requires_grad_(True)
    chamfer_distance(x, grid).sum().backward()
    n = grid.shape[1]
    assert torch.allclose(x.grad[0, :, 0], torch.full((n,), 4 * 0.015 / n), rtol=1e-4)


def test_chamfer_counts_both_directions():
    # Sets of different sizes, where the two directions differ: a one-sided Chamfer gets these wrong.
    x = torch.tensor([[[0.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]])  # (2, 1, 3)
    y = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]],
                      [[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 1.5]]])  # (2, 3, 3)
    # x -> y: 0 and 0.25; y -> x: (0 + 1 + 4) / 3 and (1 + 4 + 0.25) / 3.
    expected = torch.tensor([0.0 + 5 / 3, 0.25 + 5.25 / 3])
    assert torch.allclose(chamfer_distance(x, y), expected, rtol=1e-6)
    assert torch.allclose(chamfer_distance(y, x), expected, rtol=1e-6)


@pytest.mark.parametrize("max_elems", [1 << 26, 70])  # one block, and blocks of a few points of x
def test_nearest_matches_brute_force(max_elems):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 50, 3, generator=g), torch.rand(3, 37, 3, generator=g)
    y[..., 2] *= 10.0  # unequal axis scales: a wrong coordinate pairing picks other neighbours
    brute = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1).argmin(-1)
    assert torch.equal(nearest(x, y, max_elems), brute)
    assert torch.equal(nearest(y, x, max_elems), ((y[:, :, None] - x[:, None]) ** 2).sum(-1).argmin(-1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nearest_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 300, 3, generator=g), torch.rand(2, 400, 3, generator=g)
    gpu, cpu = nearest(x.cuda(), y.cuda(), 1 << 12).cpu(), nearest(x, y)
    dist = lambda idx: (x - torch.gather(y, 1, idx[..., None].expand(-1, -1, 3))).norm(dim=-1)  # noqa: E731
    assert (gpu == cpu).float().mean() > 0.99 and torch.allclose(dist(gpu), dist(cpu), atol=1e-6)  # FMA: near-ties


def test_voxel_iou_of_two_boxes():
    a = torch.zeros(8, 8, 8, dtype=torch.bool)
    b = a.clone()
    a[0:4, 0:4, 0:4] = True
    b[2:6, 0:4, 0:4] = True
    assert float(voxel_iou(a[None], b[None])) == pytest.approx(32 / 96)
    assert float(voxel_iou(a[None], a[None])) == 1.0


def test_cubify_closed_forms():
    occ = torch.zeros(4, 4, 4, dtype=torch.bool)
    occ[1, 2, 3] = True
    m = cubify(occ, lo=0.0, hi=4.0)  # unit cells
    assert (len(m.verts), len(m.faces)) == (8, 12)
    assert float(face_areas(m.verts, m.faces).sum()) == pytest.approx(6.0)
    assert signed_volume(m.verts, m.faces) == pytest.approx(1.0)  # closed, outward
    assert m.verts.min(0).values.tolist() == [1.0, 2.0, 3.0]
    block = torch.zeros(4, 4, 4, dtype=torch.bool)
    block[:2, :2, :2] = True
    mb = cubify(block, lo=0.0, hi=4.0)
    assert len(mb.verts) == 26 and float(face_areas(mb.verts, mb.faces).sum()) == pytest.approx(24.0)
    rnd = torch.rand(16, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.6
    mr = cubify(rnd)  # any grid: the surface encloses exactly the solid cells
    assert signed_volume(mr.verts, mr.faces) == pytest.approx(float(rnd.sum()) / 16 ** 3, rel=1e-5)
    assert cubify(torch.zeros(4, 4, 4)).num_faces == 0


def test_surface_samples_lie_on_the_surface_in_proportion_to_area():
    verts, faces = box_mesh(hi=(0.5, 0.5, 1.5))  # 1 x 1 x 2: two faces of area 1, four of area 2
    pts, nrm = sample_surface(verts, faces, 20000, torch.Generator().manual_seed(0), return_normals=True)
    on_face = ((pts[:, :2].abs() - 0.5).abs() < 1e-5).any(-1) | ((pts[:, 2] + 0.5).abs() < 1e-5) | \
        ((pts[:, 2] - 1.5).abs() < 1e-5)
    assert bool(on_face.all())
    top = float(((pts[:, 2] - 1.5).abs() < 1e-5).float().mean())
    assert top == pytest.approx(1 / 10, abs=0.01)
    assert bool(((nrm[:, 2] > 0.99) == ((pts[:, 2] - 1.5).abs() < 1e-5)).all())  # normals face out
    batch = sample_surface(icosphere(2).verts[None].repeat(3, 1, 1), icosphere(2).faces, 100)
    assert batch.shape == (3, 100, 3)
    assert torch.allclose(voxelize_points(torch.tensor([[0.01, -0.49, 0.49]]), 4).nonzero(),
                          torch.tensor([[2, 0, 3]]))


def test_carving_a_sphere_and_open_boxes():
    cams = carving_cameras(24, size=96)
    s = icosphere(3, 0.35)
    centers = cell_centers(24).reshape(-1, 3)
    inside = CarvedVolume(s.verts, s.faces, cams).inside(centers)
    r = centers.norm(dim=-1)  # within about a pixel (0.014 here) of the true surface
    assert bool(inside[r < 0.335].all()) and not bool(inside[r > 0.365].any())
    assert float(voxel_iou(inside[None], (r < 0.35)[None])) > 0.93
    # A box open at the bottom is solid (no camera sees under the floor); open at the top, it is hollow.
    v, f = box_mesh((-0.3, -0.3, -0.3), (0.3, 0.3, 0.3), drop=("bottom",))
    assert bool(CarvedVolume(v, f, cams).inside(torch.zeros(1, 3)))
    v, f = box_mesh((-0.3, -0.3, -0.3), (0.3, 0.3, 0.3), drop=("top",))
    assert not bool(CarvedVolume(v, f, cams).inside(torch.zeros(1, 3)))
    # A single thin quad is carved away by every camera, but its cells come back from the surface samples.
    quad_v = torch.tensor([[-0.4, -0.4, 0.01], [0.4, -0.4, 0.01], [0.4, 0.4, 0.01], [-0.4, 0.4, 0.01]])
    quad_f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    occ = occupancy_grid(quad_v, quad_f, 16)
    assert occ[:, :, 8].sum() >= 12 * 12 and occ.sum() == occ[:, :, 8].sum()


def test_nearest_on_a_cpu_in_cache_sized_blocks_finds_the_same_neighbours():
    """The CPU default splits 2048 x 4096 points (2^23 distances) into blocks of 2^20: the same indices as one
    block (ties, if any, resolve alike: each block keeps every y)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(1, 2048, 3, generator=g), torch.rand(1, 4096, 3, generator=g)
    assert torch.equal(nearest(x, y), nearest(x, y, 1 << 26))
