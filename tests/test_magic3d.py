"""Magic3D on CPU with the test-tier prior: the conversion of a coarse field to a DMTet grid, the fine stage's
renderer, a smoke run of both stages with the textured export, the threshold override, refining a coarse
checkpoint (Magic3D's and DreamFusion's), bad input, the CLI and the tab. Nothing touches the network."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from pipelines import PIPELINES, UserInputError
from pipelines.core.dmtet import DMTet, face_pairs, render_surface, surface_box, surface_threshold
from pipelines.events import Done, Log, Preview, Progress, run_to_completion
from pipelines.magic3d import Magic3DConfig, build_student, run

pytest.importorskip("diffusers")

from pipelines.core.priors.testing import tiny_stable_diffusion  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(device="cpu", coarse_steps=10, fine_steps=10, resolution=16, n_samples=12, width=16, hash_levels=4,
            hash_log2_size=12, hash_max_res=64, occupancy_resolution=16, occupancy_every=4, tet_resolution=10,
            fine_resolution=32, mesh_resolution=24, texture_size=64, turntable_frames=3, preview_size=16,
            preview_every=10)


@pytest.fixture(scope="module")
def prior(tmp_path_factory) -> str:
    return str(tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd")))


@pytest.fixture(scope="module")
def smoke(prior, tmp_path_factory):
    """One run of both stages with exports: (config, events, out_dir)."""
    out = tmp_path_factory.mktemp("magic3d")
    cfg = Magic3DConfig(prompt="a red ball", negative_prompt="blurry", prior=prior, out_dir=str(out), **TINY)
    return cfg, list(run(cfg)), out


def blob_student(density: float = 20.0):
    """The coarse field with its heads zeroed: density softplus(density (1 - r / 0.5)), albedo 0.5."""
    student, _ = build_student(Magic3DConfig(**{k: v for k, v in TINY.items() if k != "device"},
                                             blob_density=density))
    for net in (student.net, student.albedo_net):
        for p in net[-1].parameters():
            torch.nn.init.zeros_(p)
    return student


# ------------------------------------------------------------------------------------------- conversion
def test_conversion_of_a_blob_gives_a_sphere_at_the_threshold():
    student = blob_student()
    pts = torch.rand(20000, 3) * 2 - 1
    density = student.density(pts).detach()
    tau = surface_threshold(density)
    assert tau == pytest.approx(float(density[density > 1e-5].mean()))
    # the blob's surface at tau: softplus(20 (1 - r / 0.5)) = tau
    r_tau = 0.5 * (1 - math.log(math.expm1(tau)) / 20)
    lo, hi = surface_box(pts, density, tau)
    assert torch.allclose(hi, torch.full((3,), r_tau * 1.2), atol=0.06) and torch.allclose(lo, -hi, atol=0.06)
    assert surface_box(pts, density, float(density.max()) + 1) is None
    dmtet = DMTet.from_density(student.density, lo, hi, 16, tau)
    assert dmtet.sdf.min() >= -1 and dmtet.sdf.max() <= 1 and len(dmtet.tets) == 6 * 16 ** 3
    verts, faces = dmtet()
    radius = verts.detach().norm(dim=-1)
    assert abs(float(radius.mean()) - r_tau) < 0.02 and float(radius.detach().std()) < 0.02
    assert len(face_pairs(faces)) * 2 == len(faces) * 3  # closed: every edge has two faces
    # offsets move a vertex at most half a cell
    with torch.no_grad():
        dmtet.offset.fill_(100.0)
    moved = (dmtet.grid_verts() - dmtet.world(dmtet.base)).abs()
    assert torch.all(moved <= (hi - lo) / 16 / 2 + 1e-6) and torch.allclose(moved, (hi - lo) / 32, atol=1e-5)


def test_fine_render_covers_the_sphere_and_passes_gradients():
    from pipelines.core.cameras import Camera, look_at

    student = blob_student()
    dmtet = DMTet.from_density(student.density, torch.full((3,), -0.5), torch.full((3,), 0.5), 12, 10.0)
    c2w = look_at(torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.5]]))
    cams = [Camera.from_fov(c, math.radians(40), 32, 32) for c in c2w]
    verts, faces = dmtet()
    out = render_surface(verts, faces, cams, student.albedo, torch.tensor([0.0, 0.0, 1.0]), "albedo")
    assert out["rgb"].shape == (2, 32, 32, 3) and out["alpha"].shape == (2, 32, 32)
    # coverage ~ the disc of the sphere (radius 0.25) seen from distance 2
    r = float(verts.detach().norm(dim=-1).mean())
    f = 16 / math.tan(math.radians(20))
    disc = math.pi * (f * r / math.sqrt(4 - r * r)) ** 2 / 32 ** 2
    assert float(out["alpha"][0].detach().mean()) == pytest.approx(disc, rel=0.15)
    centre = out["rgb"][0, 16, 16]
    assert torch.allclose(centre, torch.full((3,), 0.5), atol=1e-3)  # the albedo field's colour
    assert torch.allclose(out["rgb"][0, 0, 0], torch.tensor([0.0, 0.0, 1.0]))  # the background
    n = out["normal"][0, 16, 16]
    assert n[0] > 0.9  # the side facing the camera on +x faces +x
    (out["rgb"].mean() + out["alpha"].mean()).backward()
    assert dmtet.sdf.grad.abs().sum() > 0 and dmtet.offset.grad.abs().sum() > 0
    assert student.albedo_net[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("unwrapper", ["xatlas", "per-face"])
def test_baked_texture_holds_the_colour_field(unwrapper, monkeypatch):
    import torch.nn.functional as F

    from pipelines.core import uv
    from pipelines.core.texture import bake_texture

    if unwrapper == "xatlas":
        pytest.importorskip("xatlas")
    else:
        def missing(*a, **k):
            raise ImportError("No module named 'xatlas'")

        monkeypatch.setattr(uv, "uv_unwrap", missing)
    dmtet = DMTet.from_density(blob_student().density, torch.full((3,), -0.5), torch.full((3,), 0.5), 8, 10.0)
    verts, faces = (t.detach() for t in dmtet())
    colour = lambda x: (x * 2 + 0.5).clamp(0, 1)  # noqa: E731 - a smooth field over the sphere of radius 0.25
    mesh, coverage, method = bake_texture(verts, faces, colour, 256)
    assert method == unwrapper and mesh.texture.shape == (256, 256, 3) and 0.05 < coverage < 1
    assert mesh.faces.shape == faces.shape and torch.equal(mesh.verts[mesh.faces].sum(1), verts[faces].sum(1))
    # sampled back at each face's centroid UV (bilinear, image rows downwards), the texture is the field there
    # (xatlas leaves the zero-area faces that marching tets makes where a grid vertex lies on the surface unmapped)
    v = mesh.verts[mesh.faces]
    solid = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1).norm(dim=-1) > 1e-8
    assert solid.float().mean() > 0.7
    centroid_uv = mesh.uv[mesh.faces[solid]].mean(1)
    grid = torch.stack([centroid_uv[:, 0] * 2 - 1, 1 - centroid_uv[:, 1] * 2], -1)[None, None]
    sampled = F.grid_sample(mesh.texture.permute(2, 0, 1)[None], grid, align_corners=False)[0, :, 0].T
    expected = colour(v[solid].mean(1))
    err = (sampled - expected).abs().amax(1)
    assert float(err.median()) < 0.01 and float((err < 0.05).float().mean()) > 0.97  # thin slivers may miss texels


def test_filtered_texture_averages_out_fine_noise_and_keeps_smooth_fields():
    from pipelines.core.texture import filtered
    from pipelines.core.magic3d_mesh import texture_radius

    x = torch.rand(4000, 3) - 0.5
    linear = lambda p: p * 2 + 0.5  # noqa: E731
    assert filtered(linear, 0.0, 8) is linear and filtered(linear, 0.01, 1) is linear
    assert torch.allclose(filtered(linear, 0.02, 8)(x), linear(x), atol=1e-5)  # centred offsets: no shift
    # noise at a scale far below the radius (a hash grid's finest levels) shrinks; the read is deterministic
    noise = lambda p: torch.sin(2000 * p).prod(-1, keepdim=True).expand(-1, 3)  # noqa: E731
    smooth = filtered(noise, 0.02, 16)
    assert float(smooth(x).std()) < 0.4 * float(noise(x).std()) and torch.equal(smooth(x), smooth(x))
    # gradients reach the field's parameters through every offset
    w = torch.zeros(3, requires_grad=True)
    filtered(lambda p: p + w, 0.02, 8)(x).sum().backward()
    assert torch.allclose(w.grad, torch.full((3,), float(len(x))))
    # checkpointed: the same values and gradients, and only the points kept for the backward
    field = torch.nn.Linear(3, 3)
    saved: dict = {}

    def read(f, key):
        saved[key] = 0

        def pack(t):
            saved[key] += t.numel()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = f(x)
        field.zero_grad()
        out.square().sum().backward()
        return out.detach(), field.weight.grad.clone()

    plain, recomputed = read(filtered(field, 0.02, 8), "plain"), read(filtered(field, 0.02, 8, checkpoint=True), "ckpt")
    assert torch.equal(plain[0], recomputed[0]) and torch.allclose(plain[1], recomputed[1])
    assert saved["ckpt"] <= x.numel() < saved["plain"]
    # the radius: texture_blur pixels of a fine render at the fine cameras' middle distance and field of view
    cfg = Magic3DConfig(texture_blur=2.0)
    dist, fov = 0.5 * (cfg.fine_camera_distance_min + cfg.fine_camera_distance_max), 0.5 * (30 + 45)
    assert texture_radius(cfg, 64) == pytest.approx(2 * 2 * dist * math.tan(math.radians(fov) / 2) / 64)
    assert texture_radius(cfg, 512) == pytest.approx(texture_radius(cfg, 64) / 8)


# ---------------------------------------------------------------------------------------------- end to end
def test_both_stages_and_the_textured_export(smoke, prior):
    trimesh = pytest.importorskip("trimesh")
    from pipelines.core import budget

    cfg, events, out = smoke
    done = events[-1]
    assert isinstance(done, Done)
    logs = [e.message for e in events if isinstance(e, Log)]
    assert any(m.startswith("prior: ") and prior in m for m in logs)
    progress = [e for e in events if isinstance(e, Progress)]
    stages = [e.stage for e in progress]
    assert stages.index("fine") > stages.index("coarse") and set(stages) == {"coarse", "fine", budget.TURNTABLE}
    assert stages[-1] == budget.TURNTABLE and [e.step for e in progress if e.stage == budget.TURNTABLE] == [1, 2, 3]
    coarse = [e for e in progress if e.stage == "coarse"]
    fine = [e for e in progress if e.stage == "fine"]
    assert coarse[-1].step == coarse[-1].total == cfg.coarse_steps and fine[-1].step == cfg.fine_steps
    assert {"loss", "sds_grad", "orient", "opacity"} <= set(coarse[-1].losses)
    assert {"loss", "sds_grad", "normal", "coverage"} <= set(fine[-1].losses) and 0 < fine[-1].losses["t"] <= 0.5
    previews = [e for e in events if isinstance(e, Preview)]
    for stage in ("coarse", "fine"):
        p = next(e for e in previews if e.caption.startswith(stage))
        assert set(p.images) == {"rgb", "normal", "opacity", "sds"}
        assert all(img.dtype.name == "uint8" and img.shape[-1] == 3 for img in p.images.values())
    names = {Path(a.path).name: a for a in done.artifacts}
    assert {"mesh.glb", "mesh.obj", "mesh.mtl", "mesh.png", "coarse_mesh.glb", "turntable.mp4", "coarse.pt",
            "model.pt", "run.json"} <= set(names)
    assert all(Path(a.path).stat().st_size > 0 and Path(a.path).parent == out for a in done.artifacts)
    glb = trimesh.load(out / "mesh.glb", force="mesh")
    assert isinstance(glb.visual, trimesh.visual.TextureVisuals) and len(glb.faces) == done.metrics["mesh_faces"]
    assert glb.visual.uv.shape == (len(glb.vertices), 2) and glb.visual.uv.min() >= 0 and glb.visual.uv.max() <= 1
    assert glb.visual.material.baseColorTexture.size == (cfg.texture_size, cfg.texture_size)
    obj = trimesh.load(out / "mesh.obj")
    assert obj.visual.uv.shape == (len(obj.vertices), 2) and obj.visual.material.image.size == (64, 64)
    assert "map_Kd mesh.png" in (out / "mesh.mtl").read_text()
    assert 0 < done.metrics["texture_coverage"] < 1 and done.metrics["tets"] == 6 * 10 ** 3
    settings = json.loads((out / "run.json").read_text())
    assert settings["prior"] == str(Path(prior).resolve()) and settings["config"]["fine_steps"] == cfg.fine_steps
    # the fine stage's filtered colour field travels with the fine checkpoint (the bake and benchmark read it)
    from pipelines.core.magic3d_mesh import texture_radius

    state = torch.load(out / "model.pt", weights_only=True)
    assert state["texture_radius"] > 0 and state["texture_radius"] == pytest.approx(texture_radius(cfg, 32))
    assert done.metrics["texture_radius"] == pytest.approx(state["texture_radius"])


def test_refining_a_coarse_checkpoint_skips_the_coarse_stage(smoke, prior, tmp_path):
    _, _, out = smoke
    cfg = Magic3DConfig(prior=prior, out_dir=str(tmp_path / "m"), from_coarse=str(out / "coarse.pt"),
                        **{**TINY, "fine_steps": 3, "export": False})
    assert cfg.steps == 3
    events = list(run(cfg))
    assert isinstance(events[-1], Done) and {e.stage for e in events if isinstance(e, Progress)} == {"fine"}
    assert any(isinstance(e, Log) and "Magic3D coarse field" in e.message for e in events)
    # a DreamFusion checkpoint works too (its own student architecture)
    from pipelines.dreamfusion import DreamFusionConfig
    from pipelines.dreamfusion import build_student as dreamfusion_student

    df_cfg = DreamFusionConfig(width=16, depth=1, blob_density=20.0)
    student, _ = dreamfusion_student(df_cfg)
    torch.save({"config": dataclasses.asdict(df_cfg), "student": student.state_dict()}, tmp_path / "model.pt")
    events = list(run(dataclasses.replace(cfg, from_coarse=str(tmp_path / "model.pt"), out_dir=str(tmp_path / "d"),
                                          export=True, turntable_frames=0)))
    assert isinstance(events[-1], Done) and any("DreamFusion coarse field" in e.message for e in events
                                                if isinstance(e, Log))
    refined = torch.load(tmp_path / "d" / "model.pt", weights_only=False)["student"]
    assert not torch.equal(refined["net.0.weight"], student.state_dict()["net.0.weight"])  # its colour trained too
    with pytest.raises(UserInputError, match="from-coarse"):
        run_to_completion(run(dataclasses.replace(cfg, from_coarse=str(tmp_path / "run.json"))))
    # an uploaded checkpoint is read without unpickling code: this one would create a file when loaded
    marker = tmp_path / "pwned"
    torch.save({"config": {}, "student": Touch(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UserInputError, match="not a Magic3D or DreamFusion checkpoint"):
        run_to_completion(run(dataclasses.replace(cfg, from_coarse=str(tmp_path / "evil.pt"))))
    assert not marker.exists()


class Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_surface_threshold_override(smoke, prior, tmp_path):
    _, _, out = smoke
    base = dict(TINY, fine_steps=1, export=False)
    auto = run_to_completion(run(Magic3DConfig(prior=prior, from_coarse=str(out / "coarse.pt"),
                                               out_dir=str(tmp_path / "a"), **base)))
    tau = auto.metrics["surface_threshold"]
    higher = run_to_completion(run(Magic3DConfig(prior=prior, from_coarse=str(out / "coarse.pt"),
                                                 surface_threshold=str(2 * tau), out_dir=str(tmp_path / "b"), **base)))
    assert higher.metrics["surface_threshold"] == pytest.approx(2 * tau)
    assert higher.metrics["dmtet_faces_start"] != auto.metrics["dmtet_faces_start"]
    with pytest.raises(UserInputError, match="--surface-threshold"):
        run_to_completion(run(Magic3DConfig(prior=prior, from_coarse=str(out / "coarse.pt"), surface_threshold="1e9",
                                            out_dir=str(tmp_path / "c"), **base)))


def test_stop_in_the_fine_stage_closes_the_run_and_frees(prior, tmp_path, monkeypatch):
    from pipelines import config

    freed = []
    monkeypatch.setattr(config.RunContext, "free", lambda self: freed.append(True))
    gen = run(Magic3DConfig(prior=prior, out_dir=str(tmp_path), **{**TINY, "coarse_steps": 2, "fine_steps": 1000}))
    for ev in gen:
        if isinstance(ev, Log) and ev.message.startswith("fine stage"):
            break
    assert not freed and (tmp_path / "coarse.pt").exists()
    gen.close()  # what the UI's Stop does
    assert freed == [True] and not (tmp_path / "mesh.glb").exists()


def test_bad_input_is_a_user_error(prior, tmp_path):
    for bad, msg in ((dict(prompt="  "), "prompt"), (dict(negative_prompt="x" * 1000), "negative prompt"),
                     (dict(surface_threshold="high"), "surface-threshold"),
                     (dict(surface_threshold="-1"), "surface-threshold"), (dict(fine_steps=0), "fine_steps"),
                     (dict(camera_distance_min=0.5), "outside"),
                     (dict(from_coarse=str(tmp_path / "no.pt")), "no file")):
        with pytest.raises(UserInputError, match=msg):
            run_to_completion(run(Magic3DConfig(prior=prior, out_dir=str(tmp_path / "o"), **{**TINY, **bad})))
    with pytest.raises(UserInputError, match="preset"):
        Magic3DConfig().with_preset("nope")


def test_config_presets_and_cli(prior, tmp_path):
    d = Magic3DConfig()
    assert (d.guidance_scale, d.resolution, d.fine_steps, d.t_max, d.fine_t_max, d.lambda_normal) == (
        100.0, 64, 5000, 0.98, 0.5, 1e4)
    assert (d.hash_levels, d.hash_log2_size, d.hash_max_res, d.tet_resolution, d.surface_threshold) == (
        16, 19, 4096, 64, "auto")
    zerogpu, quality = d.with_preset("zerogpu"), d.with_preset("quality")
    assert zerogpu.steps < d.with_preset("fast").steps < quality.steps and zerogpu.steps == 1000
    assert PIPELINES["magic3d"].load() == (Magic3DConfig, run) and PIPELINES["magic3d"].title == "Magic3D"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "pipelines", "magic3d", "--help"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert res.returncode == 0 and all(f in res.stdout for f in ("--from-coarse", "--surface-threshold",
                                                                  "--tet-resolution", "--fine-steps", "zerogpu"))
    res = subprocess.run([sys.executable, "-m", "pipelines", "magic3d", "--prior", prior, "--device", "cpu",
                          "--out-dir", str(tmp_path), "--from-coarse", str(tmp_path / "none.pt")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: --from-coarse: no file")


# -------------------------------------------------------------------------------------------------- the tab
def test_tab_matches_the_config_and_drives_a_run(monkeypatch, tmp_path):
    gr = pytest.importorskip("gradio")
    from gen3d_app import runner, widgets
    from gen3d_app.tabs import magic3d as tab
    from pipelines import Artifact, ArtifactReady, PipelineSpec
    from pipelines.core import priors

    with gr.Blocks() as demo:
        tab.build()
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    d = Magic3DConfig().with_preset("cpu") if tab.default_preset() == "cpu" else Magic3DConfig()
    assert tab.default_preset() == ("custom" if runner.has_cuda() else "cpu") == by_id["magic3d-preset"].value
    assert by_id["magic3d-coarse-steps"].value == d.coarse_steps and by_id["magic3d-fine-steps"].value == d.fine_steps
    assert by_id["magic3d-tets"].value == d.tet_resolution and by_id["magic3d-threshold"].value == "auto"
    assert by_id["magic3d-prior"].value == priors.default_diffusion()
    note = by_id["magic3d-prior-note"].value
    assert "512" in note and ("64 x 64" in note if priors.embedded_diffusion_available() else "offline" in note)
    assert {f"magic3d-preview-{k}" for k in ("rgb", "normal", "opacity", "sds")} <= set(by_id)
    assert set(tab.PRESETS) == {"custom"} | set(Magic3DConfig.PRESETS)
    assert set(tab.TINY) <= {f.name for f in dataclasses.fields(Magic3DConfig)}
    cfg = tab.make_config(Magic3DConfig, " a teapot ", "blurry", 50, 400, 300, 32, " 12.5 ", 3, "", "fast")
    assert (cfg.prompt, cfg.coarse_steps, cfg.fine_steps, cfg.tet_resolution, cfg.surface_threshold, cfg.seed) == (
        "a teapot", 400, 300, 32, "12.5", 3)
    assert cfg.steps == 700 and cfg.prior == priors.default_diffusion() and cfg.from_coarse == ""
    for bad in (dict(prompt=""), dict(prompt="a chair " * 100), dict(prior="/etc")):  # empty, too long, a server path
        args = {"prompt": "a chair", "prior": "", **bad}
        with pytest.raises(UserInputError):
            tab.make_config(Magic3DConfig, args["prompt"], "", 100, 10, 10, 16, "auto", 0, args["prior"], "custom")
    estimate = tab.estimate(100, 50, "cpu")  # 150 steps at 1.4 s and 90 s of loading and exports on a CPU
    assert "about **5m 00s**" in estimate if runner.device_class() == "cpu" else "No measured" in estimate
    assert tab.preset_values("zerogpu") == (800, 200, 40)
    monkeypatch.setenv("GEN3D_TINY", "1")
    tiny = tab.make_config(Magic3DConfig, "a", "", 100, 5000, 5, 64, "", 0, "", "custom", "/x/coarse.pt")
    assert (tiny.coarse_steps, tiny.fine_steps, tiny.from_coarse) == (tab.TINY["coarse_steps"], 5, "/x/coarse.pt")

    # the tab's run wiring with a fake pipeline: stage-labelled progress, previews, the textured .glb shown
    def fake_run(cfg):
        import trimesh

        for stage, n in (("coarse", cfg.coarse_steps), ("fine", cfg.fine_steps)):
            for step in range(1, n + 1):
                yield Progress(step, n, {"loss": 1.0 / step}, stage=stage)
            img = __import__("numpy").full((8, 8, 3), 100, "uint8")
            yield Preview(n, {"rgb": img, "normal": img, "opacity": img, "sds": img}, f"{stage} stage")
        glb = Path(cfg.out_dir) / "mesh.glb"
        trimesh.creation.box().export(glb)
        art = Artifact("mesh", str(glb), "textured mesh (.glb)")
        yield ArtifactReady(art)
        yield Done([art], {"mesh_faces": 12.0}, 0.1)

    mod = types.ModuleType("gen3d_fake_magic3d")
    mod.CONFIG, mod.run = Magic3DConfig, fake_run
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(PIPELINES, "magic3d", PipelineSpec("Magic3D", mod.__name__, "fake"))
    monkeypatch.setenv("GEN3D_OUTPUTS", str(tmp_path / "sessions"))
    comps = {n: object() for n in ("status", "plot", "video", "model3d", "files", "metrics")}
    comps.update({f"image:{k}": object() for k in ("rgb", "normal", "opacity", "sds")})
    handler = widgets.make_handler("magic3d", tab.make_config, comps, ("rgb", "normal", "opacity", "sds"))
    ups = list(handler(types.SimpleNamespace(session_hash="s"), prompt="a chair", negative_prompt="",
                       guidance_scale=100, coarse_steps=3, fine_steps=2, tet_resolution=16,
                       surface_threshold="auto", seed=0, prior="embedded", preset="custom", from_coarse=None))
    statuses = [u[comps["status"]] for u in ups if comps["status"] in u]
    assert any("fine" in s for s in statuses) and "Done" in statuses[-1]
    assert any(str(u.get(comps["model3d"], "")).endswith("mesh.glb") for u in ups)
    assert any(u.get(comps["image:sds"]) is not None for u in ups)
