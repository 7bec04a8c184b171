"""Structure from motion for photos and videos, through pycolmap (COLMAP in-process; optional dependency).

Contract: ``reconstruct(source, kind, cache_root, ...)`` is a generator of ``Log``/``Progress`` events (one per
phase, named: "structure from motion: matching features, phase 3/4"; a video's frames counted as they are kept) that
returns a folder in COLMAP layout (``images/`` and ``sparse/0``) for ``captures.read_colmap``. ``source`` is a
folder of photos (``kind='images'``) or a video file (``kind='video'``: frames sampled evenly, the sharpest of each
stretch kept, blurry ones dropped, at most ``max_images``). Matching is sequential for videos (neighbouring frames)
and exhaustive for photos; mapping is COLMAP's incremental mapper; the largest model is kept. Results are cached
under ``cache_root`` by a hash of the upload's bytes and the settings, so a second run on the same upload skips all
of it. A Stop (``events.cancellable``) cancels COLMAP's current phase through its own cancellation token. Too few
registered images, a video without frames, unreadable files: ``UserInputError`` with what to try.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ..config import UserInputError
from ..events import Event, Log, Progress, cancel_flag, check_cancelled

PYCOLMAP_HINT = ("structure from motion needs pycolmap: pip install pycolmap==4.2.1 (binary wheels for Linux, macOS "
                 "and Windows, Python 3.10+); or upload a dataset that already has cameras (COLMAP, LLFF, nerfstudio)")
MIN_REGISTERED = 3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
PHASES = ("reading the images", "extracting features", "matching features", "mapping")
FRAMES_KEPT = "structure from motion: video frames kept"


def phase(k: int) -> Progress:
    """Phase ``k`` (0-based) of ``PHASES`` starting, as the status shows it: "structure from motion: mapping, phase
    4/4" (the counter counts phases, not features or images)."""
    return Progress(k + 1, len(PHASES), stage=f"structure from motion: {PHASES[k]}, phase")


def have_pycolmap() -> bool:
    import importlib

    try:
        importlib.import_module("pycolmap")
    except ImportError:
        return False
    return True


def _hash(source: Path, *settings) -> str:
    h = hashlib.sha256(repr(settings).encode())
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for f in files:
        h.update(f.relative_to(source).as_posix().encode() if f != source else b"")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:20]


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian (a standard blur measure: low for blurry or flat images)."""
    g = gray.astype(np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def _fit(img, max_side: int):
    from PIL import Image

    if max(img.size) > max_side:
        s = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.LANCZOS)
    return img


def _gray_small(img) -> np.ndarray:
    return np.asarray(_fit(img, 256).convert("L"))


def prepare_photos(folder: Path, dest: Path, max_images: int, max_side: int) -> list[str]:
    """Photos of ``folder`` (or its ``images/``) as RGB JPEGs (PNGs stay PNG) of at most ``max_side`` pixels in
    ``dest``; when there are more than ``max_images``, evenly spaced ones in name order."""
    from PIL import Image, ImageOps

    src = folder / "images" if not _photos(folder) and _photos(folder / "images") else folder
    paths = _photos(src)
    if len(paths) > max_images:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, max_images).round().astype(int)]
    dest.mkdir(parents=True, exist_ok=True)
    names, first = [], None
    for i, p in enumerate(paths):
        check_cancelled()
        try:
            with Image.open(p) as img:
                img = _fit(ImageOps.exif_transpose(img).convert("RGB"), max_side)
        except Exception as exc:  # PIL raises many types for truncated or foreign files
            raise UserInputError(f"photo {p.name} cannot be decoded ({type(exc).__name__}); remove it or replace "
                                 "it with a PNG or JPEG") from None
        if first is None:
            first = (p.name, img.size)
        elif img.size != first[1]:  # one camera, one orientation: NeRF trains on images of one size
            raise UserInputError(f"photo {p.name} is {img.size[0]}x{img.size[1]} after resizing but {first[0]} is "
                                 f"{first[1][0]}x{first[1][1]}; use photos from one camera held one way (all "
                                 "landscape or all portrait)")
        lossless = p.suffix.lower() == ".png"  # PNGs stay lossless (the held-out pixels a benchmark scores)
        name = f"{i:04d}_{p.stem[:40]}{'.png' if lossless else '.jpg'}"
        img.save(dest / name, **({} if lossless else {"quality": 95}))
        names.append(name)
    return names


def _photos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def video_frames(video: Path, dest: Path, max_images: int, max_side: int) -> Iterator[Event]:
    """Writes up to ``max_images`` frames of ``video`` into ``dest``: the video is cut into that many equal
    stretches and the sharpest frame of each kept; kept frames much blurrier than the others (under a quarter of
    the median sharpness) are dropped. Returns the frame names."""
    import imageio.v2 as imageio
    from PIL import Image

    try:
        reader = imageio.get_reader(str(video), "ffmpeg")
        meta = reader.get_meta_data()
    except Exception as exc:  # imageio/ffmpeg raise several types for files that are not videos
        raise UserInputError(f"video {video.name} cannot be read ({type(exc).__name__}); upload an .mp4/.mov "
                             "that plays in a browser") from None
    fps, duration = float(meta.get("fps") or 0), float(meta.get("duration") or 0)
    total = int(fps * duration) if fps > 0 and 0 < duration < float("inf") else 0
    if total <= 0:
        try:
            total = reader.count_frames()
        except Exception:
            total = 0
    stretch = max(1, -(-total // max_images)) if total else 1
    expected = min(max_images, -(-total // stretch)) if total else max_images
    dest.mkdir(parents=True, exist_ok=True)
    best: tuple[float, int, object] | None = None
    kept: list[tuple[float, int, object]] = []
    n = 0
    try:
        for n, frame in enumerate(reader):
            check_cancelled()
            img = Image.fromarray(np.asarray(frame)[..., :3])
            score = sharpness(_gray_small(img))
            if best is None or score > best[0]:
                best = (score, n, img)
            if (n + 1) % stretch == 0:
                kept.append(best)
                best = None
                if len(kept) % 10 == 0:
                    yield Progress(len(kept), expected, stage=FRAMES_KEPT)
            if len(kept) >= max_images:
                break
        else:
            n += 1
    except Exception as exc:
        if not kept and best is None:
            raise UserInputError(f"video {video.name} cannot be decoded ({type(exc).__name__}); re-encode it as "
                                 "H.264 .mp4") from None
    finally:
        reader.close()
    if best is not None and len(kept) < max_images:
        kept.append(best)
    if not kept:
        raise UserInputError(f"video {video.name} has no frames; record a few seconds moving around the subject")
    median = float(np.median([k[0] for k in kept]))
    sharp = [k for k in kept if k[0] >= 0.25 * median]
    names = []
    for score, idx, img in sharp:
        name = f"frame_{idx:05d}.jpg"
        _fit(img, max_side).save(dest / name, quality=95)
        names.append(name)
    dropped = len(kept) - len(sharp)
    yield Log(f"{video.name}: {len(names)} frames kept of {max(total, n)} (the sharpest of every {stretch}"
              + (f"; {dropped} blurry ones dropped)" if dropped else ")"))
    return names


@contextmanager
def colmap_cancellation(pycolmap, poll_s: float = 0.1) -> Iterator[object]:
    """A COLMAP ``CancellationToken`` for one phase, cancelled when this run is stopped (``events.cancellable``): a
    watcher thread passes the flag on (COLMAP releases the GIL while it works), and the phase's InterruptedError
    becomes ``events.Cancelled``."""
    token, flag, done = pycolmap.CancellationToken(), cancel_flag(), threading.Event()

    def watch() -> None:
        while not done.is_set():
            if flag.wait(poll_s):
                token.cancel()
                return

    if flag is not None:
        threading.Thread(target=watch, name="gen3d-sfm-cancel", daemon=True).start()
    try:
        yield token
    except InterruptedError:
        check_cancelled()  # raises Cancelled when the run was stopped; else COLMAP's own interruption
        raise
    finally:
        done.set()


def reconstruct(source: Path, kind: str, cache_root: Path, max_images: int = 100, max_side: int = 1024,
                threads: int = 0) -> Iterator[Event]:
    """Posed cameras for photos or a video through pycolmap; returns the COLMAP-layout folder (see module doc)."""
    if not have_pycolmap():
        raise UserInputError(PYCOLMAP_HINT)
    import pycolmap

    source = Path(source)
    if kind == "video" and source.is_dir():  # a folder (or zip) holding one video
        videos = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if len(videos) != 1:
            raise UserInputError(f"{source.name!r} holds {len(videos)} videos; give one video (or photos)")
        source = videos[0]
    key = _hash(source, kind, max_images, max_side, pycolmap.__version__)
    work = Path(cache_root) / f"sfm-{key}"
    if (work / "sparse" / "0" / "images.bin").is_file():
        for folder in (work, Path(cache_root)):
            os.utime(folder)  # in use: the app's sweep of old run folders (by age) keeps it
        yield Log(f"structure from motion: reusing the cached result for this upload ({work.name})")
        return work
    tmp = Path(cache_root) / f"sfm-{key}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    images = tmp / "images"
    yield phase(0)
    if kind == "video":
        names = yield from video_frames(source, images, max_images, max_side)
    else:
        names = prepare_photos(source, images, max_images, max_side)
    if len(names) < MIN_REGISTERED:
        raise UserInputError(f"{len(names)} photo(s) found in {source.name}: structure from motion needs at least "
                             f"{MIN_REGISTERED} overlapping photos (20-100 taken while walking around the subject "
                             "work best)")
    yield Log(f"structure from motion on {len(names)} images ({'sequential' if kind == 'video' else 'exhaustive'} "
              "matching)")
    threads = threads or min(8, os.cpu_count() or 1)
    pycolmap.logging.minloglevel = 2  # COLMAP's info lines would flood the log
    db = tmp / "database.db"
    yield phase(1)
    ext = pycolmap.FeatureExtractionOptions(num_threads=threads)
    ext.sift.max_num_features = 4096
    reader = pycolmap.ImageReaderOptions(camera_model="SIMPLE_RADIAL")
    with colmap_cancellation(pycolmap) as token:
        pycolmap.extract_features(db, images, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                  extraction_options=ext, device=pycolmap.Device.cpu, cancellation_token=token)
    yield phase(2)
    matching = pycolmap.FeatureMatchingOptions(num_threads=threads)
    match = pycolmap.match_sequential if kind == "video" else pycolmap.match_exhaustive
    with colmap_cancellation(pycolmap) as token:
        match(db, matching_options=matching, device=pycolmap.Device.cpu, cancellation_token=token)
    yield phase(3)
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = threads
    (tmp / "sparse").mkdir(parents=True, exist_ok=True)
    with colmap_cancellation(pycolmap) as token:
        models = pycolmap.incremental_mapping(db, images, tmp / "sparse", opts, cancellation_token=token)
    best = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
    registered = best.num_reg_images() if best is not None else 0
    if registered < MIN_REGISTERED:
        raise UserInputError(f"structure from motion registered {registered} of {len(names)} images: too few to "
                             "train on. Try photos with more overlap (each scene point in 3+ photos), more texture "
                             "(not a blank wall), less motion blur, or a slower video")
    for d in (tmp / "sparse").iterdir():
        shutil.rmtree(d, ignore_errors=True)
    (tmp / "sparse" / "0").mkdir(parents=True)
    best.write(str(tmp / "sparse" / "0"))
    db.unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    tmp.rename(work)
    yield Log(f"structure from motion registered {registered} of {len(names)} images, "
              f"{best.num_points3D()} sparse points"
              + ("" if registered >= 0.5 * len(names) else "; many images did not register: more overlap helps"))
    return work
