"""Training-loop pieces that the methods fitted to posed images (NeRF, VolSDF) share: a training clock that
pauses while a run previews or scores, the benchmark checkpoints (``eval_at_seconds``) and the ``max_seconds``
budget, and the held-out PSNR/SSIM.

Contract: ``PosedImagesConfig`` holds the config fields these methods share (the scene, how it loads, the
clock's); ``TrainClock(steps, max_seconds, eval_at_seconds)`` counts training wall time only (wrap previews and
scoring in ``with clock.paused():``); ``progress(step)`` in [0, 1] drives learning-rate schedules;
``checkpoint_due()`` returns the next ``eval_at_seconds`` time once training has reached it (each one once);
``out_of_time()`` says when the budget is spent. ``heldout_scores`` renders every view of a ``core.datasets``
posed-image set and averages PSNR and SSIM.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from ..config import PipelineConfig


@dataclass
class PosedImagesConfig(PipelineConfig):
    """Config fields of the methods fitted to posed images (NeRF, VolSDF), declared once."""

    scene: str = ""
    """A Blender-format folder (transforms_*.json + images) or a .zip of one; empty: the shipped example."""
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


def heldout_scores(render_view: Callable, views) -> dict[str, float]:
    """Mean PSNR and SSIM over every view of ``views`` (``camera(i)``, ``images`` (N, H, W, 3) on any device).

    Args:
        render_view: camera -> dict with "rgb" (H, W, 3) in [0, 1].
    """
    from .metrics import psnr, ssim  # torch: not at import, as the app imports the configs from here

    total = {"psnr": 0.0, "ssim": 0.0}
    for i in range(len(views)):
        rgb = render_view(views.camera(i))["rgb"]
        gt = views.images[i].to(rgb.device)
        total["psnr"] += psnr(rgb, gt) / len(views)
        total["ssim"] += ssim(rgb, gt) / len(views)
    return total
