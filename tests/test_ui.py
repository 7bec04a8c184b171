"""UI wiring without a browser: build the demo, drive a fake pipeline, check updates, errors, Stop, cleanup."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from gen3d_app import outputs, stream, widgets  # noqa: E402
from pipelines import (PIPELINES, Artifact, ArtifactReady, Done, Log, PipelineConfig, PipelineSpec,  # noqa: E402
                       Preview, Progress, UserInputError)

REPO = Path(__file__).resolve().parent.parent
FAKE_MODULE = "gen3d_fake_pipeline"


# ------------------------------------------------------------------------------------------ fake pipeline
@dataclass
class FakeConfig(PipelineConfig):
    scene: str = ""
    model: str = "fast"
    downscale: int = 1
    mesh_density: float = 0.0
    space: str = "auto"
    steps: int = 12
    preview_every: int = 4
    fail: str = ""
    """'' | 'input' | 'oom' | 'crash' | 'late-input': raise that error (late: after a few steps)."""
    step_seconds: float = 0.002

    PRESETS: ClassVar[dict] = {"fast": dict(steps=6)}


class Tracker:
    """What the fake pipeline saw: how many runs started, and how many reached their finally:."""

    def __init__(self) -> None:
        self.started = 0
        self.finalized = 0
        self.steps_done = 0
        self.active = 0
        self.max_active = 0


TRACK = Tracker()


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError."""


def tiny_files(out: Path) -> dict[str, Path]:
    import trimesh

    out.mkdir(parents=True, exist_ok=True)
    glb = out / "mesh.glb"
    trimesh.creation.box(extents=(1, 1, 1)).export(glb)
    obj = out / "mesh.obj"
    trimesh.creation.box(extents=(1, 1, 1)).export(obj)
    png = out / "view.png"
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(png)
    mp4 = out / "turntable.mp4"
    try:
        import imageio.v2 as imageio

        imageio.mimwrite(mp4, [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(4)], fps=4,
                         macro_block_size=1)
    except Exception:  # noqa: BLE001 - no ffmpeg: a placeholder file still exercises the mapping
        mp4.write_bytes(b"\x00")
    return dict(glb=glb, obj=obj, png=png, mp4=mp4)


def fake_run(cfg: FakeConfig):
    TRACK.started += 1
    TRACK.active += 1
    TRACK.max_active = max(TRACK.max_active, TRACK.active)
    t0 = time.perf_counter()
    try:
        if cfg.fail == "input":
            raise UserInputError("that zip holds no transforms_train.json")
        out = Path(cfg.out_dir or "outputs/fake")
        yield Log("loaded 3 views")
        for step in range(1, cfg.steps + 1):
            if cfg.step_seconds:
                time.sleep(cfg.step_seconds)
            if step == 3 and cfg.fail == "oom":
                raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            if step == 3 and cfg.fail == "crash":
                raise KeyError("density")
            if step == 3 and cfg.fail == "late-input":
                raise UserInputError("image 7 has no alpha")
            losses = {"loss": 1.0 / step, "psnr_train": 10.0 + step}
            if step % cfg.preview_every == 0:
                losses["psnr_val"] = 9.0 + step
            yield Progress(step, cfg.steps, losses)
            TRACK.steps_done = step
            if step % cfg.preview_every == 0 or step == cfg.steps:
                img = np.full((8, 8, 3), step % 256, np.uint8)
                yield Preview(step, {"rgb": img, "depth": img[..., ::-1].copy(), "opacity": img}, f"step {step}")
        files = tiny_files(out)
        arts = [Artifact("video", str(files["mp4"]), "turntable"), Artifact("mesh", str(files["obj"]), "obj"),
                Artifact("mesh", str(files["glb"]), "glb"), Artifact("image", str(files["png"]), "view")]
        for a in arts:
            yield ArtifactReady(a)
        yield Log("mesh has 8 vertices", "warning")
        yield Done(arts, {"psnr": 25.5, "ssim": 0.9}, time.perf_counter() - t0)
    finally:
        TRACK.active -= 1
        TRACK.finalized += 1


@pytest.fixture
def fake_nerf(monkeypatch, tmp_path):
    """PIPELINES['nerf'] -> the fake pipeline; outputs under tmp_path."""
    mod = types.ModuleType(FAKE_MODULE)
    mod.CONFIG, mod.run = FakeConfig, fake_run
    monkeypatch.setitem(sys.modules, FAKE_MODULE, mod)
    monkeypatch.setitem(PIPELINES, "nerf", PipelineSpec("NeRF", FAKE_MODULE, "fake"))
    monkeypatch.setenv("GEN3D_OUTPUTS", str(tmp_path / "sessions"))
    global TRACK
    TRACK = Tracker()
    return tmp_path


def collect(cfg, **kw):
    """drive's updates, without its keep-alive empty ones."""
    return [u for u in stream.drive(fake_run, cfg, ("rgb", "depth", "opacity"), **kw) if u]


def wait_until(cond, deadline_s: float = 30.0) -> bool:
    end = time.monotonic() + deadline_s
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return cond()


# ---------------------------------------------------------------------------------------------- the demo
def test_build_demo_has_a_tab_per_pipeline_and_one_gpu_queue():
    from gen3d_app.ui import build_demo

    demo = build_demo()
    assert isinstance(demo, gr.Blocks)
    tabs = [b for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert [t.label for t in tabs] == [s.title for s in PIPELINES.values()]
    runs = [fn for fn in demo.fns.values() if fn.name == "run_handler"]
    assert len(runs) == len(PIPELINES)
    for fn in runs:
        assert fn.concurrency_id == "gpu" and fn.concurrency_limit == 1 and fn.queue
    run_ids = {fn._id for fn in runs}
    cancellers = [fn for fn in demo.fns.values() if fn.cancels]
    assert {i for fn in cancellers for i in fn.cancels} == run_ids
    header = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "gen3d-header")
    assert "Device:" in header.value


def test_a_pipeline_without_a_tab_gets_a_placeholder(monkeypatch):
    from gen3d_app.ui import build_demo

    monkeypatch.setitem(PIPELINES, "later", PipelineSpec("Later", "pipelines.later", "not written yet"))
    demo = build_demo()
    assert "Later" in [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert any("python -m pipelines later" in str(getattr(b, "value", "")) for b in demo.blocks.values())


def test_nerf_tab_matches_nerf_config(monkeypatch):
    from gen3d_app.tabs import nerf as tab
    from gen3d_app.ui import build_demo
    from pipelines.nerf import NerfConfig

    from gen3d_app import runner

    by_id = {b.elem_id: b for b in build_demo().blocks.values() if getattr(b, "elem_id", None)}
    default = "fast" if runner.has_cuda() else "cpu"  # the tab opens on the preset that suits the machine
    assert by_id["nerf-preset"].value == default
    d = NerfConfig().with_preset(default)
    assert by_id["nerf-steps"].value == d.steps and by_id["nerf-model"].value == d.model
    assert by_id["nerf-downscale"].value == d.downscale and by_id["nerf-seed"].value == d.seed
    assert set(tab.PRESETS) == {"custom"} | set(NerfConfig.PRESETS)
    assert set(tab.TINY) <= {f.name for f in dataclasses.fields(NerfConfig)}

    cfg = tab.make_config(NerfConfig, "cow", None, "vanilla", "quality", 40, 3, 2)
    assert cfg.scene.endswith(os.path.join("assets", "scenes", "cow")) and cfg.model == "vanilla"
    assert (cfg.steps, cfg.seed, cfg.downscale) == (40, 3, 2)
    assert cfg.mesh_resolution == NerfConfig.PRESETS["quality"]["mesh_resolution"]  # preset, then the inputs
    zipped = tab.make_config(NerfConfig, "cow", "/tmp/x/scene.zip", "fast", "custom", 10, 0, 1)
    assert zipped.scene == "/tmp/x/scene.zip"
    with pytest.raises(UserInputError):
        tab.make_config(NerfConfig, "cow", "/tmp/x/scene.tar", "fast", "custom", 10, 0, 1)
    monkeypatch.setenv("GEN3D_TINY", "1")
    tiny = tab.make_config(NerfConfig, "cow", None, "fast", "custom", 2000, 0, 1)
    assert tiny.steps == tab.TINY["steps"] and tiny.downscale == tab.TINY["downscale"]
    assert tab.preset_values("fast")[:2] == (NerfConfig.PRESETS["fast"]["model"], NerfConfig.PRESETS["fast"]["steps"])


# ----------------------------------------------------------------------------------------- event mapping
def test_drive_maps_events_to_updates(fake_nerf):
    ups = collect(FakeConfig(out_dir=str(fake_nerf / "run")), min_interval=0.0)
    first, last = ups[0], ups[-1]
    assert first["image:rgb"] is None and first["model3d"] is None and first["plot"] is None  # reset
    imgs = [u["image:depth"] for u in ups if u.get("image:depth") is not None]
    assert len(imgs) == 3 and imgs[-1].shape == (256, 256, 3) and imgs[-1].dtype == np.uint8  # 8 px, enlarged
    fig = [u["plot"] for u in ups if u.get("plot") is not None][-1]
    curves = {tr.name: list(tr.x) for tr in fig.data}
    assert curves["loss"] == list(range(1, 13)) and curves["psnr_val"] == [4, 8, 12]
    final = {}
    for u in ups:
        final.update(u)
    assert final["model3d"].endswith("mesh.glb")  # the .glb, not the (black in Model3D) .obj
    assert final["video"].endswith("turntable.mp4") and Path(final["video"]).stat().st_size > 0
    assert sorted(Path(p).name for p in final["files"]) == ["mesh.glb", "mesh.obj", "turntable.mp4", "view.png"]
    assert final["status"].startswith("**Done**") and "25.50 dB" in final["status"]
    assert "| psnr | 25.50 dB |" in final["metrics"] and "⚠️ mesh has 8 vertices" in final["metrics"]
    assert "status" in last and TRACK.finalized == 1


def test_progress_updates_are_throttled(fake_nerf):
    t = [0.0]
    ups = collect(FakeConfig(steps=40, preview_every=100, out_dir=str(fake_nerf / "r")), min_interval=0.5,
                  clock=lambda: t[0])  # the clock never moves: only the first event and urgent ones pass
    progress_only = [u for u in ups if "plot" in u and not any(k.startswith("image:") for k in u)]
    assert not progress_only and len(ups) <= 10  # of 40 Progress events: reset, Log, preview, artifacts, Done
    assert any("image:rgb" in u for u in ups)  # the last-step preview still goes out at once


def test_state_is_pure_and_reports_rate():
    st = stream.RunState(title="NeRF")
    names, urgent = st.apply(Progress(10, 100, {"loss": 0.5}), now=0.0)
    assert names == {"status", "plot"} and not urgent
    st.apply(Progress(60, 100, {"loss": float("nan"), "psnr_train": 20.0}), now=5.0)
    assert st.history["loss"] == ([10], [0.5])  # NaN is not plotted
    assert "10.0 it/s" in stream.status_text(st, now=5.0) and "ETA 4s" in stream.status_text(st, now=5.0)
    names, urgent = st.apply(Preview(60, {"rgb": np.zeros((2, 2, 3), np.uint8)}), now=5.0)
    assert "image:rgb" in names and not urgent  # previews are throttled too
    st.apply(Progress(5, 50, {"loss": 0.1}, stage="fine"), now=6.0)
    assert st.history["loss (fine)"] == ([5], [0.1]) and "fine · step 5 / 50" in stream.status_text(st, now=6.0)
    xs, ys = stream.thin(list(range(10_000)), list(range(10_000)))
    assert len(xs) <= stream.MAX_PLOT_POINTS and xs[-1] == 9999


@pytest.mark.parametrize("fail,title,text", [
    ("input", "Please check the input", "transforms_train.json"),
    ("late-input", "Please check the input", "no alpha"),
    ("oom", "Out of GPU memory", "ran out of memory"),
    ("crash", "The run failed", "KeyError"),
])
def test_errors_become_gr_error(fake_nerf, fail, title, text):
    ups = []
    with pytest.raises(gr.Error) as ei:
        for u in stream.drive(fake_run, FakeConfig(fail=fail, out_dir=str(fake_nerf / "r")), ()):
            ups.append(u)
    assert ei.value.title == title and text in ei.value.message
    assert title in ups[-1]["status"]
    assert TRACK.finalized == TRACK.started == 1


def test_closing_the_consumer_runs_the_pipelines_finally(fake_nerf):
    gen = stream.drive(fake_run, FakeConfig(steps=1000, preview_every=2, out_dir=str(fake_nerf / "r")), (),
                       min_interval=0.0)
    for _ in range(5):
        next(gen)
    assert TRACK.started == 1 and TRACK.finalized == 0
    gen.close()  # what Gradio does on Stop: returns at once, the worker closes the pipeline after its step
    assert wait_until(lambda: TRACK.finalized == 1) and TRACK.steps_done < 1000


def test_handler_uses_a_session_folder_and_maps_components(fake_nerf, monkeypatch):
    comps = {n: object() for n in ("status", "plot", "video", "model3d", "files", "metrics", "image:rgb")}
    handler = widgets.make_handler("nerf", lambda cls, **kw: cls(**kw), comps, ("rgb",))
    req = types.SimpleNamespace(session_hash="abc/../123")
    ups = list(handler(req, steps=4, preview_every=2))
    assert all(set(u) <= set(comps.values()) for u in ups)
    assert any(u.get(comps["image:rgb"]) is not None for u in ups)
    (run_dir,) = (fake_nerf / "sessions" / "abc123").iterdir()
    assert run_dir.name.startswith("nerf-") and (run_dir / "mesh.glb").exists()
    with pytest.raises(gr.Error, match="transforms_train"):
        list(handler(req, fail="input"))

    def mesh_only_in_done(cfg):  # the mesh arrives in the last update: the handler adds one more
        yield Done([Artifact("mesh", str(tiny_files(Path(cfg.out_dir))["glb"]))], {"psnr": 1.0}, 0.1)

    monkeypatch.setattr(sys.modules[FAKE_MODULE], "run", mesh_only_in_done)
    ups = list(handler(req))
    assert comps["model3d"] in ups[-2] and set(ups[-1]) == {comps["status"]} and "Done" in ups[-1][comps["status"]]
    bad = widgets.make_handler("nerf", lambda cls, **kw: cls(bogus=1), comps, ())
    with pytest.raises(gr.Error, match="TypeError"):
        list(bad(req))


def test_sweep_deletes_only_old_runs(tmp_path):
    old = outputs.run_dir("s1", "nerf", base=tmp_path)
    (old / "mesh.glb").write_bytes(b"x")
    new = outputs.run_dir("s2", "nerf", base=tmp_path)
    past = time.time() - 48 * 3600
    os.utime(old, (past, past))
    assert outputs.sweep(tmp_path, max_age_s=24 * 3600) == 1
    assert not old.exists() and not (tmp_path / "s1").exists() and new.exists()


def test_run_dir_survives_a_sweep_that_removes_the_empty_session_folder(tmp_path, monkeypatch):
    """Two runs of one session at once: one's sweep() can remove the session folder (still empty) between the
    other's mkdir and mkdtemp; the run folder is made all the same (a full-suite run once failed here)."""
    real, calls = tempfile.mkdtemp, []

    def racing_mkdtemp(**kw):
        calls.append(kw["dir"])
        if len(calls) == 1:
            assert outputs.sweep(tmp_path, max_age_s=24 * 3600) == 0 and not (tmp_path / "s1").exists()
        return real(**kw)

    monkeypatch.setattr(outputs.tempfile, "mkdtemp", racing_mkdtemp)
    run = outputs.run_dir("s1", "nerf", base=tmp_path)
    assert run.is_dir() and run.parent == tmp_path / "s1" and len(calls) == 2


# ------------------------------------------------------------------------------------- a served demo
def test_served_demo_runs_one_job_at_a_time_and_cancel_closes_the_pipeline(fake_nerf):
    """Two clients: the second waits for the GPU slot; Gradio's cancel (what Stop sends) closes the
    generators down to the pipeline's finally:, which frees the slot for the waiting run."""
    from gradio_client import Client

    from gen3d_app.ui import build_demo, launch_kwargs

    demo = build_demo()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True,
                allowed_paths=launch_kwargs()["allowed_paths"])
    try:
        scene = (widgets.example_dirs("scenes") or [None])[0]
        args = dict(scene=scene, upload=None, photos=None, model="fast", preset="custom", seed=0, downscale=1, api_name="/run_nerf")
        long_job = Client(demo.local_url, verbose=False).submit(steps=10_000, **args)
        deadline = time.monotonic() + 60
        while TRACK.steps_done < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert TRACK.steps_done >= 3, "the run did not start"
        short_job = Client(demo.local_url, verbose=False).submit(steps=8, **args)
        time.sleep(1.0)
        assert TRACK.started == 1, "a second run started while the first held the GPU slot"
        long_job.cancel()
        res = short_job.result(timeout=60)
        assert TRACK.started == 2 and TRACK.finalized == 2 and TRACK.max_active == 1
        assert TRACK.steps_done == 8 and "Done" in res[0]
        sessions = [p for p in (fake_nerf / "sessions").iterdir()]
        assert len(sessions) == 2  # one folder per browser session
    finally:
        demo.close()


# --------------------------------------------------------------------------------------- import costs
def _run_py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "GEN3D_OUTPUTS": str(REPO / "outputs" / "sessions")})


def test_import_pipelines_is_cheap():
    code = ("import time, sys; t = time.perf_counter(); import pipelines; dt = time.perf_counter() - t; "
            "heavy = [m for m in ('torch', 'gradio', 'diffusers', 'transformers', 'open_clip') if m in sys.modules]; "
            "print(dt, heavy)")
    t = time.perf_counter()
    r = _run_py(code)
    wall = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    dt, heavy = r.stdout.split(" ", 1)
    assert heavy.strip() == "[]"
    assert wall < 2.0, f"python -c 'import pipelines' took {wall:.2f}s"


def test_import_app_does_not_launch_or_import_torch():
    code = ("import sys; import app; "
            "print([m for m in ('torch', 'diffusers', 'transformers', 'open_clip') if m in sys.modules], "
            "type(app.demo).__name__, getattr(app.demo, 'server', None) is None)")
    r = _run_py(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[] Blocks True"
