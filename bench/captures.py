"""Real captures (issue 19) on the LLFF fern scene: structure-from-motion time on the CPU (pycolmap), and held-out
PSNR of the fast NeRF against training time, with LLFF's poses (poses_bounds.npy) and with pycolmap's.

    python bench/captures.py --separate --checkpoints 30 60 120 --json bench/results/captures_fern.json   # a GPU
    python bench/captures.py --smoke                                   # a CPU run in a minute or two: tiny everything

Every 8th image (0, 8, 16) is held out, as in the NeRF paper (vanilla NeRF: 25.17 dB on fern at 1/8 resolution
after about a day). The fern capture ships at 1/8 size (504x378, ``images_8``); both runs train on those
pixels in NDC (forward-facing, chosen from the cameras). The SfM run sees the same 20 PNGs and trains and scores
on them at the same resolution; its held-out views are the same three. SfM's cameras are compared
with LLFF's after a similarity alignment (rotation and centre errors, the centre error in units of the camera
spread). Runs the same pipeline generator as the app and CLI (exports off); the clock pauses while scoring.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, apply_overrides, print_table, write_json

from pipelines.events import Log, run_to_completion
from pipelines.nerf import NerfConfig, run

FERN = REPO.parent / "shared" / "data" / "captures" / "fern_llff"
SMOKE = ["batch_rays=256", "target_samples=4096", "max_samples=16384", "hash_levels=4", "hash_log2_size=12",
         "grid_resolution=32", "march_steps=64"]


def pose_errors(est: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max rotation error in degrees, max centre error / mean distance of the reference centres from their mean)."""
    from pipelines.core.cameras import pose_errors as errors

    rot, dist = errors(est, ref)
    spread = np.linalg.norm(ref[:, :3, 3] - ref[:, :3, 3].mean(0), axis=1).mean()
    return float(rot.max()), float(dist.max() / spread)


def run_sfm(data: Path, work: Path, max_side: int, threads: int) -> tuple[Path, dict]:
    from pipelines.core import sfm
    from pipelines.core.captures import read_capture

    photos = work / "photos"
    photos.mkdir(parents=True)
    for p in sorted((data / "images_8").iterdir()):
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
    est, ref = read_capture(root, "colmap"), read_capture(data, "llff")
    by_name = {p.stem: i for i, p in enumerate(ref.paths)}
    idx = [by_name[p.stem[5:]] for p in est.paths]  # prepare_photos names them NNNN_<stem>.png
    rot, pos = pose_errors(est.poses, ref.poses[idx])
    return root, {"sfm_s": round(seconds, 1), "registered": f"{len(est)}/{len(ref)}", "points": len(est.xyz),
                  "rot_err_deg": round(rot, 3), "centre_err": round(pos, 4)}


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
    ap.add_argument("--device", default="auto")
    ap.add_argument("--smoke", action="store_true", help="a tiny CPU run that exercises every column")
    ap.add_argument("--set", nargs="*", default=[], help="extra NerfConfig overrides, key=value")
    ap.add_argument("--json", default="bench/results/captures_fern.json")
    args = ap.parse_args()
    if args.smoke:
        args.device, args.downscale, args.sfm_max_side = "cpu", 64, 256
        args.checkpoints = args.checkpoints if args.checkpoints != [30, 60, 120] else [2, 4]
        args.set = [*SMOKE, *args.set]
        args.json = args.json if args.json != "bench/results/captures_fern.json" else \
            "bench/results/captures_fern_smoke.json"
    data = Path(args.data)
    if not (data / "poses_bounds.npy").is_file():
        raise SystemExit(f"no LLFF capture at {data} (poses_bounds.npy + images_8/)")

    import torch

    rows, sfm_row = [], {}
    with tempfile.TemporaryDirectory(prefix="gen3d_captures_") as tmp:
        scenes = {"llff": (data, "llff")}
        if "sfm" in args.poses:
            root, sfm_row = run_sfm(data, Path(tmp), args.sfm_max_side, args.sfm_threads)
            print(f"SfM: {sfm_row}", flush=True)
            scenes["sfm"] = (root, "colmap")
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
                cfg = apply_overrides(NerfConfig(
                    scene=str(scene), format=fmt, model="fast", downscale=downscale, device=args.device,
                    export=False, preview_every=10**9, steps=10**7, out_dir=str(Path(tmp) / "run"),
                    eval_at_seconds=",".join(f"{c:g}" for c in budget[:-1]), max_seconds=budget[-1]), args.set)
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                done = run_to_completion(run(cfg), on_event=lambda e: isinstance(e, Log) and print(e.message,
                                                                                                 flush=True))
                m = done.metrics
                for c in budget:
                    tag = "" if c == budget[-1] else f"@{c:g}s"
                    rows.append({"method": f"nerf-fast, {poses} poses", "train_s": c if tag else round(m["train_seconds"], 1),
                                 "schedule": "per budget" if args.separate else f"{budget[-1]:g}s run",
                                 "steps": int(m.get(f"steps{tag}", 0)), "psnr": round(m.get(f"psnr{tag}", float("nan")), 2),
                                 "ssim": None if tag else round(m["ssim"], 4),
                                 "peak_gpu_gb": round(m.get(f"peak_gpu_gb{tag}", 0.0), 2)})
    print_table(rows, [("method", "method", 24), ("train_s", "train s", 8), ("steps", "steps", 7),
                       ("psnr", "PSNR", 7), ("ssim", "SSIM", 7), ("peak_gpu_gb", "peak GB", 8)])
    if sfm_row:
        print(f"structure from motion (CPU, pycolmap): {sfm_row['sfm_s']} s, {sfm_row['registered']} registered, "
              f"{sfm_row['points']} points; against LLFF's poses: rotation <= {sfm_row['rot_err_deg']} deg, centres "
              f"<= {sfm_row['centre_err']} of the camera spread")
    write_json(args.json, rows, data=str(data), downscale=args.downscale, sfm=sfm_row, held_out="every 8th image")


if __name__ == "__main__":
    main()
