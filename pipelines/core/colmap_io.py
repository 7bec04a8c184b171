"""COLMAP sparse models (``cameras``, ``images``, ``points3D`` as ``.txt`` or ``.bin``): reading and writing.

Contract: ``read_model(folder)`` returns a ``ColmapModel`` (cameras by id, images by id, sparse points) from the
text or binary files in ``folder``; ``write_model(model, folder, binary)`` writes one (tests and the SfM cache use
it). Poses stay in COLMAP's convention here (world-to-camera ``qvec`` (w, x, y, z) and ``tvec``, OpenCV axes:
x right, y down, z forward); ``c2w_opengl`` turns one into the project's camera-to-world in OpenGL axes. A file
that cannot be parsed raises ``UserInputError`` naming it. Image observations (points2D) are skipped: the loaders
need poses, intrinsics and the points' positions and colours only.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import UserInputError

# id -> (name, number of parameters), as in COLMAP's src/colmap/sensor/models.h
CAMERA_MODELS = {0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
                 4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
                 8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
                 11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16)}
MODEL_IDS = {name: (i, n) for i, (name, n) in CAMERA_MODELS.items()}
MAX_ITEMS = 10_000_000  # a corrupt count must not make us allocate the world


@dataclass
class ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # (n,) float64 in the model's order (e.g. PINHOLE: fx, fy, cx, cy)


@dataclass
class ColmapImage:
    id: int
    qvec: np.ndarray  # (4,) w, x, y, z: world-to-camera rotation
    tvec: np.ndarray  # (3,) world-to-camera translation
    camera_id: int
    name: str


@dataclass
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (P, 3) float64
    rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))  # (P, 3) uint8


def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def rotmat_to_qvec(r: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> unit quaternion (w, x, y, z) with w >= 0 (Shepperd's method, stable everywhere)."""
    m = np.asarray(r, dtype=np.float64)
    k = np.array([[m[0, 0] - m[1, 1] - m[2, 2], 0, 0, 0],
                  [m[1, 0] + m[0, 1], m[1, 1] - m[0, 0] - m[2, 2], 0, 0],
                  [m[2, 0] + m[0, 2], m[2, 1] + m[1, 2], m[2, 2] - m[0, 0] - m[1, 1], 0],
                  [m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], m[0, 0] + m[1, 1] + m[2, 2]]]) / 3.0
    vals, vecs = np.linalg.eigh(k)
    q = vecs[[3, 0, 1, 2], np.argmax(vals)]
    return -q if q[0] < 0 else q


_FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])


def c2w_opengl(image: ColmapImage) -> np.ndarray:
    """(4, 4) camera-to-world in OpenGL axes (x right, y up, looking down -z) of a COLMAP image."""
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = qvec_to_rotmat(image.qvec), image.tvec
    return np.linalg.inv(w2c) @ _FLIP_YZ


def image_from_c2w(image_id: int, c2w: np.ndarray, camera_id: int, name: str) -> ColmapImage:
    """The COLMAP image (world-to-camera, OpenCV axes) of an OpenGL camera-to-world matrix."""
    w2c = np.linalg.inv(np.asarray(c2w, dtype=np.float64) @ _FLIP_YZ)
    return ColmapImage(image_id, rotmat_to_qvec(w2c[:3, :3]), w2c[:3, 3].copy(), camera_id, name)


# ----------------------------------------------------------------------------------------------------------
# Reading


def find_model(folder: Path) -> Path | None:
    """The folder holding ``cameras.bin``/``cameras.txt``: ``folder``, ``folder/sparse`` or ``folder/sparse/<n>``
    (the one with the largest ``images`` file when there are several)."""
    def has(d: Path) -> bool:
        return (d / "cameras.bin").is_file() or (d / "cameras.txt").is_file()

    for d in (folder, folder / "sparse"):
        if has(d):
            return d
    subs = [d for d in sorted((folder / "sparse").glob("*")) if d.is_dir() and has(d)]
    if not subs:
        return None
    size = lambda d: max((d / f"images.{e}").stat().st_size if (d / f"images.{e}").is_file() else 0  # noqa: E731
                         for e in ("bin", "txt"))
    return max(subs, key=size)


def read_model(folder: str | Path) -> ColmapModel:
    """Reads ``cameras``, ``images`` and (if present) ``points3D`` from ``folder``, binary first."""
    folder = Path(folder)
    binary = (folder / "cameras.bin").is_file()
    ext = "bin" if binary else "txt"
    for name in ("cameras", "images"):
        if not (folder / f"{name}.{ext}").is_file():
            raise UserInputError(f"COLMAP model in {folder.name!r} has cameras.{ext} but no {name}.{ext}; "
                                 "export the whole sparse model (cameras, images, points3D)")
    readers = (_read_cameras_bin, _read_images_bin, _read_points_bin) if binary else \
        (_read_cameras_txt, _read_images_txt, _read_points_txt)
    out = []
    for name, reader in zip(("cameras", "images", "points3D"), readers):
        path = folder / f"{name}.{ext}"
        if name == "points3D" and not path.is_file():
            out.append((np.zeros((0, 3)), np.zeros((0, 3), np.uint8)))
            continue
        try:
            out.append(reader(path))
        except UserInputError:
            raise
        except (struct.error, ValueError, IndexError, KeyError, UnicodeDecodeError, OverflowError,
                MemoryError) as exc:
            raise UserInputError(f"COLMAP file {path.name} is corrupt or not a COLMAP {name} file "
                                 f"({type(exc).__name__}: {exc}); export the model again") from None
    cameras, images, (xyz, rgb) = out
    if not images:
        raise UserInputError(f"COLMAP file images.{ext} lists no registered images")
    for im in images.values():
        if im.camera_id not in cameras:
            raise UserInputError(f"COLMAP file images.{ext}: image {im.name!r} uses camera {im.camera_id}, "
                                 f"which cameras.{ext} does not define")
    return ColmapModel(cameras, images, xyz, rgb)


def _camera(cid: int, model: str, width: int, height: int, params, where: str) -> ColmapCamera:
    if model not in MODEL_IDS:
        raise UserInputError(f"{where}: unknown camera model {model!r}")
    if len(params) != MODEL_IDS[model][1]:
        raise UserInputError(f"{where}: camera {cid} ({model}) has {len(params)} parameters, not "
                             f"{MODEL_IDS[model][1]}")
    params = np.asarray(params, dtype=np.float64)
    if not (0 < width <= 1 << 16 and 0 < height <= 1 << 16) or not np.isfinite(params).all():
        raise UserInputError(f"{where}: camera {cid} has a size {width}x{height} or parameters out of range")
    return ColmapCamera(cid, model, int(width), int(height), params)


def _data_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]


def _read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for ln in _data_lines(path):
        if not ln or ln.startswith("#"):
            continue
        e = ln.split()
        cams[int(e[0])] = _camera(int(e[0]), e[1], int(e[2]), int(e[3]), [float(v) for v in e[4:]], path.name)
    return cams


def _read_images_txt(path: Path) -> dict[int, ColmapImage]:
    lines = _data_lines(path)
    images, i = {}, 0
    while i < len(lines):
        ln = lines[i]
        i += 1
        if not ln or ln.startswith("#"):
            continue
        e = ln.split(maxsplit=9)
        if len(e) < 10:
            raise ValueError(f"line {i}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        q, t = np.array(e[1:5], dtype=np.float64), np.array(e[5:8], dtype=np.float64)
        images[int(e[0])] = _image(int(e[0]), q, t, int(e[8]), e[9], path.name)
        i += 1  # the POINTS2D line that follows (may be empty)
    return images


def _image(iid: int, q, t, cid: int, name: str, where: str) -> ColmapImage:
    if not (np.isfinite(q).all() and np.isfinite(t).all()) or np.linalg.norm(q) < 1e-8:
        raise UserInputError(f"{where}: image {name!r} has a pose that is not finite or a zero quaternion")
    return ColmapImage(iid, q / np.linalg.norm(q), t, cid, name)


def _read_points_txt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    xyz, rgb = [], []
    for ln in _data_lines(path):
        if not ln or ln.startswith("#"):
            continue
        e = ln.split()
        xyz.append([float(v) for v in e[1:4]])
        rgb.append([int(v) for v in e[4:7]])
    return np.array(xyz, dtype=np.float64).reshape(-1, 3), np.array(rgb, dtype=np.uint8).reshape(-1, 3)


class _Reader:
    def __init__(self, path: Path):
        self.data, self.pos = path.read_bytes(), 0

    def take(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals

    def count(self) -> int:
        (n,) = self.take("Q")
        if n > MAX_ITEMS:
            raise ValueError(f"count {n} is implausible")
        return n

    def string(self) -> str:
        end = self.data.index(b"\x00", self.pos)
        s = self.data[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return s


def _read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    r, cams = _Reader(path), {}
    for _ in range(r.count()):
        cid, model_id, w, h = r.take("iiQQ")
        if model_id not in CAMERA_MODELS:
            raise UserInputError(f"{path.name}: camera {cid} has unknown model id {model_id}")
        name, n = CAMERA_MODELS[model_id]
        cams[cid] = _camera(cid, name, w, h, r.take("d" * n), path.name)
    return cams


def _read_images_bin(path: Path) -> dict[int, ColmapImage]:
    r, images = _Reader(path), {}
    for _ in range(r.count()):
        iid, *qt, cid = r.take("i7di")
        name = r.string()
        n2d = r.count()
        r.pos += 24 * n2d  # x, y (double), point3D id (int64)
        if r.pos > len(r.data):
            raise ValueError("file ends inside an image's points2D")
        images[iid] = _image(iid, np.array(qt[:4]), np.array(qt[4:]), cid, name, path.name)
    return images


def _read_points_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    r = _Reader(path)
    n = r.count()
    xyz, rgb = np.zeros((n, 3)), np.zeros((n, 3), np.uint8)
    for i in range(n):
        vals = r.take("Q3d3Bd")
        xyz[i], rgb[i] = vals[1:4], vals[4:7]
        track = r.count()
        r.pos += 8 * track
        if r.pos > len(r.data):
            raise ValueError("file ends inside a point's track")
    return xyz, rgb


# ----------------------------------------------------------------------------------------------------------
# Writing


def write_model(model: ColmapModel, folder: str | Path, binary: bool = False) -> Path:
    """Writes ``cameras``, ``images`` and ``points3D`` (``.bin`` or ``.txt``) into ``folder``; returns it.
    Images get no 2D observations and points no tracks (enough for the loaders, not for bundle adjustment)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cams, imgs = sorted(model.cameras.values(), key=lambda c: c.id), sorted(model.images.values(), key=lambda i: i.id)
    if binary:
        out = bytearray(struct.pack("<Q", len(cams)))
        for c in cams:
            out += struct.pack("<iiQQ", c.id, MODEL_IDS[c.model][0], c.width, c.height)
            out += struct.pack("<" + "d" * len(c.params), *c.params)
        (folder / "cameras.bin").write_bytes(bytes(out))
        out = bytearray(struct.pack("<Q", len(imgs)))
        for im in imgs:
            out += struct.pack("<i7di", im.id, *im.qvec, *im.tvec, im.camera_id)
            out += im.name.encode("utf-8") + b"\x00" + struct.pack("<Q", 0)
        (folder / "images.bin").write_bytes(bytes(out))
        out = bytearray(struct.pack("<Q", len(model.xyz)))
        for i, (p, c) in enumerate(zip(model.xyz, model.rgb)):
            out += struct.pack("<Q3d3BdQ", i + 1, *p, *(int(v) for v in c), 0.0, 0)
        (folder / "points3D.bin").write_bytes(bytes(out))
        return folder
    fmt = lambda vals: " ".join(repr(float(v)) for v in vals)  # noqa: E731  (repr: round-trips exactly)
    lines = ["# CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]"]
    lines += [f"{c.id} {c.model} {c.width} {c.height} {fmt(c.params)}" for c in cams]
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", "# POINTS2D[] as (X, Y, POINT3D_ID)"]
    for im in imgs:
        lines += [f"{im.id} {fmt(im.qvec)} {fmt(im.tvec)} {im.camera_id} {im.name}", ""]
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# POINT3D_ID X Y Z R G B ERROR TRACK[]"]
    lines += [f"{i + 1} {fmt(p)} {' '.join(str(int(v)) for v in c)} 0.0" for i, (p, c) in
              enumerate(zip(model.xyz, model.rgb))]
    (folder / "points3D.txt").write_text("\n".join(lines) + "\n")
    return folder
