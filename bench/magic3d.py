"""Magic3D end to end: the speed of both stages with an architecture-identical random Stable Diffusion 2.1-base and
with the embedded prior, and the quality of the fine stage's meshes with the embedded prior, judged as DreamFusion
was (bench/priors_eval.py: the embedded scorer ranks each run's renders among the 10 prompts; DreamFusion 0.70).

    python bench/magic3d.py speed                          # GPU: random SD 2.1-base, then the embedded prior
    python bench/magic3d.py speed --priors sd21 --coarse-steps 5000 --fine-steps 5000    # a whole default run
    python bench/magic3d.py quality                        # GPU: 10 prompts with the embedded prior, ranked
    python bench/magic3d.py quality --prompts "a chair" "a table" --renders R0.pt   # a share of the prompts
    python bench/magic3d.py quality --judge R*.pt          # the shares' renders ranked together
    python bench/magic3d.py speed --tiny --device cpu      # the same code on the test-tier model, CPU
    python bench/magic3d.py quality --tiny --device cpu --prompts "a chair" "a table"

Speed: each run is ``pipelines.magic3d`` itself (exports off). Milliseconds per step are taken between Progress
events (each follows a host sync), from the 20th step of each stage on, so loading, cuDNN's autotuning and the
first occupancy-grid sweeps are left out; the projected run is 5000 + 5000 steps at those rates. The fine stage
renders at the prior's input size: 512 px with Stable Diffusion, 64 px with the embedded prior. Quality: renders
of the fine mesh (8 azimuths at 15 degrees, 64 px, albedo on white) of each prompt's run. Prints a table and
writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

from common import apply_overrides, device_name, print_table, write_json

REPO = Path(__file__).resolve().parents[1]


def stage_rates(marks: list[tuple[str, int, float]], skip: int = 20) -> dict:
    """{stage: ms per step} from (stage, step, time) marks, from the first mark at or after ``skip`` on (None:
    too few marks; the caller falls back to the stage's mean)."""
    rates = {}
    for stage in ("coarse", "fine"):
        pts = [(s, t) for st, s, t in marks if st == stage]
        later = [p for p in pts if p[0] >= skip] or pts
        if len(later) >= 2:
            rates[stage] = (later[-1][1] - later[0][1]) / (later[-1][0] - later[0][0]) * 1e3
        elif pts:
            rates[stage] = None
    return rates


def speed_run(prior: str, label: str, args, dev) -> dict:
    import torch

    from pipelines.events import Progress, run_to_completion
    from pipelines.magic3d import Magic3DConfig, run

    # the embedded prior's prompt is one of the benchmark's (a GPU machine without its text encoder reads the
    # prompts' states from a table: GEN3D_TEXT_ENCODER, made by `bench/priors_eval.py texts`)
    prompt = "a chair" if prior == "embedded" else "a DSLR photo of a hamburger"
    cfg = Magic3DConfig(prompt=prompt, prior=prior, device=str(dev), export=False,
                        coarse_steps=args.coarse_steps, fine_steps=args.fine_steps, preview_every=10 ** 9,
                        prior_dtype=args.dtype)
    if args.tiny:
        cfg = dataclasses.replace(cfg, **TINY)
    cfg = apply_overrides(cfg, args.set)
    marks = []

    def on_event(e):
        if isinstance(e, Progress):
            marks.append((e.stage, e.step, time.perf_counter()))

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    done = run_to_completion(run(cfg), on_event)
    m = done.metrics
    rates = {k: v if v is not None else m[f"{k}_seconds_per_step"] * 1e3 for k, v in stage_rates(marks).items()}
    row = {"prior": label, "coarse_ms": rates.get("coarse"), "fine_ms": rates.get("fine"),
           "fine_px": int(m["fine_resolution"]), "coarse_s": m["coarse_seconds"], "fine_s": m["fine_seconds"],
           "total_s": time.perf_counter() - t0, "load_s": m["load_seconds"], "peak_gb": m.get("peak_gpu_gb"),
           "coarse_steps": cfg.coarse_steps, "fine_steps": cfg.fine_steps, "tets": int(m["tets"])}
    if rates.get("coarse") and rates.get("fine"):
        row["projected_10k_min"] = (5000 * rates["coarse"] + 5000 * rates["fine"]) / 6e4
    print(f"{label}: {row}", flush=True)
    return row


TINY = dict(resolution=16, n_samples=12, width=16, hash_levels=4, hash_log2_size=12, hash_max_res=64,
            occupancy_resolution=16, occupancy_every=4, tet_resolution=10, fine_resolution=32, mesh_resolution=24)
"""--tiny: the test-sized settings (tests/test_magic3d.py), seconds per run on a CPU."""


def mesh_renders(run_dir: Path, n_views: int, size: int, device, framing: str = "dreamfusion"):
    """Albedo renders (n_views, size, size, 3) on white of a run's fine mesh (its model.pt, coloured as the run's
    fine stage read its colour field), around the object at 15 degrees of elevation. ``framing``: 'dreamfusion'
    the coarse cameras' middle distance and field of view (the cameras DreamFusion's 0.70 was judged from,
    bench/priors_eval.render_student), 'fine' the fine cameras' middle."""
    import torch

    from pipelines.core.cameras import Camera, orbit_cameras
    from pipelines.core.dmtet import DMTet, render_surface
    from pipelines.core.magic3d_mesh import colour_fn, fine_view
    from pipelines.magic3d import Magic3DConfig, build_student

    state = torch.load(run_dir / "model.pt", map_location=device, weights_only=True)
    cfg = Magic3DConfig(**state["config"])
    student, _ = build_student(cfg)
    student.load_state_dict(state["student"])
    student.to(device).eval()
    dmtet = DMTet(cfg.tet_resolution, torch.zeros(3, device=device), torch.ones(3, device=device)).to(device)
    dmtet.load_state_dict(state["dmtet"])
    if framing == "fine":
        dist, fov = fine_view(cfg)
    else:
        dist, fov = 0.5 * (cfg.camera_distance_min + cfg.camera_distance_max), 0.5 * (cfg.fov_min + cfg.fov_max)
    with torch.no_grad():
        verts, faces = dmtet()
        cams = [Camera.from_fov(c.c2w.to(device), math.radians(fov), size, size)
                for c in orbit_cameras(n_views, dist, 15.0, fov, size)]
        out = render_surface(verts, faces, cams, colour_fn(student, cfg, float(state.get("texture_radius", 0.0))),
                             torch.ones(3, device=device))
    return out["rgb"]


def quality(args, dev) -> None:
    import torch

    from priors_eval import DREAMFUSION_PROMPTS, rank_renders, save_rows

    from pipelines.core.priors.embedded import load_embedded_scorer
    from pipelines.events import run_to_completion
    from pipelines.magic3d import Magic3DConfig, run

    prompts = args.prompts or DREAMFUSION_PROMPTS
    renders, seconds = {}, {}
    settings = dict(coarse_steps=args.coarse_steps, fine_steps=args.fine_steps, overrides=args.set,
                    framing=args.framing, tiny=args.tiny)
    for f in args.judge:  # renders saved by --renders runs (e.g. one per GPU), judged together
        saved = torch.load(f, weights_only=False)
        renders.update(saved["renders"])
        seconds.update(saved["seconds"])
        settings = saved.get("settings", settings)  # the runs' settings, not the judge's defaults
    for prompt in prompts if not args.judge else []:
        slug = "".join(c if c.isalnum() else "-" for c in prompt)
        cfg = Magic3DConfig(prompt=prompt, prior="embedded", device=str(dev), seed=args.seed, preview_every=10 ** 9,
                            coarse_steps=args.coarse_steps, fine_steps=args.fine_steps, turntable_frames=0,
                            out_dir=str(Path(args.out_dir) / slug))
        if args.tiny:
            cfg = dataclasses.replace(cfg, **TINY)
        cfg = apply_overrides(cfg, args.set)
        done = run_to_completion(run(cfg))
        renders[prompt] = (mesh_renders(Path(cfg.out_dir), 8, 64, dev, args.framing).clamp(0, 1) * 255
                           ).round().byte().cpu()
        seconds[prompt] = done.seconds
        print(f"{prompt!r}: {done.seconds:.1f}s, {int(done.metrics['mesh_faces'])} faces", flush=True)
    if args.renders:
        Path(args.renders).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"renders": renders, "seconds": seconds, "settings": settings}, args.renders)
        return print(f"wrote {args.renders}")
    res, rows = rank_renders(load_embedded_scorer(dev), DREAMFUSION_PROMPTS if args.judge else prompts, renders)
    print_table(rows, [("prompt", "prompt", 12), ("rank", "rank", 5), ("views_top1", "views top-1", 12),
                       ("best_other", "best other", 12)])
    print(f"rank-1 rate {res['rank1_rate']:.2f} over {len(rows)} prompts (chance {res['chance']:.2f}; "
          "DreamFusion with the same prior: 0.70)")
    write_json(args.json or "bench/results/magic3d_quality.json", rows, **res, seconds=seconds, **settings)
    save_rows(Path(args.json or "bench/results/magic3d_quality.json").with_suffix(".png"),
              torch.stack([renders[r["prompt"]] for r in rows]).float() / 255)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["speed", "quality"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tiny", action="store_true", help="the test-tier model and test-sized settings (CPU)")
    ap.add_argument("--priors", nargs="+", default=["sd21", "embedded"], help="speed: sd21 (random SD 2.1-base) "
                                                                             "and/or embedded")
    ap.add_argument("--coarse-steps", type=int, default=0, help="default: speed 300 (tiny 10), quality 1500")
    ap.add_argument("--fine-steps", type=int, default=0, help="default: speed 200 (tiny 10), quality 1000")
    ap.add_argument("--dtype", default="auto", help="the prior's dtype on CUDA")
    ap.add_argument("--model-dir", default=".data/bench/sd21-random", help="where the random model is saved")
    ap.add_argument("--prompts", nargs="*", default=None, help="quality: the prompts (default: DreamFusion's 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default="outputs/bench/magic3d-embedded")
    ap.add_argument("--renders", default="", help="quality: save the renders here (.pt) and do not judge")
    ap.add_argument("--judge", nargs="*", default=[], help="quality: judge saved renders (.pt files), no runs")
    ap.add_argument("--framing", choices=["dreamfusion", "fine"], default="dreamfusion",
                    help="quality: the cameras of the renders judged: DreamFusion's judged renders' (the coarse "
                         "cameras' middle) or the fine stage's middle")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    from pipelines.config import resolve_device

    dev = resolve_device(args.device)
    speed = args.mode == "speed"
    args.coarse_steps = args.coarse_steps or (10 if args.tiny else 300 if speed else 1500)
    args.fine_steps = args.fine_steps or (10 if args.tiny else 200 if speed else 1000)
    if not speed:
        return quality(args, dev)
    import torch

    from dreamfusion_sds import make_model

    rows = []
    for name in args.priors:
        if name == "sd21":
            dtype = torch.float16 if dev.type == "cuda" else torch.float32
            folder = make_model(Path(args.model_dir + ("-tiny" if args.tiny else "")), args.tiny, dtype, dev)
            rows.append(speed_run(str(folder), "SD 2.1-base (random)" if not args.tiny else "tiny SD (test tier)",
                                  args, dev))
        else:
            rows.append(speed_run("embedded", "embedded", args, dev))
    print_table(rows, [("prior", "prior", 22), ("coarse_ms", "coarse ms", 10), ("fine_ms", "fine ms", 9),
                       ("fine_px", "fine px", 8), ("coarse_s", "coarse s", 9), ("fine_s", "fine s", 8),
                       ("total_s", "total s", 8), ("projected_10k_min", "5k+5k min", 10), ("peak_gb", "peak GB", 8)])
    write_json(args.json or f"bench/results/magic3d_speed{'_tiny' if args.tiny else ''}.json", rows,
               overrides=args.set, device_name=device_name())


if __name__ == "__main__":
    main()
