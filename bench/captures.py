"""Real captures (issue 19) on the LLFF fern scene: structure-from-motion time on the CPU (pycolmap), and held-out
PSNR of the fast NeRF (or, with ``--method volsdf``, of VolSDF: its SDF in a box around the foreground chosen from
the cameras and bounds, a background model behind it) against training time, with LLFF's poses (poses_bounds.npy)
and with pycolmap's.

    python bench/captures.py --separate --checkpoints 30 60 120 --json bench/results/captures_fern.json   # a GPU
    python bench/captures.py --smoke                                   # a CPU run in a minute or two: tiny everything
    python bench/captures.py --method volsdf --data .data/fern_llff --poses llff --checkpoints 30 60 120   # a GPU

A GPU machine without pycolmap trains on SfM poses made elsewhere: ``--sfm-cache DIR`` keeps the SfM result (a
COLMAP text model, ``sparse/0``, its images named as in the capture's ``images_8/``, and ``sfm.json``: the SfM
run's numbers and each image's hash; no image copies). An existing cache is used as it is (no pycolmap needed);
a missing one is made (pycolmap needed). ``--sfm-only`` makes it and stops:

    python bench/captures.py --data .data/fern_llff --poses sfm --sfm-cache .data/fern_sfm --sfm-only --sfm-threads 2
    python bench/captures.py --data .data/fern_llff --poses llff sfm --sfm-cache .data/fern_sfm --checkpoints 30 60 120

Every 8th image (0, 8, 16) is held out, as in the NeRF paper (vanilla NeRF: 25.17 dB on fern at 1/8 resolution
after about a day). The fern capture ships at 1/8 size (504x378, ``images_8``); both runs train on those
pixels in NDC (forward-facing, chosen from the cameras). The SfM run sees the same 20 PNGs and trains and scores
on them at the same resolution; its held-out views are the same three. SfM's cameras are compared
with LLFF's after a similarity alignment (rotation and centre errors, the centre error in units of the camera
spread). Runs the same pipeline generator as the app and CLI (exports off); the clock pauses while scoring.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, apply_overrides, print_table, write_json

from pipelines.events import Log, run_to_completion
from pipelines.nerf import NerfConfig
from pipelines.nerf import run as run_nerf
from pipelines.volsdf import VolSDFConfig
from pipelines.volsdf import run as run_volsdf

FERN = REPO.parent / "shared" / "data" / "captures" / "fern_llff"
SMOKE = ["batch_rays=256", "target_samples=4096", "max_samples=16384", "hash_levels=4", "hash_log2_size=12",
         "grid_resolution=32", "march_steps=64"]
SMOKE_VOLSDF = ["width=32", "eikonal_points=128", "hash_warmup=0", "background_samples=16", "mesh_resolution=32"]


def pose_errors(est: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max rotation error in degrees, max centre error / mean distance of the reference centres from their mean)."""
    from pipelines.core.cameras import pose_errors as errors

    rot, dist = errors(est, ref)
    spread = np.linalg.norm(ref[:, :3, 3] - ref[:, :3, 3].mean(0), axis=1).mean()
    return float(rot.max()), float(dist.max() / spread)


IMAGES = "images_8"  # the capture's photos SfM sees and both runs train on (504x378 for fern)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_sfm(data: Path, work: Path, max_side: int, threads: int) -> tuple[Path, dict]:
    """pycolmap's SfM on the capture's ``images_8`` photos: (COLMAP-layout folder, the run's numbers)."""
    from pipelines.core import sfm

    if not sfm.have_pycolmap():
        raise SystemExit("--poses sfm: no SfM cache to use and no pycolmap to make one (" + sfm.PYCOLMAP_HINT + "). "
                         "Make the cache where pycolmap is installed: python bench/captures.py --data DATA --poses "
                         "sfm --sfm-cache DIR --sfm-only, and give the same --sfm-cache DIR here")
    import pycolmap

    photos = work / "photos"
    photos.mkdir(parents=True)
    for p in sorted((data / IMAGES).iterdir()):
        shutil.copyfile(p, photos / p.name)
    t0 = time.perf_counter()
    gen = sfm.reconstruct(photos, "images", work / "cache", max_side=max_side, threads=threads)
    try:
        while True:
            ev = next(gen)
            if isinstance(ev, Log):
                print(ev.message, flush=True)
    except StopIteration as stop:
        root = stop.value
    seconds = time.perf_counter() - t0
    return root, {"sfm_s": round(seconds, 1), "max_side": max_side, "threads": threads,
                  "pycolmap": pycolmap.__version__}


def save_sfm_cache(root: Path, data: Path, cache: Path, row: dict) -> Path:
    """Writes SfM's model (``root``: ``sfm.reconstruct``'s folder) into ``cache`` as a COLMAP text model whose
    images carry the capture's own names (``prepare_photos`` named them ``NNNN_<stem>``, NNNN the index in name
    order), and ``sfm.json`` (``row`` and each image's hash, so a cache of other photos is refused)."""
    from pipelines.core import colmap_io

    model = colmap_io.read_model(colmap_io.find_model(root))
    photos = sorted(p for p in (data / IMAGES).iterdir() if p.is_file())
    for im in model.images.values():
        src = photos[int(im.name[:4])]
        if not im.name[5:].startswith(src.stem[:40]):
            raise SystemExit(f"SfM image {im.name} does not match {src.name}")
        im.name = src.name
    shutil.rmtree(cache / "sparse", ignore_errors=True)
    colmap_io.write_model(model, cache / "sparse" / "0", binary=False)
    names = sorted(im.name for im in model.images.values())
    meta = {**row, "registered": f"{len(names)}/{len(photos)}", "points": len(model.xyz), "images": IMAGES,
            "files": {n: _digest(data / IMAGES / n) for n in names}}
    (cache / "sfm.json").write_text(json.dumps(meta, indent=1) + "\n")
    return cache


def sfm_scene(data: Path, cache: Path, work: Path) -> tuple[Path, dict]:
    """A COLMAP-layout scene (``work / "sfm_scene"``: the cached model and copies of the capture's photos it
    names, checked against their hashes) and the cache's ``sfm.json``; needs no pycolmap."""
    meta_path = cache / "sfm.json"
    try:
        meta = json.loads(meta_path.read_text())
        files = dict(meta["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{meta_path} cannot be read ({type(exc).__name__}); delete {cache} to redo the SfM") from None
    if not (cache / "sparse" / "0" / "images.txt").is_file():
        raise SystemExit(f"{cache} has no sparse/0/images.txt; delete it to redo the SfM")
    scene = work / "sfm_scene"
    shutil.rmtree(scene, ignore_errors=True)
    shutil.copytree(cache / "sparse" / "0", scene / "sparse" / "0")
    (scene / "images").mkdir()
    for name, digest in files.items():
        src = data / meta.get("images", IMAGES) / name
        if not src.is_file() or _digest(src) != digest:
            raise SystemExit(f"SfM cache {cache} was made from other photos ({src} is missing or differs); give the "
                             f"capture it was made from, or delete {cache} to redo the SfM")
        shutil.copyfile(src, scene / "images" / name)
    return scene, meta


def compare_poses(scene: Path, data: Path) -> dict:
    """SfM's cameras (a cached scene: images named as the capture's) against LLFF's, matched by name."""
    from pipelines.core.captures import read_capture

    est, ref = read_capture(scene, "colmap"), read_capture(data, "llff")
    by_name = {p.name: i for i, p in enumerate(ref.paths)}
    rot, pos = pose_errors(est.poses, ref.poses[[by_name[p.name] for p in est.paths]])
    return {"points": len(est.xyz), "rot_err_deg": round(rot, 3), "centre_err": round(pos, 4)}


def scene_space(line: str) -> str:
    """The space a run's 'scene space: ...' log line names (NeRF: 'scene space: forward: why'; VolSDF: 'scene space:
    forward, chosen from the cameras: ...')."""
    return line.split(":")[1].split()[0].strip(",;")


def held_out(done) -> list[str]:
    """The held-out images a run scored, by file name (from its cameras.json)."""
    path = next(a.path for a in done.artifacts if a.kind == "cameras")
    return [Path(c["name"]).name for c in json.loads(Path(path).read_text())["cameras"] if c["heldout"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(FERN))
    ap.add_argument("--checkpoints", nargs="+", type=float, default=[30, 60, 120])
    ap.add_argument("--separate", action="store_true",
                    help="one run per checkpoint, each with its LR schedule fitted to that time budget")
    ap.add_argument("--downscale", type=int, default=8, help="of the original capture (8: images_8 as shipped)")
    ap.add_argument("--poses", nargs="+", default=["llff", "sfm"], choices=["llff", "sfm"])
    ap.add_argument("--sfm-threads", type=int, default=0, help="pycolmap threads (0: up to 8)")
    ap.add_argument("--sfm-max-side", type=int, default=1024)
    ap.add_argument("--sfm-cache", default="", help="folder of a saved SfM result: used when there, else made "
                    "(pycolmap) and saved there; the GPU runs on it without pycolmap")
    ap.add_argument("--sfm-only", action="store_true", help="run (or check) the SfM and its cache, train nothing")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--smoke", action="store_true", help="a tiny CPU run that exercises every column")
    ap.add_argument("--method", default="nerf", choices=["nerf", "volsdf"],
                    help="nerf: the fast NeRF (NDC for fern); volsdf: VolSDF's defaults (hash grid, occupancy "
                    "marching), its SDF in the foreground box chosen from the cameras, the background model behind")
    ap.add_argument("--set", nargs="*", default=[], help="extra NerfConfig / VolSDFConfig overrides, key=value")
    ap.add_argument("--json", default="", help="default: bench/results/captures_fern[_volsdf][_smoke].json")
    args = ap.parse_args()
    if args.smoke:
        args.device, args.downscale, args.sfm_max_side = "cpu", 64, 256
        args.checkpoints = args.checkpoints if args.checkpoints != [30, 60, 120] else [2, 4]
        args.set = [*SMOKE, *(SMOKE_VOLSDF if args.method == "volsdf" else []), *args.set]
    args.json = args.json or ("bench/results/captures_fern" + ("_volsdf" if args.method == "volsdf" else "")
                              + ("_smoke" if args.smoke else "") + ".json")
    data = Path(args.data)
    if not (data / "poses_bounds.npy").is_file():
        raise SystemExit(f"no LLFF capture at {data} (poses_bounds.npy + images_8/)")

    import torch

    rows, sfm_row, held = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="gen3d_captures_") as tmp:
        scenes = {"llff": (data, "llff")}
        if "sfm" in args.poses:
            cache = Path(args.sfm_cache) if args.sfm_cache else Path(tmp) / "sfm_cache"
            if (cache / "sfm.json").is_file():
                print(f"SfM: using the saved result in {cache} (no pycolmap needed)", flush=True)
            else:
                root, made = run_sfm(data, Path(tmp) / "sfm", args.sfm_max_side, args.sfm_threads)
                save_sfm_cache(root, data, cache, made)
                print(f"SfM: saved to {cache}", flush=True)
            root, meta = sfm_scene(data, cache, Path(tmp))
            sfm_row = {k: meta[k] for k in ("sfm_s", "registered", "max_side", "threads", "pycolmap") if k in meta}
            sfm_row.update(compare_poses(root, data), cache=str(cache))
            print(f"SfM: {sfm_row}", flush=True)
            scenes["sfm"] = (root, "colmap")
        if args.sfm_only:  # the numbers are in the cache's sfm.json
            return
        orig_w = float(np.load(data / "poses_bounds.npy")[0, 9])  # LLFF's hwf: the original photos' width
        for poses in args.poses:
            scene, fmt = scenes[poses]
            downscale = args.downscale
            if poses == "sfm":  # its images are the ones SfM saw: train at the LLFF run's resolution
                from PIL import Image

                sfm_w = Image.open(next((scene / "images").iterdir())).width
                downscale = max(1, round(sfm_w * args.downscale / orig_w))
            budgets = [[c] for c in args.checkpoints] if args.separate else [args.checkpoints]
            for budget in budgets:
                common = dict(scene=str(scene), format=fmt, downscale=downscale, device=args.device, export=False,
                              preview_every=10**9, steps=10**7, out_dir=str(Path(tmp) / "run"),
                              eval_at_seconds=",".join(f"{c:g}" for c in budget[:-1]), max_seconds=budget[-1])
                if args.method == "volsdf":
                    # (the foreground mesh's face count at every checkpoint: 128^3 marching cubes, clock paused)
                    cfg, run = apply_overrides(VolSDFConfig(**common), args.set), run_volsdf
                else:
                    cfg, run = apply_overrides(NerfConfig(model="fast", **common), args.set), run_nerf
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                logs: list[str] = []

                def on_event(e, logs=logs):
                    if isinstance(e, Log):
                        logs.append(e.message)
                        print(e.message, flush=True)

                done = run_to_completion(run(cfg), on_event=on_event)
                space = next((scene_space(m) for m in logs if m.startswith("scene space:")), "?")
                m = done.metrics
                held[poses] = held_out(done)
                print(f"{poses} poses: held-out images {', '.join(held[poses])}", flush=True)
                for c in budget:
                    tag = "" if c == budget[-1] else f"@{c:g}s"
                    name = "volsdf" if args.method == "volsdf" else "nerf-fast"
                    rows.append({"method": f"{name}, {poses} poses", "space": space,
                                 "train_s": c if tag else round(m["train_seconds"], 1),
                                 "schedule": "per budget" if args.separate else f"{budget[-1]:g}s run",
                                 "steps": int(m.get(f"steps{tag}", 0)), "psnr": round(m.get(f"psnr{tag}", float("nan")), 2),
                                 "ssim": None if tag else round(m["ssim"], 4),
                                 "peak_gpu_gb": round(m.get(f"peak_gpu_gb{tag}", 0.0), 2),
                                 **({"mesh_faces": int(m.get(f"mesh_faces{tag}", 0))} if "mesh_faces" in m else {}),
                                 "held_out": " ".join(held[poses])})
    print_table(rows, [("method", "method", 24), ("space", "space", 10), ("train_s", "train s", 8),
                       ("steps", "steps", 7), ("psnr", "PSNR", 7), ("ssim", "SSIM", 7), ("peak_gpu_gb", "peak GB", 8),
                       *([("mesh_faces", "faces", 9)] if args.method == "volsdf" else [])])
    if sfm_row:
        print(f"structure from motion (CPU, pycolmap): {sfm_row['sfm_s']} s, {sfm_row['registered']} registered, "
              f"{sfm_row['points']} points; against LLFF's poses: rotation <= {sfm_row['rot_err_deg']} deg, centres "
              f"<= {sfm_row['centre_err']} of the camera spread")
    if len({tuple(h) for h in held.values()}) > 1:
        print(f"WARNING: the runs held out different images ({held}): their PSNRs do not compare", flush=True)
    write_json(args.json, rows, data=str(data), downscale=args.downscale, sfm=sfm_row, held_out="every 8th image",
               held_out_images=held, method=args.method)


if __name__ == "__main__":
    main()
