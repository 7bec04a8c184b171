"""DreamFields' training step with CLIP ViT-B/32: the time of one scorer step and of a whole run, on an
architecture-identical, randomly initialised CLIP ViT-B/32 (the real one's FLOPs; no download).

    python bench/dreamfields_step.py                                # GPU: scorer step, then a run of the default config (10k steps)
    python bench/dreamfields_step.py --run-steps 0 --dtype float32  # the scorer step alone, in fp32
    python bench/dreamfields_step.py --tiny --device cpu            # the same code on the test-tier CLIP

The random CLIPModel is built from the CLIPConfig written below (openai/clip-vit-base-patch32's), saved with
``save_pretrained`` to --model-dir (reused when there) with the test tier's small tokenizer, and loaded by the
loader real scorers go through, so the timed code is the app's. A scorer step is what each training step asks
of CLIP: B renders x n crops resized to 224 px and normalised, the image tower, the cosine with the caption,
and the backward into the renders. The run is ``pipelines.dreamfields`` itself (exports off): renders of the
field, random backgrounds, crops, CLIP, the transmittance loss, the optimiser and origin tracking.
Prints a summary and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import apply_overrides, device_name, profile_to_file, timed_run

from pipelines.dreamfields import DreamFieldsConfig, run

REPO = Path(__file__).resolve().parents[1]

CLIP_VIT_B32 = dict(
    text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                     layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
    vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32, num_channels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5),
    projection_dim=512, logit_scale_init_value=2.6592)
"""openai/clip-vit-base-patch32's config.json (the parts that set the architecture)."""


def make_model(folder: Path, tiny: bool) -> Path:
    """Saves the random CLIP once; a folder already holding a complete one is reused."""
    from pipelines.core.priors.clip import TINY_CLIP, missing_files, save_clip

    if folder.is_dir() and not missing_files(folder):
        print(f"reusing the random model in {folder}", flush=True)
        return folder
    t0 = time.perf_counter()
    save_clip(folder, TINY_CLIP if tiny else CLIP_VIT_B32, seed=0)
    print(f"built and saved a random {'tiny' if tiny else 'ViT-B/32'} CLIP to {folder} in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)
    return folder


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_scorer(s, batch: int, resolution: int, iters: int, warmup: int) -> dict:
    """Mean milliseconds of a scorer step (forward + backward into the renders), back to back."""
    import torch

    dev = s.device
    text = s.encode_text(["a bouquet of flowers in a vase"])
    images = torch.rand(batch, resolution, resolution, 3, device=dev, requires_grad=True)

    def step():
        score = s.score(images, text)[:, 0].mean()
        score.backward()
        return score

    for _ in range(warmup):
        step()
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        score = step()
    sync(dev)
    res = {"scorer_step_ms": (time.perf_counter() - t0) * 1e3 / iters, "score_finite": bool(torch.isfinite(score))}
    if dev.type == "cuda":
        res["scorer_peak_gpu_gb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the test-tier CLIP and a tiny field (a CPU check)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    ap.add_argument("--model-dir", default="", help="where the random model is saved (default: under outputs/bench)")
    ap.add_argument("--batch", type=int, default=4, help="renders (poses) per step")
    ap.add_argument("--resolution", type=int, default=96, help="render side before the resize to 224 px")
    ap.add_argument("--iters", type=int, default=0, help="timed scorer steps (default: 50 GPU, 3 CPU)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed scorer steps first (default: 10 GPU, 1 CPU)")
    ap.add_argument("--compile", default="off", choices=["off", "default", "reduce-overhead"],
                    help="torch.compile CLIP's image tower (reduce-overhead: with CUDA graphs), in the step and the run")
    ap.add_argument("--run-steps", type=int, default=-1,
                    help="steps of the whole run (default: the config's 10000 on GPU, 3 CPU; 0: skip the run)")
    ap.add_argument("--preset", default="", help="DreamFieldsConfig preset for the run (default: the config's)")
    ap.add_argument("--set", nargs="*", default=[], help="extra DreamFieldsConfig overrides, key=value")
    ap.add_argument("--profile", type=int, default=0,
                    help="also profile a run of this many steps (after a 10-step warm-up run); the table goes next "
                         "to the JSON as .profile.txt")
    ap.add_argument("--json", default="", help="write the results here (default: bench/results/dreamfields_step_"
                                               "<model>_<device>.json)")
    args = ap.parse_args()

    import dataclasses

    import torch

    from pipelines.config import resolve_device
    from pipelines.core.priors.clip import load_scorer

    dev = resolve_device(args.device)
    gpu = dev.type == "cuda"
    name = "tiny" if args.tiny else "vit-b32"
    folder = Path(args.model_dir or REPO / "outputs" / "bench" / f"random-clip-{name}")
    make_model(folder, args.tiny)
    t0 = time.perf_counter()
    s = load_scorer(str(folder), dev, args.dtype)
    load_s = time.perf_counter() - t0
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    s.compile(args.compile)
    n_params = sum(p.numel() for p in s.model.parameters())
    print(f"model: {name} CLIP, {s.dtype} on {dev}; {n_params / 1e6:.1f}M params; input {s.image_size}px; loaded in "
          f"{load_s:.1f}s", flush=True)

    res = time_scorer(s, args.batch, args.resolution, args.iters or (50 if gpu else 3),
                      args.warmup or (10 if gpu else 1))
    print(f"scorer step ({args.batch} x {args.resolution}px -> {s.image_size}px, forward + backward): "
          f"{res['scorer_step_ms']:.2f} ms; score finite: {res['score_finite']}", flush=True)

    run_steps = args.run_steps if args.run_steps >= 0 else (DreamFieldsConfig().steps if gpu else 3)
    if run_steps:
        cfg = DreamFieldsConfig(scorer=str(folder), scorer_dtype=args.dtype, scorer_compile=args.compile,
                                device=str(dev), steps=run_steps,
                                batch_size=args.batch, resolution=args.resolution, export=False, eval_views=4,
                                preview_every=10 ** 9, out_dir=str(REPO / "outputs" / "bench" / "dreamfields-run"))
        if args.preset:
            cfg = dataclasses.replace(cfg.with_preset(args.preset), steps=run_steps, export=False,
                                      preview_every=10 ** 9)
        if args.tiny:
            cfg = dataclasses.replace(cfg, width=16, depth=1, n_samples=16, preview_size=32)
        cfg = apply_overrides(cfg, args.set)
        m = timed_run(run, cfg, gpu)
        res.update({f"run_{k}": v for k, v in m.items()})

    if args.profile and run_steps:
        res["profile"] = profile_to_file(run, cfg, args.profile, f"DreamFields run, {args.profile} steps", args.json)
    res.update(model=name, device=device_name(), torch=torch.__version__, dtype=str(s.dtype), compile=args.compile,
               batch=args.batch,
               resolution=args.resolution, params=n_params, load_seconds=load_s)
    out = Path(args.json or REPO / "bench" / "results" / f"dreamfields_step_{name}_{dev.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
