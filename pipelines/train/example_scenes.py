"""Builds the example inputs shipped in ``assets/`` from public data, with project code only.

    python -m pipelines.train.example_scenes nerf-scene [--mesh PATH] [--out assets/scenes/cow]
    python -m pipelines volsdf make-scene [--out assets/scenes/primitives]

``nerf-scene`` renders Keenan Crane's textured cow (public domain) with ``core/raster.py`` into a small
Blender-format scene (RGBA PNGs, ``transforms_train.json`` / ``transforms_val.json``) for the NeRF tab;
``make-scene`` renders VolSDF's primitives example (two boxes and a sphere) with its ground truth.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
COW_OBJ = REPO.parent / "shared/data/meshes/cow/cow.obj"

# Scene layout: the object's bounding sphere has radius BOUND_RADIUS at the origin, z up; cameras at
# CAMERA_RADIUS see it whole with FOV_DEG (asin(1.2 / 4) = 17.5 deg < 20 deg half field of view).
BOUND_RADIUS = 1.2
CAMERA_RADIUS = 4.0
FOV_DEG = 40.0
ELEVATION_DEG = (10.0, 60.0)
LIGHT_DIR = (0.4, -0.5, 1.0)  # fixed in the world, so every view sees the same (Lambertian) radiance

SCENE_README = """\
# Example NeRF scene: cow

{n_train} `train` and {n_val} `val` views, {size}x{size} RGBA PNG (transparent background), in the Blender /
NeRF-synthetic format (`transforms_*.json`: `camera_angle_x`, per-frame camera-to-world `transform_matrix`,
OpenGL axes, z up). Cameras at radius {radius} around the origin, field of view {fov} deg, random azimuths and
elevations {elev_lo}-{elev_hi} deg (seed {seed}). The mesh is scaled to a bounding sphere of radius {bound}
and lit by a fixed Lambertian light plus ambient, rendered with `pipelines/core/raster.py` at {ssaa}x
supersampling.

Regenerate with:

    python -m pipelines.train.example_scenes nerf-scene --out {out}

## Source and license

The cow model (`cow.obj`, `cow_texture.png`) is by Keenan Crane, released into the public domain:
http://www.cs.cmu.edu/~kmcrane/Projects/ModelRepository/ ("Thank you to Keenan Crane for allowing the cow
mesh model to be used freely in the public domain"; the copy used here comes from the PyTorch3D tutorials).
The images and transforms in this folder are renders of that model made by this project's code; nothing else
from third parties is in it.
"""


def load_textured_mesh(path: Path):
    """(Mesh with verts in the scene frame, texture (Ht, Wt, 3), uv (V, 2)) of a textured y-up OBJ.

    The OBJ is y-up; scenes are z-up, so (x, y, z) -> (x, -z, y). The mesh is centred on its bounding box
    and scaled so its farthest vertex lies ``BOUND_RADIUS`` from the origin.
    """
    import trimesh

    from ..config import UserInputError
    from ..core.geometry import Mesh

    if not path.is_file():
        raise UserInputError(f"mesh {path} not found; pass --mesh PATH to a textured OBJ")
    tm = trimesh.load(path, process=False, force="mesh")
    verts = np.asarray(tm.vertices, dtype=np.float64) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64).T
    verts -= (verts.min(0) + verts.max(0)) / 2
    verts *= BOUND_RADIUS / np.linalg.norm(verts, axis=1).max()
    visual = tm.visual
    image = getattr(getattr(visual, "material", None), "image", None)
    if getattr(visual, "uv", None) is None or image is None:
        raise UserInputError(f"mesh {path.name} has no UV texture; give an OBJ with vt coordinates and a map_Kd image")
    texture = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    mesh = Mesh(torch.from_numpy(verts.astype(np.float32)), torch.from_numpy(np.asarray(tm.faces, dtype=np.int64)))
    return mesh, texture, torch.from_numpy(np.asarray(visual.uv, dtype=np.float32))


def sample_poses(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 4, 4) camera-to-world looking at the origin: uniform azimuth, elevation in ``ELEVATION_DEG``."""
    from ..core.cameras import look_at, spherical_to_cartesian

    u = torch.rand(n, 2, generator=generator, dtype=torch.float64).float()
    azim = (u[:, 0] * 2 - 1) * math.pi
    elev = torch.deg2rad(ELEVATION_DEG[0] + (ELEVATION_DEG[1] - ELEVATION_DEG[0]) * u[:, 1])
    return look_at(spherical_to_cartesian(CAMERA_RADIUS, elev, azim))


def write_blender_scene(out: Path, render, size: int, n_train: int, n_val: int, seed: int) -> None:
    """Renders ``n_train`` + ``n_val`` posed views into ``out`` (replaced if it exists) as RGBA PNGs and
    ``transforms_{train,val}.json``. ``render(camera) -> (premultiplied rgb (H, W, 3), alpha (H, W, 1))``."""
    from PIL import Image

    from ..core.cameras import Camera

    out = Path(out)
    gen = torch.Generator().manual_seed(seed)
    poses = {"train": sample_poses(n_train, gen), "val": sample_poses(n_val, gen)}
    fov = math.radians(FOV_DEG)
    if out.exists():
        shutil.rmtree(out)
    for split, c2ws in poses.items():
        (out / split).mkdir(parents=True)
        frames = []
        for i, c2w in enumerate(c2ws):
            with torch.no_grad():
                premul, alpha = render(Camera.from_fov(c2w, fov, size, size))
            rgb = premul / alpha.clamp_min(1e-6)  # PNG alpha is straight, not premultiplied
            rgba = torch.cat([rgb, alpha], -1).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
            Image.fromarray(rgba, "RGBA").save(out / split / f"r_{i}.png", optimize=True)
            frames.append({"file_path": f"./{split}/r_{i}",
                           "transform_matrix": [[round(float(x), 8) for x in row] for row in c2w.tolist()]})
        (out / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": fov, "frames": frames}, indent=1))


def make_nerf_scene(mesh_path: Path = COW_OBJ, out: Path = Path("assets/scenes/cow"), size: int = 100,
                    n_train: int = 40, n_val: int = 10, seed: int = 0, ssaa: int = 4) -> Path:
    """Renders the textured mesh into a Blender-format scene folder ``out`` (replaced if it exists)."""
    from ..core.raster import render_mesh

    mesh, texture, uv = load_textured_mesh(Path(mesh_path))
    light = torch.tensor(LIGHT_DIR)
    write_blender_scene(out, lambda cam: render_mesh(mesh, cam, texture=texture, uv=uv, light_dir=light,
                                                     background=0.0, ambient=0.45, ssaa=ssaa),
                        size, n_train, n_val, seed)
    (out / "README.md").write_text(SCENE_README.format(
        n_train=n_train, n_val=n_val, size=size, radius=CAMERA_RADIUS, fov=FOV_DEG, elev_lo=ELEVATION_DEG[0],
        elev_hi=ELEVATION_DEG[1], seed=seed, bound=BOUND_RADIUS, ssaa=ssaa, out=out.as_posix()))
    return out


def scene_primitives():
    """Ground truth of the primitives example: two boxes (one turned 25 degrees about z) and a sphere."""
    from ..core.sdf_primitives import Primitive

    turn = math.radians(25) / 2
    return [Primitive("box", [-0.45, -0.3, -0.2], [0.35, 0.25, 0.3], color=(0.85, 0.3, 0.25)),
            Primitive("box", [0.4, 0.35, -0.3], [0.3, 0.3, 0.2], (math.cos(turn), 0, 0, math.sin(turn)),
                      (0.25, 0.55, 0.85)),
            Primitive("sphere", [0.1, -0.25, 0.4], [0.35], color=(0.95, 0.8, 0.2))]


def make_primitive_scene(out: Path, size: int = 64, n_train: int = 24, n_val: int = 6, seed: int = 0,
                         mesh_resolution: int = 160, ssaa: int = 1) -> Path:
    """Writes the primitives example as a Blender-format scene (RGBA PNGs, transforms_train/val.json) plus
    its ground truth ``primitives.json``: the marching-cubes mesh of the union, vertex-coloured by primitive,
    rasterized by ``core/raster.py`` unlit (flat colours), with the cow scene's camera layout. ``ssaa`` 1
    samples each pixel at its centre, as the renderer's rays do, so a fit can match the images exactly
    (anti-aliased edges are matched by a wider beta, which shrinks the fitted shapes by about 2 beta)."""
    from ..core.raster import render_mesh
    from ..core.sdf import sdf_to_mesh
    from ..core.sdf_primitives import PrimitiveSDF, primitives_to_json

    truth = scene_primitives()
    with torch.no_grad():
        mesh = sdf_to_mesh(PrimitiveSDF(truth), 1.5, mesh_resolution, "cpu")
    out = Path(out)
    write_blender_scene(out, lambda cam: render_mesh(mesh, cam, background=0.0, ambient=1.0, ssaa=ssaa),
                        size, n_train, n_val, seed)
    (out / "primitives.json").write_text(json.dumps(primitives_to_json(truth, 0.0), indent=1))
    try:
        shown = out.resolve().relative_to(REPO).as_posix()
    except ValueError:
        shown = out.as_posix()
    (out / "README.md").write_text(
        f"# Example VolSDF scene: primitives\n\nTwo boxes and a sphere (ground truth in `primitives.json`: centres, "
        f"sizes as half-extents / radius, rotations (w, x, y, z), colours), {n_train} `train` and {n_val} `val` "
        f"views of {size}x{size} RGBA PNG in the Blender format, cameras as in `assets/scenes/cow` (seed {seed}). "
        f"Rendered unlit from the marching-cubes mesh ({mesh_resolution}^3) of the union by "
        f"`pipelines/core/raster.py` ({ssaa} sample(s) per pixel side); made entirely by this project's code.\n\n"
        f"Regenerate with:\n\n    python -m pipelines volsdf make-scene --out {shown}\n")
    return out


def make_scene_main(argv: list[str]) -> int:
    """``python -m pipelines volsdf make-scene [--out DIR] [--size N]``: (re)writes the primitives example."""
    ap = argparse.ArgumentParser(prog="python -m pipelines volsdf make-scene",
                                 description="render the primitives example scene (two boxes and a sphere)")
    ap.add_argument("--out", type=Path, default=Path("assets/scenes/primitives"), help="scene folder to (re)write")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    args = ap.parse_args(argv)
    folder = make_primitive_scene(args.out, args.size)
    print(f"wrote {folder} ({sum(f.stat().st_size for f in folder.rglob('*') if f.is_file()) / 1024:.0f} KiB)")
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipelines.train.example_scenes", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="asset", required=True)
    scene = sub.add_parser("nerf-scene", help="render the textured cow into a Blender-format scene")
    scene.add_argument("--mesh", type=Path, default=COW_OBJ, help="textured y-up OBJ (default: the shared cow)")
    scene.add_argument("--out", type=Path, default=Path("assets/scenes/cow"), help="scene folder to (re)write")
    scene.add_argument("--size", type=int, default=100, help="image side in pixels")
    scene.add_argument("--seed", type=int, default=0, help="seed of the camera poses")
    args = p.parse_args(argv)
    if args.asset == "nerf-scene":
        out = make_nerf_scene(args.mesh, args.out, size=args.size, seed=args.seed)
        total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"wrote {out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
