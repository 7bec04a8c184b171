"""Point-E embedded tier, why the held-out F1 is low: small CPU-sized checks of the shipped models on the pack.

    python bench/pointe_diagnose.py loss   [--models assets/pointe] [--shapes 16]       # seconds to minutes on a CPU
    python bench/pointe_diagnose.py sample [--shapes 8] [--steps 12] [--split test] [--upsample] [--guidance 3]

``loss``: the base model's denoising error on fixed noisy clouds of held-out and training shapes, with the true
conditioning (view 0's image embedding), another shape's (shuffled) and zeros (null). A model that uses its
conditioning has a clearly lower x0 error with the true one at high noise (t >= 700), where the noisy points say
little about the shape.

``sample``: clouds from the true / shuffled / null conditioning (guidance on x0 as the app), scored against the
true surface samples: F1 at 1, 2, 5 % as sampled; after the best of 24 turns about z; after a similarity
alignment (centroids, RMS radius, best turn, then rigid ICP with scale): if the aligned F1 is much higher than the
raw one, generated and true clouds are in different frames. Also the truth (another random subset of the same
size: the floor) and retrieval (the training shape with the nearest image embedding). ``--upsample`` scores the
4096-point clouds after the upsampler as well as the base's 1024.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from common import REPO

import torch

from pipelines.core.shape_losses import f_score, nearest
from pipelines.train.pointe_data import load_pack
from pipelines.train.pointe_batches import random_points, to_diffusion

TAUS = (0.01, 0.02, 0.05)


def rotate_z(xyz: torch.Tensor, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return xyz @ torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], device=xyz.device).T


def similarity_align(pred: torch.Tensor, gt: torch.Tensor, iters: int = 10) -> torch.Tensor:
    """(B, K, 3) pred moved onto (B, N, 3) gt: centroids, RMS radius, the best of 24 turns about z (F1@5 %), then
    ``iters`` rounds of ICP with a uniform scale (Umeyama on nearest-neighbour pairs)."""
    p = pred - pred.mean(1, keepdim=True)
    g_c = gt.mean(1, keepdim=True)
    g = gt - g_c
    p = p * (g.square().sum(-1).mean(1) / p.square().sum(-1).mean(1).clamp_min(1e-12)).sqrt()[:, None, None]
    turns = torch.stack([rotate_z(p, 2 * math.pi * k / 24) for k in range(24)])  # (24, B, K, 3)
    f = torch.stack([f_score(t, g, (0.05,))[0.05] for t in turns])
    p = turns[f.argmax(0), torch.arange(len(p))]
    for _ in range(iters):
        q = torch.gather(g, 1, nearest(p, g)[..., None].expand(-1, -1, 3))
        mp, mq = p.mean(1, keepdim=True), q.mean(1, keepdim=True)
        a, b = p - mp, q - mq
        u, s, vt = torch.linalg.svd(b.transpose(1, 2) @ a)
        d = torch.ones_like(s)
        d[:, -1] = torch.sign(torch.linalg.det(u @ vt))
        rot = u @ torch.diag_embed(d) @ vt
        scale = (s * d).sum(-1) / a.square().sum((1, 2)).clamp_min(1e-12)
        p = scale[:, None, None] * a @ rot.transpose(1, 2) + mq
    return p + g_c


def f1_rows(xyz: torch.Tensor, gt: torch.Tensor) -> dict:
    f = f_score(xyz, gt, TAUS)
    best = torch.stack([f_score(rotate_z(xyz, 2 * math.pi * k / 24), gt, (0.05,))[0.05] for k in range(24)]).amax(0)
    aligned = f_score(similarity_align(xyz, gt), gt, (0.05,))[0.05]
    return {"F1@1%": f[0.01], "F1@2%": f[0.02], "F1@5%": f[0.05], "F1@5% best z-turn": best,
            "F1@5% similarity+ICP": aligned}


def conditions(data, shapes: torch.Tensor) -> dict:
    e = data.image_emb[shapes, 0]
    return {"true": e, "shuffled": e.roll(1, 0), "null": torch.zeros_like(e)}


@torch.no_grad()
def loss_check(base, data, n: int, seed: int = 0) -> None:
    from pipelines.core.point_sampler import alphas_cumprod

    ab = torch.tensor(alphas_cumprod("cosine"), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    print("| split | t | x0 MSE (xyz), true | shuffled | null | eps MSE, true | shuffled | null |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for split, idx in (("test", data.test), ("train", data.train)):
        shapes = torch.as_tensor(idx[::max(1, len(idx) // n)][:n])
        xyz, rgb = random_points(data, shapes, base.n_ctx, gen)
        x0 = to_diffusion(xyz, rgb)
        for t in (150, 400, 700, 900):
            eps = torch.randn(x0.shape, generator=gen)
            a = ab[t]
            xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
            x0e, epe = [], []
            for c in conditions(data, shapes).values():
                out = base(xt, torch.full((len(shapes),), t), embeddings=c)[:, :6]
                x0e.append(float((((xt - (1 - a).sqrt() * out) / a.sqrt() - x0)[:, :3] ** 2).mean()))
                epe.append(float(((out - eps) ** 2).mean()))
            print(f"| {split} | {t} | " + " | ".join(f"{v:.4f}" for v in x0e + epe) + " |", flush=True)


def sample_check(models, data, args) -> None:
    from pipelines.core.point_sampler import BASE_STAGE, UPSAMPLE_STAGE, sample, to_official_units

    idx = data.test if args.split == "test" else data.train
    shapes = torch.as_tensor(idx[::max(1, len(idx) // args.shapes)][:args.shapes])
    gt = data.xyz[shapes]
    base_stage = BASE_STAGE.__class__(**{**BASE_STAGE.__dict__, "steps": args.steps, "guidance_scale": args.guidance})
    up_stage = UPSAMPLE_STAGE.__class__(**{**UPSAMPLE_STAGE.__dict__, "steps": args.steps})
    rows = []
    for name, emb in conditions(data, shapes).items():
        if name not in args.conditions.split(","):
            continue
        t0 = time.perf_counter()
        x = sample(models["base"], {"embeddings": emb}, len(shapes), None, None, base_stage, seed=args.seed)
        rows.append((f"{name}, base 1024", time.perf_counter() - t0, f1_rows(x[:, :3].transpose(1, 2) / 2, gt)))
        if args.upsample and models.get("upsample") is not None:
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(args.seed + 1)
            from pipelines.core.point_sampler import sample_stage, schedule_of

            up = models["upsample"]
            last = None
            for st in sample_stage(up, (len(shapes), 6, up.n_ctx), {"low_res": to_official_units(x)}, up_stage,
                                   schedule_of(up), gen, "cpu", "upsample", prefix=x):
                last = st.x0
            rows.append((f"{name}, upsampled 4096", time.perf_counter() - t0,
                         f1_rows(last[:, :3].transpose(1, 2) / 2, gt)))
    gen = torch.Generator().manual_seed(123)
    truth, _ = random_points(data, shapes, models["base"].n_ctx, gen)
    rows.append(("truth, random 1024 (floor)", 0.0, f1_rows(truth, gt)))
    train = torch.as_tensor(data.train)
    sim = data.image_emb[shapes, 0] @ data.image_emb[train].reshape(-1, data.image_emb.shape[-1]).T
    owner = train.repeat_interleave(data.image_emb.shape[1])
    sim[owner[None] == shapes[:, None]] = -2.0  # on the train split: not the shape itself
    nn_shape = owner[sim.argmax(1)]
    rows.append(("retrieval (nearest training render), 1024", 0.0, f1_rows(random_points(data, nn_shape, 1024,
                                                                                         gen)[0], gt)))
    keys = list(rows[0][2])
    print(f"{len(shapes)} {args.split} shapes, {args.steps} Heun steps/stage, guidance {args.guidance}")
    print("| clouds | s | " + " | ".join(keys) + " |")
    print("|---|---:|" + "---:|" * len(keys))
    for name, s, r in rows:
        print(f"| {name} | {s:.0f} | " + " | ".join(f"{float(r[k].mean()):.3f}" for k in keys) + " |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("check", choices=("loss", "sample"))
    p.add_argument("--models", default=str(REPO / "assets" / "pointe"))
    p.add_argument("--data", default=str(REPO / ".data" / "pointe" / "pointe.npz"))
    p.add_argument("--shapes", type=int, default=8)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--conditions", default="true,shuffled,null")
    p.add_argument("--upsample", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from pipelines.core.priors.point_e_embedded import load_model_folder

    data = load_pack(args.data)
    models = {"base": load_model_folder(Path(args.models) / "base", "cpu")[0]}
    if args.upsample:
        models["upsample"] = load_model_folder(Path(args.models) / "upsample", "cpu")[0]
    if args.check == "loss":
        loss_check(models["base"], data, args.shapes, args.seed)
    else:
        sample_check(models, data, args)


if __name__ == "__main__":
    main()
