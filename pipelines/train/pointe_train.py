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
  pooling, 16 tokens; ``patches``: 8 x 8 pixel patches of the 64 px view, 64 tokens; ``sv``: the single-view
  model's ResNet-18 feature map of the view as that tab prepares it, 16 tokens of 512), with learned token
  positions and the scorer embedding added to every point: an image sample gets its render's grid and embedding, a
  caption sample its text embedding and no grid (zeros), a dropped one neither, so the model serves text -> 3D
  too. The grids are computed at the start of training from the pack's renders (``pointe_data`` stores them on
  white; ``point_e_embedded.grid_features``, the function the app runs on an uploaded image) with the scorer's
  image tower (no text encoder needed), or the single-view model, whose config's sha256 the base then records.
* upsample: the other 3072 points given 1024 (random subsets of the shape's 4096), an
  ``UpsamplePointDiffusionTransformer`` with the released channel scales; linear schedule.
* sdf: a ``CrossAttentionPointCloudSDFModel`` regressing the signed distance (positive inside) of query points
  (half near the surface, half uniform in the cube) to the shape's 4096 points: the distance to the nearest point,
  its sign from the pack's carved occupancy, interpolated.

The learned-range variance channels of the diffusion models are not trained (zero-initialised, they stay near 0):
the Heun sampler never reads them. Each run keeps an EMA of the weights, saves ``out/checkpoint.pt`` every
``ckpt_every`` steps and at the end, and resumes from it. Training needs torch, numpy and safetensors only.
The model sizes and options are ``pointe_model``'s, the inputs of a step ``pointe_batches``'; this file holds the
loss, the loop, the held-out evaluation, the export and the CLI.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.point_diffusion import build_model
from ..core.point_sampler import TIMESTEPS, alphas_cumprod
from ..core.training import ema_update
from .pointe_batches import attach_grid, make_batch
from .pointe_data import PointEData, load_pack
from .pointe_model import LOSS_WEIGHTS, MODELS, SCHEDULES, TrainOptions, model_config, points_needed


# ---------------------------------------------------------------------------------------------------- loss
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
    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=0.0, fused=dev.type == "cuda")
    start = 0
    if (out / "checkpoint.pt").is_file():
        state = torch.load(out / "checkpoint.pt", map_location=dev, weights_only=False)
        if state.get("config", cfg) != cfg:
            raise ValueError(f"{out / 'checkpoint.pt'} is of another model config ({state['config']}); resume with "
                             "its options or train into a fresh --out")
        same_grid(state, data, out / "checkpoint.pt")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optim.load_state_dict(state["optim"])
        start = state["step"]
        log(f"resumed {out / 'checkpoint.pt'} at step {start}")
    elif opts.init:
        start_from(opts.init, model, ema, cfg)
        log(f"started from {opts.init}")
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
                        opts=dataclasses.asdict(opts), config=cfg, grid_info=getattr(data, "grid_info", None)),
                   out / ".checkpoint.tmp")
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
        ema_update(ema, model, opts.ema, step)
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
    """Loss of the EMA model (conditioned, fixed seeds, the unweighted epsilon MSE) on the held-out shapes
    (``test_loss``) and on as many training shapes (``train_eval_loss``): the pair says whether the model
    memorises. ``train_loss`` (the running loss of the loop) is ``--loss-weight`` weighted, so it compares with
    neither (v20 weights the noisy timesteps, where the error is small: about 4x lower)."""
    test = torch.as_tensor(data.test if len(data.test) else data.train, device=dev)
    train = torch.as_tensor(data.train, device=dev)
    train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:len(test)].to(dev)]

    def loss_on(shapes_all: torch.Tensor) -> float:
        losses = []
        for r in range(repeats):
            gen = torch.Generator(dev).manual_seed(10_000 + r)
            for i in range(0, len(shapes_all), batch):
                shapes = shapes_all[i:i + batch]
                b = make_batch(data, shapes, cfg, dataclasses.replace(opts, cond_drop=0.0), gen)
                losses.append(float(loss_of(model, b, opts, ab, gen, weighted=False)) * len(shapes))
        return sum(losses) / (repeats * len(shapes_all))

    out = {"test_loss": loss_on(test), "train_eval_loss": loss_on(train)}
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


def start_from(folder: str, model, ema, cfg: dict) -> None:
    """Loads an exported model folder's weights into ``model`` and ``ema``; its architecture must be ``cfg``."""
    from ..core.priors.point_e_embedded import load_model_folder

    init, config = load_model_folder(Path(folder), "cpu")
    if config["model"] != cfg:
        raise ValueError(f"{folder} is of another model config ({config['model']}); train with its options")
    model.load_state_dict(init.state_dict())
    ema.load_state_dict(init.state_dict())


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


def same_grid(state: dict, data: PointEData, where: Path) -> None:
    """A grid base resumed or exported must see the grids it was trained on: the same features, and for 'sv' the
    same single-view model (a checkpoint from before grids were recorded passes)."""
    was, now = state.get("grid_info"), getattr(data, "grid_info", None)
    if was and now and was != now:
        raise ValueError(f"{where} was trained on grids {was}, but the pack now gives {now} (another single-view "
                         "model?): restore what it was trained with, or train into a fresh --out")


def export_runs(runs: str | Path = "runs/pointe", dest: str | Path = "assets/pointe", data: str = "",
                device: str = "auto") -> list[Path]:
    """Exports each ``runs/MODEL/checkpoint.pt`` there is (base, upsample, sdf) to ``dest/MODEL``, without training
    (scored on ``device``)."""
    dev = resolve_device(device)
    out = []
    for name in MODELS:
        ckpt = Path(runs) / name / "checkpoint.pt"
        if not ckpt.is_file():
            continue
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        opts = TrainOptions(**dict(state["opts"], data=data or state["opts"]["data"]))
        pack = load_pack(opts.data, dev)
        if state["config"].get("name") == "EmbeddedGridPointDiffusionTransformer":
            attach_grid(pack, opts.grid, dev)
            same_grid(state, pack, ckpt)
        ema = build_model(state["config"]).to(dev)
        ema.load_state_dict(state["ema"])
        ab = (torch.tensor(alphas_cumprod(SCHEDULES[name]), dtype=torch.float32, device=dev)
              if name in SCHEDULES else None)
        metrics = evaluate(ema, pack, state["config"], opts, ab, dev)
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
    p.add_argument("--device", default="auto", help="where the exported models are scored")
    args = p.parse_args(argv)
    for path in export_runs(args.runs, args.dest, args.data, args.device):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
