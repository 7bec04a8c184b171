"""Training data of the embedded priors: captioned multi-view renders of open 3D models, made with project code.

    python -m pipelines priors data build [--root .data/priors] [--sources sh3d,pybullet] [--views 12]
                                          [--size 64] [--workers N] [--limit N]
    python -m pipelines priors data pack  [--root .data/priors]

``build`` reads the same openly licensed meshes as the single-view builder (Debian's ``sweethome3d-furniture``,
CC0 / CC-BY 3.0; the named objects of ``pybullet_data``, zlib), with its catalog, mesh loading, normalisation and
rasterizer (``single_view_data``: nothing is written twice), and renders each shape from ``--views`` random
viewpoints (azimuth uniform, elevation -5..50 deg) as straight-alpha RGBA (training puts them on white or random
backgrounds). Each shape gets captions from its catalog name, category and dominant colour ("a red armchair",
"a wooden dining table", "a yellow duck"), in several phrasings. Shapes are split into train / test by a hash of
their id (``ShapeSource.split``), so a shape's views are never on both sides. The build is parallel and
restartable (``shapes/<id>.npz`` + ``.json``, each written whole). ``pack`` writes ``priors.npz``: what training
reads, one file that travels to a GPU machine.
"""
from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from .mesh_library import FURNITURE_DIR, ShapeSource, catalog, load_parts, render_parts
from .shape_builds import add_build_arguments, build_shapes, built_records, sources_problem, spread
from ..core.shape_packs import SOURCES_NOTE, credits_markdown

DEFAULT_ROOT = Path(".data/priors")
CAMERA_RADIUS, FOV_DEG, ELEVATION_DEG = 2.0, 40.0, (-5.0, 50.0)
EXTRA_PYBULLET = {"duck.obj": "duck"}
"""Named pybullet_data objects the single-view catalog leaves out."""
PYBULLET_NAMES = {"soccerball": "soccer ball", "torus_textured": "torus", "jenga": "jenga block",
                  "tray_textured": "tray", "sphere_smooth": "sphere", "lego": "lego brick", "concave_box": "box",
                  "shape_sorter": "shape sorter toy", "prism": "prism", "cylinder": "cylinder", "cube": "cube"}
"""Catalog stems -> the words a caption uses."""
SKIP_CATEGORIES = {"Doors and windows", "Staircases"}

# ------------------------------------------------------------------------------------------------ captions
COLOUR_WORDS = ("white", "black", "grey", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown",
                "beige")
MATERIAL_WORDS = ("wooden", "wood", "oak", "glass", "metal", "steel", "plastic", "stone", "gold", "silver",
                  "golden") + COLOUR_WORDS
TEMPLATES = ("{a} {colour} {name}", "{a} {name}", "a photo of {a} {colour} {name}", "a 3d render of {a} {colour} {name}",
             "{a} {colour} {name}{for_category}", "{colour} {name}")
"""Phrasings; {a} is the article of the word after it, {for_category} e.g. ' for the kitchen' (or '')."""
CATEGORY_PHRASES = {"Living room": " for the living room", "Kitchen": " for the kitchen", "Bedroom": " for the bedroom",
                    "Bathroom": " for the bathroom", "Office": " for the office", "Exterior": " for the garden",
                    "Lights": ", a light", "Vehicles": ", a vehicle", "Characters": ", a figure", "object": ", a toy"}


def pixel_colour_name(r: float, g: float, b: float) -> str:
    """The colour word for one shaded pixel (RGB in [0, 1]); shading darkens, so value thresholds are low."""
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    h *= 360.0
    if v < 0.13:
        return "black"
    if s < 0.2:
        return "white" if v > 0.72 else ("grey" if v > 0.25 else "black")
    if h < 15 or h >= 345:
        return "red" if v > 0.35 or s > 0.6 else "brown"
    if h < 45:
        if v < 0.6:
            return "brown"
        return "beige" if s < 0.45 else "orange"
    if h < 70:
        return "yellow" if v > 0.5 else "brown"
    if h < 165:
        return "green"
    if h < 255:
        return "blue"
    if h < 290:
        return "purple"
    return "pink" if v > 0.5 else "purple"


def dominant_colour(rgba: np.ndarray) -> tuple[str, float]:
    """(V, H, W, 4) or (H, W, 4) uint8 renders -> (the most frequent colour word of the object's pixels, its
    share of them). Pixels are quantised to 16 levels per channel first, so this is fast."""
    px = np.asarray(rgba).reshape(-1, 4)
    px = px[px[:, 3] > 127, :3]
    if len(px) == 0:
        return "grey", 0.0
    q = (px // 16).astype(np.int32)
    keys, counts = np.unique(q[:, 0] * 256 + q[:, 1] * 16 + q[:, 2], return_counts=True)
    votes: dict[str, int] = {}
    for k, c in zip(keys, counts):
        rgb = ((k // 256) * 16 + 8, ((k // 16) % 16) * 16 + 8, (k % 16) * 16 + 8)
        name = pixel_colour_name(*(x / 255.0 for x in rgb))
        votes[name] = votes.get(name, 0) + int(c)
    name = max(votes, key=votes.get)
    return name, votes[name] / len(px)


def clean_name(name: str, source: str = "sh3d") -> str:
    """Catalog name -> caption noun phrase: 'Corner sofa 2' -> 'corner sofa', 'soccerball' -> 'soccer ball'."""
    if source == "pybullet":
        name = PYBULLET_NAMES.get(name, name)
    name = name.replace("_", " ").replace("-", " ")
    name = re.sub(r"\([^)]*\)", " ", name)
    name = re.sub(r"[^A-Za-z ]+", " ", name)  # digits, units, symbols
    words = [w for w in name.lower().split() if len(w) > 1 or w == "a"]
    while words and words[-1] in ("a", "x"):
        words.pop()
    return " ".join(words) or "object"


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def captions(name: str, category: str = "", colour: str = "", source: str = "sh3d") -> list[str]:
    """Several phrasings of one shape's caption (no duplicates). A name that already says its colour or
    material ('wooden desk') is not given another; brown furniture is also called wooden."""
    noun = clean_name(name, source)
    colours = [colour] if colour else []
    if colour == "brown" and source == "sh3d" and category != "Characters":
        colours.append("wooden")
    if any(w in MATERIAL_WORDS for w in noun.split()):
        colours = []
    out: list[str] = []
    for i, template in enumerate(TEMPLATES):
        col = colours[i % len(colours)] if colours else ""
        if "{colour}" in template and not col and template != "{a} {name}":
            template = template.replace(" {colour}", "").replace("{colour} ", "")
        text = template.replace("{colour}", col).replace("{name}", noun)
        text = text.replace("{for_category}", CATEGORY_PHRASES.get(category, ""))
        while "{a}" in text:
            i_a = text.index("{a}")
            nxt = text[i_a + 4:].split(" ", 1)[0]
            text = text[:i_a] + article(nxt) + text[i_a + 3:]
        text = " ".join(text.split())
        if text not in out:
            out.append(text)
    for col in colours[1:]:  # every colour word in the plain phrasing too: "a wooden dining table"
        text = f"{article(col)} {col} {noun}"
        if text not in out:
            out.append(text)
    return out


# ------------------------------------------------------------------------------------------------- shapes
def priors_catalog(sources: str = "sh3d,pybullet", furniture_dir: Path = FURNITURE_DIR,
                   mesh_dir: str = "") -> list[ShapeSource]:
    """The single-view catalog's shapes (named pybullet objects only, no random_urdfs), plus the duck, minus doors
    and staircases."""
    shapes = [s for s in catalog(sources, furniture_dir, mesh_dir, random_limit=0)
              if s.category not in SKIP_CATEGORIES]
    if "pybullet" in sources:
        try:
            import pybullet_data

            root = Path(pybullet_data.getDataPath())
            shapes += [ShapeSource(id="pybullet-" + Path(f).stem, name=Path(f).stem, source="pybullet", license="zlib",
                                   creator="bullet3 / pybullet_data", category="object", path=str(root / f))
                       for f in EXTRA_PYBULLET if (root / f).is_file()]
        except ImportError:
            pass
    return shapes


def render_shape(src: ShapeSource, views: int = 12, size: int = 64, ssaa: int = 3, seed: int = 0) -> dict:
    """Renders one shape: RGBA (V, size, size, 4) uint8 with azimuth/elevation, and its captions."""
    import torch

    from ..core.cameras import Camera, look_at, spherical_to_cartesian

    parts = load_parts(src)
    gen = torch.Generator().manual_seed(seed * 1000003 + int(hashlib.sha1(src.id.encode()).hexdigest()[:8], 16))
    u = torch.rand(views, 3, generator=gen, dtype=torch.float64)
    azim = (u[:, 0] * 360.0).float()
    elev = (ELEVATION_DEG[0] + (ELEVATION_DEG[1] - ELEVATION_DEG[0]) * u[:, 1]).float()
    c2ws = look_at(spherical_to_cartesian(CAMERA_RADIUS, torch.deg2rad(elev), torch.deg2rad(azim)))
    images = []
    for k in range(views):
        cam = Camera.from_fov(c2ws[k], math.radians(FOV_DEG), size, size)
        side = 1.0 if u[k, 2] < 0.5 else -1.0  # light from above, to the camera's left or right
        light = c2ws[k, :3, 2] * 0.8 + c2ws[k, :3, 0] * 0.5 * side + torch.tensor([0.0, 0.0, 0.9])
        with torch.no_grad():
            images.append(render_parts(parts, cam, light, ssaa))
    rgba = (torch.stack(images) * 255 + 0.5).to(torch.uint8).numpy()
    colour, share = dominant_colour(rgba)
    caps = captions(src.name, src.category, colour, src.source)
    return dict(rgba=rgba, azimuth=azim.numpy(), elevation=elev.numpy(), colour=colour, colour_share=share,
                captions=caps)


def build_one(src: ShapeSource, out_dir: Path, views: int = 12, size: int = 64, ssaa: int = 3) -> dict:
    t0 = time.perf_counter()
    r = render_shape(src, views, size, ssaa)
    record = dict(id=src.id, name=src.name, source=src.source, license=src.license, creator=src.creator,
                  category=src.category, split=src.split, colour=r["colour"], colour_share=round(r["colour_share"], 3),
                  captions=r["captions"], views=views, size=size, seconds=round(time.perf_counter() - t0, 2))
    tmp = out_dir / f".{src.id}.tmp.npz"
    np.savez_compressed(tmp, rgba=r["rgba"], azimuth=r["azimuth"], elevation=r["elevation"])
    (out_dir / f"{src.id}.json").write_text(json.dumps(record))
    os.replace(tmp, out_dir / f"{src.id}.npz")  # last: an .npz exists only when its shape is complete
    return record


def build(root: Path = DEFAULT_ROOT, sources: str = "sh3d,pybullet", workers: int = 1, limit: int = 0,
          furniture_dir: Path = FURNITURE_DIR, mesh_dir: str = "", log=print, **opts) -> list[dict]:
    """Renders every shape not built yet under ``root/shapes`` (restartable); returns the built records."""
    shapes = spread(priors_catalog(sources, furniture_dir, mesh_dir), limit)
    return build_shapes(root, shapes, build_one, opts, workers, log)


def pack(root: Path = DEFAULT_ROOT, out: Path | None = None, records: list[dict] | None = None) -> Path:
    """``root/priors.npz``: rgba (S, V, H, W, 4) uint8, the cameras' azimuth and elevation (S, V) in degrees, ids,
    splits, and ``meta`` JSON (id -> name, license,
    creator, category, colour, captions, split), plus the credits of the shapes in it."""
    records = built_records(root) if records is None else records
    if not records:
        raise ValueError(f"no built shapes under {root}/shapes; run `python -m pipelines priors data build` first")
    views = min(r["views"] for r in records)
    rgba, azim, elev = [], [], []
    for r in records:
        with np.load(Path(root) / "shapes" / f"{r['id']}.npz") as z:
            rgba.append(z["rgba"][:views])
            azim.append(z["azimuth"][:views])
            elev.append(z["elevation"][:views])
    meta = {r["id"]: {k: r[k] for k in ("name", "source", "license", "creator", "category", "split", "colour",
                                        "captions")} for r in records}
    out = Path(out) if out else Path(root) / "priors.npz"
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez_compressed(tmp, rgba=np.stack(rgba), azimuth=np.stack(azim).astype(np.float32),
                        elevation=np.stack(elev).astype(np.float32), ids=np.array([r["id"] for r in records]),
                        splits=np.array([r["split"] for r in records]), meta=np.array(json.dumps(meta)))
    os.replace(tmp, out)
    out.with_name("CREDITS.md").write_text(credits_markdown(meta, "Training data of the embedded priors"))
    return out


def data_summary(meta: dict) -> dict:
    """What a manifest says about the data: counts per split, source and license."""
    out: dict = {"shapes": len(meta), "splits": {}, "sources": {}, "licenses": {}}
    for rec in meta.values():
        for key, val in (("splits", rec["split"]), ("sources", rec["source"]), ("licenses", rec["license"])):
            out[key][val] = out[key].get(val, 0) + 1
    out["note"] = SOURCES_NOTE
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines priors data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="render captioned views of every shape (restartable), then pack them")
    add_build_arguments(b, DEFAULT_ROOT)
    b.add_argument("--views", type=int, default=12, help="renders per shape (default: %(default)s)")
    b.add_argument("--size", type=int, default=64, help="render side in pixels (default: %(default)s)")
    b.add_argument("--ssaa", type=int, default=3, help="supersampling factor (default: %(default)s)")
    b.add_argument("--no-pack", action="store_true", help="skip writing priors.npz")
    k = sub.add_parser("pack", help="(re)write priors.npz from the built shapes")
    k.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = p.parse_args(argv)
    if args.cmd == "build":
        if problem := sources_problem(args):
            print(f"error: {problem}", file=sys.stderr)
            return 2
        records = build(args.root, args.sources, args.workers, args.limit, args.furniture_dir, args.mesh_dir,
                        views=args.views, size=args.size, ssaa=args.ssaa)
        if args.no_pack or not records:
            return 0 if records else 1
    path = pack(args.root)
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB) and {path.with_name('CREDITS.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
