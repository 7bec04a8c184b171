"""The VolSDF pipeline on CPU: primitive recovery on a scene the project renders itself, a neural-SDF smoke run on
lego, Stop, bad inputs, presets, the CLI, an uploaded zip, the tab, a finite-difference run and the MLPs' learning
rate. The field and renderer: test_volsdf_fields.py; real captures: test_volsdf_captures.py."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import PIPELINES, UserInputError
from pipelines.core.sdf import sdf_to_mesh
from pipelines.core.sdf_primitives import PrimitiveSDF
from pipelines.events import Done, Log, Preview, Progress, run_to_completion
from pipelines.train.example_scenes import make_primitive_scene, scene_primitives
from pipelines.volsdf import VolSDFConfig, run

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(downscale=16, max_views=12, eval_views=2, preview_every=20, turntable_frames=4, mesh_resolution=32,
            preview_size=25, device="cpu", batch_rays=256, n_coarse=24, n_fine=16, eikonal_points=128,
            target_samples=4096, max_samples=2 ** 14, grid_resolution=32, march_steps=96)
TINY_NEURAL = dict(field="neural", encoding="hash", steps=60, hash_levels=4, hash_log2_size=12, width=32)


@pytest.fixture(scope="module")
def primitive_scene(tmp_path_factory):
    """The primitives example at 32 px, 20 + 4 views, rendered by the rasterizer (not by the SDF renderer)."""
    return make_primitive_scene(tmp_path_factory.mktemp("scene") / "primitives", size=32, n_train=20, n_val=4,
                                mesh_resolution=96)


# ------------------------------------------------------------------------------------ primitive recovery
def _perturbed(truth, path):
    """Centres moved by ~0.2, sizes scaled by 1.3 or 0.75, grey colours: the fit's starting point."""
    signs = [[1, -1, 1], [-1, -1, 1], [1, 1, -1]]
    start = [{"kind": p.kind, "center": [c + 0.13 * s for c, s in zip(p.center, sg)],
              "size": [v * (1.3 if i % 2 == 0 else 0.75) for i, v in enumerate(p.size)], "rotation": [1, 0, 0, 0]}
             for p, sg in zip(truth, signs)]
    path.write_text(json.dumps({"primitives": start}))
    return start


def _errors(truth, fitted):
    c = max(math.dist(a.center, b["center"]) for a, b in zip(truth, fitted))
    s = max(max(abs(x - y) for x, y in zip(a.size, b["size"])) for a, b in zip(truth, fitted))
    return c, s


def test_primitive_recovery(primitive_scene, tmp_path):
    truth = scene_primitives()
    start = _perturbed(truth, tmp_path / "start.json")
    gt_mesh = sdf_to_mesh(PrimitiveSDF(truth), 1.5, 64, "cpu", colors=False)
    extent = float((gt_mesh.verts.amax(0) - gt_mesh.verts.amin(0)).amax())  # about 1.6
    tol = 0.03 * extent
    c0, s0 = _errors(truth, start)
    assert c0 > 3 * tol and s0 > 1.5 * tol  # the start is well outside the tolerance
    cfg = VolSDFConfig(scene=str(primitive_scene), field="primitives", primitives=str(tmp_path / "start.json"),
                       sampler="surface", steps=300, batch_rays=512, n_coarse=16, n_fine=16, eikonal_points=64,
                       bound=1.0,
                       preview_every=100, eval_views=2, turntable_frames=2, mesh_resolution=48, preview_size=32,
                       device="cpu", out_dir=str(tmp_path / "run"))
    events = list(run(cfg))
    done = events[-1]
    assert isinstance(done, Done)
    fitted = json.loads(Path(next(a.path for a in done.artifacts if a.kind == "json")).read_text())["primitives"]
    c_err, s_err = _errors(truth, fitted)
    print(f"recovery: centre error {c_err:.4f} (start {c0:.3f}), size error {s_err:.4f} (start {s0:.3f}), "
          f"extent {extent:.3f}, PSNR {done.metrics['psnr']:.2f} dB, beta {done.metrics['beta']:.4f}")
    assert c_err < tol and s_err < tol, (c_err, s_err, tol)
    assert done.metrics["center_error"] == pytest.approx(c_err, abs=1e-4)  # the run's own report agrees
    assert done.metrics["beta"] < 0.5 * cfg.beta_init  # the surface sharpened
    assert done.metrics["psnr"] > 25 and done.metrics["mesh_watertight"] == 1.0
    # Primitive parameters, alpha and beta are reported while they change.
    logs = [e.message for e in events if isinstance(e, Log) and "box0" in e.message]
    assert len(logs) >= 3 and logs[0] != logs[-1]
    betas = [e.losses["beta"] for e in events if isinstance(e, Progress) and e.losses]
    assert betas[-1] < betas[0] and all("alpha" in e.losses for e in events if isinstance(e, Progress) and e.losses)


# ------------------------------------------------------------------------------------------ neural smoke
def test_neural_sdf_smoke_on_lego(lego, tmp_path):
    import trimesh

    cfg = VolSDFConfig(scene=str(lego), out_dir=str(tmp_path), **TINY, **TINY_NEURAL)
    events = list(run(cfg))
    done = events[-1]
    assert isinstance(done, Done)
    kinds = {a.kind for a in done.artifacts}
    assert {"video", "image", "mesh", "checkpoint"} <= kinds and "json" not in kinds
    for a in done.artifacts:
        assert Path(a.path).is_file() and Path(a.path).stat().st_size > 0 and Path(a.path).parent == tmp_path
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews and set(previews[0].images) == {"rgb", "normal", "depth"}
    assert previews[0].images["normal"].dtype.name == "uint8" and previews[0].images["normal"].shape[-1] == 3
    val_curve = [e.losses["psnr_val"] for e in events if isinstance(e, Progress) and "psnr_val" in e.losses]
    assert len(val_curve) >= 2 and done.metrics["psnr"] > val_curve[0] + 0.5, (val_curve, done.metrics)
    assert 0 < done.metrics["ssim"] <= 1 and math.isfinite(done.metrics["beta"])
    glb = trimesh.load(next(a.path for a in done.artifacts if a.path.endswith(".glb")), force="mesh")
    assert glb.is_watertight and done.metrics["mesh_watertight"] == 1.0
    assert len(glb.faces) == done.metrics["mesh_faces"] > 100
    colors = glb.visual.vertex_colors[:, :3]
    assert colors.std() > 0  # coloured by the colour network, not a constant


def test_stop_closes_the_run_and_frees(monkeypatch, primitive_scene, tmp_path):
    from pipelines import config

    freed = []
    monkeypatch.setattr(config.RunContext, "free", lambda self: freed.append(True))
    gen = run(VolSDFConfig(scene=str(primitive_scene), field="primitives", sampler="surface", steps=1000,
                           batch_rays=64, n_coarse=8,
                           n_fine=8, device="cpu", out_dir=str(tmp_path)))
    for ev in gen:
        if isinstance(ev, Progress):
            break
    assert not freed
    gen.close()
    assert freed == [True] and not any(p.suffix == ".pt" for p in tmp_path.iterdir())


def test_bad_inputs_are_user_errors(primitive_scene, tmp_path):
    base = dict(scene=str(primitive_scene), field="primitives", steps=2, device="cpu")
    for spec, match in [("box,cone", "cone"), ("", "kinds"), (str(tmp_path / "missing.json"), "not found")]:
        with pytest.raises(UserInputError, match=match):
            run_to_completion(run(VolSDFConfig(**base, primitives=spec, out_dir=str(tmp_path / "a"))))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"primitives": [{"kind": "box", "center": [0, 0], "size": [1, 1, 1]}]}))
    with pytest.raises(UserInputError, match="bad.json"):
        run_to_completion(run(VolSDFConfig(**base, primitives=str(bad), out_dir=str(tmp_path / "b"))))
    with pytest.raises(UserInputError, match="beta"):
        run_to_completion(run(VolSDFConfig(**base, beta_min=0.5, out_dir=str(tmp_path / "c"))))


def test_presets_registry_and_field_docs():
    docs = VolSDFConfig.field_docs()
    assert "Laplace" in docs["beta_init"] and "eikonal" in docs["eikonal_weight"]
    assert VolSDFConfig().with_preset("quality").steps > VolSDFConfig().with_preset("fast").steps
    assert VolSDFConfig().with_preset("primitives").field == "primitives"
    assert PIPELINES["volsdf"].load() == (VolSDFConfig, run)


# ------------------------------------------------------------------------------------------------- CLI
def _cli(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pipelines", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


def test_cli_help_and_a_primitives_run(primitive_scene, tmp_path):
    top = _cli("--help")
    assert top.returncode == 0 and "volsdf" in top.stdout
    sub = _cli("volsdf", "--help")
    assert sub.returncode == 0 and "--eikonal-weight" in sub.stdout and "--preset" in sub.stdout
    res = _cli("volsdf", "--scene", str(primitive_scene), "--field", "primitives", "--steps", "20", "--batch-rays",
               "128", "--sampler", "surface", "--n-coarse", "12", "--n-fine", "8", "--preview-every", "10",
               "--eval-views", "1",
               "--turntable-frames", "2", "--mesh-resolution", "24", "--device", "cpu", "--out-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "20/20" in res.stderr and "box0" in res.stderr  # progress bar and the primitives' parameters
    assert "psnr" in res.stdout and str(tmp_path / "fitted_primitives.json") in res.stdout
    fitted = json.loads((tmp_path / "fitted_primitives.json").read_text())
    assert [p["kind"] for p in fitted["primitives"]] == ["box", "box", "sphere"]
    bad = _cli("volsdf", "--field", "primitives", "--primitives", "box,cone", "--device", "cpu", "--out-dir",
               str(tmp_path / "bad"))
    last = bad.stderr.strip().splitlines()[-1]  # info lines ("loading the scene") may come first
    assert bad.returncode == 2 and last.startswith("error:") and "cone" in last and "Traceback" not in bad.stderr


def test_runs_from_an_uploaded_zip(primitive_scene, tmp_path):
    import zipfile

    upload = tmp_path / "my scene.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        for f in primitive_scene.rglob("*"):
            zf.write(f, Path("primitives") / f.relative_to(primitive_scene))  # zipped with its folder
    done = run_to_completion(run(VolSDFConfig(scene=str(upload), field="primitives", sampler="surface", steps=5,
                                              batch_rays=64,
                                              n_coarse=8, n_fine=8, eval_views=1, export=False, mesh_resolution=16,
                                              device="cpu", out_dir=str(tmp_path / "run"))))
    assert math.isfinite(done.metrics["psnr"]) and "center_error" in done.metrics  # its primitives.json was found


# -------------------------------------------------------------------------------------------------- tab
def test_volsdf_tab_matches_the_config(monkeypatch):
    import dataclasses

    gr = pytest.importorskip("gradio")
    from gen3d_app.tabs import volsdf as tab

    with gr.Blocks() as demo:
        tab.build()
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    d = VolSDFConfig().with_preset(tab.default_preset()) if tab.default_preset() != "custom" else VolSDFConfig()
    assert (by_id["volsdf-steps"].value, by_id["volsdf-field"].value, by_id["volsdf-primitives"].value) == \
        (d.steps, d.field, d.primitives)  # without a GPU: the cpu preset, a run of minutes (issue 15)
    assert by_id["volsdf-downscale"].value == d.downscale and by_id["volsdf-seed"].value == d.seed
    assert {"volsdf-preview-rgb", "volsdf-preview-normal", "volsdf-preview-depth", "volsdf-stop"} <= set(by_id)
    assert set(tab.PRESETS) == {"custom"} | set(VolSDFConfig.PRESETS)
    assert set(tab.TINY) <= {f.name for f in dataclasses.fields(VolSDFConfig)}
    cfg = tab.make_config(VolSDFConfig, "primitives", None, "primitives", "box,sphere", "primitives", 40, 3, 2)
    assert cfg.scene.endswith(os.path.join("assets", "scenes", "primitives")) and cfg.primitives == "box,sphere"
    assert (cfg.field, cfg.steps, cfg.seed, cfg.downscale) == ("primitives", 40, 3, 2)
    assert cfg.n_fine == VolSDFConfig.PRESETS["primitives"]["n_fine"]  # preset, then the inputs
    assert tab.make_config(VolSDFConfig, "cow", "/tmp/x/s.zip", "neural", "", "custom", 9, 0, 1).scene == "/tmp/x/s.zip"
    with pytest.raises(UserInputError):
        tab.make_config(VolSDFConfig, "cow", "/tmp/x/s.tar", "neural", "", "custom", 9, 0, 1)
    assert tab.preset_values("primitives") == ("primitives", VolSDFConfig.PRESETS["primitives"]["steps"], 1)
    monkeypatch.setenv("GEN3D_TINY", "1")
    tiny = tab.make_config(VolSDFConfig, "cow", None, "neural", "", "fast", 2000, 0, 1)
    assert tiny.steps == tab.TINY["steps"] and tiny.downscale == tab.TINY["downscale"]


@pytest.mark.parametrize("gradient", ["finite_difference", "tetrahedral"])
def test_finite_difference_run_on_lego_trains(lego, tmp_path, gradient):
    cfg = VolSDFConfig(scene=str(lego), out_dir=str(tmp_path), **{
        **TINY, **TINY_NEURAL, "export": False, "gradient": gradient, "steps": 40, "batch_rays": 128,
        "n_coarse": 16, "n_fine": 8, "eikonal_points": 64, "eval_views": 1, "mesh_resolution": 16,
        "preview_every": 10, "hash_warmup": 20})
    events = list(run(cfg))
    done = events[-1]
    val_curve = [e.losses["psnr_val"] for e in events if isinstance(e, Progress) and "psnr_val" in e.losses]
    assert len(val_curve) >= 2 and done.metrics["psnr"] > val_curve[0] + 0.5, (val_curve, done.metrics)
    assert math.isfinite(done.metrics["beta"]) and done.metrics["mesh_watertight"] == 1.0


def test_mlp_learning_rate_follows_the_background_model():
    """mlp_lr_factor 0: the MLPs learn at the grid's rate when a background model runs (else it out-learns the
    SDF), at a tenth of it for objects; a set factor wins."""
    from pipelines.core.sdf import LaplaceDensity
    from pipelines.core.sdf_setup import build_field, make_optimizer
    from pipelines.volsdf import VolSDFConfig

    cfg = VolSDFConfig(hash_levels=2, hash_log2_size=8, device="cpu")
    field, density = build_field(cfg, "cpu"), LaplaceDensity(0.1, 1e-4, True)
    rates = lambda opt: [g["lr"] for g in opt.param_groups]  # noqa: E731
    assert rates(make_optimizer(cfg, field, density)) == [1e-2, 1e-3]
    assert rates(make_optimizer(cfg, field, density, background=True)) == [1e-2, 1e-2]
    set_cfg = VolSDFConfig(hash_levels=2, hash_log2_size=8, mlp_lr_factor=0.5, device="cpu")
    assert rates(make_optimizer(set_cfg, field, density, background=True)) == [1e-2, 5e-3]
