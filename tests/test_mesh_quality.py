"""Mesh quality metrics and the mesh head's regularisers against closed forms (issue 21): normal consistency
with the true surface, self-intersections, edge-length spread; Laplacian, normal-consistency and edge losses."""
import math

import pytest
import torch

from pipelines.core.shape_losses import (edge_face_pairs, edge_length_spread, edge_loss, laplacian_smoothing,
                                         normal_consistency, self_intersecting_faces, self_intersection_fraction,
                                         surface_normal_consistency, triangles_intersect, uniform_laplacian)
from pipelines.core.shapes import icosphere, mesh_edges, sample_surface


def sphere_points(n, seed=0):
    """(n, 3) points uniform on the unit sphere and their true normals (the points themselves)."""
    p = torch.nn.functional.normalize(torch.randn(n, 3, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return p, p.clone()


def test_normal_consistency_of_a_sphere_with_itself_is_one_and_ignores_orientation():
    ico = icosphere(4)
    pts, nrm = sample_surface(ico.verts, ico.faces, 2048, torch.Generator().manual_seed(0), return_normals=True)
    gt, gt_n = sphere_points(4096)
    score = float(surface_normal_consistency(pts[None], nrm[None], gt[None], gt_n[None]))
    assert score == pytest.approx(1.0, abs=3e-3)  # faceted sphere against the true one
    flipped = float(surface_normal_consistency(pts[None], -nrm[None], gt[None], gt_n[None]))
    assert flipped == pytest.approx(score, abs=1e-6)  # |cos|: an inside-out sphere is as consistent
    exact = float(surface_normal_consistency(gt[None], gt_n[None], gt[None], -gt_n[None]))
    assert exact == pytest.approx(1.0, abs=1e-6)
    # Normals turned into the tangent plane (perpendicular to the truth) score 0; random ones about 1/2.
    tangent = torch.nn.functional.normalize(torch.linalg.cross(gt_n, torch.tensor([[0.3, 0.5, 0.8]]).expand_as(gt_n),
                                                               dim=-1), dim=-1)
    assert float(surface_normal_consistency(gt[None], tangent[None], gt[None], gt_n[None])) < 1e-5
    rand = torch.nn.functional.normalize(torch.randn(4096, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    assert float(surface_normal_consistency(gt[None], rand[None], gt[None], gt_n[None])) == pytest.approx(0.5, abs=0.02)


def test_triangle_pairs_cross_or_not():
    t = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    crossing = torch.tensor([[0.2, 0.2, -0.5], [0.2, 0.2, 0.5], [0.9, -0.5, 0.0]])  # pierces t's interior
    apart = t + torch.tensor([0.0, 0.0, 1.0])  # parallel, one unit above
    beside = torch.tensor([[2.0, 0, -1], [2, 0, 1], [3, 1, 0]])  # on t's plane's far side of x = 1
    shares_edge = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 0.5]])  # folds along t's edge
    a = torch.stack([t, t, t, t, crossing])
    b = torch.stack([crossing, apart, beside, shares_edge, t])
    assert triangles_intersect(a, b).tolist() == [True, False, False, False, True]
    # As a mesh: the crossing pair's faces are flagged; faces sharing an edge or a vertex never count.
    verts = torch.cat([t, crossing, shares_edge[2:], apart])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [1, 2, 6], [7, 8, 9]])
    assert self_intersecting_faces(verts, faces).tolist() == [True, True, False, False]
    assert float(self_intersection_fraction(verts, faces)) == pytest.approx(0.5)


def test_self_intersections_of_a_sphere_and_a_folded_one():
    ico = icosphere(4, 0.4)  # 2562 vertices, 5120 faces
    assert float(self_intersection_fraction(ico.verts, ico.faces)) == 0.0
    # Radial spikes keep a star-shaped surface embedded; pushing vertices through the far side does not.
    g = torch.Generator().manual_seed(0)
    spiky = ico.verts * (1 + torch.rand(len(ico.verts), 1, generator=g))
    assert float(self_intersection_fraction(spiky, ico.faces)) == 0.0
    folded = ico.verts.clone()
    cap = ico.verts[:, 2] > 0.35
    folded[cap, 2] = -0.6  # the top cap pushed down through the bottom: its faces cross the sphere's lower half
    frac = float(self_intersection_fraction(torch.stack([ico.verts, folded]), ico.faces)[1])
    assert 0.01 < frac < 0.5


def test_edge_length_spread_of_a_regular_and_a_jittered_icosphere():
    ico = icosphere(4, 0.4)
    edges = mesh_edges(ico.faces)
    regular = float(edge_length_spread(ico.verts, edges))
    assert regular < 0.1  # the subdivided icosahedron's edges differ by a few per cent
    assert float(edge_length_spread(ico.verts * 3, edges)) == pytest.approx(regular, rel=1e-5)  # scale-free
    jitter = ico.verts + 0.01 * torch.randn(ico.verts.shape, generator=torch.Generator().manual_seed(0))
    assert float(edge_length_spread(jitter, edges)) > 3 * regular
    two = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0]])  # lengths 1 and 2: std (unbiased) / mean = 0.7071 / 1.5
    assert float(edge_length_spread(two, torch.tensor([[0, 1], [1, 2]]))) == pytest.approx(math.sqrt(0.5) / 1.5)


def grid_mesh(n=6):
    """A flat, regular n x n triangulated grid in z = 0 (unit spacing): (verts, faces)."""
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2)
    verts = torch.cat([ij.float(), torch.zeros(n * n, 1)], -1)
    q = torch.tensor([[i * n + j, (i + 1) * n + j, (i + 1) * n + j + 1, i * n + j + 1]
                      for i in range(n - 1) for j in range(n - 1)])
    return verts, torch.cat([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])


def interior_pairs(faces):
    """The face pairs across each interior edge of an open mesh (edges shared by two faces)."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
    face_of = torch.arange(3 * len(faces)) % len(faces)
    pairs = {}
    for k, (a, b) in enumerate(e.tolist()):
        pairs.setdefault((a, b), []).append(int(face_of[k]))
    return torch.tensor([p for p in pairs.values() if len(p) == 2])


def test_regularisers_are_zero_on_a_flat_grid_and_rise_with_a_spike():
    n = 6
    verts, faces = grid_mesh(n)
    edges, pairs = mesh_edges(faces), interior_pairs(faces)
    interior = torch.zeros(n, n, dtype=torch.bool)
    interior[1:-1, 1:-1] = True
    interior = interior.reshape(-1)
    assert float(normal_consistency(verts, faces, pairs)) < 1e-7
    assert float(uniform_laplacian(verts, edges)[0][interior].norm(dim=-1).max()) < 1e-6
    spike = verts.clone()
    c = (n // 2) * n + n // 2  # an interior vertex pulled up by 2 (edge length 1)
    spike[c, 2] = 2.0
    lap = uniform_laplacian(spike, edges)[0].norm(dim=-1)
    assert float(lap[c]) == pytest.approx(2.0, abs=1e-6)  # its neighbours are flat: mean - v = (0, 0, -2)
    assert float(laplacian_smoothing(spike, edges)) > float(laplacian_smoothing(verts, edges)) + 2.0 / n ** 2
    assert float(normal_consistency(spike, faces, pairs)) > 0.05
    assert float(edge_loss(spike, edges)) > float(edge_loss(verts, edges))
    # The spike's gradients pull it back down: each regulariser's descent direction lowers the tip.
    for loss in (lambda v: laplacian_smoothing(v, edges), lambda v: normal_consistency(v, faces, pairs),
                 lambda v: edge_loss(v, edges)):
        v = spike.clone().requires_grad_(True)
        loss(v).backward()
        assert float(v.grad[c, 2]) > 0


def test_regularisers_on_the_template_sphere_are_small_against_a_crumpled_one():
    ico = icosphere(3, 0.4)
    edges, pairs = mesh_edges(ico.faces), edge_face_pairs(ico.faces)
    crumpled = ico.verts + 0.03 * torch.randn(ico.verts.shape, generator=torch.Generator().manual_seed(0))
    for loss in (lambda v: laplacian_smoothing(v, edges), lambda v: normal_consistency(v, ico.faces, pairs),
                 lambda v: edge_length_spread(v, edges)):
        assert float(loss(crumpled)) > 3 * float(loss(ico.verts))


def test_training_loss_adds_each_mesh_regulariser_with_its_weight():
    from pipelines.core.single_view_net import SingleViewModel
    from pipelines.core.single_view_losses import training_losses as _losses
    from pipelines.single_view import SingleViewConfig

    model = SingleViewModel(width=8, hidden=16, n_points=32, ico_level=2, image_size=32)
    verts = model.template_verts + 0.02 * torch.randn(2, len(model.template_verts), 3,
                                                      generator=torch.Generator().manual_seed(0))
    pts = torch.rand(2, 64, 3, generator=torch.Generator().manual_seed(1)) - 0.5
    cfg = SingleViewConfig(gt_points=64)
    assert cfg.w_laplacian > 0 and cfg.w_edge > 0 and cfg.w_normal > 0  # all three on by default
    parts = _losses({"mesh": verts}, pts, pts, model, cfg, torch.Generator().manual_seed(2))
    assert {"mesh_cd", "laplacian", "edge", "normal"} <= set(parts)
    total = parts["mesh_cd"] + cfg.w_laplacian * parts["laplacian"] + cfg.w_edge * parts["edge"] + \
        cfg.w_normal * parts["normal"]
    assert float(parts["loss"]) == pytest.approx(float(total), rel=1e-6)
    off = SingleViewConfig(gt_points=64, w_laplacian=0.0, w_edge=0.0, w_normal=0.0)
    bare = _losses({"mesh": verts}, pts, pts, model, off, torch.Generator().manual_seed(2))
    assert float(bare["loss"]) == pytest.approx(float(parts["mesh_cd"]), rel=1e-6)
    # mesh_reg_end: the regularisers' weights go linearly from 1x at the start to that share at the end.
    decay = SingleViewConfig(gt_points=64, mesh_reg_end=0.1)
    for progress, share in ((0.0, 1.0), (0.5, 0.55), (1.0, 0.1)):
        at = _losses({"mesh": verts}, pts, pts, model, decay, torch.Generator().manual_seed(2), progress)
        assert float(at["loss"] - at["mesh_cd"]) == pytest.approx(share * float(total - parts["mesh_cd"]), rel=1e-5)
