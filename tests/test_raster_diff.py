"""The differentiable side of the rasterizer: batched cameras against one-at-a-time, a cube's depth and normals
against ray-box intersection, a sphere's silhouette against the analytic disc in every view, edge
antialiasing (coverage, and silhouette gradients against finite differences), the sort-free interpolate
backward, and face adjacency."""
from __future__ import annotations

import math

import pytest
import torch

from pipelines.core.cameras import Camera, look_at, orbit_cameras
from pipelines.core.raster import (antialias, face_neighbours, face_normals, interpolate, project, rasterize)

# A cube [-1, 1]^3: 8 corners (bit i of the index is the sign of axis i), 12 triangles wound outwards.
CUBE_VERTS = torch.tensor([[(i >> k & 1) * 2.0 - 1.0 for k in range(3)] for i in range(8)])
CUBE_FACES = torch.tensor([[0, 2, 3], [0, 3, 1], [4, 5, 7], [4, 7, 6], [0, 1, 5], [0, 5, 4],
                           [2, 6, 7], [2, 7, 3], [0, 4, 6], [0, 6, 2], [1, 3, 7], [1, 7, 5]])


def _rays(cam: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) world directions with camera-space z = -1 (so the ray parameter is the depth) and origin."""
    j, i = torch.meshgrid(torch.arange(cam.height) + 0.5, torch.arange(cam.width) + 0.5, indexing="ij")
    d = torch.stack([(i - cam.cx) / cam.fx, -(j - cam.cy) / cam.fy, -torch.ones_like(i)], -1)
    return d @ cam.c2w[:3, :3].T, cam.position


def test_cube_faces_are_outward():
    tri = CUBE_VERTS[CUBE_FACES]
    assert (face_normals(CUBE_VERTS, CUBE_FACES) * tri.mean(1)).sum(-1).min() > 0.5
    assert (face_neighbours(CUBE_FACES) >= 0).all()  # closed


def test_cube_depth_and_normals_match_ray_box_intersection():
    eyes = torch.tensor([[3.0, -4.0, 2.5], [-4.5, 1.0, -2.0], [0.5, 0.3, 5.0]])
    cams = [Camera.from_fov(c, math.radians(50), 40, 32) for c in look_at(eyes)]
    frags = rasterize(CUBE_VERTS, CUBE_FACES, cams)
    assert frags.face_idx.shape == (3, 32, 40) and frags.bary.shape == (3, 32, 40, 3)
    # A closed, outward-wound mesh: culling back faces changes nothing; culling the inside-out mesh shows the
    # far side of the box instead.
    assert torch.equal(rasterize(CUBE_VERTS, CUBE_FACES, cams, cull_backfaces=True).face_idx, frags.face_idx)
    far = rasterize(CUBE_VERTS, CUBE_FACES.flip(1), cams, cull_backfaces=True)
    gap = far.depth[far.mask] - frags.depth[frags.mask]
    assert torch.equal(far.mask, frags.mask) and gap.min() > -1e-5 and gap.mean() > 1.0
    normals = face_normals(CUBE_VERTS, CUBE_FACES)[frags.face_idx.clamp_min(0)]
    for b, cam in enumerate(cams):
        d, o = _rays(cam)
        # Slabs: the ray enters the box at t_near = max over axes of the entry parameter; the axis that
        # attains it is the face hit, whose outward normal is -sign(d) along that axis.
        t1, t2 = (-1 - o) / d, (1 - o) / d
        t_near, axis = torch.minimum(t1, t2).max(-1)
        hit = t_near < torch.maximum(t1, t2).min(-1).values
        margin = (torch.minimum(t1, t2).sort(-1).values[..., 1:].diff(dim=-1)[..., 0]).abs() > 1e-3
        assert frags.mask[b].sum() > 100 and (frags.mask[b] == hit)[margin].all()
        m = hit & frags.mask[b]
        assert torch.allclose(frags.depth[b][m], t_near[m], rtol=1e-4)
        expected = torch.zeros(*axis.shape, 3).scatter_(-1, axis[..., None], 1.0)
        expected = expected * -torch.sign(d.gather(-1, axis[..., None]))
        assert torch.allclose(normals[b][m], expected[m], atol=1e-5)
        # Interpolated world positions lie on the box at the reported depth along each ray.
        pos = interpolate(CUBE_VERTS, CUBE_FACES, frags)[b]
        assert torch.allclose(pos[m], (o + t_near[..., None] * d)[m], atol=1e-4)


def test_batched_cameras_match_one_at_a_time():
    trimesh = pytest.importorskip("trimesh")
    ico = trimesh.creation.icosphere(subdivisions=2)
    verts = torch.tensor(ico.vertices, dtype=torch.float32)
    verts = (verts * torch.tensor([1.0, 0.7, 0.5])).requires_grad_(True)
    faces = torch.tensor(ico.faces)
    cams = orbit_cameras(3, 3.0, 20.0, 40.0, 24, 20)
    attr = torch.rand(len(verts), 4)
    frags = rasterize(verts, faces, cams)
    intrinsics = [getattr(cams[0], k) for k in ("fx", "fy", "cx", "cy", "width", "height")]
    stacked = rasterize(verts, faces, Camera(torch.stack([c.c2w for c in cams]), *intrinsics))
    assert torch.equal(stacked.face_idx, frags.face_idx)
    out = interpolate(attr, faces, frags)
    uv, depth = project(verts, cams)
    assert uv.shape == (3, len(verts), 2) and depth.shape == (3, len(verts))
    for b, cam in enumerate(cams):
        one = rasterize(verts, faces, cam, max_pairs=97)  # chunking must not matter either
        assert torch.equal(one.face_idx, frags.face_idx[b])
        assert torch.allclose(one.depth[one.mask], frags.depth[b][one.mask])
        assert torch.allclose(one.bary, frags.bary[b], atol=1e-6)
        assert torch.allclose(interpolate(attr, faces, one), out[b], atol=1e-6)
        assert torch.allclose(project(verts, cam)[0], uv[b])
    out.sum().backward()
    assert verts.grad is not None and torch.isfinite(verts.grad).all()


def test_sphere_silhouette_matches_analytic_disc_in_every_view():
    """A fine icosphere (its rim faces are slivers thinner than a pixel) from 4 views: the z-buffer mask and
    the antialiased coverage against the analytic disc, the latter box-filtered by 16x16 supersampling."""
    trimesh = pytest.importorskip("trimesh")
    ico = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    verts, faces = torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces)
    dist, size, ss = 3.5, 128, 16
    cams = orbit_cameras(4, dist, 30.0, 45.0, size, start_azimuth_deg=10.0)
    frags = rasterize(verts, faces, cams)
    alpha = antialias(frags.mask[..., None].float(), frags, project(verts, cams)[0], faces)[..., 0]
    radius = cams[0].fx * math.tan(math.asin(1.0 / dist))  # the projected disc of a centred sphere
    v, u = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    disc = (u - size / 2) ** 2 + (v - size / 2) ** 2 <= radius ** 2
    o = (torch.arange(size * ss) + 0.5) / ss
    v, u = torch.meshgrid(o, o, indexing="ij")
    fine = ((u - size / 2) ** 2 + (v - size / 2) ** 2 <= radius ** 2).float()
    coverage = torch.nn.functional.avg_pool2d(fine[None, None], ss)[0, 0]
    edge = (coverage > 0) & (coverage < 1)
    for b in range(4):
        iou = (frags.mask[b] & disc).sum() / (frags.mask[b] | disc).sum()
        assert iou > 0.98
        err_aa = (alpha[b] - coverage)[edge].abs().mean()
        err_hard = (frags.mask[b].float() - coverage)[edge].abs().mean()
        assert err_aa < 0.7 * err_hard  # measured 0.11 against 0.21 (0.20 with nvdiffrast's rings=0)
        assert alpha[b].sum().item() == pytest.approx(math.pi * radius ** 2, rel=0.01)
    assert frags.depth[:, size // 2, size // 2].sub(dist - 1.0).abs().max() < 0.02


def test_antialias_coverage_is_closer_to_the_true_coverage():
    """A 24-gon (a disc of large faces) on the screen: antialiased alpha against 16x16 supersampling."""
    size, n = 32, 24
    cam = Camera(torch.eye(4), 16.0, 16.0, 16.0, 16.0, size, size)
    ang = torch.arange(n) * (2 * math.pi / n) + 0.1
    ring = torch.stack([ang.cos() * 0.8 + 0.03, ang.sin() * 0.8 - 0.02, torch.full((n,), -2.0)], -1)
    verts = torch.cat([torch.tensor([[0.03, -0.02, -2.0]]), ring])
    faces = torch.stack([torch.zeros(n, dtype=torch.long), 1 + torch.arange(n), 1 + (torch.arange(n) + 1) % n], -1)
    frags = rasterize(verts, faces, cam)
    alpha = antialias(frags.mask[..., None].float(), frags, project(verts, cam)[0], faces)[..., 0]
    uv = project(verts, cam)[0]
    truth = rasterize(verts, faces, cam.scaled(16)).mask.float()
    truth = torch.nn.functional.avg_pool2d(truth[None, None], 16)[0, 0]
    edge = (truth > 0) & (truth < 1)
    err_aa = (alpha - truth)[edge].abs().mean()
    err_hard = (frags.mask.float() - truth)[edge].abs().mean()
    assert alpha.min() >= 0 and alpha.max() <= 1 and (alpha[~edge] == frags.mask.float()[~edge]).float().mean() > 0.95
    assert err_aa < 0.5 * err_hard  # measured 0.04 against 0.20
    t = uv[faces]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    area = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs().sum()
    assert alpha.sum().item() == pytest.approx(area.item(), rel=0.01)


def _triangle_alpha(verts: torch.Tensor, cam: Camera) -> torch.Tensor:
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize(verts, faces, cam)
    return antialias(frags.mask[..., None].to(verts.dtype), frags, project(verts, cam)[0], faces)[..., 0]


def test_silhouette_gradient_matches_finite_differences():
    """A vertex of a triangle moving across the image: the loss against a target silhouette where that
    vertex sits 1.5 px further right. Only antialias gives the silhouette a gradient."""
    cam = Camera(torch.eye(4), 20.0, 20.0, 16.0, 16.0, 32, 32)
    px = lambda u, v, d: [(u - 16) / 20 * d, -(v - 16) / 20 * d, -d]  # noqa: E731  pixel (u, v) at depth d
    verts = torch.tensor([px(5.3, 4.7, 2.0), px(27.2, 9.1, 2.5), px(11.6, 26.8, 3.0)])
    shift = torch.zeros(3, 3)
    shift[2, 0] = 1.5 / 20 * 3.0  # 1.5 px to the right at depth 3
    target = rasterize(verts + shift, torch.tensor([[0, 1, 2]]), cam).mask.float()
    loss = lambda v: ((_triangle_alpha(v, cam) - target) ** 2).sum()  # noqa: E731
    x = verts.clone().requires_grad_(True)
    loss(x).backward()
    for c in range(2):  # x and y of the moving vertex
        h = 0.6 / 20 * 3.0  # 0.6 px: enough to cross pixel centres, so the finite difference sees coverage
        e = torch.zeros(3, 3)
        e[2, c] = h
        fd = (loss(verts + e) - loss(verts - e)).item() / (2 * h)
        g = x.grad[2, c].item()
        assert abs(g) > 1.0 and math.copysign(1, fd) == math.copysign(1, g)
        assert 0.5 < fd / g < 2.0
    assert x.grad[2, 0] < 0  # moving right, towards the target, lowers the loss
    # Without antialias the silhouette is a step: no gradient reaches the vertices.
    y = verts.clone().requires_grad_(True)
    frags = rasterize(y, torch.tensor([[0, 1, 2]]), cam)
    assert not frags.mask.float().requires_grad


def test_closed_mesh_silhouette_gradient_matches_projected_area():
    """A cube scaled by s (its silhouette edges lie between front and back faces): d(sum alpha)/ds from
    autograd against a central difference."""
    cam = Camera.from_fov(look_at(torch.tensor([3.0, -4.0, 2.5])), math.radians(40), 48, 48)

    def coverage(s):
        v = CUBE_VERTS * s
        frags = rasterize(v, CUBE_FACES, cam)
        return antialias(frags.mask[..., None].float(), frags, project(v, cam)[0], CUBE_FACES).sum()

    s = torch.tensor(0.8, requires_grad=True)
    coverage(s).backward()
    h = 0.02
    fd = (coverage(torch.tensor(0.8 + h)) - coverage(torch.tensor(0.8 - h))).item() / (2 * h)
    assert s.grad.item() > 0 and 0.8 < s.grad.item() / fd < 1.25


def test_fine_sphere_silhouette_gradient_is_complete():
    """A 5k-face sphere scaled by s at 256 px: d(sum of antialiased alpha)/ds from autograd against a central
    difference. With nvdiffrast's own-face rule (rings=0) most rim pixels see no silhouette edge (the rim
    faces are slivers between pixel centres) and the gradient is a small fraction of the true one."""
    trimesh = pytest.importorskip("trimesh")
    ico = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    verts, faces = torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces)
    cams = orbit_cameras(1, 3.5, 30.0, 45.0, 256, start_azimuth_deg=10.0)

    def coverage(s, rings):
        v = verts * s
        frags = rasterize(v, faces, cams)
        return antialias(frags.mask[..., None].float(), frags, project(v, cams)[0], faces, rings=rings).sum()

    h = 0.02
    fd = (coverage(torch.tensor(0.9 + h), 4) - coverage(torch.tensor(0.9 - h), 4)).item() / (2 * h)
    ratios = []
    for rings in (0, 4):
        s = torch.tensor(0.9, requires_grad=True)
        coverage(s, rings).backward()
        ratios.append(s.grad.item() / fd)
    assert ratios[0] < 0.3 and 0.95 < ratios[1] < 1.05  # measured 0.08 and 0.99


def test_antialias_batched_and_clip_input():
    cams = orbit_cameras(2, 4.0, 25.0, 40.0, 24)
    frags = rasterize(CUBE_VERTS, CUBE_FACES, cams)
    color = interpolate(torch.rand(8, 3), CUBE_FACES, frags)
    uv, depth = project(CUBE_VERTS, cams)
    out = antialias(color, frags, uv, CUBE_FACES)
    assert out.shape == (2, 24, 24, 3) and (out != color).any()
    for b in range(2):  # one view at a time gives the same image
        one = rasterize(CUBE_VERTS, CUBE_FACES, cams[b])
        assert torch.allclose(antialias(color[b], one, uv[b], CUBE_FACES), out[b], atol=1e-6)
    # Homogeneous clip coordinates (x/w, y/w in [-1, 1], y up) give the same result as pixels.
    w = depth[..., None]
    clip = torch.cat([(uv[..., :1] / 12 - 1) * w, (1 - uv[..., 1:] / 12) * w, torch.zeros_like(w), w], -1)
    assert torch.allclose(antialias(color, frags, clip, CUBE_FACES), out, atol=1e-5)


def test_projection_stays_float32_under_autocast():
    verts = torch.tensor([[0.31, -0.27, -2.0], [0.5, 0.4, -3.0], [-0.6, 0.2, -2.5]])
    cam = Camera(torch.eye(4), 400.0, 400.0, 256.0, 256.0, 512, 512)
    ref = project(verts.bfloat16().float(), cam)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        uv, depth = project(verts.bfloat16(), cam)
        frags = rasterize(verts, torch.tensor([[0, 1, 2]]), cam)
    assert uv.dtype == torch.float32 and frags.bary.dtype == torch.float32
    assert (uv - ref).abs().max() < 1e-3  # bf16 inputs round the vertices, not the projection


def test_interpolate_backward_scatters_without_sorting():
    torch.manual_seed(0)
    verts = torch.randn(30, 3) * 0.5 + torch.tensor([0.0, 0.0, -3.0])
    faces = torch.randint(0, 30, (40, 3))
    cam = Camera(torch.eye(4), 8.0, 8.0, 5.0, 5.0, 10, 10)
    attr = torch.rand(30, 5, dtype=torch.float64, requires_grad=True)
    frags = rasterize(verts, faces, cam)
    assert frags.mask.sum() > 20
    frags.bary = frags.bary.double().detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: interpolate(a, faces, type(frags)(frags.face_idx, b, frags.depth)),
                                    (attr, frags.bary))
    with torch.autograd.profiler.profile() as prof:
        interpolate(attr, faces, frags).sum().backward()
    names = {e.name for e in prof.function_events}
    assert "aten::index_add_" in names and not any("sort" in n for n in names)


def test_face_neighbours():
    faces = torch.tensor([[0, 1, 2], [2, 1, 3], [3, 1, 4], [1, 0, 5], [1, 0, 6]])
    nb = face_neighbours(faces)
    # Edge (1, 2) of face 0 is shared with face 1; (0, 1) is in three faces: non-manifold, -1 like a boundary.
    assert nb[0].tolist() == [-1, 1, -1] and nb[1].tolist() == [0, 2, -1] and nb[2, 0] == 1
    assert nb[3, 0] == -1 and nb[4, 0] == -1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_batched_with_antialias_and_marching_tets():
    from pipelines.core.tets import marching_tets, tet_grid

    verts, tets = tet_grid(24)
    sdf = verts.norm(dim=-1) - 0.7 + 0.05 * torch.sin(5 * verts[:, 0])
    outs = []
    for dev in ("cpu", "cuda"):
        v = verts.to(dev).requires_grad_(True)
        points, faces = marching_tets(v, sdf.to(dev), tets.to(dev))
        cams = [c.to(dev) for c in orbit_cameras(3, 3.0, 20.0, 40.0, 96)]
        frags = rasterize(points, faces, cams, cull_backfaces=True)
        rgb = interpolate(points * 0.5 + 0.5, faces, frags)
        rgba = torch.cat([rgb, frags.mask[..., None].float()], -1)
        out = antialias(rgba, frags, project(points, cams)[0], faces)
        out.square().sum().backward()
        outs.append((points.detach().cpu(), frags.face_idx.cpu(), out.detach().cpu(), v.grad.cpu()))
    (p0, f0, o0, g0), (p1, f1, o1, g1) = outs
    assert torch.allclose(p0, p1, atol=1e-5)
    assert (f0 != f1).float().mean() < 0.002
    assert (o0 - o1).abs().mean() < 1e-3
    assert torch.allclose(g0, g1, rtol=1e-2, atol=1e-2 * g0.abs().max().item())
