"""Issue 15's rules without a browser: drive's flush and Stop, the status's stages, the shared input rules (one
prompt limit, model roots, image uploads), per-session file serving, exports in proportion to the run, NeRF's
mesh level, the CLI's usage error and 'auto' prior, and no server paths in messages."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from gen3d_app import outputs, runner, stream, widgets  # noqa: E402
from pipelines import Done, Log, Preview, Progress, UserInputError  # noqa: E402
from pipelines.core import budget  # noqa: E402
from pipelines.core.priors import prompts  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def poll(cond, deadline_s: float = 30.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if value := cond():
            return value
        time.sleep(0.01)
    return cond()


# ------------------------------------------------------------------------------------------ drive and Stop
def blocking_pipeline(gate: threading.Event, finished: list):
    """Progress at step 1 and 2, then a long step (until ``gate`` is set), then Done."""
    try:
        yield Log("loading the scene")
        yield Progress(1, 3, {"loss": 1.0})
        yield Progress(2, 3, {"loss": 0.5})  # throttled: arrives within min_interval of step 1
        gate.wait(60)
        yield Done([], {"psnr": 1.0}, 1.0)
    finally:
        finished.append(True)


def test_drive_flushes_the_last_throttled_update_while_the_pipeline_is_busy():
    gate, finished = threading.Event(), []
    gen = stream.drive(lambda cfg: blocking_pipeline(gate, finished), None, min_interval=0.3, keepalive=0.05)
    try:
        seen = ""
        for update in gen:  # before issue 15 the step-2 status waited for the next event (here: for ever)
            seen = update.get("status", seen)
            if "step 2 / 3" in seen:
                break
        assert "step 2 / 3" in seen and not gate.is_set()
    finally:
        gate.set()
        gen.close()
    assert poll(lambda: finished)


def test_closing_drive_returns_at_once_and_on_closed_follows_the_pipelines_finally():
    gate, finished, closed = threading.Event(), [], []
    gen = stream.drive(lambda cfg: blocking_pipeline(gate, finished), None, min_interval=0.0, keepalive=0.05,
                       on_closed=lambda: closed.append(bool(finished)))
    updates = [next(gen) for _ in range(6)]  # the pipeline is now inside its long step: drive still yields
    assert {} in updates
    t0 = time.monotonic()
    gen.close()  # Gradio's Stop: must not wait for the step (the Run button's "once" mode waits on it)
    assert time.monotonic() - t0 < 1.0 and not finished and not closed
    gate.set()
    assert poll(lambda: closed) == [True]  # the GPU slot is given back only after the pipeline's finally:


def test_status_names_the_stage_and_the_latest_log():
    st = stream.RunState(title="NeRF")
    assert stream.status_text(st) == "**Starting NeRF…**"
    st.apply(Log("loading the diffusion prior: embedded"), now=0.0)
    assert "loading the diffusion prior" in stream.status_text(st)
    st.apply(Progress(10, 20, {"loss": 0.1}), now=1.0)
    st.apply(Preview(20, {"rgb": None}), now=1.1)  # a preview comes before its step's Progress
    assert "step 10 / 20" in stream.status_text(st) and "loss 0.1" in stream.status_text(st)
    st.apply(Progress(20, 20, {"loss": 0.05}), now=1.2)
    assert "step 20 / 20" in stream.status_text(st) and "loss 0.05" in stream.status_text(st)
    st.apply(Progress(12, 48, stage=budget.TURNTABLE), now=2.0)
    assert "rendering the turntable 12/48" in stream.status_text(st) and "training done" in stream.status_text(st)
    st.apply(Log("extracting the mesh (96^3 grid)"), now=3.0)
    assert "extracting the mesh" in stream.status_text(st)
    assert "loss" in st.history and st.history["loss"][0] == [10, 20]  # stages add no curve
    st.apply(Log("x" * 10_000), now=4.0)
    assert len(stream.status_text(st)) < 400  # a long log line (a prompt echoed) is cut in the status


# ------------------------------------------------------------------------------------------- the inputs
def test_one_prompt_limit_for_every_text_input_in_the_app_and_the_pipelines():
    from gen3d_app.tabs import dreamfields as df_tab
    from gen3d_app.tabs import dreamfusion as dfu_tab
    from pipelines.dreamfields import DreamFieldsConfig
    from pipelines.dreamfields import _check as dreamfields_check
    from pipelines.dreamfusion import DreamFusionConfig
    from pipelines.dreamfusion import _check as dreamfusion_check

    long = "a chair " * 1250  # 10,000 characters
    messages = set()
    for call in (lambda: dfu_tab.make_config(DreamFusionConfig, long, "", 100, 10, 0, "", "custom"),
                 lambda: dfu_tab.make_config(DreamFusionConfig, "a chair", long, 100, 10, 0, "", "custom"),
                 lambda: df_tab.make_config(DreamFieldsConfig, long, 10, 0, "", "custom"),
                 lambda: dreamfusion_check(DreamFusionConfig(prompt=long)),
                 lambda: dreamfields_check(DreamFieldsConfig(caption=long))):
        with pytest.raises(UserInputError) as e:
            call()
        messages.add(str(e.value).split(" is ")[1])
    assert len(messages) == 1 and f"under {prompts.MAX_PROMPT_CHARS}" in messages.pop()
    box = widgets.text_input("Prompt", elem_id="x")
    assert box.max_length == prompts.MAX_PROMPT_CHARS


def test_a_cut_prompt_keeps_its_view_suffix():
    n_tokens = lambda text: len(text.replace(",", " ,").split()) + 2  # noqa: E731 - start/end tokens
    long = "a tall golden retriever sitting on a red velvet armchair in a sunny living room with plants"
    fitted, cut = prompts.fit_view_prompt(long, "back", prompts.DEFAULT_TEMPLATE, n_tokens, 12)
    assert cut and fitted.endswith(", back view") and n_tokens(fitted) <= 12 and fitted.startswith("a tall golden")
    assert prompts.fit_view_prompt("a chair", "side", prompts.DEFAULT_TEMPLATE, n_tokens, 12) == ("a chair, side view",
                                                                                                 False)


def test_model_fields_take_hub_ids_and_folders_under_the_roots_only(tmp_path, monkeypatch):
    root = tmp_path / "models"
    (root / "my-sd").mkdir(parents=True)
    monkeypatch.setenv("GEN3D_MODEL_ROOTS", str(root))
    assert widgets.model_source("owner/name", "d") == "owner/name"
    assert widgets.model_source("EMBEDDED", "d") == "embedded" and widgets.model_source(" ", "d") == "d"
    assert widgets.model_source(str(root / "my-sd"), "d") == str((root / "my-sd").resolve())
    refusals = set()
    for probe in ("/etc", "/no/such/folder", str(tmp_path), str(root / ".." / "x"), "~", "assets/priors"):
        with pytest.raises(UserInputError) as e:
            widgets.model_source(probe, "d")
        refusals.add(str(e.value).replace(repr(probe[:80]), "<path>"))
    assert len(refusals) == 1  # one message whether the path exists or not, a file or a folder
    assert "GEN3D_MODEL_ROOTS" in refusals.pop()


def test_a_non_image_upload_gets_a_message_for_people(tmp_path):
    from gen3d_app.tabs import single_view as tab
    from pipelines.single_view import CONFIG

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(UserInputError) as e:
        tab.make_config(CONFIG, "predict", {"path": str(bad), "meta": {"_type": "gradio.FileData"}}, "cpu", 10,
                        ["voxels"], 0)
    assert str(tmp_path) not in str(e.value) and "not an image" in str(e.value)
    good = sorted((REPO / "assets" / "single_view" / "examples").glob("*.png"))
    if good:  # the raw file dict an unprocessed event passes
        cfg = tab.make_config(CONFIG, "predict", {"path": str(good[0])}, "cpu", 10, ["voxels"], 0)
        assert cfg.image == str(good[0])


def test_estimate_comes_from_the_measured_step_cost(monkeypatch):
    monkeypatch.setattr(runner, "has_cuda", lambda: False)
    text = widgets.estimate_text(100, {"cpu": {"cpu": 1.5}}, "cpu", {"cpu": 30.0})
    assert "3m 00s" in text and "1.5 s a step" in text
    assert "3m 00s** in all" in text and "100 steps at" in text  # the total, not a time before the exports' 30 s
    assert "No measured step time" in widgets.estimate_text(100, {"cpu": {"cpu": 1.5}}, "quality", {})
    from gen3d_app.tabs import dreamfields, dreamfusion, nerf

    for tab, cls in ((dreamfusion, "pipelines.dreamfusion"), (dreamfields, "pipelines.dreamfields")):
        assert tab.default_preset() == "cpu"  # without a GPU the tabs open on runs a person would wait for
        steps = tab.preset_values("cpu")
        assert steps * tab.STEP_SECONDS["cpu"]["cpu"] + tab.FIXED_SECONDS["cpu"] < 10 * 60, cls
    assert nerf.estimate(300, "cpu").startswith("Estimate")


# -------------------------------------------------------------------------------------- serving files
def test_session_files_rule(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN3D_OUTPUTS", str(tmp_path / "sessions"))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    mine = outputs.session_key(type("R", (), {"cookies": {outputs.SESSION_COOKIE: "token-a"}})())
    theirs = outputs.session_key(type("R", (), {"cookies": {outputs.SESSION_COOKIE: "token-b"}})())
    assert mine != theirs and "token" not in mine
    run = outputs.run_dir(mine, "nerf")
    (run / "mesh.glb").write_bytes(b"glb")
    outputs.own([str(run / "mesh.glb")], mine)
    cached = tmp_path / "cache" / outputs.cache_folder_name(run / "mesh.glb") / "mesh.glb"
    assert outputs.may_fetch(str(cached), mine) and not outputs.may_fetch(str(cached), theirs)
    assert not outputs.may_fetch(str(cached), None)
    assert not outputs.may_fetch(str(run / "mesh.glb"), mine)  # the originals are never served directly
    assert outputs.may_fetch(str(tmp_path / "cache" / "abc" / "upload.png"), None)  # uploads, examples: Gradio's rule


# ------------------------------------------------------------------------------------------ exports
def test_exports_fit_the_time_budget():
    assert budget.export_seconds(4.5) == budget.FLOOR_S and budget.export_seconds(600) == 150
    frames = []
    events = budget.turntable(lambda k, n: frames.append((k, n)) or k, wanted=48, seconds=0.0, minimum=8)
    got = []
    try:
        while True:
            got.append(next(events))
    except StopIteration as stop:
        out = stop.value
    assert out == list(range(8)) and frames[0] == (0, 48) and frames[-1] == (7, 8)
    progress = [e for e in got if isinstance(e, Progress)]
    assert [p.step for p in progress] == list(range(1, 9)) and {p.stage for p in progress} == {budget.TURNTABLE}
    assert any(isinstance(e, Log) and "8 frames instead of 48" in e.message for e in got)
    assert budget.grid_resolution(lambda r: None, 128, 1e9) == 128
    assert budget.grid_resolution(lambda r: time.sleep(0.01), 128, 0.0) == 32


def test_hidden_opacity_puts_the_surface_at_half_opacity():
    import torch

    from pipelines.core.volume import hidden_opacity

    r = 32
    x = torch.linspace(-1, 1, r)
    pts = torch.stack(torch.meshgrid(x, x, x, indexing="ij"), -1)
    solid = (pts.norm(dim=-1) < 0.5).float() * 100.0
    occ = hidden_opacity(solid, 2 / r)
    assert torch.equal(occ > 0.5, solid > 0)  # an opaque ball: its own cells
    faint = (pts.norm(dim=-1) < 0.5).float() * 0.5  # a short run's field: no cell near density 10
    assert hidden_opacity(faint, 2 / r).max() > 0.05


def test_a_short_nerf_run_makes_a_mesh_and_names_its_export_stages(tmp_path):
    from pipelines.nerf import NerfConfig, run

    cfg = NerfConfig(out_dir=str(tmp_path), steps=10, downscale=4, batch_rays=256, target_samples=4096,
                     hash_levels=4, hash_log2_size=12, grid_resolution=16, march_steps=48, max_views=8, eval_views=2,
                     preview_every=20, turntable_frames=4, mesh_resolution=32, preview_size=25, device="cpu")
    events = list(run(cfg))
    done = events[-1]
    assert isinstance(done, Done) and any(Path(a.path).name == "mesh.glb" for a in done.artifacts)
    assert 0 < done.metrics["mesh_level"] <= 0.5
    stages = {e.stage for e in events if isinstance(e, Progress) and e.stage}
    assert {budget.TURNTABLE, budget.HELD_OUT} <= stages
    assert any(isinstance(e, Log) and e.message.startswith("extracting the mesh") for e in events)
    assert not any(isinstance(e, Log) and "--mesh-density" in e.message and "lower" in e.message for e in events)
    assert isinstance(events[0], Log) and "loading" in events[0].message  # "Starting..." gets a word at once


# ------------------------------------------------------------------------------------- CLI and priors
def test_cli_without_arguments_is_a_usage_error():
    res = subprocess.run([sys.executable, "-m", "pipelines"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and "dreamfusion" in res.stdout and "error:" in res.stderr


def test_auto_prior_is_one_rule_for_cli_and_app(tmp_path, monkeypatch):
    from gen3d_app.tabs import dreamfusion as tab
    from pipelines.core import priors
    from pipelines.dreamfusion import DreamFusionConfig

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # a fresh machine: nothing cached
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert DreamFusionConfig().prior == priors.AUTO
    chosen, why = priors.resolve_prior(DreamFusionConfig().prior)
    expected = priors.EMBEDDED if priors.embedded_diffusion_available() else priors.DEFAULT_DIFFUSION
    assert chosen == expected == priors.default_diffusion() and "auto" in why
    assert tab.make_config(DreamFusionConfig, "a chair", "", 100, 10, 0, "", "custom").prior == expected


def test_no_server_paths_in_single_view_messages():
    from pipelines.core.single_view_net import load_checkpoint

    model_dir = REPO / "assets" / "single_view" / "model"
    if not (model_dir / "config.json").is_file():
        pytest.skip("no shipped single-view model")
    _, desc = load_checkpoint(model_dir)
    assert str(REPO) not in desc and desc.startswith("assets/single_view/model")


def test_loading_the_embedded_prior_prints_no_diffusers_noise(capfd):
    from pipelines.core import priors

    if not priors.embedded_diffusion_available():
        pytest.skip("no shipped embedded prior")
    from pipelines.core.priors.embedded import clear_cache

    clear_cache()
    priors.load_guidance("embedded", "cpu")
    out, err = capfd.readouterr()
    assert "kept in float32" not in out + err


def test_negative_losses_get_a_linear_axis():
    """DreamFields' loss (a negated CLIP score) was drawn at 1e-12 on the log axis: flat lines at the bottom."""
    assert stream.loss_figure({"loss": ([10, 20], [-0.31, -0.3]), "clip": ([10, 20], [0.3, 0.31])}).layout.yaxis.type \
        == "linear"
    assert stream.loss_figure({"loss": ([10, 20], [0.3, 0.2])}).layout.yaxis.type == "log"
