"""DreamFusion's score distillation with Stable Diffusion 2.1-base: the time of one guidance step and of a whole
run at 64x64, on an architecture-identical, randomly initialised SD 2.1-base (the real one's FLOPs; no download).

    python bench/dreamfusion_sds.py                                  # GPU: guidance step, then a 10k-step run
    python bench/dreamfusion_sds.py --run-steps 0 --dtype bfloat16   # the guidance step alone, in bf16
    python bench/dreamfusion_sds.py --compile                        # with torch.compile on the UNet and VAE
    python bench/dreamfusion_sds.py --tiny --device cpu              # the same code on the test-tier model

The random model (UNet2DConditionModel, AutoencoderKL and CLIPTextModel built from the configs written out
in ``pipelines/core/priors/testing.py``) is saved with ``save_pretrained`` to --model-dir (reused when there)
and loaded by the loader real models go through, so the timed code is the app's. A guidance step is what
each training step asks of the prior: B renders (64x64) resized to 512x512, the VAE encoder, the UNet on the
noised latents with classifier-free guidance (batch 2B), the SDS loss and its backward into the renders.
The run is ``pipelines.dreamfusion`` itself (exports off): student renders, normals, losses, optimiser.
Prints a summary and writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from common import apply_overrides, device_name, event_printer, profile_to_file

from pipelines.dreamfusion import DreamFusionConfig, run
from pipelines.events import run_to_completion

REPO = Path(__file__).resolve().parents[1]
MODES = {"eager": "off", "compile": "default", "graphs": "reduce-overhead", "autotune": "max-autotune"}
"""torch.compile mode of each variant."""


def make_model(folder: Path, tiny: bool, dtype, device) -> Path:
    """Saves the random model once; a folder already holding a complete one is reused."""
    from pipelines.core.priors.stable_diffusion import missing_files
    from pipelines.core.priors.testing import SD21_BASE, TINY_SD, save_stable_diffusion

    if folder.is_dir() and not missing_files(folder):
        print(f"reusing the random model in {folder}", flush=True)
        return folder
    t0 = time.perf_counter()
    save_stable_diffusion(folder, TINY_SD if tiny else SD21_BASE, seed=0, dtype=dtype, device=device)
    print(f"built and saved a random {'tiny' if tiny else 'SD 2.1-base'} model to {folder} in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)
    return folder


class Clock:
    """Wall time of GPU work: CUDA events on CUDA, perf_counter elsewhere (milliseconds)."""

    def __init__(self, device):
        import torch

        self.cuda = device.type == "cuda"
        self.torch = torch

    def __call__(self):
        if self.cuda:
            ev = self.torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def ms(self, a, b) -> float:
        if self.cuda:
            b.synchronize()
            return a.elapsed_time(b)
        return (b - a) * 1e3


def time_guidance(g, batch: int, resolution: int, iters: int, warmup: int, scale: float) -> dict:
    """Mean milliseconds of a whole guidance step (back to back, no sync inside), then of its parts."""
    import torch

    dev = g.device
    clock = Clock(dev)
    text = g.encode_prompt("a DSLR photo of a hamburger, front view", "")
    images = torch.rand(batch, resolution, resolution, 3, device=dev, requires_grad=True)

    def step():
        out = g.sds(images, text, scale)
        out.loss.backward()
        return out

    for _ in range(warmup):
        out = step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = clock()
    for _ in range(iters):
        out = step()
    end = clock()
    result = {"guidance_step_ms": clock.ms(start, end) / iters, "loss_finite": bool(torch.isfinite(out.loss)),
              "grad_norm": float(out.grad_norm)}
    # Breakdown (synchronised between parts, so their sum exceeds the back-to-back step a little).
    parts = {"vae_encode_ms": 0.0, "unet_cfg_ms": 0.0, "backward_ms": 0.0}
    for _ in range(iters):
        g.step_begin()
        t0 = clock()
        latents = g.encode_images(images)
        t1 = clock()
        out = g.sds_latents(latents, text, scale)
        t2 = clock()
        out.loss.backward()
        t3 = clock()
        parts["vae_encode_ms"] += clock.ms(t0, t1) / iters
        parts["unet_cfg_ms"] += clock.ms(t1, t2) / iters
        parts["backward_ms"] += clock.ms(t2, t3) / iters
    result.update(parts)
    if dev.type == "cuda":
        result["guidance_peak_gpu_gb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the test-tier model instead of SD 2.1-base (a CPU check)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    ap.add_argument("--model-dir", default="", help="where the random model is saved (default: under outputs/bench)")
    ap.add_argument("--batch", type=int, default=1, help="renders per guidance step")
    ap.add_argument("--resolution", type=int, default=64, help="render side before the resize to the prior's input")
    ap.add_argument("--iters", type=int, default=0, help="timed guidance steps (default: 50 GPU, 3 CPU)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed guidance steps first (default: 10 GPU, 1 CPU)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet and the VAE encoder")
    ap.add_argument("--variants", nargs="+", default=["eager"], choices=["eager", "compile", "graphs", "autotune"],
                    help="time these in turn on one model (compile: torch.compile of the UNet and VAE encoder; "
                         "graphs: the same with CUDA graphs, mode reduce-overhead; autotune: mode max-autotune, graphs "
                         "and kernels chosen by timing, minutes of compiling); the run uses the last")
    ap.add_argument("--cudnn-benchmark-limit", type=int, default=-1,
                    help="cuDNN algorithms tried per convolution by benchmark mode (torch's default 10; 0: all)")
    ap.add_argument("--contiguous", action="store_true",
                    help="keep NCHW memory (the loader uses channels_last on CUDA)")
    ap.add_argument("--run-steps", type=int, default=-1,
                    help="steps of the whole run (default: 10000 GPU, 3 CPU; 0: skip the run)")
    ap.add_argument("--preset", default="", help="DreamFusionConfig preset for the run (default: the config's)")
    ap.add_argument("--set", nargs="*", default=[], help="extra DreamFusionConfig overrides, key=value")
    ap.add_argument("--profile", type=int, default=0,
                    help="also profile a run of this many steps (after a 10-step warm-up run); the table goes next "
                         "to the JSON as .profile.txt")
    ap.add_argument("--json", default="",
                    help="write the results here (default: bench/results/dreamfusion_sds_<model>_<device>.json)")
    args = ap.parse_args()

    import torch

    from pipelines.config import resolve_device
    from pipelines.core.priors.stable_diffusion import load_stable_diffusion, resolve_dtype

    dev = resolve_device(args.device)
    gpu = dev.type == "cuda"
    dtype = resolve_dtype(args.dtype, dev)
    name = "tiny" if args.tiny else "sd21-base"
    folder = Path(args.model_dir or REPO / "outputs" / "bench" / f"random-{name}-{str(dtype).removeprefix('torch.')}")
    make_model(folder, args.tiny, dtype, dev)
    t0 = time.perf_counter()
    g = load_stable_diffusion(str(folder), dev, args.dtype)
    load_s = time.perf_counter() - t0
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # as pipelines.dreamfusion sets it
        if args.cudnn_benchmark_limit >= 0:
            torch.backends.cudnn.benchmark_limit = args.cudnn_benchmark_limit
    if args.contiguous:
        g.unet.to(memory_format=torch.contiguous_format)
        g.vae.to(memory_format=torch.contiguous_format)
    n_params = {k: sum(p.numel() for p in getattr(g, k).parameters()) for k in ("unet", "vae", "text_encoder")}
    print(f"model: {name}, {dtype} on {dev}; params {n_params}; prior input {g.resolution}px; loaded in {load_s:.1f}s",
          flush=True)

    iters = args.iters or (50 if gpu else 3)
    warmup = args.warmup or (10 if gpu else 1)
    variants = ["compile"] if args.compile else args.variants
    res, by_variant = {}, {}
    for variant in variants:
        t0 = time.perf_counter()
        if variant != "eager":  # the run below uses the compiled modules too (the loader's cache holds g)
            g.compile(MODES[variant])
        try:
            r = time_guidance(g, args.batch, args.resolution, iters, warmup, 100.0)
        except Exception as e:  # noqa: BLE001 - a compiler failure must not lose the other numbers
            print(f"{variant}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        r["setup_and_timing_s"] = time.perf_counter() - t0
        by_variant[variant] = r
        res = r
        print(f"{variant}: guidance step ({args.batch} x {args.resolution}px -> {g.resolution}px, CFG 100): "
              f"{r['guidance_step_ms']:.2f} ms back to back; parts: VAE encode {r['vae_encode_ms']:.2f} ms, "
              f"UNet x2 {r['unet_cfg_ms']:.2f} ms, backward {r['backward_ms']:.2f} ms; loss finite: "
              f"{r['loss_finite']} ({r['setup_and_timing_s']:.0f}s incl. warm-up/compilation)", flush=True)
    res = dict(res, variants=by_variant, run_variant=variants[-1])

    run_steps = args.run_steps if args.run_steps >= 0 else (10000 if gpu else 3)
    if run_steps:
        mode = MODES[variants[-1]]
        cfg = DreamFusionConfig(prior=str(folder), prior_dtype=args.dtype, prior_compile=mode, device=str(dev),
                                steps=run_steps,
                                resolution=args.resolution, batch_size=args.batch, export=False,
                                preview_every=10 ** 9, out_dir=str(REPO / "outputs" / "bench" / "dreamfusion-run"))
        if args.preset:
            cfg = cfg.with_preset(args.preset)
            cfg = dataclasses.replace(cfg, steps=run_steps, export=False, preview_every=10 ** 9)
        cfg = apply_overrides(cfg, args.set)
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        done = run_to_completion(run(cfg), on_event=event_printer())
        m = done.metrics
        res.update({f"run_{k}": v for k, v in m.items()})
        print(f"run: {int(m['steps'])} steps in {m['train_seconds']:.1f}s ({1e3 * m['seconds_per_step']:.2f} ms/step; "
              f"{m['train_seconds'] / m['steps'] * 10000 / 60:.2f} min per 10k steps)", flush=True)

    if args.profile and run_steps:
        res["profile"] = profile_to_file(run, cfg, args.profile, f"DreamFusion run, {args.profile} steps", args.json)
    res.update(model=name, device=device_name(),
               torch=torch.__version__, dtype=str(dtype), batch=args.batch, resolution=args.resolution,
               channels_last=gpu and not args.contiguous, params=n_params, load_seconds=load_s,
               cudnn_benchmark_limit=torch.backends.cudnn.benchmark_limit if gpu else None)
    out = Path(args.json or REPO / "bench" / "results" / f"dreamfusion_sds_{name}_{dev.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
