"""The hash encoding alone, the Triton kernels (``core/hash_triton.py``) against the PyTorch path, at NeRF
``fast``'s sizes (16 levels x 2 features, 2^19 entries a level, base 16, finest 2048): does the fused path pay?

    python bench/hash_encoding.py                        # GPU: 2^16 .. 2^20 points, both paths
    python bench/hash_encoding.py --tiny --device cpu    # the PyTorch path only, small (the kernels need CUDA)

For each path and point count: the median time of a forward (as a preview or scoring runs it) and of a forward +
backward into the table (a training step's share), over ``--repeats`` runs after warm-up; the peak memory the
training call adds (its table gradient included, the table itself not); and the largest difference from the
PyTorch path (outputs and table gradients, relative to their scale). Prints a table and writes JSON (``--json``;
default bench/results/hash_encoding_<device>.json, hash_encoding_tiny_<device>.json with --tiny).
"""
from __future__ import annotations

import argparse
import statistics
import time

from common import REPO, print_table, write_json


def timed(fn, repeats: int, sync) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after two warm-up runs (compiles, caches)."""
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    import torch

    from pipelines.core.encodings import HashGridEncoding, fused_hash_available

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="8 levels of 2^15 entries, 2^12 .. 2^14 points")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    size = dict(n_levels=8, log2_size=15) if args.tiny else dict(n_levels=16, log2_size=19)
    counts = [2 ** k for k in ((12, 13, 14) if args.tiny else (16, 18, 19, 20))]
    torch.manual_seed(0)
    enc = HashGridEncoding(n_features=2, base_res=16, max_res=2048, **size).to(dev)
    with torch.no_grad():  # a trained table's spread, not the initial 1e-4
        enc.table.uniform_(-1, 1)
    paths = {"pytorch": False}
    if fused_hash_available(dev):
        paths["triton"] = True
    rows = []
    for n in counts:
        x = torch.rand(n, 3, device=dev, generator=torch.Generator(dev).manual_seed(n))
        grad_out = torch.randn(n, enc.out_dim, device=dev, generator=torch.Generator(dev).manual_seed(n + 1))
        ref = None
        for name, fused in paths.items():
            enc.fused = fused

            def forward():
                with torch.no_grad():
                    return enc(x)

            def train():
                enc.table.grad = None
                enc(x).backward(grad_out)

            fwd_s = timed(forward, args.repeats, sync)
            train_s = timed(train, args.repeats, sync)
            enc.table.grad = None  # so that the peak counts the gradient the call makes
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
            train()
            sync()
            peak = (torch.cuda.max_memory_allocated(dev) - base) / 2 ** 30 if dev.type == "cuda" else None
            out, grad = forward(), enc.table.grad.clone()
            if ref is None:
                ref, diff = (out, grad), 0.0
            else:
                diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip((out, grad), ref))
            rows.append(dict(path=name, points=n, levels=enc.n_levels, table_entries=enc.table.shape[0],
                             forward_ms=fwd_s * 1e3, train_ms=train_s * 1e3,
                             points_per_s_train=n / train_s, peak_gb_train=peak, max_rel_diff=diff))
            print(f"{name} {n}: forward {fwd_s * 1e3:.3f} ms, forward + backward {train_s * 1e3:.3f} ms", flush=True)
    by = {(r["path"], r["points"]): r for r in rows}
    for r in rows:  # the speed-up over the PyTorch path at the same size
        r["speedup_train"] = by[("pytorch", r["points"])]["train_ms"] / r["train_ms"]
        r["speedup_forward"] = by[("pytorch", r["points"])]["forward_ms"] / r["forward_ms"]
    print_table(rows, [("path", "path", 8), ("points", "points", 8), ("forward_ms", "fwd ms", 8),
                       ("train_ms", "fwd+bwd ms", 11), ("speedup_forward", "fwd x", 7),
                       ("speedup_train", "fwd+bwd x", 10), ("peak_gb_train", "peak GB", 8),
                       ("max_rel_diff", "max rel diff", 13)])
    default = f"hash_encoding{'_tiny' if args.tiny else ''}_{dev.type}.json"
    write_json(args.json or REPO / "bench" / "results" / default, rows,
               command="python bench/hash_encoding.py" + (" --tiny" if args.tiny else ""))


if __name__ == "__main__":
    main()
