"""VolSDF's field and renderer on CPU (core/sdf.py, core/sdf_primitives.py): the Laplace density, analytic SDFs and
the primitives field, the eikonal loss, the neural SDF's starting sphere, a rendered sphere against a rasterized one, sampling near the
surface, the mesh's PSNR against the volume render, finite-difference gradients. The pipeline (runs, CLI, tab):
test_volsdf_pipeline.py."""
import math

import pytest
import torch

from pipelines.core.cameras import orbit_cameras
from pipelines.core.rays import camera_rays, ray_aabb
from pipelines.core.sdf import (LaplaceDensity, NeuralSDF, eikonal_loss, laplace_cdf, render_sdf, sdf_gradient,
                                sdf_to_density, sdf_to_mesh)
from pipelines.core.sdf_primitives import (Primitive, PrimitiveSDF, sdf_box, sdf_capsule, sdf_sphere, sdf_torus,
                                           smooth_min)


# ------------------------------------------------------------------------------------------------ density
def test_laplace_cdf_and_density():
    s = torch.linspace(-1, 1, 401, dtype=torch.float64)
    psi = laplace_cdf(s, 0.1)
    assert torch.all(psi[1:] > psi[:-1])  # strictly increasing
    assert torch.allclose(psi + laplace_cdf(-s, 0.1), torch.ones_like(s))  # symmetric about (0, 1/2)
    assert float(laplace_cdf(torch.zeros(1), 0.3)) == 0.5
    # Closed form of the Laplace CDF, both branches.
    assert torch.allclose(psi, torch.where(s <= 0, 0.5 * torch.exp(s / 0.1), 1 - 0.5 * torch.exp(-s / 0.1)))
    # Density: decreasing in d; alpha times a step as beta -> 0; alpha / 2 on the surface.
    d = torch.tensor([-0.5, -1e-3, 0.0, 1e-3, 0.5], dtype=torch.float64)
    sigma = sdf_to_density(d, 7.0, 0.05)
    assert torch.all(sigma[1:] < sigma[:-1])
    sharp = sdf_to_density(d, 7.0, 1e-6)
    assert torch.allclose(sharp, torch.tensor([7.0, 7.0, 3.5, 0.0, 0.0], dtype=torch.float64), atol=1e-6)
    errs = [float((sdf_to_density(d, 7.0, b) - 7.0 * (d < 0) - 3.5 * (d == 0)).abs().max()) for b in (0.1, 0.01, 1e-3)]
    assert errs[0] > errs[1] > errs[2]


def test_laplace_density_parameters():
    dens = LaplaceDensity(beta_init=0.1, beta_min=0.01)
    assert float(dens.beta.detach()) == pytest.approx(0.1) and float(dens.alpha.detach()) == pytest.approx(10.0)
    with torch.no_grad():
        dens.b.fill_(-0.5)
    assert float(dens.beta.detach()) == pytest.approx(0.51)  # |b|: any b gives beta >= beta_min
    with torch.no_grad():
        dens.b.zero_()
    assert float(dens.beta.detach()) == pytest.approx(0.01)
    assert float(dens(torch.tensor([-10.0])).detach()) == pytest.approx(100.0)  # tied: alpha = 1 / beta inside
    # Untied: alpha is learned on its own and gets gradients; tied: log_alpha is frozen.
    untied = LaplaceDensity(0.1, tie_alpha=False)
    untied(torch.tensor([-0.05, 0.02])).sum().backward()
    assert untied.log_alpha.grad is not None and untied.log_alpha.grad.abs() > 0 and untied.b.grad.abs() > 0
    assert not LaplaceDensity(0.1).log_alpha.requires_grad


# ------------------------------------------------------------------------------------------ analytic SDFs
def test_primitive_sdfs_match_closed_forms():
    pts = torch.tensor([[2.0, 0, 0], [0, 0, 0], [2, 3, 4], [0.5, 1, 0], [1.5, 2.5, 0]])
    half = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(sdf_box(pts, half), torch.tensor([1.0, -1.0, math.sqrt(3), -0.5, math.sqrt(0.5)]))
    assert torch.allclose(sdf_sphere(pts, torch.tensor(1.5)), pts.norm(dim=-1) - 1.5)
    # Torus around z (R = 2, r = 0.5): distance to the ring circle minus the tube radius.
    t = torch.tensor([[2.0, 0, 0], [0, 0, 0], [0, 3, 1], [0, 0, 5]])
    assert torch.allclose(sdf_torus(t, torch.tensor(2.0), torch.tensor(0.5)),
                          torch.tensor([-0.5, 1.5, math.sqrt(2) - 0.5, math.sqrt(4 + 25) - 0.5]))
    # Capsule along z (half length 1, radius 0.25): distance to the segment minus the radius.
    c = torch.tensor([[0.0, 0, 0], [1, 0, 0.5], [0, 0, 3], [3, 4, -1]])
    assert torch.allclose(sdf_capsule(c, torch.tensor(1.0), torch.tensor(0.25)),
                          torch.tensor([-0.25, 0.75, 1.75, 4.75]))
    # The box against brute force: distance to a dense sampling of its surface, negative inside.
    g = torch.linspace(-1, 1, 61)
    u, v = torch.meshgrid(g, g, indexing="ij")
    faces = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            f = torch.zeros(61 * 61, 3)
            others = [a for a in range(3) if a != axis]
            f[:, axis], f[:, others[0]], f[:, others[1]] = sign, u.reshape(-1), v.reshape(-1)
            faces.append(f * half)
    surface = torch.cat(faces)
    x = (torch.rand(300, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1) * torch.tensor([3.0, 4.0, 5.0])
    brute = torch.cdist(x, surface).amin(1) * torch.where((x.abs() < half).all(-1), -1.0, 1.0)
    assert torch.allclose(sdf_box(x, half), brute, atol=0.06)


def test_primitive_field_pose_union_and_colour():
    turn = math.radians(90) / 2
    box = Primitive("box", [1.0, 0, 0], [0.5, 0.1, 0.1], (math.cos(turn), 0, 0, math.sin(turn)), (1, 0, 0))
    ball = Primitive("sphere", [-1.0, 0, 0], [0.3], color=(0, 0, 1))
    field = PrimitiveSDF([box, ball]).requires_grad_(False)
    # The box is turned 90 degrees about z: its long side now runs along y.
    assert float(field.sdf(torch.tensor([[1.0, 0.45, 0]]))) < 0 < float(field.sdf(torch.tensor([[1.45, 0, 0]])))
    x = torch.tensor([[1.0, 0.8, 0], [-1.0, 0, 1.0], [0, 0, 0]])
    d = field.distances(x)
    assert torch.allclose(d[:, 1], x.sub(torch.tensor([-1.0, 0, 0])).norm(dim=-1) - 0.3, atol=1e-6)
    assert torch.allclose(d[0, 0], torch.tensor(0.3), atol=1e-6)
    assert torch.allclose(field.sdf(x), d.amin(-1))  # hard union = min
    rgb = field.color(x, None, None, field.geometry(x)[1])
    assert torch.allclose(rgb[0], torch.tensor([1.0, 0, 0]), atol=1e-2)  # nearest primitive's colour
    assert torch.allclose(rgb[1], torch.tensor([0, 0, 1.0]), atol=1e-2)
    a, b = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.05, 1.0, 0.0])
    sm = smooth_min(a, b, 0.2)
    assert float(sm[0]) < 0.0 and float(sm[1]) == 0.0 and float(sm[2]) == 0.0  # blends only within k
    assert torch.equal(smooth_min(a, b, 0.0), torch.minimum(a, b))
    # Fitted parameters come back as plain primitives.
    back = field.primitives()
    assert back[0].kind == "box" and back[0].size == pytest.approx([0.5, 0.1, 0.1], rel=1e-5)
    assert back[1].center == pytest.approx([-1.0, 0, 0]) and back[1].color == pytest.approx([0, 0, 1], abs=2e-3)


def test_eikonal_loss_is_zero_on_exact_sdfs():
    x = (torch.rand(2000, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 1.5
    field = PrimitiveSDF([Primitive("box", [0.2, 0, 0], [0.3, 0.4, 0.5]), Primitive("torus", [0, 0.5, 0], [0.4, 0.1]),
                          Primitive("capsule", [0, 0, -0.5], [0.3, 0.2]), Primitive("sphere", [-0.6, 0, 0], [0.3])])
    assert float(eikonal_loss(sdf_gradient(field.sdf, x))) < 1e-8
    assert float(eikonal_loss(sdf_gradient(lambda p: 2 * sdf_sphere(p, 0.5), x))) == pytest.approx(1.0, abs=1e-5)
    # Second derivatives stay finite exactly on a box face or edge, where |max(q, 0)| = 0 and Tensor.norm's double
    # backward gives NaN (training hit this once in ~100 steps).
    half = torch.tensor([0.3, 0.4, 0.5], requires_grad=True)
    on_box = torch.tensor([[0.3, 0.1, 0.1], [0.3, 0.4, 0.1], [0.0, 0.0, 0.0]])
    grad = sdf_gradient(lambda p: sdf_box(p, half), on_box, create_graph=True)
    (grad * torch.tensor([0.3, -0.7, 0.2])).sum().backward()
    assert torch.isfinite(half.grad).all()
    # A smooth union is not an exact SDF in its blend region.
    blended = PrimitiveSDF([Primitive("sphere", [-0.2, 0, 0], [0.3]), Primitive("sphere", [0.2, 0, 0], [0.3])], 0.3)
    assert float(eikonal_loss(sdf_gradient(blended.sdf, x))) > 1e-4


@pytest.mark.parametrize("encoding", ["hash", "harmonic"])
def test_neural_sdf_starts_as_a_sphere(encoding):
    """Geometric initialisation: about |x| - init_radius * bound (lumpy at finite width, exact as width -> inf)."""
    torch.manual_seed(0)
    field = NeuralSDF(1.5, encoding, width=256, depth=2, hash_levels=4, hash_log2_size=10, init_radius=0.5)
    dirs = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1)
    radii = torch.linspace(0.05, 1.45, 281)
    with torch.no_grad():
        sdf, feat = field.geometry((dirs[:, None, :] * radii[None, :, None]).reshape(-1, 3))
    sdf = sdf.reshape(200, 281)
    assert feat.shape == (200 * 281, 32)
    assert bool((sdf[:, 0] < 0).all() and (sdf[:, -1] > 0).all())
    crossing = radii[(sdf > 0).float().argmax(1)]  # first radius outside, per direction
    assert abs(float(crossing.mean()) - 0.75) < 0.1 and float((crossing - 0.75).abs().max()) < 0.3
    x = (torch.rand(500, 3) * 2 - 1) * 1.2
    assert float(eikonal_loss(sdf_gradient(field.sdf, x))) < 0.05
    n = torch.nn.functional.normalize(x, dim=-1)
    rgb = field.color(x, n, -n, field.geometry(x)[1])
    assert rgb.shape == (500, 3) and bool(((rgb > 0) & (rgb < 1)).all())


def test_eikonal_loss_trains_the_hash_grid_through_the_gradient():
    """d/dtable of a loss on d features / dx (double backward through the hash grid) against finite differences."""
    from pipelines.core.encodings import HashGridEncoding

    enc = HashGridEncoding(n_levels=3, n_features=2, log2_size=6, base_res=4, max_res=16).double()
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    x = torch.rand(6, 3, dtype=torch.float64) * 0.9 + 0.05

    def grad_x(table):
        saved, enc.table = enc.table, torch.nn.Parameter(table) if not isinstance(table, torch.nn.Parameter) else table
        try:
            xg = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(enc(xg).pow(2).sum(), xg, create_graph=True)
            return g
        finally:
            enc.table = saved

    assert torch.autograd.gradcheck(grad_x, (enc.table,), eps=1e-6, atol=1e-5)


# ------------------------------------------------------------------------------------------- rendering
def test_volume_rendered_sphere_matches_rasterized_sphere():
    from pipelines.core.raster import rasterize

    cam = orbit_cameras(1, 3.0, 20.0, 40.0, 48)[0]
    field = PrimitiveSDF([Primitive("sphere", [0.1, -0.1, 0.05], [0.6])])
    dens = LaplaceDensity(beta_init=2e-3, beta_min=1e-4)
    o, d = (t.reshape(-1, 3) for t in camera_rays(cam))
    near, far, _ = ray_aabb(o, d, -1.0, 1.0)
    with torch.no_grad():
        out = render_sdf(field, dens, o, d, near, far, 32, 32, 1.0, perturb=False)
    mesh = sdf_to_mesh(field, 1.0, 96, "cpu", colors=False)
    frags = rasterize(mesh.verts, mesh.faces, cam)
    vol = out.opacity.reshape(48, 48) > 0.5
    ras = frags.mask
    iou = float((vol & ras).sum() / (vol | ras).sum())
    assert ras.sum() > 300 and iou > 0.97, iou
    # Depth on the silhouette's interior matches the analytic ray-sphere intersection.
    oc = o - torch.tensor([0.1, -0.1, 0.05])
    b, c = (oc * d).sum(-1), (oc * oc).sum(-1) - 0.36
    inner = (b * b - c) > 0.05
    t_hit = -b - (b * b - c).clamp_min(0).sqrt()
    assert float((out.depth - t_hit)[inner].abs().mean()) < 0.01
    # Normals point out of the sphere, towards the camera.
    n = out.extras["normal"][inner]
    expect = torch.nn.functional.normalize((o + t_hit[:, None] * d)[inner] - torch.tensor([0.1, -0.1, 0.05]), dim=-1)
    assert float((torch.nn.functional.normalize(n, dim=-1) * expect).sum(-1).mean()) > 0.99


def test_samples_concentrate_near_the_surface_as_beta_shrinks():
    field = PrimitiveSDF([Primitive("sphere", [0, 0, 0], [0.5])])
    o = torch.tensor([[0.0, 0.0, 3.0]]).expand(64, 3)
    d = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) * 0.05
                                      + torch.tensor([0, 0, -1.0]), dim=-1)
    near, far, _ = ray_aabb(o, d, -1.5, 1.5)

    def spread(beta):
        """Lower quartile of |d| over all samples (a third are stratified, two thirds drawn near the surface)."""
        with torch.no_grad():
            out = render_sdf(field, LaplaceDensity(beta, 1e-5), o, d, near, far, 32, 64, 1.0, perturb=False)
        return float(out.extras["sdf"].abs().quantile(0.25))

    spacing = 3.0 / 32  # of the stratified samples: uniform samples alone give a lower quartile near spacing / 2
    wide, narrow = spread(0.1), spread(0.002)
    assert narrow < 0.25 * wide and narrow < spacing / 8, (wide, narrow)


def test_mesh_psnr_matches_the_volume_render_of_the_same_sdf():
    """metrics.mesh_psnr: the coloured marching-cubes mesh of a sphere, rasterized from the cameras that
    volume-rendered the 'truth', scores high; the mesh of a shifted sphere scores far lower (the cameras line up)."""
    from pipelines.core.metrics import mesh_psnr

    cams = orbit_cameras(3, 3.0, 20.0, 40.0, 32)
    truth = PrimitiveSDF([Primitive("sphere", [0.1, -0.1, 0.05], [0.6], color=(0.9, 0.3, 0.2))])
    dens = LaplaceDensity(beta_init=2e-3, beta_min=1e-4)
    images = []
    for cam in cams:
        o, d = (t.reshape(-1, 3) for t in camera_rays(cam))
        near, far, _ = ray_aabb(o, d, -1.0, 1.0)
        with torch.no_grad():
            images.append(render_sdf(truth, dens, o, d, near, far, 32, 32, 1.0, perturb=False).rgb.reshape(32, 32, 3))
    views = type("Views", (), {"images": torch.stack(images), "camera": staticmethod(lambda i: cams[i]),
                               "__len__": lambda self: len(cams)})()
    good = mesh_psnr(sdf_to_mesh(truth, 1.0, 64, "cpu"), views, 3, 1.0, "cpu")
    moved = PrimitiveSDF([Primitive("sphere", [0.4, -0.1, 0.05], [0.6], color=(0.9, 0.3, 0.2))])
    bad = mesh_psnr(sdf_to_mesh(moved, 1.0, 64, "cpu"), views, 3, 1.0, "cpu")
    assert good > 24 and bad < good - 8, (good, bad)


def test_tetrahedral_differences_are_exact_on_linear_fields_and_close_on_curved_ones():
    """The 4-point tetrahedral stencil (a third fewer SDF evaluations than central differences): exact for a
    linear field, first-order close on a curved one, and the one-pass geometry call gives the same gradient."""
    from pipelines.core.sdf import NeuralSDF, fd_gradient, fd_stencil, geometry_and_gradient

    offsets, weights = fd_stencil("tetrahedral", 1e-2, "cpu", torch.float64)
    assert offsets.shape == (4, 3) and torch.allclose(offsets.norm(dim=-1), torch.full((4,), 1e-2, dtype=torch.float64))
    assert torch.allclose(weights @ offsets, torch.eye(3, dtype=torch.float64))  # reproduces any linear field
    x = (torch.rand(400, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1)
    a = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    assert torch.allclose(fd_gradient(lambda p: p @ a + 0.7, x, 0.05, "tetrahedral"), a.expand(400, 3))
    sphere = lambda p: p.norm(dim=-1) - 0.5  # noqa: E731 - curvature 1/|x|: the O(eps) error shows
    far = x.norm(dim=-1) > 0.3
    exact = x / x.norm(dim=-1, keepdim=True)
    for eps, tol in ((1e-2, 0.05), (1e-3, 0.005)):
        err = (fd_gradient(sphere, x, eps, "tetrahedral") - exact)[far].norm(dim=-1).max()
        assert err < tol, (eps, float(err))
    torch.manual_seed(0)
    field = NeuralSDF(1.5, "hash", width=16, depth=2, feature_dim=4, hash_levels=4, hash_log2_size=10)
    xf = x[:50].float() * 1.2
    sdf, feat, grad = geometry_and_gradient(field, xf, "tetrahedral", 1e-3)
    assert torch.allclose(sdf, field.sdf(xf), atol=1e-6) and grad.requires_grad
    assert torch.allclose(grad, fd_gradient(field.sdf, xf, 1e-3, "tetrahedral"), atol=1e-5)


def test_finite_difference_gradients_match_autograd():
    """core.sdf.fd_gradient against autograd on an exact SDF and on a neural one, and its eikonal loss trains the
    hash grid with first-order backward passes (what the fused kernels support)."""
    from pipelines.core.sdf import fd_gradient, sdf_gradient_by

    x = (torch.rand(400, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1) * 1.2
    prims = PrimitiveSDF([Primitive("torus", [0, 0.3, 0], [0.5, 0.15]), Primitive("sphere", [-0.5, 0, 0], [0.3])])
    exact = sdf_gradient(prims.sdf, x)
    fd = fd_gradient(prims.sdf, x, 1e-3)
    near_kink = (prims.distances(x).sort(-1).values[:, :2].diff(dim=-1).abs().squeeze(-1) < 5e-3)  # union seams
    assert torch.allclose(fd[~near_kink], exact[~near_kink], atol=5e-3)
    torch.manual_seed(0)
    field = NeuralSDF(1.5, "hash", width=32, depth=2, hash_levels=4, hash_log2_size=10, hash_max_res=32)
    with torch.no_grad():
        field.encoding.table.uniform_(-0.05, 0.05)
        field.layers[0].weight[:, 3:].normal_(0.0, 0.3)  # the geometric init leaves the features silent
    # Trilinear cells of >= 0.09 here: a 1e-4 step straddles a cell face (a kink) for few points only.
    fd, exact = sdf_gradient_by("finite_difference", field.sdf, x, 1e-4), sdf_gradient(field.sdf, x)
    close = ((fd - exact).norm(dim=-1) < 0.02 * exact.norm(dim=-1) + 0.02).float().mean()
    assert close > 0.95, close
    loss = eikonal_loss(sdf_gradient_by("finite_difference", field.sdf, x, 1e-2, create_graph=True))
    loss.backward()
    assert field.encoding.table.grad is not None and field.encoding.table.grad.abs().sum() > 0
    with torch.no_grad():  # no graph kept when rendering
        assert not sdf_gradient_by("finite_difference", field.sdf, x, 1e-2, create_graph=True).requires_grad
