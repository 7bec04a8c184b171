"""Real captures: one reader per format, all giving the Blender loader's ``PosedImages``.

Formats: ``blender`` (``transforms_train.json`` + val/test: ``datasets.load_blender``), ``nerfstudio`` /
Instant-NGP (``transforms.json``, shared or per-frame ``fl_x fl_y cx cy w h``, ``camera_model``), ``llff``
(``poses_bounds.npy`` + ``images*/``, the original LLFF/NeRF conventions), ``colmap`` (a sparse model, text or
binary), and ``images`` / ``video`` (posed by structure from motion, ``core.sfm``).

Contract: ``detect_format(folder)`` names a folder's format; ``open_capture(source, work_dir, fmt)`` turns a
folder, a safe ``.zip`` or a video into (folder or video path, format); ``read_capture(root, fmt, downscale)``
returns every frame's camera as a ``Capture`` (OpenGL camera-to-world, pixel intrinsics, distortion, LLFF bounds,
COLMAP points); ``load_split(capture, split, ...)`` loads 'train' / 'holdout' / 'all' as ``PosedImages`` (every
``HOLD_EVERY``-th frame in name order held out, as LLFF and nerfstudio do), undistorting OPENCV/RADIAL images.
Cameras are returned as the files give them; ``core.scene_space`` normalises them for training. Bad files raise
``UserInputError`` naming the file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import UserInputError
from . import colmap_io
from .datasets import (HOLD_EVERY, HOLDOUT, PosedImages, _extract_zip, _image_path, _intrinsics, _number, _pose,
                       _read_json, load_views)

FORMATS = ("auto", "blender", "nerfstudio", "llff", "colmap", "images", "video")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
WHAT = ("a Blender scene (transforms_train.json), a nerfstudio/Instant-NGP transforms.json, an LLFF capture "
        "(poses_bounds.npy + images/), a COLMAP model (sparse/0/cameras.bin or .txt + images/), a folder of photos "
        "or a video")


@dataclass
class Capture:
    """Every frame of a capture, sorted by image name, before splitting and loading pixels."""

    root: Path
    fmt: str
    label: str  # the file the cameras came from, for messages
    poses: np.ndarray  # (N, 4, 4) camera-to-world, OpenGL axes
    paths: list[Path]
    intrinsics: Callable[[int, int], np.ndarray]  # (full width, full height) -> (N, 4) fx, fy, cx, cy
    distortion: np.ndarray | None = None  # (N, 4) OpenCV k1, k2, p1, p2 (None: pinhole)
    bounds: np.ndarray | None = None  # (N, 2) near, far (LLFF)
    xyz: np.ndarray | None = None  # (P, 3) sparse points (COLMAP), in the poses' frame
    rgb: np.ndarray | None = None  # (P, 3) uint8
    folder_scale: int = 1  # the images already are 1/folder_scale of the cameras' size (LLFF images_8)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


# ----------------------------------------------------------------------------------------------------------
# Finding and opening


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def detect_format(root: Path) -> str | None:
    """The format of a scene folder, or None."""
    if (root / "transforms_train.json").is_file():
        return "blender"
    if (root / "transforms.json").is_file():
        return "nerfstudio"
    if (root / "poses_bounds.npy").is_file():
        return "llff"
    if colmap_io.find_model(root) is not None:
        return "colmap"
    if _images_in(root) or _images_in(root / "images"):
        return "images"
    if root.is_dir() and any(p.suffix.lower() in VIDEO_SUFFIXES for p in root.iterdir() if p.is_file()):
        return "video"
    return None


def _check_format(root: Path, fmt: str, name: str) -> str:
    found = detect_format(root)
    if fmt == "auto":
        if found is None:
            raise UserInputError(f"{name}: found no scene; expected {WHAT}")
        return found
    if fmt == "video":
        return fmt
    if found != fmt and not (fmt == "images" and found is not None) and not (fmt == "blender" and found == "nerfstudio"):
        raise UserInputError(f"{name} is not in the {fmt} format (it looks like {found or 'nothing known'}); "
                             f"use format 'auto' or one of: {WHAT}")
    return fmt


def open_capture(source: str | Path, work_dir: Path, fmt: str = "auto") -> tuple[Path, str]:
    """(folder, or video file, and its format) of a scene given as a folder, a ``.zip`` or a video.

    A zip is extracted safely into ``work_dir / "scene"``; its scene may sit at the top or one folder down.
    """
    if fmt not in FORMATS:
        raise UserInputError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    source = Path(source)
    if source.is_dir():
        return source, _check_format(source, fmt, f"scene folder {source.name!r}")
    if not source.is_file():
        raise UserInputError(f"scene {source.name!r} does not exist; give {WHAT}, or a .zip of one")
    suffix = source.suffix.lower()
    if suffix in VIDEO_SUFFIXES or fmt == "video":
        return source, "video"
    if suffix in IMAGE_SUFFIXES:
        raise UserInputError(f"{source.name} is a single photo; structure from motion needs a folder (or .zip) of "
                             "at least 3 overlapping photos, or a video")
    if suffix != ".zip":
        raise UserInputError(f"{source.name}: give a folder, a .zip or a video ({', '.join(VIDEO_SUFFIXES)})")
    dest = Path(work_dir) / "scene"
    _extract_zip(source, dest)
    candidates = [dest] + [d for d in sorted(dest.iterdir()) if d.is_dir() and d.name != "__MACOSX"]
    for d in candidates:
        if detect_format(d) is not None and (fmt == "auto" or detect_format(d) == fmt or fmt == "images"):
            return d, _check_format(d, fmt, source.name)
    raise UserInputError(f"{source.name}: found no scene at the top of the zip or one folder down; expected {WHAT}")


# ----------------------------------------------------------------------------------------------------------
# Readers


def read_capture(root: Path, fmt: str, downscale: int = 1) -> Capture:
    """Every frame's camera of a nerfstudio, LLFF or COLMAP capture (``downscale`` picks LLFF/COLMAP's
    ``images_N`` folder when one fits)."""
    if fmt == "nerfstudio":
        return read_nerfstudio(root)
    if fmt == "llff":
        return read_llff(root, downscale)
    if fmt == "colmap":
        return read_colmap(root, downscale)
    raise UserInputError(f"no frame reader for format {fmt!r}")


def read_nerfstudio(root: Path) -> Capture:
    json_path = root / "transforms.json"
    meta = _read_json(json_path)
    frames = sorted(meta["frames"], key=lambda f: str(f.get("file_path", "")) if isinstance(f, dict) else "")
    wheres = [f"transforms.json frame {i}" for i in range(len(frames))]
    merged = [{**meta, **f} if isinstance(f, dict) else f for f in frames]  # per-frame keys win
    poses = np.stack([_pose(f, w) for f, w in zip(frames, wheres)])
    paths = [_image_path(root, f, w) for f, w in zip(frames, wheres)]
    dist = []
    for m, w in zip(merged, wheres):
        model = str(m.get("camera_model", "OPENCV")).upper()
        if model not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            raise UserInputError(f"{w}: camera_model {model!r} is not supported (fisheye and equirectangular "
                                 "cameras need undistorting first); use OPENCV or PINHOLE frames")
        dist.append([_number(m, k, w, -10, 10) or 0.0 for k in ("k1", "k2", "p1", "p2")])
    return Capture(root, "nerfstudio", "transforms.json", poses, paths,
                   lambda w, h: np.array([_intrinsics(m, "transforms.json", w, h) for m in merged]),
                   _distortion(np.array(dist)))


def _distortion(d: np.ndarray) -> np.ndarray | None:
    return d if np.abs(d).max(initial=0.0) > 1e-9 else None


def _scaled_folder(root: Path, downscale: int) -> tuple[Path, int, list[str]]:
    """(image folder, its factor, notes): LLFF/mip-NeRF 360 keep ``images`` and downscaled ``images_N``; the
    largest N that divides ``downscale`` is used (the rest is area-averaged), else the smallest N there is."""
    found = {}
    for d in root.iterdir():
        if d.is_dir() and (d.name == "images" or (d.name.startswith("images_") and d.name[7:].isdigit())):
            if _images_in(d):
                found[1 if d.name == "images" else int(d.name[7:])] = d
    if not found:
        raise UserInputError(f"{root.name!r} has no images/ (or images_N/) folder of photos beside its cameras")
    fits = [n for n in found if downscale % n == 0]
    n = max(fits) if fits else min(found)
    notes = [] if fits else [f"using {found[n].name}/ (1/{n} size; no folder fits downscale {downscale})"]
    return found[n], n, notes


def read_llff(root: Path, downscale: int = 1) -> Capture:
    """LLFF's ``poses_bounds.npy``: per image a 3x5 [R | t | (h, w, f)] in LLFF's axes (x down, y right, z back)
    and near/far bounds, for the images in name order (as LLFF's and NeRF's ``load_llff_data``)."""
    path = root / "poses_bounds.npy"
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserInputError(f"poses_bounds.npy cannot be read ({type(exc).__name__}: {exc}); it must be an "
                             "(N, 17) float array saved with numpy") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] < 1 or not np.issubdtype(arr.dtype, np.floating) \
            or not np.isfinite(arr).all():
        raise UserInputError(f"poses_bounds.npy has shape {arr.shape} ({arr.dtype}); LLFF's is (N, 17) finite floats "
                             "(a 3x5 pose-and-hwf matrix and near/far per image)")
    folder, n, notes = _scaled_folder(root, downscale)
    paths = _images_in(folder)
    if len(paths) != len(arr):
        raise UserInputError(f"poses_bounds.npy has {len(arr)} poses but {folder.name}/ holds {len(paths)} images; "
                             "they must match one to one (in name order)")
    p = arr[:, :15].reshape(-1, 3, 5).astype(np.float64)
    bounds = arr[:, 15:].astype(np.float64)
    if (bounds <= 0).any() or (p[:, :, 4] <= 0).any():
        raise UserInputError("poses_bounds.npy: heights, widths, focal lengths and near/far bounds must be positive")
    poses = np.tile(np.eye(4), (len(arr), 1, 1))
    # LLFF's columns are (down, right, backwards); NeRF's loader swaps them to (right, up, backwards).
    poses[:, :3, 0], poses[:, :3, 1], poses[:, :3, 2], poses[:, :3, 3] = p[:, :, 1], -p[:, :, 0], p[:, :, 2], p[:, :, 3]
    for i, r in enumerate(poses[:, :3, :3]):
        if np.abs(r.T @ r - np.eye(3)).max() > 1e-3 or abs(np.linalg.det(r) - 1) > 1e-3:
            raise UserInputError(f"poses_bounds.npy: pose {i} ({paths[i].name}) is not a rotation")
    hwf = p[:, :, 4]  # the full-size images' height, width and focal length

    def intrinsics(w: int, h: int) -> np.ndarray:
        s = w / hwf[:, 1]  # image folders hold downscaled copies: scale the focal with the width
        return np.stack([hwf[:, 2] * s, hwf[:, 2] * s, np.full(len(hwf), w / 2.0), np.full(len(hwf), h / 2.0)], -1)

    return Capture(root, "llff", "poses_bounds.npy", poses, paths, intrinsics, bounds=bounds, folder_scale=n,
                   notes=notes)


def read_colmap(root: Path, downscale: int = 1) -> Capture:
    model_dir = colmap_io.find_model(root)
    if model_dir is None:
        raise UserInputError(f"{root.name!r} has no COLMAP model (cameras.bin/txt in sparse/0, sparse/ or the top)")
    model = colmap_io.read_model(model_dir)
    folder, n, notes = _scaled_folder(root, downscale) if any(
        d.is_dir() and d.name.startswith("images") for d in root.iterdir()) else (root, 1, [])
    ims = sorted(model.images.values(), key=lambda im: im.name)
    ext = "bin" if (model_dir / "cameras.bin").is_file() else "txt"
    paths = []
    for im in ims:
        path = (folder / im.name).resolve()
        if folder.resolve() not in path.parents or not path.is_file():
            raise UserInputError(f"images.{ext} lists {im.name!r}, which is not in {folder.name}/; upload the images "
                                 "with the model")
        paths.append(folder / im.name)
    k, sizes, dist = [], [], []
    for im in ims:
        cam = model.cameras[im.camera_id]
        pr = cam.params
        m = cam.model
        if m == "SIMPLE_PINHOLE":
            k.append([pr[0], pr[0], pr[1], pr[2]]), dist.append([0, 0, 0, 0])
        elif m == "PINHOLE":
            k.append(pr[:4]), dist.append([0, 0, 0, 0])
        elif m == "SIMPLE_RADIAL":
            k.append([pr[0], pr[0], pr[1], pr[2]]), dist.append([pr[3], 0, 0, 0])
        elif m == "RADIAL":
            k.append([pr[0], pr[0], pr[1], pr[2]]), dist.append([pr[3], pr[4], 0, 0])
        elif m == "OPENCV":
            k.append(pr[:4]), dist.append(pr[4:8])
        else:
            raise UserInputError(f"cameras.{ext}: camera {cam.id} is {m}, which is not supported (PINHOLE, "
                                 "SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL and OPENCV are); undistort the images first "
                                 "(colmap image_undistorter) and upload that model")
        sizes.append([cam.width, cam.height])
    k, sizes = np.array(k, dtype=np.float64), np.array(sizes, dtype=np.float64)

    def intrinsics(w: int, h: int) -> np.ndarray:
        return k * np.stack([w / sizes[:, 0], h / sizes[:, 1], w / sizes[:, 0], h / sizes[:, 1]], -1)

    poses = np.stack([colmap_io.c2w_opengl(im) for im in ims])
    return Capture(root, "colmap", f"{model_dir.name}/images.{ext}", poses, paths, intrinsics,
                   _distortion(np.array(dist, dtype=np.float64)), xyz=model.xyz, rgb=model.rgb, folder_scale=n,
                   notes=notes)


# ----------------------------------------------------------------------------------------------------------
# Splits and pixels


def split_indices(n: int, split: str, max_views: int = 0) -> np.ndarray:
    """Frames of a split: 'holdout' is every ``HOLD_EVERY``-th (0, 8, 16, ...), 'train' the rest, 'all' all."""
    idx = np.arange(n)
    if split == HOLDOUT:
        idx = idx[::HOLD_EVERY]
    elif split == "train" and n > 1:
        idx = idx[idx % HOLD_EVERY != 0]
    elif split not in ("train", "all"):
        raise UserInputError(f"unknown split {split!r} (train, {HOLDOUT} or all)")
    if max_views and len(idx) > max_views:
        idx = idx[np.linspace(0, len(idx) - 1, max_views).round().astype(int)]
    return idx


def load_split(cap: Capture, split: str, downscale: int = 1, max_views: int = 0,
               background: float = 0.0) -> PosedImages:
    """One split of a capture as ``PosedImages`` (images undistorted when the cameras have distortion)."""
    idx = split_indices(len(cap), split, max_views)
    left = max(1, int(downscale) // cap.folder_scale)
    views = load_views(cap.root, cap.poses[idx], [cap.paths[i] for i in idx], left, background, cap.label,
                       lambda w, h: cap.intrinsics(w, h)[idx])
    if cap.distortion is not None:
        for j, i in enumerate(idx):
            if np.abs(cap.distortion[i]).max() > 1e-9:
                k = views.camera(j)
                views.images[j] = undistort(views.images[j], k.fx, k.fy, k.cx, k.cy, cap.distortion[i])
    if cap.bounds is not None:
        views.bounds = torch.from_numpy(cap.bounds[idx]).float()
    return views


def undistort(image: torch.Tensor, fx: float, fy: float, cx: float, cy: float, dist) -> torch.Tensor:
    """(H, W, 3) image of an OpenCV camera (k1, k2, p1, p2) -> the pinhole image with the same intrinsics
    (each output pixel samples the distorted image where its ray lands; edges clamp)."""
    k1, k2, p1, p2 = (float(v) for v in dist)
    h, w = image.shape[:2]
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                          indexing="ij")
    x, y = (u - cx) / fx, (v - cy) / fy
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    grid = torch.stack([(xd * fx + cx) / w * 2 - 1, (yd * fy + cy) / h * 2 - 1], -1).float()[None]
    out = torch.nn.functional.grid_sample(image.permute(2, 0, 1)[None], grid, mode="bilinear",
                                          padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).clamp_(0, 1)


def horizontal_fov(views: PosedImages) -> float:
    return 2 * math.atan(0.5 * views.width / views.fx)
