"""Analytic checks of the shared 3D core: cameras, rays, sampling, compositing, encodings, occupancy, metrics,
marching cubes and exports."""
import math

import numpy as np
import pytest
import torch

from pipelines.core.cameras import Camera, look_at, orbit_cameras, random_camera
from pipelines.core.encodings import HarmonicEncoding, HashGridEncoding, SHEncoding
from pipelines.core.geometry import Mesh, evaluate_grid, marching_cubes, vertex_normals
from pipelines.core.metrics import psnr, ssim
from pipelines.core.occupancy import OccupancyGrid, render_rays
from pipelines.core.rays import camera_rays, ray_aabb
from pipelines.core.volume import (composite, composite_packed, intervals, render_hierarchical, sample_pdf,
                                   stratified_samples)


def _rays(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    o = torch.tensor([0.0, 0.0, 4.0]).expand(n, 3)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g) * 0.05 + torch.tensor([0, 0, -1.0]), dim=-1)
    return o, d


class ConstantField:
    def __init__(self, sigma, rgb):
        self.sigma, self.rgb = sigma, torch.tensor(rgb)

    def density(self, x):
        return torch.full((x.shape[0],), self.sigma)

    def __call__(self, x, d):
        return self.density(x), self.rgb.expand(x.shape[0], 3)


class SphereField:
    """Opaque ball of radius r: density 1e3 inside, colour = position-dependent so it can be checked."""

    def __init__(self, r=0.5):
        self.r = r

    def density(self, x):
        return (x.norm(dim=-1) < self.r).float() * 1e3

    def __call__(self, x, d):
        return self.density(x), torch.full_like(x, 0.25)


def test_look_at_is_rigid_and_faces_the_target():
    eye = torch.tensor([[3.0, 1.0, 2.0], [0.0, 0.0, 5.0]])
    c2w = look_at(eye)
    rot = c2w[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-5)
    assert torch.allclose(torch.det(rot), torch.ones(2), atol=1e-5)
    forward = -c2w[:, :3, 2]  # the camera looks down -z
    assert torch.allclose(forward, torch.nn.functional.normalize(-eye, dim=-1), atol=1e-5)


def test_centre_ray_points_at_origin_and_rays_are_unit():
    cam = orbit_cameras(1, 4.0, 30.0, 40.0, 33)[0]
    o, d = camera_rays(cam)
    assert torch.allclose(d.norm(dim=-1), torch.ones(33, 33), atol=1e-5)
    centre = d[16, 16]
    assert torch.allclose(centre, torch.nn.functional.normalize(-o[16, 16], dim=0), atol=1e-4)
    # Up in the image (row 0) is up in the world (+z) for an upright camera.
    assert d[0, 16, 2] > d[32, 16, 2]


def test_random_camera_ranges():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        s = random_camera(g, 16, radius=(2.0, 3.0), elevation_deg=(0.0, 30.0), fov_deg=(40.0, 50.0))
        assert 2.0 <= s.radius <= 3.0 and 0.0 <= s.elevation_deg <= 30.0
        assert s.camera.position.norm().item() == pytest.approx(s.radius, rel=1e-4)
        elev = math.degrees(math.asin(s.camera.position[2].item() / s.radius))
        assert elev == pytest.approx(s.elevation_deg, abs=1e-3)


def test_ray_aabb():
    o = torch.tensor([[0.0, 0.0, 4.0], [5.0, 5.0, 5.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    near, far, hit = ray_aabb(o, d, -1.0, 1.0)
    assert hit.tolist() == [True, False]
    assert near[0].item() == pytest.approx(3.0) and far[0].item() == pytest.approx(5.0)


def test_constant_field_composites_to_its_colour():
    o, d = _rays()
    near, far, _ = ray_aabb(o, d, -1, 1)
    t = stratified_samples(near, far, 64, perturb=True)
    field = ConstantField(50.0, [0.2, 0.4, 0.6])
    sigma, rgb = field(torch.zeros(32 * 64, 3), None)
    out = composite(sigma.reshape(32, 64), rgb.reshape(32, 64, 3), t, intervals(t, far), background=1.0)
    assert torch.allclose(out.opacity, torch.ones(32), atol=1e-6)
    assert torch.allclose(out.rgb, torch.tensor([0.2, 0.4, 0.6]).expand(32, 3), atol=1e-5)
    assert torch.allclose(out.extras["weights"].sum(-1), out.opacity)


def test_opaque_first_sample_gives_its_colour_and_empty_gives_background():
    t = torch.linspace(1, 2, 8).expand(4, 8)
    delta = torch.full((4, 8), 0.1)
    sigma = torch.zeros(4, 8)
    sigma[:2, 0] = 1e4
    rgb = torch.rand(4, 8, 3)
    out = composite(sigma, rgb, t, delta, background=torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(out.rgb[:2], rgb[:2, 0], atol=1e-5)
    assert torch.allclose(out.depth[:2], torch.ones(2))
    assert torch.allclose(out.rgb[2:], torch.tensor([0.0, 1.0, 0.0]).expand(2, 3))
    assert torch.all(out.opacity[2:] == 0)


def test_weights_sum_to_opacity_and_packed_matches_dense():
    g = torch.Generator().manual_seed(1)
    sigma = torch.rand(5, 16, generator=g) * 3
    rgb = torch.rand(5, 16, 3, generator=g)
    t = torch.sort(torch.rand(5, 16, generator=g) * 4 + 1, -1).values
    delta = intervals(t, torch.full((5,), 6.0))
    dense = composite(sigma, rgb, t, delta, background=0.3)
    assert torch.allclose(dense.extras["weights"].sum(-1), dense.opacity, atol=1e-6)
    assert torch.allclose(dense.opacity, 1 - torch.exp(-(sigma * delta).sum(-1)), atol=1e-5)
    # Packed: drop a few samples of zero density (as occupancy culling does) and leave ray 3 empty.
    keep = torch.ones(5, 16, dtype=torch.bool)
    keep[3] = False
    sigma = sigma.clone()
    sigma[3] = 0
    ray_idx = torch.arange(5)[:, None].expand(5, 16)[keep]
    packed = composite_packed(sigma[keep], rgb[keep], t[keep], delta[keep], ray_idx, 5, background=0.3)
    dense = composite(sigma, rgb, t, delta, background=0.3)
    assert torch.allclose(packed.rgb, dense.rgb, atol=1e-5)
    assert torch.allclose(packed.opacity, dense.opacity, atol=1e-5)
    assert torch.allclose(packed.rgb[3], torch.full((3,), 0.3))


def test_depth_is_divided_by_opacity_on_half_transparent_rays():
    # One sample of alpha 1/2 at t = 3: the expected distance *where the ray stops* is 3, not 1.5.
    tau = torch.full((2, 1), math.log(2.0))  # alpha = 1 - exp(-tau) = 1/2
    t = torch.tensor([[3.0], [2.0]])
    out = composite(tau, torch.zeros(2, 1, 3), t, torch.ones(2, 1), background=1.0)
    assert torch.allclose(out.opacity, torch.full((2,), 0.5))
    assert torch.allclose(out.depth, torch.tensor([3.0, 2.0]))
    # Two samples, 1/2 then 1/2 of the rest: weights 1/2 and 1/4, opacity 3/4, depth (1/2 * 1 + 1/4 * 5) / (3/4).
    tau2, t2 = torch.full((1, 2), math.log(2.0)), torch.tensor([[1.0, 5.0]])
    for out in (composite(tau2, torch.zeros(1, 2, 3), t2, torch.ones(1, 2), background=0.0),
                composite_packed(tau2[0], torch.zeros(2, 3), t2[0], torch.ones(2), torch.zeros(2, dtype=torch.long),
                                 1, background=0.0)):
        assert float(out.opacity[0]) == pytest.approx(0.75, rel=1e-6)
        assert float(out.depth[0]) == pytest.approx((0.5 * 1 + 0.25 * 5) / 0.75, rel=1e-5)


def test_sample_pdf_concentrates_where_weights_are():
    bins = torch.linspace(0, 1, 11).expand(3, 11)
    weights = torch.zeros(3, 10)
    weights[:, 7] = 1.0
    s = sample_pdf(bins, weights, 64, perturb=True)
    assert s.shape == (3, 64)
    frac_in_bin = ((s >= 0.7) & (s <= 0.8)).float().mean()
    assert frac_in_bin > 0.95
    det = sample_pdf(bins, weights, 16, perturb=False)
    assert torch.all(det[:, 1:] >= det[:, :-1])


def test_hierarchical_rendering_of_a_sphere():
    o, d = _rays(64)
    near, far, _ = ray_aabb(o, d, -1, 1)
    field = SphereField(0.5)
    fine, coarse = render_hierarchical(field, field, o, d, near, far, 32, 64, background=1.0, perturb=False)
    # Analytic ray-sphere intersection: t = -b - sqrt(b^2 - c).
    b, c = (o * d).sum(-1), (o * o).sum(-1) - 0.25
    disc = b * b - c
    closest = disc > 0.05  # rays well inside the silhouette
    t_hit = -b - disc.clamp_min(0).sqrt()
    assert closest.sum() > 5 and torch.all(fine.opacity[closest] > 0.99)
    assert torch.all(fine.opacity[disc < -0.05] < 1e-3)
    err_fine = (fine.depth - t_hit)[closest].abs().mean()
    err_coarse = (coarse.depth - t_hit)[closest].abs().mean()
    # The fine pass puts its samples near the surface, so its depth is sharper than the coarse pass's.
    assert err_fine < 0.015 and err_fine < 0.5 * err_coarse, (err_fine, err_coarse)


def test_harmonic_encoding_values():
    enc = HarmonicEncoding(3, 4)
    x = torch.tensor([[0.1, -0.2, 0.3]])
    y = enc(x)
    assert y.shape == (1, enc.out_dim) == (1, 27)
    assert torch.allclose(y[0, :3], x[0])
    assert torch.allclose(y[0, 3:15], torch.sin(x[0][:, None] * 2.0 ** torch.arange(4)).flatten())
    assert torch.allclose(y[0, 15:], torch.cos(x[0][:, None] * 2.0 ** torch.arange(4)).flatten())


def test_sh_encoding_is_orthonormal():
    d = torch.nn.functional.normalize(torch.randn(200000, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    y = SHEncoding()(d)
    gram = (y.T @ y) / len(d) * 4 * math.pi  # Monte Carlo integral over the sphere
    assert torch.allclose(gram, torch.eye(16), atol=0.05)


def _hash_reference(enc: HashGridEncoding, x: torch.Tensor) -> torch.Tensor:
    """Straightforward per-level, per-corner loop with Python integers' hash (uint32 semantics)."""
    out = []
    size = enc.mask + 1
    for lvl in range(enc.n_levels):
        r = int(enc.res[lvl])
        pos = x * r
        c = pos.floor().long().clamp(max=r - 1)
        fr = pos - c
        acc = 0
        for i in range(8):
            off = torch.tensor([i >> 2 & 1, i >> 1 & 1, i & 1])
            cc = c + off
            if lvl < enc.n_dense:
                idx = cc[:, 0] + (r + 1) * (cc[:, 1] + (r + 1) * cc[:, 2])
            else:
                idx = ((cc[:, 0] * 1) ^ (cc[:, 1] * 2654435761) ^ (cc[:, 2] * 805459861)) % size
            w = torch.where(off.bool(), fr, 1 - fr).prod(-1)
            acc = acc + enc.table[idx + int(enc.offsets[lvl])] * w[:, None]
        out.append(acc)
    return torch.cat(out, -1)


def test_hash_grid_matches_reference_and_has_gradients():
    enc = HashGridEncoding(n_levels=6, n_features=2, log2_size=10, base_res=4, max_res=128).double()
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    assert 0 < enc.n_dense < enc.n_levels  # both dense and hashed levels are exercised
    x = torch.rand(64, 3, dtype=torch.float64)
    assert torch.allclose(enc(x), _hash_reference(enc, x), atol=1e-12)
    # Analytic gradients w.r.t. the table and the input match finite differences.
    xs = (torch.rand(4, 3, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: HashGridEncodingFn(enc, t, xs), (enc.table,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda p: enc(p), (xs,), eps=1e-7, atol=1e-4)
    # Only the 8 corners of each level receive gradient from one point.
    enc.table.grad = None
    enc(torch.rand(1, 3, dtype=torch.float64)).sum().backward()
    assert int((enc.table.grad.abs().sum(-1) > 0).sum()) <= 8 * enc.n_levels


def HashGridEncodingFn(enc, table, x):
    saved = enc.table
    enc.table = torch.nn.Parameter(table) if not isinstance(table, torch.nn.Parameter) else table
    try:
        return enc(x)
    finally:
        enc.table = saved


def test_occupancy_grid_skips_empty_space():
    field = SphereField(0.5)
    grid = OccupancyGrid(bound=1.0, resolution=16)
    grid.update(field.density, step_size=0.02, step=0)
    centres = (torch.stack(torch.meshgrid(*[torch.arange(16)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) / 8 - 1
    inside, outside = centres.norm(dim=-1) < 0.4, centres.norm(dim=-1) > 0.65
    assert grid.binary[inside].all() and not grid.binary[outside].any()
    o, d = _rays(64)
    ray_idx, t = grid.march(o, d, 0.02, perturb=False)
    x = o[ray_idx] + t[:, None] * d[ray_idx]
    assert (x.norm(dim=-1) < 0.5 + 2 * math.sqrt(3) / 16).all()  # every sample lies in an occupied cell
    out = render_rays(field, grid, o, d, 0.02, background=1.0)
    hit = (o + 4.0 * d)[:, :2].norm(dim=-1) < 0.45
    assert torch.all(out.opacity[hit] > 0.99) and torch.all(out.opacity[~hit & ((o + 4 * d)[:, :2].norm(dim=-1) > 0.55)] < 1e-3)
    assert torch.allclose(out.rgb[hit], torch.full((int(hit.sum()), 3), 0.25), atol=1e-3)


def test_psnr_and_ssim():
    a = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0))
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-3)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    noisy = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
    assert ssim(a, noisy) < ssim(a, (a + 0.05 * torch.randn_like(a)).clamp(0, 1)) < 1.0


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 written out independently in float64 numpy: an 11x11 Gaussian window (sigma 1.5) slid
    over the valid region by explicit shifts, K1 = 0.01, K2 = 0.03, L = 1, averaged over channels."""
    r = np.arange(11) - 5.0
    g = np.exp(-r ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    h, wd = a.shape[0] - 10, a.shape[1] - 10

    def blur(x):
        return sum(w[i, j] * x[i:i + h, j:j + wd] for i in range(11) for j in range(11))

    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    out = []
    for c in range(a.shape[-1]):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        mx, my = blur(x), blur(y)
        vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        out.append(((2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean())
    return float(np.mean(out))


def test_ssim_matches_an_independent_implementation():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(24, 20, 3, generator=g)
    smooth = torch.nn.functional.avg_pool2d(a.permute(2, 0, 1)[None], 5, 1, 2)[0].permute(1, 2, 0)
    for b in ((a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1), smooth, 0.5 * a + 0.3):
        assert ssim(b, a) == pytest.approx(_ssim_reference(b.numpy(), a.numpy()), abs=2e-5)
    # Constant images: only the luminance term is left, (2 m n + C1) / (m^2 + n^2 + C1) with C1 = 0.01^2.
    assert ssim(torch.full((16, 16, 3), 0.2), torch.full((16, 16, 3), 0.25)) == pytest.approx(
        (2 * 0.2 * 0.25 + 1e-4) / (0.2 ** 2 + 0.25 ** 2 + 1e-4), abs=5e-5)  # float32 variances: ~1e-5 off


def test_marching_cubes_sphere_is_outward_and_round():
    sdf_in = lambda x: 0.6 - x.norm(dim=-1)  # noqa: E731  positive inside, as densities are
    grid = evaluate_grid(sdf_in, 48, -1, 1)
    mesh = marching_cubes(grid, 0.0, -1, 1)
    r = mesh.verts.norm(dim=-1)
    assert torch.allclose(r, torch.full_like(r, 0.6), atol=0.01)
    n = vertex_normals(mesh.verts, mesh.faces)
    assert (n * torch.nn.functional.normalize(mesh.verts, dim=-1)).sum(-1).mean() > 0.99  # outward
    assert marching_cubes(torch.zeros(8, 8, 8), 0.5, -1, 1).num_faces == 0


def test_exports_round_trip(tmp_path):
    import trimesh

    from pipelines.core.export import save_mesh, save_video

    verts = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float32)
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    mesh = Mesh(verts, faces, torch.tensor([[1.0, 0, 0]] * 4))
    glb = trimesh.load(save_mesh(mesh, tmp_path / "m.glb"), force="mesh")
    assert len(glb.faces) == 4 and glb.is_watertight
    assert np.allclose(glb.visual.vertex_colors[:, :3], [255, 0, 0])
    # glTF is y-up: the scene's +z axis becomes +y.
    assert np.isclose(glb.vertices[:, 1].max(), 1.0) and np.isclose(glb.vertices[:, 2].min(), -1.0)
    glb_y = trimesh.load(save_mesh(mesh, tmp_path / "y.glb", up="y"), force="mesh")  # already y-up: as it is
    assert np.allclose(sorted(map(tuple, glb_y.vertices)), sorted(map(tuple, verts.numpy())))
    obj = trimesh.load(save_mesh(mesh, tmp_path / "m.obj"), force="mesh")
    assert np.allclose(sorted(obj.vertices[:, 2]), sorted(verts[:, 2].numpy()))
    frames = [np.full((17, 21, 3), i * 20, np.uint8) for i in range(6)]
    video = save_video(frames, tmp_path / "t.mp4", fps=6)
    assert video.stat().st_size > 0


def test_camera_scaled_keeps_the_field_of_view():
    cam = Camera.from_fov(torch.eye(4), math.radians(50), 100, 80)
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (50, 40)
    assert math.atan(0.5 * half.width / half.fx) == pytest.approx(math.atan(0.5 * cam.width / cam.fx))
