"""Panels every tab reuses (run/stop + status, live preview, artifacts), the inputs people type, and the one run
wiring.

Contract: a tab lays out its inputs, calls ``run_panel``, ``preview_panel`` and ``artifacts_panel`` where it
wants them, then ``wire_run(pipeline, make_config, inputs, ...)``. The run handler loads the pipeline module
only when a run starts, gives the run a per-session folder, and streams ``stream.drive`` updates. All runs
share one queue and a device pool, and each run's pipeline is advanced by one worker thread that owns it through
``runner.gpu_events`` (the GPU side lives in ``runner``). Stop cancels the run event, which closes the generators
down to the pipeline's ``finally:``, and answers once that has happened.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from pipelines import PIPELINES, UserInputError

from . import outputs, runner, stream

log = logging.getLogger("gen3d.app")

REPO = Path(__file__).resolve().parent.parent
def tiny_mode() -> bool:
    """GEN3D_TINY=1: tabs cap their runs to a few steps at tiny resolution (browser tests, CPU demos)."""
    return os.environ.get("GEN3D_TINY", "") not in ("", "0", "false", "False")


def example_dirs(kind: str) -> list[str]:
    """Names of the example folders shipped in ``assets/<kind>/``."""
    base = REPO / "assets" / kind
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) if base.is_dir() else []


def asset_path(kind: str, name: str) -> str:
    return str(REPO / "assets" / kind / name)


def preset_config(cls, preset: str | None):
    """The config a preset names; "custom" (or none) is the dataclass's defaults."""
    return cls() if preset in (None, "custom") else cls().with_preset(preset)


def preset_fields(pipeline: str, preset: str | None, *names: str):
    """The values a preset gives these config fields (one value for one name), shown in a tab's inputs so a
    person sees what the preset does."""
    from pipelines import PIPELINES

    cls, _ = PIPELINES[pipeline].load()
    cfg = preset_config(cls, preset if preset in cls.PRESETS else None)
    values = tuple(getattr(cfg, n) for n in names)
    return values[0] if len(values) == 1 else values


def tiny_capped(cfg, tiny: dict):
    """Under GEN3D_TINY, the tab's tiny settings override the config, and its steps become a maximum."""
    if not tiny_mode():
        return cfg
    return dataclasses.replace(cfg, **{**tiny, "steps": min(cfg.steps, tiny["steps"])})


def scene_source(example: str | None, upload: str | None, photos=None) -> str:
    """The posed-image scene a run reads: uploaded photos or a video win over an uploaded .zip (a dataset: Blender,
    nerfstudio, LLFF, COLMAP, or photos), which wins over the chosen example ("" = default)."""
    if photos:
        return photos_source(photos)
    if upload:
        if not str(upload).lower().endswith(".zip"):
            raise UserInputError("upload a .zip of a dataset (Blender, nerfstudio, LLFF, COLMAP, or photos)")
        return str(upload)
    return asset_path("scenes", example) if example else ""


def capture_inputs(name: str):
    """(photos or a video, a dataset .zip): the two upload boxes for one's own captures (NeRF and VolSDF)."""
    import importlib.util

    sfm = "posed by structure from motion" if importlib.util.find_spec("pycolmap") else \
        "needs pycolmap: pip install pycolmap==4.2.1"
    photos = gr.File(label=f"…or photos or a video ({sfm})", file_count="multiple",
                     file_types=["image", "video"], height=140, elem_id=f"{name}-photos")
    upload = gr.File(label="…or a dataset (.zip: Blender, nerfstudio, LLFF, COLMAP, or photos)",
                     file_types=[".zip"], height=140, elem_id=f"{name}-upload")
    return photos, upload


def cameras_plot(name: str) -> gr.Plot:
    """Where a capture's cameras and sparse points show once loaded, before training starts."""
    return gr.Plot(label="Cameras and sparse points (your captures)", elem_id=f"{name}-cameras")


VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
MAX_DOWNSCALE = 16
"""The NeRF and VolSDF tabs' largest image downscale: a capture's smallest LLFF folder (images_8: 504x378 for
fern) is still ~190k rays per held-out view, minutes each on a CPU; 16 renders a quarter of those rays."""
DOWNSCALE_INFO = "captures: LLFF's images_N folders are used where they fit; on a CPU, 16 keeps held-out scoring short"


def photos_source(files) -> str:
    """Uploaded photos -> one folder holding them (named by their content, so structure from motion's cache
    finds it again); a single video -> its path."""
    import hashlib
    import tempfile

    paths = [Path(str(f)) for f in (files if isinstance(files, (list, tuple)) else [files])]
    videos = [p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES]
    if videos:
        if len(paths) > 1:
            raise UserInputError("upload either one video or several photos, not both")
        return str(videos[0])
    if len(paths) < 3:
        raise UserInputError(f"{len(paths)} photo(s): structure from motion needs at least 3 overlapping photos "
                             "(20-100 taken while walking around the subject work best), or upload a video")
    digest = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        digest.update(p.name.encode() + p.read_bytes())
    folder = Path(tempfile.gettempdir()) / "gen3d_photos" / digest.hexdigest()[:20]
    if not folder.is_dir():
        tmp = folder.with_name(folder.name + f".{os.getpid()}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i, p in enumerate(sorted(paths, key=lambda p: p.name)):
            shutil.copyfile(p, tmp / f"{i:04d}_{p.name}")
        try:
            tmp.rename(folder)
        except OSError:  # another run made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


@dataclass
class RunPanel:
    run: gr.Button
    stop: gr.Button
    status: gr.Markdown


@dataclass
class PreviewPanel:
    images: dict[str, gr.Image]
    plot: gr.Plot


@dataclass
class ArtifactsPanel:
    model3d: gr.Model3D
    video: gr.Video
    files: gr.File
    metrics: gr.Markdown


def run_panel(name: str) -> RunPanel:
    with gr.Row():
        run = gr.Button("Run", variant="primary", elem_id=f"{name}-run", scale=3)
        stop = gr.Button("Stop", variant="stop", elem_id=f"{name}-stop", scale=1)
    status = gr.Markdown("Ready.", elem_id=f"{name}-status", elem_classes=["gen3d-status"])
    return RunPanel(run, stop, status)


def preview_panel(name: str, keys: tuple[str, ...] = ("rgb", "depth", "opacity")) -> PreviewPanel:
    with gr.Row(equal_height=True):
        images = {k: gr.Image(label=k, interactive=False, height=240, elem_id=f"{name}-preview-{k}",
                              buttons=["fullscreen"], placeholder=f"{k} preview") for k in keys}
    plot = gr.Plot(label="Loss / PSNR", elem_id=f"{name}-plot")
    return PreviewPanel(images, plot)


def artifacts_panel(name: str) -> ArtifactsPanel:
    with gr.Row(equal_height=True):
        model3d = gr.Model3D(label="Mesh (.glb)", height=380, elem_id=f"{name}-model3d", interactive=False)
        video = gr.Video(label="Turntable", height=380, autoplay=True, loop=True, interactive=False,
                         elem_id=f"{name}-video")
    with gr.Row():
        files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id=f"{name}-files",
                        scale=1)
        metrics = gr.Markdown(elem_id=f"{name}-metrics")
    return ArtifactsPanel(model3d, video, files, metrics)


def output_map(run: RunPanel, preview: PreviewPanel, arts: ArtifactsPanel) -> dict[str, gr.components.Component]:
    """Output name (as ``stream`` uses them) -> component."""
    comps: dict[str, Any] = {"status": run.status, "plot": preview.plot, "video": arts.video,
                             "model3d": arts.model3d, "files": arts.files, "metrics": arts.metrics}
    comps.update({f"image:{k}": img for k, img in preview.images.items()})
    return comps


def make_handler(pipeline: str, make_config: Callable[..., Any], comps: dict[str, Any],
                 image_keys: tuple[str, ...]) -> Callable[..., Any]:
    """The run event's function: ``(request, **input values) -> generator of {component: value}``."""
    spec = PIPELINES[pipeline]

    def to_components(update: dict[str, Any]) -> Any:
        return {comps[k]: v for k, v in update.items() if k in comps} or gr.skip()

    def run_handler(request: gr.Request, **values: Any):
        key = outputs.session_key(request)
        log.info("%s: run requested (session %s)", pipeline, key[:8])
        closed = RUNNING[(key, pipeline)] = threading.Event()  # Stop waits for it (stop_handler)
        try:
            yield from run_session(key, values)
        finally:
            closed.set()
            if RUNNING.get((key, pipeline)) is closed:
                del RUNNING[(key, pipeline)]

    def run_session(key: str, values: dict[str, Any]):
        yield to_components(stream.reset(image_keys, spec.title))
        outputs.sweep()
        try:
            config_cls, run_fn = spec.load()
            cfg = make_config(config_cls, **values)
        except Exception as e:  # noqa: BLE001 - bad input and missing modules become messages
            err = stream.to_gr_error(e)
            yield to_components({"status": f"**{err.title}:** {err.message}"})
            raise err from e
        out_dir = outputs.run_dir(key, pipeline)
        cfg = dataclasses.replace(cfg, out_dir=str(out_dir))
        device = None
        for i, device in enumerate(runner.wait_for_device()):
            if device is None:  # yielding (a no-op update) keeps a waiting run cancellable
                yield to_components({"status": "**Waiting** for the previous run to free the GPU…"} if i == 0 else {})
        log.info("%s: starting on %s", pipeline, device or "the shared device")
        if device and device.startswith("cuda") and cfg.device in ("auto", "cuda"):
            cfg = dataclasses.replace(cfg, device=device)  # several GPUs: this run's own
        given_back = threading.Lock()

        def give_back() -> None:  # once, after the pipeline's finally: (drive's worker calls it)
            if device and given_back.acquire(blocking=False):
                runner.POOL.release(device)

        started = False
        try:
            with contextlib.closing(stream.drive(lambda c: runner.gpu_events(pipeline, c, device), cfg, image_keys,
                                                 title=spec.title, on_closed=give_back)) as updates:
                next(updates)  # drive's own reset: already sent; its worker has started
                started = True
                update, status = {}, ""
                for update in updates:
                    status = update.get("status", status)
                    outputs.own(file_values(update), key)  # this session may fetch these files' cached copies
                    yield to_components(update)
            # Gradio 6.31's Model3D stays blank when its value comes in a generator's very last update (the
            # end-of-run message races the viewer's lazy load), and a tab may add viewers to any update (single
            # view): always end with the status once more.
            yield to_components({"status": status})
        finally:
            log.info("%s: run handler closed (%s)", pipeline, "ended" if started else "before starting")
            if not started:  # no worker, so no on_closed: give the device back here
                give_back()

    return run_handler


def file_values(update: dict[str, Any]) -> list[str]:
    """The file paths among an update's values (video, model3d, files)."""
    out: list[str] = []
    for k in ("video", "model3d", "files"):
        v = update.get(k)
        out += [str(x) for x in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(x, (str, Path))]
    return out


def stop_handler(pipeline: str) -> Callable[[gr.Request], str]:
    """Stop's own function (Stop cancels the run event; this says "Stopped."). It answers once this session's run
    of ``pipeline`` has closed: Gradio's page defers a Run click made while the cancel is still pending and, when
    the cancelled stream ends without completing, drops it (issue 15: the first Run after Stop was ignored), so
    "Stopped." must not show before a new click can start a run. A short settle after that lets the updates the
    run had already sent reach the browser first, so none of them overwrites "Stopped."."""

    def stop(request: gr.Request) -> str:
        closed = RUNNING.get((outputs.session_key(request), pipeline))
        log.info("%s: stop requested", pipeline)
        if closed is not None and not closed.wait(STOP_WAIT_S):
            log.warning("%s: the stopped run had not closed after %.0fs", pipeline, STOP_WAIT_S)
        time.sleep(STOP_SETTLE_S)
        return "**Stopped.**"

    return stop


RUNNING: dict[tuple[str, str], threading.Event] = {}
"""(session, pipeline) -> an Event set when that session's run handler of that pipeline has closed."""
STOP_WAIT_S = 30.0
STOP_SETTLE_S = 0.5


def wire_run(pipeline: str, make_config: Callable[..., Any], inputs: dict[str, Any], run: RunPanel,
             preview: PreviewPanel, arts: ArtifactsPanel, extra_outputs: dict[str, Any] | None = None) -> Any:
    """Connect Run (queued on the shared GPU slot) and Stop (cancels it). Returns the run event.
    ``extra_outputs``: more stream outputs by name (e.g. "cameras": a gr.Plot of a capture's cameras)."""
    comps = {**output_map(run, preview, arts), **(extra_outputs or {})}
    handler = make_handler(pipeline, make_config, comps, tuple(preview.images))
    event = run.run.click(handler, inputs=None, inputs_kwargs=inputs, outputs=list(comps.values()),
                          concurrency_limit=runner.gpu_slots(), concurrency_id=runner.GPU_QUEUE, show_progress="minimal",
                          show_progress_on=[run.status], trigger_mode="always_last", api_name=f"run_{pipeline}")
    wire_stop(pipeline, run, event)
    return event


def wire_stop(pipeline: str, run: RunPanel, event: Any) -> None:
    """Stop: cancel ``event``, then say "Stopped." once the run has closed (``stop_handler``). The cancel is its own
    listener, registered first: on Stop's handler, the page sent it only once that handler had answered, which
    waits for the run to close, so every Stop took STOP_WAIT_S (30 s; seen on fern in the NeRF tab, issue 19)."""
    run.stop.click(None, cancels=[event], queue=False, api_visibility="private")
    run.stop.click(stop_handler(pipeline), outputs=[run.status], queue=False, api_visibility="private")


def default_preset(presets: tuple[str, ...], gpu: str = "custom") -> str:
    """The preset a tab opens on, one a person would wait for here: on a ZeroGPU Space (whose main process sees no
    GPU: runs get one per call) 'zerogpu' where the tab has it, else ``gpu``; ``gpu`` on another GPU, 'cpu'
    without one."""
    if runner.on_zerogpu():
        return "zerogpu" if "zerogpu" in presets else gpu
    return gpu if runner.has_cuda() else "cpu"


# ------------------------------------------------------------------------------------ inputs people type
def text_input(label: str, value: str = "", *, elem_id: str, info: str | None = None, lines: int = 2,
               placeholder: str | None = None) -> gr.Textbox:
    """A prompt, negative prompt or caption box: one length limit for every text input (``MAX_PROMPT_CHARS``, the
    same ``check_prompt`` the pipelines apply for the CLI); the browser stops typing there."""
    from pipelines.core.priors.prompts import MAX_PROMPT_CHARS

    return gr.Textbox(value, label=label, elem_id=elem_id, info=info, lines=lines, max_lines=6,
                      placeholder=placeholder, max_length=MAX_PROMPT_CHARS)


def prompt_value(text: Any, what: str = "prompt", required: bool = True) -> str:
    """The text of a prompt box, checked as the pipelines check it (UserInputError for empty or too long)."""
    from pipelines.core.priors.prompts import check_prompt

    return check_prompt(text, what, required)


def model_roots() -> list[Path]:
    """Folders under which a person may name a local model in the app: ``$GEN3D_MODEL_ROOTS`` (paths separated by
    ``os.pathsep``), by default the Hugging Face Hub cache. The CLI takes any folder (it is the user's machine)."""
    env = os.environ.get("GEN3D_MODEL_ROOTS")
    if env is None:
        from huggingface_hub import constants

        env = str(constants.HF_HUB_CACHE)
    return [Path(r).expanduser().resolve() for r in env.split(os.pathsep) if r.strip()]


def model_source(value: Any, default: str, named: tuple[str, ...] = ("embedded", "auto")) -> str:
    """What the app lets a person name as a prior or scorer: a name in ``named``, a Hub id (owner/name), or a folder
    under ``model_roots()``. Anything else is refused with one message that never says whether the path exists."""
    from pipelines.core.priors.hub import HUB_ID

    text = str(value or "").strip()
    if not text:
        return default
    if text.lower() in named:
        return text.lower()
    path = Path(text).expanduser()
    if HUB_ID.match(text) and not path.exists():  # a Hub id; one that names a local path is a path
        return text
    try:
        resolved = path.resolve() if path.is_absolute() else (Path.cwd() / path).resolve()
    except (OSError, RuntimeError):
        resolved = None
    roots = model_roots()
    if resolved is not None and any(resolved == r or resolved.is_relative_to(r) for r in roots):
        return str(resolved)
    where = ", ".join(str(r) for r in roots) or "none are configured"
    raise UserInputError(f"{text[:80]!r} is not a model this app may load: name a Hugging Face Hub id (owner/name), "
                         f"{' or '.join(repr(n) for n in named)}, or a folder under the model roots ({where}; set "
                         "GEN3D_MODEL_ROOTS). The command line takes any folder.")


def image_file(value: Any) -> str:
    """The path of an uploaded image (a Gradio FileData dict when the event skips preprocessing, or a path),
    checked to be an image Pillow reads: a UserInputError otherwise, not Gradio's internal error."""
    from PIL import Image, UnidentifiedImageError

    path = value.get("path") if isinstance(value, dict) else value
    if not path:
        raise UserInputError("upload an image or pick an example first")
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise UserInputError("that file is not an image this app can read: upload a PNG, JPEG or WebP picture of "
                             "one object") from None
    return str(path)


# -------------------------------------------------------------------------------------------- estimates
def estimate_text(steps: Any, measured: dict[str, dict[str, float]], preset: str | None,
                  fixed: dict[str, float]) -> str:
    """The time a run of ``steps`` will take on this device class, from ``measured[device][preset]`` seconds per
    step (measured, see the tab's constants) plus ``fixed[device]`` seconds (loading, exports). The status shows
    the run's own rate and ETA once it starts."""
    kind = runner.device_class()
    per_step = measured.get(kind, {}).get(preset or "custom")
    where = "this GPU" if kind == "cuda" else "this CPU"
    if per_step is None:
        return f"No measured step time for the '{preset}' preset on {where}: the status shows the rate once it runs."
    try:
        n = max(0, int(float(steps or 0)))
    except (TypeError, ValueError):
        n = 0
    total = n * per_step + fixed.get(kind, 0.0)
    return (f"Estimate: about **{stream.fmt_seconds(total)}** in all on {where}: {n} steps at {per_step:.2g} s a step "
            f"(measured) and about {stream.fmt_seconds(fixed.get(kind, 0.0))} for loading and exports. Once running, "
            "the status shows the run's own rate.")


def points_figure(path: str | None, height: int = 380, size: float = 2.5, eye=(0.0, -1.6, 0.6)):
    """A plotly 3D scatter of a .ply point cloud in its own colours (height-coloured without), z up, seen from
    ``eye`` (default: the front, -y); the single-view and Point-E tabs show their clouds with it."""
    if not path:
        return None
    import numpy as np
    import plotly.graph_objects as go
    import trimesh

    pc = trimesh.load(path)
    xyz = np.asarray(pc.vertices)
    colors = np.asarray(pc.colors)[:, :3] if getattr(pc, "colors", None) is not None and len(pc.colors) else None
    marker = dict(size=size, color=[f"rgb({r},{g},{b})" for r, g, b in colors] if colors is not None else xyz[:, 2])
    fig = go.Figure(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", marker=marker))
    axis = dict(range=[-0.6, 0.6], showbackground=False, title="")
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=0, b=0), scene=dict(
        xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube", camera=dict(eye=dict(zip("xyz", eye)))))
    return fig
