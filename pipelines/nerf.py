"""NeRF (Mildenhall et al. 2020) from posed images, plus an Instant-NGP-style ``fast`` model.

vanilla: positional encoding + 8x256 MLP, 64 stratified coarse samples and 128 importance samples for the
fine network, both trained with MSE. fast: multiresolution hash grid + tiny MLPs, rays marched through an
occupancy grid, random background colours while training (nerfacc's recipe).
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

EXAMPLE_SCENE = Path(__file__).resolve().parents[1] / "assets" / "scenes" / "cow"


@dataclass
class NerfConfig(PosedImagesConfig):
    model: Literal["vanilla", "fast"] = "fast"
    """'vanilla': MLP with positional encoding, coarse + fine sampling; 'fast': hash grid + occupancy grid."""
    steps: int = 2000
    """Optimisation steps (one batch of rays each)."""
    batch_rays: int = 4096
    """Rays per step (fast: the first step's; later steps adapt to ``target_samples``)."""
    target_samples: int = 2 ** 18
    """fast: samples per step the ray count adapts to, as in nerfacc and Instant-NGP (0: keep batch_rays fixed)."""
    max_samples: int = 2 ** 19
    """fast: the memory budget, a hard bound on the points one field evaluation sees, from the first step on:
    a training step renders only the leading rays of its batch whose samples fit (the ray count then adapts to
    ``target_samples``), and previews, scoring and occupancy updates evaluate the field this many points at a
    time (0: no bound)."""
    lr: float = 0.0
    """Adam learning rate; 0 picks the model's default (5e-4 vanilla, 1e-2 fast)."""
    bound: float = 1.5
    """The scene lies in the box [-bound, bound]^3 (NeRF-synthetic objects fit in 1.5)."""
    n_coarse: int = 64
    """vanilla: stratified samples per ray for the coarse network."""
    n_fine: int = 128
    """vanilla: extra importance samples per ray for the fine network."""
    width: int = 256
    """vanilla: MLP width."""
    depth: int = 8
    """vanilla: MLP layers before the density head (skip connection at the middle)."""
    hash_levels: int = 16
    """fast: hash-grid levels."""
    hash_log2_size: int = 19
    """fast: log2 of entries per hash-grid level."""
    grid_resolution: int = 128
    """fast: occupancy-grid cells per side."""
    occupancy_threshold: float = -1.0
    """fast: a cell is marched while its sigma * step reaches this (or the grid's mean, if lower); 0: no culling;
    negative: nerfacc's 0.01, but 0.001 in NDC (forward-facing), where 0.01 culled space the field still needed
    (fern, CPU, 300 steps, equal steps: held-out 20.8 dB at 0.01, 23.3 at 0.001 and 23.3 without culling)."""
    march_steps: int = 600
    """fast: ray-marching steps across the scene box's side (step = 2 * bound / march_steps)."""
    space: Literal["auto", "object", "forward", "unbounded"] = "auto"
    """Real captures: 'forward' (NDC rays, the NeRF paper's LLFF setting), 'unbounded' (mip-NeRF 360's contraction
    with the hash grid; fast model) or 'object' (the [-bound, bound]^3 box); 'auto' chooses from the cameras and
    logs which. Blender scenes are objects."""
    unbounded_samples: int = 128
    """fast, unbounded space: samples per ray before the occupancy grid culls them (half spaced evenly up to
    distance 1, half evenly in disparity beyond)."""
    mixed_precision: bool = False
    """On CUDA, run the MLPs in bfloat16 autocast. Off by default: on lego (H200, 30 s) bf16 cost the fast
    model 6 dB of held-out PSNR and made the vanilla model collapse; fp32 with TF32 matmuls is used instead."""
    precrop_steps: int = 500
    """vanilla: sample rays from the central half of each image for the first N steps (the official code's
    guard against collapsing to an empty, background-only scene)."""
    mesh_density: float = 0.0
    """Density level of the exported mesh's surface; 0: chosen from the field, the half-opacity surface that volume
    rendering shows from outside (``core.volume.hidden_opacity``), which a short run's faint field also has."""

    PRESETS: ClassVar[dict] = {
        # A few minutes on a 2-core CPU (no GPU): fewer levels and samples, same method.
        "cpu": dict(model="fast", steps=300, batch_rays=512, target_samples=8192, max_samples=2 ** 15, hash_levels=8,
                    hash_log2_size=15, grid_resolution=64, march_steps=256, preview_every=50, eval_views=4, mesh_resolution=96,
                    turntable_frames=24, preview_size=64),
        "fast": dict(model="fast", steps=1500),
        "quality": dict(model="fast", steps=10000, batch_rays=8192, mesh_resolution=256, turntable_frames=96),
    }


CONFIG = NerfConfig
LOG_EVERY = 10  # steps between Progress events: each one costs a host sync


OCCUPANCY_THRESHOLD = {"forward": 1e-3}
"""The occupancy grid's default threshold per space (others: nerfacc's 0.01); see ``occupancy_threshold``."""
SPACE_BOUND = {"forward": 1.0, "unbounded": 2.0}
"""The field's box in NDC and in contracted space; 'object' uses ``cfg.bound``."""


def build_model(cfg: NerfConfig, device, bound: float = 0.0):
    """Returns (modules, optimiser, lr_factor(step, progress), occupancy grid or None); ``progress`` in
    [0, 1] is the fraction of the step budget, or of ``max_seconds`` when that is set."""
    import torch

    from .core.fields import NGPField, VanillaNeRF
    from .core.occupancy import OccupancyGrid

    if cfg.model == "vanilla":
        coarse = VanillaNeRF(cfg.width, cfg.depth).to(device)
        fine = VanillaNeRF(cfg.width, cfg.depth).to(device) if cfg.n_fine > 0 else coarse
        modules = torch.nn.ModuleDict({"coarse": coarse, "fine": fine})
        opt = torch.optim.Adam(modules.parameters(), lr=cfg.lr or 5e-4)
        return modules, opt, lambda step, progress: 0.1 ** progress, None  # the paper decays 10x over training
    field = NGPField(bound or cfg.bound, cfg.hash_levels, cfg.hash_log2_size).to(device)
    grid = OccupancyGrid(bound or cfg.bound, cfg.grid_resolution).to(device)
    modules = torch.nn.ModuleDict({"field": field, "grid": grid})
    opt = torch.optim.Adam([
        {"params": field.encoding.parameters()},
        {"params": list(field.sigma_net.parameters()) + list(field.rgb_net.parameters()), "weight_decay": 1e-6},
    ], lr=cfg.lr or 1e-2, betas=(0.9, 0.99), eps=1e-15)

    def lr_factor(step: int, progress: float) -> float:
        # nerfacc's schedule: 100 warm-up steps, then x0.33 at 50%, 75% and 90% of training.
        return min(1.0, 0.01 + step / 100) * 0.33 ** sum(progress >= m for m in (0.5, 0.75, 0.9))

    return modules, opt, lr_factor, grid


def make_renderer(cfg: NerfConfig, modules, grid, space: str = "object", ndc_camera=None,
                  ndc_extent: tuple[float, float] = (1.0, 1.0)):
    """Returns render(origins, dirs, background, perturb) -> (RenderOut, coarse RenderOut or None), and the
    marching step. 'forward' warps world rays to NDC (of ``ndc_camera``, the training views' intrinsics, with x and
    y divided by ``ndc_extent`` so every training ray stays in the box) first, and the fields' colour (fast and
    vanilla) sees the world directions (as the NeRF paper's viewdirs: NDC's directions hardly vary within a view);
    'unbounded' samples
    along whole rays and evaluates the field on contracted points."""
    from .core.occupancy import render_rays
    from .core.rays import ray_aabb
    from .core.scene_space import ndc_rays, render_unbounded
    from .core.volume import render_hierarchical

    bound = SPACE_BOUND.get(space, cfg.bound)
    step_size = 2 * bound / cfg.march_steps

    def render(o, d, background, perturb):
        view_dirs = None
        if space == "forward":
            view_dirs = d
            o, d = ndc_rays(o, d, ndc_camera.fx, ndc_camera.fy, ndc_camera.width, ndc_camera.height,
                            extent=ndc_extent)
        if space == "unbounded":
            return render_unbounded(modules["field"], grid, o, d, cfg.unbounded_samples, background, perturb,
                                    max_samples=cfg.max_samples), None
        if grid is None:
            near, far, _ = ray_aabb(o, d, -bound, bound)
            return render_hierarchical(modules["coarse"], modules["fine"], o, d, near, far, cfg.n_coarse,
                                       cfg.n_fine, background, perturb, view_dirs=view_dirs)
        return render_rays(modules["field"], grid, o, d, step_size, background, perturb,
                           max_samples=cfg.max_samples, view_dirs=view_dirs), None

    return render, step_size


def run(cfg: NerfConfig) -> Iterator[Event]:
    return run_guarded("nerf", cfg, _train, "lower --batch-rays, raise --downscale, or use the 'fast' model")


def _train(cfg: NerfConfig, ctx: RunContext) -> Iterator[Event]:
    import torch
    import torch.nn.functional as F

    from .core.images import colormap, to_uint8
    from .core.metrics import mse_to_psnr, psnr
    from .core.training import (RayBatches, TrainClock, at_seconds, final_scores, heldout_scores, load_scene,
                                 peak_memory, preview_target, write_cameras)
    from .core.volume import render_image

    if cfg.steps < 1 or cfg.batch_rays < 1 or cfg.downscale < 1:
        raise UserInputError("steps, batch_rays and downscale must be positive")
    per_ray = math.ceil(math.sqrt(3) * cfg.march_steps) + 1  # the most samples one ray can carry
    if cfg.model == "fast" and cfg.max_samples and cfg.max_samples < per_ray:
        raise UserInputError(f"max_samples must be 0 or at least {per_ray} (one ray's samples at march_steps "
                             f"{cfg.march_steps})")
    dev = ctx.device
    started = time.perf_counter()
    if cfg.model == "vanilla" and cfg.space == "unbounded":
        raise UserInputError("the unbounded space needs the 'fast' model (hash grid); use --model fast or "
                             "--space forward/object")
    yield Log("loading the scene" + (" (unpacking the upload)" if str(cfg.scene).lower().endswith(".zip") else ""))
    spaces = ("object", "forward", "unbounded") if cfg.model == "fast" else ("object", "forward")
    scene = yield from load_scene(cfg, EXAMPLE_SCENE, ctx.out_dir, cfg.space, spaces)
    train, val = scene.train, scene.val
    yield Log(f"{len(train)} training views, {len(val)} held-out views at {train.width}x{train.height}; "
              f"model '{cfg.model}' on {dev}, {scene.space} space")

    if scene.format != "blender":  # a capture: its cameras (and SfM points) are shown before training
        yield ctx.artifact("cameras", write_cameras(scene, ctx.path("cameras.json")), "cameras and sparse points")
    yield Log(f"building the '{cfg.model}' model" + (" and its occupancy grid" if cfg.model == "fast" else ""))
    modules, opt, lr_factor, grid = build_model(cfg, dev, SPACE_BOUND.get(scene.space, cfg.bound))
    base_lrs = [g["lr"] for g in opt.param_groups]
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp16-like mantissa for the MLPs, fp32 range
    extent = (1.0, 1.0)
    if scene.space == "forward":
        from .core.scene_space import ndc_extent

        cam0 = train.camera(0)
        extent = ndc_extent(train.c2w, cam0.fx, cam0.fy, cam0.width, cam0.height)
        yield Log(f"NDC: the training views' rays reach x, y up to {extent[0]:.2f}, {extent[1]:.2f}: the field's "
                  "box is stretched to hold them")
    render, step_size = make_renderer(cfg, modules, grid, scene.space, train.camera(0), extent)
    occ_threshold = cfg.occupancy_threshold if cfg.occupancy_threshold >= 0 else \
        OCCUPANCY_THRESHOLD.get(scene.space, 0.01)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=cfg.mixed_precision and dev.type == "cuda")
    # fast: targets composited on a random colour per ray while training (RayBatches).
    rays = RayBatches(train, scene.background, grid is not None, dev)
    bg = rays.background
    preview_cam, preview_gt = preview_target(val, cfg.preview_size, dev)
    yield Log(f"training: {cfg.steps} steps, the first preview at step {LOG_EVERY}")

    # Rays per preview chunk: with a budget, as many as could fill 16 budgets had every candidate been kept.
    view_chunk = max(1024, 16 * cfg.max_samples // per_ray) if grid is not None and cfg.max_samples else 16384

    def render_view(cam):
        with torch.autocast(**amp):
            return render_image(lambda o, d: render(o, d, bg, False)[0], cam.to(dev), chunk=view_chunk, device=dev)

    clock = TrainClock(cfg.steps, cfg.max_seconds, cfg.eval_at_seconds)  # paused for previews and scoring
    loss_acc = torch.zeros((), device=dev)
    timeline: dict[str, float] = {}
    step, n_rays = 0, cfg.batch_rays
    for step in range(1, cfg.steps + 1):
        modules.train()
        if grid is not None and (step == 1 or step % 16 == 0):
            with torch.autocast(**amp):
                grid.update(modules["field"].density, step_size, step, threshold=occ_threshold,
                            chunk=cfg.max_samples or 2 ** 20)
        for group, base in zip(opt.param_groups, base_lrs):
            group["lr"] = base * lr_factor(step, clock.progress(step))
        o, d, target, ray_bg = rays.sample(n_rays, central=grid is None and step <= cfg.precrop_steps)
        with torch.autocast(**amp):
            out, out_coarse = render(o, d, ray_bg, True)
        if grid is not None:  # fast: the budget may have rendered only the leading rays of the batch
            target = target[:out.extras["rays"]]
        loss = F.mse_loss(out.rgb, target)
        if out_coarse is not None and out_coarse is not out:
            loss = loss + F.mse_loss(out_coarse.rgb, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_acc += F.mse_loss(out.rgb.detach(), target)
        if grid is not None and cfg.target_samples:
            # The counts are already on the host (marching synchronises), so this costs no sync.
            n_rays = int(min(max(cfg.target_samples / max(out.extras["samples_per_ray"], 1e-3), 256), 2 ** 16))

        if step % LOG_EVERY == 0 or step == cfg.steps:
            mean_mse = float(loss_acc) / (LOG_EVERY if step % LOG_EVERY == 0 else step % LOG_EVERY)
            loss_acc.zero_()
            if not math.isfinite(mean_mse):
                raise UserInputError(f"training diverged (loss is {mean_mse}) at step {step}: lower --lr or "
                                     "try another --seed")
            losses = {"loss": mean_mse, "psnr_train": mse_to_psnr(mean_mse)}
            if ctx.preview_due(step) or step == LOG_EVERY:
                with clock.paused():
                    modules.eval()
                    view = render_view(preview_cam)
                    losses["psnr_val"] = psnr(view["rgb"], preview_gt)
                    yield Preview(step, _preview_images(view, to_uint8, colormap),
                                  caption=f"held-out view, step {step}, PSNR {losses['psnr_val']:.2f} dB")
            yield Progress(step, cfg.steps, losses)
        if (t_at := clock.checkpoint_due()) is not None:
            with clock.paused():
                modules.eval()
                scores = heldout_scores(render_view, val)
                timeline.update(at_seconds(t_at, psnr=scores["psnr"], steps=step, **peak_memory(dev)))
                yield Log(f"{t_at:g}s of training ({step} steps): held-out PSNR {scores['psnr']:.2f} dB, "
                          f"SSIM {scores['ssim']:.3f}")
        if clock.out_of_time():
            yield Log(f"stopped training at the {cfg.max_seconds:g}s budget after {step} steps")
            break
    train_seconds = clock.seconds

    modules.eval()

    metrics, scored, first_view = yield from final_scores(cfg, render_view, val, train_seconds, dev)
    metrics.update(timeline, train_seconds=train_seconds, steps=float(step))
    metrics.update(peak_memory(dev))
    yield Log(f"held-out PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} {scored}")
    if cfg.export:
        yield from _export(cfg, ctx, modules, grid, render_view, train, val, metrics, first_view, scene.space,
                           dict(background=float(scene.background), ndc_extent=list(extent)))
    yield Done(list(ctx.artifacts), metrics, time.perf_counter() - started)


def _preview_images(view, to_uint8, colormap) -> dict:
    opacity = view["opacity"]
    return {"rgb": to_uint8(view["rgb"]), "depth": colormap(view["depth"], mask=opacity > 0.5),
            "opacity": to_uint8(opacity)}


def _export(cfg: NerfConfig, ctx: RunContext, modules, grid, render_view, train, val, metrics, heldout: dict,
            space: str = "object", scene_info: dict | None = None) -> Iterator[Event]:
    """Turntable (forward-facing: a small circle before the scene), side-by-side held-out image (``heldout``:
    view 0's render and truth as scoring made them), coloured mesh (unbounded: of the unit ball around the
    centre; none for forward-facing) and checkpoint."""
    import torch

    from .core.budget import export_seconds
    from .core.training import turntable_and_heldout

    budget = export_seconds(metrics.get("train_seconds", 0.0))
    field = modules["field"] if grid is not None else modules["fine"]
    yield from turntable_and_heldout(ctx, cfg, render_view, train, space, heldout, budget)

    bound = 1.0 if space == "unbounded" else cfg.bound  # contraction leaves the unit ball as it is
    if space == "forward":
        yield Log("no mesh for a forward-facing capture: NDC space holds the view, not the object's shape")
    else:
        yield from _export_mesh(cfg, ctx, field, bound, budget, metrics)
    yield Log("writing the checkpoint")
    torch.save(checkpoint(cfg, modules, space, train, val, **(scene_info or {})), ctx.path("model.pt"))
    yield ctx.artifact("checkpoint", ctx.path("model.pt"), "checkpoint")


def _cameras(views) -> dict:
    """A set of views' cameras as tensors and numbers (``torch.load(weights_only=True)`` reads them back)."""
    import torch

    k = views.intrinsics if views.intrinsics is not None else \
        torch.tensor([[views.fx, views.fy, views.cx, views.cy]]).expand(len(views), 4)
    return {"c2w": views.c2w.float().clone(), "intrinsics": k.float().clone(), "width": int(views.width),
            "height": int(views.height), "names": list(views.names)}


def checkpoint(cfg: NerfConfig, modules, space: str, train, val, background: float = 0.0,
               ndc_extent=(1.0, 1.0)) -> dict:
    """What ``model.pt`` holds: the config, the weights, and what re-rendering needs besides them: the scene space,
    in NDC ('forward') the reference camera and the box's x, y extent the rays were warped with, the background,
    and the training and held-out cameras (in the normalised frame the field was trained in)."""
    return {"config": dataclasses.asdict(cfg), "state": modules.state_dict(), "space": space,
            "background": float(background), "ndc_extent": [float(e) for e in ndc_extent],
            "cameras": {"train": _cameras(train), "heldout": _cameras(val)}}


@dataclass
class Reloaded:
    """A NeRF rebuilt from its ``model.pt`` (``load_checkpoint``)."""

    cfg: NerfConfig
    space: str
    modules: object
    render: object  # (origins, dirs) -> RenderOut, as the run's render_view used
    cameras: dict  # split -> Camera list ('train', 'heldout'), in the trained frame

    def render_view(self, camera, chunk: int = 16384) -> dict:
        """rgb (H, W, 3), depth and opacity of ``camera`` (a ``core.cameras.Camera``)."""
        from .core.volume import render_image

        dev = next(self.modules.parameters()).device
        return render_image(self.render, camera.to(dev), chunk=chunk, device=dev)


def load_checkpoint(path: str | Path, device="cpu") -> Reloaded:
    """A NeRF run's ``model.pt`` back as a renderer: the same model, space, NDC warp (reference camera and extent)
    and background as when it was trained. Older checkpoints (before the space was stored) load as objects."""
    import pickle

    import torch

    from .core.cameras import Camera

    path = Path(path)
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        fields = {f.name for f in dataclasses.fields(NerfConfig)}
        cfg = NerfConfig(**{k: v for k, v in saved["config"].items() if k in fields})
        state = saved["state"]
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError, EOFError, ValueError,
            pickle.UnpicklingError) as exc:
        raise UserInputError(f"{path.name} is not a NeRF checkpoint ({type(exc).__name__}); give the model.pt a "
                             "NeRF run wrote") from None
    space = saved.get("space", "object")
    cams = {}
    for split, c in saved.get("cameras", {}).items():
        cams[split] = [Camera(c["c2w"][i].float(), *(float(v) for v in c["intrinsics"][i]), c["width"], c["height"])
                       for i in range(len(c["c2w"]))]
    if space == "forward" and not cams.get("train"):
        raise UserInputError(f"{path.name}: an NDC (forward-facing) checkpoint without its reference camera; "
                             "re-train with this version to re-render it")
    dev = torch.device(device)
    modules, _, _, grid = build_model(cfg, dev, SPACE_BOUND.get(space, cfg.bound))
    modules.load_state_dict(state)
    modules.eval()
    render, _ = make_renderer(cfg, modules, grid, space, cams["train"][0] if cams.get("train") else None,
                              tuple(saved.get("ndc_extent", (1.0, 1.0))))
    bg = torch.full((3,), float(saved.get("background", 0.0)), device=dev)
    return Reloaded(cfg, space, modules, lambda o, d: render(o, d, bg, False)[0], cams)


def _export_mesh(cfg: NerfConfig, ctx: RunContext, field, bound: float, budget: float, metrics) -> Iterator[Event]:
    """The coloured marching-cubes mesh of the density in [-bound, bound]^3 (.glb and .obj)."""
    import torch

    from .core.budget import grid_resolution
    from .core.export import save_mesh
    from .core.geometry import evaluate_grid, marching_cubes, vertex_normals
    from .core.volume import hidden_opacity

    dev = ctx.device
    with torch.no_grad():
        res = grid_resolution(lambda r: evaluate_grid(field.density, r, -bound, bound, dev),
                              cfg.mesh_resolution, budget)
        yield Log(f"extracting the mesh ({res}^3 grid)")
        density = evaluate_grid(field.density, res, -bound, bound, dev)
        if cfg.mesh_density > 0:
            level, what = cfg.mesh_density, f"density {cfg.mesh_density:g}"
        else:  # the half-opacity surface; a field too faint to reach it anywhere gets half its own peak
            density = hidden_opacity(density, 2 * bound / res)
            level = min(0.5, 0.5 * float(density.max()))
            what = f"opacity {level:.2f} seen from outside"
        mesh = marching_cubes(density, level, -bound, bound) if level > 1e-3 else None
        metrics["mesh_level"] = float(level)
        if mesh is None or mesh.num_faces == 0:
            yield Log(f"no surface at {what}: the field is empty, no mesh written (train longer; the mesh level "
                      "is under More in the tab, --mesh-density on the command line)", "warning")
        else:
            # Colour each vertex as seen from outside, looking along the inward normal.
            normals = vertex_normals(mesh.verts, mesh.faces).to(dev)
            verts = mesh.verts.to(dev)
            colors = [field(verts[i:i + 65536] + 0.01 * normals[i:i + 65536], -normals[i:i + 65536])[1]
                      for i in range(0, len(verts), 65536)]
            mesh.vert_colors = torch.cat(colors).float().cpu()
            metrics["mesh_faces"] = float(mesh.num_faces)
            yield ctx.artifact("mesh", save_mesh(mesh, ctx.path("mesh.glb")), "mesh (.glb)")
            yield ctx.artifact("mesh", save_mesh(mesh, ctx.path("mesh.obj")), "mesh (.obj)")
