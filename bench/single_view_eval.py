"""Single-view reconstruction on held-out shapes: voxels vs points vs mesh, and the effect of the training set.

    # train and score variants (one JSON per variant; each trains with the same pipeline as the CLI/app)
    python bench/single_view_eval.py train --data .data/single_view/pack --variants full half quarter \
        --out-dir bench/results --tag h100
    # score a checkpoint (CPU is fine: a few hundred images)
    python bench/single_view_eval.py score --checkpoint assets/single_view/model --data .data/single_view/pack
    # the markdown table for bench/RESULTS.md from the JSON files (--mesh: the mesh head's quality columns)
    python bench/single_view_eval.py table bench/results/single_view_*.json
    # 6 held-out inputs (the app's examples) with the three outputs, side by side
    python bench/single_view_eval.py pictures --checkpoint assets/single_view/model --out bench/results/x.png
    # CPU sanity check of the mesh regularisers: the shipped encoder frozen, only the mesh decoder fine-tuned
    python bench/single_view_eval.py mesh-finetune --data assets/single_view/mini.npz --eval-data PACK
    # ... or new mesh decoders from scratch, today's against coarse to fine (issue 21)
    python bench/single_view_eval.py mesh-finetune --scratch --lr 1e-3 --eval-data PACK --arms w_edge=1 mesh_coarse_level=2
    # the same for the voxel or point losses (issue 21): only that decoder fine-tuned, one arm per loss setting
    python bench/single_view_eval.py head-finetune --head voxels --eval-data PACK --arms none shipped w_voxel_iou=1
    # robustness (issue 21): the same held-out shapes rendered as in training, in the augmented ranges, outside them
    python bench/single_view_eval.py robustness --packs default=.data/single_view_test/pack \
        augment=.data/single_view_robust_augment/pack out-of-range=.data/single_view_robust_out-of-range/pack
    # two robustness results number by number, each change with its 95 % interval over the held-out shapes
    python bench/single_view_eval.py compare BASE.json CANDIDATE.json --split default

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
from single_view_compare import add_parser as add_compare_parser
from single_view_compare import compare
from single_view_finetune import HEAD_COLUMNS, MESH_COLUMNS, head_finetune, mesh_finetune

from pipelines.events import Log, run_to_completion
from pipelines.core.single_view_outputs import INFERENCE, evaluate, predict
from pipelines.single_view import SingleViewConfig, resolve_packs, run

VARIANTS = {
    # Training set: how much furniture, and whether other objects help.
    "full": dict(sources="sh3d"),
    "half": dict(sources="sh3d", train_fraction=0.5),
    "quarter": dict(sources="sh3d", train_fraction=0.25),
    "plus-pybullet": dict(sources="sh3d,pybullet"),
    "plus-procedural": dict(sources="sh3d,procedural"),  # procedural furniture (train/procedural_furniture.py)
    "plus-both": dict(sources="sh3d,pybullet,procedural"),
    "plus-zeroad": dict(sources="sh3d,zeroad"),  # 0 A.D.'s props (mesh_library.zeroad_catalog)
    "plus-sh3d-default": dict(sources="sh3d,sh3d-default"),  # Sweet Home 3D's own default catalog (its jar)
    # One decoder at a time (each with its own encoder) against the joint model ("full").
    "voxels-only": dict(sources="sh3d", heads="voxels"),
    "points-only": dict(sources="sh3d", heads="points"),
    "mesh-only": dict(sources="sh3d", heads="mesh"),
    # Mesh regularisers: "full" trains with the defaults (Laplacian 1, edge 1, normal 0.01; issue 21); this is
    # the shipped model's recipe (Laplacian 0.1 only), for an A/B on one machine.
    "shipped-weights": dict(sources="sh3d", w_laplacian=0.1, w_edge=0.0, w_normal=0.0),
    "mesh-edge-normal": dict(sources="sh3d", heads="mesh", w_laplacian=0.1, w_edge=1.0, w_normal=0.01),
    # Voxel and point losses (issue 21), one head each so the A/B costs a few minutes: the shipped recipe (plain
    # BCE; plain Chamfer) against the class-balanced BCE, the soft IoU, both (the new default), the
    # density-aware Chamfer and the repulsion.
    "voxels-bce": dict(sources="sh3d", heads="voxels", voxel_pos_power=0.0, w_voxel_iou=0.0),
    "voxels-balanced": dict(sources="sh3d", heads="voxels", voxel_pos_power=0.5, w_voxel_iou=0.0),
    "voxels-iou": dict(sources="sh3d", heads="voxels", voxel_pos_power=0.0, w_voxel_iou=1.0),
    "voxels-balanced-iou": dict(sources="sh3d", heads="voxels", voxel_pos_power=0.5, w_voxel_iou=1.0),
    "points-chamfer": dict(sources="sh3d", heads="points", w_dcd=0.0, w_repulsion=0.0),
    "points-dcd": dict(sources="sh3d", heads="points", w_dcd=0.02, w_repulsion=0.0),
    "points-repulsion": dict(sources="sh3d", heads="points", w_dcd=0.0, w_repulsion=0.002),
    "points-dcd-repulsion": dict(sources="sh3d", heads="points", w_dcd=0.02, w_repulsion=0.002),
    # The three heads with every old loss setting of the shipped model (mesh, voxels and points).
    "shipped-recipe": dict(sources="sh3d", w_laplacian=0.1, w_edge=0.0, w_normal=0.0, voxel_pos_power=0.0,
                           w_voxel_iou=0.0, w_dcd=0.0, w_repulsion=0.0),
}
"""Every variant is scored on the same held-out shapes: the Sweet Home 3D test split."""
COLUMNS = ["voxels_iou", "voxels_f1@0.01", "voxels_f1@0.05", "voxels_cd", "points_f1@0.01", "points_f1@0.05",
           "points_cd", "mesh_f1@0.01", "mesh_f1@0.05", "mesh_cd"]
VOXEL_POINT_COLUMNS = ["voxels_iou", "voxels_f1@0.01", "voxels_f1@0.02", "voxels_f1@0.05", "voxels_stray",
                       "points_f1@0.01", "points_f1@0.02", "points_f1@0.05", "points_cd", "points_stray"]


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
        result = dict(variant=name, tag=args.tag, data=args.data,
                      overrides={k: v for k, v in overrides.items() if k != "data"},
                      metrics=done.metrics, seconds=time.perf_counter() - t0, device=device_name(),
                      torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
        path = out / f"single_view_{name}{'_' + args.tag if args.tag else ''}.json"
        path.write_text(json.dumps(result, indent=1))
        print(f"{name}: {json.dumps({k: round(done.metrics[k], 4) for k in COLUMNS if k in done.metrics})} -> {path}",
              flush=True)


TEST_TIME = tuple(INFERENCE)
"""``SingleViewConfig``'s test-time settings: the flags of ``add_inference_args`` and what a result JSON records."""


def inference(args) -> dict:
    """The prediction's test-time settings from the command line."""
    return {k: getattr(args, k) for k in TEST_TIME}


def settings(args, model, **fields):
    """The prediction's config: the command line's test-time settings, and with ``--as-predicted`` the checkpoint's
    own for those left at their defaults (``checkpoint_inference``, as the app's predict does)."""
    from pipelines.core.single_view_outputs import checkpoint_inference

    cfg = SingleViewConfig(**fields, **inference(args), checkpoint_inference=args.as_predicted)
    return checkpoint_inference(cfg, model.manifest)[0]


def used(cfg) -> dict:
    """The test-time settings a result JSON records: those the prediction ran with."""
    return {k: getattr(cfg, k) for k in TEST_TIME}


def add_inference_args(parser) -> None:
    parser.add_argument("--mirror-heads", default=SingleViewConfig.mirror_heads,
                        help="heads combined with the mirrored image's prediction (comma list of voxels, points; "
                             "'': the network's prediction alone)")
    parser.add_argument("--mesh-from", default=SingleViewConfig.mesh_from, choices=("icosphere", "voxels"),
                        help="the mesh: the mesh head's icosphere, or the voxels cubified (Mesh R-CNN)")
    parser.add_argument("--mesh-fit-steps", type=int, default=0,
                        help="test-time fitting of the mesh to the point head's cloud, Adam steps (0: off)")
    parser.add_argument("--mesh-fit-reg", type=float, default=SingleViewConfig.mesh_fit_reg,
                        help="its mesh regularisers' weights as a share of the training defaults")
    parser.add_argument("--mesh-fit-recall", type=float, default=SingleViewConfig.mesh_fit_recall,
                        help="its weight on the Chamfer's cloud-to-mesh half")
    parser.add_argument("--mesh-fit-lr", type=float, default=SingleViewConfig.mesh_fit_lr, help="its Adam step size")
    parser.add_argument("--voxel-threshold", type=float, default=SingleViewConfig.voxel_threshold,
                        help="occupancy probability above which a voxel is solid")
    parser.add_argument("--voxel-point-threshold", type=float, default=SingleViewConfig.voxel_point_threshold,
                        help="the same for the cells that hold a point of the point head's cloud (0: off)")
    parser.add_argument("--point-jitters", type=int, default=SingleViewConfig.point_jitters,
                        help="the point head's clouds for this many jittered copies of the image added (0: off)")
    parser.add_argument("--as-predicted", action="store_true",
                        help="the checkpoint's test-time settings (its manifest.json) for those left at their "
                             "defaults here, as the app predicts")


def score(args) -> None:
    import torch

    from pipelines.config import resolve_device
    from pipelines.core.shape_packs import load_packs, scored_on, split_shapes
    from pipelines.core.single_view_net import load_checkpoint

    dev = resolve_device(args.device)
    model, info = load_checkpoint(args.checkpoint, dev)
    cfg = settings(args, model, sources="all", eval_sources="sh3d", eval_views=args.eval_views)
    data = load_packs(resolve_packs(args.data), dev, model.image_size)
    train_idx, test_idx, note = split_shapes(data, cfg.sources, cfg.eval_sources, cfg.train_fraction)
    if args.split == "train":  # the same scoring on shapes the model learned from: the generalisation gap
        test_idx = [train_idx[i] for i in torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(0))]
    if args.max_shapes:
        test_idx = test_idx[:args.max_shapes]
    t0 = time.perf_counter()
    metrics = evaluate(model, data.select(test_idx), model.trained_heads, cfg, dev,
                       on_batch=lambda k, n: print(f"scored {k}/{n} views, {time.perf_counter() - t0:.0f} s",
                                                   flush=True))
    result = dict(variant=args.variant, checkpoint=info, metrics=metrics, split=args.split, **used(cfg),
                  heldout_shapes=0 if note or args.split == "train" else len(test_idx),
                  views_per_shape=args.eval_views or data.images.shape[1],
                  scored_on=scored_on(note),
                  seconds=time.perf_counter() - t0, device=device_name(), torch=torch.__version__,
                  date=time.strftime("%Y-%m-%d"), note=note)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


def table(args) -> None:
    columns = MESH_COLUMNS if args.mesh else VOXEL_POINT_COLUMNS if args.voxel_point else COLUMNS
    rows = []
    for p in args.files:
        r = json.loads(Path(p).read_text())
        if "metrics" not in r:  # a glob also picks up the robustness and fine-tune JSONs: other tables
            print(f"(skipped {p}: no held-out metrics; robustness and fine-tune files print their own tables)")
            continue
        if "variant" not in r:  # a checkpoint's manifest.json (the shipped model's own held-out scores)
            r = dict(variant=f"checkpoint {Path(p).parent.name} (float32, before int8)", metrics=r["metrics"])
        rows.append(r)
    print("| variant | train shapes | steps | train s | " + " | ".join(columns) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(columns))
    for r in rows:
        m = r["metrics"]
        cells = ["-" if c not in m else f"{m[c]:.4f}" if c.endswith("_cd") else f"{m[c]:.3f}" for c in columns]
        head = [f"{m[k]:.0f}" if k in m else "-" for k in ("train_shapes", "steps", "train_seconds")]
        name = f"{r['variant']} ({r['tag']})" if r.get("tag") else r["variant"]  # a variant on other data
        print(f"| {name} | " + " | ".join(head + cells) + " |")


def pictures(args) -> None:
    """One row per example input: the input, then voxels, points and mesh seen from the input's side, and the
    mesh turned 90 degrees (where folds and spikes show)."""
    import numpy as np
    import torch
    from PIL import Image

    from pipelines.core.images import to_uint8
    from pipelines.core.raster import render_mesh
    from pipelines.core.single_view_net import (load_checkpoint, prediction_geometry, prepare_image, preview_images,
                                                view_camera)
    from pipelines.single_view import ASSETS

    model, _ = load_checkpoint(args.checkpoint, "cpu")
    examples = sorted((ASSETS / "examples").glob("*.png"))[:6]
    rows, cfg = [], settings(args, model)
    for path in examples:
        x = prepare_image(path, model.image_size).permute(2, 0, 1)[None]
        pred = predict(model, x, model.trained_heads, cfg)
        views = preview_images(x[0], pred, model, cfg.voxel_threshold, size=args.size)
        mesh = prediction_geometry(pred, model)["mesh"]
        c, s_ = 0.0, 1.0  # 90 degrees about z: the object's right side faces the camera
        mesh.verts = mesh.verts @ torch.tensor([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]]).T
        with torch.no_grad():
            side, _ = render_mesh(mesh, view_camera(args.size), smooth=True)
        inp = np.asarray(Image.fromarray(views["input"]).resize((args.size, args.size)))
        rows.append(np.concatenate([inp, views["voxels"], views["points"], views["mesh"], to_uint8(side)], 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(args.out)
    print(f"wrote {args.out}: rows {', '.join(p.stem for p in examples)}; columns input, voxels, points, mesh, "
          "mesh turned 90 degrees")


ROBUSTNESS_COLUMNS = ["voxels_iou", "voxels_f1@0.05", "points_f1@0.01", "points_f1@0.05", "points_cd",
                      "mesh_f1@0.01", "mesh_f1@0.05", "mesh_cd"]


def robustness(args) -> None:
    """One checkpoint on the same held-out shapes and views rendered several ways (issue 21): e.g. the default
    renders it was trained on, the builder's ``--render augment`` ranges and its ``--render out-of-range`` split.
    Each pack is scored on the held-out shapes every pack has (the first pack's order, ``--max-shapes`` of them)
    and its first ``--eval-views`` views (the builder draws the same azimuths, so the same targets, in every
    mode); then the change of each score against the first pack. Each row keeps its per-image scores too, which
    ``compare`` reads."""
    import torch

    from pipelines.core.shape_packs import load_packs
    from pipelines.core.single_view_net import load_checkpoint

    from pipelines.config import resolve_device

    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    model, info = load_checkpoint(args.checkpoint, dev)
    cfg = settings(args, model, eval_views=args.eval_views)
    named = []
    for spec in args.packs:
        name, _, path = spec.rpartition("=")
        named.append((name or Path(path).parent.name, load_packs(resolve_packs(path), dev, model.image_size)))
    held = [i for i, sp in zip(named[0][1].ids, named[0][1].splits) if sp == "test"]
    common = [i for i in held if all(i in d.ids for _, d in named[1:])][:args.max_shapes or None]
    if not common:
        raise SystemExit("error: the packs share no held-out shape")
    rows = []
    for name, data in named:
        t0 = time.perf_counter()
        sub = data.select([data.ids.index(i) for i in common])
        images = evaluate(model, sub, model.trained_heads, cfg, dev, per_image=True)
        metrics = {k: sum(v) / len(v) for k, v in images.items()}
        rows.append(dict(split=name, metrics=metrics, seconds=time.perf_counter() - t0))
        print(json.dumps(rows[-1]), flush=True)
        rows[-1]["per_image"] = {k: [float(f"{x:.6g}") for x in v] for k, v in images.items()}  # for ``compare``
    out = dict(checkpoint=info, **used(cfg), heldout_shapes=len(common), shape_ids=common,
               views_per_shape=min(args.eval_views or 10 ** 9, *(d.images.shape[1] for _, d in named)),
               packs=dict(zip([n for n, _ in named], args.packs)), rows=rows, device=device_name(),
               threads=args.threads, torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    fmt = lambda c, v: f"{v:+.4f}" if c.endswith("_cd") else f"{v:+.3f}"  # noqa: E731
    print(f"{len(common)} held-out shapes x {out['views_per_shape']} views")
    print("| renders | " + " | ".join(ROBUSTNESS_COLUMNS) + " |")
    print("|---|" + "---:|" * len(ROBUSTNESS_COLUMNS))
    first = rows[0]["metrics"]
    for r in rows:
        m = r["metrics"]
        print(f"| {r['split']} | " + " | ".join(
            "-" if c not in m else f"{m[c]:.4f}" if c.endswith("_cd") else f"{m[c]:.3f}" for c in ROBUSTNESS_COLUMNS)
            + " |")
    for r in rows[1:]:
        m = r["metrics"]
        print(f"| change, {r['split']} vs {rows[0]['split']} | " + " | ".join(
            "-" if c not in m or c not in first else fmt(c, m[c] - first[c]) for c in ROBUSTNESS_COLUMNS) + " |")


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
    s.add_argument("--max-shapes", type=int, default=0, help="score only the first N held-out shapes (0: all)")
    s.add_argument("--split", choices=("test", "train"), default="test",
                   help="train: score N training shapes (drawn at random) instead, for the generalisation gap")
    add_inference_args(s)
    s.add_argument("--variant", default="checkpoint", help="the row's name in the table")
    s.add_argument("--json", default="")
    b = sub.add_parser("table", help="markdown table from result JSON files")
    b.add_argument("files", nargs="+")
    b.add_argument("--mesh", action="store_true", help="the mesh head's quality columns")
    b.add_argument("--voxel-point", action="store_true",
                   help="the voxel and point columns of issue 21 (F1 at 1, 2, 5 %%, stray points)")
    p = sub.add_parser("pictures", help="6 example inputs with the three outputs, one PNG")
    p.add_argument("--checkpoint", default="assets/single_view/model")
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--out", default="bench/results/single_view_examples.png")
    add_inference_args(p)
    f = sub.add_parser("mesh-finetune", help="CPU check of the mesh regularisers: fine-tune the mesh decoder only")
    f.add_argument("--checkpoint", default="assets/single_view/model")
    f.add_argument("--data", default="assets/single_view/mini.npz", help="training shapes (its train split)")
    f.add_argument("--eval-data", default=".data/single_view/pack", help="held-out shapes (its test split)")
    f.add_argument("--arms", nargs="+",
                   default=["none", "w_laplacian=0.1,w_edge=0,w_normal=0", "w_laplacian=1,w_edge=1,w_normal=0.01"],
                   help="weight settings (key=value,...; 'none': the checkpoint unchanged)")
    f.add_argument("--steps", type=int, default=200)
    f.add_argument("--batch-size", type=int, default=16)
    f.add_argument("--lr", type=float, default=1e-4)
    f.add_argument("--eval-views", type=int, default=2)
    f.add_argument("--max-shapes", type=int, default=0)
    f.add_argument("--json", default="")
    f.add_argument("--scratch", action="store_true",
                   help="train new mesh decoders (every arm alike) instead of fine-tuning the shipped one")
    h = sub.add_parser("head-finetune", help="CPU check of the voxel or point losses: fine-tune that decoder only")
    h.add_argument("--head", choices=sorted(HEAD_COLUMNS), required=True)
    h.add_argument("--checkpoint", default="assets/single_view/model")
    h.add_argument("--data", default="assets/single_view/mini.npz", help="training shapes (its train split)")
    h.add_argument("--eval-data", default=".data/single_view/pack", help="held-out shapes (its test split)")
    h.add_argument("--arms", nargs="+", default=["none", "shipped"],
                   help="loss settings over the shipped recipe (key=value,...; 'none': the checkpoint unchanged; "
                        "'shipped': fine-tuned with the shipped recipe)")
    h.add_argument("--steps", type=int, default=200)
    h.add_argument("--batch-size", type=int, default=16)
    h.add_argument("--lr", type=float, default=1e-4)
    h.add_argument("--eval-views", type=int, default=1)
    h.add_argument("--max-shapes", type=int, default=0)
    h.add_argument("--json", default="")
    h.add_argument("--save-dir", default="", help="save each arm's fine-tuned model under DIR/ARM (float16)")
    r = sub.add_parser("robustness", help="one checkpoint on the same held-out shapes rendered several ways")
    r.add_argument("--checkpoint", default="assets/single_view/model")
    r.add_argument("--packs", nargs="+", required=True,
                   help="NAME=PATH of each rendering's pack (the first is the reference of the changes)")
    r.add_argument("--eval-views", type=int, default=2)
    r.add_argument("--max-shapes", type=int, default=0, help="the first N shared held-out shapes (0: all)")
    r.add_argument("--threads", type=int, default=1, help="CPU threads")
    r.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    add_inference_args(r)
    r.add_argument("--json", default="")
    add_compare_parser(sub)
    args = ap.parse_args()
    {"train": train_variants, "score": score, "table": table, "pictures": pictures,
     "mesh-finetune": mesh_finetune, "head-finetune": head_finetune, "robustness": robustness,
     "compare": compare}[args.cmd](args)


if __name__ == "__main__":
    main()
