"""Dream Fields (Jain et al. 2022): a NeRF optimised so that CLIP sees the caption from every pose.

Each step renders the field from random poses (azimuth all round, an elevation range, a radius) with a fixed
focal length (the paper's x1.2), composites on random backgrounds (noise, checkerboards, Fourier textures,
sometimes blurred), takes random crops, applies CLIP's preprocessing and maximises the cosine between the
image and caption embeddings (core.priors.clip). A transmittance loss -min(tau, mean transmittance), with tau
annealed up over the first steps, keeps the scene sparse. The field has no view dependence and lives in a
cube; origin tracking moves the cameras' target to an exponential moving average of the density-weighted
centre. Exports a turntable, a marching-cubes mesh, the mean CLIP score over held-out poses and, given a
prompt set, CLIP R-precision; both are in-sample (``*_in_sample``): scored by the CLIP that was optimised,
only the poses are new (the paper scores with a different CLIP).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from typing import ClassVar, Iterator, Literal

from .config import RunContext, UserInputError, run_guarded
from .core.priors.clip import AUTO
from .core.text3d_config import FieldConfig
from .events import Done, Event, Log, Preview, Progress


@dataclass
class DreamFieldsConfig(FieldConfig):
    """The renders, cameras' elevations and outputs come from ``FieldConfig``; the fields redeclared here differ
    in their default or their meaning."""

    caption: str = "a bouquet of flowers in a vase"
    """What CLIP should see from every pose."""
    scorer: str = AUTO
    """Image-text scorer: a Hub id or a local folder of a transformers CLIPModel, 'embedded', or 'auto' (CLIP
    ViT-B/32 when it is in the local Hugging Face cache, else the embedded scorer; the log says which)."""
    scorer_dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    """Precision of CLIP on CUDA ('auto': float16); always float32 on CPU."""
    scorer_compile: Literal["off", "default", "reduce-overhead"] = "off"
    """torch.compile CLIP's image tower on CUDA. 'reduce-overhead' (CUDA graphs) measured on an H200 with
    ViT-B/32: 3.3 ms per scorer step against 21.6 eager, the default 10k-step run in 4.0 min; the first steps
    then take a minute or so. Off by default: CUDA graphs want one thread to drive the run (the CLI does)."""
    steps: int = 10000
    """Optimisation steps."""
    batch_size: int = 4
    """Random poses rendered per step."""
    lr: float = 1e-4
    """Adam learning rate (the paper: 1e-4 with a short warm-up)."""
    lr_warmup: int = 100
    """Steps of linear learning-rate warm-up."""
    width: int = 128
    """Field MLP width."""
    depth: int = 4
    """Field MLP hidden layers."""
    n_freqs: int = 8
    """Frequencies of the harmonic embedding of x (sin/cos of 2^k pi x / bound)."""
    density_shift: float = -1.0
    """Added to the network's density output before the softplus: the starting fog's thickness."""
    bound: float = 1.0
    """Half side of the cube the scene lives in (zero density outside)."""
    resolution: int = 96
    """Side of the training renders (crops are resized to CLIP's input)."""
    radius_min: float = 4.0
    """Random poses: nearest camera distance from the tracked origin."""
    radius_max: float = 4.0
    """Random poses: farthest camera distance."""
    elevation_min: float = 0.0
    """Random poses: lowest elevation in degrees."""
    elevation_max: float = 40.0
    """Random poses: highest elevation in degrees."""
    focal_scale: float = 1.2
    """Focal length as a multiple of NeRF-synthetic's (0.5 W / tan(0.5 * 0.6911 rad)); the paper found 1.2 best."""
    n_crops: int = 1
    """Random crops of each render scored per step."""
    crop_min: float = 0.8
    """Smallest crop side as a fraction of the render's."""
    tau_start: float = 0.4
    """Target mean transmittance at step 0."""
    tau_end: float = 0.88
    """Target mean transmittance after the annealing: the paper's ~88 percent.

    As recalled from the paper, tau is annealed from 0.4 to 0.88 over the first 500 iterations, and the official
    code (google-research/dreamfields, JAX) writes the same loss as a clipped target on the mean opacity
    (1 - tau) with weight ~0.5. Neither the start value nor the official code's exact schedule could be checked
    offline here: tau_start=0.4 and the linear ramp are assumptions."""
    tau_anneal_steps: int = 500
    """Steps over which tau moves linearly from tau_start to tau_end."""
    lambda_transmittance: float = 0.5
    """Weight of the transmittance loss -min(tau, mean transmittance)."""
    backgrounds: str = "noise,checkerboard,fourier"
    """Comma-separated kinds of random background: noise, checkerboard, fourier."""
    blur_prob: float = 0.5
    """Probability of blurring a background."""
    blur_sigma_max: float = 3.0
    """Largest blur sigma, in pixels of a 64 px image."""
    origin_decay: float = 0.999
    """Origin tracking: EMA decay of the density-weighted centre (0 turns tracking off)."""
    eval_views: int = 8
    """Held-out poses (evenly spaced azimuths) for the final mean CLIP score and R-precision."""
    rprecision_prompts: str = "auto"
    """Prompt set for CLIP R-precision: a JSON list/dict of lists or a .txt of lines; 'auto': the shared
    prompt library when present; '': none."""
    mesh_density: float = 5.0
    """Density level of the exported mesh's surface."""

    PRESETS: ClassVar[dict] = {
        # A few minutes on a 2-core CPU with the embedded scorer (0.13 s a step measured there: the tab's estimate).
        "cpu": dict(steps=600, batch_size=1, resolution=48, n_samples=32, width=64, depth=3, eval_views=2,
                    preview_every=25, mesh_resolution=64, turntable_frames=24, preview_size=64),
        "fast": dict(steps=2000, resolution=64, n_samples=48, width=64, depth=3),
        # One ZeroGPU call (120 s at most): the fast sizes for 1200 steps (44 ms a step at the default sizes).
        "zerogpu": dict(steps=1200, resolution=64, n_samples=48, width=64, depth=3, mesh_resolution=96,
                        turntable_frames=24),
        "quality": dict(steps=20000, resolution=128, n_samples=128, width=256, depth=6, n_crops=4,
                        mesh_resolution=256, turntable_frames=96, preview_size=256),
    }


CONFIG = DreamFieldsConfig
LOG_EVERY = 10
BLENDER_FOV = 0.6911112070083618  # NeRF-synthetic's camera_angle_x (rad)


def run(cfg: DreamFieldsConfig) -> Iterator[Event]:
    return run_guarded("dreamfields", cfg, _train, "lower --resolution, --n-samples, --batch-size or --n-crops")


# ----------------------------------------------------------------------------------------------------------
# The pieces of the method (tested one by one)


def make_field(cfg: DreamFieldsConfig):
    import torch
    from torch import nn

    from .core.encodings import HarmonicEncoding
    from .core.fields import mlp

    class DreamField(nn.Module):
        """x (N, 3) -> (sigma (N,) >= 0, rgb (N, 3)); no view direction; zero density outside the cube."""

        def __init__(self):
            super().__init__()
            self.bound, self.shift = float(cfg.bound), float(cfg.density_shift)
            self.encoding = HarmonicEncoding(3, cfg.n_freqs, scale=math.pi)
            self.net = mlp(self.encoding.out_dim, cfg.width, 4, cfg.depth)

        def forward(self, x, d=None):
            h = self.net(self.encoding(x / self.bound)).float()
            inside = (x.abs() <= self.bound).all(-1)
            return torch.nn.functional.softplus(h[:, 0] + self.shift) * inside, torch.sigmoid(h[:, 1:])

        def density(self, x):
            return self(x)[0]

    return DreamField()


def sample_poses(n: int, generator, radius=(4.0, 4.0), elevation_deg=(0.0, 40.0), azimuth_deg=(-180.0, 180.0)):
    """``n`` cameras looking at the origin, uniform in each range. Returns c2w (n, 4, 4), elevation, azimuth
    and radius (n,) each, in degrees."""
    import torch

    from .core.cameras import look_at, spherical_to_cartesian

    u = torch.rand(n, 3, generator=generator)
    lerp = lambda rng, x: rng[0] + (rng[1] - rng[0]) * x  # noqa: E731
    r, elev, azim = lerp(radius, u[:, 0]), lerp(elevation_deg, u[:, 1]), lerp(azimuth_deg, u[:, 2])
    return look_at(spherical_to_cartesian(r, torch.deg2rad(elev), torch.deg2rad(azim))), elev, azim, r


def transmittance_loss(opacity, tau: float):
    """-min(tau, mean transmittance): pushes the mean transmittance up to tau and no further."""
    import torch

    return -torch.clamp((1 - opacity).mean(), max=tau)


def tau_at(step: int, cfg: DreamFieldsConfig) -> float:
    """The annealed target transmittance at 0-based ``step``."""
    if cfg.tau_anneal_steps <= 0:
        return cfg.tau_end
    f = min(1.0, step / cfg.tau_anneal_steps)
    return cfg.tau_start + (cfg.tau_end - cfg.tau_start) * f


def update_origin(origin, weights, points, decay: float):
    """EMA of the density-weighted centre: decay * origin + (1 - decay) * sum(w x) / sum(w), no gradient.

    Args:
        origin: (3,); weights: (...,) compositing weights; points: (..., 3) the samples' positions.
    """
    import torch

    with torch.no_grad():
        w = weights.reshape(-1, 1).float()
        total = w.sum()
        centre = (w * points.reshape(-1, 3)).sum(0) / total.clamp_min(1e-8)
        new = decay * origin + (1 - decay) * centre
        return torch.where(total > 1e-6, new, origin)  # an empty scene leaves it where it is


def random_crops(images, n: int, crop_min: float, generator):
    """(B, H, W, 3) -> (B * n, H, W, 3): square crops of side in [crop_min H, H] at random places, resized back."""
    import torch
    import torch.nn.functional as F

    b, h, w, _ = images.shape
    if crop_min >= 1.0 and n == 1:
        return images
    u = torch.rand(b * n, 3, generator=generator).tolist()
    out = []
    for k, (us, uy, ux) in enumerate(u):
        side = max(1, int(round(min(h, w) * (crop_min + (1 - crop_min) * us))))
        y, x = int(uy * (h - side + 1)), int(ux * (w - side + 1))
        crop = images[k // n, y:y + side, x:x + side].permute(2, 0, 1)[None]
        out.append(F.interpolate(crop, (h, w), mode="bilinear", align_corners=False) if side != h else crop)
    return torch.cat(out).permute(0, 2, 3, 1)


def render(field, c2w, origin, res: int, focal_scale: float, background, n_samples: int, perturb: bool,
           chunk: int = 1 << 15) -> dict:
    """Renders (B, 4, 4) poses shifted by ``origin`` (3,) through the cube at res x res.

    Args:
        background: (B, res, res, 3) or (3,) colour behind the scene.
    Returns:
        rgb (B, res, res, 3), opacity (B, res, res), weights (R, S) and points (R, S, 3) for origin tracking.
    """
    import torch

    from .core.rays import pixel_rays, ray_aabb
    from .core.volume import composite, intervals, stratified_samples

    dev = c2w.device
    b = c2w.shape[0]
    j, i = torch.meshgrid(torch.arange(res, device=dev) + 0.5, torch.arange(res, device=dev) + 0.5, indexing="ij")
    f = focal_scale * 0.5 * res / math.tan(0.5 * BLENDER_FOV)
    shifted = c2w.clone()
    shifted[:, :3, 3] = shifted[:, :3, 3] + origin
    o, d = pixel_rays(shifted.repeat_interleave(res * res, 0), i.reshape(-1).repeat(b), j.reshape(-1).repeat(b),
                      f, f, res / 2, res / 2)
    bg = background.reshape(-1, 3) if background.dim() > 1 else background.expand(o.shape[0], 3)
    near, far, _ = ray_aabb(o, d, -field.bound, field.bound)
    rgbs, opac, ws, xs = [], [], [], []
    for s in range(0, o.shape[0], chunk):
        oo, dd, nn_, ff = o[s:s + chunk], d[s:s + chunk], near[s:s + chunk], far[s:s + chunk]
        t = stratified_samples(nn_, ff, n_samples, perturb)
        x = oo[:, None] + t[..., None] * dd[:, None]
        sigma, rgb = field(x.reshape(-1, 3))
        out = composite(sigma.reshape(t.shape), rgb.reshape(*t.shape, 3), t, intervals(t, ff), bg[s:s + chunk])
        rgbs.append(out.rgb)
        opac.append(out.opacity)
        ws.append(out.extras["weights"])
        xs.append(x)
    return {"rgb": torch.cat(rgbs).reshape(b, res, res, 3), "opacity": torch.cat(opac).reshape(b, res, res),
            "weights": torch.cat(ws), "points": torch.cat(xs)}


# ----------------------------------------------------------------------------------------------------------
# Training


def _train(cfg: DreamFieldsConfig, ctx: RunContext) -> Iterator[Event]:
    import torch

    from .core.backgrounds import random_backgrounds
    from .core.cameras import look_at, spherical_to_cartesian
    from .core.images import to_uint8
    from .core.metrics import load_prompt_set, r_precision
    from .core.priors.clip import CLIPScorer, describe_scorer, load_scorer, resolve_scorer

    kinds = _check(cfg)
    dev = ctx.device
    started = time.perf_counter()
    if why := resolve_scorer(cfg.scorer)[1]:
        yield Log(f"scorer {why}")
    yield Log(f"loading the scorer: {describe_scorer(cfg.scorer)}")
    scorer = load_scorer(cfg.scorer, dev, cfg.scorer_dtype)
    if dev.type == "cuda":  # cuDNN's FIND (benchmark mode, left on by another method's run in this process)
        torch.backends.cudnn.benchmark = False  # cannot run inside the CUDA-graph capture that a run in a new
        # thread makes; CLIP's one patch convolution does as well on cuDNN's heuristics
    if hasattr(scorer, "compile") and scorer.compile(cfg.scorer_compile):  # 'off' undoes an earlier run's
        yield Log(f"scorer compile mode: {cfg.scorer_compile} (compiling makes the first steps slow)")
    yield Log(f"scorer: {scorer.name} ({str(scorer.dtype).removeprefix('torch.')} on {dev}); {cfg.resolution}px "
              f"renders are resized to its {scorer.image_size}px input")
    if resolve_scorer(cfg.scorer)[0].lower() == "embedded":
        from .core.priors.embedded import vocabulary_warning

        if warning := vocabulary_warning(cfg.caption, "scorer"):
            yield Log(warning, "warning")
    if scorer.n_tokens(cfg.caption) > scorer.max_tokens:
        reader = "CLIP" if isinstance(scorer, CLIPScorer) else "the embedded scorer's text encoder"
        yield Log(f"the caption is longer than {reader} reads ({scorer.max_tokens} tokens): the end was cut off",
                  "warning")
    text = scorer.encode_text([cfg.caption])

    field = make_field(cfg).to(dev)
    opt = torch.optim.Adam(field.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.lr_warmup)))
    gen = torch.Generator().manual_seed(cfg.seed)
    c2w_all = sample_poses(cfg.steps * cfg.batch_size, gen, (cfg.radius_min, cfg.radius_max),
                           (cfg.elevation_min, cfg.elevation_max))[0].to(dev)
    origin = torch.zeros(3, device=dev)
    mid_r, mid_elev = 0.5 * (cfg.radius_min + cfg.radius_max), 0.5 * (cfg.elevation_min + cfg.elevation_max)
    preview_c2w = look_at(spherical_to_cartesian(mid_r, math.radians(mid_elev), 0.0))[None].to(dev)
    white = torch.ones(3, device=dev)
    yield Log(f"field on {dev}: {cfg.steps} steps of {cfg.batch_size} pose(s), caption {cfg.caption!r}, "
              f"backgrounds {', '.join(kinds)}")

    @torch.no_grad()
    def view(c2w, size: int) -> dict:
        return render(field, c2w, origin, size, cfg.focal_scale, white, cfg.n_samples, False)

    acc = {k: torch.zeros((), device=dev) for k in ("loss", "clip", "transmittance", "tau")}
    scores = torch.zeros(cfg.steps, device=dev)
    load_seconds, train_started = time.perf_counter() - started, time.perf_counter()
    step = 0
    for step in range(1, cfg.steps + 1):
        field.train()
        b = cfg.batch_size
        c2w = c2w_all[(step - 1) * b:step * b]
        bg, bg_kinds = random_backgrounds(b, cfg.resolution, cfg.resolution, gen, kinds, cfg.blur_prob,
                                          (0.0, cfg.blur_sigma_max), dev)
        out = render(field, c2w, origin, cfg.resolution, cfg.focal_scale, bg, cfg.n_samples, True)
        crops = random_crops(out["rgb"], cfg.n_crops, cfg.crop_min, gen)
        clip = scorer.score(crops, text)[:, 0].mean()
        tau = tau_at(step - 1, cfg)
        t_loss = transmittance_loss(out["opacity"], tau)
        loss = -clip + cfg.lambda_transmittance * t_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if cfg.origin_decay > 0:
            origin = update_origin(origin, out["weights"].detach(), out["points"].detach(), cfg.origin_decay)
        scores[step - 1] = clip.detach()
        for k, v in (("loss", loss.detach()), ("clip", clip.detach()),
                     ("transmittance", 1 - out["opacity"].detach().mean()), ("tau", tau)):
            acc[k] += v  # on the device (tau is a float): no host sync inside the step

        if step % LOG_EVERY == 0 or step == cfg.steps:
            n = LOG_EVERY if step % LOG_EVERY == 0 else step % LOG_EVERY
            losses = {k: v / n for k, v in zip(acc, torch.stack(list(acc.values())).tolist())}
            for v in acc.values():
                v.zero_()
            if not math.isfinite(losses["loss"]):
                raise UserInputError(f"training diverged (loss is {losses['loss']}) at step {step}: lower --lr or "
                                     "try another --seed")
            if ctx.preview_due(step) or step == LOG_EVERY:
                field.eval()
                v = view(preview_c2w, cfg.preview_size)
                yield Preview(step, {"rgb": to_uint8(v["rgb"][0]), "opacity": to_uint8(v["opacity"][0]),
                                     "background": to_uint8(bg[0])},
                              caption=f"step {step} · CLIP score {losses['clip']:.3f} · tau {tau:.2f} · "
                                      f"background {bg_kinds[0]} · origin "
                                      f"({', '.join(f'{c:.2f}' for c in origin.tolist())})")
            yield Progress(step, cfg.steps, losses)
    train_seconds = time.perf_counter() - train_started

    field.eval()
    metrics = {"train_seconds": train_seconds, "steps": float(step), "seconds_per_step": train_seconds / step,
               "load_seconds": load_seconds, "final_clip": float(scores[step - 1])}
    # Held-out poses: evenly spaced azimuths, half a gap away from 0, at the middle elevation and radius.
    n = cfg.eval_views
    azim = torch.deg2rad((torch.arange(n) + 0.5) * 360.0 / n)
    eval_c2w = look_at(spherical_to_cartesian(torch.full((n,), mid_r), torch.full((n,), math.radians(mid_elev)),
                                              azim)).to(dev)
    with torch.no_grad():
        renders = torch.cat([view(eval_c2w[i:i + 1], cfg.preview_size)["rgb"] for i in range(n)])
        image_emb = torch.cat([scorer.encode_images(renders[i:i + 8]) for i in range(0, n, 8)])
        metrics["eval_clip_in_sample"] = float((image_emb @ text.T).mean())  # the optimised scorer: in-sample
        prompts = load_prompt_set(cfg.rprecision_prompts)
        if prompts:
            others = [p for p in prompts if p != cfg.caption]
            texts = torch.cat([text] + [scorer.encode_text(others[i:i + 64]) for i in range(0, len(others), 64)])
            metrics["r_precision_in_sample"] = r_precision(image_emb, texts)  # NaN: no distractors
            metrics["r_precision_prompts"] = float(texts.shape[0])
    rp = metrics.get("r_precision_in_sample")
    yield Log(f"in-sample scores (by the CLIP that was optimised; only the {n} poses are held out): mean CLIP score "
              f"{metrics['eval_clip_in_sample']:.4f}"
              + (f"; R-precision {rp:.2f} against {int(metrics['r_precision_prompts'])} prompts" if prompts else ""))
    if dev.type == "cuda":
        metrics["peak_gpu_gb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    if cfg.export:
        yield from _export(cfg, ctx, field, view, origin, metrics, scorer.name, scores[:step].tolist(), mid_r,
                           mid_elev)
    yield Log(f"done: {cfg.caption!r} scored by {scorer.name}")
    yield Done(list(ctx.artifacts), metrics, time.perf_counter() - started)


def _check(cfg: DreamFieldsConfig) -> tuple[str, ...]:
    """Validates the config; returns the background kinds."""
    from .core.backgrounds import KINDS

    from .core.priors.prompts import check_prompt

    check_prompt(cfg.caption if isinstance(cfg.caption, str) else "", "caption")
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.resolution < 8 or cfg.n_samples < 2 or cfg.n_crops < 1:
        raise UserInputError("steps, batch_size and n_crops must be positive, resolution at least 8, n_samples "
                             "at least 2")
    if not (0 <= cfg.tau_start <= 1 and 0 <= cfg.tau_end <= 1):
        raise UserInputError("tau_start and tau_end are transmittances: between 0 and 1")
    if not 0 < cfg.crop_min <= 1 or not 0 <= cfg.origin_decay < 1 or cfg.eval_views < 1:
        raise UserInputError("need 0 < crop_min <= 1, 0 <= origin_decay < 1 and eval_views >= 1")
    if cfg.radius_min > cfg.radius_max or cfg.elevation_min > cfg.elevation_max:
        raise UserInputError("radius_min must not exceed radius_max, nor elevation_min elevation_max")
    if cfg.radius_min <= math.sqrt(3) * cfg.bound:
        raise UserInputError(f"cameras must stay outside the scene's cube: radius_min > {math.sqrt(3) * cfg.bound:.2f}")
    kinds = tuple(k.strip() for k in cfg.backgrounds.split(",") if k.strip())
    if not kinds or set(kinds) - set(KINDS):
        raise UserInputError(f"backgrounds: a comma-separated list of {', '.join(KINDS)}; got {cfg.backgrounds!r}")
    return kinds


def _export(cfg: DreamFieldsConfig, ctx: RunContext, field, view, origin, metrics: dict, scorer_name: str,
            scores: list[float], radius: float, elevation: float) -> Iterator[Event]:
    """Turntable (rgb | opacity on white), coloured mesh, checkpoint, per-step scores and the run's settings."""
    import numpy as np
    import torch

    from .core.budget import export_seconds, grid_resolution, turntable
    from .core.cameras import look_at, spherical_to_cartesian
    from .core.export import save_mesh, save_video
    from .core.geometry import evaluate_grid, marching_cubes
    from .core.images import to_uint8

    dev = ctx.device
    budget = export_seconds(metrics.get("train_seconds", 0.0))  # exports cost in proportion to the run

    def frame(k: int, n: int):
        c2w = look_at(spherical_to_cartesian(radius, math.radians(elevation), 2 * math.pi * k / n))
        v = view(c2w[None].to(dev), cfg.preview_size)
        return np.concatenate([to_uint8(v["rgb"][0]), to_uint8(v["opacity"][0])], axis=1)

    frames = yield from turntable(frame, cfg.turntable_frames, budget)
    if frames:
        yield ctx.artifact("video", save_video(frames, ctx.path("turntable.mp4")), f"turntable: rgb | opacity "
                           f"({scorer_name})")

    with torch.no_grad():
        res = grid_resolution(lambda r: evaluate_grid(field.density, r, -cfg.bound, cfg.bound, dev),
                              cfg.mesh_resolution, budget)
        yield Log(f"extracting the mesh ({res}^3 grid)")
        density = evaluate_grid(field.density, res, -cfg.bound, cfg.bound, dev)
    mesh = marching_cubes(density, cfg.mesh_density, -cfg.bound, cfg.bound)
    if mesh.num_faces == 0:  # a short run's faint field: the surface volume rendering shows (NeRF's auto level)
        from .core.volume import hidden_opacity

        opacity = hidden_opacity(density, 2 * cfg.bound / res)
        level = min(0.5, 0.5 * float(opacity.max()))
        if level > 1e-3:
            mesh = marching_cubes(opacity, level, -cfg.bound, cfg.bound)
            yield Log(f"no surface above density {cfg.mesh_density}: the mesh is the surface of opacity {level:.2f} "
                      "seen from outside instead")
    metrics["mesh_faces"] = float(mesh.num_faces)
    if mesh.num_faces == 0:
        yield Log(f"no surface above density {cfg.mesh_density}: the field is empty, no mesh written (train "
                  "longer, or lower --mesh-density)", "warning")
    else:
        with torch.no_grad():
            verts = mesh.verts.to(dev)
            mesh.vert_colors = torch.cat([field(verts[i:i + 65536])[1] for i in range(0, len(verts), 65536)]).cpu()
        yield ctx.artifact("mesh", save_mesh(mesh, ctx.path("mesh.glb")), f"mesh (.glb) ({scorer_name})")
    yield Log("writing the checkpoint")
    torch.save({"config": asdict(cfg), "field": field.state_dict(), "origin": origin.cpu()}, ctx.path("model.pt"))
    yield ctx.artifact("checkpoint", ctx.path("model.pt"), "checkpoint")
    settings = {"caption": cfg.caption, "scorer": scorer_name, "config": asdict(cfg), "metrics": metrics,
                "clip_per_step": scores}
    ctx.path("run.json").write_text(json.dumps(settings, indent=1))
    yield ctx.artifact("json", ctx.path("run.json"), f"run settings, metrics and per-step CLIP scores ({scorer_name})")
