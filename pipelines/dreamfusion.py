"""DreamFusion (Poole et al. 2022): text to 3D by score distillation from a frozen text-to-image diffusion model.

The student (core.text3d) is a NeRF inside a bounding sphere: density and albedo from an MLP on harmonic
embeddings of x (the second seed's student) or from a hash grid, plus a density blob at the centre so it
starts as a soft ball; normals are the negated, normalised density gradient. Each step renders random cameras at 64x64 (or a
size that grows), shades each point at random with its albedo, Lambertian diffuse under a random point
light, or textureless (white) diffuse, composites on a background (a small network of the view direction, or
a random colour) and distils: the SDS gradient of the prior (core.priors: Stable Diffusion 2.1-base by
default) for the prompt with a view suffix ("..., front/side/back/overhead view"), plus DreamFusion's
orientation and opacity regularisers. Exports a turntable, a marching-cubes mesh with albedo vertex colours
and CLIP-free sanity metrics (mean opacity, mesh size).
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from typing import ClassVar, Iterator, Literal

from .config import RunContext, UserInputError, run_guarded
from .core.text3d_config import Text3DConfig
from .events import Done, Event, Log, Preview, Progress


@dataclass
class DreamFusionConfig(Text3DConfig):
    steps: int = 10000
    """Optimisation steps (one batch of random views each)."""
    lr: float = 0.0
    """Adam learning rate of the student; 0 picks the default (1e-3 harmonic MLP, 1e-2 hash grid)."""
    student: Literal["harmonic", "hash"] = "harmonic"
    """'harmonic': an MLP on harmonic embeddings of x; 'hash': a multiresolution hash grid and a small MLP."""
    width: int = 64
    """Student MLP width."""
    depth: int = 3
    """Student MLP hidden layers (hash: 1)."""
    n_freqs: int = 6
    """harmonic: frequencies of the embedding (sin/cos of 2^k pi x, k < n_freqs)."""
    hash_levels: int = 16
    """hash: hash-grid levels."""
    hash_log2_size: int = 19
    """hash: log2 of entries per level."""
    resolution_end: int = 0
    """Grow the renders linearly to this size over the first half of training (0: keep resolution)."""
    mesh_density: float = 5.0
    """Density level of the exported mesh's surface."""

    PRESETS: ClassVar[dict] = {
        # A few minutes on a 2-core CPU with the embedded prior (about 0.5 s a step measured there: the tab's estimate).
        "cpu": dict(steps=300, resolution=32, n_samples=32, n_importance=0, preview_every=25, preview_size=64,
                    mesh_resolution=64, turntable_frames=24),
        "fast": dict(student="hash", steps=3000, t_max_end=0.5, n_importance=0),
        # One ZeroGPU call (120 s at most): 1200 steps at the measured 45 ms, loading and exports in the rest.
        "zerogpu": dict(student="hash", steps=1200, t_max_end=0.5, n_importance=0, mesh_resolution=96,
                        turntable_frames=24),
        "quality": dict(student="harmonic", width=128, depth=4, steps=15000, resolution_end=128, n_importance=64,
                        mesh_resolution=256, turntable_frames=96, preview_size=256),
    }


CONFIG = DreamFusionConfig
LOG_EVERY = 10  # steps between Progress events: each one costs a host sync
PREVIEW_VIEW = dict(elevation=15.0, azimuth=0.0)  # the preview camera looks at the front


def run(cfg: DreamFusionConfig) -> Iterator[Event]:
    return run_guarded("dreamfusion", cfg, _train, "lower --resolution, --n-samples or --batch-size, or use "
                       "--prior-dtype float16")


# ----------------------------------------------------------------------------------------------------------
# The student


def build_student(cfg: DreamFusionConfig):
    """(AlbedoField, BackgroundField) of core.text3d, from the config."""
    from .core.text3d import AlbedoField, BackgroundField

    field = AlbedoField(cfg.bound, cfg.student, cfg.width, cfg.depth, cfg.n_freqs, cfg.hash_levels, cfg.hash_log2_size,
                        cfg.blob_density, cfg.blob_radius)
    return field, BackgroundField()


# ----------------------------------------------------------------------------------------------------------
# Training


def _train(cfg: DreamFusionConfig, ctx: RunContext) -> Iterator[Event]:
    import torch

    from .core.cameras import look_at, spherical_to_cartesian
    from .core.images import normals_to_uint8, to_uint8
    from .core.priors.guidance import TextEmbeddings, residual_image
    from .core.priors.prompts import view_direction
    from .core.text3d import PixelRays, Views, distill_step, load_prior, pick_shading, render_view

    _check(cfg)
    dev = ctx.device
    started = time.perf_counter()
    guidance, text, prompt_for = yield from load_prior(cfg, dev)

    def direction(elev: float, azim: float) -> str:
        return view_direction(elev, azim, cfg.front_width_deg, cfg.overhead_elevation_deg)

    student, background = build_student(cfg)
    student, background = student.to(dev), background.to(dev)
    modules = torch.nn.ModuleDict({"student": student, "background": background})
    lr = cfg.lr or (1e-2 if cfg.student == "hash" else 1e-3)
    opt = torch.optim.Adam([{"params": student.parameters(), "lr": lr},
                            {"params": background.parameters(), "lr": 1e-3}], betas=(0.9, 0.99), eps=1e-15)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # the prior's convolutions see one input size all run long

    all_views = Views(cfg.steps * cfg.batch_size, cfg.seed, (cfg.camera_distance_min, cfg.camera_distance_max),
                      (cfg.elevation_min, cfg.elevation_max), (cfg.fov_min, cfg.fov_max), dev)
    views = [direction(e, a) for e, a in zip(all_views.elevation, all_views.azimuth)]
    shade_rng = random.Random(cfg.seed)
    rays = PixelRays(dev)
    bg_net = background if cfg.background == "mlp" else None

    def render(c2w, fov_deg: float, res: int) -> dict:
        return render_view(student, bg_net, rays, c2w, fov_deg, res, cfg.n_samples, cfg.n_importance)

    mid_dist = 0.5 * (cfg.camera_distance_min + cfg.camera_distance_max)
    mid_fov = 0.5 * (cfg.fov_min + cfg.fov_max)
    preview_c2w = look_at(spherical_to_cartesian(mid_dist, math.radians(PREVIEW_VIEW["elevation"]),
                                                 math.radians(PREVIEW_VIEW["azimuth"])))
    preview_prompt = prompt_for(direction(PREVIEW_VIEW["elevation"], PREVIEW_VIEW["azimuth"]))
    yield Log(f"{cfg.student} student on {dev}, {cfg.steps} steps of {cfg.batch_size} view(s); prompt "
              f"{cfg.prompt!r}" + (f", negative {cfg.negative_prompt!r}" if cfg.negative_prompt else "")
              + (f"; view prompts like {preview_prompt!r}" if cfg.view_prompts else ""))

    acc = {k: torch.zeros((), device=dev) for k in ("loss", "sds_grad", "orient", "opacity", "t")}
    sds = None
    step = 0
    load_seconds, train_started = time.perf_counter() - started, time.perf_counter()
    for step in range(1, cfg.steps + 1):
        modules.train()
        progress = (step - 1) / cfg.steps
        res = cfg.resolution
        if cfg.resolution_end:
            res = int(round(cfg.resolution + (cfg.resolution_end - cfg.resolution) * min(1.0, 2 * progress)))
        idx = range((step - 1) * cfg.batch_size, step * cfg.batch_size)
        # DreamFusion's shading: albedo only at first, then at random albedo, diffuse or textureless.
        shading = pick_shading(progress, shade_rng, cfg.albedo_warmup, cfg.albedo_prob, cfg.textureless_prob)
        loss, terms, sds = distill_step(student, background, guidance,
                                        TextEmbeddings.cat([text[views[i]] for i in idx]), all_views, idx, rays, res,
                                        progress, shading, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in terms.items():
            acc[k] += v

        if step % LOG_EVERY == 0 or step == cfg.steps:
            n = LOG_EVERY if step % LOG_EVERY == 0 else step % LOG_EVERY
            losses = {k: v / n for k, v in zip(acc, torch.stack(list(acc.values())).tolist())}  # one host sync
            for v in acc.values():
                v.zero_()
            if not math.isfinite(losses["loss"]):
                raise UserInputError(f"training diverged (loss is {losses['loss']}) at step {step}: lower --lr or "
                                     "--guidance-scale, or try another --seed")
            if ctx.preview_due(step) or step == LOG_EVERY:
                modules.eval()
                view = render(preview_c2w, mid_fov, cfg.preview_size)
                last = prompt_for(views[idx.stop - 1])
                images = {"rgb": to_uint8(view["rgb"]), "opacity": to_uint8(view["opacity"]),
                          "normal": normals_to_uint8(view["normal"], view["opacity"][..., None]),
                          "sds": to_uint8(residual_image(sds.residual))}
                yield Preview(step, images,
                              caption=f"step {step} · preview prompt {preview_prompt!r} · last step: {shading}, "
                                      f"t={float(sds.t[0]) / guidance.num_train_timesteps:.2f}, prompt {last!r}")
            yield Progress(step, cfg.steps, losses)
    train_seconds = time.perf_counter() - train_started

    modules.eval()
    metrics = {"train_seconds": train_seconds, "steps": float(step), "seconds_per_step": train_seconds / step,
               "load_seconds": load_seconds}
    if dev.type == "cuda":
        metrics["peak_gpu_gb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    if cfg.export:
        yield from _export(cfg, ctx, student, render, metrics, guidance.name, mid_dist, mid_fov)
    yield Log(f"done: {cfg.prompt!r} distilled from {guidance.name}")
    yield Done(list(ctx.artifacts), metrics, time.perf_counter() - started)


def _check(cfg: DreamFusionConfig) -> None:
    from .core.priors.prompts import check_prompt

    check_prompt(cfg.prompt, "prompt")
    check_prompt(cfg.negative_prompt, "negative prompt", required=False)
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.resolution < 8 or cfg.n_samples < 2:
        raise UserInputError("steps and batch_size must be positive, resolution at least 8, n_samples at least 2")
    if cfg.view_prompts and "{prompt}" not in cfg.view_template:
        raise UserInputError("view_template needs a {prompt} placeholder (and a {view} one), e.g. "
                             "'{prompt}, {view} view'")
    if not (0 <= cfg.t_min <= cfg.t_max <= 1 and 0 <= cfg.t_max_end <= 1):
        raise UserInputError("need 0 <= t_min <= t_max <= 1 and 0 <= t_max_end <= 1")
    if cfg.guidance_scale < 0:
        raise UserInputError("guidance_scale must be 0 or more (DreamFusion uses 100)")
    if cfg.camera_distance_min <= cfg.bound:
        raise UserInputError(f"cameras must stay outside the bounding sphere: camera_distance_min > bound "
                             f"({cfg.bound})")


def _export(cfg: DreamFusionConfig, ctx: RunContext, student, render_view, metrics: dict, prior_name: str,
            dist: float, fov: float) -> Iterator[Event]:
    """Turntable (rgb | normals), coloured mesh, checkpoint and the run's settings; sanity metrics."""
    import numpy as np
    import torch

    from .core.budget import export_seconds, grid_resolution, turntable
    from .core.cameras import orbit_cameras
    from .core.export import save_mesh, save_video
    from .core.geometry import evaluate_grid, marching_cubes
    from .core.images import normals_to_uint8, to_uint8

    dev = ctx.device
    budget = export_seconds(metrics.get("train_seconds", 0.0))  # exports cost in proportion to the run
    opacities = []

    def frame(k: int, n: int):
        view = render_view(orbit_cameras(n, dist, 15.0, fov, cfg.preview_size)[k].c2w, fov, cfg.preview_size)
        opacities.append(float(view["opacity"].mean()))
        return np.concatenate([to_uint8(view["rgb"]), normals_to_uint8(view["normal"], view["opacity"][..., None])],
                              axis=1)

    frames = yield from turntable(frame, cfg.turntable_frames, budget)
    if frames:
        metrics["mean_opacity"] = sum(opacities) / len(opacities)
        yield ctx.artifact("video", save_video(frames, ctx.path("turntable.mp4")),
                           f"turntable: rgb | normals ({prior_name})")

    with torch.no_grad():
        res = grid_resolution(lambda r: evaluate_grid(student.density, r, -cfg.bound, cfg.bound, dev),
                              cfg.mesh_resolution, budget)
        yield Log(f"extracting the mesh ({res}^3 grid)")
        density = evaluate_grid(student.density, res, -cfg.bound, cfg.bound, dev)
    mesh = marching_cubes(density, cfg.mesh_density, -cfg.bound, cfg.bound)
    metrics["mesh_faces"] = float(mesh.num_faces)
    if mesh.num_faces == 0:
        yield Log(f"no surface above density {cfg.mesh_density}: no mesh written (lower --mesh-density)", "warning")
    else:
        with torch.no_grad():
            verts = mesh.verts.to(dev)
            mesh.vert_colors = torch.cat([student(verts[i:i + 65536])[1] for i in range(0, len(verts), 65536)]).cpu()
        metrics["mesh_extent"] = float((mesh.verts.amax(0) - mesh.verts.amin(0)).max())
        yield ctx.artifact("mesh", save_mesh(mesh, ctx.path("mesh.glb")), f"mesh (.glb) ({prior_name})")
        yield ctx.artifact("mesh", save_mesh(mesh, ctx.path("mesh.obj")), "mesh (.obj)")
    yield Log("writing the checkpoint")
    torch.save({"config": asdict(cfg), "student": student.state_dict()}, ctx.path("model.pt"))
    yield ctx.artifact("checkpoint", ctx.path("model.pt"), "checkpoint")
    settings = {"prompt": cfg.prompt, "negative_prompt": cfg.negative_prompt, "prior": prior_name,
                "config": asdict(cfg), "metrics": metrics}
    ctx.path("run.json").write_text(json.dumps(settings, indent=1))
    yield ctx.artifact("json", ctx.path("run.json"), f"run settings: prompt, prior {prior_name}")
