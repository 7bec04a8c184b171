"""Exports that cost in proportion to the run: turntable frames, held-out views and mesh grids chosen from a
time budget and the cost measured on the first frame (or a small probe grid), with named-stage progress.

Contract: ``export_seconds(train_seconds)`` is what one export stage may take (a share of the training time,
never less than a floor: a 5 s CPU run does not get a 5-minute turntable, a 3-minute GPU run keeps its full
one). ``turntable(render, wanted, seconds)`` and ``views_within(...)`` are generators of ``Progress`` events
with a ``stage`` and no losses (the app shows "rendering the turntable 12/48"), returning what they made;
``grid_resolution(evaluate, wanted, seconds)`` picks a marching-cubes resolution. Pure Python, no torch.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterator, TypeVar

from ..events import Log, Progress, check_cancelled

T = TypeVar("T")
TURNTABLE = "rendering the turntable"
HELD_OUT = "scoring held-out views"
FLOOR_S = 15.0
"""Seconds an export stage may always take, however short the run."""
SHARE = 0.25
"""Fraction of the training time each export stage may take beyond the floor."""


def export_seconds(train_seconds: float, floor: float = FLOOR_S, share: float = SHARE) -> float:
    """Seconds one export stage (turntable, held-out scoring, mesh) may take after ``train_seconds`` of training."""
    return max(floor, share * max(0.0, train_seconds))


def count_within(seconds: float, seconds_each: float, wanted: int, minimum: int = 1) -> int:
    """How many items of ``seconds_each`` fit in ``seconds``: at most ``wanted``, at least ``minimum``."""
    if wanted <= minimum:
        return max(0, wanted)
    fit = int(seconds / max(seconds_each, 1e-6))
    return max(minimum, min(wanted, fit))


def turntable(render: Callable[[int, int], T], wanted: int, seconds: float, minimum: int = 8,
              stage: str = TURNTABLE) -> Iterator[Progress | Log]:
    """Frames around the object: ``render(k, n)`` draws frame k of n (frame 0 must not depend on n). Renders
    frame 0, times it, keeps as many frames as fit in ``seconds`` (at most ``wanted``); returns the frames."""
    if wanted < 1:
        return []
    t0 = time.perf_counter()
    frames = [render(0, wanted)]
    each = time.perf_counter() - t0
    n = count_within(seconds, each, wanted, min(minimum, wanted))
    if n < wanted:  # the time said is the frames' (each as long as the first), which the minimum may put past the budget
        fewest = " (the fewest it makes)" if n * each > seconds else ""
        yield Log(f"turntable: {n} frames instead of {wanted}{fewest}, about {fmt_s(n * each)} at {each:.1f}s a "
                  "frame on this device")
    yield Progress(1, n, stage=stage)
    for k in range(1, n):
        check_cancelled()
        frames.append(render(k, n))
        yield Progress(k + 1, n, stage=stage)
    return frames


def fmt_s(seconds: float) -> str:
    """'45s' or '2m 05s'."""
    s = int(round(seconds))
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def views_within(score: Callable[[int], T], available: int, seconds: float, stage: str = HELD_OUT
                 ) -> Iterator[Progress | Log]:
    """``score(i)`` for held-out views 0, 1, ... while they fit in ``seconds`` (timed on the first); returns
    the list of results (at least one). ``Progress(i, n)``: i views scored of n; when the first view shows that
    fewer than ``available`` fit, a ``Log`` says so before the count goes on with the new n."""
    if available < 1:
        return []
    yield Progress(0, available, stage=stage)  # the first view may take minutes on a CPU: the status says so
    t0 = time.perf_counter()
    out = [score(0)]
    each = time.perf_counter() - t0
    n = count_within(seconds, each, available, 1)
    if n < available:
        yield Log(f"held-out scoring: {n} of {available} views: {each:.0f}s each on this device, and each export "
                  f"stage gets about {fmt_s(seconds)} (a share of the training time)")
    if n > 1:  # (with one view, a "1/1" after "0/2" would read as a count that went wrong)
        yield Progress(1, n, stage=stage)
    for i in range(1, n):
        check_cancelled()
        out.append(score(i))
        yield Progress(i + 1, n, stage=stage)
    return out


def grid_resolution(evaluate: Callable[[int], object], wanted: int, seconds: float, minimum: int = 32,
                    probe: int = 24) -> int:
    """The marching-cubes resolution whose grid ``evaluate(res)`` takes about ``seconds`` (timed on a
    ``probe``^3 grid; cost grows as res^3): at most ``wanted``, at least ``minimum``, a multiple of 8."""
    if wanted <= minimum:
        return wanted
    t0 = time.perf_counter()
    evaluate(probe)
    per_point = (time.perf_counter() - t0) / probe ** 3
    res = int(math.floor((seconds / max(per_point, 1e-12)) ** (1 / 3) / 8) * 8)
    return max(minimum, min(wanted, res))
