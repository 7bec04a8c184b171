"""VolSDF on lego: held-out PSNR/SSIM and mesh quality (watertight, face count) against training time.

    python bench/volsdf_lego.py --data ../shared/data/nerf_synthetic/lego --encodings hash \
        --checkpoints 60 120 300 --json bench/results/volsdf_lego.json
    python bench/volsdf_lego.py --encodings hash harmonic --separate --checkpoints 120 300
    python bench/volsdf_lego.py --profile 30                  # profile 30 training steps per encoding, then exit
    python bench/volsdf_lego.py --smoke          # CPU, seconds: tiny images, tiny model, every column

Runs the same pipeline generator as the app and CLI with the neural SDF (exports off); the clock pauses while
scoring. At each checkpoint the SDF is meshed by marching cubes (``--mesh-resolution``) and the mesh's face
count and watertightness recorded, and its PSNR: the vertex-coloured mesh rendered through core/raster.py from
``--mesh-psnr-views`` held-out cameras (evenly spaced), beside the volume-rendered PSNR. Peak GPU memory is
torch.cuda.max_memory_allocated since the run's start, at each checkpoint (training, previews and scoring).
``--eval-split test`` scores the folder's test split. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses

from common import LEGO, apply_overrides, clock_runs, image_side, print_table, scene_for_split, write_json

from pipelines.volsdf import VolSDFConfig, run

SMOKE = ["batch_rays=256", "n_coarse=16", "n_fine=16", "hash_levels=4", "hash_log2_size=12", "width=32",
         "eikonal_points=128", "max_views=12", "target_samples=4096", "max_samples=16384", "grid_resolution=32",
         "march_steps=96"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(LEGO))
    ap.add_argument("--encodings", nargs="+", default=["hash"], choices=["hash", "harmonic"])
    ap.add_argument("--checkpoints", nargs="+", type=float, default=[60, 120, 300])
    ap.add_argument("--downscale", type=int, default=1)
    ap.add_argument("--eval-views", type=int, default=None, help="held-out views to score (default: all; --smoke: 2)")
    ap.add_argument("--eval-split", default="val", choices=["val", "test"],
                    help="held-out split to score (test: when the folder has transforms_test.json)")
    ap.add_argument("--mesh-resolution", type=int, default=256)
    ap.add_argument("--mesh-psnr-views", type=int, default=10,
                    help="held-out cameras the coloured mesh is rendered from for its PSNR (0: none)")
    ap.add_argument("--smoke", action="store_true", help="a tiny CPU run (seconds) that exercises every column")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--separate", action="store_true",
                    help="one run per checkpoint, each with its LR schedule fitted to that time budget")
    ap.add_argument("--profile", type=int, default=0, help="profile this many training steps, then exit")
    ap.add_argument("--set", nargs="*", default=[], help="extra VolSDFConfig overrides, key=value")
    ap.add_argument("--json", default="bench/results/volsdf_lego.json")
    args = ap.parse_args()
    if args.smoke:
        args.device, args.downscale, args.mesh_resolution = "cpu", 16, 32
        args.eval_views = 2 if args.eval_views is None else args.eval_views
        args.mesh_psnr_views = min(args.mesh_psnr_views, 2)
        args.checkpoints = args.checkpoints if args.checkpoints != [60, 120, 300] else [3, 6]
        args.set = [*SMOKE, *args.set]
        args.json = args.json if args.json != "bench/results/volsdf_lego.json" else "bench/results/volsdf_lego_smoke.json"
    args.eval_views = args.eval_views or 0
    scene = scene_for_split(args.data, args.eval_split)

    rows = []
    for encoding in args.encodings:
        preset = "paper" if encoding == "harmonic" else "fast"

        def make_cfg(**clock):
            return apply_overrides(dataclasses.replace(
                VolSDFConfig().with_preset(preset), scene=str(scene), field="neural", encoding=encoding,
                downscale=args.downscale, eval_views=args.eval_views, device=args.device, export=False,
                preview_every=10**9, mesh_resolution=args.mesh_resolution, steps=10**7,
                mesh_psnr_views=args.mesh_psnr_views, **clock), args.set)

        for cfg, m, checkpoints in clock_runs(args, make_cfg, run, encoding, 10, mesh_resolution=0):
            for c, tag in checkpoints:
                rows.append({
                    "method": f"volsdf-{encoding}", "preset": preset,
                    "size": f"lego {image_side(scene, args.downscale)}px, {args.eval_views or 'all'} {args.eval_split} views",
                    "eval_split": args.eval_split,
                    "train_s": round(m["train_seconds"], 1) if not tag else c,
                    "schedule": "per budget" if args.separate else f"{args.checkpoints[-1]:g}s run",
                    "steps": int(m["steps"] if not tag else m.get(f"steps{tag}", 0)),
                    "psnr": round(m.get(f"psnr{tag}", float("nan")), 2),
                    "mesh_psnr": round(m[f"mesh_psnr{tag}"], 2) if f"mesh_psnr{tag}" in m else None,
                    "ssim": round(m["ssim"], 4) if not tag else None,
                    "mesh_faces": int(m.get(f"mesh_faces{tag}", 0)),
                    "watertight": bool(m.get(f"mesh_watertight{tag}", 0.0)),
                    "beta": round(m["beta"], 5) if not tag else None,
                    "peak_gpu_gb": round(m.get(f"peak_gpu_gb{tag}", 0.0), 2),
                    "gradient": cfg.gradient, "sampler": cfg.sampler, "eikonal_weight": cfg.eikonal_weight,
                    "overrides": " ".join(args.set),
                    "rays_per_step": round(m.get("rays_per_step", 0.0)) if not tag else None,
                })
    if rows:
        print(f"mesh resolution {args.mesh_resolution}^3")
        print_table(rows, [("method", "method", 16), ("size", "size", 30), ("train_s", "train s", 8),
                           ("steps", "steps", 7), ("psnr", "PSNR", 7), ("mesh_psnr", "mesh PSNR", 9),
                           ("ssim", "SSIM", 7), ("mesh_faces", "faces", 9),
                           ("watertight", "watertight", 10), ("peak_gpu_gb", "peak GB", 8)])
        write_json(args.json, rows, mesh_resolution=args.mesh_resolution, mesh_psnr_views=args.mesh_psnr_views,
                   eval_split=args.eval_split, data=str(args.data))

if __name__ == "__main__":
    main()
