"""VolSDF on real captures (issue 19): the SDF's box chosen from the cameras, bounds and sparse points, a background
model behind it by default, the choice logged; objects on a background (Blender scenes) unchanged.

The forward-facing fixture is made here: a textured ball in front of a textured wall, ray-cast analytically from a
4 x 4 grid of cameras looking down -z, written as an LLFF capture (``poses_bounds.npy`` + ``images/``)."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.events import Log, Progress, run_to_completion
from pipelines.volsdf import VolSDFConfig, run

BALL_C, BALL_R, WALL_Z = np.array([0.0, 0.0, -3.0]), 0.8, -6.0
W, H, F = 40, 30, 36.0


def _texture(p: torch.Tensor) -> torch.Tensor:
    """A smooth colour pattern of the 3D point (so both surfaces show parallax)."""
    return torch.stack([0.5 + 0.4 * torch.sin(2.0 * p[:, 0] + 1.0), 0.5 + 0.4 * torch.sin(2.5 * p[:, 1]),
                        0.5 + 0.4 * torch.cos(1.5 * (p[:, 0] + p[:, 1]) + 3 * p[:, 2])], -1)


def _render(c2w: torch.Tensor) -> np.ndarray:
    from pipelines.core.rays import camera_rays
    from pipelines.core.cameras import Camera

    o, d = camera_rays(Camera(c2w, F, F, W / 2, H / 2, W, H))
    o, d = o.reshape(-1, 3).double(), d.reshape(-1, 3).double()
    c = torch.from_numpy(BALL_C)
    oc = o - c
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - BALL_R ** 2)
    t_ball = torch.where(disc > 0, -b - disc.clamp_min(0).sqrt(), torch.full_like(b, math.inf))
    t_wall = (WALL_Z - o[:, 2]) / d[:, 2]
    t = torch.minimum(t_ball, t_wall)
    rgb = _texture((o + t[:, None] * d).float())
    rgb = torch.where((t_ball < t_wall)[:, None], rgb * 0.6 + 0.4 * torch.tensor([1.0, 0.3, 0.2]), rgb)
    return (rgb.reshape(H, W, 3).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def forward_capture(tmp_path_factory) -> Path:
    """An LLFF capture: 16 cameras on a 4 x 4 grid (0.25 apart) at z = 0, looking down -z at the ball and the wall;
    near/far bounds from the true depths."""
    root = tmp_path_factory.mktemp("forward")
    (root / "images").mkdir()
    poses = []
    for i, (gx, gy) in enumerate((x, y) for y in range(4) for x in range(4)):
        c2w = torch.eye(4)
        c2w[0, 3], c2w[1, 3] = 0.25 * (gx - 1.5), 0.25 * (gy - 1.5)
        Image.fromarray(_render(c2w)).save(root / "images" / f"img_{i:03d}.png")
        poses.append(c2w.double().numpy())
    c2w = np.stack(poses)
    p = np.zeros((len(c2w), 3, 5))
    p[:, :, 0], p[:, :, 1], p[:, :, 2], p[:, :, 3] = -c2w[:, :3, 1], c2w[:, :3, 0], c2w[:, :3, 2], c2w[:, :3, 3]
    p[:, :, 4] = [H, W, F]
    bounds = np.tile([-BALL_C[2] - BALL_R, -WALL_Z], (len(c2w), 1))
    np.save(root / "poses_bounds.npy", np.concatenate([p.reshape(-1, 15), bounds], 1))
    return root


TINY = dict(steps=60, batch_rays=256, n_coarse=24, n_fine=8, upsample_levels=1, sampler="surface",
            gradient="analytic", eikonal_points=64, width=32, hash_levels=6, hash_log2_size=12, hash_warmup=0,
            preview_every=10, preview_size=24, eval_views=2, export=False, mesh_resolution=0, mlp_lr_factor=1.0)


def _cfg(scene, tmp_path, **kw) -> VolSDFConfig:
    fields = {f.name for f in dataclasses.fields(VolSDFConfig)}
    return VolSDFConfig(scene=str(scene), out_dir=str(tmp_path / "run"),
                        **{k: v for k, v in {**TINY, **kw}.items() if k in fields})


def test_forward_box_holds_the_foreground_not_the_wall(forward_capture):
    """The box chosen for a forward-facing capture holds the ball's visible half and leaves the wall behind to the
    background model; the similarity fits its longest side to [-bound, bound]."""
    from pipelines.core.captures import read_capture
    from pipelines.core.scene_space import choose_space, foreground_box, normalize

    cap = read_capture(forward_capture, "llff")
    assert choose_space(cap.poses)[0] == "forward"
    sim, _ = normalize(cap.poses, "forward", cap.bounds)
    c2w = sim.apply_c2w(cap.poses)
    corners = np.array([[(px - W / 2) / F, -(py - H / 2) / F, -1.0] for px in (0, W) for py in (0, H)])
    corners = np.stack([corners @ c[:3, :3].T for c in c2w])
    corners /= np.linalg.norm(corners, axis=-1, keepdims=True)
    box = foreground_box(c2w, corners, "forward", cap.bounds * sim.scale)
    lo, hi = box.center - box.half, box.center + box.half
    ball = sim.apply_points(BALL_C[None])[0]
    r = BALL_R * sim.scale
    # The ball's visible half (its front cap and its silhouette, at and in front of its centre) is inside.
    front = ball + np.array([[0, 0, r], [r, 0, 0], [-r, 0, 0], [0, r, 0], [0, -r, 0]])
    assert ((front >= lo) & (front <= hi)).all(), (front, lo, hi)
    wall_z = sim.apply_points(np.array([[0.0, 0.0, WALL_Z]]))[0, 2]
    assert wall_z < lo[2], (wall_z, lo)
    assert "geometric mean" in box.why
    sim2 = box.similarity(1.5)
    assert np.allclose(np.abs(sim2.apply_points(np.stack([lo, hi]))).max(), 1.5)


def test_forward_capture_trains_with_the_background_model(forward_capture, tmp_path):
    """The default run of a forward-facing capture logs the chosen space and box, puts the background model behind
    the box, and its held-out PSNR rises over a few steps; the mesh is the SDF's surface inside the box, and the
    checkpoint records the space and box."""
    events = []
    cfg = _cfg(forward_capture, tmp_path, export=True, mesh_resolution=24, turntable_frames=2)
    done = run_to_completion(run(cfg), on_event=events.append)
    logs = [e.message for e in events if isinstance(e, Log)]
    space = next(m for m in logs if m.startswith("scene space:"))
    assert space.startswith("scene space: forward") and "SDF's box" in space and "NDC" not in space
    assert any("background model: a hash-grid radiance field" in m and "real capture" in m
               and "the SDF alone" in m for m in logs)  # why the normal and depth previews leave parts white
    first = next(e.losses["psnr_val"] for e in events if isinstance(e, Progress) and "psnr_val" in e.losses)
    assert done.metrics["psnr"] > first + 1.0, (first, done.metrics["psnr"])
    assert np.isfinite(done.metrics["psnr"])
    cams = json.loads(Path(next(a.path for a in done.artifacts if a.kind == "cameras")).read_text())
    assert cams["space"] == "forward"
    saved = torch.load(Path(cfg.out_dir) / "model.pt", weights_only=False)
    assert saved["space"] == "forward" and any(k.startswith("background.") for k in saved["state"])
    half = np.array(saved["box_half"])
    assert half.max() == pytest.approx(cfg.bound) and half.min() < 0.9 * cfg.bound  # a flat box in front
    obj = next(a.path for a in done.artifacts if str(a.path).endswith(".obj"))
    verts = np.array([[float(v) for v in line.split()[1:4]] for line in Path(obj).read_text().splitlines()
                      if line.startswith("v ")])
    assert len(verts) and (np.abs(verts) <= half + 2 * cfg.bound / 24).all()
    import trimesh  # the .glb keeps the forward frame's y up (the viewer looks from the cameras' side, not above)
    glb = trimesh.load(next(a.path for a in done.artifacts if str(a.path).endswith(".glb")), force="mesh")
    assert np.allclose(glb.bounds, [verts.min(0), verts.max(0)], atol=1e-4), (glb.bounds, verts.min(0))
    assert any("the foreground surface" in m for m in logs)
    assert (Path(cfg.out_dir) / "heldout_view.png").is_file()


def test_blender_scene_is_unchanged(tmp_path):
    """An object on a background (a Blender scene) trains as before: the cube [-bound, bound]^3 as its box, the
    cameras as the Blender loader gives them, no background model, no scene-space line."""
    from pipelines.core.datasets import load_blender
    from pipelines.core.sdf_setup import load_sdf_scene
    from pipelines.volsdf import EXAMPLE_SCENES

    class Ctx:
        out_dir = tmp_path

    cfg = _cfg("", tmp_path, steps=3, eval_views=1)
    gen = load_sdf_scene(cfg, Ctx(), EXAMPLE_SCENES[cfg.field])
    logs = []
    try:
        while True:
            logs.append(next(gen))
    except StopIteration as stop:
        scene, half = stop.value
    assert scene.space == "object" and (half == cfg.bound).all()
    truth = load_blender(EXAMPLE_SCENES["neural"], "train", cfg.downscale, cfg.max_views, 1.0)
    assert torch.equal(scene.train.c2w, truth.c2w)
    assert not any(isinstance(e, Log) and e.message.startswith("scene space") for e in logs)
    events = []
    done = run_to_completion(run(cfg), on_event=events.append)
    messages = [e.message for e in events if isinstance(e, Log)]
    assert not any("background model" in m or "SDF's box" in m for m in messages)
    assert np.isfinite(done.metrics["psnr"])
