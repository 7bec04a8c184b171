"""Point-E speed: seconds per stage (view, base, upsample, mesh) and in total, and peak GPU memory, from a prompt to
a meshed 4096-point cloud, on architecture-identical, randomly initialised models (no download).

    python bench/pointe.py                              # GPU: base40M + upsample + sdf, SD 2.1-base view
    python bench/pointe.py --base base1B                # the 1B base model
    python bench/pointe.py --variants bf16,bf16-graphs --no-view --no-mesh   # the point sampler alone
    python bench/pointe.py --tiny --device cpu          # the same code on the test tier

The random models are written once to --model-dir in the official formats (Point-E ``.pt`` state dicts with a
small random output layer, so the clouds are not trivially zero; CLIP ViT-L/14 and Stable Diffusion 2.1-base with
``save_pretrained``, from their configs written out) and loaded by the loaders real weights go through, so the
timed code is the app's: ``pipelines.pointe.run`` with previews only at stage ends. Variants: 'fp32' (TF32
matmuls, the released sampler's setting), 'bf16' (bfloat16 weights under autocast), 'bf16-graphs' (the same,
torch.compile with CUDA graphs; its first run compiles and is not timed). For bf16 variants the final cloud is
compared with the fp32 one of the same seed (mean |difference| of xyz, in the cloud's units, and of colours in
0..255). Each variant: one warm-up run, then --repeats timed runs (the median is reported). Prints a table and
writes JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import device_name, print_table

REPO = Path(__file__).resolve().parents[1]
CLIP_VIT_L14 = dict(
    text_config=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                     bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
    vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=224, patch_size=14, hidden_act="quick_gelu"),
    projection_dim=768, logit_scale_init_value=2.6592)
"""openai/clip-vit-large-patch14's config.json (the parts that set the architecture)."""
VARIANTS = {"fp32": dict(precision="float32", compile="off"), "bf16": dict(precision="bfloat16", compile="off"),
            "bf16-graphs": dict(precision="bfloat16", compile="reduce-overhead"),
            "bf16-compile": dict(precision="bfloat16", compile="default")}


def make_models(folder: Path, base: str, tiny: bool, device: str) -> tuple[Path, Path]:
    """(Point-E checkpoint folder, Stable Diffusion folder) of random models; complete folders are reused."""
    import torch

    from pipelines.core.point_diffusion import CHECKPOINT_FILES, build_model
    from pipelines.core.priors.clip import missing_files, save_clip
    from pipelines.core.priors.point_e import save_tiny_point_e
    from pipelines.core.priors.stable_diffusion import missing_files as sd_missing
    from pipelines.core.priors.testing import SD21_BASE, save_stable_diffusion, tiny_stable_diffusion

    folder.mkdir(parents=True, exist_ok=True)
    points, sd = folder / ("tiny" if tiny else "point_e"), folder / ("tiny_sd" if tiny else "sd21_base")
    t0 = time.perf_counter()
    if tiny:
        if not (points / "configs.json").is_file():
            save_tiny_point_e(points)
        if sd_missing(sd):
            tiny_stable_diffusion(sd)
        return points, sd
    build_dev = "cuda" if device.startswith("cuda") else "cpu"
    for name in (base, "upsample", "sdf"):
        path = points / CHECKPOINT_FILES[name]
        if not path.is_file():
            points.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(0)
            model = build_model(name, device=build_dev)
            torch.nn.init.normal_(model.output_proj.weight, std=0.02)  # not the zero init: clouds that differ
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, path)
            del model
    if missing_files(points / "clip"):
        save_clip(points / "clip", CLIP_VIT_L14, device=build_dev)
    if sd_missing(sd):
        save_stable_diffusion(sd, SD21_BASE, dtype=torch.float16, device=build_dev)
    print(f"random models ready in {folder} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return points, sd


def final_cloud(out_dir: Path):
    import numpy as np
    import trimesh

    pc = trimesh.load(out_dir / "points.ply")
    return np.asarray(pc.vertices, dtype=np.float64), np.asarray(pc.colors)[:, :3].astype(np.float64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="base40M", choices=["base40M", "base300M", "base1B"])
    p.add_argument("--variants", default="fp32,bf16,bf16-graphs", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=64, help="Heun steps per stage (Point-E: 64)")
    p.add_argument("--view-steps", type=int, default=50, help="DDIM steps of the synthetic view")
    p.add_argument("--grid-size", type=int, default=128)
    p.add_argument("--no-view", action="store_true", help="start from the prompt with no synthetic view "
                   "(conditions on a blank picture; times the point stages alone)")
    p.add_argument("--no-mesh", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--tiny", action="store_true", help="the test tier's tiny models (a CPU check of this script)")
    p.add_argument("--model-dir", default=str(Path(tempfile.gettempdir()) / "gen3d-pointe-random"))
    p.add_argument("--json", default="", help="output file (default: bench/results/pointe_<base>_<device>.json)")
    args = p.parse_args()

    import numpy as np
    import torch

    from pipelines.config import resolve_device
    from pipelines.events import run_to_completion
    from pipelines.pointe import PointEConfig, run

    dev = resolve_device(args.device)
    points, sd = make_models(Path(args.model_dir), args.base, args.tiny, str(dev))
    blank = Path(args.model_dir) / "blank.png"
    if args.no_view and not blank.is_file():
        from PIL import Image

        img = np.full((256, 256, 3), 255, np.uint8)
        img[64:192, 96:160] = (180, 60, 40)  # an object on white: what the image path expects
        Image.fromarray(img).save(blank)
    rows, clouds = [], {}
    for name in args.variants.split(","):
        out = Path(tempfile.mkdtemp(prefix=f"pointe-{name}-"))
        cfg = PointEConfig(prompt="a red motorcycle", image=str(blank) if args.no_view else "",
                           checkpoints=str(points), base_model=args.base if not args.tiny else "base40M",
                           text_to_image=str(sd), steps=args.steps, view_steps=args.view_steps,
                           grid_size=args.grid_size, mesh=not args.no_mesh, preview_every=10 ** 6, device=str(dev),
                           out_dir=str(out), **VARIANTS[name])
        t0 = time.perf_counter()
        run_to_completion(run(cfg))  # warm-up: loading, cuDNN/cuBLAS choices, compiling
        warm = time.perf_counter() - t0
        runs = []
        for _ in range(args.repeats):
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            done = run_to_completion(run(cfg))
            runs.append(dict(done.metrics, wall=done.seconds))
        med = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}
        stages = {s: med.get(f"{s}_seconds", 0.0) for s in ("view", "base", "upsample", "mesh")}
        row = dict(variant=name, **stages, points_s=stages["base"] + stages["upsample"], total=sum(stages.values()),
                   wall=med["wall"], peak_gb=med.get("peak_gpu_gb"), first_run=warm)
        clouds[name] = final_cloud(out)
        if name != "fp32" and "fp32" in clouds:
            (xyz, rgb), (xyz0, rgb0) = clouds[name], clouds["fp32"]
            row.update(xyz_diff=float(np.abs(xyz - xyz0).mean()), rgb_diff=float(np.abs(rgb - rgb0).mean()))
        rows.append(row)
        print(json.dumps(row), flush=True)

    label = "tiny test-tier models" if args.tiny else f"random {args.base} + upsample + sdf, SD 2.1-base view"
    print(f"\nPoint-E on {device_name()} ({label}; {args.steps} Heun steps per stage, guidance 3 on the base, "
          f"batch 1, {args.grid_size}^3 mesh grid; median of {args.repeats})")
    print_table(rows, [("variant", "variant", 12), ("view", "view s", 8), ("base", "base s", 8),
                       ("upsample", "upsample s", 11), ("points_s", "base+up s", 10), ("mesh", "mesh s", 8),
                       ("total", "stages s", 9), ("wall", "wall s", 8), ("peak_gb", "peak GB", 8),
                       ("first_run", "1st run s", 10), ("xyz_diff", "xyz diff", 9), ("rgb_diff", "rgb diff", 9)])
    path = Path(args.json or REPO / "bench" / "results" /
                f"pointe_{'tiny' if args.tiny else args.base}_{'cpu' if dev.type == 'cpu' else 'gpu'}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(device=device_name(), base=args.base, steps=args.steps, view_steps=args.view_steps,
                                    grid_size=args.grid_size, view=not args.no_view, mesh=not args.no_mesh,
                                    tiny=args.tiny, date=time.strftime("%Y-%m-%d"),
                                    torch=torch.__version__, rows=rows), indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
