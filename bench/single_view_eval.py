"""Single-view reconstruction on held-out shapes: voxels vs points vs mesh, and the effect of the training set.

    # train and score variants (one JSON per variant; each trains with the same pipeline as the CLI/app)
    python bench/single_view_eval.py train --data .data/single_view/pack --variants full half quarter \
        --out-dir bench/results --tag h100
    # score a checkpoint (CPU is fine: a few hundred images)
    python bench/single_view_eval.py score --checkpoint assets/single_view/model --data .data/single_view/pack
    # the markdown table for bench/RESULTS.md from the JSON files
    python bench/single_view_eval.py table bench/results/single_view_*.json

Scores: voxel IoU (probability > 0.5), Chamfer distance (squared, both directions, as PyTorch3D's) and
F-score at 1-5% of the object's size, on every view of the held-out Sweet Home 3D shapes; voxels are scored
as points too (samples on the cubified grid) so the three representations share one table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from common import device_name

from pipelines.events import Log, run_to_completion
from pipelines.single_view import SingleViewConfig, evaluate, resolve_packs, run

VARIANTS = {
    # Training set: how much furniture, and whether other objects help.
    "full": dict(sources="sh3d"),
    "half": dict(sources="sh3d", train_fraction=0.5),
    "quarter": dict(sources="sh3d", train_fraction=0.25),
    "plus-pybullet": dict(sources="sh3d,pybullet"),
    # One decoder at a time (each with its own encoder) against the joint model ("full").
    "voxels-only": dict(sources="sh3d", heads="voxels"),
    "points-only": dict(sources="sh3d", heads="points"),
    "mesh-only": dict(sources="sh3d", heads="mesh"),
    # Mesh regularisers.
    "mesh-edge-normal": dict(sources="sh3d", heads="mesh", w_edge=1.0, w_normal=0.01),
}
"""Every variant is scored on the same held-out shapes: the Sweet Home 3D test split."""
COLUMNS = ["voxels_iou", "voxels_f1@0.01", "voxels_f1@0.05", "voxels_cd", "points_f1@0.01", "points_f1@0.05",
           "points_cd", "mesh_f1@0.01", "mesh_f1@0.05", "mesh_cd"]


def train_variants(args) -> None:
    import torch

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        overrides = dict(VARIANTS[name], eval_sources="sh3d", export=False, data=args.data, seed=args.seed,
                         preview_every=10 ** 9)
        if args.steps:
            overrides["steps"] = args.steps
        if args.max_seconds:
            overrides["max_seconds"] = args.max_seconds
        for kv in args.set:
            k, v = kv.split("=", 1)
            field = SingleViewConfig.__dataclass_fields__[k]
            overrides[k] = type(getattr(SingleViewConfig(), k))(v) if field.type != "bool" else v.lower() == "true"
        cfg = dataclasses.replace(SingleViewConfig().with_preset(args.preset), **overrides)
        t0 = time.perf_counter()
        show = lambda e: print(e.message, flush=True) if isinstance(e, Log) else None  # noqa: E731
        done = run_to_completion(run(cfg), on_event=show)
        result = dict(variant=name, overrides={k: v for k, v in overrides.items() if k != "data"},
                      metrics=done.metrics, seconds=time.perf_counter() - t0, device=device_name(),
                      torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
        path = out / f"single_view_{name}{'_' + args.tag if args.tag else ''}.json"
        path.write_text(json.dumps(result, indent=1))
        print(f"{name}: {json.dumps({k: round(done.metrics[k], 4) for k in COLUMNS if k in done.metrics})} -> {path}",
              flush=True)


def score(args) -> None:
    import torch

    from pipelines.config import resolve_device
    from pipelines.core.shape_packs import load_packs, scored_on, split_shapes
    from pipelines.core.single_view_net import load_checkpoint

    dev = resolve_device(args.device)
    model, info = load_checkpoint(args.checkpoint, dev)
    cfg = SingleViewConfig(sources="all", eval_sources="sh3d", eval_views=args.eval_views)
    data = load_packs(resolve_packs(args.data), dev, model.image_size)
    _, test_idx, note = split_shapes(data, cfg.sources, cfg.eval_sources, cfg.train_fraction)
    t0 = time.perf_counter()
    metrics = evaluate(model, data.select(test_idx), model.trained_heads, cfg, dev)
    result = dict(variant="checkpoint", checkpoint=info, metrics=metrics, heldout_shapes=0 if note else len(test_idx),
                  scored_on=scored_on(note),
                  seconds=time.perf_counter() - t0, device=device_name(), torch=torch.__version__,
                  date=time.strftime("%Y-%m-%d"), note=note)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


def table(args) -> None:
    rows = []
    for p in args.files:
        r = json.loads(Path(p).read_text())
        if "variant" not in r:  # a checkpoint's manifest.json (the shipped model's own held-out scores)
            r = dict(variant=f"checkpoint {Path(p).parent.name} (float32, before int8)", metrics=r["metrics"])
        rows.append(r)
    print("| variant | train shapes | steps | train s | " + " | ".join(COLUMNS) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(COLUMNS))
    for r in rows:
        m = r["metrics"]
        cells = ["-" if c not in m else f"{m[c]:.4f}" if c.endswith("_cd") else f"{m[c]:.3f}" for c in COLUMNS]
        head = [f"{m[k]:.0f}" if k in m else "-" for k in ("train_shapes", "steps", "train_seconds")]
        print(f"| {r['variant']} | " + " | ".join(head + cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train and score variants")
    t.add_argument("--data", default=".data/single_view/pack")
    t.add_argument("--variants", nargs="+", default=["full", "half", "quarter"], choices=sorted(VARIANTS))
    t.add_argument("--preset", default="gpu")
    t.add_argument("--steps", type=int, default=0, help="override the preset's steps")
    t.add_argument("--max-seconds", type=float, default=0.0, help="cap each variant's training time")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", nargs="*", default=[], help="extra SingleViewConfig overrides, key=value")
    t.add_argument("--out-dir", default="bench/results")
    t.add_argument("--tag", default="", help="suffix of the JSON names (e.g. the device)")
    s = sub.add_parser("score", help="score a checkpoint on the held-out shapes")
    s.add_argument("--checkpoint", default="assets/single_view/model")
    s.add_argument("--data", default=".data/single_view/pack")
    s.add_argument("--device", default="auto")
    s.add_argument("--eval-views", type=int, default=0)
    s.add_argument("--json", default="")
    b = sub.add_parser("table", help="markdown table from result JSON files")
    b.add_argument("files", nargs="+")
    args = ap.parse_args()
    {"train": train_variants, "score": score, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
