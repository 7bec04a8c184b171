"""NeRF end to end on CPU: both models on a downscaled lego, the CLI, Stop, and bad inputs."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from pipelines import PIPELINES, UserInputError
from pipelines.events import Done, Preview, Progress, run_to_completion
from pipelines.nerf import NerfConfig, run

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(downscale=16, max_views=12, eval_views=2, preview_every=20, turntable_frames=4, mesh_resolution=24,
            mesh_density=0.01, preview_size=25, device="cpu")
TINY_MODELS = {
    "fast": dict(model="fast", steps=60, batch_rays=256, target_samples=8192, hash_levels=4, hash_log2_size=12,
                 grid_resolution=16, march_steps=48),
    "vanilla": dict(model="vanilla", steps=60, batch_rays=256, width=32, depth=2, n_coarse=16, n_fine=16,
                    precrop_steps=10, lr=5e-3),
}


@pytest.mark.parametrize("model", ["fast", "vanilla"])
def test_nerf_smoke_on_lego(model, lego, tmp_path):
    cfg = NerfConfig(scene=str(lego), out_dir=str(tmp_path), **TINY, **TINY_MODELS[model])
    events = list(run(cfg))
    done = events[-1]
    assert isinstance(done, Done)
    kinds = {a.kind for a in done.artifacts}
    assert {"video", "image", "mesh", "checkpoint"} <= kinds
    for a in done.artifacts:
        assert Path(a.path).is_file() and Path(a.path).stat().st_size > 0
        assert Path(a.path).parent == tmp_path  # nothing is written outside the run folder
    assert {Path(a.path).suffix for a in done.artifacts if a.kind == "mesh"} == {".glb", ".obj"}
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews and set(previews[0].images) == {"rgb", "depth", "opacity"}
    assert previews[0].images["rgb"].dtype.name == "uint8" and previews[0].images["rgb"].shape[-1] == 3
    val_curve = [e.losses["psnr_val"] for e in events if isinstance(e, Progress) and "psnr_val" in e.losses]
    assert len(val_curve) >= 2
    assert done.metrics["psnr"] == done.metrics["psnr"]  # finite, not NaN
    assert done.metrics["psnr"] > val_curve[0] + 0.5, (val_curve, done.metrics)
    assert 0 < done.metrics["ssim"] <= 1


def test_stop_closes_the_run_and_frees(monkeypatch, lego, tmp_path):
    from pipelines import config

    freed = []
    monkeypatch.setattr(config.RunContext, "free", lambda self: freed.append(True))
    cfg = NerfConfig(scene=str(lego), out_dir=str(tmp_path), **{**TINY, **TINY_MODELS["fast"], "steps": 1000})
    gen = run(cfg)
    for ev in gen:
        if isinstance(ev, Progress):
            break
    assert not freed
    gen.close()  # what the UI's Stop does
    assert freed == [True]
    assert not any(p.suffix == ".pt" for p in tmp_path.iterdir())


def test_bad_inputs_are_user_errors(tmp_path):
    bad_zip = tmp_path / "scene.zip"
    with zipfile.ZipFile(bad_zip, "w") as zf:
        zf.writestr("../evil.txt", "x")
    with pytest.raises(UserInputError, match="evil.txt"):
        run_to_completion(run(NerfConfig(scene=str(bad_zip), out_dir=str(tmp_path / "out"), device="cpu")))
    assert not (tmp_path / "evil.txt").exists()
    with pytest.raises(UserInputError):
        run_to_completion(run(NerfConfig(steps=0, out_dir=str(tmp_path / "out2"), device="cpu")))
    with pytest.raises(UserInputError, match="preset"):
        NerfConfig().with_preset("nope")


def test_presets_and_field_docs():
    docs = NerfConfig.field_docs()
    assert "hash" in docs["hash_log2_size"] and "seed" in docs["seed"].lower()
    assert NerfConfig().with_preset("quality").steps > NerfConfig().with_preset("fast").steps
    cfg_cls, run_fn = PIPELINES["nerf"].load()
    assert cfg_cls is NerfConfig and run_fn is run


def _cli(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipelines", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


def test_cli_help_lists_pipelines_and_flags():
    top = _cli("--help")
    assert top.returncode == 0 and "nerf" in top.stdout
    sub = _cli("nerf", "--help")
    assert sub.returncode == 0
    assert "--hash-log2-size" in sub.stdout and "--preset" in sub.stdout and "Blender-format" in sub.stdout
    unknown = _cli("nope")
    assert unknown.returncode == 2 and "unknown pipeline" in unknown.stderr


def test_cli_runs_the_shipped_example(tmp_path):
    flags = {**TINY, **TINY_MODELS["fast"], "steps": 20, "downscale": 4, "max_views": 8}
    args = ["nerf", "--out-dir", str(tmp_path)]
    for k, v in flags.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    res = _cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "20/20" in res.stderr  # the progress bar reached the end
    assert "psnr" in res.stdout and str(tmp_path / "mesh.glb") in res.stdout


def test_cli_reports_bad_input_without_traceback(tmp_path):
    not_zip = tmp_path / "scene.zip"
    not_zip.write_bytes(b"this is not a zip file")
    res = _cli("nerf", "--scene", str(not_zip), "--out-dir", str(tmp_path / "out"), "--device", "cpu")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error:") and "Traceback" not in res.stderr and "scene.zip" in res.stderr


def test_fast_samples_per_step_never_exceed_the_budget(monkeypatch, lego, tmp_path):
    """The memory bound of issue 20: no field evaluation (occupancy updates, culling, the training pass, previews,
    scoring) sees more than ``max_samples`` points, from the first step on, when the occupancy grid still marks
    every cell and a batch of 256 rays carries ~15k candidates; and training still improves held-out PSNR."""
    from pipelines.core import encodings, occupancy

    sizes, steps = [], []
    forward = encodings.HashGridEncoding.forward
    monkeypatch.setattr(encodings.HashGridEncoding, "forward", lambda self, x: sizes.append(len(x)) or forward(self, x))
    render = occupancy.render_rays

    def spy(*args, **kwargs):
        out = render(*args, **kwargs)
        if torch.is_grad_enabled():
            steps.append((out.extras["samples"], out.extras["rays"], len(args[2])))
        return out

    monkeypatch.setattr(occupancy, "render_rays", spy)
    budget = 2048
    cfg = NerfConfig(scene=str(lego), out_dir=str(tmp_path), **{**TINY, **TINY_MODELS["fast"], "max_samples": budget,
                                                                  "target_samples": 1024, "export": False})
    events = list(run(cfg))
    done = events[-1]
    assert isinstance(done, Done) and len(steps) == cfg.steps
    assert max(sizes) <= budget, max(sizes)
    assert all(0 < s <= budget for s, _, _ in steps), steps[:5]
    first_samples, first_rays, first_batch = steps[0]
    assert first_rays < first_batch == cfg.batch_rays  # the budget, not the batch size, bounded the first step
    assert first_samples > budget // 2
    val_curve = [e.losses["psnr_val"] for e in events if isinstance(e, Progress) and "psnr_val" in e.losses]
    assert done.metrics["psnr"] > val_curve[0] + 0.5, (val_curve, done.metrics)


def test_budget_must_hold_one_ray(tmp_path):
    with pytest.raises(UserInputError, match="max_samples"):
        run_to_completion(run(NerfConfig(out_dir=str(tmp_path), device="cpu", max_samples=100, march_steps=600)))


def test_bench_eval_split_and_peak_memory_columns(lego, tmp_path):
    """bench/nerf_lego.py --smoke on a copy of lego whose 'test' split is a few val frames: --eval-split test
    scores those (the table says so), every row has its peak-memory column, and a folder without the split is a
    clear error."""
    import json

    scene = tmp_path / "lego"
    scene.mkdir()
    (scene / "transforms_train.json").symlink_to(lego / "transforms_train.json")
    (scene / "train").symlink_to(lego / "train", target_is_directory=True)
    (scene / "val").symlink_to(lego / "val", target_is_directory=True)
    val = json.loads((lego / "transforms_val.json").read_text())
    (scene / "transforms_val.json").write_text(json.dumps(val))
    (scene / "transforms_test.json").write_text(json.dumps({**val, "frames": val["frames"][50:53]}))
    env = {**os.environ, "GEN3D_BENCH_DATA": str(tmp_path / "work"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "res.json"
    cmd = [sys.executable, "bench/nerf_lego.py", "--smoke", "--models", "fast", "--data", str(scene),
           "--checkpoints", "1", "2", "--eval-views", "0", "--set", "steps=8"]
    res = subprocess.run([*cmd, "--eval-split", "test", "--json", str(out)], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["eval_split"] == "test" and len(data["rows"]) == 2
    assert all(r["eval_split"] == "test" and "all test views" in r["size"] and "peak_gpu_gb" in r for r in data["rows"])
    assert "3 held-out views" in res.stdout  # the three test frames were scored, not the 100 val ones
    assert (tmp_path / "work" / "bench_scenes" / "lego-test-as-val" / "transforms_val.json").is_file()
    missing = subprocess.run([*cmd, "--eval-split", "test", "--data", str(lego)], capture_output=True, text=True,
                             cwd=ROOT, env=env, timeout=600)
    assert missing.returncode != 0 and "no transforms_test.json" in missing.stderr and "Traceback" not in missing.stderr


def test_compact_marching_matches_the_dense_march():
    """OccupancyGrid.march_packed, a chunk of candidates at a time, gives exactly the samples of the dense
    (rays x max steps) march it replaced, whatever the chunk; with a sample budget it marches a prefix of rays."""
    from pipelines.core.occupancy import OccupancyGrid
    from pipelines.core.rays import ray_aabb

    gen = torch.Generator().manual_seed(0)
    grid = OccupancyGrid(1.0, 8)
    grid.binary = torch.rand(8 ** 3, generator=gen) < 0.3
    o = torch.nn.functional.normalize(torch.randn(40, 3, generator=gen), dim=-1) * 3
    d = torch.nn.functional.normalize(-o + 0.5 * torch.randn(40, 3, generator=gen), dim=-1)
    step = 0.05
    near, far, hit = ray_aabb(o, d, -1.0, 1.0)
    n_max = 70
    t = near[:, None] + (torch.arange(n_max) + 0.5) * step
    keep = (t < far[:, None]) & hit[:, None] & grid.occupied((o[:, None] + t[..., None] * d[:, None]).reshape(-1, 3)).reshape(t.shape)
    ref_r, ref_k = keep.nonzero(as_tuple=True)
    for chunk in (7, 1000, 2 ** 20):
        r, tt, used = grid.march_packed(o, d, step, perturb=False, chunk=chunk)
        assert used == 40 and torch.equal(r, ref_r) and torch.allclose(tt, t[ref_r, ref_k], atol=1e-5)
    r, tt, used = grid.march_packed(o, d, step, perturb=False, chunk=7, max_samples=len(ref_r) // 3)
    assert 0 < used < 40 and torch.equal(r, ref_r[ref_r < used])  # whole rays, stopped near the budget
    assert len(ref_r) // 3 - n_max <= len(r) <= len(ref_r) // 3 + 7


def _forward_capture(root: Path, n: int = 9, w: int = 24, h: int = 18) -> Path:
    """A tiny forward-facing LLFF capture made here: n smooth random photos from cameras on a 3x3 grid in a plane,
    all looking down -z (LLFF's columns: down, right, backwards), bounds 2 to 6."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for i in range(n):
        img = Image.fromarray((rng.random((3, 4, 3)) * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
        img.save(root / "images" / f"img_{i:03d}.png")
    p = np.zeros((n, 3, 5))
    p[:, :, 0], p[:, :, 1], p[:, :, 2] = [0, -1, 0], [1, 0, 0], [0, 0, 1]
    p[:, 0, 3], p[:, 1, 3] = 0.3 * (np.arange(n) % 3 - 1), 0.3 * (np.arange(n) // 3 - 1)
    p[:, :, 4] = [h, w, 20.0]
    np.save(root / "poses_bounds.npy", np.concatenate([p.reshape(n, 15), np.tile([2.0, 6.0], (n, 1))], 1))
    return root


def test_vanilla_ndc_colour_sees_world_directions():
    """In NDC the reference camera's rays all point along +z: the vanilla NeRF's coarse and fine colours must see
    the world directions, as the fast field's do (the NeRF paper's viewdirs)."""
    from pipelines.core.cameras import Camera
    from pipelines.core.rays import camera_rays
    from pipelines.nerf import build_model, make_renderer

    cfg = NerfConfig(model="vanilla", width=16, depth=2, n_coarse=8, n_fine=8)
    modules, _, _, _ = build_model(cfg, torch.device("cpu"))
    cam = Camera(torch.eye(4), 40.0, 40.0, 16.0, 12.0, 32, 24)
    seen = {"coarse": [], "fine": []}
    for key in seen:
        forward = modules[key].forward
        modules[key].forward = lambda x, d, forward=forward, key=key: (seen[key].append(d), forward(x, d))[1]
    render, _ = make_renderer(cfg, modules, None, "forward", cam)
    o, d = camera_rays(cam)
    with torch.no_grad():
        render(o.reshape(-1, 3), d.reshape(-1, 3), torch.zeros(3), False)
    for key, dirs in seen.items():
        dirs = torch.cat(dirs)
        # each sample sees its ray's world direction: the corners look 22 degrees off the axis
        assert len(dirs) == 24 * 32 * (8 if key == "coarse" else 16), (key, len(dirs))
        assert dirs[:, :2].abs().max() > 0.3, key
        world = torch.nn.functional.normalize(d.reshape(-1, 3), dim=-1)
        assert torch.allclose(dirs.reshape(24 * 32, -1, 3)[:, 0], world, atol=1e-6), key


@pytest.mark.parametrize("model", ["fast", "vanilla"])
def test_checkpoint_rerenders_an_ndc_scene(model, tmp_path):
    """A forward-facing (NDC) run's model.pt holds its space, reference camera, NDC extent and cameras: reloaded
    (load_checkpoint, weights_only) it renders the held-out view as the run's own export did."""
    import numpy as np
    from PIL import Image

    from pipelines.nerf import load_checkpoint

    scene = _forward_capture(tmp_path / "cap")
    tiny = {k: v for k, v in TINY_MODELS[model].items() if k != "steps"}
    cfg = NerfConfig(scene=str(scene), out_dir=str(tmp_path / "run"), steps=6, eval_views=1, preview_every=100,
                     turntable_frames=2, preview_size=8, device="cpu", **tiny)
    done = run_to_completion(run(cfg))
    path = next(Path(a.path) for a in done.artifacts if a.kind == "checkpoint")
    saved = torch.load(path, weights_only=True)
    assert saved["space"] == "forward" and max(saved["ndc_extent"]) > 1.05  # the side views' rays reach past 1
    assert [Path(n).name for n in saved["cameras"]["heldout"]["names"]] == ["img_000.png", "img_008.png"][:1]
    back = load_checkpoint(path)
    assert back.space == "forward" and back.cfg.model == model and len(back.cameras["train"]) == 7
    rgb = back.render_view(back.cameras["heldout"][0])["rgb"]
    exported = np.asarray(Image.open(path.parent / "heldout_view.png"))[:, :24]  # render | truth
    again = (rgb.clamp(0, 1) * 255).round().numpy().astype(np.uint8)
    assert np.abs(again.astype(int) - exported.astype(int)).max() <= 1
    saved["ndc_extent"] = [1.0, 1.0]  # without the extent the NDC warp differs: the same weights render otherwise
    torch.save(saved, tmp_path / "no_extent.pt")
    other = load_checkpoint(tmp_path / "no_extent.pt").render_view(back.cameras["heldout"][0])["rgb"]
    assert (other - rgb).abs().max() > 1e-3
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="junk.pt is not a NeRF checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
