"""Issue 19: a Stop during a stage that never yields (a held-out view or a turntable frame rendered on a CPU, a mesh
grid, structure from motion) ended only when the stage did, so the next Run waited for it. Now the stages check for
cancellation between units of work (``events.check_cancelled``, inside the app worker's ``cancellable``): these
tests count the units done after the Stop, never the time."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from pipelines.core import budget
from pipelines.core.cameras import Camera
from pipelines.core.geometry import evaluate_grid
from pipelines.core.volume import RenderOut, render_image
from pipelines.events import Cancelled, Done, Progress, cancellable, check_cancelled


def poll(cond, deadline_s: float = 60.0):
    """``cond()`` once it is truthy, polled against a deadline (a guard against hanging, not a measure)."""
    end = time.monotonic() + deadline_s
    while not (value := cond()) and time.monotonic() < end:
        time.sleep(0.01)
    return value


def counting_rays(counter: list, on_chunk=None):
    """A render_rays that counts its chunks (and calls ``on_chunk(n)`` before the n-th, 1-based)."""
    def render_rays(o, d):
        counter.append(len(o))
        if on_chunk is not None:
            on_chunk(len(counter))
        n = len(o)
        return RenderOut(torch.zeros(n, 3), torch.zeros(n), torch.zeros(n), {})
    return render_rays


CAM = Camera(torch.eye(4), 8.0, 8.0, 4.0, 4.0, 8, 8)  # 64 rays: 16 chunks of 4


def test_check_cancelled_is_inert_without_a_consumer_flag():
    chunks: list = []
    out = render_image(counting_rays(chunks), CAM, chunk=4)
    assert out["rgb"].shape == (8, 8, 3) and len(chunks) == 16
    check_cancelled()  # outside cancellable: never raises (CLI, tests, run_to_completion)


def test_a_render_and_a_mesh_grid_stop_within_one_chunk():
    flag, chunks = threading.Event(), []
    with cancellable(flag), pytest.raises(Cancelled):
        render_image(counting_rays(chunks, lambda n: n == 3 and flag.set()), CAM, chunk=4)
    assert len(chunks) == 3  # the chunk in progress when Stop came finished; none started after it
    calls: list = []

    def density(x):
        calls.append(len(x))
        if len(calls) == 2:
            flag.set()
        return torch.zeros(len(x))

    flag.clear()
    with cancellable(flag), pytest.raises(Cancelled):
        evaluate_grid(density, 16, -1.0, 1.0, chunk=512)  # 8 chunks
    assert len(calls) == 2
    assert flag.is_set() and check_cancelled() is None  # the flag is this block's only: outside, inert again


def turntable_pipeline(chunks: list, reached: threading.Event, gate: threading.Event, finished: list):
    """A run whose only stage is a turntable of 6 frames of 16 chunks each; it parks inside frame 2's 5th chunk
    (``reached``) until ``gate`` opens."""
    def on_chunk(n):
        if n == 16 + 5:
            reached.set()
            gate.wait(60)

    def frame(k, n):
        return render_image(counting_rays(chunks, on_chunk), CAM, chunk=4)["rgb"]

    try:
        frames = yield from budget.turntable(frame, 6, 1e9, minimum=6)
        yield Done([], {"frames": float(len(frames))}, 1.0)
    finally:
        finished.append(len(chunks))


def test_stop_in_the_app_ends_a_turntable_frame_within_one_chunk_and_frees_the_slot():
    """The app's path: Stop closes ``stream.drive``; its worker's flag stops the frame being rendered."""
    from gen3d_app import stream

    chunks, finished, closed = [], [], []
    reached, gate = threading.Event(), threading.Event()
    gen = stream.drive(lambda cfg: turntable_pipeline(chunks, reached, gate, finished), None, min_interval=0.0,
                       keepalive=0.02, on_closed=lambda: closed.append(True))
    try:
        for _ in gen:
            if reached.is_set():
                break
        gen.close()  # Stop: the worker is inside frame 2 and yields nothing until the frame ends
        assert not closed and len(chunks) == 16 + 5
    finally:
        gate.set()  # the chunk in progress ends
    assert poll(lambda: closed) == [True]  # the slot is given back: the next Run starts
    assert finished == [16 + 5]  # no chunk started after the Stop; frames 3-6 never began


@pytest.fixture
def tiny_nerf(lego, tmp_path):
    from pipelines.nerf import NerfConfig

    return NerfConfig(scene=str(lego), out_dir=str(tmp_path), device="cpu", model="fast", steps=20, batch_rays=256,
                      target_samples=4096, hash_levels=4, hash_log2_size=12, grid_resolution=16, march_steps=48,
                      downscale=16, max_views=6, eval_views=3, preview_every=10, preview_size=25,
                      turntable_frames=6, mesh_resolution=24)


@pytest.mark.parametrize("stage", ["training", budget.HELD_OUT, budget.TURNTABLE])
def test_a_nerf_run_stopped_while_training_scoring_or_rendering_the_turntable_does_no_more(stage, tiny_nerf,
                                                                                           monkeypatch):
    """The real NeRF loop on a CPU: Stop at step 10 of 20 (Progress comes every 10 steps), as scoring begins (before
    view 1) or in the turntable (after frame 1) ends the run at the next step or chunk: no more steps, views or
    frames, no exports, memory freed."""
    from pipelines import config, nerf
    from pipelines.core import training

    freed, scored, chunks = [], [], []
    monkeypatch.setattr(config.RunContext, "free", lambda self: freed.append(True))
    real_score = training.score_view

    def counted_score(*args, **kwargs):  # counts the views scored to the end
        out = real_score(*args, **kwargs)
        scored.append(args[2])
        return out

    monkeypatch.setattr(training, "score_view", counted_score)
    real_render = nerf.make_renderer

    def counted_renderer(*args, **kwargs):
        render, step = real_render(*args, **kwargs)
        return (lambda o, d, bg, perturb: chunks.append(len(o)) or render(o, d, bg, perturb)), step

    monkeypatch.setattr(nerf, "make_renderer", counted_renderer)
    flag, seen = threading.Event(), []
    gen = nerf.run(tiny_nerf)
    with cancellable(flag), pytest.raises(Cancelled):
        for ev in gen:
            seen.append(ev)
            if isinstance(ev, Progress) and (ev.stage == stage if ev.stage else stage == "training" and ev.step == 10):
                flag.set()  # Stop, while the consumer handles this event; the next unit must not run
                at_stop = (len(scored), len(chunks))
    assert flag.is_set() and freed == [True]
    assert (len(scored), len(chunks)) == at_stop  # the next view (or frame) stopped at its first chunk
    assert not any(isinstance(ev, Done) for ev in seen)
    assert not any(p.suffix in (".mp4", ".pt") for p in Path(tiny_nerf.out_dir).iterdir())


def test_the_turntable_says_how_long_its_frames_take_even_past_the_budget(monkeypatch):
    """The browser check: a CPU turntable's minimum of 8 frames 'to finish in about 15s' took 3x that (fern, 1/8:
    9-11 s a 64x48 frame, the first 9.0 s). The time said now is the frames' own, the first one's times n."""
    clock = [0.0]
    monkeypatch.setattr(budget.time, "perf_counter", lambda: clock[0])

    def frame(k, n):
        clock[0] += 3.0  # each frame takes 3 s on this fake clock
        return k

    logs = [e.message for e in budget.turntable(frame, 24, 15.0) if not isinstance(e, Progress)]
    assert logs == ["turntable: 8 frames instead of 24 (the fewest it makes), about 24s at 3.0s a frame on this "
                    "device"]
    logs = [e.message for e in budget.turntable(frame, 24, 60.0) if not isinstance(e, Progress)]
    assert logs == ["turntable: 20 frames instead of 24, about 1m 00s at 3.0s a frame on this device"]


def test_a_stop_cancels_the_structure_from_motion_phase_in_progress():
    """COLMAP's phases run in C++ (seconds to minutes each): a Stop reaches them through pycolmap's own
    CancellationToken (here a stand-in with its interface: cancel(); the phase raises InterruptedError)."""
    from types import SimpleNamespace

    from pipelines.core import sfm

    class Token:
        def __init__(self):
            self.cancelled = threading.Event()

        def cancel(self):
            self.cancelled.set()

    fake = SimpleNamespace(CancellationToken=Token)

    def phase(token):  # runs until its token is cancelled, as a long COLMAP phase (the wait is a guard only)
        if token.cancelled.wait(60):
            raise InterruptedError("Operation cancelled")

    flag = threading.Event()
    with cancellable(flag), pytest.raises(Cancelled):
        with sfm.colmap_cancellation(fake) as token:
            flag.set()  # Stop, while the phase runs
            phase(token)
    assert token.cancelled.is_set()
    with cancellable(threading.Event()), sfm.colmap_cancellation(fake) as token:
        pass  # not stopped: the token stays as it was
    assert not token.cancelled.is_set()
