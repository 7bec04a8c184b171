"""Single-view reconstruction data from open 3D models, made with project code.

    python -m pipelines single_view data build [--sources sh3d,pybullet] [--workers N] [--limit N]
    python -m pipelines single_view data pack   [--root .data/single_view]
    python -m pipelines single_view data examples [--out assets/single_view]

``build`` reads openly licensed meshes (Debian's ``sweethome3d-furniture``: about 800 textured furniture
models under CC0 / CC-BY 3.0; ``pybullet_data``'s objects, zlib; or any folder of meshes), and writes per
shape ``shapes/<id>.npz``: RGBA renders from random viewpoints (azimuth uniform, elevation 5-40 deg) with
their cameras, per view a 32^3 occupancy grid, surface samples with normals, and the normalised mesh.
Shapes are split into train / test by a hash of their id, so a shape is never in both, whatever subset is
built. The build is parallel (``--workers``) and restartable (finished shapes are skipped; each file is
written whole or not at all). ``pack`` then writes ``pack/<source>.npz`` (``single_view_pack.py``): what
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
import json
import math
import os
import re
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .single_view_pack import built_records, credits_markdown, from_view, to_view, write_pack

FURNITURE_DIR = Path("/usr/share/sweethome3d/furniture")
DEFAULT_ROOT = Path(".data/single_view")
PYBULLET_OBJECTS = ("bunny.obj", "soccerball.obj", "objects/mug.obj", "table/table.obj", "torus/torus_textured.obj",
                    "jenga/jenga.obj", "domino/domino.obj", "tray/tray_textured.obj", "sphere_smooth.obj",
                    "lego/lego.obj", "toys/concave_box.obj", "toys/cylinder.obj", "toys/prism.obj",
                    "toys/shape_sorter.obj", "cube.obj")
"""Whole objects from pybullet_data (robot parts, planes and convex hulls left out), plus random_urdfs/*."""
CAMERA_RADIUS, FOV_DEG, ELEVATION_DEG = 2.2, 40.0, (5.0, 40.0)
TEST_EVERY = 10
"""About 1 shape in TEST_EVERY is held out (chosen by a hash of the shape id)."""


@dataclass
class ShapeSource:
    id: str
    name: str
    source: str  # sh3d | pybullet | folder
    license: str
    creator: str = ""
    category: str = ""
    path: str = ""  # a file, or the .sh3f archive for sh3d
    member: str = ""  # the model's path inside the archive
    rotation: list[float] = field(default_factory=list)  # sh3d modelRotation (row-major 3x3)
    size: list[float] = field(default_factory=list)  # sh3d width, depth, height (cm)

    @property
    def split(self) -> str:
        return "test" if int(hashlib.sha1(self.id.encode()).hexdigest(), 16) % TEST_EVERY == 0 else "train"


# ------------------------------------------------------------------------------------------------ catalogs
def _unescape(s: str) -> str:
    return re.sub(r"\\u([0-9a-fA-F]{4})", lambda u: chr(int(u.group(1), 16)), s).replace("\\", "")


def read_properties(text: str) -> dict[str, str]:
    """A Java ``.properties`` file (Sweet Home 3D catalogs): key=value lines, # comments, \\uXXXX escapes."""
    out, lines = {}, text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):  # continuation
            i += 1
            line = line[:-1] + lines[i].strip()
        i += 1
        if not line or line[0] in "#!":
            continue
        m = re.match(r"((?:\\.|[^=:\s\\])+)\s*[=:\s]\s*(.*)", line)
        if m:
            out[_unescape(m.group(1))] = _unescape(m.group(2))
    return out


def sh3d_catalog(path: Path, include_doors: bool = False) -> list[ShapeSource]:
    """The models of one Sweet Home 3D furniture library (``.sh3f``: a zip with a catalog and OBJ files)."""
    with zipfile.ZipFile(path) as zf:
        props = read_properties(zf.read("PluginFurnitureCatalog.properties").decode("latin-1"))
    library = props.get("name", path.stem)
    lic = props.get("license", "")
    us = " US" if "United States" in lic else ""
    lic = "CC0" if "CC-0" in path.name or "CC-0" in library else f"CC-BY 3.0{us}"
    out = []
    for key, model in props.items():
        m = re.fullmatch(r"model#(\d+)", key)
        if not m:
            continue
        n = m.group(1)
        if props.get(f"doorOrWindow#{n}") == "true" and not include_doors:
            continue
        folder = model.strip("/").rsplit("/", 1)[0]
        rot = [float(x) for x in props.get(f"modelRotation#{n}", "").split()] or []
        size = [float(props.get(f"{k}#{n}", 0) or 0) for k in ("width", "depth", "height")]
        slug = re.sub(r"[^\w\-]+", "-", folder).strip("-").lower()
        out.append(ShapeSource(id=f"sh3d-{slug}", name=props.get(f"name#{n}", slug), source="sh3d", license=lic,
                               creator=props.get(f"creator#{n}", ""), category=props.get(f"category#{n}", ""),
                               path=str(path), member=model.strip("/"), rotation=rot, size=size))
    return out


def pybullet_catalog(random_limit: int = 1000) -> list[ShapeSource]:
    try:
        import pybullet_data
    except ImportError:
        return []
    root = Path(pybullet_data.getDataPath())
    files = [root / p for p in PYBULLET_OBJECTS if (root / p).is_file()]
    files += sorted((root / "random_urdfs").glob("*/*.obj"))[:random_limit]
    return [ShapeSource(id="pybullet-" + re.sub(r"[^\w\-]+", "-", str(f.relative_to(root).with_suffix(""))).lower(),
                        name=f.stem, source="pybullet", license="zlib", creator="bullet3 / pybullet_data",
                        category="random" if "random_urdfs" in str(f) else "object", path=str(f)) for f in files]


def folder_catalog(folder: Path) -> list[ShapeSource]:
    exts = (".obj", ".glb", ".gltf", ".ply", ".off", ".stl")
    return [ShapeSource(id="mesh-" + re.sub(r"[^\w\-]+", "-", f.stem).lower(), name=f.stem, source="folder",
                        license="see source", path=str(f))
            for f in sorted(folder.iterdir()) if f.suffix.lower() in exts]


def catalog(sources: str = "sh3d,pybullet", furniture_dir: Path = FURNITURE_DIR, mesh_dir: str = "",
            random_limit: int = 1000, include_doors: bool = False) -> list[ShapeSource]:
    names = {s.strip() for s in sources.split(",") if s.strip()}
    out: list[ShapeSource] = []
    if "sh3d" in names:
        for f in sorted(Path(furniture_dir).glob("*.sh3f")):
            out += sh3d_catalog(f, include_doors)
    if "pybullet" in names:
        out += pybullet_catalog(random_limit)
    if mesh_dir:
        out += folder_catalog(Path(mesh_dir))
    seen: set[str] = set()
    return [s for s in out if not (s.id in seen or seen.add(s.id))]


# ------------------------------------------------------------------------------------------- load a shape
@dataclass
class Parts:
    """A shape as one triangle soup with per-part albedo: a texture (with per-vertex UVs) or a colour."""
    verts: np.ndarray  # (V, 3) float64, canonical frame
    faces: np.ndarray  # (F, 3) int64
    uv: np.ndarray  # (V, 2), zeros for untextured parts
    face_part: np.ndarray  # (F,) int64
    colors: np.ndarray  # (P, 3) float in [0, 1]
    textures: list  # P entries: (Ht, Wt, 3) float32 array or None


def _scene_parts(path: Path, fallback_color, max_texture: int = 256) -> Parts:
    import trimesh

    scene = trimesh.load(path, force="scene", process=False, split_object=False, group_material=True)
    verts, faces, uvs, fparts, colors, textures = [], [], [], [], [], []
    offset = 0
    for g in scene.dump(concatenate=False):
        if not isinstance(g, trimesh.Trimesh) or len(g.faces) == 0:
            continue
        v = np.asarray(g.vertices, np.float64)
        vis, tex, uv, col = g.visual, None, None, np.asarray(fallback_color, np.float32)
        mat = getattr(vis, "material", None)
        if mat is not None:
            img = getattr(mat, "image", None) or getattr(mat, "baseColorTexture", None)
            if img is not None and getattr(vis, "uv", None) is not None and len(vis.uv) == len(v):
                img = img.convert("RGB")
                img.thumbnail((max_texture, max_texture))
                tex, uv = np.asarray(img, np.float32) / 255.0, np.asarray(vis.uv, np.float64)
            diffuse = getattr(mat, "diffuse", None)
            if diffuse is None:
                diffuse = getattr(mat, "baseColorFactor", None)
            if diffuse is not None:
                col = np.asarray(diffuse, np.float32)[:3] / (255.0 if np.asarray(diffuse).max() > 1 else 1.0)
        elif getattr(vis, "kind", None) == "vertex":
            col = np.asarray(vis.vertex_colors, np.float32)[:, :3].mean(0) / 255.0
        verts.append(v)
        faces.append(np.asarray(g.faces, np.int64) + offset)
        uvs.append(uv if uv is not None else np.zeros((len(v), 2)))
        fparts.append(np.full(len(g.faces), len(colors)))
        colors.append(col)
        textures.append(tex)
        offset += len(v)
    if not verts:
        raise ValueError(f"{path.name}: no triangles")
    return Parts(np.concatenate(verts), np.concatenate(faces), np.concatenate(uvs), np.concatenate(fparts),
                 np.stack(colors), textures)


def load_parts(src: ShapeSource) -> Parts:
    """The shape's triangles and materials, in the canonical frame (z-up, box centred, longest side 1)."""
    digest = int(hashlib.sha1(src.id.encode()).hexdigest()[:6], 16)
    fallback = np.array([(digest >> 16) & 255, (digest >> 8) & 255, digest & 255], np.float32) / 255 * 0.6 + 0.3
    if src.source == "sh3d":
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(src.path) as zf:
            folder = src.member.rsplit("/", 1)[0] + "/"
            for name in zf.namelist():  # the model's folder: OBJ, MTL and textures
                if name.startswith(folder) and not name.endswith("/"):
                    dest = Path(tmp) / name[len(folder):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(zf.read(name))
            parts = _scene_parts(Path(tmp) / src.member[len(folder):], fallback)
        v = parts.verts
        if len(src.rotation) == 9:
            v = v @ np.asarray(src.rotation, np.float64).reshape(3, 3).T
        ext = v.max(0) - v.min(0)
        w, d, h = src.size
        if min(ext) > 1e-9 and w > 0 and d > 0 and h > 0:  # Sweet Home 3D stretches models to their sizes
            v = v * np.array([w, h, d]) / ext
        parts.verts = v
        y_up = True
    else:
        parts = _scene_parts(Path(src.path), fallback)
        y_up = src.source == "folder" and Path(src.path).suffix.lower() in (".glb", ".gltf")
    if y_up:
        parts.verts = parts.verts @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64).T
    lo, hi = parts.verts.min(0), parts.verts.max(0)
    if not np.all(np.isfinite(lo)) or (hi - lo).max() <= 0:
        raise ValueError(f"{src.id}: degenerate geometry")
    parts.verts = (parts.verts - (lo + hi) / 2) / (hi - lo).max()
    return parts


# ------------------------------------------------------------------------------------------------- render
def render_parts(parts: Parts, camera, light_dir, ssaa: int = 2, ambient: float = 0.4):
    """RGBA (H, W, 4) float render: per-part texture or colour x (ambient + diffuse), flat face normals."""
    import torch
    import torch.nn.functional as F

    from .core.raster import face_normals, interpolate, rasterize

    verts = torch.from_numpy(parts.verts).float()
    faces = torch.from_numpy(parts.faces)
    cam = camera.scaled(ssaa) if ssaa > 1 else camera
    frags = rasterize(verts, faces, cam)
    mask = frags.mask
    fidx = frags.face_idx.clamp_min(0)
    part = torch.from_numpy(parts.face_part)[fidx]
    albedo = torch.from_numpy(parts.colors).float()[part]
    tuv = interpolate(torch.from_numpy(parts.uv).float(), faces, frags)
    for k, tex in enumerate(parts.textures):
        sel = mask & (part == k)
        if tex is None or not bool(sel.any()):
            continue
        t = tuv[sel] % 1.0
        grid = torch.stack([t[:, 0] * 2 - 1, 1 - t[:, 1] * 2], -1)[None, None]
        img = torch.from_numpy(tex).permute(2, 0, 1)[None]
        albedo[sel] = F.grid_sample(img, grid, mode="bilinear", align_corners=False)[0, :, 0].T
    n = face_normals(verts, faces)[fidx]
    c2w = cam.c2w
    n = torch.where((n * (c2w[:3, 3] - verts[faces[fidx, 0]])).sum(-1, keepdim=True) < 0, -n, n)  # face the eye
    light = F.normalize(torch.as_tensor(light_dir, dtype=torch.float32), dim=0)
    shade = ambient + (1 - ambient) * (n * light).sum(-1, keepdim=True).clamp_min(0)
    m = mask[..., None].float()
    rgba = torch.cat([albedo * shade * m, m], -1)
    if ssaa > 1:
        rgba = F.avg_pool2d(rgba.permute(2, 0, 1)[None], ssaa)[0].permute(1, 2, 0)
    rgb = rgba[..., :3] / rgba[..., 3:].clamp_min(1e-6)  # straight alpha, as in PNG
    return torch.cat([rgb, rgba[..., 3:]], -1).clamp(0, 1)


def view_params(verts: np.ndarray, azimuth_deg: float) -> tuple[float, float, np.ndarray]:
    """(theta, scale, centre) of the view frame: p_view = scale * (R_z(theta) p - centre)."""
    theta = math.radians(-90.0 - azimuth_deg)
    c, s = math.cos(theta), math.sin(theta)
    v = verts @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T
    lo, hi = v.min(0), v.max(0)
    return theta, 1.0 / (hi - lo).max(), (lo + hi) / 2


def build_shape(src: ShapeSource, out_dir: Path, views: int = 8, size: int = 128, resolution: int = 32,
                n_points: int = 4096, ssaa: int = 2, seed: int = 0) -> dict:
    """Renders, voxelizes and samples one shape into ``out_dir/<id>.npz`` (+ ``.json``); returns its record."""
    import torch

    from .core.cameras import Camera, look_at, spherical_to_cartesian
    from .core.shapes import CarvedVolume, carving_cameras, occupancy_grid, sample_surface

    t0 = time.perf_counter()
    parts = load_parts(src)
    verts = torch.from_numpy(parts.verts).float()
    faces = torch.from_numpy(parts.faces)
    gen = torch.Generator().manual_seed(seed * 1000003 + int(hashlib.sha1(src.id.encode()).hexdigest()[:8], 16))
    u = torch.rand(views, 3, generator=gen, dtype=torch.float64)
    azim = (u[:, 0] * 360.0).numpy()
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

    points, normals = sample_surface(verts, faces, n_points, gen, return_normals=True)
    dense = sample_surface(verts, faces, max(50000, 60 * resolution ** 2), gen)
    carve = CarvedVolume(verts, faces, carving_cameras())
    params = [view_params(parts.verts, float(a)) for a in azim]
    occ = []
    for theta, scale, center in params:
        surf = to_view(dense.double().numpy(), theta, scale, center)
        grid = occupancy_grid(verts, faces, resolution, transform=lambda q: from_view(q, theta, scale, center).float(),
                              carve=carve, surface=torch.from_numpy(surf).float())
        occ.append(np.packbits(grid.numpy().reshape(-1)))
    record = dict(asdict(src), split=src.split, faces=int(len(parts.faces)), views=views, size=size,
                  resolution=resolution, seconds=round(time.perf_counter() - t0, 2))
    arrays = dict(images=images, c2w=c2ws.numpy(), fov_deg=np.float32(FOV_DEG), azimuth=azim.astype(np.float32),
                  elevation=elev.astype(np.float32), view_theta=np.array([p[0] for p in params], np.float32),
                  view_scale=np.array([p[1] for p in params], np.float32),
                  view_center=np.array([p[2] for p in params], np.float32), occupancy=np.stack(occ),
                  resolution=np.int32(resolution), points=points.numpy(), normals=normals.numpy(),
                  verts=parts.verts.astype(np.float32), faces=parts.faces.astype(np.int32))
    tmp = out_dir / f".{src.id}.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    (out_dir / f"{src.id}.json").write_text(json.dumps(record))
    os.replace(tmp, out_dir / f"{src.id}.npz")  # last: an .npz exists only when its shape is complete
    return record


# ---------------------------------------------------------------------------------------------------- CLI
def _build_one(args) -> tuple[str, str]:
    src, out_dir, opts = args
    import torch

    torch.set_num_threads(1)  # one process per core; more threads per process oversubscribe
    try:
        build_shape(src, out_dir, **opts)
        return src.id, ""
    except Exception as e:  # noqa: BLE001 - one bad model must not stop a build of hundreds
        return src.id, f"{type(e).__name__}: {e}"


def build(root: Path, sources: str = "sh3d,pybullet", workers: int = 1, limit: int = 0, furniture_dir=FURNITURE_DIR,
          mesh_dir: str = "", random_limit: int = 1000, pack: bool = True, split: str = "all", log=print,
          **opts) -> list[dict]:
    """Builds every shape not built yet under ``root/shapes`` (restartable), then the packs."""
    shapes = [s for s in catalog(sources, furniture_dir, mesh_dir, random_limit) if split in ("all", s.split)]
    if limit:  # an even spread over the catalog, so a small build still mixes libraries
        shapes = [shapes[int(i * len(shapes) / limit)] for i in range(min(limit, len(shapes)))]
    out_dir = Path(root) / "shapes"
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in shapes if not (out_dir / f"{s.id}.npz").is_file()]
    log(f"{len(shapes)} shapes selected ({sources}, split {split}), {len(shapes) - len(todo)} already built, "
        f"building {len(todo)} with {workers} worker(s)")
    failed = []
    t0 = time.perf_counter()
    jobs = [(s, out_dir, opts) for s in todo]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            results = pool.imap_unordered(_build_one, jobs)
            for i, (sid, err) in enumerate(results, 1):
                failed += [(sid, err)] if err else []
                log(f"[{i}/{len(jobs)}] {sid} {'FAILED ' + err if err else 'ok'} ({time.perf_counter() - t0:.0f}s)")
    else:
        for i, job in enumerate(jobs, 1):
            sid, err = _build_one(job)
            failed += [(sid, err)] if err else []
            log(f"[{i}/{len(jobs)}] {sid} {'FAILED ' + err if err else 'ok'} ({time.perf_counter() - t0:.0f}s)")
    (Path(root) / "failed.json").write_text(json.dumps(dict(failed), indent=1))
    wanted = {s.id for s in shapes}
    records = [r for r in built_records(root) if r["id"] in wanted]
    (Path(root) / "index.json").write_text(json.dumps(records, indent=0))
    if pack:
        for source in sorted({r["source"] for r in records}):
            path = write_pack([r for r in records if r["source"] == source], out_dir,
                              Path(root) / "pack" / f"{source}.npz")
            log(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")
    log(f"{len(records)} shapes built, {len(failed)} failed (see failed.json), {time.perf_counter() - t0:.0f}s")
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
            Image.fromarray(z["images"][0]).save(out / "examples" / f"{r['id']}.png", optimize=True)
    write_pack(train + test, Path(root) / "shapes", out / "mini.npz", size=size, n_points=2048, views=4)
    meta = {r["id"]: r for r in train + test}
    (out / "CREDITS.md").write_text(credits_markdown(meta, "Example images and the mini training set"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines single_view data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="render, voxelize and sample shapes (restartable), then pack them")
    b.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="output folder (default: %(default)s)")
    b.add_argument("--sources", default="sh3d,pybullet", help="comma list of sh3d, pybullet (default: %(default)s)")
    b.add_argument("--mesh-dir", default="", help="also every mesh file in this folder (.obj .glb .ply .off .stl)")
    b.add_argument("--furniture-dir", type=Path, default=FURNITURE_DIR, help="where the .sh3f libraries are")
    b.add_argument("--random-limit", type=int, default=1000, help="at most this many pybullet random_urdfs")
    b.add_argument("--workers", type=int, default=1, help="parallel processes (one per core)")
    b.add_argument("--limit", type=int, default=0, help="build only N shapes, spread over the catalog (0: all)")
    b.add_argument("--split", choices=("all", "train", "test"), default="all", help="build only this split's shapes")
    b.add_argument("--views", type=int, default=8, help="renders per shape")
    b.add_argument("--size", type=int, default=128, help="render side in pixels")
    b.add_argument("--resolution", type=int, default=32, help="occupancy grid side")
    b.add_argument("--points", type=int, default=4096, help="surface samples per shape")
    b.add_argument("--ssaa", type=int, default=2, help="supersampling factor of the renders")
    b.add_argument("--no-pack", action="store_true", help="skip writing pack/<source>.npz")
    k = sub.add_parser("pack", help="(re)write pack/<source>.npz from the built shapes")
    k.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    k.add_argument("--size", type=int, default=128, help="side of the cropped training images")
    e = sub.add_parser("examples", help="write the app's example images and mini training set")
    e.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    e.add_argument("--out", type=Path, default=Path("assets/single_view"))
    e.add_argument("--examples", type=int, default=6)
    e.add_argument("--mini", type=int, default=16)
    e.add_argument("--ids", default="", help="comma list of held-out shape ids to use as examples")
    args = p.parse_args(argv)
    if args.cmd == "build":
        if "sh3d" in args.sources and not any(Path(args.furniture_dir).glob("*.sh3f")):
            print(f"error: no Sweet Home 3D libraries in {args.furniture_dir}: apt-get install sweethome3d-furniture",
                  file=sys.stderr)
            return 2
        build(args.root, args.sources, args.workers, args.limit, args.furniture_dir, args.mesh_dir, args.random_limit,
              pack=not args.no_pack, split=args.split, views=args.views, size=args.size, resolution=args.resolution,
              n_points=args.points, ssaa=args.ssaa)
    elif args.cmd == "pack":
        records = built_records(args.root)
        for source in sorted({r["source"] for r in records}):
            path = write_pack([r for r in records if r["source"] == source], args.root / "shapes",
                              args.root / "pack" / f"{source}.npz", size=args.size)
            print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")
    else:
        write_examples(args.root, args.out, args.examples, args.mini, ids=args.ids)
        print(f"wrote {args.out}/examples, mini.npz, CREDITS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
