"""The app's run path against the CLI's, on the same machine in the same process: milliseconds per step of a
DreamFusion run (random SD 2.1-base architecture) and a DreamFields run (random CLIP ViT-B/32), each with its
compile mode, once drained by the CLI (``run_to_completion`` on the main thread) and once as the browser runs
it (``stream.drive``: the pipeline advanced by the worker thread that owns the run, its events turned into UI
updates that a consumer reads, as the run handler does).

    python bench/app_path.py                                     # GPU: 1000 steps each, reduce-overhead
    python bench/app_path.py --tiny --device cpu --steps 30 --compile off    # the same code on CPU

The HTTP server itself is not in the loop (gradio does not fit the GPU machine's carry budget); what it adds
per update is the same for eager and compiled runs. The rate is taken from the Progress events after the
first --skip steps (compiling and warm-up), from the events' arrival times on the consumer's side.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from common import device_name, print_table, write_json

REPO = Path(__file__).resolve().parents[1]


def rate_from(stamps: list[tuple[int, float]], skip: int) -> float:
    """Milliseconds per step between the first Progress at or after ``skip`` and the last."""
    after = [(s, t) for s, t in stamps if s >= skip]
    if len(after) < 2 or after[-1][0] == after[0][0]:
        return float("nan")
    return 1000.0 * (after[-1][1] - after[0][1]) / (after[-1][0] - after[0][0])


def cli_path(run, cfg, skip: int) -> float:
    from pipelines.events import Progress, run_to_completion

    stamps: list[tuple[int, float]] = []
    run_to_completion(run(cfg), on_event=lambda ev: stamps.append((ev.step, time.perf_counter()))
                      if isinstance(ev, Progress) and ev.losses else None)
    return rate_from(stamps, skip)


def app_path(run, cfg, skip: int) -> float:
    from gen3d_app import stream
    from pipelines.events import Progress

    try:
        import plotly  # noqa: F401 - the loss plot of each update is built as in the app
    except ImportError:  # the GPU machine has no plotly (its wheel does not fit the carry budget)
        print("plotly missing: the loss plot is not built in this measurement", flush=True)
        stream.loss_figure = lambda history: None
    stamps: list[tuple[int, float]] = []

    def observed(c):  # the events as the worker thread hands them on, stamped where they arrive
        for ev in run(c):
            if isinstance(ev, Progress) and ev.losses:
                stamps.append((ev.step, time.perf_counter()))
            yield ev

    for _update in stream.drive(observed, cfg, ("rgb",), title="bench"):
        pass  # the handler would send it to the browser
    return rate_from(stamps, skip)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--skip", type=int, default=0, help="steps left out of the rate (default: steps // 4)")
    ap.add_argument("--compile", default="reduce-overhead", choices=["off", "default", "reduce-overhead"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tiny", action="store_true", help="test-tier models (a CPU check)")
    ap.add_argument("--methods", default="dreamfusion,dreamfields")
    ap.add_argument("--model-dir", default=str(REPO / "outputs" / "bench"))
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "app_path.json"))
    args = ap.parse_args()
    import torch

    from pipelines.config import resolve_device

    dev = resolve_device(args.device)
    skip = args.skip or args.steps // 4
    rows = []
    for method in args.methods.split(","):
        if method == "dreamfusion":
            from dreamfusion_sds import make_model

            from pipelines.dreamfusion import DreamFusionConfig as Cfg, run

            folder = make_model(Path(args.model_dir) / ("sd-tiny" if args.tiny else "sd21-base-random"), args.tiny,
                                torch.float16 if dev.type == "cuda" else torch.float32, dev)
            cfg = Cfg(prior=str(folder), prior_compile=args.compile)
        else:
            from dreamfields_step import make_model

            from pipelines.dreamfields import DreamFieldsConfig as Cfg, run

            folder = make_model(Path(args.model_dir) / ("clip-tiny" if args.tiny else "clip-b32-random"), args.tiny)
            cfg = Cfg(scorer=str(folder), scorer_compile=args.compile)
        if args.tiny:  # a few seconds a run on a CPU
            cfg = dataclasses.replace(cfg, **{k: v for k, v in dict(resolution=16, n_samples=8, n_importance=0,
                                                                     width=16, depth=1).items() if hasattr(cfg, k)})
        cfg = dataclasses.replace(cfg, steps=args.steps, device=str(dev), preview_every=max(1, args.steps // 10),
                                  out_dir=str(REPO / "outputs" / "bench" / f"app_path_{method}"))
        if hasattr(cfg, "export"):  # exports are not the step
            cfg = dataclasses.replace(cfg, export=False)
        cli = cli_path(run, cfg, skip)  # first: it also pays the compile, which the cache then keeps warm
        app = app_path(run, cfg, skip)
        cli2 = cli_path(run, cfg, skip)  # again, so the order does not favour one path
        rows.append(dict(method=method, size=f"{args.steps} steps", compile=args.compile,
                         cli_ms=min(cli, cli2), app_ms=app, app_over_cli=app / min(cli, cli2),
                         peak_gb=torch.cuda.max_memory_allocated() / 2 ** 30 if dev.type == "cuda" else 0.0))
        print(rows[-1], flush=True)
    print_table(rows, [("method", "method", 12), ("size", "size", 12), ("compile", "compile", 16),
                       ("cli_ms", "CLI ms/step", 12), ("app_ms", "app ms/step", 12),
                       ("app_over_cli", "app/CLI", 8), ("peak_gb", "peak GB", 8)])
    write_json(args.json, rows, device=device_name(), command="python bench/app_path.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("json", "model_dir")))


if __name__ == "__main__":
    main()
