"""Point-E on the 10 DreamFusion benchmark prompts, judged as the text-to-3D methods are: each prompt runs through
the Point-E pipeline as the tab runs it (the tier it picks, mesh off), the final coloured cloud is splatted from 8
azimuths at 64 px (the embedded scorer's input size), and the embedded scorer ranks every prompt's renders among
the 10 prompts (``priors_eval.rank_renders``: rank-1 when its own prompt has the highest mean cosine).

    python bench/pointe_prompts.py                      # all 10 prompts, 64 Heun steps a stage, upsampled
    python bench/pointe_prompts.py --tiny               # 2 prompts, 2 steps: a smoke run

Prints the per-prompt table and the rank-1 rate; writes bench/results/pointe_prompts[_TAG].json and a .png of
the renders (a row per prompt).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

VIEWS, SIZE = 8, 64


def load_cloud(ply: Path):
    """A saved coloured .ply as a PointCloud (colours in [0, 1])."""
    import numpy as np
    import torch
    import trimesh

    from pipelines.core.geometry import PointCloud

    pc = trimesh.load(ply)
    return PointCloud(torch.as_tensor(np.asarray(pc.vertices), dtype=torch.float32),
                      torch.as_tensor(np.asarray(pc.colors)[:, :3], dtype=torch.float32) / 255)


def cloud_renders(ply: Path, views: int = VIEWS, size: int = SIZE):
    """(views, size, size, 3) uint8 splats of a saved cloud around z, at 20 degrees elevation."""
    import torch

    from pipelines.core.point_clouds import render_points

    cloud = load_cloud(ply)
    return torch.stack([torch.from_numpy(render_points(cloud, size, 20.0, 360.0 * k / views, radius=1))
                        for k in range(views)])


def main(argv: list[str] | None = None) -> None:
    import json
    import time

    import torch
    from common import print_table, write_json
    from priors_eval import DREAMFUSION_PROMPTS, rank_renders, save_rows

    from pipelines.core.priors.embedded import load_embedded_scorer
    from pipelines.events import run_to_completion
    from pipelines.pointe import PointEConfig, run

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", default="", help="Point-E models (empty: what the tab uses)")
    p.add_argument("--steps", type=int, default=64, help="Heun steps a stage (64: the released setting)")
    p.add_argument("--no-upsample", action="store_true", help="judge the base's 1024 points")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="2 prompts, 2 steps")
    p.add_argument("--tag", default="")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    prompts = DREAMFUSION_PROMPTS[:2] if args.tiny else DREAMFUSION_PROMPTS
    steps = 2 if args.tiny else args.steps
    renders, seconds, used = {}, {}, ""
    with tempfile.TemporaryDirectory() as tmp:
        for i, prompt in enumerate(prompts):
            cfg = PointEConfig(prompt=prompt, checkpoints=args.checkpoints, steps=steps, mesh=False,
                               upsample=not args.no_upsample, seed=args.seed, device=args.device,
                               preview_every=10 ** 9, out_dir=str(Path(tmp) / str(i)))
            t0 = time.perf_counter()
            done = run_to_completion(run(cfg))
            seconds[prompt] = time.perf_counter() - t0
            ply = next(Path(a.path) for a in done.artifacts if a.path.endswith(".ply"))
            renders[prompt] = cloud_renders(ply)
            run_json = next(Path(a.path) for a in done.artifacts if a.path.endswith("run.json"))
            info = json.loads(run_json.read_text())
            used = info['models']
            print(f"{prompt!r}: {seconds[prompt]:.1f}s", flush=True)
    res, rows = rank_renders(load_embedded_scorer(torch.device("cpu")), prompts, renders)
    print_table(rows, [("prompt", "prompt", 12), ("rank", "rank", 5), ("views_top1", "views top-1", 12),
                       ("best_other", "best other", 12)])
    print(f"rank-1 rate {res['rank1_rate']:.2f} over {len(rows)} prompts (chance {res['chance']:.2f}); models: {used}")
    out = Path(args.json or REPO / "bench" / "results" / f"pointe_prompts{'_' + args.tag if args.tag else ''}.json")
    write_json(out, rows, **res, seconds=seconds, steps=steps, upsample=not args.no_upsample, seed=args.seed,
               models=used)
    save_rows(out.with_suffix(".png"), torch.stack([renders[r["prompt"]] for r in rows]).float() / 255)


if __name__ == "__main__":
    main()
