"""Real captures once loaded (issue 19): the spaces they train in (NDC rays, the NDC box, view directions in NDC,
mip-NeRF 360's contraction), NeRF and VolSDF trained on a 360-degree COLMAP capture, and the captures bench on saved
SfM poses. The capture files (written from the shipped cow scene's known cameras) and their readers:
test_captures.py."""
from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.core import colmap_io
from pipelines.core.captures import load_split, read_capture
from pipelines.core.datasets import HOLDOUT

from test_captures import N, REPO, cow_views, write_colmap, write_llff


@pytest.fixture(scope="module")
def cow():
    """test_captures' cow: the scene's first N training views, (PosedImages, PNG bytes per view)."""
    return cow_views()


def test_ndc_rays_meet_at_the_point_they_see():
    """Two cameras' rays through the pixels where one world point projects meet at that point's NDC image."""
    from pipelines.core.rays import pixel_rays
    from pipelines.core.scene_space import ndc_rays

    fx, fy, w, h = 60.0, 55.0, 80, 60
    point = torch.tensor([0.4, -0.3, -5.0])
    ndc = torch.tensor([-2 * fx / w * point[0] / point[2], -2 * fy / h * point[1] / point[2], 1 + 2 / point[2]])
    for shift in ([0.0, 0.0, 0.0], [0.3, 0.2, 0.1]):
        c2w = torch.eye(4)
        c2w[:3, 3] = torch.tensor(shift)
        cam = point - c2w[:3, 3]
        u, v = w / 2 + fx * cam[0] / -cam[2], h / 2 - fy * cam[1] / -cam[2]
        o, d = pixel_rays(c2w[None], u[None], v[None], fx, fy, w / 2, h / 2)
        on, dn = ndc_rays(o, d, fx, fy, w, h)
        t = (ndc[2] - on[0, 2]) / dn[0, 2]
        assert torch.allclose(on[0] + t * dn[0], ndc, atol=1e-5)


def test_ndc_box_holds_every_training_ray():
    """Forward-facing cameras spread sideways (as fern's): in plain NDC the side views' rays leave the [-1, 1]^3 box
    through its sides before reaching the far plane, so the field cannot see what they look at (those pixels
    render black; fern at 30 s on an H200 lost about 10 % of each held-out view this way). With ``ndc_extent``
    every ray stays in the box all the way from z = -1 to z = 1."""
    from pipelines.core.cameras import Camera
    from pipelines.core.rays import camera_rays
    from pipelines.core.scene_space import ndc_extent, ndc_rays

    fx, w, h = 50.0, 64, 48
    c2w = torch.eye(4).repeat(3, 1, 1)
    c2w[:, 0, 3] = torch.tensor([-0.3, 0.0, 0.3])  # near bound at 1.33, as normalize() puts it
    extent = ndc_extent(c2w, fx, fx, w, h)
    assert extent[0] > 1.2 and extent[1] < 1.1
    for ext, ok in (((1.0, 1.0), False), (extent, True)):
        exits = []
        for i in range(3):
            o, d = camera_rays(Camera(c2w[i], fx, fx, w / 2, h / 2, w, h))
            on, dn = ndc_rays(o.reshape(-1, 3), d.reshape(-1, 3), fx, fx, w, h, extent=ext)
            t_far = (1 - on[:, 2]) / dn[:, 2]  # where each ray reaches z = 1
            exits += [on[:, :2], (on + t_far[:, None] * dn)[:, :2]]  # a straight line: both ends in, all in
        assert bool((torch.cat(exits).abs() <= 1).all()) == ok


def test_ndc_colour_sees_world_directions():
    """In NDC every ray of the reference camera points along +z (NDC directions carry almost no view direction):
    the fast field's colour must see the world directions, as the NeRF paper's viewdirs."""
    from pipelines.core.cameras import Camera
    from pipelines.core.rays import camera_rays
    from pipelines.nerf import NerfConfig, build_model, make_renderer

    cfg = NerfConfig(hash_levels=2, hash_log2_size=10, grid_resolution=8, march_steps=32, max_samples=0)
    modules, _, _, grid = build_model(cfg, torch.device("cpu"), 1.0)
    cam = Camera(torch.eye(4), 40.0, 40.0, 16.0, 12.0, 32, 24)
    seen = []
    field = modules["field"]
    forward = field.forward
    field.forward = lambda x, d: (seen.append(d), forward(x, d))[1]
    render, _ = make_renderer(cfg, modules, grid, "forward", cam)
    o, d = camera_rays(cam)
    with torch.no_grad():
        render(o.reshape(-1, 3), d.reshape(-1, 3), torch.zeros(3), False)
    dirs = torch.cat(seen)
    assert len(dirs) and dirs[:, :2].abs().max() > 0.3  # the corners look 22 degrees off the axis


def test_contraction_and_spacing():
    from pipelines.core.scene_space import contract, piecewise_distances

    x = torch.tensor([[0.5, 0, 0], [2.0, 0, 0], [1e6, 0, 0]])
    assert torch.allclose(contract(x), torch.tensor([[0.5, 0, 0], [1.5, 0, 0], [2.0, 0, 0]]), atol=1e-5)
    t = piecewise_distances(torch.linspace(0, 1, 9), 0.05, 1000.0)
    assert t[0] == pytest.approx(0.05) and t[4] == pytest.approx(1.0) and t[-1] == pytest.approx(1000.0, rel=1e-4)
    assert (t[1:] > t[:-1]).all()


def test_unbounded_capture_trains_and_exports(tmp_path, cow):
    """A 360-degree COLMAP capture: NeRF chooses the contracted space, trains, renders a turntable, meshes the
    unit ball; VolSDF trains the same capture with its SDF in a box inside the cameras and the background model behind
    it by default (saying so), or without the background model (warning that the background is then fitted in the
    box)."""
    from pipelines.events import Log, run_to_completion
    from pipelines.nerf import NerfConfig, run
    from pipelines.volsdf import VolSDFConfig
    from pipelines.volsdf import run as run_volsdf

    import io

    truth, _ = cow
    pngs = []  # photos have no alpha: the cow on white, as RGB
    for img in truth.images:
        buf = io.BytesIO()
        Image.fromarray((img.numpy() * 255).round().astype(np.uint8)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    write_colmap(tmp_path / "cap", truth, pngs, binary=False)
    cfg = NerfConfig(scene=str(tmp_path / "cap"), steps=12, downscale=4, batch_rays=128, target_samples=2048,
                     max_samples=4096, hash_levels=4, hash_log2_size=12, grid_resolution=16, march_steps=32,
                     unbounded_samples=32, preview_every=6, eval_views=1, mesh_resolution=16, turntable_frames=2,
                     preview_size=16, out_dir=str(tmp_path / "run"))
    events = []
    done = run_to_completion(run(cfg), on_event=events.append)
    logs = " ".join(e.message for e in events if isinstance(e, Log))
    assert "unbounded space" in logs and np.isfinite(done.metrics["psnr"])
    kinds = {a.kind for a in done.artifacts}
    assert {"cameras", "video", "checkpoint"} <= kinds
    vcfg = VolSDFConfig(scene=str(tmp_path / "cap"), steps=4, downscale=4, batch_rays=64, n_coarse=8, n_fine=4,
                        upsample_levels=1, eikonal_points=32, width=16, hash_levels=2, hash_log2_size=10,
                        target_samples=2048, max_samples=2 ** 13, grid_resolution=16, march_steps=64,
                        eval_views=1, export=False, mesh_resolution=0, out_dir=str(tmp_path / "vrun"))
    vevents = []
    vdone = run_to_completion(run_volsdf(vcfg), on_event=vevents.append)
    assert any(isinstance(e, Log) and "background model: a hash-grid" in e.message for e in vevents)
    assert any(isinstance(e, Log) and e.message.startswith("scene space: unbounded") for e in vevents)
    assert np.isfinite(vdone.metrics["psnr"])
    vevents = []
    run_to_completion(run_volsdf(dataclasses.replace(vcfg, steps=2, background_model="none")), on_event=vevents.append)
    assert any(isinstance(e, Log) and e.level == "warning" and "fits the background inside the SDF's box" in e.message
               for e in vevents)


def _bench_captures(monkeypatch):
    """bench/captures.py as a module (its ``common`` import needs bench/ on the path)."""
    import importlib.util

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("bench_captures", REPO / "bench" / "captures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_trains_on_saved_sfm_poses_without_pycolmap(tmp_path, monkeypatch, cow):
    """The captures bench on a GPU machine without pycolmap: SfM's model, saved once (``--sfm-cache``) under the
    capture's own image names, trains with the same held-out images (0, 8) as LLFF's poses; a cache of other photos
    and a missing cache without pycolmap are refused with a message."""
    bench = _bench_captures(monkeypatch)
    truth, pngs = cow
    data = tmp_path / "capture"  # an LLFF capture shipped at 1/8 size, as fern: images_8/ and full-size hwf
    write_llff(data, truth, pngs)
    (data / "images").rename(data / "images_8")
    pb = np.load(data / "poses_bounds.npy")
    pb[:, [4, 9, 14]] *= 8
    np.save(data / "poses_bounds.npy", pb)
    # What sfm.reconstruct leaves: images NNNN_<stem>.png and a model in SfM's own frame (a similarity away).
    sfm_root = tmp_path / "sfm_out"
    c2w = truth.c2w.double().numpy().copy()
    c, s = np.cos(0.4), np.sin(0.4)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    c2w[:, :3, :3] = rot @ c2w[:, :3, :3]
    c2w[:, :3, 3] = 3.0 * c2w[:, :3, 3] @ rot.T + [1.0, 2.0, -0.5]
    names = [f"{i:04d}_img_{i:03d}.png" for i in range(N)]
    cam = colmap_io.ColmapCamera(1, "PINHOLE", truth.width, truth.height,
                                 np.array([truth.fx, truth.fy, truth.cx, truth.cy]))
    images = {i + 1: colmap_io.image_from_c2w(i + 1, c2w[i], 1, n) for i, n in enumerate(names)}
    colmap_io.write_model(colmap_io.ColmapModel({1: cam}, images, np.random.default_rng(0).normal(size=(50, 3)),
                                                np.zeros((50, 3), np.uint8)), sfm_root / "sparse" / "0", binary=True)
    cache = tmp_path / "sfm_cache"
    bench.save_sfm_cache(sfm_root, data, cache, {"sfm_s": 1.5})
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == \
        ["cameras.txt", "images.txt", "points3D.txt", "sfm.json"]  # no image copies
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap raises ImportError, as on the GPU
    scene, meta = bench.sfm_scene(data, cache, tmp_path / "work")
    assert meta["registered"] == f"{N}/{N}" and meta["sfm_s"] == 1.5
    cap, ref = read_capture(scene, "colmap"), read_capture(data, "llff")
    assert [p.name for p in cap.paths] == [p.name for p in ref.paths]
    errors = bench.compare_poses(scene, data)
    assert errors["rot_err_deg"] < 0.05 and errors["centre_err"] < 1e-4
    assert load_split(cap, HOLDOUT).names == ["images/img_000.png", "images/img_008.png"]

    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", [
        "captures.py", "--smoke", "--data", str(data), "--poses", "llff", "sfm", "--sfm-cache", str(cache),
        "--checkpoints", "0.2", "0.4", "--json", str(out), "--set", "unbounded_samples=16"])
    bench.main()
    result = json.loads(out.read_text())
    assert result["held_out_images"] == {"llff": ["img_000.png", "img_008.png"],
                                         "sfm": ["img_000.png", "img_008.png"]}
    assert result["sfm"]["registered"] == f"{N}/{N}" and result["sfm"]["rot_err_deg"] < 0.05
    assert [r["method"] for r in result["rows"]] == ["nerf-fast, llff poses"] * 2 + ["nerf-fast, sfm poses"] * 2
    assert all(np.isfinite(r["psnr"]) for r in result["rows"])

    (data / "images_8" / "img_003.png").write_bytes(pngs[4])  # other photos than SfM saw
    with pytest.raises(SystemExit, match="made from other photos"):
        bench.sfm_scene(data, cache, tmp_path / "work")
    with pytest.raises(SystemExit, match="pip install pycolmap.*--sfm-cache DIR"):
        bench.run_sfm(data, tmp_path / "fresh", 256, 1)
