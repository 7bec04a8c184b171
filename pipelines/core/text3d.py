"""The student of the text-to-3D methods (DreamFusion; Magic3D's coarse stage): a NeRF of density and albedo in
a bounding sphere, a background network of the view direction, volume rendering with per-point shading, and the
pieces of their distillation loop (cameras drawn up front, view prompts, shading and lights, one SDS step).

Contract: ``AlbedoField(x (N, 3)) -> (sigma (N,) >= 0, albedo (N, 3) in [0, 1])`` with zero density outside the
sphere of ``radius``; ``density(x)`` alone for meshing. Normals are -grad sigma / |grad sigma| (DreamFusion),
taken with autograd inside ``render_shaded``, which composites with ``core.volume`` (dense, per ray), skipping
the field where an optional ``OccupancyGrid`` says the space is empty. The loop pieces read their settings from
a method's config by name (``distill_step`` lists them), so DreamFusion and Magic3D share one step.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .encodings import HarmonicEncoding, HashGridEncoding
from .fields import mlp
from .occupancy import OccupancyGrid
from .volume import composite, intervals, sample_pdf, stratified_samples

SHADINGS = ("albedo", "diffuse", "textureless")


class AlbedoField(nn.Module):
    """Density and albedo from an MLP on harmonic embeddings of x (sin/cos of 2^k pi x / radius) or on a
    multiresolution hash grid, plus a density blob (Magic3D's: blob_density (1 - |x| / blob_radius)) added
    before the softplus, so training starts from a soft ball at the centre. ``separate_heads``: density and albedo
    from two one-hidden-layer networks on the shared encoding (Magic3D's coarse field) instead of one."""

    def __init__(self, radius: float = 1.0, encoding: str = "harmonic", width: int = 64, depth: int = 3,
                 n_freqs: int = 6, hash_levels: int = 16, hash_log2_size: int = 19, blob_density: float = 10.0,
                 blob_radius: float = 0.5, hash_max_res: int = 2048, separate_heads: bool = False):
        super().__init__()
        self.radius, self.hash = float(radius), encoding == "hash"
        self.blob_density, self.blob_radius = float(blob_density), float(blob_radius)
        if self.hash:
            self.encoding = HashGridEncoding(hash_levels, 2, hash_log2_size, 16, hash_max_res)
        else:
            self.encoding = HarmonicEncoding(3, n_freqs, scale=math.pi)
        hidden = 1 if self.hash else depth
        self.net = mlp(self.encoding.out_dim, width, 1 if separate_heads else 4, hidden)
        self.albedo_net = mlp(self.encoding.out_dim, width, 3, hidden) if separate_heads else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = x / self.radius
        feat = self.encoding((u + 1) / 2 if self.hash else u)
        h = self.net(feat).float()
        if self.albedo_net is not None:
            h = torch.cat([h, self.albedo_net(feat).float()], -1)
        r = x.norm(dim=-1)
        blob = self.blob_density * (1 - r / self.blob_radius)
        sigma = F.softplus(h[:, 0] + blob) * (r <= self.radius)
        return sigma, torch.sigmoid(h[:, 1:])

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)[0]

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) colours alone: the field used as a volumetric texture (Magic3D's fine stage)."""
        if self.albedo_net is None:
            return self(x)[1]
        u = x / self.radius
        return torch.sigmoid(self.albedo_net(self.encoding((u + 1) / 2 if self.hash else u)).float())


def student_args(config: dict) -> dict:
    """``AlbedoField`` arguments from a DreamFusion or Magic3D config as their checkpoints store it (``method``
    'magic3d': Magic3D's coarse field, a hash grid with separate density and albedo heads)."""
    args = dict(radius=config.get("bound", 1.0), width=config.get("width", 64),
                hash_levels=config.get("hash_levels", 16), hash_log2_size=config.get("hash_log2_size", 19),
                blob_density=config.get("blob_density", 10.0), blob_radius=config.get("blob_radius", 0.5))
    if config.get("method") == "magic3d":
        return dict(args, encoding="hash", hash_max_res=config.get("hash_max_res", 4096), separate_heads=True)
    return dict(args, encoding=config.get("student", "harmonic"), depth=config.get("depth", 3),
                n_freqs=config.get("n_freqs", 6))


def load_student(path, device) -> tuple[AlbedoField, "BackgroundField | None", str]:
    """(student, background network or None, 'Magic3D' or 'DreamFusion') from a checkpoint {config, student,
    [background], [method]}. Read with ``weights_only``: an uploaded file must not run code when unpickled.
    Raises ValueError (or an I/O error) when the file is not such a checkpoint."""
    state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict) or not {"config", "student"} <= set(state):
        raise ValueError("no 'config' and 'student' entries")
    method = state.get("method", "dreamfusion")
    student = AlbedoField(**student_args({**state["config"], "method": method}))
    student.load_state_dict(state["student"])
    background = None
    if "background" in state:
        background = BackgroundField()
        background.load_state_dict(state["background"])
    return student.to(device), background, "Magic3D" if method == "magic3d" else "DreamFusion"


class BackgroundField(nn.Module):
    """d (N, 3) unit view directions -> (N, 3) colour: what a ray that leaves the sphere empty sees."""

    def __init__(self, n_freqs: int = 4, width: int = 32):
        super().__init__()
        self.encoding = HarmonicEncoding(3, n_freqs)
        self.net = mlp(self.encoding.out_dim, width, 3, 1)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(self.encoding(d)))


def ray_sphere(o: torch.Tensor, d: torch.Tensor, radius: float,
               min_near: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """near, far (R,) where rays (o, unit d: (R, 3)) cross the sphere |x| = radius; near == far on a miss."""
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - radius ** 2)
    s = disc.clamp_min(0).sqrt()
    near = (-b - s).clamp_min(min_near)
    far = torch.maximum(-b + s, near)
    return near, torch.where(disc > 0, far, near)


def _pruned(fn: Callable, x: torch.Tensor, grid: OccupancyGrid | None, n_out: int, create_graph: bool = False):
    """``fn`` at the points of x (N, 3) in occupied cells only, zeros elsewhere. n_out 1: fn is a density,
    returns (sigma,); 3: fn is the field, returns (sigma, albedo, d sigma / dx), the gradient taken with autograd
    (x requires grad)."""
    keep = grid.occupied(x.detach()) if grid is not None else None
    xs = x if keep is None else x[keep]
    if n_out == 1:
        sigma = fn(xs)
        return (sigma if keep is None else sigma.new_zeros(len(x)).masked_scatter(keep, sigma),)
    sigma, albedo = fn(xs)
    grad = torch.autograd.grad(sigma.sum(), x, create_graph=create_graph)[0] if len(xs) else torch.zeros_like(x)
    if keep is None:
        return sigma, albedo, grad
    full = sigma.new_zeros(len(x)).masked_scatter(keep, sigma)
    return full, albedo.new_zeros(len(x), 3).masked_scatter(keep[:, None].expand(-1, 3), albedo), grad


def render_shaded(field: AlbedoField, o: torch.Tensor, d: torch.Tensor, background: torch.Tensor, n_samples: int,
                  n_importance: int = 0, shading: str = "albedo", light: torch.Tensor | None = None,
                  ambient: float = 0.1, perturb: bool = False, train: bool = False,
                  grid: OccupancyGrid | None = None) -> dict[str, torch.Tensor]:
    """Volume-renders rays through the field's sphere with DreamFusion's per-point shading.

    Args:
        o, d: (R, 3) origins and unit directions.
        background: (R, 3) or (3,) colour behind the object (a tensor on the rays' device).
        n_samples: stratified samples per ray; n_importance: more, drawn from a density-only first pass.
        shading: 'albedo' (the colour itself), 'diffuse' (albedo x (ambient + (1 - ambient) max(0, n.l))) or
            'textureless' (the same with a white albedo).
        light: (R, 3) point-light position per ray, for the diffuse shadings.
        train: keep the graph through the normals (create_graph), so losses on them train the density.
        grid: an occupancy grid over the sphere's box: samples in its empty cells get zero density and skip the
            field (Instant-NGP's empty-space pruning; Magic3D's coarse stage).
    Returns:
        rgb (R, 3), opacity (R,), depth (R,), normal (R, 3) (opacity-weighted sum) and orient (R,):
        DreamFusion's orientation penalty sum_i sg(w_i) max(0, n_i . d)^2 (normals facing away from the camera).
    """
    near, far = ray_sphere(o, d, field.radius)
    t = stratified_samples(near, far, n_samples, perturb)
    if n_importance > 0:
        with torch.no_grad():
            x = (o[:, None] + t[..., None] * d[:, None]).reshape(-1, 3)
            sigma = _pruned(field.density, x, grid, 1)[0].reshape(t.shape)
            black = o.new_zeros(3)  # a tensor already on the device: a Python 0.0 would be copied there (a sync)
            w = composite(sigma, torch.zeros(*t.shape, 3, device=o.device), t, intervals(t, far),
                          black).extras["weights"]
            t_fine = sample_pdf(0.5 * (t[:, 1:] + t[:, :-1]), w[:, 1:-1], n_importance, perturb)
            t = torch.sort(torch.cat([t, t_fine], -1), -1).values
    n_rays, n_pts = t.shape
    with torch.enable_grad():
        x = (o[:, None] + t[..., None] * d[:, None]).reshape(-1, 3).detach().requires_grad_(True)
        sigma, albedo, grad = _pruned(field, x, grid, 3, create_graph=train)
    normal = -F.normalize(grad, dim=-1).reshape(n_rays, n_pts, 3)
    albedo = albedo.reshape(n_rays, n_pts, 3)
    if shading == "albedo":
        rgb = albedo
    elif shading in SHADINGS:
        to_light = F.normalize(light[:, None, :] - x.reshape(n_rays, n_pts, 3), dim=-1)
        lambert = (normal * to_light).sum(-1, keepdim=True).clamp_min(0)
        base = albedo if shading == "diffuse" else torch.ones_like(albedo)
        rgb = base * (ambient + (1 - ambient) * lambert)
    else:
        raise ValueError(f"unknown shading {shading!r}; one of {SHADINGS}")
    out = composite(sigma.reshape(n_rays, n_pts), rgb, t, intervals(t, far), background)
    w = out.extras["weights"]
    facing_away = (normal * d[:, None]).sum(-1).clamp_min(0)  # n . d > 0: the camera sees the back side
    res = {"rgb": out.rgb, "opacity": out.opacity, "depth": out.depth,
           "normal": (w[..., None] * normal).sum(1), "orient": (w.detach() * facing_away ** 2).sum(-1)}
    return res if train else {k: v.detach() for k, v in res.items()}


# ---------------------------------------------------------------------------------------- the distillation loop
def load_prior(cfg, dev) -> Iterator:
    """A generator of Log events that loads and names the prior (compiled if asked), warns about prompts the
    embedded prior never saw, and encodes the prompt for each view; it returns (guidance, {view:
    TextEmbeddings}, prompt_for(view) -> str). Reads prior, prior_dtype, prior_compile, resolution, prompt,
    negative_prompt, view_prompts and view_template from ``cfg``."""
    from ..events import Log
    from .priors import describe_prior, is_embedded, load_guidance, resolve_prior
    from .priors.prompts import VIEWS, fit_view_prompt

    if why := resolve_prior(cfg.prior)[1]:
        yield Log(f"prior {why}")
    yield Log(f"loading the diffusion prior: {describe_prior(cfg.prior)}")
    guidance = load_guidance(cfg.prior, dev, cfg.prior_dtype)
    if hasattr(guidance, "compile") and guidance.compile(cfg.prior_compile):  # 'off' undoes an earlier run's
        yield Log(f"prior compile mode: {cfg.prior_compile} (compiling makes the first steps slow)")
    yield Log(f"prior: {guidance.name} ({str(guidance.dtype).removeprefix('torch.')} on {dev}); "
              f"{cfg.resolution}px renders are resized to its {guidance.resolution}px input")
    if is_embedded(cfg.prior):
        from .priors.embedded import vocabulary_warning

        if warning := vocabulary_warning(cfg.prompt, "diffusion prior"):
            yield Log(warning, "warning")

    # A text encoder cuts a long prompt from the end, which is where the view suffix is: shorten the prompt instead.
    fitted = {v: fit_view_prompt(cfg.prompt, v, cfg.view_template, guidance.n_tokens, guidance.max_tokens)
              if cfg.view_prompts else (cfg.prompt, False) for v in VIEWS}

    def prompt_for(view: str) -> str:
        return fitted[view][0]

    text = {v: guidance.encode_prompt(prompt_for(v), cfg.negative_prompt) for v in VIEWS}
    if any(cut for _, cut in fitted.values()):
        yield Log(f"the prompt is longer than the text encoder reads ({guidance.max_tokens} tokens with the view "
                  f"suffix): its end was cut to keep the view, e.g. {prompt_for('front')!r}", "warning")
    elif any(e.truncated for e in text.values()):
        yield Log(f"the prompt is longer than the text encoder reads ({guidance.max_tokens} tokens): the end was "
                  "cut off", "warning")
    return guidance, text, prompt_for


class Views:
    """The cameras of a whole run, drawn up front (one host-to-device copy, none inside the loop), uniform in
    distance, elevation (degrees), azimuth and field of view (degrees), looking at the origin.

    Attributes:
        c2w: (n, 4, 4) on ``device``; elevation, azimuth, fov: lists of n floats (degrees).
    """

    def __init__(self, n: int, seed: int, distance: tuple[float, float], elevation: tuple[float, float],
                 fov: tuple[float, float], device):
        from .cameras import look_at, spherical_to_cartesian

        u = torch.rand(n, 4, generator=torch.Generator().manual_seed(seed))
        lerp = lambda rng, x: rng[0] + (rng[1] - rng[0]) * x  # noqa: E731
        dist, elev = lerp(distance, u[:, 0]), lerp(elevation, u[:, 1])
        azim, fovs = lerp((-180.0, 180.0), u[:, 2]), lerp(fov, u[:, 3])
        self.c2w = look_at(spherical_to_cartesian(dist, torch.deg2rad(elev), torch.deg2rad(azim))).to(device)
        self.elevation, self.azimuth, self.fov = elev.tolist(), azim.tolist(), fovs.tolist()


class PixelRays:
    """Rays through every pixel centre of a square render: ``rays(c2w (4, 4), fov_deg, res) -> (o, d)``, each
    (res^2, 3) in row-major pixel order; the pixel grid of each size is made once."""

    def __init__(self, device):
        self.device, self.grids = device, {}

    def __call__(self, c2w: torch.Tensor, fov_deg: float, res: int) -> tuple[torch.Tensor, torch.Tensor]:
        from .rays import pixel_rays

        if res not in self.grids:
            j, i = torch.meshgrid(torch.arange(res, device=self.device) + 0.5,
                                  torch.arange(res, device=self.device) + 0.5, indexing="ij")
            self.grids[res] = (i.reshape(-1), j.reshape(-1))
        f = 0.5 * res / math.tan(math.radians(fov_deg) / 2)
        return pixel_rays(c2w, *self.grids[res], f, f, res / 2, res / 2)


def pick_shading(progress: float, rng: random.Random, warmup: float, albedo_prob: float,
                 textureless_prob: float) -> str:
    """DreamFusion's shading draw: albedo only for the first ``warmup`` of training, then at random albedo,
    textureless or diffuse (Magic3D: ambient-only early, then random diffuse)."""
    roll = rng.random()
    if progress < warmup or roll < albedo_prob:
        return "albedo"
    return "textureless" if roll < albedo_prob + textureless_prob else "diffuse"


def random_lights(cam_pos: torch.Tensor) -> torch.Tensor:
    """(B, 3) camera positions -> (B, 3) point lights near each camera (a random direction around it, as far as
    the camera or up to one unit farther), so the lit side is mostly the seen side."""
    b = cam_pos.shape[0]
    light_dir = F.normalize(cam_pos + torch.randn(b, 3, device=cam_pos.device), dim=-1)
    return light_dir * (cam_pos.norm(dim=-1, keepdim=True) + torch.rand(b, 1, device=cam_pos.device))


def view_backgrounds(kind: str, background: BackgroundField, d: torch.Tensor, b: int) -> torch.Tensor:
    """What each of the b views' rays d (b * P, 3) see behind the object: 'mlp' the background network of the
    view direction, 'random' one random colour per view, else white."""
    if kind == "mlp":
        return background(d)
    if kind == "random":
        return torch.rand(b, 3, device=d.device).repeat_interleave(d.shape[0] // b, dim=0)
    return torch.ones(3, device=d.device)


def distill_step(student: AlbedoField, background: BackgroundField, guidance, text, views: Views, idx: range,
                 rays: PixelRays, res: int, progress: float, shading: str, cfg,
                 grid: OccupancyGrid | None = None) -> tuple[torch.Tensor, dict, object]:
    """One score-distillation step's forward on the student (DreamFusion; Magic3D's coarse stage).

    Renders views ``idx`` of ``views`` at res x res with ``shading`` under random point lights, runs SDS on them,
    and adds DreamFusion's orientation loss (ramped from a hundredth of ``lambda_orient`` to all of it over the
    first half) and opacity (sparsity) term. Reads from ``cfg``: background, n_samples, n_importance, ambient,
    guidance_scale, t_min, t_max, t_max_end, lambda_orient, lambda_opacity.

    Args:
        text: the batch's ``TextEmbeddings`` (1 or len(idx) rows).
        progress: fraction of the stage done, in [0, 1).
    Returns:
        (loss, {name: detached scalar tensor} of the terms, the ``SDSOutput``).
    """
    from .priors.guidance import annealed_t_range

    b = len(idx)
    o, d = zip(*(rays(views.c2w[i], views.fov[i], res) for i in idx))
    o, d = torch.cat(o), torch.cat(d)
    bg = view_backgrounds(cfg.background, background, d, b)
    light = random_lights(views.c2w[idx.start:idx.stop, :3, 3]).repeat_interleave(res * res, dim=0)
    out = render_shaded(student, o, d, bg, cfg.n_samples, cfg.n_importance, shading, light, cfg.ambient,
                        perturb=True, train=True, grid=grid)
    sds = guidance.sds(out["rgb"].reshape(b, res, res, 3), text, cfg.guidance_scale,
                       annealed_t_range(progress, cfg.t_min, cfg.t_max, cfg.t_max_end))
    orient = out["orient"].mean()
    opacity = (out["opacity"] ** 2 + 0.01).sqrt().mean()
    loss = sds.loss + cfg.lambda_orient * min(1.0, 0.01 + 2 * progress) * orient + cfg.lambda_opacity * opacity
    terms = {"loss": loss, "sds_grad": sds.grad_norm, "orient": orient, "opacity": opacity,
             "t": sds.t.float().mean() / guidance.num_train_timesteps}
    return loss, {k: v.detach() for k, v in terms.items()}, sds


@torch.no_grad()
def render_view(student: AlbedoField, background: BackgroundField | None, rays: PixelRays, c2w: torch.Tensor,
                fov_deg: float, res: int, n_samples: int, n_importance: int = 0, grid: OccupancyGrid | None = None,
                chunk: int = 8192) -> dict[str, torch.Tensor]:
    """A preview or turntable frame (res, res, ...), albedo-shaded on the background network (None: white):
    rgb, opacity, depth, orient and the normalised normal image."""
    o, d = rays(c2w.to(rays.device), fov_deg, res)
    bg = background(d) if background is not None else torch.ones_like(d)
    parts = [render_shaded(student, o[i:i + chunk], d[i:i + chunk], bg[i:i + chunk], n_samples, n_importance,
                           grid=grid) for i in range(0, len(o), chunk)]
    view = {k: torch.cat([p[k] for p in parts]).reshape(res, res, -1).squeeze(-1) for k in parts[0]}
    view["normal"] = F.normalize(view["normal"], dim=-1)
    return view
