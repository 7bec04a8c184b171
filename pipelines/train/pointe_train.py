"""Training of the embedded Point-E models on ``pointe_data``'s pack: a small base model, upsampler and SDF model
of the released architectures (``core.point_diffusion``, smaller widths and depths), exported int8 to
``assets/pointe/{base,upsample,sdf}`` (the folder format of ``priors.point_e``).

    python -m pipelines pointe train base|upsample|sdf [--data .data/pointe/pointe.npz] [--out runs/pointe/MODEL]
                                   [--minutes 5] [--steps N] [--batch B] [--tiny] [--export assets/pointe/MODEL]
    python -m pipelines pointe export [--runs runs/pointe] [--dest assets/pointe]

* base: 1024 points (xyz and RGB in the diffusion's [-1, 1] space) conditioned on one vector, a
  ``CLIPImagePointDiffusionTransformer`` like ``base40M-imagevec``/``-textvec`` in one model: the embedded scorer's
  unit embedding of a render of the shape (``image_prob`` of the time) or of one of its captions (the scorer puts
  both in one space), and zeros ``cond_drop`` of the time, the unconditional input that classifier-free guidance
  uses; the vector is added to every point's features (``--no-cond-token``, the default; the released vec models'
  single token in front, ``--cond-token``, was ignored by the first shipped base: see ``TrainOptions.cond_token``).
  Cosine schedule, epsilon prediction (MSE), as the released base models. The base trains from a pack of 1024 or
  more points a shape (``pointe_data shrink``: a smaller pack to carry); the upsampler and SDF need the full pack.
* base with ``--cond grid``: an ``EmbeddedGridPointDiffusionTransformer``, the released base40M layout (image-grid
  tokens after the time token) on this tier's own grid (``--grid fmap``: the scorer's 4 x 4 feature map before
  pooling, 16 tokens; ``patches``: 8 x 8 pixel patches of the 64 px view, 64 tokens), with learned token
  positions and the scorer embedding added to every point: an image sample gets its render's grid and embedding, a
  caption sample its text embedding and no grid (zeros), a dropped one neither, so the model serves text -> 3D
  too. The grids are computed at the start of training from the pack's renders (``pointe_data`` stores them on
  white; ``point_e_embedded.grid_features``, the function the app runs on an uploaded image) with the scorer's
  image tower (no text encoder needed).
* upsample: the other 3072 points given 1024 (random subsets of the shape's 4096), an
  ``UpsamplePointDiffusionTransformer`` with the released channel scales; linear schedule.
* sdf: a ``CrossAttentionPointCloudSDFModel`` regressing the signed distance (positive inside) of query points
  (half near the surface, half uniform in the cube) to the shape's 4096 points: the distance to the nearest point,
  its sign from the pack's carved occupancy, interpolated.

The learned-range variance channels of the diffusion models are not trained (zero-initialised, they stay near 0):
the Heun sampler never reads them. Each run keeps an EMA of the weights, saves ``out/checkpoint.pt`` every
``ckpt_every`` steps and at the end, and resumes from it. Training needs torch, numpy and safetensors only.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.point_diffusion import build_model
from ..core.priors.point_e_embedded import GRID_FEATURES
from ..core.point_sampler import CHANNEL_BIASES, CHANNEL_SCALES, TIMESTEPS, alphas_cumprod
from .pointe_data import DEFAULT_ROOT, PointEData, load_pack

MODELS = {
    "base": dict(name="CLIPImagePointDiffusionTransformer", input_channels=6, output_channels=12, n_ctx=1024,
                 width=192, layers=6, heads=4, init_scale=0.25, time_token_cond=True, cond_drop_prob=0.1,
                 token_cond=True, clip_dim=256),
    "upsample": dict(name="UpsamplePointDiffusionTransformer", input_channels=6, output_channels=12, n_ctx=3072,
                     cond_ctx=1024, width=128, layers=4, heads=4, init_scale=0.25, time_token_cond=True,
                     cond_drop_prob=0.0, channel_scales=list(CHANNEL_SCALES), channel_biases=list(CHANNEL_BIASES)),
    "sdf": dict(name="CrossAttentionPointCloudSDFModel", n_ctx=4096, width=128, encoder_layers=4, encoder_heads=4,
                decoder_layers=2, decoder_heads=4, init_scale=0.25),
}
"""The shipped sizes: 3.0M, 0.8M and 1.2M parameters (about 5 MB in int8), against 40M for base40M; small enough
for ~800 shapes and a few minutes of one GPU."""
TINY = {"base": dict(width=32, layers=1, heads=2, n_ctx=256), "upsample": dict(width=32, layers=1, heads=2, n_ctx=768,
                                                                              cond_ctx=256),
        "sdf": dict(width=32, encoder_layers=1, decoder_layers=1, encoder_heads=2, decoder_heads=2, n_ctx=1024)}
"""For CPU tests: the same classes, milliseconds per step."""
SCHEDULES = {"base": "cosine", "upsample": "linear"}
LOSS_WEIGHTS = ("v", "v20", "eps")
"""As the released models (``point_sampler.schedule_of``)."""


@dataclass
class TrainOptions:
    model: str = "base"
    """base | upsample | sdf."""
    data: str = str(DEFAULT_ROOT / "pointe.npz")
    out: str = ""
    """Checkpoint folder (default runs/pointe/MODEL)."""
    steps: int = 200_000
    minutes: float = 5.0
    """Wall-clock budget of the loop; training stops at whichever of steps or minutes comes first."""
    batch: int = 0
    """Clouds per step (0: 128 base, 32 upsample, 32 sdf; 4 with ``tiny``)."""
    lr: float = 3e-4
    warmup: int = 200
    ema: float = 0.999
    cond_drop: float = 0.1
    image_prob: float = 0.5
    """Of the conditioned samples, the share with an image embedding (the rest: a caption's)."""
    queries: int = 2048
    """SDF query points per cloud."""
    log_every: int = 200
    ckpt_every: int = 2000
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    """bfloat16 autocast on CUDA."""
    loss_weight: str = "v20"
    """Diffusion models: 'v20' (each sample's noise MSE times min(1 / alpha_bar_t, 20), batch-normalised:
    v-prediction's weighting capped, which trains the x0 the sampler reads at high noise, where the global shape
    and the condition matter and plain eps MSE hardly looks; the second shipped base), 'v' (a v-prediction base:
    its plain v MSE, the cap lifted; an eps model: as 'v20') or 'eps' (each timestep alike: the released models,
    and the first shipped base). On the CPU test of ``bench/pointe_condition.py tiny`` (8 shapes, 2 seeds x 4
    clouds) a v base sampled clouds of F1@5 % 0.357 to their own shape with 'v20', 0.321 with 'v' (43 and 38 of
    64 nearest their own shape), though 'v' had the lower x0 error at t >= 900."""
    prediction: str = "v"
    """base: what the network predicts, 'v' (the default: ``CLIPImagePointDiffusionTransformer``'s v-prediction,
    still eps to the sampler) or 'eps' (the released models, and the bases shipped before). On a CPU test (8
    training shapes, width 64, 1000 steps, the same v-weighted loss) the eps network's x0 error at t = 1000 was
    0.95 against 0.33 for v (0.25 the best possible): eps nets cannot denoise precisely enough at high noise,
    where the condition is the only thing that says what the shape is."""
    cond_token: bool = False
    """base: the condition as one token in front of the points (the released vec models' layout). Off (the
    default): added to every point's features (the official code's other layout, ``token_cond=False``): the
    first shipped base, a token model trained 8 minutes, had learned to ignore its token (the same denoising
    error with the true, another shape's or no condition: ``bench/pointe_diagnose.py loss``)."""
    cond: str = "vec"
    """base: 'vec' (one scorer embedding: the shipped v3 layout) or 'grid' (the embedded grid base: the view's grid
    of ``grid`` features as tokens plus the embedding; see the module docstring)."""
    grid: str = "fmap"
    """--cond grid: the image grid, 'fmap' (the scorer's feature map before pooling) or 'patches' (8 x 8 pixel
    patches of the 64 px view)."""
    grid_add: bool = True
    """--cond grid: also the whole grid, flattened and projected, added to every point beside its tokens
    (``EmbeddedGridPointDiffusionTransformer.grid_add``; 'fmap': 4096 values, 0.8M parameters at width 192): on
    the CPU a tiny base read grid tokens alone only slowly."""
    tiny: bool = False
    export: str = ""
    """Also write the EMA weights, int8, to this folder when done."""
    command: str = ""


def model_config(name: str, tiny: bool = False, cond_token: bool = True, prediction: str = "eps",
                 cond: str = "vec", grid: tuple[int, int] | None = None, grid_add: bool = False) -> dict:
    """``grid``: (grid_dim, grid_tokens) of the image grid, for ``cond='grid'``."""
    cfg = dict(MODELS[name], **(TINY[name] if tiny else {}))
    if name == "base" and cond == "grid":
        vec_dim = cfg.pop("clip_dim")
        cfg.pop("token_cond")
        cfg.update(name="EmbeddedGridPointDiffusionTransformer", grid_dim=grid[0], grid_tokens=grid[1],
                   pos_embed=True, vec_dim=vec_dim, grid_add=grid_add, prediction=prediction)
    elif name == "base":
        cfg["token_cond"] = cond_token
        if prediction != "eps":  # left out for eps: the configs of the bases shipped before stay as they were
            cfg["prediction"] = prediction
    return cfg


def points_needed(name: str, cfg: dict) -> int:
    """Samples a shape the pack must hold to train this model."""
    return {"base": cfg["n_ctx"], "upsample": cfg.get("cond_ctx", 0) + cfg["n_ctx"], "sdf": cfg["n_ctx"]}[name]


# ------------------------------------------------------------------------------------------------- batches
def random_points(data: PointEData, shapes: torch.Tensor, k: int, gen: torch.Generator):
    """k of each shape's points, a fresh random subset per cloud: (B, k, 3) xyz (dithered within its uint8 cell)
    and (B, k, 3) uint8 colours."""
    b, n = len(shapes), data.xyz.shape[1]
    idx = torch.rand(b, n, generator=gen, device=shapes.device).argsort(1)[:, :k]
    xyz = torch.gather(data.xyz[shapes], 1, idx[..., None].expand(-1, -1, 3))
    rgb = torch.gather(data.rgb[shapes], 1, idx[..., None].expand(-1, -1, 3))
    return xyz + (torch.rand(xyz.shape, generator=gen, device=xyz.device) - 0.5) / 255, rgb


def to_diffusion(xyz: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """(B, K, 3) xyz in [-0.5, 0.5] and uint8 RGB -> (B, 6, K) in [-1, 1] (``point_sampler.CHANNEL_SCALES``)."""
    return torch.cat([xyz * 2, rgb.float() / 127.5 - 1], -1).transpose(1, 2)


def conditioning(data: PointEData, shapes: torch.Tensor, opts: TrainOptions, gen: torch.Generator,
                 grid: torch.Tensor | None = None) -> dict:
    """Per cloud a render's image embedding, a caption's text embedding, or zeros (dropped): {'embeddings': (B, E)};
    with ``grid`` (S, V, D, L), the views' grids of ``attach_grid``: {'embeddings': the render's grid (B, D, L),
    zeros for a caption or a dropped sample, 'vec': the embedding (B, E)}."""
    dev = shapes.device
    u = torch.rand(len(shapes), 3, generator=gen, device=dev)
    views = data.image_emb.shape[1]
    view = (u[:, 1] * views).long().clamp_max(views - 1)
    image = data.image_emb[shapes, view]
    n_caps = (data.shape_caps[shapes] >= 0).sum(1)
    cap = data.shape_caps[shapes, (u[:, 2] * n_caps).long().clamp_max(n_caps - 1)]
    text = data.text_emb[cap]
    dropped = u[:, 0] < opts.cond_drop
    use_image = u[:, 0] < opts.cond_drop + (1 - opts.cond_drop) * opts.image_prob
    emb = torch.where(use_image[:, None], image, text)
    emb = torch.where(dropped[:, None], torch.zeros_like(emb), emb)
    if grid is None:
        return dict(embeddings=emb)
    keep = (use_image & ~dropped).to(grid.dtype)[:, None, None]
    return dict(embeddings=grid[shapes, view].float() * keep, vec=emb)


def attach_grid(data: PointEData, features: str, device, scorer_dir: str | None = None) -> torch.Tensor:
    """(S, V, D, L) float32 grids of every render of the pack (``point_e_embedded.grid_features`` of the scorer's
    image tower), kept as ``data.grid``; the pack must hold the renders (``pointe_data`` writes them)."""
    from ..core.priors.point_e_embedded import grid_features, load_image_tower

    if data.renders is None:
        raise ValueError("this pack has no renders of the training shapes, which the grid base reads: add them with "
                         "`python -m pipelines pointe data renders --data PACK` (then shrink again)")
    if features not in GRID_FEATURES:
        raise ValueError(f"--grid must be one of {', '.join(GRID_FEATURES)}, not {features!r}")
    tower, size = load_image_tower(scorer_dir, device)
    s, v = data.renders.shape[:2]
    if data.renders.shape[2] != size:
        raise ValueError(f"the pack's renders are {data.renders.shape[2]} px; the scorer reads {size} px")
    g = grid_features(tower, data.renders.reshape(s * v, *data.renders.shape[2:]), features)
    data.grid = g.reshape(s, v, *g.shape[1:])
    data.grid_info = dict(features=features, image_size=size)
    return data.grid


def make_batch(data: PointEData, shapes: torch.Tensor, cfg: dict, opts: TrainOptions, gen: torch.Generator) -> dict:
    """The inputs of one step: ``x0`` (diffusion models) and the model's conditioning, or the SDF's query points,
    targets and cloud."""
    if opts.model == "base":
        xyz, rgb = random_points(data, shapes, cfg["n_ctx"], gen)
        grid = data.grid if cfg.get("name") == "EmbeddedGridPointDiffusionTransformer" else None
        return dict(x0=to_diffusion(xyz, rgb), cond=conditioning(data, shapes, opts, gen, grid))
    if opts.model == "upsample":
        k = cfg["cond_ctx"]
        xyz, rgb = random_points(data, shapes, k + cfg["n_ctx"], gen)
        x = to_diffusion(xyz, rgb)
        scale = torch.tensor(CHANNEL_SCALES, device=x.device)[None, :, None]
        bias = torch.tensor(CHANNEL_BIASES, device=x.device)[None, :, None]
        return dict(x0=x[..., k:], cond=dict(low_res=(x[..., :k] - bias) / scale))  # low_res in official units
    cloud, _ = random_points(data, shapes, cfg["n_ctx"], gen)
    query, sdf = sdf_targets(data, shapes, cloud, opts.queries, gen)
    return dict(query=query, cloud=cloud, sdf=sdf)


def sdf_targets(data: PointEData, shapes: torch.Tensor, cloud: torch.Tensor, q: int, gen: torch.Generator):
    """Query points (B, q, 3) and their signed distances (B, q), positive inside: half near the cloud (offsets of
    0.01 and 0.05 std), half uniform over the cube of side 1.02 (``point_clouds.SIDE``)."""
    b, dev = len(shapes), cloud.device
    near = q // 2
    pick = torch.randint(0, cloud.shape[1], (b, near), generator=gen, device=dev)
    std = torch.where(torch.rand(b, near, 1, generator=gen, device=dev) < 0.5, 0.01, 0.05)
    query = torch.cat([torch.gather(cloud, 1, pick[..., None].expand(-1, -1, 3))
                       + std * torch.randn(b, near, 3, generator=gen, device=dev),
                       (torch.rand(b, q - near, 3, generator=gen, device=dev) - 0.5) * 1.02], 1)
    dist = torch.cdist(query, cloud).amin(-1)
    occ = data.occupancy[shapes].float()[:, None]  # (B, 1, R, R, R) indexed [x, y, z]: grid_sample wants (z, y, x)
    inside = F.grid_sample(occ, (2 * query).flip(-1)[:, :, None, None], align_corners=False)[:, 0, :, 0, 0] > 0.5
    return query, torch.where(inside, dist, -dist)


def loss_of(model, batch: dict, opts: TrainOptions, ab: torch.Tensor | None, gen: torch.Generator,
            weighted: bool = True) -> torch.Tensor:
    """Epsilon MSE at a uniform timestep (diffusion models; ``opts.loss_weight`` when ``weighted``) or the SDF's
    MSE."""
    if opts.model == "sdf":
        return F.mse_loss(model(batch["query"].transpose(1, 2), batch["cloud"].transpose(1, 2)).float(), batch["sdf"])
    x0 = batch["x0"]
    t = torch.randint(0, TIMESTEPS, (len(x0),), generator=gen, device=x0.device)
    eps = torch.randn(x0.shape, generator=gen, device=x0.device)
    a = ab[t][:, None, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    if opts.loss_weight not in LOSS_WEIGHTS:
        raise ValueError(f"--loss-weight must be one of {', '.join(LOSS_WEIGHTS)}, not {opts.loss_weight!r}")
    if weighted and opts.loss_weight == "v" and getattr(model, "prediction", "eps") == "v":
        # a v network: the plain v MSE (= eps MSE / alpha_bar, unclamped: v is of unit scale at every t)
        v = model(xt, t, raw=True, **batch["cond"])[:, :x0.shape[1]].float()
        return F.mse_loss(v, a.sqrt() * eps - (1 - a).sqrt() * x0)
    out = model(xt, t, **batch["cond"])
    if not weighted or opts.loss_weight == "eps":
        return F.mse_loss(out[:, :x0.shape[1]].float(), eps)
    w = (1 / a.flatten()).clamp(max=20.0)
    return ((out[:, :x0.shape[1]].float() - eps) ** 2).mean((1, 2)).mul(w).sum() / w.sum()


# ------------------------------------------------------------------------------------------------ training
def resolve_device(device: str) -> torch.device:
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        "cpu" if device == "auto" else device)


def train(opts: TrainOptions, log=print) -> dict:
    """Trains (or resumes) one model; returns {'step', 'metrics', 'out', 'export'}."""
    if opts.loss_weight not in LOSS_WEIGHTS:
        raise ValueError(f"--loss-weight must be one of {', '.join(LOSS_WEIGHTS)}, not {opts.loss_weight!r}")
    if opts.prediction not in ("eps", "v"):
        raise ValueError(f"--prediction must be eps or v, not {opts.prediction!r}")
    if opts.cond not in ("vec", "grid"):
        raise ValueError(f"--cond must be vec or grid, not {opts.cond!r}")
    dev = resolve_device(opts.device)
    torch.backends.cuda.matmul.allow_tf32 = True  # what runs outside the bfloat16 autocast
    out = Path(opts.out or f"runs/pointe/{opts.model}")
    out.mkdir(parents=True, exist_ok=True)
    data = load_pack(opts.data, dev)
    grid_shape = None
    if opts.model == "base" and opts.cond == "grid":
        g = attach_grid(data, opts.grid, dev)
        grid_shape = (g.shape[2], g.shape[3])
        log(f"grid conditioning: {opts.grid} of {g.shape[0] * g.shape[1]} renders, {g.shape[3]} tokens of {g.shape[2]}")
    cfg = model_config(opts.model, opts.tiny, opts.cond_token, opts.prediction, opts.cond, grid_shape, opts.grid_add)
    if data.xyz.shape[1] < points_needed(opts.model, cfg):
        raise ValueError(f"{opts.data} holds {data.xyz.shape[1]} points a shape; the {opts.model} model needs "
                         f"{points_needed(opts.model, cfg)}: use the full pack (`python -m pipelines pointe data pack`)")
    batch_size = opts.batch or (4 if opts.tiny else 128 if opts.model == "base" else 32)
    if opts.tiny:
        opts = dataclasses.replace(opts, queries=min(opts.queries, 256))
    model = build_model(cfg).to(dev).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    model_params, ema_params = list(model.parameters()), list(ema.parameters())
    optim = torch.optim.AdamW(model_params, lr=opts.lr, weight_decay=0.0, fused=dev.type == "cuda")
    start = 0
    if (out / "checkpoint.pt").is_file():
        state = torch.load(out / "checkpoint.pt", map_location=dev, weights_only=False)
        if state.get("config", cfg) != cfg:
            raise ValueError(f"{out / 'checkpoint.pt'} is of another model config ({state['config']}); resume with "
                             "its options or train into a fresh --out")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optim.load_state_dict(state["optim"])
        start = state["step"]
        log(f"resumed {out / 'checkpoint.pt'} at step {start}")
    ab = (torch.tensor(alphas_cumprod(SCHEDULES[opts.model]), dtype=torch.float32, device=dev)
          if opts.model in SCHEDULES else None)
    train_idx = torch.as_tensor(data.train, device=dev)
    gen = torch.Generator(dev).manual_seed(opts.seed * 1_000_003 + start)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if opts.amp and dev.type == "cuda" else None
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{opts.model}: {n_params / 1e6:.2f}M parameters, {len(train_idx)} training shapes, batch {batch_size}, "
        f"{dev}, up to {opts.steps} steps or {opts.minutes} min")

    def save(step: int) -> None:
        torch.save(dict(model=model.state_dict(), ema=ema.state_dict(), optim=optim.state_dict(), step=step,
                        opts=dataclasses.asdict(opts), config=cfg), out / ".checkpoint.tmp")
        (out / ".checkpoint.tmp").replace(out / "checkpoint.pt")

    t0, done, running = time.perf_counter(), start, None
    for step in range(start, opts.steps):
        if time.perf_counter() - t0 > opts.minutes * 60:
            break
        for group in optim.param_groups:
            group["lr"] = opts.lr * min(1.0, (step + 1) / opts.warmup)
        shapes = train_idx[torch.randint(0, len(train_idx), (batch_size,), generator=gen, device=dev)]
        batch = make_batch(data, shapes, cfg, opts, gen)
        with amp or torch.autocast("cpu", enabled=False):
            loss = loss_of(model, batch, opts, ab, gen)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        decay = min(opts.ema, (1 + step) / (10 + step))  # a short warm-up: early EMAs would average noise
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, model_params, 1 - decay)
        running = loss.detach() if running is None else 0.98 * running + 0.02 * loss.detach()
        done = step + 1
        if done % opts.log_every == 0:
            log(f"step {done}: loss {running.item():.4f} ({time.perf_counter() - t0:.0f}s)")
        if done % opts.ckpt_every == 0:
            save(done)
    save(done)
    metrics = dict(train_loss=float(running) if running is not None else float("nan"),
                   **evaluate(ema, data, cfg, opts, ab, dev, batch_size), minutes=(time.perf_counter() - t0) / 60)
    log(f"{opts.model}: {done} steps, " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    dest = export(opts, ema, cfg, metrics, done, data, opts.export) if opts.export else None
    return dict(step=done, metrics=metrics, out=out, export=dest)


@torch.no_grad()
def evaluate(model, data: PointEData, cfg: dict, opts: TrainOptions, ab, dev, batch: int = 32, repeats: int = 2) -> dict:
    """Held-out loss of the EMA model: the training loss on the test shapes (conditioned), fixed seeds."""
    test = torch.as_tensor(data.test if len(data.test) else data.train, device=dev)
    losses = []
    for r in range(repeats):
        gen = torch.Generator(dev).manual_seed(10_000 + r)
        for i in range(0, len(test), batch):
            shapes = test[i:i + batch]
            b = make_batch(data, shapes, cfg, dataclasses.replace(opts, cond_drop=0.0), gen)
            losses.append(float(loss_of(model, b, opts, ab, gen, weighted=False)) * len(shapes))
    out = {"test_loss": sum(losses) / (repeats * len(test))}
    if opts.model == "base":
        out.update(condition_use(model, data, cfg, opts, ab, test[:batch]))
    return out


@torch.no_grad()
def condition_use(model, data: PointEData, cfg: dict, opts: TrainOptions, ab, shapes: torch.Tensor,
                  ts: tuple = (700, 400)) -> dict:
    """Whether the base model reads its condition: the x0 error (xyz MSE in the diffusion's space, clamped to
    [-1, 1] as the sampler does) at timesteps ``ts`` on the same noisy clouds with the true image embedding,
    another shape's and zeros. The three are equal for a model that ignores it.

    Mind the scale: the gap is small even for a perfect model. On the 84 held-out shapes (1024 points) the
    Bayes-optimal x0 error at t = 700 is 0.168 knowing the exact shape, 0.185 knowing the nearest training
    shape, 0.201 knowing another shape; at t = 400: 0.115 / 0.142 / 0.171 (``bench/pointe_condition.py bayes``).
    The noisy cloud itself says much of the shape at t = 700, so t = 400 separates the conditions more."""
    gen = torch.Generator(shapes.device).manual_seed(20_000)
    x0 = make_batch(data, shapes, cfg, opts, gen)["x0"]
    conds = true_conditions(data, shapes, cfg)
    out = {}
    for t in ts:
        eps = torch.randn(x0.shape, generator=gen, device=x0.device)
        a = ab[t]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        for name, c in conds.items():
            pred = model(xt, torch.full((len(shapes),), t, device=x0.device), **c)[:, :3].float()
            x0_hat = ((xt[:, :3] - (1 - a).sqrt() * pred) / a.sqrt()).clamp(-1, 1)
            out[f"x0_mse_t{t}_{name}"] = float((x0_hat - x0[:, :3]).square().mean())
    return out


def true_conditions(data: PointEData, shapes: torch.Tensor, cfg: dict, view: int = 0) -> dict:
    """{'true', 'shuffled', 'null'}: the base's conditioning of each shape's render ``view`` (image embedding, and
    its grid for the grid base), the next shape's, and zeros."""
    c = {"embeddings": data.image_emb[shapes, view]}
    if cfg.get("name") == "EmbeddedGridPointDiffusionTransformer":
        c = {"embeddings": data.grid[shapes, view].float(), "vec": c["embeddings"]}
    return {"true": c, "shuffled": {k: v.roll(1, 0) for k, v in c.items()},
            "null": {k: torch.zeros_like(v) for k, v in c.items()}}


# -------------------------------------------------------------------------------------------------- export
def export(opts: TrainOptions, ema, cfg: dict, metrics: dict, step: int, data: PointEData, dest: str | Path) -> Path:
    """The EMA weights as an int8 prior folder (``point_e_embedded.load_model_folder`` reads it)."""
    from ..core.priors.prior_folder import save_prior
    from ..core.shape_packs import credits_markdown
    from .priors_data import data_summary

    config = dict(model=cfg, schedule=SCHEDULES.get(opts.model, ""))
    grid = cfg.get("name") == "EmbeddedGridPointDiffusionTransformer"
    if opts.model == "base":
        config.update(condition="scorer-grid" if grid else "scorer", scorer=data.scorer)
    if grid:
        config["grid"] = dict(getattr(data, "grid_info", None) or dict(features=opts.grid, image_size=64))
    layout = "one scorer-embedding token" if cfg.get("token_cond") else "the scorer embedding added to every point"
    if grid:
        layout = (f"the view's {cfg['grid_tokens']} grid tokens ({config['grid']['features']}) after the time token, "
                  f"the scorer embedding{' and the flattened grid' if cfg.get('grid_add') else ''} added to every point")
    if cfg.get("prediction", "eps") != "eps":
        layout += f", {cfg['prediction']}-prediction"
    what = {"base": f"Point-E base model ({cfg['name']}, {layout})",
            "upsample": "Point-E upsampler (UpsamplePointDiffusionTransformer)",
            "sdf": "Point-E SDF model (CrossAttentionPointCloudSDFModel)"}[opts.model]
    manifest = dict(
        model=what, parameters=sum(p.numel() for p in ema.parameters()), steps=step, metrics=metrics,
        command=opts.command or f"python -m pipelines pointe train {opts.model} --export {dest}",
        options=dataclasses.asdict(opts), data=dict(data_summary(data.meta), file=Path(opts.data).name,
                                                    sha256=data.sha256),
        created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        license="weights: trained by gen3d on surface samples of CC0 / CC-BY 3.0 (Sweet Home 3D furniture) and zlib "
                "(pybullet_data) models; see CREDITS.md")
    credits = credits_markdown(data.meta, "Embedded Point-E models: training data credits")
    return save_prior(dest, f"pointe-{opts.model}", ema, config, manifest, credits, dtype="int8")


def export_runs(runs: str | Path = "runs/pointe", dest: str | Path = "assets/pointe", data: str = "") -> list[Path]:
    """Exports each ``runs/MODEL/checkpoint.pt`` there is (base, upsample, sdf) to ``dest/MODEL``, without training."""
    out = []
    for name in MODELS:
        ckpt = Path(runs) / name / "checkpoint.pt"
        if not ckpt.is_file():
            continue
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        opts = TrainOptions(**dict(state["opts"], data=data or state["opts"]["data"]))
        pack = load_pack(opts.data)
        if state["config"].get("name") == "EmbeddedGridPointDiffusionTransformer":
            attach_grid(pack, opts.grid, "cpu")
        ema = build_model(state["config"])
        ema.load_state_dict(state["ema"])
        ab = torch.tensor(alphas_cumprod(SCHEDULES[name]), dtype=torch.float32) if name in SCHEDULES else None
        metrics = evaluate(ema, pack, state["config"], opts, ab, torch.device("cpu"))
        out.append(export(opts, ema, state["config"], metrics, state["step"], pack, Path(dest) / name))
    return out


# ----------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines pointe train", description=__doc__.split("\n\n")[0])
    p.add_argument("model", choices=list(MODELS))
    for f in dataclasses.fields(TrainOptions):
        if f.name in ("model", "command"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            p.add_argument(flag, type=kind, default=f.default, help=f"(default: {f.default})")
    args = vars(p.parse_args(argv))
    opts = TrainOptions(**args, command="python -m pipelines pointe train " + " ".join(argv or sys.argv[1:]))
    try:
        train(opts)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def export_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines pointe export",
                                description="export trained checkpoints (EMA, int8) to the embedded folder")
    p.add_argument("--runs", default="runs/pointe", help="folder with base/, upsample/, sdf/ checkpoints")
    p.add_argument("--dest", default="assets/pointe")
    p.add_argument("--data", default="", help="the pack (default: the one each run trained on)")
    args = p.parse_args(argv)
    for path in export_runs(args.runs, args.dest, args.data):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
