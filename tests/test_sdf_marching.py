"""VolSDF by occupancy-grid marching (core/sdf_marching.py): the exact interval density, and a marched sphere that
matches the surface sampler's render and the analytic intersection."""
import math

import torch

from pipelines.core.cameras import orbit_cameras
from pipelines.core.occupancy import OccupancyGrid
from pipelines.core.rays import camera_rays, ray_aabb
from pipelines.core.sdf import LaplaceDensity, render_sdf
from pipelines.core.sdf_primitives import Primitive, PrimitiveSDF
from pipelines.core.sdf_marching import SDFRadiance, interval_density, occupancy_density, render_sdf_marched


def test_interval_density_is_the_exact_optical_depth_of_a_linear_sdf():
    dens = LaplaceDensity(beta_init=0.01, beta_min=1e-4)
    delta = 0.05  # five beta: the midpoint density is far off here
    sdf_mid = torch.linspace(-0.08, 0.08, 41, dtype=torch.float64)
    for slope in (-1.0, -0.3, 0.7):
        slopes = torch.full_like(sdf_mid, slope)
        got = interval_density(sdf_mid, slopes, delta, dens).double() * delta
        # Reference: a fine midpoint sum over the interval.
        u = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000 - 0.5
        d = sdf_mid[:, None] + slope * delta * u[None]
        ref = dens(d).mean(1) * delta
        assert torch.allclose(got, ref, rtol=1e-3, atol=1e-5), (slope, (got - ref).abs().max())
    # Where the SDF does not change along the interval (slope 0), the midpoint density.
    flat = interval_density(sdf_mid, torch.zeros_like(sdf_mid), delta, dens)
    assert torch.allclose(flat, dens(sdf_mid), rtol=1e-6)
    # Gradients reach the SDF value, the slope and beta.
    s, k = torch.tensor([0.001], requires_grad=True), torch.tensor([-1.0], requires_grad=True)
    interval_density(s, k, delta, dens).sum().backward()
    assert s.grad.abs() > 0 and k.grad.abs() > 0 and dens.b.grad.abs() > 0


def test_occupancy_density_keeps_cells_a_thin_surface_crosses():
    cell, step, threshold = 0.05, 0.01, 0.01  # the grid keeps a cell while sigma * step >= threshold
    dens = LaplaceDensity(beta_init=1e-3, beta_min=1e-4)
    probe = torch.tensor([0.04])  # a probe point most of a cell outside a sharp surface
    with torch.no_grad():
        assert float(dens(probe)) * step < threshold  # the model's own density would cull the cell
        assert float(occupancy_density(probe, dens.beta, cell)) * step >= threshold
        assert float(occupancy_density(torch.tensor([0.5]), dens.beta, cell)) * step < 1e-5  # ten cells away: empty
        assert float(occupancy_density(torch.tensor([-0.5]), dens.beta, cell)) * step >= threshold  # inside: kept


def _marched_sphere(beta: float, march_steps: int):
    cam = orbit_cameras(1, 3.0, 20.0, 40.0, 40)[0]
    center = torch.tensor([0.1, -0.1, 0.05])
    field = PrimitiveSDF([Primitive("sphere", center.tolist(), [0.6])])
    dens = LaplaceDensity(beta_init=beta, beta_min=1e-4)
    grid = OccupancyGrid(1.0, 32)
    step = 2.0 / march_steps
    for i in range(4):  # a few refreshes: all cells while warming up
        grid.update(lambda x: occupancy_density(field.sdf(x), dens.beta.detach(), 2.0 / 32), step, i)
    o, d = (t.reshape(-1, 3) for t in camera_rays(cam))
    radiance = SDFRadiance(field, dens, step)
    with torch.no_grad():
        out = render_sdf_marched(radiance, grid, o, d, 1.0, perturb=False, max_samples=4096)
    return out, o, d, center, field, dens, grid


def test_marched_sphere_matches_the_surface_sampler_and_the_intersection():
    out, o, d, center, field, dens, grid = _marched_sphere(beta=2e-3, march_steps=100)  # step 0.02 = 10 beta
    near, far, _ = ray_aabb(o, d, -1.0, 1.0)
    with torch.no_grad():
        ref = render_sdf(field, dens, o, d, near, far, 32, 32, 1.0, perturb=False)
    vol, ref_mask = out.opacity > 0.5, ref.opacity > 0.5
    iou = float((vol & ref_mask).sum() / (vol | ref_mask).sum())
    assert ref_mask.sum() > 200 and iou > 0.97, iou
    oc = o - center
    b, c = (oc * d).sum(-1), (oc * oc).sum(-1) - 0.36
    inner = (b * b - c) > 0.05
    t_hit = -b - (b * b - c).clamp_min(0).sqrt()
    assert float(out.opacity[inner].min()) > 0.99
    assert float((out.depth - t_hit)[inner].abs().mean()) < 0.02  # within a step, with a step 10x beta
    expect = torch.nn.functional.normalize((o + t_hit[:, None] * d)[inner] - center, dim=-1)
    n = torch.nn.functional.normalize(out.extras["normal"][inner], dim=-1)
    assert float((n * expect).sum(-1).mean()) > 0.98
    # The march spends few samples a ray: the occupancy grid skips the empty box.
    assert out.extras["samples"] < 0.25 * len(o) * 100, out.extras["samples"]
    assert len(out.extras["grad"]) == out.extras["samples"]


def test_marched_render_trains_under_a_sample_budget():
    """With autograd on, the render keeps within max_samples, the leading rays only, and gradients reach the
    field's parameters and beta through the interval density."""
    cam = orbit_cameras(1, 3.0, 20.0, 40.0, 24)[0]
    field = PrimitiveSDF([Primitive("sphere", [0.0, 0.0, 0.0], [0.5])])
    dens = LaplaceDensity(beta_init=0.01, beta_min=1e-4)
    grid = OccupancyGrid(1.0, 16)
    step = 2.0 / 64
    grid.update(lambda x: occupancy_density(field.sdf(x), dens.beta.detach(), 2.0 / 16), step, 0)
    o, d = (t.reshape(-1, 3) for t in camera_rays(cam))
    radiance = SDFRadiance(field, dens, step, gradient="finite_difference", fd_eps=lambda: 1e-3)
    out = render_sdf_marched(radiance, grid, o, d, 0.0, perturb=True, max_samples=400)
    assert out.extras["samples"] <= 400 and out.rgb.shape[0] == out.extras["rays"] < len(o)
    (out.rgb.sum() + out.opacity.sum()).backward()
    assert dens.b.grad is not None and math.isfinite(float(dens.b.grad))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in field.parameters())


def test_geometry_and_gradient_in_one_pass_matches_separate_calls():
    from pipelines.core.sdf import NeuralSDF, fd_gradient, geometry_and_gradient, sdf_gradient

    torch.manual_seed(0)
    field = NeuralSDF(1.5, "hash", width=16, depth=2, feature_dim=4, hash_levels=4, hash_log2_size=10)
    x = (torch.rand(50, 3) * 2 - 1) * 1.2
    sdf, feat, grad = geometry_and_gradient(field, x, "finite_difference", 1e-3)
    ref_sdf, ref_feat = field.geometry(x)
    assert torch.allclose(sdf, ref_sdf, atol=1e-6) and torch.allclose(feat, ref_feat, atol=1e-6)
    assert torch.allclose(grad, fd_gradient(field.sdf, x, 1e-3), atol=1e-5)
    assert sdf.requires_grad and grad.requires_grad  # trains the field to first order
    with torch.no_grad():
        sdf_a, _, grad_a = geometry_and_gradient(field, x, "analytic")
    assert not sdf_a.requires_grad and not grad_a.requires_grad
    assert torch.allclose(grad_a, sdf_gradient(field.sdf, x), atol=1e-6)
