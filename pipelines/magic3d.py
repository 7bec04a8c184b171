"""Magic3D (Lin et al. 2023): text to a textured mesh in two stages of score distillation.

Coarse: DreamFusion's student (core.text3d) as a multiresolution hash grid (16 levels x 2 features, 2^19
entries, resolutions 16..4096) with one-hidden-layer density and albedo heads and Magic3D's density blob, volume-
rendered at 64 x 64 with an occupancy grid skipping empty space and distilled from the prior (guidance 100,
t ~ U[0.02, 0.98]) with DreamFusion's orientation and sparsity terms; ambient-only shading first, random diffuse
later. Conversion (core.magic3d_mesh, with the exports): a deformable tet grid (core.dmtet) over the coarse
surface's box, SDF = clamp(-(density - tau), -1, 1). Fine: the DMTet surface, rasterized (core.raster) at the
prior's resolution (512 for Stable Diffusion) with edge antialiasing, coloured by the coarse albedo field as a
volumetric texture, distilled at t ~ U[0.02, 0.5] with a normal-consistency term. Exports a textured mesh (.glb;
.obj + .mtl + .png), the coarse stage's marching-cubes mesh, a turntable of both stages and a coarse checkpoint
that ``--from-coarse`` refines later.
"""
from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Iterator

from .config import RunContext, UserInputError, run_guarded
from .core.text3d_config import Text3DConfig
from .events import Done, Event, Log, Preview, Progress


@dataclass
class Magic3DConfig(Text3DConfig):
    """The prompt, prior, cameras, shading and regularisers of the coarse stage come from ``Text3DConfig``."""

    coarse_steps: int = 5000
    """Steps of the coarse stage (the volumetric hash-grid field)."""
    fine_steps: int = 5000
    """Steps of the fine stage (the DMTet mesh)."""
    steps: int = 0
    """Both stages' steps together: set from coarse_steps + fine_steps (set those instead)."""
    from_coarse: str = ""
    """A coarse checkpoint to refine, skipping the coarse stage: a Magic3D coarse.pt or a DreamFusion model.pt."""
    # ---- coarse stage
    lr: float = 1e-2
    """Adam learning rate of the coarse field."""
    width: int = 64
    """Width of the density and albedo heads' hidden layer."""
    hash_levels: int = 16
    """Hash-grid levels (2 features each)."""
    hash_log2_size: int = 19
    """log2 of hash-table entries per level."""
    hash_max_res: int = 4096
    """Finest hash-grid resolution (the coarsest is 16)."""
    n_importance: int = 0
    """Extra samples per ray from a density-only first pass (0: none; the occupancy grid prunes instead)."""
    occupancy_resolution: int = 64
    """Cells per side of the occupancy grid that prunes empty space (0: no grid)."""
    occupancy_every: int = 16
    """Coarse steps between occupancy-grid updates."""
    albedo_prob: float = 0.0
    """After the warm-up (and in the fine stage): probability of albedo-only shading (Magic3D: random diffuse)."""
    textureless_prob: float = 0.5
    """After the warm-up: probability of textureless (white) diffuse shading; the rest is diffuse."""
    lambda_opacity: float = 10.0
    """Weight of the sparsity term (DreamFusion's 1): at 10 the rank-1 rate over the 10 judged prompts was 0.70
    against 0.60 at 1 and 0.40 with t_max annealed to 0.5 (one seed; bench/RESULTS.md, 2026-12-02)."""
    # ---- conversion
    tet_resolution: int = 64
    """Cells per side of the DMTet grid (6 n^3 tets: 64 -> 1.6 M, threestudio's '128' grid)."""
    surface_threshold: str = "auto"
    """Coarse density at the surface: 'auto' (the mean of the densities above 1e-5) or a number. Raise it when
    the mesh is a puffy shell, lower it when parts are missing."""
    mesh_resolution: int = 128
    """Marching-cubes grid of the coarse mesh, and the grid that finds the coarse surface's threshold and box."""
    # ---- fine stage
    fine_lr: float = 1e-2
    """Adam learning rate of the SDF values and vertex offsets."""
    fine_texture_lr: float = 1e-3
    """Adam learning rate of the colour field in the fine stage: lower than the coarse stage's, as each step's
    renders touch only the hash entries around the visible surface, and large sparse steps leave speckles."""
    fine_resolution: int = 0
    """Side of the fine renders in pixels; 0: the prior's input size (512 for Stable Diffusion, 64 embedded)."""
    texture_blur: float = 1.0
    """The colour field read on the mesh is averaged over this many fine-render pixels' footprint (at the fine
    cameras' middle distance and field of view; 0: one point a pixel). The coarse hash grid's finest levels hold
    noise that volume rendering averaged away along each ray; read at one surface point a pixel it speckles."""
    texture_samples: int = 8
    """Points the colour field is averaged over at each surface point (texture_blur)."""
    texture_checkpoint: bool = False
    """Recompute the filtered colour lookups in the backward instead of keeping them: the fine stage's peak at 512 px
    was 13 GB on an H200 with them kept (4.3 GB before the filter); on for GPUs of 16 GB or less, at the price of
    a second forward of the lookups (not measured on a GPU yet)."""
    fine_t_max: float = 0.5
    """Largest diffusion time of the fine stage (small t refines details; Magic3D: 0.5)."""
    fine_camera_distance_min: float = 2.0
    """Fine cameras: nearest distance (farther than the coarse ones, so the narrower view still frames the object)."""
    fine_camera_distance_max: float = 2.5
    """Fine cameras: farthest distance."""
    fine_fov_min: float = 30.0
    """Fine cameras: narrowest field of view in degrees."""
    fine_fov_max: float = 45.0
    """Fine cameras: widest field of view in degrees."""
    lambda_normal: float = 1e4
    """Weight of the normal consistency 1 - cos between adjacent faces' normals (threestudio: 1e4)."""
    lambda_laplacian: float = 0.0
    """Weight of the uniform Laplacian smoothing of the mesh (0: off)."""
    texture_size: int = 1024
    """Side of the baked texture image of the exported mesh."""

    PRESETS: ClassVar[dict] = {
        "fast": dict(coarse_steps=2000, fine_steps=1000, tet_resolution=48),
        "quality": dict(coarse_steps=10000, fine_steps=5000, tet_resolution=64, mesh_resolution=256,
                        turntable_frames=96, preview_size=256, n_importance=32),
        "zerogpu": dict(coarse_steps=800, fine_steps=200, tet_resolution=40, mesh_resolution=96,
                        turntable_frames=24, texture_size=512),
        # a CPU with the embedded prior: 300 + 150 steps took 11.5 min on 2 shared cores (1.5 and 1.3 s a step)
        "cpu": dict(coarse_steps=200, fine_steps=100, resolution=32, n_samples=32, hash_levels=8, hash_log2_size=14,
                    hash_max_res=512, occupancy_resolution=32, tet_resolution=32, mesh_resolution=64,
                    texture_size=256, turntable_frames=12, preview_size=64, preview_every=50),
    }

    def __post_init__(self):
        self.steps = (0 if self.from_coarse else self.coarse_steps) + self.fine_steps


CONFIG = Magic3DConfig
LOG_EVERY = 10  # steps between Progress events: each one costs a host sync
PREVIEW_VIEW = dict(elevation=15.0, azimuth=0.0)


def run(cfg: Magic3DConfig) -> Iterator[Event]:
    return run_guarded("magic3d", cfg, _train, "lower --fine-resolution, --tet-resolution or --batch-size, or use "
                       "--prior-dtype float16")


def build_student(cfg: Magic3DConfig):
    """The coarse field (AlbedoField: hash grid, separate heads) and the background network."""
    from .core.text3d import AlbedoField, BackgroundField, student_args

    return AlbedoField(**student_args({**asdict(cfg), "method": "magic3d"})), BackgroundField()


def load_coarse(path: str, dev):
    """(student, background or None, its method) from a Magic3D coarse.pt or a DreamFusion model.pt."""
    from .core.text3d import load_student

    file = Path(path).expanduser()
    if not file.is_file():
        raise UserInputError(f"--from-coarse: no file {file} (a Magic3D coarse.pt or a DreamFusion model.pt)")
    try:
        return load_student(file, dev)
    except Exception as e:  # noqa: BLE001 - not a checkpoint of ours: say so
        raise UserInputError(f"--from-coarse: {file} is not a Magic3D or DreamFusion checkpoint "
                             f"({type(e).__name__}: {str(e)[:200]})") from e


def _check(cfg: Magic3DConfig) -> None:
    from .core.magic3d_mesh import threshold
    from .core.priors.prompts import check_prompt

    check_prompt(cfg.prompt, "prompt")
    check_prompt(cfg.negative_prompt, "negative prompt", required=False)
    if cfg.fine_steps < 1 or (cfg.coarse_steps < 1 and not cfg.from_coarse) or cfg.batch_size < 1:
        raise UserInputError("coarse_steps, fine_steps and batch_size must be positive")
    if cfg.resolution < 8 or cfg.n_samples < 2 or cfg.tet_resolution < 2 or cfg.mesh_resolution < 8:
        raise UserInputError("need resolution >= 8, n_samples >= 2, tet_resolution >= 2 and mesh_resolution >= 8")
    if cfg.view_prompts and "{prompt}" not in cfg.view_template:
        raise UserInputError("view_template needs a {prompt} placeholder (and a {view} one)")
    if not (0 <= cfg.t_min <= min(cfg.t_max, cfg.fine_t_max) and max(cfg.t_max, cfg.t_max_end, cfg.fine_t_max) <= 1):
        raise UserInputError("need 0 <= t_min <= t_max, fine_t_max <= 1")
    if min(cfg.camera_distance_min, cfg.fine_camera_distance_min) <= cfg.bound:
        raise UserInputError("cameras must stay outside the bounding sphere: camera_distance_min > bound "
                             f"({cfg.bound})")
    threshold(cfg)


# ----------------------------------------------------------------------------------------------------------
# Training


def _train(cfg: Magic3DConfig, ctx: RunContext) -> Iterator[Event]:
    import torch

    from .core.cameras import look_at, spherical_to_cartesian
    from .core.magic3d_mesh import coarse_to_dmtet, export_run
    from .core.priors.prompts import view_direction
    from .core.text3d import BackgroundField, PixelRays, load_prior

    _check(cfg)
    dev = ctx.device
    started = time.perf_counter()
    guidance, text, prompt_for = yield from load_prior(cfg, dev)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # the prior's convolutions see one input size per stage

    mid_dist = 0.5 * (cfg.camera_distance_min + cfg.camera_distance_max)
    preview_c2w = look_at(spherical_to_cartesian(mid_dist, math.radians(PREVIEW_VIEW["elevation"]),
                                                 math.radians(PREVIEW_VIEW["azimuth"]))).to(dev)
    run = dict(ctx=ctx, guidance=guidance, text=text, prompt_for=prompt_for, rays=PixelRays(dev),
               preview_c2w=preview_c2w, mid_dist=mid_dist,
               direction=lambda e, a: view_direction(e, a, cfg.front_width_deg, cfg.overhead_elevation_deg))
    metrics = {"load_seconds": time.perf_counter() - started}
    grid = None
    if cfg.from_coarse:
        student, background, method = load_coarse(cfg.from_coarse, dev)
        background = (background or BackgroundField()).to(dev)
        yield Log(f"refining the {method} coarse field of {cfg.from_coarse}: the coarse stage is skipped")
    else:
        student, background, grid = yield from _coarse(cfg, metrics, **run)
    student.eval()
    # the turntable's coarse half: the colour field keeps training in the fine stage, so keep the coarse one
    coarse = copy.deepcopy(student) if cfg.export and cfg.turntable_frames else None

    dmtet, coarse_mesh = yield from coarse_to_dmtet(cfg, student, dev, metrics)
    yield from _fine(cfg, metrics, student, background, dmtet, **run)
    if dev.type == "cuda":
        metrics["peak_gpu_gb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    if cfg.export:
        yield from export_run(cfg, ctx, student, background, dmtet, coarse_mesh, (coarse, grid, run["rays"]), metrics,
                              guidance.name)
    yield Log(f"done: {cfg.prompt!r} distilled from {guidance.name}")
    first = [k for k in ("mesh_faces", "surface_threshold", "coarse_seconds", "fine_seconds") if k in metrics]
    yield Done(list(ctx.artifacts), {**{k: metrics[k] for k in first}, **metrics}, time.perf_counter() - started)


def _flush(acc: dict, step: int, stage: str) -> dict[str, float]:
    """The mean of each accumulated term since the last flush (one host sync); stops a diverged run."""
    import torch

    n = LOG_EVERY if step % LOG_EVERY == 0 else step % LOG_EVERY
    losses = {k: v / n for k, v in zip(acc, torch.stack(list(acc.values())).tolist())}
    for v in acc.values():
        v.zero_()
    if not math.isfinite(losses["loss"]):
        raise UserInputError(f"training diverged in the {stage} stage (loss is {losses['loss']}) at step {step}: "
                             "lower --lr, --fine-lr or --guidance-scale, or try another --seed")
    return losses


def _preview_due(cfg: Magic3DConfig, step: int, total: int) -> bool:
    return step % max(1, cfg.preview_every) == 0 or step == total or step == LOG_EVERY


def _coarse(cfg: Magic3DConfig, metrics: dict, ctx: RunContext, guidance, text, prompt_for, rays, direction,
            preview_c2w, mid_dist) -> Iterator[Event]:
    """The coarse stage; returns (student, background, occupancy grid)."""
    import torch

    from .core.images import normals_to_uint8, to_uint8
    from .core.occupancy import OccupancyGrid
    from .core.priors.guidance import TextEmbeddings, residual_image
    from .core.text3d import Views, distill_step, pick_shading, render_view

    dev = ctx.device
    student, background = (m.to(dev) for m in build_student(cfg))
    grid = OccupancyGrid(cfg.bound, cfg.occupancy_resolution).to(dev) if cfg.occupancy_resolution else None
    modules = torch.nn.ModuleDict({"student": student, "background": background})
    opt = torch.optim.Adam([{"params": student.parameters(), "lr": cfg.lr},
                            {"params": background.parameters(), "lr": 1e-3}], betas=(0.9, 0.99), eps=1e-15)
    b, steps = cfg.batch_size, cfg.coarse_steps
    views = Views(steps * b, cfg.seed, (cfg.camera_distance_min, cfg.camera_distance_max),
                  (cfg.elevation_min, cfg.elevation_max), (cfg.fov_min, cfg.fov_max), dev)
    names = [direction(e, a) for e, a in zip(views.elevation, views.azimuth)]
    shade_rng = random.Random(cfg.seed)
    step_size = 2 * cfg.bound / cfg.n_samples  # the grid keeps sigma * step, as the marcher would see it
    mid_fov = 0.5 * (cfg.fov_min + cfg.fov_max)
    yield Log(f"coarse stage: hash-grid field ({cfg.hash_levels} levels, 2^{cfg.hash_log2_size} entries, finest "
              f"{cfg.hash_max_res}) on {dev}, {steps} steps of {b} view(s) at {cfg.resolution}px; prompt "
              f"{cfg.prompt!r}" + (f", negative {cfg.negative_prompt!r}" if cfg.negative_prompt else ""))
    acc = {k: torch.zeros((), device=dev) for k in ("loss", "sds_grad", "orient", "opacity", "t")}
    started = time.perf_counter()
    for step in range(1, steps + 1):
        modules.train()
        progress = (step - 1) / steps
        if grid is not None and (step - 1) % cfg.occupancy_every == 0:
            grid.update(student.density, step_size, step - 1)
        idx = range((step - 1) * b, step * b)
        # Magic3D's shading: ambient-only (the albedo) first, then random diffuse or textureless.
        shading = pick_shading(progress, shade_rng, cfg.albedo_warmup, cfg.albedo_prob, cfg.textureless_prob)
        batch_text = TextEmbeddings.cat([text[names[i]] for i in idx])
        loss, terms, sds = distill_step(student, background, guidance, batch_text, views, idx, rays, cfg.resolution,
                                        progress, shading, cfg, grid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in terms.items():
            acc[k] += v
        if step % LOG_EVERY == 0 or step == steps:
            losses = _flush(acc, step, "coarse")
            if _preview_due(cfg, step, steps):
                modules.eval()
                view = render_view(student, background if cfg.background == "mlp" else None, rays, preview_c2w,
                                   mid_fov, cfg.preview_size, cfg.n_samples, cfg.n_importance, grid)
                images = {"rgb": to_uint8(view["rgb"]), "opacity": to_uint8(view["opacity"]),
                          "normal": normals_to_uint8(view["normal"], view["opacity"][..., None]),
                          "sds": to_uint8(residual_image(sds.residual))}
                yield Preview(step, images, caption=f"coarse stage, step {step} · last step: {shading}, "
                              f"t={float(sds.t[0]) / guidance.num_train_timesteps:.2f}, "
                              f"prompt {prompt_for(names[idx.stop - 1])!r}")
            yield Progress(step, steps, losses, stage="coarse")
    metrics.update(coarse_seconds=time.perf_counter() - started, coarse_steps=float(steps),
                   coarse_seconds_per_step=(time.perf_counter() - started) / steps)
    if grid is not None:
        metrics["occupied_fraction"] = float(grid.binary.float().mean())
    if cfg.export:
        torch.save({"method": "magic3d", "config": asdict(cfg), "student": student.state_dict(),
                    "background": background.state_dict()}, ctx.path("coarse.pt"))
        yield ctx.artifact("checkpoint", ctx.path("coarse.pt"), "coarse checkpoint (--from-coarse refines it)")
    return student, background, grid


def _fine(cfg: Magic3DConfig, metrics: dict, student, background, dmtet, ctx: RunContext, guidance, text, prompt_for,
          rays, direction, preview_c2w, mid_dist) -> Iterator[Event]:
    """The fine stage: SDS on rasterized renders of the DMTet surface, the SDF, offsets and colour field trained."""
    import torch

    from .core.cameras import Camera, look_at, spherical_to_cartesian
    from .core.dmtet import face_pairs, render_surface, surface_view
    from .core.images import to_uint8
    from .core.magic3d_mesh import colour_fn, fine_view, texture_radius
    from .core.priors.guidance import TextEmbeddings, residual_image
    from .core.shape_losses import laplacian_smoothing, normal_consistency
    from .core.shapes import mesh_edges
    from .core.text3d import Views, pick_shading, random_lights, view_backgrounds

    dev = ctx.device
    res = cfg.fine_resolution or guidance.resolution
    b, steps = cfg.batch_size, cfg.fine_steps
    views = Views(steps * b, cfg.seed + 1, (cfg.fine_camera_distance_min, cfg.fine_camera_distance_max),
                  (cfg.elevation_min, cfg.elevation_max), (cfg.fine_fov_min, cfg.fine_fov_max), dev)
    names = [direction(e, a) for e, a in zip(views.elevation, views.azimuth)]
    shade_rng = random.Random(cfg.seed + 1)
    radius = texture_radius(cfg, res)
    texture = colour_fn(student, cfg, radius)
    # the colour field: the encoding and albedo head (the density head rests); a DreamFusion student's shared head
    colour = [p for n, p in student.named_parameters() if student.albedo_net is None or not n.startswith("net.")]
    opt = torch.optim.Adam([{"params": [dmtet.sdf, dmtet.offset], "lr": cfg.fine_lr},
                            {"params": colour, "lr": cfg.fine_texture_lr},
                            {"params": background.parameters(), "lr": 1e-3}], betas=(0.9, 0.99), eps=1e-15)
    yield Log(f"fine stage: DMTet surface rasterized at {res}px ({guidance.name} sees {guidance.resolution}px), "
              f"{steps} steps of {b} view(s), t in [{cfg.t_min}, {cfg.fine_t_max}]")
    acc = {k: torch.zeros((), device=dev) for k in ("loss", "sds_grad", "normal", "laplacian", "coverage", "t")}
    fine_dist, fine_fov = fine_view(cfg)
    preview_c2w = look_at(spherical_to_cartesian(fine_dist, math.radians(PREVIEW_VIEW["elevation"]),
                                                 math.radians(PREVIEW_VIEW["azimuth"]))).to(dev)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        student.train()
        idx = range((step - 1) * b, step * b)
        verts, faces = dmtet()
        if len(faces) == 0:
            raise UserInputError(f"the fine mesh vanished at step {step}: lower --fine-lr, or change "
                                 "--surface-threshold so the tet grid starts from more of the coarse shape")
        cams = [Camera.from_fov(views.c2w[i], math.radians(views.fov[i]), res, res) for i in idx]
        d = torch.cat([rays(views.c2w[i], views.fov[i], res)[1] for i in idx])
        bg = view_backgrounds(cfg.background, background, d, b).expand(b * res * res, 3).reshape(b, res, res, 3)
        shading = pick_shading(1.0, shade_rng, 0.0, cfg.albedo_prob, cfg.textureless_prob)
        out = render_surface(verts, faces, cams, texture, bg, shading,
                             random_lights(views.c2w[idx.start:idx.stop, :3, 3]), cfg.ambient)
        sds = guidance.sds(out["rgb"], TextEmbeddings.cat([text[names[i]] for i in idx]), cfg.guidance_scale,
                           (cfg.t_min, cfg.fine_t_max))
        normal = normal_consistency(verts, faces, face_pairs(faces))
        lap = laplacian_smoothing(verts, mesh_edges(faces)) if cfg.lambda_laplacian else torch.zeros((), device=dev)
        loss = sds.loss + cfg.lambda_normal * normal + cfg.lambda_laplacian * lap
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in (("loss", loss), ("sds_grad", sds.grad_norm), ("normal", normal), ("laplacian", lap),
                     ("coverage", out["alpha"].mean()), ("t", sds.t.float().mean() / guidance.num_train_timesteps)):
            acc[k] += v.detach()
        if step % LOG_EVERY == 0 or step == steps:
            losses = _flush(acc, step, "fine")
            if _preview_due(cfg, step, steps):
                student.eval()
                with torch.no_grad():
                    view = surface_view(*dmtet(), texture, preview_c2w, fine_fov, cfg.preview_size)
                images = dict(view, sds=to_uint8(residual_image(sds.residual)))
                yield Preview(step, images, caption=f"fine stage, step {step} · {len(faces):,} faces · last step: "
                              f"{shading}, t={float(sds.t[0]) / guidance.num_train_timesteps:.2f}, "
                              f"prompt {prompt_for(names[idx.stop - 1])!r}")
            yield Progress(step, steps, losses, stage="fine")
    seconds = time.perf_counter() - started
    metrics.update(fine_seconds=seconds, fine_steps=float(steps), fine_seconds_per_step=seconds / steps,
                   fine_resolution=float(res), texture_radius=radius)
    student.eval()
