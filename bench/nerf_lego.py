"""NeRF on lego: held-out PSNR on all `val` views against training wall time, for both models.

    python bench/nerf_lego.py --data ../shared/data/nerf_synthetic/lego --models fast vanilla \
        --checkpoints 15 30 60 120 --json bench/nerf_lego.json
    python bench/nerf_lego.py --data ... --profile 30      # profile 30 training steps per model first

Runs the same pipeline generator as the app and CLI (exports off); the clock pauses while scoring. Prints a
table (method, size, time, PSNR/SSIM, peak memory) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.events import Log, run_to_completion  # noqa: E402
from pipelines.nerf import NerfConfig, run  # noqa: E402


def profile(cfg: NerfConfig, steps: int) -> str:
    import dataclasses

    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    cfg = dataclasses.replace(cfg, steps=steps, eval_views=1, eval_at_seconds="", max_seconds=0, preview_every=10**9)
    run_to_completion(run(dataclasses.replace(cfg, steps=20)))  # warm-up: allocator, kernels, caches
    with torch_profile(activities=activities) as prof:
        t0 = time.perf_counter()
        run_to_completion(run(cfg))
        dt = time.perf_counter() - t0
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return f"{cfg.model}: {steps} steps + 1 eval view in {dt:.2f}s\n" + prof.key_averages().table(sort_by=key, row_limit=25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/nerf_synthetic/lego"))
    ap.add_argument("--models", nargs="+", default=["fast", "vanilla"])
    ap.add_argument("--checkpoints", nargs="+", type=float, default=[15, 30, 60, 120])
    ap.add_argument("--steps", nargs="+", type=int, default=None,
                    help="planned steps per model (sets the LR schedule); default: the config's")
    ap.add_argument("--downscale", type=int, default=1)
    ap.add_argument("--eval-views", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--separate", action="store_true",
                    help="one run per checkpoint, each with its LR schedule fitted to that time budget")
    ap.add_argument("--profile", type=int, default=0, help="profile this many training steps per model, then exit")
    ap.add_argument("--set", nargs="*", default=[], help="extra NerfConfig overrides, key=value")
    ap.add_argument("--json", default="bench/nerf_lego.json")
    args = ap.parse_args()

    import torch

    rows = []
    for i, model in enumerate(args.models):
        overrides = dict(kv.split("=", 1) for kv in args.set)
        budgets = [[c] for c in args.checkpoints] if args.separate else [args.checkpoints]
        for budget in budgets:
            # Training stops at the last time in ``budget``; the LR schedule follows the clock (max_seconds).
            cfg = NerfConfig(scene=args.data, model=model, downscale=args.downscale, eval_views=args.eval_views,
                             device=args.device, export=False, preview_every=10**9,
                             eval_at_seconds=",".join(f"{c:g}" for c in budget[:-1]),
                             max_seconds=budget[-1], steps=10**7)
            if args.steps:
                cfg.steps, cfg.max_seconds = args.steps[i], 0.0
            for k, v in overrides.items():
                setattr(cfg, k, type(getattr(cfg, k))(v) if not isinstance(getattr(cfg, k), bool) else v == "true")
            if args.profile:
                print(profile(cfg, args.profile), flush=True)
                break
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            done = run_to_completion(run(cfg), on_event=lambda e: isinstance(e, Log) and print(e.message, flush=True))
            m = done.metrics
            for c in budget:
                last = c == budget[-1]
                rows.append({
                    "method": f"nerf-{model}", "size": f"lego {400 // args.downscale}px, "
                    f"{args.eval_views or 100} val views", "train_s": c if not last else round(m["train_seconds"], 1),
                    "schedule": "per budget" if args.separate else f"{budget[-1]:g}s run",
                    "steps": int(m["steps"] if last else m.get(f"steps@{c:g}s", 0)),
                    "psnr": round(m["psnr"] if last else m.get(f"psnr@{c:g}s", float("nan")), 2),
                    "ssim": round(m["ssim"], 4) if last else None,
                    "peak_gpu_gb": round(m.get("peak_gpu_gb", 0.0), 2),
                })
    if not rows:
        return
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"\ndevice: {device}, torch {torch.__version__}")
    print(f"{'method':<14} {'size':<32} {'train s':>8} {'steps':>7} {'PSNR':>7} {'SSIM':>7} {'peak GB':>8}")
    for r in rows:
        ssim_s = f"{r['ssim']:.4f}" if r["ssim"] is not None else "-"
        print(f"{r['method']:<14} {r['size']:<32} {r['train_s']:>8} {r['steps']:>7} {r['psnr']:>7.2f} "
              f"{ssim_s:>7} {r['peak_gpu_gb']:>8.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"device": device, "torch": torch.__version__,
                                           "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
