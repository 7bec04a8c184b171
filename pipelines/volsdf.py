"""VolSDF (Yariv et al. 2021): a signed distance field rendered as a volume, trained from posed images.

The density is sigma = alpha * Psi_beta(-d) (Psi_beta: the Laplace CDF) with a learnable beta >= beta_min and
alpha = 1 / beta as in the paper (``tie_alpha``; off: alpha is learned too), composited by the shared
``core/volume.py``. Two fields: ``neural``, an MLP SDF on hash-grid or harmonic features with geometric
initialisation and a colour network on (x, normal, view direction, feature); ``primitives``, a union of
spheres, boxes, tori and capsules whose pose, size and colour are the parameters. Per ray: stratified
samples, then ``n_fine`` importance samples near the surface that tighten as beta shrinks
(``core.sdf.upsample_near_surface``). Loss: MSE on colour + an eikonal term on the render samples and on
uniform points in the scene box. Exports: the marching-cubes mesh of the SDF with vertex colours, a
turntable, held-out PSNR/SSIM, and for primitives the fitted parameters as JSON.
This file holds the config and the training loop; what the loop starts from (the field, its optimiser, the
scene with the SDF's box) is in ``core/sdf_setup.py``, the previews, mesh metrics and exports in
``core/sdf_outputs.py``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Literal

from .config import RunContext, UserInputError, run_guarded
from .core.training import PosedImagesConfig
from .events import Done, Event, Log, Preview, Progress

SCENES = Path(__file__).resolve().parents[1] / "assets" / "scenes"
EXAMPLE_SCENES = {"neural": SCENES / "cow", "primitives": SCENES / "primitives"}


@dataclass
class VolSDFConfig(PosedImagesConfig):
    scene: str = ""  # (declared again for its help text)
    """A Blender-format folder (transforms_*.json + images), a nerfstudio/LLFF/COLMAP capture, photos or a video
    (posed by structure from motion, needs pycolmap), or a .zip of one; empty: the shipped example
    (assets/scenes/primitives for the primitives field, assets/scenes/cow for the neural one)."""
    field: Literal["neural", "primitives"] = "neural"
    """'neural': an MLP SDF with a colour network; 'primitives': a union of analytic shapes."""
    primitives: str = "box,box,sphere"
    """primitives: comma-separated kinds (sphere, box, torus, capsule), started on a ring around the z axis
    turned by the seed; or a .json file of primitives to start from (the fitted_primitives.json a run writes).
    Gradients move and resize primitives but cannot swap kinds: if a box ends up on a sphere, try a seed."""
    smooth: float = 0.0
    """primitives: smooth-union blend radius in scene units (0: a plain union, the minimum)."""
    encoding: Literal["hash", "harmonic"] = "hash"
    """neural: input features, 'hash' (multiresolution hash grid) or 'harmonic' (VolSDF's positional encoding)."""
    steps: int = 3000
    """Optimisation steps (one batch of rays each)."""
    batch_rays: int = 1024
    """Rays per step (occupancy: the first step's; later steps adapt to ``target_samples``)."""
    lr: float = 0.0
    """Adam learning rate; 0 picks the field's default (1e-2 hash grid and primitives, 5e-4 harmonic MLP)."""
    mlp_lr_factor: float = 0.0
    """neural, hash: the MLPs' and beta's learning rate as a multiple of the grid's; 0 picks 1 when a background
    model runs (at 0.1 it out-learns the SDF: fern, H200, 120 s, 21.42 against 20.33 dB) and 0.1 for objects
    (lego, 120 s, 600 march steps: 27.11 dB; 1 gave 27.32 but 0.9 dB less at 60 s)."""
    random_background: bool = True
    """While training, composite rays of images with alpha on a random colour so empty space must be empty."""
    space: Literal["auto", "object", "forward", "unbounded"] = "auto"
    """Real captures: where the SDF's box goes. 'forward' (the cameras all look one way): around what they see
    between the nearest depth and the geometric mean of the near and far depths; 'unbounded' (360 degrees): the
    cube within the cameras, shrunk to the sparse points; 'object': cameras 4 units out around their look-at point,
    as NeRF-synthetic; 'auto' chooses from the cameras and logs which and why. Blender scenes are objects."""
    background_model: Literal["auto", "none", "nerf"] = "auto"
    """What lies outside the SDF's box: 'none', the plain background colour (a real capture's surroundings must
    then fit inside the box); 'nerf', a small hash-grid radiance field in mip-NeRF 360's contracted space behind
    the SDF (NeRF++'s split, as VolSDF does for real scenes); 'auto': 'nerf' for real captures (no alpha), 'none'
    for objects on a background (Blender scenes, images with alpha)."""
    background_samples: int = 32
    """Samples per ray of the background model (linear in disparity beyond the scene box)."""
    background_lr: float = 0.0
    """The background model's hash-grid learning rate (0: 1e-2)."""
    background_mlp_lr_factor: float = 1.0
    """The background model's MLPs' learning rate as a multiple of its grid's."""
    bound: float = 1.5
    """The scene lies in the box [-bound, bound]^3; rays are sampled, and the mesh extracted, inside it."""
    sampler: Literal["occupancy", "surface"] = "occupancy"
    """'occupancy': fixed steps through the cells of an occupancy grid that hold the surface or the inside, the
    density averaged exactly over each step (core/sdf_marching.py), so a ray costs the dozen samples around its
    surface and a step renders as many rays as ``target_samples`` allows; 'surface': the paper's kind of sampler,
    ``n_coarse`` stratified + ``n_fine`` near-surface samples on each of ``batch_rays`` rays (core/sdf.py)."""
    target_samples: int = 2 ** 18
    """occupancy: samples per step the ray count adapts to (0: keep batch_rays fixed)."""
    max_samples: int = 2 ** 19
    """occupancy: the most points one field evaluation sees (a training step renders the leading rays of its batch
    that fit; previews and scoring evaluate in chunks of this many); 0: no bound."""
    grid_resolution: int = 128
    """occupancy: grid cells per side."""
    march_steps: int = 300
    """occupancy: marching steps across the box's side (step = 2 * bound / march_steps). Half a ray's samples buys
    twice the rays a step at ``target_samples``, and the density is integrated exactly over each step, so the coarser
    step costs little (lego, H200, 120 s: 29.09 dB at 300 against 27.11 at 600; 200 with tetrahedral: 28.89)."""
    n_coarse: int = 64
    """surface: stratified samples per ray."""
    n_fine: int = 64
    """surface: extra samples per ray drawn near the surface."""
    upsample_levels: int = 3
    """surface: rounds in which the fine samples are drawn, each with an 8x sharper density (see core.sdf)."""
    beta_init: float = 0.1
    """Initial Laplace scale beta of the density, in scene units (VolSDF: 0.1)."""
    beta_min: float = 1e-4
    """Lower bound of beta."""
    tie_alpha: bool = True
    """alpha = 1 / beta as in the paper; off: alpha is a separate learnable parameter."""
    eikonal_weight: float = 0.03
    """Weight of the eikonal loss mean (|grad d| - 1)^2 (VolSDF: 0.1, which the cpu, paper and primitives presets
    keep). 0.03 for the hash grid: lego, H200, 120 s, 20 val views, 30.41 / 30.69 / 30.43 dB over seeds 0-2 against
    29.09 / 27.63 at 0.1, meshes watertight, mesh PSNR about 0.5 dB lower; 0.01 scored 31.3 / 31.8, not taken
    unmeasured on captures, where the eikonal term is more of the shape prior (bench/RESULTS.md)."""
    eikonal_points: int = 1024
    """Uniform points in the scene box per step for the eikonal loss (besides the render samples)."""
    gradient: Literal["analytic", "finite_difference", "tetrahedral"] = "finite_difference"
    """SDF gradients (normals and the eikonal term): 'finite_difference' by central differences (instant-nsr-pl,
    NeuS2): 6 more SDF evaluations per point, trained with first-order backward passes only, so the fused hash-grid
    kernels serve it on CUDA (lego, H200, 120 s: 27.1 dB against 26.3 analytic); 'tetrahedral': 4 more, at a
    tetrahedron's corners (first-order accurate; lego, H200, 120 s: 27.36 dB against 27.11 at 600 march steps, but
    28.70 against 29.09 at 300); 'analytic' by autograd, a double
    backward through the field when training."""
    fd_eps: float = 0.0
    """finite_difference, tetrahedral: the step in scene units; 0 follows the hash grid coarse to fine (one cell of
    the finest active level, as instant-nsr-pl's 'progressive' step), or 1e-3 * bound for other fields."""
    width: int = 64
    """neural: SDF MLP width (VolSDF: 256)."""
    depth: int = 2
    """neural: SDF MLP hidden layers (VolSDF: 8; from 4 the input is re-injected at the middle)."""
    feature_dim: int = 32
    """neural: geometry features passed to the colour network."""
    n_freqs: int = 6
    """neural, harmonic: frequencies of the positional encoding."""
    hash_levels: int = 16
    """neural, hash: hash-grid levels."""
    hash_log2_size: int = 19
    """neural, hash: log2 of entries per level."""
    hash_warmup: int = 500
    """neural, hash: steps over which the hash levels are switched on, coarse to fine (0: all at once)."""
    init_radius: float = 0.5
    """neural: the SDF starts as a sphere of this radius times bound."""
    mesh_psnr_views: int = 0
    """Benchmarks: at each checkpoint and at the end, render the vertex-coloured mesh through ``core/raster.py``
    (unlit: the colours are radiance) from this many held-out cameras, evenly spaced, and report its PSNR beside
    the volume-rendered one (0: off)."""
    export: bool = True
    """Write the turntable, mesh, parameters and checkpoint at the end (benchmarks may turn this off)."""

    PRESETS: ClassVar[dict] = {
        # A few minutes on a 2-core CPU: fewer rays, samples and hash levels, half-size images (about 0.4 s a step
        # measured there with other jobs sharing it: the tab's estimate). The surface sampler: the occupancy one's
        # young field (beta 0.1, rays marching deep inside) made steps and previews take seconds each there; the
        # analytic gradient, as that measurement. The MLPs at the grid's learning rate: a few hundred steps are too
        # few for 0.1 of it (CPU, 150 steps, seed 0: lego at 50x50 15.4 -> 18.9 dB held out; fern at 126x94 with
        # the background model 18.6 -> 18.7 dB, and the SDF takes the fern instead of staying its first sphere).
        "cpu": dict(field="neural", encoding="hash", sampler="surface", gradient="analytic", steps=300,
                    batch_rays=256, n_coarse=32, n_fine=16, mlp_lr_factor=1.0,
                    upsample_levels=1, eikonal_points=256, downscale=2, hash_levels=8, hash_log2_size=15,
                    preview_every=50, preview_size=64, mesh_resolution=64, turntable_frames=24, eikonal_weight=0.1),
        "fast": dict(field="neural", encoding="hash", steps=2000),
        "quality": dict(field="neural", encoding="hash", steps=20000, mesh_resolution=256, turntable_frames=96),
        "paper": dict(field="neural", encoding="harmonic", width=256, depth=8, feature_dim=256, steps=20000,
                      sampler="surface", eikonal_weight=0.1),
        "primitives": dict(field="primitives", sampler="surface", steps=600, batch_rays=1024, n_coarse=48,
                           n_fine=32, eikonal_weight=0.1),
        # One ZeroGPU call (120 s at most): 2500 steps at the measured 32 ms (H200, 300 march steps) plus loading
        # and exports.
        "zerogpu": dict(field="neural", encoding="hash", steps=2500, mesh_resolution=192, turntable_frames=48),
    }


CONFIG = VolSDFConfig
LOG_EVERY = 10  # steps between Progress events: each one costs a host sync


def run(cfg: VolSDFConfig) -> Iterator[Event]:
    return run_guarded("volsdf", cfg, _train, "lower --batch-rays or --n-fine, or raise --downscale")


# ----------------------------------------------------------------------------------------------------------
# Training


def _train(cfg: VolSDFConfig, ctx: RunContext) -> Iterator[Event]:
    import torch
    import torch.nn.functional as F

    from .core.metrics import mse_to_psnr, psnr
    from .core.primitive_fit import describe_primitives, recovery_errors
    from .core.rays import ray_aabb
    from .core.scene_space import render_background
    from .core.sdf import LaplaceDensity, eikonal_loss, render_sdf, sdf_gradient_by
    from .core.sdf_marching import SDFRadiance, occupancy_density, render_sdf_marched
    from .core.sdf_outputs import export_run, mesh_metrics, preview_images
    from .core.sdf_setup import BoxedSDF, build_field, load_sdf_scene, make_optimizer
    from .core.training import (RayBatches, TrainClock, at_seconds, final_scores, heldout_scores, peak_memory,
                                 preview_target, write_cameras)
    from .core.volume import render_image

    if cfg.steps < 1 or cfg.batch_rays < 1 or cfg.downscale < 1 or cfg.n_coarse < 2:
        raise UserInputError("steps, batch_rays and downscale must be positive, n_coarse at least 2")
    if not 0 < cfg.beta_min < cfg.beta_init:
        raise UserInputError("need 0 < beta_min < beta_init")
    per_ray = math.ceil(math.sqrt(3) * cfg.march_steps) + 1  # the most samples one marched ray can carry
    if cfg.sampler == "occupancy" and cfg.max_samples and cfg.max_samples < per_ray:
        raise UserInputError(f"max_samples must be 0 or at least {per_ray} (one ray's samples at march_steps "
                             f"{cfg.march_steps})")
    dev = ctx.device
    started = time.perf_counter()
    yield Log("loading the scene")
    scene, half = yield from load_sdf_scene(cfg, ctx, EXAMPLE_SCENES[cfg.field])
    root, train, val, bg_level = scene.root, scene.train, scene.val, scene.background
    real = scene.format != "blender" and train.alphas is None  # a photographed scene, not an object on nothing
    use_bg = cfg.background_model == "nerf" or (cfg.background_model == "auto" and real)
    if use_bg:
        yield Log("background model: a hash-grid radiance field in contracted space outside the SDF's box, "
                  "composited behind the SDF (NeRF++'s split, as VolSDF does for real scenes)"
                  + (" (chosen for a real capture)" if cfg.background_model == "auto" else "")
                  + "; the rgb preview shows both, the normal and depth previews the SDF alone (white: background)")
    elif real:
        yield Log("a real capture without a background model: VolSDF fits the background inside the SDF's box "
                  "with the object (--background-model auto or nerf models it behind the box)", "warning")
    # (3,) the SDF's box [-half, half] in the field's frame: the whole cube for objects, the foreground for captures
    boxed = bool((half < cfg.bound).any())
    half_t = torch.tensor(half, dtype=torch.float32, device=dev)
    box_lo, box_hi = (-half_t, half_t) if boxed else (-cfg.bound, cfg.bound)
    if scene.format != "blender":  # a capture: its cameras (and SfM points) are shown before training
        yield ctx.artifact("cameras", write_cameras(scene, ctx.path("cameras.json")), "cameras and sparse points")
    yield Log(f"building the {cfg.field} SDF")
    # The SDF starts as a sphere that fits its box (a flat forward-facing box is thinner than the default sphere).
    field = build_field(dataclasses.replace(cfg, init_radius=min(cfg.init_radius, 0.8 * float(half.min()) / cfg.bound))
                        if boxed else cfg, dev)
    density = LaplaceDensity(cfg.beta_init, cfg.beta_min, cfg.tie_alpha).to(dev)
    modules = torch.nn.ModuleDict({"field": field, "density": density})
    grid = None
    if cfg.sampler == "occupancy":
        from .core.occupancy import OccupancyGrid

        grid = modules["grid"] = OccupancyGrid(cfg.bound, cfg.grid_resolution).to(dev)
    bg_field = None
    if use_bg:
        from .core.fields import NGPField

        bg_field = NGPField(2.0, min(cfg.hash_levels, 12), min(cfg.hash_log2_size, 17)).to(dev)
        modules["background"] = bg_field
    what = f"({cfg.encoding})" if cfg.field == "neural" else f": {describe_primitives(field)}"
    yield Log(f"{len(train)} training views, {len(val)} held-out views at {train.width}x{train.height}; "
              f"{cfg.field} SDF {what} on {dev}")

    mesh_field = BoxedSDF(field, half_t) if boxed else field  # the mesh: the SDF's surface inside its box
    opt = make_optimizer(cfg, field, density, bg_field is not None)
    if bg_field is not None:
        bg_lr = cfg.background_lr or 1e-2
        opt.add_param_group({"params": list(bg_field.encoding.parameters()), "lr": bg_lr})
        opt.add_param_group({"params": [p for n, p in bg_field.named_parameters() if not n.startswith("encoding.")],
                             "lr": bg_lr * cfg.background_mlp_lr_factor})
    base_lrs = [g["lr"] for g in opt.param_groups]
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    level_res = field.encoding.res.tolist() if cfg.field == "neural" and cfg.encoding == "hash" else []

    def fd_eps() -> float:  # (on the host: no sync)
        if cfg.fd_eps > 0:
            return cfg.fd_eps
        if level_res:
            return 2 * cfg.bound / level_res[max(field.active_levels, 1) - 1]
        return 1e-3 * cfg.bound

    step_size, cell = 2 * cfg.bound / cfg.march_steps, 2 * cfg.bound / cfg.grid_resolution
    radiance = SDFRadiance(field, density, step_size, cfg.gradient, fd_eps, half_t if boxed else None)

    def render(o, d, background, perturb):
        """RenderOut of the rays; with the occupancy sampler's budget while training, of a prefix of them
        (``extras['rays']`` rows)."""
        own_bg = 0.0 if bg_field is not None else background
        if grid is not None:
            out = render_sdf_marched(radiance, grid, o, d, own_bg, perturb, cfg.max_samples)
            o, d = o[:out.extras["rays"]], d[:out.extras["rays"]]
        else:
            near, far, _ = ray_aabb(o, d, box_lo, box_hi)
            out = render_sdf(field, density, o, d, near, far, cfg.n_coarse, cfg.n_fine, own_bg, perturb,
                             cfg.upsample_levels, gradient=cfg.gradient, fd_eps=fd_eps())
            out.extras["rays"] = len(o)
        if bg_field is not None:
            _, far, hit = ray_aabb(o, d, box_lo, box_hi)
            # Behind the box; a ray that misses it, from its closest approach to the box's centre on.
            far = torch.where(hit, far, -(o * d).sum(-1))
            behind = render_background(bg_field, o, d, far, cfg.background_samples, math.sqrt(3) * cfg.bound,
                                       perturb)
            out.rgb = out.rgb + (1 - out.opacity[:, None]) * behind.rgb
        return out

    rays = RayBatches(train, bg_level, cfg.random_background, dev)
    bg = rays.background
    preview_cam, preview_gt = preview_target(val, cfg.preview_size, dev)

    # Rays per view chunk: marched, as many as could fill 16 sample budgets had every candidate been kept.
    view_chunk = max(1024, 16 * cfg.max_samples // per_ray) if grid is not None and cfg.max_samples else 4096

    def render_view(cam):
        return render_image(lambda o, d: render(o, d, bg, False), cam.to(dev), chunk=view_chunk, device=dev,
                            extras=("normal",))

    clock = TrainClock(cfg.steps, cfg.max_seconds, cfg.eval_at_seconds)  # paused for previews and scoring
    acc = torch.zeros(2, device=dev)  # running sums of the colour MSE and the eikonal loss
    timeline: dict[str, float] = {}
    step, n_rays, rays_total = 0, cfg.batch_rays, 0
    for step in range(1, cfg.steps + 1):
        modules.train()
        progress = clock.progress(step)
        warmup = min(1.0, step / 50) if cfg.field == "neural" else 1.0  # the MLPs get a short warm-up
        for group, base in zip(opt.param_groups, base_lrs):  # then the rate decays exponentially to 1/10
            group["lr"] = base * warmup * 0.1 ** progress
        if cfg.field == "neural" and cfg.encoding == "hash" and cfg.hash_warmup:
            field.active_levels = min(cfg.hash_levels, 4 + (cfg.hash_levels - 4) * step // cfg.hash_warmup)

        if grid is not None and (step == 1 or step % 16 == 0):
            beta = density.beta.detach()
            grid.update(lambda x: radiance._in_box(x, occupancy_density(field.sdf(x).float(), beta, cell)), step_size,
                        step, chunk=cfg.max_samples or 2 ** 20)

        o, d, target, ray_bg = rays.sample(n_rays)
        out = render(o, d, ray_bg, True)
        color_loss = F.mse_loss(out.rgb, target[:out.extras["rays"]])
        rays_total += out.extras["rays"]
        x_eik = (torch.rand(cfg.eikonal_points, 3, device=dev) * 2 - 1) * (half_t if boxed else cfg.bound)
        grad_eik = sdf_gradient_by(cfg.gradient, field.sdf, x_eik, fd_eps(), create_graph=True)
        eik = eikonal_loss(torch.cat([out.extras["grad"], grad_eik]))
        loss = color_loss + cfg.eikonal_weight * eik
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc += torch.stack([color_loss.detach(), eik.detach()])
        if grid is not None and cfg.target_samples:  # (the march synchronised: its counts are on the host)
            n_rays = int(min(max(cfg.target_samples / max(out.extras["samples_per_ray"], 1e-3), 256), 2 ** 16))

        if step % LOG_EVERY == 0 or step == cfg.steps:
            n = LOG_EVERY if step % LOG_EVERY == 0 else step % LOG_EVERY
            mse, eik_mean = (acc / n).tolist()
            acc.zero_()
            if not math.isfinite(mse + eik_mean):
                raise UserInputError(f"training diverged (loss is {mse}) at step {step}: lower --lr or try another "
                                     "--seed")
            losses = {"loss": mse, "psnr_train": mse_to_psnr(mse), "eikonal": eik_mean,
                      "beta": float(density.beta.detach()), "alpha": float(density.alpha.detach())}
            if ctx.preview_due(step) or step == LOG_EVERY:
                with clock.paused():
                    modules.eval()
                    view = render_view(preview_cam)
                    losses["psnr_val"] = psnr(view["rgb"], preview_gt)
                    yield Preview(step, preview_images(view),
                                  caption=f"held-out view, step {step}, PSNR {losses['psnr_val']:.2f} dB, "
                                          f"beta {losses['beta']:.4g}, alpha {losses['alpha']:.4g}")
                    if cfg.field == "primitives":
                        yield Log(f"step {step}: beta {losses['beta']:.4g}, alpha {losses['alpha']:.4g} · "
                                  f"{describe_primitives(field)}")
            yield Progress(step, cfg.steps, losses)
        if (t_at := clock.checkpoint_due()) is not None:
            with clock.paused():
                modules.eval()
                scores = heldout_scores(render_view, val)
                timeline.update(at_seconds(t_at, psnr=scores["psnr"], steps=step, **peak_memory(dev)))
                if cfg.mesh_resolution > 0:
                    timeline.update(at_seconds(t_at, **mesh_metrics(cfg, mesh_field, val, dev)))
                yield Log(f"{t_at:g}s of training ({step} steps): held-out PSNR {scores['psnr']:.2f} dB")
        if clock.out_of_time():
            yield Log(f"stopped training at the {cfg.max_seconds:g}s budget after {step} steps")
            break
    train_seconds = clock.seconds

    modules.eval()
    metrics, scored, first_view = yield from final_scores(cfg, render_view, val, train_seconds, dev)
    metrics.update(timeline, train_seconds=train_seconds, steps=float(step), beta=float(density.beta.detach()),
                   alpha=float(density.alpha.detach()), rays_per_step=rays_total / max(step, 1))
    if cfg.field == "primitives":
        metrics.update(recovery_errors(field, root))
    metrics.update(peak_memory(dev))  # training, previews and scoring (meshing for the benchmark comes after)
    yield Log(f"held-out PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} {scored}; beta "
              f"{metrics['beta']:.4g}")
    if cfg.export:
        yield from export_run(cfg, ctx, modules, mesh_field, render_view, train, val, metrics, first_view,
                              scene.space, half)
    elif cfg.mesh_resolution > 0:
        metrics.update(mesh_metrics(cfg, mesh_field, val, dev))
    yield Done(list(ctx.artifacts), metrics, time.perf_counter() - started)
