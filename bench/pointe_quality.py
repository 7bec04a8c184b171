"""Point-E embedded tier, quality on held-out shapes: generated 4096-point clouds against the true surface samples.

    python bench/pointe_quality.py [--models assets/pointe] [--data .data/pointe/pointe.npz] [--shapes 0]
                                   [--steps 64] [--guidance 3] [--device auto] [--tag h200]
    python bench/pointe_quality.py --tiny --models DIR --data PACK      # a CPU smoke run (2 shapes, 3 steps)
    python bench/pointe_quality.py --precomputed ...   # without the scorer's text encoder (a bare GPU machine)

For each held-out shape of the pack (split by shape id, as every data builder): a cloud from the true render
(image -> 3D: the render on white through the models' encoder, as the app does) and one from the shape's plain
caption (text -> 3D: the scorer's text embedding, the same space), each the base model's 1024 points (guidance on
x0, Karras/Heun with the released settings) upsampled to 4096. Scores, in the canonical frame (z-up, longest side 1,
so distances are fractions of the extent): Chamfer distance (squared, both ways, PyTorch3D's; the single-view
bench's), F1 at 1, 2 and 5 % (``core.shape_losses``), F1@5 % after the best of 24 turns about z (how much of the
error is the front facing the wrong way: the single-view net predicts in the view's frame, Point-E in the
shape's), and the mean colour error (L1 on RGB in [0, 1], each point against its nearest true point). Two
references: *retrieval* (the training shape whose image embedding is nearest the render's, its true cloud) and
*truth, other half* (2048 true points against the other 2048: the floor the metrics allow at this density).
Beside them, the single-view tab's model on the same renders (``--single-view``, default the shipped one; '' skips):
its point head (in the view's frame: read its best-turn column) and retrieval by its encoder's pooled feature.
Writes bench/results/pointe_quality[_TAG].json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

from common import REPO, device_name

import numpy as np
import torch

from pipelines.core.shape_losses import chamfer_distance, f_score, nearest
from pipelines.train.pointe_data import load_pack

TAUS = (0.01, 0.02, 0.05)


def rotate_z(xyz: torch.Tensor, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], device=xyz.device)
    return xyz @ rot.T


def scores(pred_xyz: torch.Tensor, pred_rgb: torch.Tensor, gt_xyz: torch.Tensor, gt_rgb: torch.Tensor) -> dict:
    """Per-shape metrics of (B, K, 3) clouds against (B, N, 3) truths; colours in [0, 1]."""
    f = f_score(pred_xyz, gt_xyz, TAUS)
    best5 = torch.stack([f_score(rotate_z(pred_xyz, 2 * math.pi * k / 24), gt_xyz, (0.05,))[0.05]
                         for k in range(24)]).amax(0)
    idx = nearest(pred_xyz, gt_xyz)
    colour = (pred_rgb - torch.gather(gt_rgb, 1, idx[..., None].expand(-1, -1, 3))).abs().mean((1, 2))
    out = {"cd": chamfer_distance(pred_xyz, gt_xyz)}
    out.update({f"f1@{round(t * 100)}%": f[t] for t in TAUS})
    out.update({"f1@5% best z-turn": best5, "colour L1": colour})
    return {k: v.float().cpu() for k, v in out.items()}


def generate(models, cond: dict, steps: int, guidance: float, seed: int, device, batch: int):
    """The base's conditioning tensors, batch first ({'embeddings': (B, E)} for the vec base; the grid and 'vec' for
    the grid base) -> (B, K, 3) xyz and (B, K, 3) RGB in [0, 1] (``point_sampler.to_point_cloud`` units)."""
    from pipelines.core.point_sampler import BASE_STAGE, UPSAMPLE_STAGE, sample

    base = BASE_STAGE.__class__(**{**BASE_STAGE.__dict__, "steps": steps, "guidance_scale": guidance})
    up = UPSAMPLE_STAGE.__class__(**{**UPSAMPLE_STAGE.__dict__, "steps": steps})
    xyz, rgb = [], []
    n = len(next(iter(cond.values())))
    for i in range(0, n, batch):
        c = {k: v[i:i + batch].to(device) for k, v in cond.items()}
        x = sample(models.base, c, len(next(iter(c.values()))), models.upsampler, {}, base, up, seed + i, device)
        xyz.append(x[:, :3].transpose(1, 2).float() / 2)
        rgb.append(((x[:, 3:].transpose(1, 2).float() + 1) * 127.5).clamp(0, 255).round() / 255)
    return torch.cat(xyz), torch.cat(rgb)


def load_models(folder: str, base: str, device):
    from pipelines.core.priors.point_e import load_models as load

    return load(folder, base, device)


def load_precomputed(folder: str, device) -> SimpleNamespace:
    """The embedded base and upsampler without the scorer (``point_e_embedded.load_model_folder``); for a grid base
    also the scorer's image tower (no text encoder) that makes the renders' grids."""
    from pipelines.core.priors.point_e_embedded import load_grid_tower, load_model_folder

    base, cfg = load_model_folder(Path(folder) / "base", device)
    up = load_model_folder(Path(folder) / "upsample", device)[0]
    extra = {}
    if cfg.get("condition") == "scorer-grid":
        grid = {"features": "fmap", "image_size": 64, **cfg.get("grid", {})}
        extra = dict(tower=load_grid_tower(grid, device), grid=grid)
    return SimpleNamespace(base=base, upsampler=up, describe=lambda: f"embedded ({folder}), pack embeddings", **extra)


def single_view_rows(folder: str, data, train: torch.Tensor, renders, gt_xyz, gt_rgb, device, p_metrics) -> list:
    """The single-view model on the same held-out renders, put through that tab's preprocessing
    (``point_e_embedded.single_view_crops``): its point head (no colours: scored grey), and retrieval of the training
    render nearest by its encoder's pooled feature (cosine), that shape's true cloud."""
    from pipelines.core.priors.point_e_embedded import single_view_crops, view_pixels
    from pipelines.core.resnet import normalize
    from pipelines.core.single_view_net import load_checkpoint

    model, _ = load_checkpoint(folder, device)

    def pooled(pixels) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(pixels), 256):
                x = normalize(single_view_crops(pixels[i:i + 256], model.image_size).to(device))
                out.append(torch.nn.functional.normalize(model.encoder(x), dim=-1))
        return torch.cat(out)

    views = view_pixels(list(renders))
    with torch.no_grad():
        points = model(single_view_crops(views, model.image_size).to(device), ("points",))["points"].float()
    s = scores(points, torch.full_like(points, 0.5), gt_xyz, gt_rgb)
    rows = [dict(method="single-view point head (view frame: read best z-turn)", points=points.shape[1], seconds=0.0,
                 **{k: float(v.mean()) for k, v in s.items()}, **p_metrics(points))]
    if data.renders is None:  # an older pack: no training renders to retrieve from
        return rows
    train_views = np.asarray(data.renders)[train.cpu().numpy()]
    sim = pooled(views) @ pooled(train_views.reshape(-1, *train_views.shape[2:])).T
    nn_shape = train[sim.argmax(1).to(train.device) // train_views.shape[1]]
    s = scores(data.xyz[nn_shape], data.rgb[nn_shape].float() / 255, gt_xyz, gt_rgb)
    rows.append(dict(method="retrieval by the single-view encoder's feature", points=gt_xyz.shape[1], seconds=0.0,
                     **{k: float(v.mean()) for k, v in s.items()}, **p_metrics(data.xyz[nn_shape])))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=str(REPO / "assets" / "pointe"), help="embedded Point-E folder")
    p.add_argument("--data", default=str(REPO / ".data" / "pointe" / "pointe.npz"))
    p.add_argument("--shapes", type=int, default=0, help="held-out shapes to score (0: all)")
    p.add_argument("--steps", type=int, default=64, help="Heun steps per stage (64: the released setting)")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--batch", type=int, default=64, help="clouds sampled at once")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="2 shapes, 3 steps: a smoke run")
    p.add_argument("--precomputed", action="store_true",
                   help="condition on the pack's embeddings of the same render and caption (made by the same scorer "
                        "at pack time) instead of running the scorer: no text encoder (transformers) needed")
    p.add_argument("--pointnet-steps", type=int, default=1500,
                   help="training steps of the P-FID/P-IS classifier (bench/pointe_pointnet.py; 0: skip)")
    p.add_argument("--single-view", default=str(REPO / "assets" / "single_view" / "model"),
                   help="the single-view model scored beside (its point head, retrieval by its encoder); '' skips")
    p.add_argument("--tag", default="")
    p.add_argument("--out", default="")
    args = p.parse_args()
    if args.tiny:
        args.shapes, args.steps, args.pointnet_steps = args.shapes or 2, 3, min(args.pointnet_steps, 5)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev_name = device_name() if device.type == "cuda" else "cpu"

    data = load_pack(args.data, device)
    models = load_precomputed(args.models, device) if args.precomputed else load_models(args.models, "base40M", device)
    test = data.test[:args.shapes or None]
    if len(test) == 0:
        raise SystemExit(f"{args.data} has no held-out shapes")
    renders = data.test_rgba[:len(test), 0]  # the pack keeps the held-out renders in pack order
    gt_xyz, gt_rgb = data.xyz[test], data.rgb[test].float() / 255
    captions = [data.captions[int(data.shape_caps[i, 0])] for i in test]
    if args.precomputed:  # view 0 of the pack's embeddings is the render in test_rgba[:, 0]
        conditions = {"image": data.image_emb[test, 0], "text": data.text_emb[data.shape_caps[test, 0]]}
    else:
        conditions = {"image": models.encoder.image_vec(list(renders)), "text": models.encoder.text_vec(captions)}
    cond = {k: {"embeddings": v} for k, v in conditions.items()}
    if type(models.base).__name__ == "EmbeddedGridPointDiffusionTransformer":  # the grid base: the render's grid too
        from pipelines.core.priors.point_e_embedded import grid_features, view_pixels

        grid = (models.encoder.grid(list(renders)) if hasattr(models, "encoder") else
                grid_features(models.tower, view_pixels(list(renders), models.grid["image_size"]),
                              models.grid["features"]))
        cond = {"image": {"embeddings": grid, "vec": conditions["image"]}, "text": {"vec": conditions["text"]}}

    net, accuracy = None, float("nan")
    if args.pointnet_steps:
        from pointe_pointnet import p_scores, train_pointnet

        net, names, accuracy = train_pointnet(data, args.pointnet_steps, device=device)
        print(f"PointNet classifier: {len(names)} categories, held-out accuracy {accuracy:.3f}")

    def p_metrics(xyz: torch.Tensor) -> dict:
        return p_scores(net, xyz, gt_xyz) if net is not None and len(test) > 1 else {}

    rows, per_shape = [], {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for name, c in cond.items():
        t0 = time.perf_counter()
        xyz, rgb = generate(models, c, args.steps, args.guidance, args.seed, device, args.batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        s = scores(xyz, rgb, gt_xyz, gt_rgb)
        per_shape[name] = {k: v.tolist() for k, v in s.items()}
        rows.append(dict(method=f"Point-E embedded, {name} -> 3D", points=xyz.shape[1], seconds=seconds,
                         **{k: float(v.mean()) for k, v in s.items()}, **p_metrics(xyz)))
        n_base = models.base.n_ctx  # the upsampled cloud starts with the base's points, unchanged
        if xyz.shape[1] > n_base:  # the base's cloud alone: what the upsampler adds or loses
            s = scores(xyz[:, :n_base], rgb[:, :n_base], gt_xyz, gt_rgb)
            rows.append(dict(method=f"Point-E embedded, {name} -> 3D, the base's {n_base} points", points=n_base,
                             seconds=0.0, **{k: float(v.mean()) for k, v in s.items()}))
    # References: the nearest training shape by image embedding, and the truth against itself.
    train = torch.as_tensor(data.train, device=device)
    sim = conditions["image"].to(device) @ data.image_emb[train].reshape(-1, data.image_emb.shape[-1]).T
    nn_shape = train[sim.argmax(1) // data.image_emb.shape[1]]
    s = scores(data.xyz[nn_shape], data.rgb[nn_shape].float() / 255, gt_xyz, gt_rgb)
    rows.append(dict(method="retrieval (nearest training render)", points=gt_xyz.shape[1], seconds=0.0,
                     **{k: float(v.mean()) for k, v in s.items()}, **p_metrics(data.xyz[nn_shape])))
    if args.single_view:
        rows += single_view_rows(args.single_view, data, train, renders, gt_xyz, gt_rgb, device, p_metrics)
    half = gt_xyz.shape[1] // 2
    perm = torch.randperm(gt_xyz.shape[1], generator=torch.Generator().manual_seed(0)).to(device)
    a, b = perm[:half], perm[half:2 * half]  # random halves (the pack's order is a Z-curve: neighbours pair up)
    s = scores(gt_xyz[:, a], gt_rgb[:, a], gt_xyz[:, b], gt_rgb[:, b])
    rows.append(dict(method="truth, other half (floor)", points=half, seconds=0.0,
                     **{k: float(v.mean()) for k, v in s.items()}, **p_metrics(gt_xyz[:, a])))

    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    keys = [k for k in ("cd", "f1@1%", "f1@2%", "f1@5%", "f1@5% best z-turn", "colour L1", "P-FID", "P-IS")
            if k in rows[0]]
    print(f"{len(test)} held-out shapes, {args.steps} steps/stage, guidance {args.guidance}, {dev_name}, "
          f"peak {peak:.2f} GiB; models: {models.describe()}")
    print("| method | points | s | " + " | ".join(keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    for r in rows:
        print(f"| {r['method']} | {r['points']} | {r['seconds']:.1f} | " + " | ".join(f"{r.get(k, float('nan')):.4f}" for k in keys) + " |")
    out = Path(args.out or REPO / "bench" / "results" / f"pointe_quality{'_' + args.tag if args.tag else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(device=dev_name, shapes=[data.ids[i] for i in test], captions=captions,
                                   steps=args.steps, guidance=args.guidance, peak_gib=peak, rows=rows,
                                   per_shape=per_shape, models=models.describe(), data=Path(args.data).name,
                                   data_sha256=data.sha256,
                                   pointnet=dict(steps=args.pointnet_steps, accuracy=accuracy) if net else None),
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
