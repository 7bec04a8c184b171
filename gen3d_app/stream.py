"""Maps a pipeline's event stream to UI updates, with no browser and no Gradio components involved.

Contract: ``drive(run_fn, cfg)`` runs ``run_fn(cfg)`` and yields dicts ``{output name: value}`` holding only
what changed (names: ``status``, ``image:<key>``, ``plot``, ``video``, ``model3d``, ``files``, ``metrics``);
the widgets turn names into components. ``RunState.apply(event)`` and ``render(state, names)`` are the
pure parts. Progress and previews are throttled to one update per ``min_interval`` seconds (the plot to
one per ``plot_interval``); artifacts, warnings and the end are sent at once, and a held-back update is sent
once ``min_interval`` has passed even when the pipeline sends nothing more (a long step or export).

The status names what the run is doing: the training step, or the latest ``Log`` (loading the prior, extracting
the mesh) or named stage (a ``Progress`` with a ``stage`` and no losses: "rendering the turntable 12/48").

The pipeline runs in a worker thread of its own, so ``drive`` yields at least every ``keepalive`` seconds
(an empty dict when there is nothing new): Gradio's Stop can only close a generator that is not inside
``next()``, and its cancel request (a Run click while it is pending is queued: "always_last") lasts until then.
Closing ``drive`` asks the worker to stop; the worker closes the pipeline generator after its current step
(its ``finally:`` frees GPU memory) and then calls ``on_closed``; a stage that runs long between yields (scoring a
held-out view, a turntable frame, a mesh grid, SfM) ends sooner, at its next ``check_cancelled()`` (the worker
iterates inside ``cancellable``): within one chunk of rays or grid points. Errors become ``gr.Error``.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from pipelines.config import UserInputError
from pipelines.events import Artifact, ArtifactReady, Cancelled, Done, Log, Preview, Progress, cancellable

log = logging.getLogger("gen3d.app")

OUTPUTS = ("status", "plot", "video", "model3d", "files", "metrics", "cameras")
"""Output names besides one ``image:<key>`` per preview image."""
MAX_PLOT_POINTS = 400
"""Per curve; longer histories are thinned (evenly, keeping the last point) before plotting."""
MAX_STATUS_CHARS = 200
"""A log line shown in the status is cut to this (a prompt echoed in full could be thousands of characters)."""


def clip_text(text: str, n: int = MAX_STATUS_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1].rstrip() + "…"


@dataclass
class RunState:
    """Everything the UI shows about one run, built up event by event."""

    title: str = "run"
    started: float = field(default_factory=time.monotonic)
    step: int = 0
    total: int = 0
    stage: str = ""
    losses: dict[str, float] = field(default_factory=dict)
    history: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    caption: str = ""
    artifacts: list[Artifact] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None
    logs: list[str] = field(default_factory=list)
    first_step: tuple[int, float] | None = None
    ended: bool = False
    activity: str = ""
    """What the run is doing outside the training steps: the latest Log or named stage ("" while training)."""
    stage_first: tuple[str, int, float] | None = None
    """(stage, step, time) of a named stage's first Progress: its rate and ETA."""

    def apply(self, ev: Any, now: float | None = None) -> tuple[set[str], bool]:
        """Fold one event in; returns (names of the outputs it changed, whether to send them at once)."""
        now = time.monotonic() if now is None else now
        if isinstance(ev, Progress) and ev.stage and not ev.losses:  # a named stage: "rendering the turntable"
            if self.stage_first is None or self.stage_first[0] != ev.stage:
                self.stage_first = (ev.stage, ev.step, now)
            self.activity = f"{ev.stage} {ev.step}/{ev.total}"
            if ev.total > 2 and 0 < ev.step < ev.total and (dt := now - self.stage_first[2]) > 0.5 \
                    and (ds := ev.step - self.stage_first[1]) > 0:
                self.activity += f" · ETA {fmt_seconds((ev.total - ev.step) * dt / ds)}"
            return {"status"}, False
        if isinstance(ev, Progress):
            self.activity = ""
            if self.first_step is None or ev.stage != self.stage:  # a new stage restarts its step count
                self.first_step = (ev.step, now)
            self.step, self.total, self.stage = ev.step, ev.total, ev.stage
            for k, v in ev.losses.items():
                v = float(v)
                if not math.isfinite(v):
                    continue
                self.losses[k] = v
                curve = f"{k} ({ev.stage})" if ev.stage else k
                steps, vals = self.history.setdefault(curve, ([], []))
                steps.append(ev.step)
                vals.append(v)
            return {"status", "plot"}, False
        if isinstance(ev, Preview):
            self.images.update({k: v for k, v in ev.images.items() if v is not None})
            self.caption = ev.caption or f"step {ev.step}"
            if not self.total:  # only a preview-only run counts steps by its previews: a training run's step and
                self.step = max(self.step, ev.step)  # losses come from the Progress that follows the preview
            return {f"image:{k}" for k in ev.images} | {"status"}, False
        if isinstance(ev, ArtifactReady):
            if all(a.path != ev.artifact.path for a in self.artifacts):
                self.artifacts.append(ev.artifact)
            if ev.artifact.kind == "cameras":  # a capture's cameras and points: drawn before training starts
                return {"cameras", "files"}, True
            return {"video", "model3d", "files", "metrics"}, True
        if isinstance(ev, Log):
            self.logs.append(("⚠️ " if ev.level == "warning" else "") + clip_text(ev.message, 600))
            if ev.level != "warning":
                self.activity = clip_text(ev.message)
            return {"metrics", "status"}, ev.level == "warning"
        if isinstance(ev, Done):
            for a in ev.artifacts:
                if all(a.path != b.path for b in self.artifacts):
                    self.artifacts.append(a)
            self.metrics, self.seconds = dict(ev.metrics), ev.seconds
            return {"status", "video", "model3d", "files", "metrics"}, True
        return set(), False

    def rate(self, now: float | None = None) -> float | None:
        """Steps per second since the first Progress event."""
        if self.first_step is None:
            return None
        dt = (time.monotonic() if now is None else now) - self.first_step[1]
        ds = self.step - self.first_step[0]
        return ds / dt if dt > 0.5 and ds > 0 else None


# --------------------------------------------------------------------------------------------- rendering
def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def fmt_value(name: str, v: float) -> str:
    if "psnr" in name:
        return f"{v:.2f} dB"
    return f"{v:.4g}"


def status_text(st: RunState, now: float | None = None) -> str:
    if st.seconds is not None:
        head = f"**Done** in {fmt_seconds(st.seconds)}"
        if st.metrics:
            head += " · " + " · ".join(f"{k} {fmt_value(k, v)}" for k, v in list(st.metrics.items())[:3])
        return head
    if st.ended:
        return f"**Ended** at step {st.step} / {st.total} (the pipeline sent no summary)"
    if st.activity:
        where = (f" (training done: {st.step} steps)" if st.step >= st.total else f" (step {st.step} / {st.total})") \
            if st.total else ""
        return f"**{st.title}: {st.activity}**{where}"
    if not st.total:
        if st.images:
            return f"**{st.title}: preview at step {st.step}**" + (f" ({clip_text(st.caption)})" if st.caption else "")
        return f"**Starting {st.title}…**"
    pct = 100.0 * st.step / max(1, st.total)
    parts = [f"**{st.stage + ' · ' if st.stage else ''}step {st.step} / {st.total}** ({pct:.0f}%)"]
    for k in ("loss", "psnr_train", "psnr_val"):
        if k in st.losses:
            parts.append(f"{k} {fmt_value(k, st.losses[k])}")
    rate = st.rate(now)
    if rate:
        parts.append(f"{rate:.1f} it/s")
        if st.step < st.total:
            parts.append(f"ETA {fmt_seconds((st.total - st.step) / rate)}")
    return " · ".join(parts)


def enlarge(img: np.ndarray, min_side: int = 256) -> np.ndarray:
    """Nearest-neighbour upscale by a whole factor so tiny previews (16-64 px test renders) are visible."""
    k = min_side // max(1, max(img.shape[:2]))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1) if k > 1 else img


def thin(xs: list, ys: list, n: int = MAX_PLOT_POINTS) -> tuple[list, list]:
    if len(xs) <= n:
        return list(xs), list(ys)
    idx = np.unique(np.linspace(0, len(xs) - 1, n).round().astype(int))
    return [xs[i] for i in idx], [ys[i] for i in idx]


def loss_figure(history: dict[str, tuple[list[int], list[float]]]):
    """Plotly figure: losses on a log axis (left), PSNR curves in dB (right). None without data."""
    if not any(h[0] for h in history.values()):
        return None
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    has_psnr = False
    # a log axis only when every loss is positive (DreamFields' loss, a negated CLIP score, is not)
    log_axis = all(y > 0 for name, (_, ys) in history.items() if "psnr" not in name for y in ys)
    for name, (xs, ys) in history.items():
        psnr = "psnr" in name
        has_psnr |= psnr
        xs, ys = thin(xs, ys)
        mode = "lines+markers" if (len(xs) < 60 or name == "psnr_val") else "lines"
        fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode=mode, line=dict(dash="dot" if psnr else "solid")),
                      secondary_y=psnr)
    fig.update_yaxes(type="log" if log_axis else "linear", title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="PSNR (dB)" if has_psnr else "", secondary_y=True, showgrid=False)
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=36, b=10), template="plotly_white",
                      legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="center", x=0.5))
    return fig


def pick_model3d(arts: list[Artifact]) -> str | None:
    """The file Model3D shows: a .glb mesh first (vertex-coloured .obj renders black there), then any
    .glb/.gltf, then .obj/.stl. Point clouds as .ply are download-only (Model3D treats .ply as splats)."""
    def ext(a: Artifact) -> str:
        return Path(a.path).suffix.lower()

    for pred in (lambda a: a.kind == "mesh" and ext(a) == ".glb",
                 lambda a: ext(a) in (".glb", ".gltf"),
                 lambda a: a.kind == "mesh" and ext(a) in (".obj", ".stl")):
        for a in arts:
            if pred(a):
                return a.path
    return None


def pick_video(arts: list[Artifact]) -> str | None:
    for a in arts:
        if a.kind == "video" or Path(a.path).suffix.lower() in (".mp4", ".webm"):
            return a.path
    return None


def metrics_text(st: RunState) -> str:
    lines = []
    if st.metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {fmt_value(k, v)} |" for k, v in st.metrics.items()]
        if st.seconds is not None:
            lines.append(f"| time | {fmt_seconds(st.seconds)} |")
    if st.logs:
        lines.append("")
        lines += [f"- {m}" for m in st.logs[-10:]]
    return "\n".join(lines)


def render(st: RunState, names: set[str], now: float | None = None) -> dict[str, Any]:
    """Values for the named outputs (what Gradio components accept: str, ndarray, figure, path, list)."""
    out: dict[str, Any] = {}
    for name in names:
        if name == "status":
            out[name] = status_text(st, now)
        elif name.startswith("image:"):
            img = st.images.get(name[6:])
            out[name] = None if img is None else enlarge(img)
        elif name == "plot":
            out[name] = loss_figure(st.history)
        elif name == "video":
            out[name] = pick_video(st.artifacts)
        elif name == "model3d":
            out[name] = pick_model3d(st.artifacts)
        elif name == "files":
            out[name] = [a.path for a in st.artifacts] or None
        elif name == "metrics":
            out[name] = metrics_text(st)
        elif name == "cameras":
            out[name] = cameras_figure(next((a.path for a in st.artifacts if a.kind == "cameras"), None))
    return out


def cameras_figure(path: str | None, max_frusta: int = 300):
    """Plotly 3D view of a capture's ``cameras.json`` (``core.training.write_cameras``): one frustum per camera
    (held-out ones orange), the sparse points in their colours, and the summary as the title. None without."""
    if not path:
        return None
    import json

    import plotly.graph_objects as go

    meta = json.loads(Path(path).read_text())
    cams = meta["cameras"][:max_frusta]
    pos = np.array([c["c2w"] for c in cams])[:, :3, 3] if cams else np.zeros((0, 3))
    p = np.array(meta.get("points") or np.zeros((0, 6)), dtype=float).reshape(-1, 6)
    if len(p) > 10:  # SfM's stray far points would shrink the whole view: keep the bulk of the cloud
        dist = np.linalg.norm(p[:, :3] - np.median(p[:, :3], axis=0), axis=1)
        p = p[dist <= 2.0 * np.percentile(dist, 90)]
    size = 0.08 * float(np.ptp(pos, axis=0).max()) if len(pos) > 1 else 0.2
    if len(p):  # forward-facing cameras sit close together in front of a deep scene: frusta seen beside it
        size = max(size, 0.06 * float(np.ptp(np.concatenate([pos, p[:, :3]]), axis=0).max()))
    traces = []
    for heldout, colour in ((False, "royalblue"), (True, "darkorange")):
        xs: list = []
        for c in (c for c in cams if c["heldout"] == heldout):
            m = np.array(c["c2w"])
            w, h = 0.5 * c["width"] / c["fx"] * size, 0.5 * c["height"] / c["fy"] * size
            corners = [m[:3, :3] @ np.array([sx * w, sy * h, -size]) + m[:3, 3] for sx, sy in
                       ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            for k in range(4):
                xs += [m[:3, 3], corners[k], corners[(k + 1) % 4], None]
        if xs:
            pts = np.array([x if x is not None else [np.nan] * 3 for x in xs], dtype=float)
            traces.append(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="lines",
                                       line=dict(color=colour, width=3), name="held out" if heldout else "training"))
    if len(p):
        traces.append(go.Scatter3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="markers", name="sparse points",
                                   marker=dict(size=1.5, color=[f"rgb({r:.0f},{g:.0f},{b:.0f})" for r, g, b in p[:, 3:6]])))
    fig = go.Figure(traces)
    title = f"{len(meta['cameras'])} cameras · {meta.get('space', '')} space" + \
        (f" · {meta['summary']}" if meta.get("summary") else "")
    fig.update_layout(height=360, margin=dict(l=0, r=0, t=30, b=0), title=dict(text=title, font=dict(size=12)),
                      scene=dict(aspectmode="data"), legend=dict(orientation="h"))
    return fig


def reset(image_keys: tuple[str, ...] = (), title: str = "run") -> dict[str, Any]:
    """The first update of a run: clear the previous run's outputs."""
    st = RunState(title=title)
    out = render(st, set(OUTPUTS))
    out.update({f"image:{k}": None for k in image_keys})
    return out


# ------------------------------------------------------------------------------------------------ errors
def is_oom(e: BaseException) -> bool:
    return type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()


def to_gr_error(e: BaseException):
    """The ``gr.Error`` a person sees for an exception raised by a run."""
    import gradio as gr

    if isinstance(e, gr.Error):
        return e
    if isinstance(e, UserInputError):
        return gr.Error(str(e), title="Please check the input", print_exception=False)
    if is_oom(e):
        return gr.Error("The GPU ran out of memory. Try the 'fast' model, fewer rays per step, a larger "
                        "downscale, or wait until other runs finish.", title="Out of GPU memory")
    log.exception("run failed")
    msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    return gr.Error(f"{type(e).__name__}: {msg}" if msg else type(e).__name__, title="The run failed")


# ------------------------------------------------------------------------------------------------- drive
class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def drive(run_fn: Callable[[Any], Iterator[Any]], cfg: Any, image_keys: tuple[str, ...] = (),
          min_interval: float = 0.5, plot_interval: float = 2.0, title: str = "run",
          clock: Callable[[], float] = time.monotonic, keepalive: float = 0.25,
          on_closed: Callable[[], None] | None = None) -> Iterator[dict[str, Any]]:
    """Run ``run_fn(cfg)`` in a worker thread and yield UI updates (see the module docstring).

    Status and previews go out at most every ``min_interval`` s, the plot (a larger payload, and a redraw
    in the browser) every ``plot_interval`` s; artifacts, warnings and the end go out at once; an update held
    back goes out when its interval has passed, whether or not another event came. With nothing to send,
    an empty dict every ``keepalive`` s. ``on_closed()`` runs in the worker once the pipeline's ``finally:``
    has run (however the run ended), even when this generator was closed long before.
    """
    st = RunState(title=title, started=clock())
    events_q: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        events = None
        try:
            with cancellable(stop):  # work between yields stops at its next check_cancelled() (a chunk, a view)
                events = run_fn(cfg)
                for ev in events:
                    events_q.put(ev)
                    if stop.is_set():
                        break
        except Cancelled:
            pass  # stopped between two yields: the consumer is gone, nothing to say
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which words it
            events_q.put(_Failed(e))
        finally:
            try:
                if events is not None and hasattr(events, "close"):
                    events.close()  # the pipeline's finally: (frees GPU memory) when we were stopped early
            except Exception:  # noqa: BLE001
                log.exception("closing the pipeline failed")
            events_q.put(_END)
            if on_closed is not None:
                on_closed()

    threading.Thread(target=work, name=f"gen3d-run-{title}", daemon=True).start()
    yield reset(image_keys, title)
    pending: set[str] = set()
    last = last_plot = -math.inf
    sent: dict[str, Any] = {"video": None, "model3d": None, "files": None}  # as reset() left them

    def fresh(update: dict[str, Any]) -> dict[str, Any]:
        """Drop file outputs whose value was already sent (a re-sent Model3D/Video reloads in the browser)."""
        for k in ("video", "model3d", "files"):
            if k in update:
                if k in sent and sent[k] == update[k]:
                    del update[k]
                else:
                    sent[k] = update[k]
        return update

    try:
        while True:
            due = last + min_interval if pending - {"plot"} else max(last + min_interval, last_plot + plot_interval)
            wait = min(keepalive, max(0.0, due - clock())) if pending else keepalive
            try:
                ev = events_q.get(timeout=wait) if wait > 0 else events_q.get_nowait()
            except queue.Empty:
                ev = None
            if ev is _END:
                break
            if isinstance(ev, _Failed):
                raise ev.error
            now, urgent = clock(), False
            if ev is not None:
                names, urgent = st.apply(ev, now)
                pending |= names
            update: dict[str, Any] = {}
            if pending and (urgent or now - last >= min_interval):
                send = pending if urgent or now - last_plot >= plot_interval else pending - {"plot"}
                if send:
                    update = fresh(render(st, send, now))
                    pending, last = pending - send, now
                    last_plot = now if "plot" in send else last_plot
            if update or ev is None:
                yield update  # {} when there is nothing new: a point where Stop can close us
        if st.seconds is None:  # ended without Done
            st.ended = True
            pending.add("status")
        if pending and (update := fresh(render(st, pending, clock()))):
            yield update
    except GeneratorExit:
        raise
    except Exception as e:  # noqa: BLE001 - every failure becomes a message, never a traceback page
        err = to_gr_error(e)
        yield {"status": f"**{err.title}:** {err.message}"}
        raise err from e
    finally:
        stop.set()  # the worker closes the pipeline after its current step
