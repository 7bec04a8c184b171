"""What every benchmark script shares: config overrides, a profiler run, the device's name, the table and
the JSON file. Each script keeps its own loop over what it measures."""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LEGO = REPO.parent / "shared" / "data" / "nerf_synthetic" / "lego"


def parse_value(current: Any, text: str) -> Any:
    if isinstance(current, bool):
        return text.lower() in ("1", "true", "yes")
    return type(current)(text)


def apply_overrides(cfg, pairs: list[str]):
    """``["key=value", ...]`` -> a copy of the config dataclass with those fields set (typed like the field)."""
    for kv in pairs:
        k, v = kv.split("=", 1)
        cfg = dataclasses.replace(cfg, **{k: parse_value(getattr(cfg, k), v)})
    return cfg


def profile(run: Callable, cfg, warmup_cfg, label: str) -> str:
    """Runs ``warmup_cfg`` (allocator, kernels, caches), then profiles a run of ``cfg``; returns the top ops."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from pipelines.events import run_to_completion

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    run_to_completion(run(warmup_cfg))
    with torch_profile(activities=activities) as prof:
        t0 = time.perf_counter()
        run_to_completion(run(cfg))
        dt = time.perf_counter() - t0
    cuda = torch.cuda.is_available()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    averages = prof.key_averages()
    head = f"{label} in {dt:.2f}s"
    if cuda:  # launch-bound or kernel-bound: the GPU's busy time against the wall time
        kernels = [e for e in averages if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
                   for e in kernels) / 1e6
        head += (f"; GPU kernels busy {busy:.2f}s ({100 * busy / dt:.0f}% of the wall time), "
                 f"{sum(e.count for e in kernels)} kernel launches")
    return head + "\n" + averages.table(sort_by=key, row_limit=30)


def profile_to_file(run: Callable, cfg, steps: int, label: str, json_path: str) -> str:
    """``profile`` of a ``steps``-step run of ``cfg`` (after a 10-step one), printed and written next to the
    JSON as .profile.txt; returns that path."""
    table = profile(run, dataclasses.replace(cfg, steps=steps), dataclasses.replace(cfg, steps=10), label)
    print(table, flush=True)
    path = Path(json_path or "profile.json").with_suffix(".profile.txt")
    path.write_text(table)
    return str(path)


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"


def print_table(rows: list[dict], columns: list[tuple[str, str, int]]) -> None:
    """``columns``: (key, header, width); None prints as '-', floats with 2 or 4 decimals (SSIM-like < 1)."""
    def cell(v, width):
        if v is None:
            return f"{'-':>{width}}"
        if isinstance(v, float):
            return f"{v:>{width}.4f}" if 0 < abs(v) < 1 else f"{v:>{width}.2f}"
        return f"{v!s:>{width}}"

    import torch

    print(f"\ndevice: {device_name()}, torch {torch.__version__}")
    print(" ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (_, h, w) in enumerate(columns)))
    for r in rows:
        print(" ".join(f"{r[k]!s:<{w}}" if i == 0 else cell(r.get(k), w) for i, (k, _, w) in enumerate(columns)))


def write_json(path: str | Path, rows: list[dict], **meta: Any) -> None:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": device_name(), "torch": torch.__version__,
                                "date": time.strftime("%Y-%m-%d"), **meta, "rows": rows}, indent=2))


def event_printer(every: int = 1000) -> Callable:
    """An ``on_event`` that prints Log messages and, every ``every`` steps, the step and the elapsed time (so a
    run cut short by a time limit still says how fast it went)."""
    from pipelines.events import Log, Progress

    t0 = time.perf_counter()

    def show(e) -> None:
        if isinstance(e, Log):
            print(e.message, flush=True)
        elif isinstance(e, Progress) and e.step % every == 0:
            print(f"  step {e.step}/{e.total}: {time.perf_counter() - t0:.1f}s", flush=True)

    return show


def timed_run(run: Callable, cfg, gpu: bool) -> dict:
    """Drain one pipeline run (peak GPU memory counted from its start) and print its speed; returns its metrics."""
    from pipelines.events import run_to_completion

    if gpu:
        import torch

        torch.cuda.reset_peak_memory_stats()
    m = run_to_completion(run(cfg), on_event=event_printer()).metrics
    print(f"run: {int(m['steps'])} steps in {m['train_seconds']:.1f}s ({1e3 * m['seconds_per_step']:.2f} ms/step; "
          f"{m['seconds_per_step'] * 10000 / 60:.2f} min per 10k steps)", flush=True)
    return m


def clock_runs(args, make_cfg: Callable, run: Callable, label: str, warmup_steps: int, **short):
    """The runs of a time-budget benchmark (``args``: checkpoints, separate, profile): one run stopping at the last
    checkpoint and scored at the others (the LR schedule follows the clock), or one run per checkpoint with
    ``--separate``. Yields (config, metrics, [(seconds, metrics tag)]): the tag is '' for the run's end and '@Ns'
    for a checkpoint on the way. With ``--profile`` N, prints a profile of N steps (``short``: more overrides of
    that short run) and yields nothing."""
    import torch

    from pipelines.events import Log, run_to_completion

    for budget in [[c] for c in args.checkpoints] if args.separate else [args.checkpoints]:
        cfg = make_cfg(eval_at_seconds=",".join(f"{c:g}" for c in budget[:-1]), max_seconds=budget[-1])
        if args.profile:
            quick = dataclasses.replace(cfg, steps=args.profile, eval_views=1, eval_at_seconds="", max_seconds=0,
                                        **short)
            print(profile(run, quick, dataclasses.replace(quick, steps=warmup_steps),
                          f"{label}: {args.profile} steps + 1 eval view"), flush=True)
            return
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        done = run_to_completion(run(cfg), on_event=lambda e: isinstance(e, Log) and print(e.message, flush=True))
        yield cfg, done.metrics, [(c, "" if c == budget[-1] else f"@{c:g}s") for c in budget]


def image_side(scene: str | Path, downscale: int = 1) -> int:
    """The width in pixels the pipelines train a Blender scene at: its first training image's, over ``downscale``."""
    import json

    from PIL import Image

    root = Path(scene)
    frame = json.loads((root / "transforms_train.json").read_text())["frames"][0]["file_path"]
    path = root / frame
    path = path if path.suffix else path.with_suffix(".png")
    with Image.open(path) as im:
        return im.width // downscale


def scene_for_split(data: str | Path, split: str) -> Path:
    """A scene folder whose held-out split (what the pipelines score) is ``split`` ('val' or 'test') of ``data``.

    'val' is ``data`` itself. 'test' is a folder under the git-ignored ``.data/bench_scenes/`` holding
    ``data``'s transforms_train.json, its transforms_test.json as transforms_val.json, and links to its image
    folders (``$GEN3D_BENCH_DATA/bench_scenes/`` when that is set): the pipelines read 'val' as the held-out
    split. Exits with a message when ``data`` lacks the split.
    """
    import shutil

    root = Path(data).resolve()
    if not (root / f"transforms_{split}.json").is_file():
        have = sorted(p.name for p in root.glob("transforms_*.json"))
        raise SystemExit(f"error: {root} has no transforms_{split}.json (it has {', '.join(have) or 'none'})")
    if split == "val":
        return root
    work = Path(os.environ.get("GEN3D_BENCH_DATA") or REPO / ".data")  # tests point it at a temporary folder
    dest = work / "bench_scenes" / f"{root.name}-{split}-as-val"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / "transforms_train.json", dest / "transforms_train.json")
    shutil.copyfile(root / f"transforms_{split}.json", dest / "transforms_val.json")
    for sub in root.iterdir():
        link = dest / sub.name
        if sub.is_dir() and not link.exists():
            link.symlink_to(sub, target_is_directory=True)
    return dest
