"""NeRF on lego: held-out PSNR on all `val` views against training wall time, for both models.

    python bench/nerf_lego.py --data ../shared/data/nerf_synthetic/lego --models fast --separate \
        --checkpoints 15 30 60 120 --json bench/results/nerf_lego_fast.json
    python bench/nerf_lego.py --models vanilla --checkpoints 30 60 120       # one run, scored on the way
    python bench/nerf_lego.py --profile 50                                   # profile 50 steps per model

Runs the same pipeline generator as the app and CLI (exports off); the clock pauses while scoring. Prints a
table (method, size, time, PSNR/SSIM, peak memory) and writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses

from common import LEGO, apply_overrides, print_table, profile, write_json

from pipelines.events import Log, run_to_completion
from pipelines.nerf import NerfConfig, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(LEGO))
    ap.add_argument("--models", nargs="+", default=["fast", "vanilla"])
    ap.add_argument("--checkpoints", nargs="+", type=float, default=[15, 30, 60, 120])
    ap.add_argument("--downscale", type=int, default=1)
    ap.add_argument("--eval-views", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--separate", action="store_true",
                    help="one run per checkpoint, each with its LR schedule fitted to that time budget")
    ap.add_argument("--profile", type=int, default=0, help="profile this many training steps per model, then exit")
    ap.add_argument("--set", nargs="*", default=[], help="extra NerfConfig overrides, key=value")
    ap.add_argument("--json", default="bench/results/nerf_lego.json")
    args = ap.parse_args()

    import torch

    rows = []
    for model in args.models:
        budgets = [[c] for c in args.checkpoints] if args.separate else [args.checkpoints]
        for budget in budgets:
            # Training stops at the last time in ``budget``; the LR schedule follows the clock (max_seconds).
            cfg = apply_overrides(NerfConfig(
                scene=args.data, model=model, downscale=args.downscale, eval_views=args.eval_views,
                device=args.device, export=False, preview_every=10**9, steps=10**7,
                eval_at_seconds=",".join(f"{c:g}" for c in budget[:-1]), max_seconds=budget[-1]), args.set)
            if args.profile:
                short = dataclasses.replace(cfg, steps=args.profile, eval_views=1, eval_at_seconds="", max_seconds=0)
                print(profile(run, short, dataclasses.replace(short, steps=20),
                              f"{model}: {args.profile} steps + 1 eval view"), flush=True)
                break
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            done = run_to_completion(run(cfg), on_event=lambda e: isinstance(e, Log) and print(e.message, flush=True))
            m = done.metrics
            for c in budget:
                tag = "" if c == budget[-1] else f"@{c:g}s"
                rows.append({
                    "method": f"nerf-{model}", "size": f"lego {400 // args.downscale}px, "
                    f"{args.eval_views or 100} val views", "train_s": c if tag else round(m["train_seconds"], 1),
                    "schedule": "per budget" if args.separate else f"{budget[-1]:g}s run",
                    "steps": int(m.get(f"steps{tag}", 0)), "psnr": round(m.get(f"psnr{tag}", float("nan")), 2),
                    "ssim": None if tag else round(m["ssim"], 4), "peak_gpu_gb": round(m.get("peak_gpu_gb", 0.0), 2),
                })
    if rows:
        print_table(rows, [("method", "method", 14), ("size", "size", 28), ("train_s", "train s", 8),
                           ("steps", "steps", 7), ("psnr", "PSNR", 7), ("ssim", "SSIM", 7),
                           ("peak_gpu_gb", "peak GB", 8)])
        write_json(args.json, rows)


if __name__ == "__main__":
    main()
