"""The decoder fine-tune checks of ``single_view_eval.py`` (``mesh-finetune``, ``head-finetune``): a checkpoint's
encoder frozen (features computed once), one decoder fine-tuned from its weights under each arm's loss settings on
CPU, then scored on held-out shapes; each arm a JSON line, all of them a Markdown table. Only for checkpoints whose
decoders read the pooled feature (the models shipped until 2026-12-04; the one shipped since has the lifted voxel
decoder, which reads the encoder's feature maps, and is refused with that said)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from common import apply_overrides, device_name

from pipelines.core.single_view_outputs import evaluate
from pipelines.single_view import SingleViewConfig, resolve_packs

MESH_COLUMNS = ["mesh_f1@0.01", "mesh_f1@0.02", "mesh_f1@0.05", "mesh_cd", "mesh_normal_consistency",
                "mesh_self_intersection", "mesh_edge_spread"]
"""The mesh head's quality columns (also ``table --mesh``)."""


def _frozen_encoder_data(args):
    """What the decoder fine-tune checks share: the shipped model, its frozen encoder's features of every training
    image and of its mirror (as training's flip), their targets (occupancy, points) mirrored alike, the held-out
    shapes. Returns (base, info, feats, occ, pts, train shape count, evaluation packs, held-out indices)."""
    import torch

    from pipelines.core.resnet import normalize
    from pipelines.core.shape_packs import load_packs
    from pipelines.core.single_view_net import load_checkpoint

    torch.manual_seed(0)
    base, info = load_checkpoint(args.checkpoint, "cpu")
    if {"voxel_decoder", "point_decoder"} & set(base.hparams):  # they read feature maps, not the pooled feature
        raise SystemExit(f"{args.checkpoint}: these checks feed the decoders pooled features only; its "
                         f"{base.hparams.get('voxel_decoder', '')} {base.hparams.get('point_decoder', '')} decoder "
                         "reads the encoder's feature maps")
    train = load_packs(resolve_packs(args.data), "cpu", base.image_size)
    train = train.select([i for i, s in enumerate(train.splits) if s == "train"])
    S, V = len(train), train.images.shape[1]
    si, vi = torch.arange(S).repeat_interleave(V), torch.arange(V).repeat(S)
    occ, pts = train.targets(si, vi)
    plain, mirrored = [], []
    with torch.no_grad():  # in chunks: a whole pack's activations at once do not fit in memory
        for i in range(0, len(si), 256):
            x = train.images[si[i:i + 256], vi[i:i + 256]].float() / 255
            plain.append(base.encoder(normalize(x)))
            mirrored.append(base.encoder(normalize(x.flip(-1))))
    feats = torch.cat(plain + mirrored)
    pts = torch.cat([pts, pts * pts.new_tensor([-1.0, 1.0, 1.0])])
    occ = torch.cat([occ, occ.flip(1)])
    evaluation = load_packs(resolve_packs(args.eval_data), "cpu", base.image_size)
    test = [i for i, s in enumerate(evaluation.splits) if s == "test"][:args.max_shapes or None]
    return base, info, feats, occ, pts, S, evaluation.select(test), test


def _arm_config(spec: str, **base) -> SingleViewConfig:
    """A SingleViewConfig from an arm's "key=value,..." (each value of its field's type; 'none': no change)."""
    # the network's prediction alone, as the rows these checks recorded before test-time mirroring
    return apply_overrides(SingleViewConfig(mirror_heads="", **base), spec.split(",") if spec != "none" else [])


def _mesh_model(base, cfg: SingleViewConfig, scratch: bool):
    """The model an arm trains: a copy of ``base``, or with ``scratch`` (or an arm with other mesh decoders:
    coarse to fine, or another ``mesh_decoder``) ``base``'s encoder, voxel and point decoders and new mesh decoders
    (seeded alike in every arm)."""
    import copy

    import torch

    from pipelines.core.single_view_net import SingleViewModel

    if not scratch and not cfg.mesh_coarse_level and cfg.mesh_decoder == base.hparams.get("mesh_decoder", "mlp"):
        return copy.deepcopy(base)
    torch.manual_seed(0)
    model = SingleViewModel(**dict(base.hparams, mesh_coarse_level=cfg.mesh_coarse_level,
                                   mesh_decoder=cfg.mesh_decoder, mesh_folding_octaves=cfg.mesh_folding_octaves))
    missing = model.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith("mesh_")},
                                    strict=False).missing_keys
    assert all(k.startswith("mesh_") for k in missing), missing
    model.trained_heads = base.trained_heads
    return model


def mesh_finetune(args) -> None:
    """The shipped encoder frozen (features computed once), only the mesh decoder fine-tuned from the shipped
    weights (``--scratch``: trained from new ones) with the training loss (``single_view_losses.training_losses``)
    under each arm's settings (``mesh_coarse_level=L`` or another ``mesh_decoder``: new decoders, always), then
    scored."""
    import torch

    from pipelines.core.single_view_losses import training_losses

    base, info, feats, _, pts, S, evaluation, test = _frozen_encoder_data(args)
    results = []
    for spec in args.arms:
        cfg = _arm_config(spec, gt_points=2048, eval_views=args.eval_views)
        model = _mesh_model(base, cfg, args.scratch)
        steps = 0 if spec == "none" else args.steps
        opt = torch.optim.Adam([p for h in model.mesh_decoder_heads() for p in h.parameters()], lr=args.lr)
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for i in range(steps):
            b = torch.randint(0, len(feats), (args.batch_size,), generator=gen)
            out = model.mesh_from_features(feats[b])
            loss = training_losses(out, pts[b], pts[b], model, cfg, gen, i / steps)["loss"]  # (mesh_reg_end)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_s = time.perf_counter() - t0
        model.eval()
        metrics = evaluate(model, evaluation, ("mesh",), cfg, torch.device("cpu"))
        results.append(dict(arm=spec, steps=steps, train_seconds=train_s, metrics=metrics))
        print(json.dumps(results[-1]), flush=True)
    out = dict(checkpoint=info, train_images=len(feats), train_shapes=S, heldout_shapes=len(test),
               views_per_shape=args.eval_views, lr=args.lr, batch_size=args.batch_size, scratch=args.scratch,
               results=results, device=device_name(), date=time.strftime("%Y-%m-%d"))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    _print_arms(results, MESH_COLUMNS)


def _print_arms(results: list[dict], columns: list[str]) -> None:
    """The fine-tune arms as a Markdown table (Chamfer columns to 4 decimals, the rest to 3; '-' where absent)."""
    print("| arm | steps | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for r in results:
        m = r["metrics"]
        print(f"| {r['arm']} | {r['steps']} | " + " | ".join(
            "-" if c not in m else f"{m[c]:.4f}" if c.endswith("_cd") else f"{m[c]:.3f}" for c in columns) + " |")


HEAD_COLUMNS = {
    "voxels": ["voxels_iou", "voxels_f1@0.01", "voxels_f1@0.02", "voxels_f1@0.05", "voxels_cd", "voxels_stray"],
    "points": ["points_f1@0.01", "points_f1@0.02", "points_f1@0.05", "points_cd", "points_stray"],
}


def head_finetune(args) -> None:
    """The voxel and point losses' CPU check (issue 21): the shipped encoder frozen (features computed once),
    only one decoder (``--head``) fine-tuned from the shipped weights with the training loss of
    ``single_view_losses.training_losses`` under each arm's settings, then scored on held-out shapes."""
    import copy

    import torch

    from pipelines.core.single_view_losses import training_losses

    base, info, feats, occ, pts, S, evaluation, test = _frozen_encoder_data(args)
    decoder = {"voxels": "voxel_head", "points": "point_head"}[args.head]
    # Arms that set nothing still train with the shipped model's recipe (plain BCE, plain Chamfer), not the
    # new defaults: every arm's settings are explicit on top of this base.
    shipped = dict(voxel_pos_power=0.0, w_voxel_iou=0.0, w_dcd=0.0, w_repulsion=0.0)
    results = []
    for spec in args.arms:
        settings = dict(kv.split("=") for kv in spec.split(",")) if spec not in ("none", "shipped") else {}
        cfg = SingleViewConfig(gt_points=2048, eval_views=args.eval_views, mirror_heads="",
                               **{**shipped, **{k: float(v) for k, v in settings.items()}})
        model = copy.deepcopy(base)
        steps = 0 if spec == "none" else args.steps
        head = getattr(model, decoder)
        head.train()
        opt = torch.optim.Adam(head.parameters(), lr=args.lr)
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for _ in range(steps):
            b = torch.randint(0, len(feats), (args.batch_size,), generator=gen)
            p = pts[b][:, torch.randperm(pts.shape[1], generator=gen)[:cfg.gt_points]]
            out = {"voxels": head(feats[b])} if args.head == "voxels" else {"points": head(feats[b]).view(len(b), -1, 3)}
            loss = training_losses(out, occ[b], p, model, cfg, gen)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_s = time.perf_counter() - t0
        model.eval()
        metrics = evaluate(model, evaluation, (args.head,), cfg, torch.device("cpu"))
        results.append(dict(arm=spec, steps=steps, train_seconds=train_s, metrics=metrics))
        print(json.dumps(results[-1]), flush=True)
        if args.save_dir:  # for `pictures --checkpoint` (never into the shipped model's folder)
            from pipelines.core.single_view_net import save_checkpoint

            folder = Path(args.save_dir) / "".join(c if c.isalnum() or c in "._-" else "_" for c in spec)
            save_checkpoint(model, folder, "float16")
            print(f"saved {folder}", flush=True)
    out = dict(checkpoint=info, head=args.head, train_images=len(feats), train_shapes=S, heldout_shapes=len(test),
               views_per_shape=args.eval_views, lr=args.lr, batch_size=args.batch_size, steps=args.steps,
               results=results, device=device_name(), date=time.strftime("%Y-%m-%d"))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    _print_arms(results, HEAD_COLUMNS[args.head])
