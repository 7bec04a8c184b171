"""Single-view reconstruction data from open 3D models, made with project code.

    python -m pipelines single_view data build [--sources sh3d,pybullet] [--workers N] [--limit N]
    python -m pipelines single_view data pack   [--root .data/single_view]
    python -m pipelines single_view data examples [--out assets/single_view]

``build`` reads openly licensed meshes (Debian's ``sweethome3d-furniture``: about 800 textured furniture
models under CC0 / CC-BY 3.0; ``pybullet_data``'s objects, zlib; or any folder of meshes), and writes per
shape ``shapes/<id>.npz``: RGBA renders from random viewpoints (azimuth uniform, elevation 5-40 deg) with
their cameras, per view a 32^3 occupancy grid, surface samples with normals, and the normalised mesh.

Renders (``--render``). ``default`` (the shipped model's pack): 128 px, 40 deg field of view at distance 2.2,
elevation 5-40 deg, white key light from above to the camera's side, ambient 0.4, transparent background (the
crop reads the render's alpha). ``augment`` varies, per view and seeded (``--render-seed`` and the shape id),
what other pictures vary, uniform in these training ranges: camera elevation 0-50 deg; field of view 25-55 deg;
camera distance r / (fill sin(fov / 2)) with fill 0.35-0.85 (r: the bounding-sphere radius; 2.55 r-13.2 r);
key light 0-75 deg in azimuth from the camera, 15-70 deg high, coloured (saturation 0-0.25 of a random hue);
ambient 0.25-0.60; square image side 96-256 px; JPEG quality 40-95; background plain (half the views; HSV
saturation 0-0.5, value 0.35-1) or lightly textured (plane waves of 1-6 cycles plus grain, amplitude 0.01-0.05).
The object is then found as in an upload (``object_mask`` on the decoded JPEG, then ``crop_to_object``), so
training sees the project's own crop at work. ``out-of-range`` draws every one of these settings outside the
training range (elevation 55-75, field of view 60-80, fill 0.88-0.95 (1.64 r-2.27 r), light 90-120 deg to the
side and 75-85 deg high, saturation 0.30-0.45, ambient 0.10-0.20, 64-88 px, JPEG 10-30, always textured with
amplitude 0.055-0.07 and 8-24 cycles): an evaluation split for held-out shapes (``--split test``). The table
is in ``render_variation.py``. Azimuths, and so every target, are the same in all modes for a given ``--seed``.
Shapes are split into train / test by a hash of their id, so a shape is never in both, whatever subset is
built. The build is parallel (``--workers``) and restartable (finished shapes are skipped; each file is
written whole or not at all). ``pack`` then writes ``pack/<source>.npz`` (``write_pack`` below): what
training reads, small enough to travel to a GPU machine (cropped JPEG views, occupancy bits, float16 points).

Frames. A shape's *canonical* frame is z-up with its bounding box centred and its longest side 1. Each
view has its own *view frame*: the shape turned about z so that the camera sits at azimuth -90 deg (on -y,
looking towards +y: x is the image's right), then re-centred and scaled so its box's longest side is 1.
Targets (occupancy, points) live in the view frame, so a prediction faces the way the picture does.

Occupancy: space carving. 32 depth maps from cameras above the floor (elevation >= -5 deg) mark as empty
every point some camera sees past; the cells the surface passes through are added back. Furniture meshes
are rarely watertight (open undersides, single-sided panels), which defeats ray-parity and winding-number
tests on their own; carving needs no closed surface and treats unreachable cavities as solid.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .mesh_library import FURNITURE_DIR, ShapeSource, catalog, load_parts, render_parts
from .render_variation import MODES
from .shape_builds import add_build_arguments, build_shapes, built_records, sources_problem, spread, with_copies
from ..core.shape_packs import credits_markdown, crop_to_object, from_view, to_view

DEFAULT_ROOT = Path(".data/single_view")
CAMERA_RADIUS, FOV_DEG, ELEVATION_DEG = 2.2, 40.0, (5.0, 40.0)

def view_params(verts: np.ndarray, azimuth_deg: float) -> tuple[float, float, np.ndarray]:
    """(theta, scale, centre) of the view frame: p_view = scale * (R_z(theta) p - centre)."""
    theta = math.radians(-90.0 - azimuth_deg)
    c, s = math.cos(theta), math.sin(theta)
    v = verts @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T
    lo, hi = v.min(0), v.max(0)
    return theta, 1.0 / (hi - lo).max(), (lo + hi) / 2


def build_shape(src: ShapeSource, out_dir: Path, views: int = 8, size: int = 128, resolution: int = 32,
                n_points: int = 4096, ssaa: int = 2, seed: int = 0, render: str = "default",
                render_seed: int = 0, targets_from: str = "") -> dict:
    """Renders, voxelizes and samples one shape into ``out_dir/<id>.npz`` (+ ``.json``); returns its record.
    ``render``: "default" (the shipped pack's renders), "augment" or "out-of-range" (``varied_views``; ``size``
    is then unused); the azimuths, and so the targets, are the same in every mode for a given ``seed``.
    ``targets_from``: a build root whose shape files give this shape's occupancy, points and normals when their
    first azimuths are these (the same ``seed``), instead of carving them again."""
    import torch

    from ..core.cameras import Camera, look_at, spherical_to_cartesian
    from ..core.shapes import CarvedVolume, carving_cameras, occupancy_grid, sample_surface

    t0 = time.perf_counter()
    parts = load_parts(src)
    verts = torch.from_numpy(parts.verts).float()
    faces = torch.from_numpy(parts.faces)
    gen = torch.Generator().manual_seed(seed * 1000003 + int(hashlib.sha1(src.id.encode()).hexdigest()[:8], 16))
    u = torch.rand(views, 3, generator=gen, dtype=torch.float64)
    azim = (u[:, 0] * 360.0).numpy()
    varied = {}
    if render == "default":
        elev = (ELEVATION_DEG[0] + (ELEVATION_DEG[1] - ELEVATION_DEG[0]) * u[:, 1]).numpy()
        c2ws = look_at(spherical_to_cartesian(CAMERA_RADIUS, torch.deg2rad(torch.from_numpy(elev).float()),
                                              torch.deg2rad(torch.from_numpy(azim).float())))
        images = []
        for k in range(views):
            cam = Camera.from_fov(c2ws[k], math.radians(FOV_DEG), size, size)
            # A light from above, to the camera's side (left or right at random): shading differs between views.
            side = 1.0 if u[k, 2] < 0.5 else -1.0
            light = c2ws[k, :3, 2] * 0.8 + c2ws[k, :3, 0] * 0.5 * side + torch.tensor([0.0, 0.0, 0.9])
            with torch.no_grad():
                images.append(render_parts(parts, cam, light, ssaa))
        images = (torch.stack(images) * 255 + 0.5).to(torch.uint8).numpy()
        fov = np.float32(FOV_DEG)
    else:
        varied = varied_views(parts, src.id, azim, render, render_seed, ssaa)
        images, c2ws, elev, fov = varied.pop("images"), varied.pop("c2w"), varied.pop("elevation"), varied.pop("fov_deg")

    params = [view_params(parts.verts, float(a)) for a in azim]
    reused = _reusable_targets(targets_from, src.id, azim, resolution, n_points)
    if reused is not None:
        occ, points, normals = reused
    else:
        points, normals = sample_surface(verts, faces, n_points, gen, return_normals=True)
        dense = sample_surface(verts, faces, max(50000, 60 * resolution ** 2), gen)
        carve = CarvedVolume(verts, faces, carving_cameras())
        occ = []
        for theta, scale, center in params:
            surf = to_view(dense.double().numpy(), theta, scale, center)
            grid = occupancy_grid(verts, faces, resolution,
                                  transform=lambda q: from_view(q, theta, scale, center).float(),
                                  carve=carve, surface=torch.from_numpy(surf).float())
            occ.append(np.packbits(grid.numpy().reshape(-1)))
    record = dict(asdict(src), split=src.split, faces=int(len(parts.faces)), views=views,
                  size=size if render == "default" else int(images.shape[1]), resolution=resolution, render=render,
                  render_seed=render_seed, seconds=round(time.perf_counter() - t0, 2))
    arrays = dict(images=images, c2w=c2ws.numpy(), fov_deg=fov, azimuth=azim.astype(np.float32),
                  elevation=elev.astype(np.float32), view_theta=np.array([p[0] for p in params], np.float32),
                  view_scale=np.array([p[1] for p in params], np.float32),
                  view_center=np.array([p[2] for p in params], np.float32), occupancy=np.stack(occ),
                  resolution=np.int32(resolution), points=np.asarray(points), normals=np.asarray(normals),
                  verts=parts.verts.astype(np.float32), faces=parts.faces.astype(np.int32), **varied)
    tmp = out_dir / f".{src.id}.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    (out_dir / f"{src.id}.json").write_text(json.dumps(record))
    os.replace(tmp, out_dir / f"{src.id}.npz")  # last: an .npz exists only when its shape is complete
    return record


def _reusable_targets(root: str, shape_id: str, azim: np.ndarray, resolution: int, n_points: int):
    """(occupancy, points, normals) of ``shape_id`` from another build under ``root`` made with the same azimuths
    (its first views), or None."""
    path = Path(root) / "shapes" / f"{shape_id}.npz" if root else None
    if path is None or not path.is_file():
        return None
    with np.load(path) as z:
        v = len(azim)
        if (len(z["azimuth"]) < v or not np.array_equal(z["azimuth"][:v], azim.astype(np.float32))
                or int(z["resolution"]) != resolution or len(z["points"]) != n_points or "normals" not in z.files):
            return None
        return z["occupancy"][:v], z["points"], z["normals"]


def varied_views(parts, shape_id: str, azimuths, mode: str, render_seed: int, ssaa: int = 2) -> dict:
    """Renders of one shape at ``azimuths`` with settings drawn per view from ``render_variation.RANGES[mode]``
    (seeded by ``render_seed`` and the shape id), each "photographed" (background, JPEG) and masked as an upload.

    Returns arrays for the shape file: ``images`` (V, N, N, 4) uint8 with N the range's largest side, each view in
    its top-left ``image_sizes[k]`` square (alpha: ``object_mask``; the padding is transparent, so
    ``crop_to_object`` sees it as the white it composites onto anyway), ``c2w``, ``elevation``, ``fov_deg`` and
    ``distance`` per view, ``mask_box_iou`` (the mask's box against the render's alpha), ``render_alpha`` (the
    render's own alpha, for ``write_pack(alpha="render")``) and ``render_settings`` (JSON list of each view's
    ``ViewSettings``)."""
    import torch

    from ..core.cameras import Camera
    from .render_variation import camera_and_light, camera_distance, draw_settings, photograph, ranges_for, view_rng

    ranges = ranges_for(mode)
    rng = view_rng(render_seed, shape_id, mode)
    radius = float(np.linalg.norm(parts.verts, axis=1).max())  # about the box centre, the look-at point
    side = ranges.image_size[1]
    images = np.zeros((len(azimuths), side, side, 4), np.uint8)
    render_alpha = np.zeros((len(azimuths), side, side), np.uint8)
    c2ws, settings, ious = [], [], []
    for k, azimuth in enumerate(azimuths):
        s = draw_settings(ranges, rng)
        c2w, fov, light, color = camera_and_light(s, float(azimuth), radius)
        cam = Camera.from_fov(c2w, fov, s.image_size, s.image_size)
        with torch.no_grad():
            rgba = render_parts(parts, cam, light, ssaa, ambient=s.ambient, light_color=color)
        photo, s, iou = photograph(rgba.numpy(), s, ranges, rng)
        images[k, :s.image_size, :s.image_size] = photo
        render_alpha[k, :s.image_size, :s.image_size] = (rgba[..., 3].numpy() * 255 + 0.5).astype(np.uint8)
        c2ws.append(c2w)
        settings.append(s)
        ious.append(iou)
    return dict(images=images, c2w=torch.stack(c2ws), elevation=np.array([s.elevation_deg for s in settings]),
                fov_deg=np.array([s.fov_deg for s in settings], np.float32),
                distance=np.array([camera_distance(s, radius) for s in settings], np.float32),
                image_sizes=np.array([s.image_size for s in settings], np.int32),
                mask_box_iou=np.array(ious, np.float32), render_alpha=render_alpha,
                render_settings=np.array(json.dumps([s.as_dict() for s in settings])))


# ---------------------------------------------------------------------------------------------------- CLI
def build(root: Path, sources: str = "sh3d,pybullet", workers: int = 1, limit: int = 0, furniture_dir=FURNITURE_DIR,
          mesh_dir: str = "", random_limit: int = 1000, pack: bool = True, split: str = "all", log=print,
          stretch_copies: int = 0, **opts) -> list[dict]:
    """Builds every shape not built yet under ``root/shapes`` (restartable), then the packs; with
    ``stretch_copies`` also that many stretched copies of each training shape selected."""
    shapes = [s for s in catalog(sources, furniture_dir, mesh_dir, random_limit) if split in ("all", s.split)]
    render = opts.get("render", "default")
    if mixed := sorted({r.get("render", "default") for r in built_records(root)} - {render}):
        raise ValueError(f"{root} holds shapes rendered with --render {', '.join(mixed)}: build --render {render} "
                         "into another --root")
    copies = f", {stretch_copies} stretched copies of each training shape" if stretch_copies > 0 else ""
    records = build_shapes(root, with_copies(spread(shapes, limit), stretch_copies), build_shape, opts, workers, log,
                           f" selected ({sources}, split {split}{copies})")
    (Path(root) / "index.json").write_text(json.dumps(records, indent=0))
    if pack:
        for source in sorted({r["source"] for r in records}):
            path = write_pack([r for r in records if r["source"] == source], Path(root) / "shapes",
                              Path(root) / "pack" / f"{source}.npz")
            log(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")
    return records


def write_examples(root: Path, out: Path, n_examples: int = 6, n_mini: int = 16, size: int = 128,
                   ids: str = "") -> None:
    """The app's example inputs (raw RGBA renders of held-out shapes) and a mini training pack."""
    from PIL import Image

    records = built_records(root)
    chosen = [i.strip() for i in ids.split(",") if i.strip()]
    test = [r for r in records if r["split"] == "test" and (not chosen or r["id"] in chosen)][:n_examples]
    train = [r for r in records if r["split"] == "train"][:n_mini]
    (out / "examples").mkdir(parents=True, exist_ok=True)
    for old in (out / "examples").glob("*.png"):
        old.unlink()
    for r in test:
        with np.load(Path(root) / "shapes" / f"{r['id']}.npz") as z:
            n = int(z["image_sizes"][0]) if "image_sizes" in z.files else z["images"].shape[1]
            Image.fromarray(z["images"][0][:n, :n]).save(out / "examples" / f"{r['id']}.png", optimize=True)
    write_pack(train + test, Path(root) / "shapes", out / "mini.npz", size=size, n_points=2048, views=4)
    meta = {r["id"]: r for r in train + test}
    (out / "CREDITS.md").write_text(credits_markdown(meta, "Example images and the mini training set"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines single_view data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="render, voxelize and sample shapes (restartable), then pack them")
    add_build_arguments(b, DEFAULT_ROOT)
    b.add_argument("--random-limit", type=int, default=1000, help="at most this many pybullet random_urdfs")
    b.add_argument("--split", choices=("all", "train", "test"), default="all", help="build only this split's shapes")
    b.add_argument("--views", type=int, default=8, help="renders per shape")
    b.add_argument("--size", type=int, default=128, help="render side in pixels")
    b.add_argument("--resolution", type=int, default=32, help="occupancy grid side")
    b.add_argument("--points", type=int, default=4096, help="surface samples per shape")
    b.add_argument("--ssaa", type=int, default=2, help="supersampling factor of the renders")
    b.add_argument("--render", choices=MODES, default="default",
                   help="default: the shipped pack's renders; augment: lighting, lens, framing, elevation, size, "
                        "JPEG and background drawn per view from the training ranges; out-of-range: outside them, "
                        "for evaluation; out-of-range:GROUP: only that group outside (render_variation.py states "
                        "the ranges)")
    b.add_argument("--render-seed", type=int, default=0, help="seed of the per-view draws of --render")
    b.add_argument("--targets-from", default="", metavar="ROOT",
                   help="reuse occupancy and samples of the shapes built under ROOT whose first views have these "
                        "azimuths (checked) instead of carving them again: other renders of the same views")
    b.add_argument("--no-pack", action="store_true", help="skip writing pack/<source>.npz")
    k = sub.add_parser("pack", help="(re)write pack/<source>.npz from the built shapes")
    k.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    k.add_argument("--size", type=int, default=128, help="side of the cropped training images")
    k.add_argument("--alpha", choices=("mask", "render"), default="mask",
                   help="crop varied renders by the upload-style mask (default) or by the render's own alpha")
    k.add_argument("--out", type=Path, default=None, help="pack folder (default: ROOT/pack)")
    e = sub.add_parser("examples", help="write the app's example images and mini training set")
    e.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    e.add_argument("--out", type=Path, default=Path("assets/single_view"))
    e.add_argument("--examples", type=int, default=6)
    e.add_argument("--mini", type=int, default=16)
    e.add_argument("--ids", default="", help="comma list of held-out shape ids to use as examples")
    args = p.parse_args(argv)
    if args.cmd == "build":
        if problem := sources_problem(args):
            print(f"error: {problem}", file=sys.stderr)
            return 2
        try:
            build(args.root, args.sources, args.workers, args.limit, args.furniture_dir, args.mesh_dir,
                  args.random_limit, pack=not args.no_pack, split=args.split, views=args.views, size=args.size,
                  resolution=args.resolution, n_points=args.points, ssaa=args.ssaa, render=args.render,
                  render_seed=args.render_seed, targets_from=args.targets_from, stretch_copies=args.stretch_copies)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    elif args.cmd == "pack":
        records = built_records(args.root)
        for source in sorted({r["source"] for r in records}):
            path = write_pack([r for r in records if r["source"] == source], args.root / "shapes",
                              (args.out or args.root / "pack") / f"{source}.npz", size=args.size, alpha=args.alpha)
            print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")
    else:
        write_examples(args.root, args.out, args.examples, args.mini, ids=args.ids)
        print(f"wrote {args.out}/examples, mini.npz, CREDITS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ------------------------------------------------------------------------------------------ packing
def _jpeg(rgb, quality: int = 92) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((rgb.numpy() * 255 + 0.5).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_pack(records: list[dict], shapes_dir: Path, out: Path, size: int = 128, n_points: int = 2048,
               views: int = 0, alpha: str = "mask") -> Path:
    """One training file for these shapes: cropped JPEG views, occupancy bits, float16 surface points and their
    normals (canonical frame) with each view's frame parameters. ``alpha="render"``: varied renders are cropped
    with the render's own alpha instead of the upload-style mask (to tell crop failures from the rest)."""
    ids, jpegs, occ, pts, nrm, params = [], [], [], [], [], []
    for rec in records:
        with np.load(shapes_dir / f"{rec['id']}.npz") as z:
            v = len(z["images"]) if not views else min(views, len(z["images"]))
            images = z["images"][:v]
            if alpha == "render" and "render_alpha" in z.files:
                images = np.concatenate([images[..., :3], z["render_alpha"][:v, ..., None]], -1)
            crops = [crop_to_object(images[k], size) for k in range(v)]
            if any(c is None for c in crops):
                continue
            ids.append(rec["id"])
            jpegs += [_jpeg(c) for c in crops]
            occ.append(z["occupancy"][:v])
            pts.append(z["points"][:n_points].astype(np.float16))
            nrm.append(z["normals"][:n_points].astype(np.float16))
            params.append(np.concatenate([z["view_theta"][:v, None], z["view_scale"][:v, None],
                                          z["view_center"][:v]], 1))
    if not ids:
        raise ValueError(f"no shapes to pack into {out}")
    lengths = np.array([len(b) for b in jpegs], np.int64)
    meta = {r["id"]: {k: r[k] for k in ("name", "source", "license", "creator", "category", "split")}
            for r in records if r["id"] in set(ids)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez_compressed(tmp, ids=np.array(ids), splits=np.array([meta[i]["split"] for i in ids]),
             sources=np.array([meta[i]["source"] for i in ids]), jpeg=np.frombuffer(b"".join(jpegs), np.uint8),
             jpeg_offsets=np.concatenate([[0], np.cumsum(lengths)]), occupancy=np.stack(occ), points=np.stack(pts),
             normals=np.stack(nrm),
             view_params=np.stack(params).astype(np.float32), resolution=np.int32(records[0]["resolution"]),
             meta=np.array(json.dumps(meta)))
    os.replace(tmp, out)
    return out
