"""DreamFusion's score distillation with Stable Diffusion 2.1-base: the time of one guidance step and of a whole
run at 64x64, on an architecture-identical, randomly initialised SD 2.1-base (the real one's FLOPs; no download).

    python bench/dreamfusion_sds.py                                  # GPU: guidance step, then a 10k-step run
    python bench/dreamfusion_sds.py --run-steps 0 --dtype bfloat16   # the guidance step alone, in bf16
    python bench/dreamfusion_sds.py --compile                        # with torch.compile on the UNet and VAE
    python bench/dreamfusion_sds.py --variants compile --kernel-profile 5 --run-steps 0   # kernels per phase
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

from common import apply_overrides, device_name, profile_to_file, timed_run

from pipelines.dreamfusion import DreamFusionConfig, run

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


def kernel_profile(g, batch: int, resolution: int, iters: int) -> dict:
    """GPU kernel time per guidance step in each phase (VAE encoder forward, UNet with CFG, backward), each phase
    profiled alone, with its 15 costliest kernels. Run it without CUDA graphs: the profiler does not see
    kernels inside a graph, and they are the same kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    text = g.encode_prompt("a DSLR photo of a hamburger, front view", "")
    images = torch.rand(batch, resolution, resolution, 3, device=g.device, requires_grad=True)
    latents = g.encode_images(images).detach().requires_grad_()

    phases = {"vae_forward": lambda: [g.encode_images(images) for _ in range(iters)],
              "unet_cfg": lambda: [g.sds_latents(latents, text, 100.0) for _ in range(iters)]}
    result = {}
    for name in ("vae_forward", "unet_cfg", "backward"):
        losses = [g.sds(images, text, 100.0).loss for _ in range(iters)] if name == "backward" else None
        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            if losses is None:
                phases[name]()
            else:
                for loss in losses:
                    loss.backward()
            torch.cuda.synchronize()
        kernels = [(e.key, e.self_device_time_total / iters / 1e3, e.count / iters)
                   for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
        kernels.sort(key=lambda k: -k[1])
        total = sum(k[1] for k in kernels)
        launchers = _launchers(prof.events(), [k[0] for k in kernels[:5]])
        result[name] = {"kernel_ms": total, "launches": sum(k[2] for k in kernels),
                        "top": [{"kernel": k[0][:120], "ms": k[1], "per_step": k[2],
                                 "launched_by": launchers.get(k[0], "")} for k in kernels[:15]]}
        print(f"  {name}: {total:.2f} ms of kernels per step, {result[name]['launches']:.0f} launches", flush=True)
        for k in kernels[:15]:
            by = f"   <- {launchers[k[0]]}" if k[0] in launchers else ""
            print(f"    {k[1]:7.3f} ms  x{k[2]:<5.0f} {k[0][:100]}{by}", flush=True)
    return result


def _launchers(events, kernel_names: list[str]) -> dict[str, str]:
    """For each kernel name, the chain of CPU ops (innermost last) that launched most of its calls."""
    from collections import Counter

    chains = {k: Counter() for k in kernel_names}
    for e in events:
        for k in getattr(e, "kernels", []) or []:
            if k.name in chains:
                chain, p = [], e
                while p is not None and len(chain) < 5:
                    chain.append(p.name)
                    p = p.cpu_parent
                chains[k.name][" > ".join(reversed(chain))] += 1
    return {k: c.most_common(1)[0][0] for k, c in chains.items() if c}


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
    ap.add_argument("--native-group-norm", action="store_true",
                    help="compile the VAE encoder with nn.GroupNorm, not the layout-keeping one (the old way)")
    ap.add_argument("--run-steps", type=int, default=-1,
                    help="steps of the whole run (default: 10000 GPU, 3 CPU; 0: skip the run)")
    ap.add_argument("--preset", default="", help="DreamFusionConfig preset for the run (default: the config's)")
    ap.add_argument("--set", nargs="*", default=[], help="extra DreamFusionConfig overrides, key=value")
    ap.add_argument("--profile", type=int, default=0,
                    help="also profile a run of this many steps (after a 10-step warm-up run); the table goes next "
                         "to the JSON as .profile.txt")
    ap.add_argument("--kernel-profile", type=int, default=0,
                    help="after each variant's timing, profile this many guidance steps phase by phase and list the "
                         "costliest kernels (use variants without CUDA graphs: eager, compile)")
    ap.add_argument("--json", default="",
                    help="write the results here (default: bench/results/dreamfusion_sds_<model>_<device>.json)")
    args = ap.parse_args()

    import torch

    from pipelines.config import resolve_device
    from pipelines.core.priors.hub import resolve_dtype
    from pipelines.core.priors.stable_diffusion import load_stable_diffusion

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
    if args.native_group_norm:
        g.compiled_group_norm = torch.nn.GroupNorm
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
        if args.kernel_profile and gpu:
            r["kernels"] = kernel_profile(g, args.batch, args.resolution, args.kernel_profile)
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
        m = timed_run(run, cfg, gpu)
        res.update({f"run_{k}": v for k, v in m.items()})

    if args.profile and run_steps:
        res["profile"] = profile_to_file(run, cfg, args.profile, f"DreamFusion run, {args.profile} steps", args.json)
    res.update(model=name, device=device_name(),
               torch=torch.__version__, dtype=str(dtype), batch=args.batch, resolution=args.resolution,
               channels_last=gpu and not args.contiguous, native_group_norm=args.native_group_norm,
               params=n_params, load_seconds=load_s,
               cudnn_benchmark_limit=torch.backends.cudnn.benchmark_limit if gpu else None)
    out = Path(args.json or REPO / "bench" / "results" / f"dreamfusion_sds_{name}_{dev.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
