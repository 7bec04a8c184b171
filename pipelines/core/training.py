"""Training-loop pieces that the methods fitted to posed images (NeRF, VolSDF) share: their common config
fields, scene loading, random ray batches, the preview target, a training clock that pauses while a run
previews or scores (with the benchmark checkpoints, ``eval_at_seconds``, and the ``max_seconds`` budget), and
the held-out PSNR/SSIM.

Contract: ``PosedImagesConfig`` holds the shared config fields and ``load_posed_scene`` loads the scene they
name; ``RayBatches.sample`` draws random training rays with their target colours; ``preview_target`` is the
held-out view previews show; ``TrainClock(steps, max_seconds, eval_at_seconds)`` counts training wall time
only (wrap previews and scoring in ``with clock.paused():``), its ``progress(step)`` in [0, 1] drives
learning-rate schedules, ``checkpoint_due()`` returns the next ``eval_at_seconds`` time once training has
reached it (each one once) and ``out_of_time()`` says when the budget is spent; ``heldout_scores`` renders
every view of a ``core.datasets`` posed-image set and averages PSNR and SSIM. ``ema_update`` keeps a moving
average of a model's weights (the single-view, Point-E and prior trainers). Nothing here imports torch at import
time (the app imports the configs).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

from ..config import OutputsConfig


@dataclass
class PosedImagesConfig(OutputsConfig):
    """Config fields of the methods fitted to posed images (NeRF, VolSDF), declared once (their exports'
    come from ``OutputsConfig``)."""

    preview_every: int = 200
    """Yield preview renders every N steps (each costs a render and a GPU sync)."""
    preview_size: int = 200
    """Longest side of preview and turntable renders, in pixels."""

    scene: str = ""
    """A Blender-format folder (transforms_*.json), a nerfstudio/Instant-NGP (transforms.json), LLFF
    (poses_bounds.npy) or COLMAP (sparse/0) capture, a folder of photos or a video (posed by structure from motion,
    needs pycolmap), or a .zip of one; empty: the shipped example."""
    format: Literal["auto", "blender", "nerfstudio", "llff", "colmap", "images", "video"] = "auto"
    """The scene's format; 'auto' detects it from the files."""
    sfm_max_images: int = 100
    """Photos or a video: at most this many images go to structure from motion (a video's sharpest frames)."""
    sfm_max_side: int = 1024
    """Photos or a video: images are resized to at most this many pixels a side before structure from motion."""
    downscale: int = 1
    """Load images at 1/N resolution."""
    max_views: int = 0
    """Use at most this many training views (0: all)."""
    eval_views: int = 0
    """Held-out views for the final PSNR/SSIM (0: all of the held-out split)."""
    white_background: bool = True
    """Composite transparent images and renders on white (NeRF-synthetic protocol); else black."""
    eval_at_seconds: str = ""
    """Comma-separated training times (s) at which to score all held-out views (benchmarks); the clock
    pauses while scoring."""
    max_seconds: float = 0.0
    """Stop training after this many seconds (0: no limit); the learning-rate schedule then follows the clock."""


def load_posed_scene(cfg: PosedImagesConfig, example: Path, out_dir: Path):
    """(scene root, training views, held-out views) of ``cfg.scene`` (empty: ``example``), as
    ``core.datasets.PosedImages`` on the CPU with transparent pixels on the config's background."""
    from .datasets import load_blender, open_scene, scene_splits

    root = open_scene(cfg.scene or example, out_dir)
    train_split, val_split = scene_splits(root)
    bg = 1.0 if cfg.white_background else 0.0
    return (root, load_blender(root, train_split, cfg.downscale, cfg.max_views, bg),
            load_blender(root, val_split, cfg.downscale, cfg.eval_views, bg))


@dataclass
class LoadedScene:
    """A scene ready to train on: its views in the space the renderer uses, and what was chosen."""

    root: Path
    format: str
    train: object  # core.datasets.PosedImages
    val: object
    space: str  # 'object' (a box, NeRF-synthetic), 'forward' (NDC) or 'unbounded' (contracted)
    background: float  # the colour renders and transparent pixels are composited on
    points: tuple | None = None  # (xyz (P, 3), rgb (P, 3) uint8) sparse points, normalised like the cameras
    summary: str = ""  # e.g. "structure from motion registered 20 of 20 images"


def load_scene(cfg: PosedImagesConfig, example: Path, out_dir: Path, space: str = "auto",
               spaces: tuple[str, ...] = ("object", "forward", "unbounded")) -> Iterator:
    """Generator of ``Log``/``Progress`` events (structure from motion takes a while) returning a ``LoadedScene``.

    Blender scenes, and transforms.json scenes whose images have alpha (objects on nothing), train as today: an
    object in the [-bound, bound]^3 box on the config's background. Real captures (LLFF, COLMAP, nerfstudio,
    photos, a video) get no white compositing: their space is ``space``, or when 'auto' chosen from the cameras
    (``core.scene_space.choose_space``; a method that renders only some spaces passes ``spaces``, and the first
    one then stands in), and their cameras are normalised into it.
    """
    from ..events import Log
    from .captures import load_split, open_capture, read_capture
    from .datasets import HOLDOUT, load_blender, scene_splits
    from .scene_space import choose_space, normalize

    source = cfg.scene or example
    root, fmt = open_capture(source, out_dir, cfg.format)
    yield Log(f"scene format: {fmt}" + ("" if cfg.format == "auto" else " (as asked)"))
    bg = 1.0 if cfg.white_background else 0.0
    if fmt == "blender":
        tr, va = scene_splits(root)
        train, val = (load_blender(root, tr, cfg.downscale, cfg.max_views, bg),
                      load_blender(root, va, cfg.downscale, cfg.eval_views, bg))
        if space not in ("auto", "object"):
            yield Log(f"a Blender scene is an object on a background: space '{space}' ignored", "warning")
        return LoadedScene(root, fmt, train, val, "object", bg)
    summary = ""
    if fmt in ("images", "video"):
        from .sfm import reconstruct

        root = yield from reconstruct(root, fmt, Path(out_dir).parent / "sfm_cache", cfg.sfm_max_images,
                                      cfg.sfm_max_side)
        fmt_read = "colmap"
    else:
        fmt_read = fmt
    cap = read_capture(root, fmt_read, cfg.downscale)
    for note in cap.notes:
        yield Log(note)
    if fmt_read == "colmap":
        summary = f"{len(cap)} posed images, {len(cap.xyz)} sparse points"
    if fmt == "nerfstudio" and space == "auto":
        probe = load_split(cap, "all", 8, max_views=1)
        if probe.alphas is not None:  # an object scene with transparent background, as Blender's
            train, val = (load_split(cap, "train", cfg.downscale, cfg.max_views, bg),
                          load_split(cap, HOLDOUT, cfg.downscale, cfg.eval_views, bg))
            yield Log("transforms.json images have alpha: an object scene, trained as the Blender ones")
            return LoadedScene(root, fmt, train, val, "object", bg, summary=summary)
    if space == "auto":
        space, why = choose_space(cap.poses)
        if space not in spaces:
            why += f"; this method renders '{spaces[0]}' only, so it uses that (the background is fitted in its box)"
            space = spaces[0]
    else:
        why = "as asked"
    sim, how = normalize(cap.poses, space, cap.bounds, cap.xyz if cap.xyz is not None and len(cap.xyz) else None)
    cap.poses = sim.apply_c2w(cap.poses)
    if cap.bounds is not None:
        cap.bounds = cap.bounds * sim.scale
    points = None
    if cap.xyz is not None and len(cap.xyz):
        points = (sim.apply_points(cap.xyz), cap.rgb)
    yield Log(f"scene space: {space}: {why}; {how}")
    train = load_split(cap, "train", cfg.downscale, cfg.max_views, 0.0)
    val = load_split(cap, HOLDOUT, cfg.downscale, cfg.eval_views, 0.0)
    return LoadedScene(root, fmt, train, val, space, 0.0, points, summary)


def write_cameras(scene: LoadedScene, path: Path, max_points: int = 5000) -> Path:
    """The scene's cameras (camera-to-world, intrinsics, image size) and up to ``max_points`` sparse points as JSON,
    in the space it trains in: the app draws them (frusta and points) before training starts."""
    import json

    import numpy as np

    views = [scene.train, scene.val]
    cams = [dict(c2w=np.round(v.c2w[i].numpy(), 5).tolist(), fx=v.camera(i).fx, fy=v.camera(i).fy,
                 width=v.width, height=v.height, heldout=v is scene.val, name=v.names[i])
            for v in views for i in range(len(v))]
    points = []
    if scene.points is not None:
        xyz, rgb = scene.points
        keep = np.random.default_rng(0).permutation(len(xyz))[:max_points]
        points = np.concatenate([np.round(xyz[keep], 4), rgb[keep].astype(np.float64)], 1).tolist()
    path.write_text(json.dumps(dict(space=scene.space, format=scene.format, summary=scene.summary, cameras=cams,
                                    points=points)))
    return path


class RayBatches:
    """Random training rays of a set of posed images and their target colours, all on ``device``.

    With ``random_background`` (and images with alpha), each ray's target is composited again on a random
    colour, which the render is given as its background: empty space cannot then pass for the background
    colour (nerfacc's recipe).
    """

    def __init__(self, views, background: float, random_background: bool, device):
        import torch

        self.views, self.device = views, device
        self.images, self.c2w = views.images.to(device), views.c2w.to(device)
        self.alphas = views.alphas.to(device) if (random_background and views.alphas is not None) else None
        self.intrinsics = views.intrinsics.to(device) if views.intrinsics is not None else None
        self.background = torch.full((3,), float(background), device=device)

    def sample(self, n: int, central: bool = False):
        """``n`` rays from random pixels of random images (``central``: of each image's central half only).

        Returns:
            origins (n, 3), dirs (n, 3), target colours (n, 3), and the background to render them on: (3,), or
            (n, 3) with random backgrounds.
        """
        import torch

        from ..events import check_cancelled
        from .rays import pixel_rays

        check_cancelled()  # each training step starts here: a Stop ends training within a step, not LOG_EVERY
        n_img, h, w = self.images.shape[:3]
        y0, x0 = (h // 4, w // 4) if central else (0, 0)
        idx = torch.randint(0, n_img, (n,), device=self.device)
        py = torch.randint(y0, h - y0, (n,), device=self.device)
        px = torch.randint(x0, w - x0, (n,), device=self.device)
        v = self.views
        if self.intrinsics is not None:  # per-view intrinsics: one per ray
            fx, fy, cx, cy = self.intrinsics[idx].unbind(-1)
            o, d = pixel_rays(self.c2w[idx], px + 0.5, py + 0.5, fx, fy, cx, cy)
        else:
            o, d = pixel_rays(self.c2w[idx], px + 0.5, py + 0.5, v.fx, v.fy, v.cx, v.cy)
        target, ray_bg = self.images[idx, py, px], self.background
        if self.alphas is not None:
            ray_bg = torch.rand(n, 3, device=self.device)
            target = target + (ray_bg - self.background) * (1 - self.alphas[idx, py, px])
        return o, d, target, ray_bg


def preview_target(views, size: int, device):
    """(camera, image (h, w, 3) on ``device``): the first view with its longest side at most ``size`` pixels,
    and its image area-averaged to that size."""
    import torch.nn.functional as F

    cam = views.camera(0).scaled(min(1.0, size / max(views.width, views.height)))
    img = views.images[0]
    if img.shape[:2] != (cam.height, cam.width):
        img = F.interpolate(img.permute(2, 0, 1)[None], size=(cam.height, cam.width), mode="area")[0].permute(1, 2, 0)
    return cam, img.to(device)


class TrainClock:
    """Training seconds of a run, its schedule's progress, benchmark checkpoints and time budget.

    Args:
        steps: the step budget (progress runs over it when there is no time budget).
        max_seconds: stop after this many training seconds (0: no limit); progress then runs over the time.
        eval_at_seconds: comma-separated training times (s) at which to score, e.g. "15,30,60".
    """

    def __init__(self, steps: int, max_seconds: float = 0.0, eval_at_seconds: str = ""):
        self.steps, self.max_seconds = steps, max_seconds
        self.checkpoints = sorted(float(s) for s in eval_at_seconds.split(",") if s.strip())
        self._banked, self._tick = 0.0, time.perf_counter()
        self._running = True

    @property
    def seconds(self) -> float:
        """Training seconds so far (paused time excluded)."""
        return self._banked + (time.perf_counter() - self._tick if self._running else 0.0)

    def progress(self, step: int) -> float:
        """Share of the budget spent before ``step`` (1-based): of ``max_seconds`` when set, else of the steps."""
        return min(1.0, self.seconds / self.max_seconds if self.max_seconds else (step - 1) / self.steps)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stops the clock for the block (a preview, scoring, and the consumer's handling of what it yields)."""
        self._banked, self._running = self.seconds, False
        try:
            yield
        finally:
            self._tick, self._running = time.perf_counter(), True

    def checkpoint_due(self) -> float | None:
        """The earliest ``eval_at_seconds`` time that training has reached, removed from the list; else None."""
        if self.checkpoints and self.seconds >= self.checkpoints[0]:
            return self.checkpoints.pop(0)
        return None

    def out_of_time(self) -> bool:
        return bool(self.max_seconds) and self.seconds >= self.max_seconds


def at_seconds(t: float, **values: float) -> dict[str, float]:
    """Checkpoint metrics named as the benchmarks read them: ``at_seconds(30, psnr=p)`` -> {"psnr@30s": p}."""
    return {f"{k}@{t:g}s": float(v) for k, v in values.items()}


def schedule_progress(step: int, steps: int, seconds: float, max_seconds: float) -> float:
    """Training progress in [0, 1] for the learning-rate and regulariser schedules: the share of whichever budget,
    steps or seconds (0: none), is nearer its end, so a generous time cap still ends the schedules at the last step."""
    return min(1.0, max(step / steps, seconds / max_seconds if max_seconds else 0.0))


def ema_update(ema, model, decay: float, step: int) -> None:
    """Polyak averaging after optimiser step ``step`` (0-based): ema <- d * ema + (1 - d) * model with d = ``decay``
    after a short warm-up (early averages would keep the random start), every parameter in one launch. Floating
    buffers (BatchNorm statistics) are averaged alike, others (batch counts) copied."""
    import torch

    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)
        for e, b in zip(ema.buffers(), model.buffers()):
            if e.is_floating_point():
                e.lerp_(b, 1 - d)
            else:
                e.copy_(b)


def peak_memory(dev) -> dict[str, float]:
    """{"peak_gpu_gb": the most GPU memory allocated so far (since the caller's reset)} on CUDA, else {}."""
    import torch

    return {"peak_gpu_gb": torch.cuda.max_memory_allocated(dev) / 2 ** 30} if dev.type == "cuda" else {}


CPU_SCORE_PIXELS = 192 * 144
"""On a CPU, app and CLI runs score a held-out view at this many pixels at most: there one 504x378 fern view took
about 15 minutes to render (benchmarks, which set ``eval_at_seconds`` or turn exports off, score at full size)."""


def score_pixels(cfg, device) -> int:
    """The held-out scoring cap a run uses: ``CPU_SCORE_PIXELS`` for a UI or CLI run on a CPU, else 0 (none)."""
    return CPU_SCORE_PIXELS if device.type == "cpu" and cfg.export and not cfg.eval_at_seconds else 0


def score_view(render_view: Callable, views, i: int, max_pixels: int = 0):
    """(PSNR, SSIM, render, truth) of held-out view ``i``. A view of more than ``max_pixels`` (0: no cap) is rendered
    at a reduced size and compared with its truth area-downsampled to that size."""
    import torch.nn.functional as F

    from .metrics import psnr, ssim  # torch: not at import, as the app imports the configs from here

    cam, gt = views.camera(i), views.images[i]
    if max_pixels and cam.width * cam.height > max_pixels:
        cam = cam.scaled(math.sqrt(max_pixels / (cam.width * cam.height)))
        gt = F.interpolate(gt.permute(2, 0, 1)[None].float(), size=(cam.height, cam.width), mode="area")[0]
        gt = gt.permute(1, 2, 0)
    rgb = render_view(cam)["rgb"]
    gt = gt.to(rgb.device)
    return psnr(rgb, gt), ssim(rgb, gt), rgb, gt


def scored_size(views, max_pixels: int) -> str:
    """' at WxH, reduced from WxH on the CPU' when ``score_view`` reduces these views, else ''."""
    w, h = views.width, views.height
    if not max_pixels or w * h <= max_pixels:
        return ""
    f = math.sqrt(max_pixels / (w * h))
    return f" at {max(1, round(w * f))}x{max(1, round(h * f))}, reduced from {w}x{h} on the CPU"


def final_scores(cfg, render_view: Callable, views, train_seconds: float, device) -> Iterator:
    """After training, a generator: held-out PSNR/SSIM with per-view progress. A benchmark (``eval_at_seconds``)
    or a run without exports scores every view; an app or CLI run as many as fit its export budget, each at
    ``score_pixels``. Returns (metrics {psnr, ssim}, 'over k of n views ...' for the log, view 0's
    {rgb, gt} as scored, for the side-by-side image: rendering it again costs minutes on a CPU)."""
    from .budget import export_seconds, views_within

    first: dict = {}
    max_pixels = score_pixels(cfg, device)

    def score(i: int) -> tuple[float, float]:
        p, q, rgb, gt = score_view(render_view, views, i, max_pixels)
        if i == 0:
            first.update(rgb=rgb, gt=gt)
        return p, q

    if cfg.eval_at_seconds or not cfg.export:
        scores = [score(i) for i in range(len(views))]
    else:
        scores = yield from views_within(score, len(views), export_seconds(train_seconds))
    metrics = {"psnr": sum(p for p, _ in scores) / len(scores), "ssim": sum(q for _, q in scores) / len(scores)}
    return metrics, f"over {len(scores)} of {len(views)} views{scored_size(views, max_pixels)}", first


def turntable_camera(train, space: str, side: int, k: int, n: int):
    """Frame k of n of a run's turntable at ``side`` pixels: around the object at the training cameras' mean
    distance, elevation and field of view, or for a forward-facing capture a small circle in their plane."""
    import torch

    from .cameras import orbit_cameras

    if space == "forward":
        import dataclasses

        from .scene_space import forward_path

        cam = train.camera(0).scaled(side / max(train.width, train.height))
        return dataclasses.replace(cam, c2w=forward_path(train.c2w, n)[k])
    pos = train.c2w[:, :3, 3]
    dist = float(pos.norm(dim=-1).mean())
    elev = float(torch.rad2deg(torch.asin((pos[:, 2] / pos.norm(dim=-1)).clamp(-1, 1))).mean())
    fov = math.degrees(2 * math.atan(0.5 * train.width / train.fx))
    return orbit_cameras(n, dist, elev, fov, side)[k]


def turntable_and_heldout(ctx, cfg, render_view: Callable, train, space: str, heldout: dict, budget: float) -> Iterator:
    """The exports NeRF and VolSDF share, a generator: the turntable video (``turntable_camera``'s frames, as
    many as ``budget`` seconds allow) and the held-out view beside its truth (``heldout``: final_scores' view 0)."""
    import numpy as np

    from .budget import turntable
    from .export import save_image, save_video
    from .images import to_uint8

    side = min(cfg.preview_size, max(train.width, train.height))

    def frame(k: int, n: int):
        return to_uint8(render_view(turntable_camera(train, space, side, k, n))["rgb"])

    frames = yield from turntable(frame, cfg.turntable_frames, budget)
    if frames:
        yield ctx.artifact("video", save_video(frames, ctx.path("turntable.mp4")), "turntable")
    side_by_side = np.concatenate([to_uint8(heldout["rgb"]), to_uint8(heldout["gt"])], axis=1)
    yield ctx.artifact("image", save_image(side_by_side, ctx.path("heldout_view.png")), "held-out view: render | truth")


def heldout_scores(render_view: Callable, views, max_pixels: int = 0) -> dict[str, float]:
    """Mean PSNR and SSIM over every view of ``views`` (``camera(i)``, ``images`` (N, H, W, 3) on any device), each
    scored by ``score_view`` with ``max_pixels``.

    Args:
        render_view: camera -> dict with "rgb" (H, W, 3) in [0, 1].
    """
    from ..events import check_cancelled

    total = {"psnr": 0.0, "ssim": 0.0}
    for i in range(len(views)):
        check_cancelled()  # a Stop ends scoring between views (and within one: render_image checks per chunk)
        p, q, _, _ = score_view(render_view, views, i, max_pixels)
        total["psnr"] += p / len(views)
        total["ssim"] += q / len(views)
    return total
