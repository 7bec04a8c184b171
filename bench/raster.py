"""Rasterizer throughput: a bumpy 100k-face sphere rendered from B cameras, as Magic3D's fine stage does it
(rasterize -> interpolate colour -> antialias colour + alpha -> loss -> backward into vertices and colours).

    python bench/raster.py                               # GPU: 512 and 1024 px, 100k faces, batch 4
    python bench/raster.py --tiny --device cpu           # the same code at 64/128 px, 5k faces, batch 2
    python bench/raster.py --tiny --device cpu --profile # and a torch.profiler table of one step per size

Throughput is faces x pixels per second (F * B * H * W / time), forward and backward separately (backward =
forward + backward - forward), for the batched call (one z-buffer pass over all views) and for a loop of
single-view calls, and for the batched call with back faces culled (``cull_backfaces``: right for the
closed, outward-wound meshes of marching tets); the forward is also split into rasterize / interpolate /
antialias. Prints a table and writes JSON (bench/results/raster.json; raster_tiny_<device>.json with --tiny).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from common import device_name, print_table, write_json

REPO = Path(__file__).resolve().parents[1]


def bumpy_sphere(n_faces: int, device):
    """A UV sphere with about ``n_faces`` faces and a few percent of bumps (not one flat depth everywhere)."""
    import torch

    n_lat = max(4, round(math.sqrt(n_faces / 4)))
    n_lon = max(8, round(n_faces / (2 * n_lat)))
    theta = torch.linspace(0, math.pi, n_lat + 1, device=device)[:, None]
    phi = torch.linspace(0, 2 * math.pi, n_lon + 1, device=device)[:-1][None]
    r = 1 + 0.05 * torch.sin(8 * theta) * torch.sin(6 * phi)
    x, y, z = r * theta.sin() * phi.cos(), r * theta.sin() * phi.sin(), (r * theta.cos()).expand(-1, n_lon)
    verts = torch.stack([x, y, z], -1)
    i, j = torch.meshgrid(torch.arange(n_lat, device=device), torch.arange(n_lon, device=device), indexing="ij")
    a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
    c, d = a + n_lon, b + n_lon
    faces = torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3), torch.stack([b, c, d], -1).reshape(-1, 3)])
    return verts.reshape(-1, 3), faces


def make_step(verts, faces, cams, colors, batched: bool, cull: bool = False):
    """One fine-stage-like render: returns (loss, {phase: seconds}) with phases synchronised."""
    import torch

    from pipelines.core.raster import antialias, face_neighbours, interpolate, project, rasterize

    neighbours = face_neighbours(faces)
    dev = verts.device

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def render(cam_arg):
        times = {}
        t0 = time.perf_counter()
        frags = rasterize(verts, faces, cam_arg, cull_backfaces=cull)
        sync()
        t1 = time.perf_counter()
        rgb = interpolate(colors, faces, frags)
        rgba = torch.cat([rgb, frags.mask[..., None].to(rgb.dtype)], -1)
        sync()
        t2 = time.perf_counter()
        out = antialias(rgba, frags, project(verts, cam_arg)[0], faces, neighbours)
        sync()
        t3 = time.perf_counter()
        times.update(rasterize=t1 - t0, interpolate=t2 - t1, antialias=t3 - t2)
        return out, times

    def step():
        if batched:
            out, times = render(cams)
        else:
            outs, times = [], {}
            for cam in cams:
                o, t = render(cam)
                outs.append(o)
                times = {k: times.get(k, 0.0) + v for k, v in t.items()}
            out = torch.stack(outs)
        return (out - 0.5).square().mean(), times

    return step


def measure(size: int, n_faces: int, batch: int, iters: int, warmup: int, mode: str, dev) -> dict:
    import torch

    from pipelines.core.cameras import orbit_cameras

    verts, faces = bumpy_sphere(n_faces, dev)
    verts.requires_grad_(True)
    colors = torch.rand(len(verts), 3, device=dev, requires_grad=True)
    cams = [c.to(dev) for c in orbit_cameras(batch, 3.0, 20.0, 40.0, size)]
    step = make_step(verts, faces, cams, colors, mode != "loop", mode == "culled")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        loss, _ = step()
        loss.backward()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fwd = bwd = 0.0
    phases: dict[str, float] = {}
    for _ in range(iters):
        sync()
        t0 = time.perf_counter()
        loss, times = step()
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        fwd, bwd = fwd + t1 - t0, bwd + t2 - t1
        phases = {k: phases.get(k, 0.0) + v for k, v in times.items()}
    work = faces.shape[0] * batch * size * size
    grad_ok = bool(torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0)
    row = {"mode": mode, "size": size, "faces": int(faces.shape[0]), "batch": batch,
           "fwd_ms": 1e3 * fwd / iters, "bwd_ms": 1e3 * bwd / iters,
           "fwd_gfp_s": work / (fwd / iters) / 1e9, "bwd_gfp_s": work / (bwd / iters) / 1e9,
           **{f"{k}_ms": 1e3 * v / iters for k, v in phases.items()}, "grad_ok": grad_ok,
           "peak_gb": torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None}
    return row


def profile_step(size: int, n_faces: int, batch: int, dev) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from pipelines.core.cameras import orbit_cameras

    verts, faces = bumpy_sphere(n_faces, dev)
    verts.requires_grad_(True)
    colors = torch.rand(len(verts), 3, device=dev, requires_grad=True)
    cams = [c.to(dev) for c in orbit_cameras(batch, 3.0, 20.0, 40.0, size)]
    step = make_step(verts, faces, cams, colors, True, True)
    step()[0].backward()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step()[0].backward()
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=25)
    return f"profile: {size}px, {faces.shape[0]} faces, batch {batch}\n{table}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="64/128 px, 5k faces, batch 2 (a CPU check)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", type=int, nargs="*", default=None, help="image sides (default 512 1024)")
    ap.add_argument("--faces", type=int, default=0, help="faces (default 100000)")
    ap.add_argument("--batch", type=int, default=0, help="views per call (default 4)")
    ap.add_argument("--iters", type=int, default=0, help="timed steps (default 20 GPU, 2 CPU)")
    ap.add_argument("--no-loop", action="store_true", help="skip the one-view-at-a-time comparison")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step per size")
    ap.add_argument("--json", default="", help="default: bench/results/raster.json (--tiny: raster_tiny_<device>.json)")
    args = ap.parse_args()

    import torch

    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = dev.type == "cuda"
    sizes = args.sizes or ([64, 128] if args.tiny else [512, 1024])
    n_faces = args.faces or (5000 if args.tiny else 100_000)
    batch = args.batch or (2 if args.tiny else 4)
    iters = args.iters or (20 if gpu else 2)
    rows = []
    for size in sizes:
        for mode in ["batched", "culled"] + ([] if args.no_loop else ["loop"]):
            rows.append(measure(size, n_faces, batch, iters, 3 if gpu else 1, mode, dev))
            print(f"  {rows[-1]['mode']} {size}px: fwd {rows[-1]['fwd_ms']:.1f} ms, bwd {rows[-1]['bwd_ms']:.1f} ms",
                  flush=True)
        if args.profile:
            print(profile_step(size, n_faces, batch, dev), flush=True)
    print_table(rows, [("mode", "mode", 8), ("size", "px", 5), ("faces", "faces", 7), ("batch", "B", 2),
                       ("fwd_ms", "fwd ms", 8), ("bwd_ms", "bwd ms", 8), ("rasterize_ms", "rast ms", 8),
                       ("interpolate_ms", "interp ms", 9), ("antialias_ms", "aa ms", 7),
                       ("fwd_gfp_s", "fwd Gfp/s", 10), ("bwd_gfp_s", "bwd Gfp/s", 10), ("peak_gb", "peak GB", 8)])
    print("Gfp/s: 1e9 faces x pixels per second (F * B * H * W / time)")
    name = f"raster_tiny_{dev.type}.json" if args.tiny else "raster.json"
    out = Path(args.json or REPO / "bench" / "results" / name)
    write_json(out, rows, n_faces=n_faces, batch=batch, sizes=sizes, iters=iters)
    print(f"wrote {out} ({device_name()})")


if __name__ == "__main__":
    main()
