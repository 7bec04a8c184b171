"""Training data of the embedded Point-E tier: coloured surface samples of open 3D models, with renders, captions
and their precomputed conditioning.

    python -m pipelines pointe data build [--root .data/pointe] [--sources sh3d,pybullet] [--points 4096]
                                          [--views 4] [--workers N] [--limit N] [--stretch-copies K]
    python -m pipelines pointe data pack  [--root .data/pointe] [--scorer DIR]
    python -m pipelines pointe data shrink [--data .data/pointe/pointe.npz] [--points 2048] [--out ...]
    python -m pipelines pointe data renders [--data .data/pointe/pointe.npz] [--root .data/pointe] [--out ...]

``build`` reads the meshes of the other builders (``mesh_library``: Debian's ``sweethome3d-furniture``, CC0 /
CC-BY 3.0, and ``pybullet_data``'s named objects, zlib) through the embedded priors' catalog
(``priors_data.priors_catalog``: no doors or staircases), so the train / test split by shape id
(``ShapeSource.split``) is theirs. Per shape it writes ``shapes/<id>.npz`` + ``.json``:

* ``points`` (N, 3) float32 uniform over the surface, in the canonical frame (z-up, box centred, longest side 1:
  Point-E's units, xyz in [-0.5, 0.5]) and ``colors`` (N, 3) uint8, the albedo at each point (the part's
  texture at its UV, else its material colour: what the renders show before shading);
* ``rgba`` (V, 64, 64, 4) renders, their azimuth / elevation, and the captions, from ``priors_data.render_shape``
  (the embedded priors' cameras, lights and caption phrasings);
* ``occupancy`` (R^3 bits) by space carving (``core.shapes``), the inside test of the SDF model's targets.

The build is parallel and restartable (each ``.npz`` is written whole, last). ``pack`` writes ``pointe.npz``,
what a GPU machine carries (about 9 KB a shape): xyz quantised to uint8 (steps of 1/255 of the extent, well under
the 1 % of the F1 threshold) as byte planes of Z-curve code differences (``encode_points``: they compress to
less than half), colours in the same order, the occupancy bits, and the conditioning computed here on the CPU
so training needs neither the meshes nor the text encoder: the embedded scorer's unit image embedding of every
render (on white, ``image_condition``, as ``point_e_embedded.ScorerEncoder`` does at run time) and its unit
text embedding of every caption, both int8; the held-out shapes' renders travel too (for the quality bench), and
every shape's renders on white (``renders``, (S, V, 64, 64, 3) uint8, about 4.3 MB compressed for 799 shapes x 4
views): the grid base computes its image grids from them at training time (``pointe_batches.attach_grid``).
``renders`` adds them to a pack written before.
``load_pack`` reads it back with numpy and torch only.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .mesh_library import FURNITURE_DIR, Parts, ShapeSource, load_parts
from . import priors_data
from .priors_data import priors_catalog
from .shape_builds import add_build_arguments, build_shapes, built_records, sources_problem, spread, with_copies
from ..core.priors.prior_folder import sha256_file
from ..core.shape_packs import credits_markdown

if TYPE_CHECKING:  # the annotations only: functions import torch where they use it
    import torch

DEFAULT_ROOT = Path(".data/pointe")
RESOLUTION = 32
"""Side of the occupancy grid over [-0.5, 0.5]^3."""


# ------------------------------------------------------------------------------------------- sampling
def texture_lookup(tex: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear (Ht, Wt, 3) texture lookup at (N, 2) UVs (wrapped; v up), as ``render_parts`` samples it."""
    h, w = tex.shape[:2]
    uv = uv % 1.0
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx
    bottom = tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def sample_coloured_surface(parts: Parts, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform over the surface (faces by area, uniform barycentrics) and their albedo.

    Returns:
        (n, 3) float32 points and (n, 3) float32 colours in [0, 1].
    """
    tri = parts.verts[parts.faces]  # (F, 3, 3)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if not area.sum() > 0:
        raise ValueError("the mesh has no area")
    face = rng.choice(len(area), n, p=area / area.sum())
    u = rng.random((n, 2))
    su = np.sqrt(u[:, 0])
    w = np.stack([1 - su, su * (1 - u[:, 1]), su * u[:, 1]], 1)  # (n, 3) barycentrics
    points = (w[:, :, None] * tri[face]).sum(1)
    part = parts.face_part[face]
    colors = parts.colors[part].astype(np.float64)
    for k, tex in enumerate(parts.textures):
        sel = part == k
        if tex is not None and sel.any():
            uv = (w[sel, :, None] * parts.uv[parts.faces[face[sel]]]).sum(1)
            colors[sel] = texture_lookup(tex, uv)
    return points.astype(np.float32), np.clip(colors, 0, 1).astype(np.float32)


def carved_occupancy(parts: Parts, resolution: int = RESOLUTION) -> np.ndarray:
    """(R, R, R) bool over [-0.5, 0.5]^3: space carving united with the surface's cells (``core.shapes``)."""
    import torch

    from ..core.shapes import CarvedVolume, carving_cameras, occupancy_grid

    verts, faces = torch.from_numpy(parts.verts).float(), torch.from_numpy(parts.faces)
    with torch.no_grad():
        carve = CarvedVolume(verts, faces, carving_cameras(16, size=2 * resolution))  # as 32 at 96 px here, 3x faster
        return occupancy_grid(verts, faces, resolution, carve=carve).numpy()


def render_loaded(src: ShapeSource, parts: Parts, views: int, size: int, ssaa: int) -> dict:
    """``priors_data.render_shape`` (its cameras, lights and captions) on a mesh already loaded: it would load it
    again through its module's ``load_parts``, a third of a shape's build time."""
    load = priors_data.load_parts
    priors_data.load_parts = lambda _src: parts
    try:
        return priors_data.render_shape(src, views, size, ssaa)
    finally:
        priors_data.load_parts = load


def build_one(src: ShapeSource, out_dir: Path, points: int = 4096, views: int = 4, size: int = 64, ssaa: int = 3,
              resolution: int = RESOLUTION) -> dict:
    t0 = time.perf_counter()
    parts = load_parts(src)
    rng = np.random.default_rng(int(hashlib.sha1(src.id.encode()).hexdigest()[:12], 16))
    xyz, rgb = sample_coloured_surface(parts, points, rng)
    occ = carved_occupancy(parts, resolution)
    r = render_loaded(src, parts, views, size, ssaa)
    record = dict(id=src.id, name=src.name, source=src.source, license=src.license, creator=src.creator,
                  category=src.category, split=src.split, colour=r["colour"], captions=r["captions"], views=views,
                  size=size, points=points, resolution=resolution, faces=int(len(parts.faces)),
                  seconds=round(time.perf_counter() - t0, 2))
    tmp = out_dir / f".{src.id}.tmp.npz"
    np.savez_compressed(tmp, points=xyz, colors=(rgb * 255 + 0.5).astype(np.uint8), rgba=r["rgba"],
                        azimuth=r["azimuth"], elevation=r["elevation"], occupancy=np.packbits(occ.reshape(-1)))
    (out_dir / f"{src.id}.json").write_text(json.dumps(record))
    os.replace(tmp, out_dir / f"{src.id}.npz")  # last: an .npz exists only when its shape is complete
    return record


def build(root: Path = DEFAULT_ROOT, sources: str = "sh3d,pybullet", workers: int = 1, limit: int = 0,
          furniture_dir: Path = FURNITURE_DIR, mesh_dir: str = "", shapes: list[ShapeSource] | None = None,
          log=print, stretch_copies: int = 0, **opts) -> list[dict]:
    """Builds every shape of the catalog (or ``shapes``) not built yet under ``root/shapes``, with
    ``stretch_copies`` stretched copies of each training shape; returns the records."""
    shapes = priors_catalog(sources, furniture_dir, mesh_dir) if shapes is None else shapes
    return build_shapes(root, with_copies(spread(shapes, limit), stretch_copies), build_one, opts, workers, log)


# ------------------------------------------------------------------------------------------------ pack
def morton_code(q: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 points -> (...) int64 positions along a Z-curve (bits interleaved x, y, z)."""
    code = np.zeros(q.shape[:-1], np.int64)
    for bit in range(8):
        for axis in range(3):
            code |= ((q[..., axis].astype(np.int64) >> bit) & 1) << (3 * bit + axis)
    return code


def encode_points(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) xyz in [-0.5, 0.5] -> ((3, N) uint8 byte planes of the sorted Z-curve codes' differences, the order
    of the points): uint8 steps of 1/255 of the extent, and neighbours along the curve differ in their low
    bytes only, so the planes compress to about 5 KB for 4096 points (12 KB raw)."""
    code = morton_code(np.clip(np.round((xyz + 0.5) * 255), 0, 255).astype(np.uint8))
    order = np.argsort(code, kind="stable")
    delta = np.diff(code[order], prepend=0)
    return np.stack([(delta >> (8 * k)) & 255 for k in range(3)]).astype(np.uint8), order


def decode_points(planes: np.ndarray) -> np.ndarray:
    """(..., 3, N) byte planes of ``encode_points`` -> (..., N, 3) float32 xyz in [-0.5, 0.5] (cell centres are
    k / 255 - 0.5: within 1 / 510 of the true points)."""
    p = planes.astype(np.int64)
    code = np.cumsum(p[..., 0, :] | (p[..., 1, :] << 8) | (p[..., 2, :] << 16), axis=-1)
    q = np.zeros(code.shape + (3,), np.int64)
    for bit in range(8):
        for axis in range(3):
            q[..., axis] |= ((code >> (3 * bit + axis)) & 1) << bit
    return q.astype(np.float32) / 255 - 0.5


def quantize_unit(v: np.ndarray) -> np.ndarray:
    """Unit embeddings -> int8 (x 127): 256 bytes per 256-d vector, error under 0.004 per component."""
    return np.clip(np.round(np.asarray(v, np.float32) * 127), -127, 127).astype(np.int8)


def image_condition(scorer, rgba: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, H, W, 4) uint8 straight-alpha renders -> (N, E) float32 unit image embeddings of the scorer, on white
    (the background the priors are trained and used with)."""
    import torch

    x = torch.from_numpy(np.asarray(rgba)).float() / 255
    rgb = x[..., :3] * x[..., 3:] + (1 - x[..., 3:])
    with torch.no_grad():
        return torch.cat([scorer.encode_images(rgb[i:i + batch].to(scorer.device))
                          for i in range(0, len(rgb), batch)]).cpu().numpy()


def text_condition(scorer, texts: list[str], batch: int = 512) -> np.ndarray:
    """Captions -> (N, E) float32 unit text embeddings of the scorer (the same space as ``image_condition``)."""
    return np.concatenate([scorer.encode_text(texts[i:i + batch]).cpu().numpy() for i in range(0, len(texts), batch)])


def pack(root: Path = DEFAULT_ROOT, out: Path | None = None, scorer_dir: str | None = None,
         records: list[dict] | None = None, test_views: int = 2, scorer=None) -> Path:
    """``root/pointe.npz`` (see the module docstring; ``load_pack`` in ``pointe_train`` reads it) and CREDITS.md."""
    from ..core.priors.embedded import SCORER_DIR, load_embedded_scorer

    if scorer is None:
        scorer = load_embedded_scorer("cpu", "float32", scorer_dir)
    manifest = Path(scorer_dir or SCORER_DIR) / "manifest.json"
    scorer_info = {"name": scorer.name, "image_size": scorer.image_size,
                   "manifest_sha256": sha256_file(manifest) if manifest.is_file() else ""}
    records = built_records(root) if records is None else records
    if not records:
        raise ValueError(f"no built shapes under {root}/shapes; run `python -m pipelines pointe data build` first")
    n, views = min(r["points"] for r in records), min(r["views"] for r in records)
    from ..core.priors.point_e_embedded import on_white

    xyz, rgb, occ, rgba, test_rgba, shape_caps, captions = [], [], [], [], [], [], []
    for r in records:
        with np.load(Path(root) / "shapes" / f"{r['id']}.npz") as z:
            planes, order = encode_points(z["points"][:n])
            xyz.append(planes)
            rgb.append(z["colors"][:n][order])
            occ.append(z["occupancy"])
            rgba.append(z["rgba"][:views])
        if r["split"] == "test":
            test_rgba.append(rgba[-1][:test_views])
        shape_caps.append([len(captions) + k for k in range(len(r["captions"]))])
        captions += r["captions"]
    width = max(len(c) for c in shape_caps)
    caps = np.array([c + [-1] * (width - len(c)) for c in shape_caps], np.int32)
    image_emb = image_condition(scorer, np.concatenate(rgba)).reshape(len(records), views, -1)
    text_emb = text_condition(scorer, captions)
    meta = {r["id"]: {k: r[k] for k in ("name", "source", "license", "creator", "category", "split", "colour",
                                        "captions")} for r in records}
    splits = np.array([r["split"] for r in records])
    out = Path(out) if out else Path(root) / "pointe.npz"
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez_compressed(
        tmp, xyz_planes=np.stack(xyz), rgb=np.stack(rgb), occupancy=np.stack(occ),
        resolution=np.int32(records[0]["resolution"]), image_emb=quantize_unit(image_emb),
        text_emb=quantize_unit(text_emb), shape_caps=caps, captions=np.array(captions), ids=np.array(
            [r["id"] for r in records]), splits=splits, categories=np.array([r["category"] for r in records]),
        test_rgba=np.stack(test_rgba) if test_rgba else np.zeros((0, test_views, 1, 1, 4), np.uint8),
        renders=on_white(np.stack(rgba)), scorer=np.array(json.dumps(scorer_info)),
        meta=np.array(json.dumps(meta)))
    os.replace(tmp, out)
    out.with_name("CREDITS.md").write_text(credits_markdown(meta, "Training data of the embedded Point-E models"))
    return out


def add_renders(data: str | Path, root: str | Path = DEFAULT_ROOT, out: str | Path | None = None) -> Path:
    """Adds ``renders`` (every shape's renders on white, in pack order, as many views as its embeddings) to a pack
    written before they were packed, from the built shapes under ``root/shapes``; everything else as is."""
    from ..core.priors.point_e_embedded import on_white

    data, out = Path(data), Path(out or data)
    with np.load(data) as z:
        arrays = {k: z[k] for k in z.files}
    views = arrays["image_emb"].shape[1]
    rgba = []
    for sid in arrays["ids"].tolist():
        path = Path(root) / "shapes" / f"{sid}.npz"
        if not path.is_file():
            raise ValueError(f"{path} is missing: the renders come from the built shapes (`python -m pipelines "
                             "pointe data build`)")
        with np.load(path) as z:
            rgba.append(z["rgba"][:views])
    arrays["renders"] = on_white(np.stack(rgba))
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)
    return out


def shrink(src: str | Path, out: str | Path, points: int = 2048, seed: int = 0) -> Path:
    """A copy of a pack with ``points`` of each shape's samples (a seeded uniform subset; everything else as is):
    what travels to a GPU machine when the whole pack does not fit. 2048 points keep the base model's training
    (1024 a cloud) but not the upsampler's (1024 + 3072) or the SDF's (4096)."""
    src, out = Path(src), Path(out)
    rng = np.random.default_rng(seed)
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    xyz, rgb = decode_points(arrays["xyz_planes"]), arrays["rgb"]
    if not 0 < points <= xyz.shape[1]:
        raise ValueError(f"--points must be in 1..{xyz.shape[1]} (the pack's samples a shape), not {points}")
    planes, colours = [], []
    for p, c in zip(xyz, rgb):
        keep = rng.choice(len(p), points, replace=False)
        pl, order = encode_points(p[keep])
        planes.append(pl)
        colours.append(c[keep][order])
    arrays.update(xyz_planes=np.stack(planes), rgb=np.stack(colours))
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)
    return out


@dataclass
class PointEData:
    """A loaded pack: S shapes of N points, V views, C captions, embeddings of size E, on one device."""

    xyz: "torch.Tensor"  # (S, N, 3) float32 in [-0.5, 0.5], Z-curve order
    rgb: "torch.Tensor"  # (S, N, 3) uint8
    occupancy: "torch.Tensor"  # (S, R, R, R) bool, indexed [x, y, z] over [-0.5, 0.5]^3
    image_emb: "torch.Tensor"  # (S, V, E) float32, unit
    text_emb: "torch.Tensor"  # (C, E) float32, unit
    shape_caps: "torch.Tensor"  # (S, M) int64 caption indices, -1 padded
    captions: list
    ids: list
    splits: np.ndarray
    categories: list
    test_rgba: np.ndarray  # (S_test, V', H, W, 4) uint8 renders of the held-out shapes, in pack order
    meta: dict
    scorer: dict  # the scorer that made the embeddings: name, image_size, manifest_sha256
    sha256: str
    renders: np.ndarray | None = None  # (S, V, H, W, 3) uint8 every render on white (None: a pack made before)
    grid: "torch.Tensor | None" = None  # (S, V, D, L) image grids, when ``pointe_batches.attach_grid`` made them
    grid_info: dict | None = None

    @property
    def train(self) -> np.ndarray:
        return np.flatnonzero(self.splits == "train")

    @property
    def test(self) -> np.ndarray:
        return np.flatnonzero(self.splits == "test")


def _unit(q: np.ndarray):
    import torch

    return torch.nn.functional.normalize(torch.from_numpy(q.astype(np.float32)), dim=-1)


def load_pack(path: str | Path, device="cpu") -> PointEData:
    """Reads ``pack``'s file (numpy + torch only: what a GPU machine has)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build it with `python -m pipelines pointe data build`")
    with np.load(path) as z:
        r = int(z["resolution"])
        occ = np.unpackbits(z["occupancy"], axis=-1)[:, :r ** 3].reshape(-1, r, r, r).astype(bool)
        dev = torch.device(device)
        return PointEData(
            xyz=torch.from_numpy(decode_points(z["xyz_planes"])).to(dev), rgb=torch.from_numpy(z["rgb"]).to(dev),
            occupancy=torch.from_numpy(occ).to(dev), image_emb=_unit(z["image_emb"]).to(dev),
            text_emb=_unit(z["text_emb"]).to(dev), shape_caps=torch.from_numpy(z["shape_caps"]).long().to(dev),
            captions=z["captions"].tolist(), ids=z["ids"].tolist(), splits=z["splits"],
            categories=z["categories"].tolist(), test_rgba=z["test_rgba"], meta=json.loads(str(z["meta"])),
            scorer=json.loads(str(z["scorer"])), sha256=sha256_file(path),
            renders=z["renders"] if "renders" in z.files else None)


# ------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines pointe data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="sample, render and caption every shape (restartable), then pack them")
    add_build_arguments(b, DEFAULT_ROOT)
    b.add_argument("--points", type=int, default=4096, help="surface samples per shape (default: %(default)s)")
    b.add_argument("--views", type=int, default=4, help="renders per shape (default: %(default)s)")
    b.add_argument("--size", type=int, default=64, help="render side in pixels (default: %(default)s)")
    b.add_argument("--resolution", type=int, default=RESOLUTION, help="occupancy grid side (default: %(default)s)")
    b.add_argument("--no-pack", action="store_true", help="skip writing pointe.npz")
    k = sub.add_parser("pack", help="(re)write pointe.npz from the built shapes")
    k.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    s = sub.add_parser("shrink", help="a copy of a pack with fewer points a shape (to carry to a GPU machine)")
    s.add_argument("--data", type=Path, default=DEFAULT_ROOT / "pointe.npz", help="the pack (default: %(default)s)")
    s.add_argument("--out", type=Path, default=DEFAULT_ROOT / "pointe_2048.npz", help="(default: %(default)s)")
    s.add_argument("--points", type=int, default=2048, help="samples kept a shape (default: %(default)s)")
    d = sub.add_parser("renders", help="add every shape's renders (what the grid base reads) to a pack made before")
    d.add_argument("--data", type=Path, default=DEFAULT_ROOT / "pointe.npz", help="the pack (default: %(default)s)")
    d.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the built shapes are (default: %(default)s)")
    d.add_argument("--out", type=Path, default=None, help="write here (default: over --data)")
    for a in (b, k):
        a.add_argument("--scorer", default=None, help="embedded scorer folder (default: assets/priors/clip)")
    args = p.parse_args(argv)
    if args.cmd in ("renders", "shrink"):  # both rewrite a pack made before
        if not args.data.is_file():
            print(f"error: {args.data} not found: build it with `python -m pipelines pointe data build`",
                  file=sys.stderr)
            return 2
        try:
            if args.cmd == "renders":
                path, what = add_renders(args.data, args.root, args.out), "with the renders"
            else:
                path, what = shrink(args.data, args.out, args.points), f"{args.points} points a shape"
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.2f} MiB, {what})")
        return 0
    if args.cmd == "build":
        if problem := sources_problem(args):
            print(f"error: {problem}", file=sys.stderr)
            return 2
        records = build(args.root, args.sources, args.workers, args.limit, args.furniture_dir, args.mesh_dir,
                        stretch_copies=args.stretch_copies, points=args.points, views=args.views, size=args.size,
                        resolution=args.resolution)
        if args.no_pack or not records:
            return 0 if records else 1
    path = pack(args.root, scorer_dir=args.scorer)
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB) and {path.with_name('CREDITS.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
