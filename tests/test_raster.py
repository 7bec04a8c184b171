"""Analytic checks of the PyTorch rasterizer: coverage, perspective-correct barycentrics and depth, a sphere's
silhouette against its projected disc, z-buffer order, culling, chunking, gradients and shading."""
from __future__ import annotations

import math

import pytest
import torch

from pipelines.core.cameras import Camera, look_at
from pipelines.core.geometry import Mesh
from pipelines.core.raster import interpolate, project, rasterize, render_mesh

W = H = 16
FX = 10.0


def _camera(width: int = W, height: int = H, c2w: torch.Tensor | None = None, fx: float = FX) -> Camera:
    """At the origin looking down -z unless ``c2w`` says otherwise."""
    return Camera(torch.eye(4) if c2w is None else c2w, fx, fx, width / 2, height / 2, width, height)


def _unproject(uv: list[list[float]], depth: list[float], cam: Camera) -> torch.Tensor:
    """Camera-space points at pixel coordinates (u, v) and depths, for a camera at the origin."""
    uv_t, d = torch.tensor(uv), torch.tensor(depth)
    x = (uv_t[:, 0] - cam.cx) / cam.fx * d
    y = -(uv_t[:, 1] - cam.cy) / cam.fy * d
    return torch.stack([x, y, -d], -1)


def _pixel_centres(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    v, u = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return u, v


def test_single_triangle_covers_expected_pixels():
    cam = _camera()
    # A right triangle with corners at pixel coordinates (2.2, 2.2), (14.1, 2.2), (2.2, 14.1): no pixel
    # centre lies on its edges, so coverage is exact.
    verts = _unproject([[2.2, 2.2], [14.1, 2.2], [2.2, 14.1]], [2.0, 2.0, 2.0], cam)
    frags = rasterize(verts, torch.tensor([[0, 1, 2]]), cam)
    u, v = _pixel_centres(W, H)
    expected = (u >= 2.2) & (v >= 2.2) & (u + v <= 16.3)
    assert torch.equal(frags.mask, expected)
    assert torch.equal(frags.face_idx[~expected], torch.full(((~expected).sum(),), -1))
    assert torch.allclose(frags.depth[expected], torch.full((int(expected.sum()),), 2.0))
    assert torch.isinf(frags.depth[~expected]).all()
    assert torch.allclose(frags.bary[expected].sum(-1), torch.ones(int(expected.sum())))
    assert (frags.bary[expected] >= -1e-6).all() and (frags.bary[~expected] == 0).all()
    # Same result for the other winding: both sides of a face are drawn.
    assert torch.equal(rasterize(verts, torch.tensor([[0, 2, 1]]), cam).mask, expected)


def test_vertex_projection_convention():
    """u = cx + fx x / -z, v = cy - fy y / -z: +y in camera space is up the image (smaller v)."""
    cam = _camera()
    uv, depth = project(torch.tensor([[0.0, 0.0, -2.0], [1.0, 1.0, -2.0]]), cam)
    assert torch.allclose(uv, torch.tensor([[8.0, 8.0], [13.0, 3.0]]))
    assert torch.allclose(depth, torch.tensor([2.0, 2.0]))


def test_perspective_correct_barycentrics():
    """Interpolated 3D positions of a slanted triangle lie on each pixel's ray at the reported depth."""
    cam = _camera(32, 32, fx=20.0)
    verts = _unproject([[3.1, 2.7], [29.3, 5.2], [9.4, 28.8]], [1.5, 6.0, 3.0], cam)
    frags = rasterize(verts, torch.tensor([[0, 1, 2]]), cam)
    m = frags.mask
    assert m.sum() > 150
    p = interpolate(verts, torch.tensor([[0, 1, 2]]), frags)[m]  # (P, 3) camera = world here
    u, v = _pixel_centres(32, 32)
    assert torch.allclose(-p[:, 2], frags.depth[m], rtol=1e-5)
    assert torch.allclose(cam.cx + cam.fx * p[:, 0] / -p[:, 2], u[m], atol=1e-3)
    assert torch.allclose(cam.cy - cam.fy * p[:, 1] / -p[:, 2], v[m], atol=1e-3)


def test_plane_depth():
    """A fronto-parallel plane at distance 3 reads depth 3; a tilted plane matches ray-plane intersection."""
    cam = _camera(24, 20, c2w=look_at(torch.tensor([0.0, -5.0, 0.0]), up=torch.tensor([0.0, 0.0, 1.0])))
    quad = torch.tensor([[0, 1, 2], [0, 2, 3]])
    # World plane y = -2 (3 in front of the camera at y = -5 looking towards +y), much larger than the view.
    plane = torch.tensor([[-9.0, -2.0, -9.0], [9.0, -2.0, -9.0], [9.0, -2.0, 9.0], [-9.0, -2.0, 9.0]])
    frags = rasterize(plane, quad, cam)
    assert frags.mask.all() and torch.allclose(frags.depth, torch.full((20, 24), 3.0), atol=1e-5)
    # Tilted plane through (0, 0, 0) with normal n: along the ray eye + t d (d has camera-z component -1),
    # depth = t = n.(p0 - eye) / n.d.
    n = torch.nn.functional.normalize(torch.tensor([0.0, -1.0, 0.8]), dim=0)
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.linalg.cross(n, torch.tensor([1.0, 0.0, 0.0]))
    tilted = torch.stack([-9 * a - 4 * b, 9 * a - 4 * b, 9 * a + 4 * b, -9 * a + 4 * b])  # all in front
    frags = rasterize(tilted, quad, cam)
    m = frags.mask
    u, v = _pixel_centres(24, 20)
    d_cam = torch.stack([(u - cam.cx) / cam.fx, -(v - cam.cy) / cam.fy, -torch.ones_like(u)], -1)
    d_world = d_cam @ cam.c2w[:3, :3].T
    t = (n @ (torch.zeros(3) - cam.position)) / (d_world @ n)
    assert m.float().mean() > 0.5 and torch.allclose(frags.depth[m], t[m], rtol=1e-4)
    assert (frags.depth[m].amax() - frags.depth[m].amin()) > 1.0  # really tilted


def test_sphere_silhouette_matches_projected_disc():
    trimesh = pytest.importorskip("trimesh")
    ico = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    verts, faces = torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces)
    dist = 4.0
    eye = torch.tensor([2.0, -3.0, 1.5])
    eye = eye / eye.norm() * dist
    cam = Camera.from_fov(look_at(eye), math.radians(45), 96, 96)
    frags = rasterize(verts, faces, cam)
    # A sphere centred on the optical axis projects to a disc of radius f tan(asin(r / d)).
    radius = cam.fx * math.tan(math.asin(1.0 / dist))
    u, v = _pixel_centres(96, 96)
    disc = (u - cam.cx) ** 2 + (v - cam.cy) ** 2 <= radius ** 2
    iou = (frags.mask & disc).sum() / (frags.mask | disc).sum()
    assert iou > 0.97
    # Nearest-surface depth at the centre pixel is the distance to the sphere's near side.
    assert frags.depth[48, 48] == pytest.approx(dist - 1.0, abs=0.01)


def test_nearest_face_wins_and_chunking_is_exact():
    cam = _camera()
    far = _unproject([[0, 0], [40, 0], [0, 40]], [5.0] * 3, cam)  # covers the whole view
    near = _unproject([[4.2, 4.2], [12.1, 4.2], [4.2, 12.1]], [2.0] * 3, cam)
    u, v = _pixel_centres(W, H)
    in_near = (u >= 4.2) & (v >= 4.2) & (u + v <= 16.3)
    for order in ([far, near], [near, far]):  # whichever is listed first, the nearer face wins
        frags = rasterize(torch.cat(order), torch.tensor([[0, 1, 2], [3, 4, 5]]), cam)
        near_idx = 1 if order[1] is near else 0
        assert frags.mask.all()
        assert (frags.face_idx[in_near] == near_idx).all() and (frags.face_idx[~in_near] == 1 - near_idx).all()
        assert (frags.depth[in_near] - 2.0).abs().max() < 1e-5 and (frags.depth[~in_near] - 5.0).abs().max() < 1e-5
    tiny = rasterize(torch.cat(order), torch.tensor([[0, 1, 2], [3, 4, 5]]), cam, max_pairs=37)  # many chunks
    assert torch.equal(tiny.face_idx, frags.face_idx) and torch.equal(tiny.depth, frags.depth)


def test_faces_behind_camera_are_culled():
    cam = _camera()
    behind = torch.tensor([[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0]])
    straddling = torch.tensor([[-1.0, -1.0, -2.0], [1.0, -1.0, -2.0], [0.0, 1.0, 1.0]])
    for tri in (behind, straddling):
        frags = rasterize(tri, torch.tensor([[0, 1, 2]]), cam)
        assert not frags.mask.any()
    empty = rasterize(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), cam)
    assert empty.face_idx.shape == (H, W) and not empty.mask.any()


def test_interpolate_gradients():
    cam = _camera()
    verts = _unproject([[2.2, 2.2], [14.1, 2.2], [2.2, 14.1]], [2.0, 3.0, 4.0], cam).requires_grad_(True)
    faces = torch.tensor([[0, 1, 2]])
    attr = torch.rand(3, 4, requires_grad=True)
    frags = rasterize(verts, faces, cam)
    out = interpolate(attr, faces, frags)
    assert out.shape == (H, W, 4) and (out[~frags.mask] == 0).all()
    (out.sum() + frags.depth[frags.mask].sum()).backward()
    # d(sum of outputs)/d(attr[v, c]) is vertex v's total barycentric weight over the covered pixels.
    weight = frags.bary.detach()[frags.mask].sum(0)
    assert torch.allclose(attr.grad, weight[:, None].expand(3, 4), rtol=1e-5)
    assert verts.grad is not None and torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0


def test_render_mesh_texture_colours_and_background():
    cam = _camera()
    # A quad filling the view at depth 2, UV (0, 0) bottom-left; the texture's left half red, right blue.
    verts = _unproject([[-1, 17], [17, 17], [17, -1], [-1, -1]], [2.0] * 4, cam)
    mesh = Mesh(verts, torch.tensor([[0, 1, 2], [0, 2, 3]]))
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    texture = torch.zeros(8, 8, 3)
    texture[:, :4, 0] = 1.0
    texture[:, 4:, 2] = 1.0
    texture[:2] = 0.5  # top rows grey: v = 1 is the top of the image
    rgb, alpha = render_mesh(mesh, cam, texture=texture, uv=uv, ambient=1.0)
    assert rgb.shape == (H, W, 3) and alpha.shape == (H, W, 1) and (alpha == 1).all()
    assert torch.allclose(rgb[10, 3], torch.tensor([1.0, 0.0, 0.0]), atol=1e-4)
    assert torch.allclose(rgb[10, 12], torch.tensor([0.0, 0.0, 1.0]), atol=1e-4)
    assert torch.allclose(rgb[1, 8], torch.tensor([0.5, 0.5, 0.5]), atol=1e-4)

    # Vertex colours, a headlight facing the quad head-on (full diffuse), background elsewhere.
    small = Mesh(_unproject([[4, 12], [12, 12], [12, 4], [4, 4]], [2.0] * 4, cam), mesh.faces,
                 vert_colors=torch.tensor([[0.2, 0.4, 0.6]]).expand(4, 3))
    rgb, alpha = render_mesh(small, cam, background=torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(rgb[8, 8], torch.tensor([0.2, 0.4, 0.6]), atol=1e-3)
    assert torch.allclose(rgb[0, 0], torch.tensor([0.0, 1.0, 0.0])) and alpha[0, 0] == 0
    # Supersampling gives fractional coverage along edges and keeps the size.
    rgb4, alpha4 = render_mesh(small, cam, ssaa=4)
    assert rgb4.shape == (H, W, 3) and alpha4.sum() == pytest.approx(64.0, abs=0.5)


def _uv_sphere(n_lat: int = 24, n_lon: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """A unit UV sphere built in torch (no trimesh): (V, 3) verts, (F, 3) faces."""
    theta = torch.linspace(0, math.pi, n_lat + 1)[:, None]
    phi = torch.linspace(0, 2 * math.pi, n_lon + 1)[:-1][None]
    verts = torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos().expand(-1, n_lon)], -1)
    i, j = torch.meshgrid(torch.arange(n_lat), torch.arange(n_lon), indexing="ij")
    a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
    c, d = a + n_lon, b + n_lon
    faces = torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3), torch.stack([b, c, d], -1).reshape(-1, 3)])
    return verts.reshape(-1, 3), faces  # degenerate pole triangles are culled by the rasterizer


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    verts, faces = _uv_sphere()
    cam = Camera.from_fov(look_at(torch.tensor([0.0, -3.0, 1.0])), math.radians(50), 64, 48)
    cpu = rasterize(verts, faces, cam)
    gpu = rasterize(verts.cuda(), faces.cuda(), cam.to("cuda"))
    assert (gpu.face_idx.cpu() != cpu.face_idx).float().mean() < 0.002
    m = cpu.mask & gpu.mask.cpu()
    assert torch.allclose(gpu.depth.cpu()[m], cpu.depth[m], atol=1e-4)
    rgb, alpha = render_mesh(Mesh(verts.cuda(), faces.cuda()), cam.to("cuda"), ssaa=2)
    assert rgb.is_cuda and alpha.shape == (48, 64, 1)
