"""Point-E embedded tier, does the base read its condition? Two CPU checks (issue 17).

    python bench/pointe_condition.py bayes [--data .data/pointe/pointe_2048.npz] [--shapes 0] [--points 1024]
    python bench/pointe_condition.py tiny  [--shapes 8] [--steps 1000] [--prediction v|eps] [--cond-token]
                                           [--cond vec|fmap|patches|sv] [--heldout N]
    python bench/pointe_condition.py retrieval [--data ...]    # needs the built shapes (.data/pointe/shapes)

``bayes``: the best x0 error any model could reach on the held-out shapes (the yardstick of ``pointe_train``'s
``x0_mse_t*`` lines): the posterior mean of each noisy point given that the cloud is a sample of a known point set
(x0 = sum_p w_p p, w_p proportional to exp(-|x_t - sqrt(ab) p|^2 / 2 (1 - ab))), for the shape's own points
(oracle), the nearest training shape by image embedding (what retrieval knows), another held-out shape's
(shuffled), and all training shapes pooled (no condition, each point alone). A model may beat 'pooled' without
the condition (it sees the whole noisy cloud), never 'oracle'.

``tiny``: the decisive test of the conditioning path: a tiny base (width 64, 2 layers, 256 points) trained on a
handful of training shapes with the trainer's own batches and loss (``pointe_batches.make_batch``,
``pointe_train.loss_of``), then its x0 error with the true, shuffled and null condition at t = 400 .. 1000 against
the Bayes oracle on the same clouds, and clouds sampled (16 Heun steps, guidance 3) from each shape's condition:
F1@5 % to their own shape and to the others, and how many are nearest their own shape. A model that memorises 8
shapes and reads its condition identifies them all. ``--cond fmap|patches|sv``: the grid base
(``EmbeddedGridPointDiffusionTransformer``, the view's grid as tokens plus the embedding; needs a pack with
renders, ``pointe data renders``) instead of the vec base; ``--heldout N``: also clouds from N held-out shapes'
renders, F1@5 % to their truth.

``retrieval``: how much shape each candidate condition carries: F1@5 % on the held-out shapes of the training
shape nearest by the scorer's pooled embedding (what the base reads now), by its 4x4 feature map before pooling
(the layout of the released base40M's grid tokens), and by the 64 px silhouette (renders from the built shapes).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import REPO

import torch

from pipelines.core.point_diffusion import build_model
from pipelines.core.point_sampler import BASE_STAGE, alphas_cumprod, sample
from pipelines.core.shape_losses import f_score
from pipelines.train import pointe_train as pt
from pipelines.train.pointe_batches import attach_grid, make_batch
from pipelines.train.pointe_data import load_pack
from pipelines.train.pointe_model import LOSS_WEIGHTS, TrainOptions, model_config


def posterior_mean(xt: torch.Tensor, support: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """(K, 3) noisy xyz at alpha_bar a, (N, 3) candidate clean points -> (K, 3) E[x0 | x_t, x0 in support]."""
    w = torch.softmax(-torch.cdist(xt, a.sqrt() * support).square() / (2 * (1 - a)), -1)
    return w @ support


def bayes_errors(x0: torch.Tensor, supports: dict, ab: torch.Tensor, ts, gen: torch.Generator) -> dict:
    """x0 (B, K, 3) clean xyz in the diffusion's space; supports: name -> function(i) -> (N, 3) -> {t: {name: MSE}}."""
    out = {}
    for t in ts:
        a = ab[t]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=gen)
        out[t] = {name: float((torch.stack([posterior_mean(xt[i], sup(i), a) for i in range(len(x0))]) - x0)
                              .square().mean()) for name, sup in supports.items()}
    return out


def bayes(args) -> None:
    data = load_pack(args.data)
    test, train = torch.as_tensor(data.test), torch.as_tensor(data.train)
    test = test[:args.shapes or None]
    ab = torch.tensor(alphas_cumprod("cosine"), dtype=torch.float32)
    gen = torch.Generator().manual_seed(20_000)
    x0 = make_batch(data, test, dict(n_ctx=args.points), TrainOptions(), gen)["x0"][:, :3].transpose(1, 2)
    pts = data.xyz * 2
    sim = data.image_emb[test, 0] @ data.image_emb[train].reshape(-1, data.image_emb.shape[-1]).T
    nn_shape = train[sim.argmax(1) // data.image_emb.shape[1]]
    pooled = pts[train][:, ::32].reshape(-1, 3)
    supports = {"oracle": lambda i: pts[test[i]], "retrieval": lambda i: pts[nn_shape[i]],
                "shuffled": lambda i: pts[test[(i - 1) % len(test)]], "pooled": lambda i: pooled}
    res = bayes_errors(x0, supports, ab, (700, 400, 900), gen)
    print(f"Bayes-optimal x0 MSE (xyz), {len(test)} held-out shapes, {args.points} points")
    print("| t | " + " | ".join(supports) + " |\n|---|" + "---:|" * len(supports))
    for t, row in sorted(res.items()):
        print(f"| {t} | " + " | ".join(f"{v:.4f}" for v in row.values()) + " |")


def tiny(args) -> None:
    torch.manual_seed(args.seed)
    data = load_pack(args.data)
    shapes = torch.as_tensor(data.train[::len(data.train) // args.shapes][:args.shapes])
    grid = None
    if args.cond != "vec":
        g = attach_grid(data, args.cond, "cpu")
        grid = (g.shape[2], g.shape[3])
    cfg = dict(model_config("base", False, args.cond_token, args.prediction, "grid" if grid else "vec", grid),
               width=args.width, layers=args.layers, heads=2, n_ctx=args.points)
    if grid and args.grid_only:  # the grid alone: does the model read it without the pooled embedding?
        cfg["vec_dim"] = 0
    if grid and args.grid_add:
        cfg["grid_add"] = True
    opts = TrainOptions(model="base", loss_weight=args.loss_weight, cond_drop=args.cond_drop,
                        image_prob=args.image_prob)
    model = build_model(cfg).train()
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr)
    ab = torch.tensor(alphas_cumprod("cosine"), dtype=torch.float32)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for step in range(args.steps):
        for group in optim.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 50)
        batch = make_batch(data, shapes[torch.randint(0, len(shapes), (args.batch,), generator=gen)], cfg, opts, gen)
        loss = pt.loss_of(model, batch, opts, ab, gen)
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
    model.eval()
    print(f"{args.shapes} training shapes, width {args.width}, {args.layers} layers, {args.points} points, "
          f"prediction {args.prediction}, loss {args.loss_weight}, {'token' if args.cond_token else 'added'} condition, "
          f"cond {args.cond}{' (grid only)' if grid and args.grid_only else ''}{' + grid added' if args.grid_add else ''}, "
          f"{args.steps} steps "
          f"({time.perf_counter() - t0:.0f} s), final loss {float(loss.detach()):.4f}")
    g = torch.Generator().manual_seed(1)
    x0 = make_batch(data, shapes, cfg, opts, g)["x0"]
    conds = pt.true_conditions(data, shapes, cfg)
    ts = (400, 700, 900, 1000)
    print("| t | true | shuffled | null | Bayes, own shape | Bayes, shuffled |\n|---|---:|---:|---:|---:|---:|")
    with torch.no_grad():
        for t in ts:
            a = ab[t]
            xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=g)
            row = []
            for c in conds.values():
                eps = model(xt, torch.full((len(shapes),), t), **c)[:, :3]
                row.append(float((((xt[:, :3] - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1) - x0[:, :3])
                                 .square().mean()))
            x, pts = x0[:, :3].transpose(1, 2), data.xyz[shapes] * 2
            xt3 = xt[:, :3].transpose(1, 2)
            for shift in (0, 1):
                m = torch.stack([posterior_mean(xt3[i], pts[(i - shift) % len(shapes)], a) for i in range(len(x))])
                row.append(float((m - x).square().mean()))
            print(f"| {t} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
        stage = BASE_STAGE.__class__(**{**BASE_STAGE.__dict__, "steps": 16, "guidance_scale": args.guidance})
        own, other, hits = [], [], 0
        for seed in range(args.samples):
            xyz = sample(model, conds["true"], len(shapes), None, None, stage, seed=seed)[:, :3].transpose(1, 2) / 2
            f = torch.stack([f_score(xyz, data.xyz[shapes[j:j + 1]].expand(len(shapes), -1, -1), (0.05,))[0.05]
                             for j in range(len(shapes))], 1)  # (generated from i, scored against j)
            own.append(float(f.diag().mean()))
            other.append(float((f.sum() - f.diag().sum()) / (len(shapes) * (len(shapes) - 1))))
            hits += int((f.argmax(1) == torch.arange(len(shapes))).sum())
        held = []
        if args.heldout:
            test = torch.as_tensor(data.test[:args.heldout])
            c = pt.true_conditions(data, test, cfg)["true"]
            xyz = sample(model, c, len(test), None, None, stage, seed=0)[:, :3].transpose(1, 2) / 2
            held.append(float(f_score(xyz, data.xyz[test], (0.05,))[0.05].mean()))
            # the nearest of the model's training shapes to each held-out render by the pooled embedding: what
            # retrieval among them reaches
            sim = data.image_emb[test, 0] @ data.image_emb[shapes].reshape(-1, data.image_emb.shape[-1]).T
            nn_shape = shapes[sim.argmax(1) // data.image_emb.shape[1]]
            held.append(float(f_score(data.xyz[nn_shape], data.xyz[test], (0.05,))[0.05].mean()))
    print(f"sampled (16 Heun steps, guidance {args.guidance}, {args.samples} seeds): F1@5 % to its own shape "
          f"{sum(own) / len(own):.3f}, to the others {sum(other) / len(other):.3f}; nearest its own shape: {hits} / "
          f"{len(shapes) * args.samples}")
    if held:
        print(f"held out ({args.heldout} shapes, one cloud each): F1@5 % to their truth {held[0]:.3f}; retrieval "
              f"among the {len(shapes)} training shapes by the pooled embedding {held[1]:.3f}")


def retrieval(args) -> None:
    import numpy as np

    from pipelines.core.priors.embedded import load_embedded_scorer

    data = load_pack(args.data)
    shapes_dir = Path(args.data).parent / "shapes"
    if not (shapes_dir / f"{data.ids[0]}.npz").is_file():
        raise SystemExit(f"no built shapes in {shapes_dir}: `python -m pipelines pointe data build` writes them")
    rgba = np.stack([np.load(shapes_dir / f"{i}.npz")["rgba"] for i in data.ids])  # (S, V, 64, 64, 4)
    s, v = rgba.shape[:2]
    x = torch.from_numpy(rgba).float() / 255
    rgb = x[..., :3] * x[..., 3:] + (1 - x[..., 3:])  # on white, as the pack's embeddings
    scorer = load_embedded_scorer("cpu", "float32")
    tower = scorer.model.image_tower  # ..., AdaptiveAvgPool2d, Flatten, Linear
    with torch.no_grad():
        fmap = tower[:-3](scorer.preprocess(rgb.reshape(s * v, *rgb.shape[2:])))
        emb = torch.nn.functional.normalize(tower[-3:](fmap), dim=-1)
    test, train = torch.as_tensor(data.test), torch.as_tensor(data.train)
    alpha = x[..., 3].reshape(s, v, -1)
    feats = {"pooled embedding (256)": emb.reshape(s, v, -1), "feature map (4x4x256), centred": fmap.reshape(s, v, -1),
             "silhouette (64x64), centred": alpha}
    print(f"retrieval of the nearest training shape (view 0 against all {v} views), {len(test)} held-out shapes")
    print("| condition | F1@5 % |\n|---|---:|")
    for name, f in feats.items():
        if "centred" in name:
            f = f - f.mean((0, 1), keepdim=True)
        f = torch.nn.functional.normalize(f, dim=-1)
        nn_shape = train[(f[test, 0] @ f[train].reshape(-1, f.shape[-1]).T).argmax(1) // v]
        score = f_score(data.xyz[nn_shape], data.xyz[test], (0.05,))[0.05].mean()
        print(f"| {name} | {float(score):.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("check", choices=("bayes", "tiny", "retrieval"))
    p.add_argument("--data", default=str(REPO / ".data" / "pointe" / "pointe_2048.npz"))
    p.add_argument("--shapes", type=int, default=0, help="bayes: held-out shapes (0: all); tiny: training shapes")
    p.add_argument("--points", type=int, default=0, help="points a cloud (0: 1024 bayes, 256 tiny)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--prediction", choices=("eps", "v"), default="v")
    p.add_argument("--loss-weight", choices=LOSS_WEIGHTS, default="v20")
    p.add_argument("--samples", type=int, default=4, help="tiny: clouds sampled per shape (seeds)")
    p.add_argument("--cond-token", action="store_true")
    p.add_argument("--cond", choices=("vec", "fmap", "patches", "sv"), default="vec",
                   help="tiny: the vec base, or the grid base on this grid (a pack with renders)")
    p.add_argument("--heldout", type=int, default=0, help="tiny: also sample from this many held-out renders")
    p.add_argument("--grid-only", action="store_true", help="tiny, grid base: without the pooled embedding")
    p.add_argument("--grid-add", action="store_true", help="tiny, grid base: the flattened grid added to every point")
    p.add_argument("--image-prob", type=float, default=0.5, help="tiny: share of conditioned samples with an image")
    p.add_argument("--cond-drop", type=float, default=0.1)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.check == "bayes":
        args.points = args.points or 1024
        bayes(args)
    elif args.check == "retrieval":
        retrieval(args)
    else:
        args.shapes, args.points = args.shapes or 8, args.points or 256
        tiny(args)


if __name__ == "__main__":
    main()
