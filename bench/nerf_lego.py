"""NeRF on lego: held-out PSNR on all `val` (or `test`) views against training wall time, for both models.

    python bench/nerf_lego.py --data ../shared/data/nerf_synthetic/lego --models fast --separate \
        --checkpoints 15 30 60 120 --json bench/results/nerf_lego_fast.json
    python bench/nerf_lego.py --data .data/lego --models fast --eval-split test --separate --checkpoints 30 60
    python bench/nerf_lego.py --models vanilla --checkpoints 30 60 120       # one run, scored on the way
    python bench/nerf_lego.py --profile 50                                   # profile 50 steps per model
    python bench/nerf_lego.py --smoke                                        # seconds on a CPU: tiny everything

Runs the same pipeline generator as the app and CLI (exports off); the clock pauses while scoring. Prints a
table (method, size, time, PSNR/SSIM, peak GPU memory so far at each checkpoint: torch.cuda.max_memory_allocated
since the run's start, previews and scoring included) and writes JSON. ``--eval-split test`` scores the
folder's test split (see ``common.scene_for_split``).
"""
from __future__ import annotations

import argparse

from common import LEGO, apply_overrides, clock_runs, image_side, print_table, scene_for_split, write_json

from pipelines.nerf import NerfConfig, run

# --smoke: the fast model of tests/test_nerf.py (and a small vanilla one), for a CPU run in seconds.
SMOKE = ["batch_rays=256", "target_samples=4096", "max_samples=8192", "hash_levels=4", "hash_log2_size=12",
         "grid_resolution=16", "march_steps=48", "width=32", "depth=2", "n_coarse=16", "n_fine=16", "max_views=12"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(LEGO))
    ap.add_argument("--models", nargs="+", default=["fast", "vanilla"])
    ap.add_argument("--checkpoints", nargs="+", type=float, default=[15, 30, 60, 120])
    ap.add_argument("--downscale", type=int, default=1)
    ap.add_argument("--eval-views", type=int, default=None, help="held-out views to score (default: all; --smoke: 2)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--separate", action="store_true",
                    help="one run per checkpoint, each with its LR schedule fitted to that time budget")
    ap.add_argument("--profile", type=int, default=0, help="profile this many training steps per model, then exit")
    ap.add_argument("--eval-split", default="val", choices=["val", "test"],
                    help="held-out split to score (test: when the folder has transforms_test.json)")
    ap.add_argument("--smoke", action="store_true", help="a tiny CPU run (seconds) that exercises every column")
    ap.add_argument("--set", nargs="*", default=[], help="extra NerfConfig overrides, key=value")
    ap.add_argument("--json", default="bench/results/nerf_lego.json")
    args = ap.parse_args()
    if args.smoke:
        args.device, args.downscale = "cpu", 16
        args.eval_views = 2 if args.eval_views is None else args.eval_views
        args.checkpoints = args.checkpoints if args.checkpoints != [15, 30, 60, 120] else [2, 4]
        args.set = [*SMOKE, *args.set]
        args.json = args.json if args.json != "bench/results/nerf_lego.json" else "bench/results/nerf_lego_smoke.json"
    args.eval_views = args.eval_views or 0
    scene = scene_for_split(args.data, args.eval_split)

    rows = []
    for model in args.models:
        def make_cfg(**clock):
            return apply_overrides(NerfConfig(
                scene=str(scene), model=model, downscale=args.downscale, eval_views=args.eval_views,
                device=args.device, export=False, preview_every=10**9, steps=10**7, **clock), args.set)

        for cfg, m, checkpoints in clock_runs(args, make_cfg, run, model, 20):
            for c, tag in checkpoints:
                rows.append({
                    "method": f"nerf-{model}", "size": f"lego {image_side(scene, args.downscale)}px, "
                    f"{args.eval_views or 'all'} {args.eval_split} views", "eval_split": args.eval_split,
                    "train_s": c if tag else round(m["train_seconds"], 1),
                    "schedule": "per budget" if args.separate else f"{args.checkpoints[-1]:g}s run",
                    "steps": int(m.get(f"steps{tag}", 0)), "psnr": round(m.get(f"psnr{tag}", float("nan")), 2),
                    "ssim": None if tag else round(m["ssim"], 4),
                    "peak_gpu_gb": round(m.get(f"peak_gpu_gb{tag}", 0.0), 2),
                    "max_samples": cfg.max_samples if model == "fast" else None,
                })
    if rows:
        print_table(rows, [("method", "method", 14), ("size", "size", 30), ("train_s", "train s", 8),
                           ("steps", "steps", 7), ("psnr", "PSNR", 7), ("ssim", "SSIM", 7),
                           ("peak_gpu_gb", "peak GB", 8)])
        write_json(args.json, rows, eval_split=args.eval_split, data=str(args.data))


if __name__ == "__main__":
    main()
