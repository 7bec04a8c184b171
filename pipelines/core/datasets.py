"""Posed images in Blender/NeRF-synthetic format, and safe handling of uploaded scene folders and zips.

Contract: ``open_scene`` turns a folder or an uploaded ``.zip`` into a folder holding ``transforms_*.json``
(or one ``transforms.json``), writing only inside ``work_dir``; ``scene_splits`` names its (train, held-out)
splits; ``load_blender`` loads one split as ``PosedImages``: float images in [0, 1] composited on the
background, camera-to-world matrices in OpenGL axes (x right, y up, looking down -z) and pixel intrinsics.
Anything wrong with a person's files raises ``UserInputError`` naming the file and what to do about it.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from ..config import UserInputError
from .cameras import Camera

HOLDOUT = "holdout"
"""Held-out split of a scene with a single frame list (``transforms.json`` or only ``transforms_train.json``)."""
HOLD_EVERY = 8
"""In such scenes every 8th frame (0, 8, 16, ...) is held out, as in the LLFF/mip-NeRF protocol."""

# Upload limits: declared sizes are checked before extraction, written bytes are counted during it.
MAX_ZIP_TOTAL_BYTES = 2 << 30
MAX_ZIP_ENTRIES = 20_000
MAX_COMPRESSION_RATIO = 200
RATIO_CHECK_MIN_BYTES = 1 << 20  # small entries (json, tiny PNGs) may compress well; only big ones are checked
# Image limits: a decoded image is a float tensor in memory, so keep each one and the whole split bounded.
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = 64_000_000
MAX_SPLIT_PIXELS = 400_000_000  # after downscaling; 400 MP of RGB float32 is about 4.8 GB

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_TRANSFORMS = re.compile(r"transforms(_\w+)?\.json")


@dataclass
class PosedImages:
    """One split of a scene: N images of one size with their cameras."""

    images: torch.Tensor  # (N, H, W, 3) float32 in [0, 1], composited on the background colour
    alphas: torch.Tensor | None  # (N, H, W, 1) float32, or None when no image has an alpha channel
    c2w: torch.Tensor  # (N, 4, 4) float32 camera-to-world, OpenGL axes
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    names: list[str]  # image file paths relative to the scene folder, for messages
    intrinsics: torch.Tensor | None = None  # (N, 4) fx, fy, cx, cy per view when they differ (else fx.. hold all)
    bounds: torch.Tensor | None = None  # (N, 2) near, far scene depth per view when the capture gives them (LLFF)

    def camera(self, i: int) -> Camera:
        if self.intrinsics is not None:
            fx, fy, cx, cy = (float(v) for v in self.intrinsics[i])
            return Camera(self.c2w[i], fx, fy, cx, cy, self.width, self.height)
        return Camera(self.c2w[i], self.fx, self.fy, self.cx, self.cy, self.width, self.height)

    def __len__(self) -> int:
        return int(self.images.shape[0])


# ----------------------------------------------------------------------------------------------------------
# Scenes: folders and zips


def _transforms_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _TRANSFORMS.fullmatch(p.name))


def open_scene(source: str | Path, work_dir: Path) -> Path:
    """The folder of a scene given as a folder or as a ``.zip`` upload.

    Args:
        source: a folder holding ``transforms_*.json``, or a zip of one (the json may sit at the top of the
            zip or one folder down, as when a person zips the scene folder itself).
        work_dir: a folder this run owns; a zip is extracted into ``work_dir / "scene"`` and nothing is
            written anywhere else.

    Returns:
        The folder that holds the ``transforms_*.json`` files.
    """
    source = Path(source)
    if source.is_dir():
        if not _transforms_files(source):
            raise UserInputError(f"scene folder {source.name!r} has no transforms_train.json (or transforms.json); "
                                 "choose the folder that holds the Blender-format transforms_*.json files")
        return source
    if not source.is_file():
        raise UserInputError(f"scene {source.name!r} does not exist; give a scene folder or a .zip of one")
    dest = Path(work_dir) / "scene"
    _extract_zip(source, dest)
    return _find_scene_root(dest, source.name)


def _find_scene_root(dest: Path, upload: str) -> Path:
    if _transforms_files(dest):
        return dest
    found = [d for d in sorted(dest.iterdir()) if d.is_dir() and _transforms_files(d)]
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(d.name for d in found)
        raise UserInputError(f"{upload}: several scenes in one zip ({names}); upload one scene per zip")
    raise UserInputError(f"{upload}: no transforms_train.json (or transforms.json) at the top of the zip or one "
                         "folder down; zip a Blender-format scene folder (transforms_*.json + images)")


def _unsafe_entry_reason(info: zipfile.ZipInfo) -> str | None:
    """Why a zip entry must not be extracted, or None when it is a plain file or folder inside the zip."""
    name = info.filename.replace("\\", "/")
    if "\x00" in name:
        return "has a NUL byte in its name"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "points outside the zip's folder ('..')"
    kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0  # Unix mode; 0: unknown
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file"
    return None


def _extract_zip(upload: Path, dest: Path) -> None:
    """Extracts ``upload`` into ``dest`` (replacing it), refusing unsafe entries and zip bombs."""
    try:
        zf = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserInputError(f"{upload.name} is not a readable .zip ({exc}); upload a scene folder zipped "
                             "with a standard zip tool") from None
    with zf:
        infos = [i for i in zf.infolist()
                 if not (i.filename.startswith("__MACOSX/") or PurePosixPath(i.filename).name.startswith("._"))]
        if len(infos) > MAX_ZIP_ENTRIES:
            raise UserInputError(f"{upload.name} has {len(infos)} entries (limit {MAX_ZIP_ENTRIES}); "
                                 "upload only the transforms_*.json files and their images")
        total = 0
        for info in infos:
            reason = _unsafe_entry_reason(info)
            if reason:
                raise UserInputError(f"{upload.name}: entry {info.filename!r} {reason}; re-zip the scene folder "
                                     "with plain files only")
            total += info.file_size
            if (info.file_size > RATIO_CHECK_MIN_BYTES
                    and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1)):
                raise UserInputError(f"{upload.name}: entry {info.filename!r} expands {info.file_size} bytes from "
                                     f"{info.compress_size} (more than {MAX_COMPRESSION_RATIO}x): not a scene of "
                                     "images; upload the scene's own files")
        if total > MAX_ZIP_TOTAL_BYTES:
            raise UserInputError(f"{upload.name} expands to {total / 2**20:.1f} MiB (limit "
                                 f"{MAX_ZIP_TOTAL_BYTES / 2**20:.0f} MiB); downscale the images or upload fewer views")

        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        root = dest.resolve()
        written = 0
        for info in infos:
            target = (dest / info.filename.replace("\\", "/")).resolve()
            if target != root and root not in target.parents:  # belt and braces over _unsafe_entry_reason
                raise UserInputError(f"{upload.name}: entry {info.filename!r} points outside the zip's folder")
            try:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    # Count what is really written: the declared sizes in a crafted zip can lie.
                    entry_bytes = 0
                    while chunk := src.read(1 << 20):
                        entry_bytes += len(chunk)
                        written += len(chunk)
                        if entry_bytes > info.file_size or written > MAX_ZIP_TOTAL_BYTES:
                            raise UserInputError(f"{upload.name}: entry {info.filename!r} expands beyond its "
                                                 "declared size; the zip is corrupt or hostile, re-zip the scene")
                        dst.write(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError,
                    RuntimeError) as exc:
                raise UserInputError(f"{upload.name}: entry {info.filename!r} cannot be extracted ({exc}); "
                                     "re-zip the scene with a standard zip tool (no encryption)") from None


def _layout(root: Path) -> tuple[Path | None, dict[str, Path]]:
    """(single frame list or None, {split: json}) of a scene folder."""
    files = {p.name: p for p in _transforms_files(root)}
    splits = {name[len("transforms_"):-len(".json")]: p for name, p in files.items() if name != "transforms.json"}
    if "train" in splits and ("val" in splits or "test" in splits):
        return None, splits
    if "transforms.json" in files:
        return files["transforms.json"], splits
    if "train" in splits:
        return splits["train"], splits
    return None, splits


def scene_splits(root: str | Path) -> tuple[str, str]:
    """(train split, held-out split) of a scene folder.

    ``transforms_train.json`` with ``transforms_val.json`` (else ``transforms_test.json``) gives
    ('train', 'val'); a scene with one frame list (``transforms.json``, or ``transforms_train.json`` alone)
    gives ('train', 'holdout'): ``load_blender`` then holds out every ``HOLD_EVERY``-th frame.
    """
    root = Path(root)
    single, splits = _layout(root)
    if single is not None:
        return "train", HOLDOUT
    if "train" in splits:
        return "train", "val" if "val" in splits else "test"
    raise UserInputError(f"scene folder {root.name!r} has no transforms_train.json or transforms.json; "
                         "a Blender-format scene needs one of them")


def _split_frames(root: Path, split: str) -> tuple[Path, dict, list[dict]]:
    """(json path, json contents, frames of the split)."""
    single, splits = _layout(root)
    if single is not None and split in ("train", HOLDOUT, "all"):
        meta = _read_json(single)
        frames = meta["frames"]
        if split == "train" and len(frames) > 1:
            frames = [f for i, f in enumerate(frames) if i % HOLD_EVERY != 0]
        elif split == HOLDOUT:
            frames = frames[::HOLD_EVERY]
        return single, meta, frames
    if split in splits:
        meta = _read_json(splits[split])
        return splits[split], meta, meta["frames"]
    have = sorted(set(splits) | ({"train", HOLDOUT, "all"} if single is not None else set()))
    raise UserInputError(f"scene {root.name!r} has no transforms_{split}.json "
                         f"(splits here: {', '.join(have) or 'none'})")


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path.name} is not valid JSON ({exc}); fix or re-export it") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise UserInputError(f"{path.name} has no 'frames' list; a Blender-format transforms file needs "
                             "'camera_angle_x' and a non-empty 'frames' list")
    return meta


# ----------------------------------------------------------------------------------------------------------
# Frames: cameras, intrinsics and images


def _pose(frame: object, where: str) -> np.ndarray:
    """A frame's validated (4, 4) rigid camera-to-world matrix."""
    m = frame.get("transform_matrix") if isinstance(frame, dict) else None
    try:
        arr = np.array(m, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (4, 4) or not np.isfinite(arr).all():
        raise UserInputError(f"{where}: 'transform_matrix' must be a 4x4 list of finite numbers")
    rot = arr[:3, :3]
    if (np.abs(rot.T @ rot - np.eye(3)).max() > 1e-3 or abs(np.linalg.det(rot) - 1.0) > 1e-3
            or np.abs(arr[3] - [0, 0, 0, 1]).max() > 1e-6):
        raise UserInputError(f"{where}: 'transform_matrix' is not a rigid camera-to-world transform (its 3x3 "
                             "rotation must be orthonormal with determinant 1, last row 0 0 0 1); scaled, "
                             "mirrored or sheared poses are not supported")
    return arr


def _number(meta: dict, key: str, where: str, lo: float, hi: float) -> float | None:
    """meta[key] as a float in (lo, hi), None when absent."""
    if key not in meta:
        return None
    v = meta[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo < v < hi:
        raise UserInputError(f"{where}: {key!r} must be a number between {lo} and {hi}, got {v!r}")
    return float(v)


def _intrinsics(meta: dict, where: str, width: int, height: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels of the loaded images, from Blender or instant-ngp keys.

    ``camera_angle_x`` (radians) gives fx; instant-ngp's ``fl_x``/``fl_y``/``cx``/``cy`` override it. They
    refer to ``w`` x ``h`` when given, so images resized since are handled by scaling.
    """
    angle_x = _number(meta, "camera_angle_x", where, 0.0, math.pi)
    angle_y = _number(meta, "camera_angle_y", where, 0.0, math.pi)
    w = _number(meta, "w", where, 0, 1e6) or width
    h = _number(meta, "h", where, 0, 1e6) or height
    fx = _number(meta, "fl_x", where, 0, 1e9)
    fy = _number(meta, "fl_y", where, 0, 1e9)
    if fx is None and angle_x is not None:
        fx = 0.5 * w / math.tan(0.5 * angle_x)
    if fy is None and angle_y is not None:
        fy = 0.5 * h / math.tan(0.5 * angle_y)
    if fx is None:
        fx = fy
    if fx is None:
        raise UserInputError(f"{where}: missing 'camera_angle_x' (horizontal field of view in radians) or 'fl_x'")
    fy = fx if fy is None else fy
    cx = _number(meta, "cx", where, -1e6, 1e6)
    cy = _number(meta, "cy", where, -1e6, 1e6)
    cx, cy = (w / 2.0 if cx is None else cx), (h / 2.0 if cy is None else cy)
    sx, sy = width / w, height / h
    return fx * sx, fy * sy, cx * sx, cy * sy


def _image_path(root: Path, frame: object, where: str) -> Path:
    rel = frame.get("file_path") if isinstance(frame, dict) else None
    if not isinstance(rel, str) or not rel.strip():
        raise UserInputError(f"{where}: missing 'file_path' (an image path relative to the json, like './train/r_0')")
    rel_posix = rel.replace("\\", "/")
    norm = os.path.normpath(rel_posix)
    if (rel_posix.startswith("/") or re.match(r"[A-Za-z]:", rel_posix) or "\x00" in rel_posix
            or norm == ".." or norm.startswith("../")):
        raise UserInputError(f"{where}: file_path {rel!r} points outside the scene folder; use paths relative "
                             "to the json, inside its folder")
    path = root / norm
    if path.is_file():
        return path
    # Blender exports leave the extension off ("./train/r_0"); NeRF-synthetic images are PNGs.
    for suffix in _IMAGE_SUFFIXES:
        cand = path.with_name(path.name + suffix)
        if cand.is_file():
            return cand
    raise UserInputError(f"{where}: image {rel!r} not found in the scene folder (tried {path.name} and "
                         f"{path.name}.png); add the image or fix file_path")


def _load_image(path: Path, name: str, downscale: int) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
    """((h, w, 3) premultiplied RGB, (h, w, 1) alpha or None, full width, full height) at 1/downscale."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size  # read from the header, before decoding anything
            if max(w, h) > MAX_IMAGE_SIDE or w * h > MAX_IMAGE_PIXELS:
                raise UserInputError(f"image {name} is {w}x{h}, over the {MAX_IMAGE_SIDE} px / "
                                     f"{MAX_IMAGE_PIXELS // 10**6} MP limit; downscale the images before uploading")
            has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
            arr = np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    except UserInputError:
        raise
    except Exception as exc:  # PIL raises many types for truncated or foreign files
        why = str(exc).replace(str(path), name)  # no server paths in messages
        raise UserInputError(f"image {name} cannot be decoded ({type(exc).__name__}: {why}); "
                             "replace it with a PNG or JPEG") from None
    x = torch.from_numpy(arr.copy()).float().div_(255.0)
    if has_alpha:
        x[..., :3] *= x[..., 3:]  # premultiply so area averaging does not bleed hidden colours into edges
    if downscale > 1:
        x = torch.nn.functional.avg_pool2d(x.permute(2, 0, 1)[None], downscale)[0].permute(1, 2, 0)
    if not has_alpha:
        return x, None, w, h
    return x[..., :3], x[..., 3:], w, h


def load_blender(root: str | Path, split: str, downscale: int = 1, max_views: int = 0,
                 background: float = 1.0) -> PosedImages:
    """Loads one split of a Blender/NeRF-synthetic (or instant-ngp ``transforms.json``) scene.

    Args:
        root: the scene folder (see ``open_scene``).
        split: 'train', 'val', 'test', or for a scene with one frame list 'train' / 'holdout' / 'all'
            (see ``scene_splits``).
        downscale: load at 1/N resolution by area averaging; sides are floored (W // N) and the intrinsics
            scaled to match, so a pixel centre still maps to the same ray.
        max_views: keep at most this many frames, evenly spaced through the list (0: all).
        background: grey level that transparent pixels are composited on (1.0: white, as NeRF-synthetic).

    Returns:
        ``PosedImages`` with images (N, H, W, 3), alphas (N, H, W, 1) or None, c2w (N, 4, 4).
    """
    root = Path(root)
    downscale = int(downscale)
    if downscale < 1:
        raise UserInputError(f"downscale must be 1 or more, got {downscale}")
    json_path, meta, frames = _split_frames(root, split)
    if max_views and len(frames) > max_views:
        keep = np.linspace(0, len(frames) - 1, max_views).round().astype(int)
        frames = [frames[i] for i in keep]
    wheres = [f"{json_path.name} frame {i}" for i in range(len(frames))]
    poses = [_pose(f, w) for f, w in zip(frames, wheres)]
    paths = [_image_path(root, f, w) for f, w in zip(frames, wheres)]
    return load_views(root, np.stack(poses), paths, downscale, background, json_path.name,
                      lambda w, h: np.array([_intrinsics(meta, json_path.name, w, h)] * len(frames)))


def load_views(root: Path, poses: np.ndarray, paths: list[Path], downscale: int, background: float, label: str,
               intrinsics) -> PosedImages:
    """Images at ``paths`` with camera-to-world ``poses`` (N, 4, 4) (OpenGL axes) as ``PosedImages``.

    Args:
        label: the file that listed the images, for messages.
        intrinsics: ``(full_width, full_height) -> (N, 4)`` fx, fy, cx, cy in pixels of the full-size images;
            views that all share one set give scalar intrinsics, others ``PosedImages.intrinsics``.
    """
    names = [p.relative_to(root).as_posix() for p in paths]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        loaded = list(pool.map(lambda pn: _load_image(pn[0], pn[1], downscale), zip(paths, names)))
    full_w, full_h = loaded[0][2], loaded[0][3]
    for (_, _, w, h), name in zip(loaded, names):
        if (w, h) != (full_w, full_h):
            raise UserInputError(f"image {name} is {w}x{h} but {names[0]} is {full_w}x{full_h}; all images of a "
                                 "scene must have one size")
    height, width = loaded[0][0].shape[:2]
    if height == 0 or width == 0:
        raise UserInputError(f"downscale {downscale} leaves no pixels of {full_w}x{full_h} images; use a smaller one")
    if len(loaded) * height * width > MAX_SPLIT_PIXELS:
        raise UserInputError(f"{label}: {len(loaded)} images of {width}x{height} are too many pixels "
                             f"to hold in memory; raise downscale or set max_views")

    # avg_pool crops the last W % N columns (H % N rows), so a low-res pixel i spans full-res [iN, iN + N):
    # dividing the intrinsics by N keeps every pixel centre on its ray.
    k = np.asarray(intrinsics(full_w, full_h), dtype=np.float64).reshape(len(paths), 4) / downscale
    per_view = None if np.allclose(k, k[0], rtol=0, atol=1e-9) else torch.from_numpy(k).float()
    fx, fy, cx, cy = (float(v) for v in (k.mean(0) if per_view is not None else k[0]))

    rgbs = torch.stack([rgb for rgb, _, _, _ in loaded])
    alphas = None
    if any(a is not None for _, a, _, _ in loaded):
        alphas = torch.stack([a if a is not None else torch.ones_like(rgb[..., :1]) for rgb, a, _, _ in loaded])
        rgbs = rgbs + background * (1.0 - alphas)  # rgbs are premultiplied: this is "over" the background
    return PosedImages(images=rgbs.clamp_(0.0, 1.0), alphas=alphas,
                       c2w=torch.from_numpy(np.asarray(poses, dtype=np.float64)).float(), fx=fx, fy=fy, cx=cx, cy=cy,
                       width=width, height=height, names=names, intrinsics=per_view)
