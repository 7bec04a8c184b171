"""Two single-view checkpoints' scores on the same held-out images, number by number, with the sampling noise of
the held-out shapes (issue 21's rule replaces the shipped model only if the new one is better on every number).

    python bench/single_view_eval.py compare BASE.json CANDIDATE.json [--split default] [--json OUT]

Both files are ``robustness`` results written with per-image scores (every result since 2026-12-04). Each
number's change is the mean over the shapes of the candidate's minus the base's score (a shape's views averaged
first: two views of one shape are not independent), with a 95 % interval from a paired bootstrap over the shapes.
A change whose interval lies on one side of zero is "better" or "worse"; the rest are "level" (within what another
draw of held-out shapes would change). The interval says nothing of training noise: two trainings of one recipe
differ too (bench/RESULTS.md measures that apart).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LOWER_IS_BETTER = ("_cd", "_stray", "mesh_self_intersection", "mesh_edge_spread")


def lower_is_better(name: str) -> bool:
    return name.endswith(LOWER_IS_BETTER)


def per_shape(values, views: int) -> np.ndarray:
    """(shapes,) means of a per-image list ordered shape by shape, ``views`` images each."""
    a = np.asarray(values, dtype=np.float64)
    if views < 1 or len(a) % views:
        raise ValueError(f"{len(a)} per-image scores do not split into shapes of {views} views")
    return a.reshape(-1, views).mean(1)


def paired_bootstrap(base: np.ndarray, cand: np.ndarray, resamples: int = 2000, seed: int = 0):
    """Mean of ``cand - base`` over the shapes and its 95 % percentile interval over ``resamples`` draws of the
    shapes with replacement."""
    d = cand - base
    idx = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def verdict(name: str, low: float, high: float) -> str:
    if lower_is_better(name):
        low, high = -high, -low
    return "better" if low > 0 else "worse" if high < 0 else "level"


def load_row(path: str, split: str) -> tuple[dict, int, list]:
    r = json.loads(Path(path).read_text())
    rows = {row["split"]: row for row in r.get("rows", [])}
    if split not in rows:
        raise SystemExit(f"error: {path} has no '{split}' row (rows: {', '.join(rows) or 'none'}); "
                         "compare reads bench/single_view_eval.py robustness results")
    if "per_image" not in rows[split]:
        raise SystemExit(f"error: {path} has no per-image scores; score it again with this bench's robustness")
    return rows[split]["per_image"], r["views_per_shape"], r["shape_ids"]


def compare(args) -> dict:
    base, views, ids = load_row(args.base, args.split)
    cand, views_c, ids_c = load_row(args.candidate, args.split)
    if (ids, views) != (ids_c, views_c):
        raise SystemExit("error: the two results are not on the same held-out shapes and views")
    rows = []
    for name in [k for k in base if k in cand]:
        b, c = per_shape(base[name], views), per_shape(cand[name], views)
        change, low, high = paired_bootstrap(b, c, args.resamples)
        plain = change < 0 if lower_is_better(name) else change > 0
        rows.append(dict(name=name, base=float(b.mean()), candidate=float(c.mean()), change=change, low=low,
                         high=high, verdict=verdict(name, low, high), plainly_better=bool(plain)))
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("better", "level", "worse")}
    fmt = lambda v: f"{v:.5f}" if abs(v) < 0.02 else f"{v:.4f}"  # noqa: E731
    print(f"{len(ids)} held-out shapes x {views} views; change = candidate - base, 95 % interval over the shapes")
    print("| number | base | candidate | change | 95 % interval | verdict |")
    print("|---|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['name']} | {fmt(r['base'])} | {fmt(r['candidate'])} | {r['change']:+.5f} | "
              f"[{r['low']:+.5f}, {r['high']:+.5f}] | {r['verdict']} |")
    plain = sum(r["plainly_better"] for r in rows)
    print(f"candidate better on {plain} of {len(rows)} numbers by the means; beyond the shapes' noise: "
          f"{counts['better']} better, {counts['worse']} worse, {counts['level']} level")
    out = dict(base=args.base, candidate=args.candidate, split=args.split, shapes=len(ids), views=views,
               resamples=args.resamples, counts=counts, plainly_better=plain, rows=rows)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="two robustness results number by number, with the held-out shapes' noise")
    c.add_argument("base")
    c.add_argument("candidate")
    c.add_argument("--split", default="default", help="the render set (a robustness row) to compare")
    c.add_argument("--resamples", type=int, default=2000)
    c.add_argument("--json", default="")
