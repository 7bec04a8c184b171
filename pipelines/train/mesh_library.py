"""Open 3D models for the data builders: catalogs of Debian's Sweet Home 3D furniture (CC0 / CC-BY 3.0; the
libraries of ``sweethome3d-furniture`` and the default catalog inside the program's own jar), pybullet_data's
objects (zlib), procedural furniture (CC0; ``procedural_furniture.py``), the props of the game 0 A.D. (Debian's
``0ad-data``, CC-BY-SA 3.0, Wildfire Games) or any folder of meshes,
their loading into coloured/textured parts, and rendering with the project rasterizer. Shared by the single-view
and the embedded-priors data builders.

Contract: ``catalog(sources, ...) -> list[ShapeSource]`` (with license, creator and a train/test split by a
hash of the id); ``stretched_copies(shapes, copies)``: more training shapes, each a training shape stretched
along its axes (held-out shapes are never copied, and a copy keeps its original's split); ``load_parts(src) ->
Parts`` (z-up, centred, longest side 1); ``render_parts(parts, camera, light_dir) -> (H, W, 4)`` straight-alpha
RGBA.
"""
from __future__ import annotations

import functools
import hashlib
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .mesh_formats import class_strings, read_pmd, read_properties
from .procedural_furniture import procedural_ids, procedural_mesh

FURNITURE_DIR = Path("/usr/share/sweethome3d/furniture")
PYBULLET_OBJECTS = ("bunny.obj", "soccerball.obj", "objects/mug.obj", "table/table.obj", "torus/torus_textured.obj",
                    "jenga/jenga.obj", "domino/domino.obj", "tray/tray_textured.obj", "sphere_smooth.obj",
                    "lego/lego.obj", "toys/concave_box.obj", "toys/cylinder.obj", "toys/prism.obj",
                    "toys/shape_sorter.obj", "cube.obj")
"""Whole objects from pybullet_data (robot parts, planes and convex hulls left out), plus random_urdfs/*."""
SH3D_JAR = Path("/usr/share/sweethome3d/sweethome3d.jar")
"""Sweet Home 3D itself (``apt-get install sweethome3d``): its default catalog, 100 models by eTeks (each OBJ says
CC-BY 3.0 or GPL), none of them in the ``sweethome3d-furniture`` libraries. Source ``sh3d-default``."""
SH3D_JAR_CATALOG = "com/eteks/sweethome3d/io/DefaultFurnitureCatalog.properties"
SH3D_JAR_MATERIALS = "com/eteks/sweethome3d/j3d/OBJLoader.class"
"""Its OBJ files name materials (``usemtl white``) without an MTL file: the loader's built-in library is a string
constant of this class."""
ZEROAD_ZIP = Path("/usr/share/games/0ad/mods/public/public.zip")
"""0 A.D.'s game data (``apt-get install 0ad-data``: a 1.4 GB download): its props are ``art/meshes/props/*.pmd``."""
ZEROAD_FILTER = dict(min_faces=60, size=(0.3, 6.0), min_thickness=0.1)
"""Which 0 A.D. props count as objects: at least ``min_faces`` triangles, a longest side in ``size`` game units (a
soldier is about 2; larger props are parts of buildings), the shortest side at least ``min_thickness`` of the longest
(flat cards, decals and banners left out)."""
TEST_EVERY = 10
"""About 1 shape in TEST_EVERY is held out (chosen by a hash of the shape id)."""
STRETCH_RANGE = (0.7, 1.4)
"""Scale factors of a stretched copy, drawn per axis log-uniformly from this range (before the longest side is
scaled back to 1): a wider table, a taller chair, still furniture."""


@dataclass
class ShapeSource:
    id: str
    name: str
    source: str  # sh3d | sh3d-default | pybullet | procedural | zeroad | folder
    license: str
    creator: str = ""
    category: str = ""
    path: str = ""  # a file, or the archive (.sh3f, the jar, 0 A.D.'s zip)
    member: str = ""  # the model's path inside the archive
    rotation: list[float] = field(default_factory=list)  # sh3d modelRotation (row-major 3x3)
    size: list[float] = field(default_factory=list)  # sh3d width, depth, height (cm)
    stretch: list[float] = field(default_factory=list)  # x, y, z scales of a stretched copy (canonical frame)

    @property
    def base_id(self) -> str:
        """The original shape's id (a stretched copy's id is ``<base_id>~stretch<k>``)."""
        return self.id.split("~", 1)[0]

    @property
    def split(self) -> str:  # by the original's id, so a copy is never on the other side of its original
        return "test" if int(hashlib.sha1(self.base_id.encode()).hexdigest(), 16) % TEST_EVERY == 0 else "train"


# ------------------------------------------------------------------------------------------------ catalogs
def _furniture_entries(props: dict, path: Path, source: str, license: str, include_doors: bool,
                       slug_of) -> list[ShapeSource]:
    """The models of a Sweet Home 3D catalog (``model#N``, ``name#N``, ``modelRotation#N``... keys)."""
    out = []
    for key, model in props.items():
        m = re.fullmatch(r"model#(\d+)", key)
        if not m:
            continue
        n = m.group(1)
        if props.get(f"doorOrWindow#{n}") == "true" and not include_doors:
            continue
        rot = [float(x) for x in props.get(f"modelRotation#{n}", "").split()] or []
        size = [float(props.get(f"{k}#{n}", 0) or 0) for k in ("width", "depth", "height")]
        slug = re.sub(r"[^\w\-]+", "-", slug_of(model.strip("/"))).strip("-").lower()
        out.append(ShapeSource(id=f"{source}-{slug}", name=props.get(f"name#{n}", slug), source=source,
                               license=license, creator=props.get(f"creator#{n}", ""),
                               category=props.get(f"category#{n}", ""), path=str(path), member=model.strip("/"),
                               rotation=rot, size=size))
    return out


def sh3d_catalog(path: Path, include_doors: bool = False) -> list[ShapeSource]:
    """The models of one Sweet Home 3D furniture library (``.sh3f``: a zip with a catalog and OBJ files)."""
    with zipfile.ZipFile(path) as zf:
        props = read_properties(zf.read("PluginFurnitureCatalog.properties").decode("latin-1"))
    library = props.get("name", path.stem)
    lic = props.get("license", "")
    us = " US" if "United States" in lic else ""
    lic = "CC0" if "CC-0" in path.name or "CC-0" in library else f"CC-BY 3.0{us}"
    # each model has a folder of its own, named after it
    return _furniture_entries(props, path, "sh3d", lic, include_doors, lambda m: m.rsplit("/", 1)[0])


def sh3d_default_catalog(jar: Path = SH3D_JAR, include_doors: bool = False) -> list[ShapeSource]:
    """Sweet Home 3D's default catalog, from the program's jar (``SH3D_JAR``; [] without it)."""
    if not Path(jar).is_file():
        return []
    with zipfile.ZipFile(jar) as zf:
        props = read_properties(zf.read(SH3D_JAR_CATALOG).decode("latin-1"))
    # most models share one folder: the file's name is the model's (its eight light sources share one empty model)
    shapes = _furniture_entries(props, jar, "sh3d-default", "CC-BY 3.0", include_doors,
                                lambda m: m.rsplit("/", 1)[1].rsplit(".", 1)[0])
    seen: set[str] = set()
    return [s for s in shapes if not (s.id in seen or seen.add(s.id))]


def sh3d_default_files(zf: zipfile.ZipFile, member: str) -> list[str]:
    """The jar's files a default-catalog model reads: its OBJ, then, where the OBJ names an MTL file (a model of its
    own folder), every other file directly in its folder (MTL and textures; the shared folder's icons are not read)."""
    if not re.search(r"^mtllib ", zf.read(member).decode("latin-1"), re.M):
        return [member]
    folder = member.rsplit("/", 1)[0] + "/"
    return [member] + [n for n in zf.namelist() if n.startswith(folder) and n != member and n != folder
                       and "/" not in n[len(folder):] and not n.endswith(".obj")]


def sh3d_default_materials(jar: Path = SH3D_JAR) -> str:
    """The MTL text of the materials Sweet Home 3D's OBJ loader knows without a file (``SH3D_JAR_MATERIALS``; read
    once per jar file)."""
    st = Path(jar).stat()
    return _jar_materials(str(jar), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _jar_materials(jar: str, mtime_ns: int, size: int) -> str:  # keyed by the file's state: a rewritten jar is read
    with zipfile.ZipFile(jar) as zf:
        return "\n".join(t for t in class_strings(zf.read(SH3D_JAR_MATERIALS)) if "newmtl " in t)


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


def zeroad_catalog(path: Path = ZEROAD_ZIP, min_faces: int = ZEROAD_FILTER["min_faces"],
                   size: tuple[float, float] = ZEROAD_FILTER["size"],
                   min_thickness: float = ZEROAD_FILTER["min_thickness"]) -> list[ShapeSource]:
    """0 A.D.'s props that look like objects (``ZEROAD_FILTER``; every mesh is read, about a second for 2144)."""
    if not Path(path).is_file():
        return []
    out = []
    with zipfile.ZipFile(path) as zf:
        for name in sorted(n for n in zf.namelist() if n.startswith("art/meshes/props/") and n.endswith(".pmd")):
            try:
                verts, _, faces = read_pmd(zf.read(name))
            except ValueError:
                continue
            ext = verts.max(0) - verts.min(0) if len(verts) else np.zeros(3)
            if len(faces) < min_faces or not size[0] <= ext.max() <= size[1] or ext.min() < min_thickness * ext.max():
                continue
            stem = name.rsplit("/", 1)[1].split(".", 1)[0]
            out.append(ShapeSource(id="zeroad-" + re.sub(r"[^\w\-]+", "-", stem).lower(), name=stem, source="zeroad",
                                   license="CC-BY-SA 3.0", creator="Wildfire Games (0 A.D.)", category="prop",
                                   path=str(path), member=name))
    return out


def folder_catalog(folder: Path) -> list[ShapeSource]:
    exts = (".obj", ".glb", ".gltf", ".ply", ".off", ".stl")
    return [ShapeSource(id="mesh-" + re.sub(r"[^\w\-]+", "-", f.stem).lower(), name=f.stem, source="folder",
                        license="see source", path=str(f))
            for f in sorted(folder.iterdir()) if f.suffix.lower() in exts]


def source_names(sources: str) -> set[str]:
    """The names in a comma list of shape sources."""
    return {s.strip() for s in sources.split(",") if s.strip()}


def catalog(sources: str = "sh3d,pybullet", furniture_dir: Path = FURNITURE_DIR, mesh_dir: str = "",
            random_limit: int = 1000, include_doors: bool = False, zeroad_zip: Path = ZEROAD_ZIP,
            sh3d_jar: Path = SH3D_JAR) -> list[ShapeSource]:
    names = source_names(sources)
    out: list[ShapeSource] = []
    if "sh3d" in names:
        for f in sorted(Path(furniture_dir).glob("*.sh3f")):
            out += sh3d_catalog(f, include_doors)
    if "sh3d-default" in names:
        out += sh3d_default_catalog(sh3d_jar, include_doors)
    if "pybullet" in names:
        out += pybullet_catalog(random_limit)
    if "procedural" in names:
        kinds = {i: i.split("-")[1] for i in procedural_ids()}
        out += [ShapeSource(id=i, name=k, source="procedural", license="CC0", creator="gen3d (generated)", category=k)
                for i, k in kinds.items()]
    if "zeroad" in names:
        out += zeroad_catalog(zeroad_zip)
    if mesh_dir:
        out += folder_catalog(Path(mesh_dir))
    seen: set[str] = set()
    return [s for s in out if not (s.id in seen or seen.add(s.id))]


def stretched_copies(shapes: list[ShapeSource], copies: int, seed: int = 0) -> list[ShapeSource]:
    """``copies`` stretched copies of every training shape of ``shapes`` (none of the held-out ones): scales per
    axis log-uniform in ``STRETCH_RANGE``, seeded by the id, copy number and ``seed`` (a rebuild makes the same)."""
    import dataclasses

    lo, hi = np.log(STRETCH_RANGE[0]), np.log(STRETCH_RANGE[1])
    out = []
    for s in shapes:
        if s.split != "train" or s.stretch:
            continue
        for k in range(1, copies + 1):
            rng = np.random.default_rng([seed, k, int(hashlib.sha1(s.id.encode()).hexdigest()[:8], 16)])
            scale = [round(float(np.exp(v)), 3) for v in rng.uniform(lo, hi, 3)]
            out.append(dataclasses.replace(s, id=f"{s.id}~stretch{k}", stretch=scale))
    return out


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
    digest = int(hashlib.sha1(src.base_id.encode()).hexdigest()[:6], 16)  # a copy keeps its colours
    fallback = np.array([(digest >> 16) & 255, (digest >> 8) & 255, digest & 255], np.float32) / 255 * 0.6 + 0.3
    if src.source == "procedural":
        verts, faces, material, colors = procedural_mesh(src.base_id)
        parts, y_up = Parts(verts, faces, np.zeros((len(verts), 2)), material, colors, [None, None]), False
    elif src.source in ("sh3d", "sh3d-default"):
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(src.path) as zf:
            folder = src.member.rsplit("/", 1)[0] + "/"
            obj = Path(tmp) / src.member[len(folder):]
            if src.source == "sh3d":
                root = Path(tmp).resolve()
                for name in zf.namelist():  # the model's folder: OBJ, MTL and textures
                    dest = (root / name[len(folder):]).resolve()
                    if name.startswith(folder) and not name.endswith("/") and dest.is_relative_to(root):
                        dest.parent.mkdir(parents=True, exist_ok=True)  # (a ../ or absolute member is skipped)
                        dest.write_bytes(zf.read(name))
            else:  # one folder holds them all: the OBJ, and the loader's materials where it names no MTL file
                text = zf.read(src.member).decode("latin-1")
                for name in sh3d_default_files(zf, src.member)[1:]:  # its own MTL and textures
                    (Path(tmp) / name[len(folder):]).write_bytes(zf.read(name))
                if not re.search(r"^mtllib ", text, re.M):
                    (Path(tmp) / "sh3d_default.mtl").write_text(sh3d_default_materials(Path(src.path)))
                    text = "mtllib sh3d_default.mtl\n" + text
                obj.write_text(text, encoding="latin-1")
            parts = _scene_parts(obj, fallback)
        v = parts.verts
        if len(src.rotation) == 9:
            v = v @ np.asarray(src.rotation, np.float64).reshape(3, 3).T
        ext = v.max(0) - v.min(0)
        w, d, h = src.size
        if min(ext) > 1e-9 and w > 0 and d > 0 and h > 0:  # Sweet Home 3D stretches models to their sizes
            v = v * np.array([w, h, d]) / ext
        parts.verts = v
        y_up = True
    elif src.source == "zeroad":  # untextured (its textures are chosen per actor), y up
        with zipfile.ZipFile(src.path) as zf:
            verts, uv, faces = read_pmd(zf.read(src.member))
        parts, y_up = Parts(verts, faces, uv, np.zeros(len(faces), np.int64), fallback[None], [None]), True
    else:
        parts = _scene_parts(Path(src.path), fallback)
        y_up = src.source == "folder" and Path(src.path).suffix.lower() in (".glb", ".gltf")
    if y_up:
        parts.verts = parts.verts @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64).T
    if src.stretch:
        parts.verts = parts.verts * np.asarray(src.stretch, np.float64)
    lo, hi = parts.verts.min(0), parts.verts.max(0)
    if not np.all(np.isfinite(lo)) or (hi - lo).max() <= 0:
        raise ValueError(f"{src.id}: degenerate geometry")
    parts.verts = (parts.verts - (lo + hi) / 2) / (hi - lo).max()
    return parts


# ------------------------------------------------------------------------------------------------- render
def render_parts(parts: Parts, camera, light_dir, ssaa: int = 2, ambient: float = 0.4, light_color=None):
    """RGBA (H, W, 4) float render: per-part texture or colour x (ambient + diffuse x ``light_color``, an RGB
    multiplier of the directional light; None: white), flat face normals."""
    import torch
    import torch.nn.functional as F

    from ..core.raster import face_normals, interpolate, rasterize

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
    diffuse = (n * light).sum(-1, keepdim=True).clamp_min(0)
    if light_color is not None:
        diffuse = diffuse * torch.as_tensor(light_color, dtype=torch.float32)
    shade = ambient + (1 - ambient) * diffuse
    m = mask[..., None].float()
    rgba = torch.cat([albedo * shade * m, m], -1)
    if ssaa > 1:
        rgba = F.avg_pool2d(rgba.permute(2, 0, 1)[None], ssaa)[0].permute(1, 2, 0)
    rgb = rgba[..., :3] / rgba[..., 3:].clamp_min(1e-6)  # straight alpha, as in PNG
    return torch.cat([rgb, rgba[..., 3:]], -1).clamp(0, 1)
