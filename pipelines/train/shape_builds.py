"""The build loop the data builders share: restartable, one process per core, one job per shape.

Contract: a builder's ``build`` command takes the options of ``add_build_arguments`` (and checks them with
``sources_problem``); it passes its shapes (``mesh_library.ShapeSource``) and a module-level function
``build_fn(src, out_dir, **opts)`` that writes ``out_dir/<id>.json`` and then ``out_dir/<id>.npz`` (last, by
``os.replace``: an ``.npz`` exists only when its shape is complete). ``build_shapes`` skips the shapes already
built, runs the rest in a spawn pool (or in this process with one worker), logs progress, writes the failures
to ``root/failed.json`` instead of stopping a build of hundreds, and returns the built records.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from .mesh_library import FURNITURE_DIR, SH3D_JAR, ZEROAD_ZIP, source_names


def add_build_arguments(parser, default_root: Path) -> None:
    """The options every builder's ``build`` command takes: the output folder, the shape sources, how many."""
    parser.add_argument("--root", type=Path, default=default_root, help="output folder (default: %(default)s)")
    parser.add_argument("--sources", default="sh3d,pybullet",
                        help="comma list of sh3d, sh3d-default, pybullet, procedural, zeroad (default: %(default)s)")
    parser.add_argument("--mesh-dir", default="", help="also every mesh file in this folder (.obj .glb .ply .off .stl)")
    parser.add_argument("--furniture-dir", type=Path, default=FURNITURE_DIR, help="where the .sh3f libraries are")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (one per core)")
    parser.add_argument("--limit", type=int, default=0, help="build only N shapes, spread over the catalog (0: all)")
    parser.add_argument("--stretch-copies", type=int, default=0, metavar="K",
                        help="also K stretched copies of every training shape (scales per axis in "
                             "mesh_library.STRETCH_RANGE; held-out shapes are never copied)")


def sources_problem(args) -> str:
    """Why the sources named by ``add_build_arguments``' options cannot be built, or "" when they can."""
    names = source_names(args.sources)
    if "sh3d" in names and not any(Path(args.furniture_dir).glob("*.sh3f")):
        return f"no Sweet Home 3D libraries in {args.furniture_dir}: apt-get install sweethome3d-furniture"
    if "sh3d-default" in names and not SH3D_JAR.is_file():
        return f"no Sweet Home 3D program at {SH3D_JAR}: apt-get install sweethome3d (its default catalog)"
    if "zeroad" in names and not ZEROAD_ZIP.is_file():
        return f"no 0 A.D. game data at {ZEROAD_ZIP}: apt-get install 0ad-data (a 1.4 GB download)"
    return ""


def with_copies(shapes: list, copies: int) -> list:
    """``shapes`` and ``copies`` stretched copies of each training shape among them (``--stretch-copies``)."""
    from .mesh_library import stretched_copies

    return shapes + stretched_copies(shapes, copies) if copies > 0 else shapes


def spread(shapes: list, limit: int) -> list:
    """At most ``limit`` shapes evenly spread over the list (0: all), so a small build still mixes libraries."""
    if not limit or limit >= len(shapes):  # (a larger limit once picked some shapes twice and others never)
        return shapes
    return [shapes[int(i * len(shapes) / limit)] for i in range(limit)]


def built_records(root: Path) -> list[dict]:
    """Records (the ``.json`` beside each finished ``.npz``) of the shapes built under ``root/shapes``."""
    shapes = Path(root) / "shapes"
    return [json.loads(p.with_suffix(".json").read_text()) for p in sorted(shapes.glob("*.npz"))
            if not p.name.startswith(".") and p.with_suffix(".json").is_file()]


def _job(job) -> tuple[str, str]:
    build_fn, src, out_dir, opts = job
    import torch

    torch.set_num_threads(1)  # one process per core; more threads per process oversubscribe
    try:
        build_fn(src, out_dir, **opts)
        return src.id, ""
    except Exception as e:  # noqa: BLE001 - one bad model must not stop a build of hundreds
        return src.id, f"{type(e).__name__}: {e}"


def progress(results, n: int, t0: float, log):
    """Passes (shape id, error) results through, logging failures, every 20th and the last."""
    for i, (sid, err) in enumerate(results, 1):
        if err or i % 20 == 0 or i == n:
            log(f"[{i}/{n}] {sid} {'FAILED ' + err if err else 'ok'} ({time.perf_counter() - t0:.0f}s)")
        yield sid, err


def build_shapes(root: Path, shapes: list, build_fn: Callable, opts: dict, workers: int = 1, log=print,
                 label: str = "") -> list[dict]:
    """Builds every shape of ``shapes`` not built yet under ``root/shapes``; returns their records (built now
    or before). ``label`` describes the selection in the first log line."""
    out_dir = Path(root) / "shapes"
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [(build_fn, s, out_dir, opts) for s in shapes if not (out_dir / f"{s.id}.npz").is_file()]
    log(f"{len(shapes)} shapes{label}, {len(shapes) - len(todo)} already built, building {len(todo)} with "
        f"{workers} worker(s)")
    t0 = time.perf_counter()
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            results = list(progress(pool.imap_unordered(_job, todo), len(todo), t0, log))
    else:
        results = list(progress(map(_job, todo), len(todo), t0, log))
    failed = {sid: err for sid, err in results if err}
    (Path(root) / "failed.json").write_text(json.dumps(failed, indent=1))
    wanted = {s.id for s in shapes}
    records = [r for r in built_records(root) if r["id"] in wanted]
    log(f"{len(records)} shapes built, {len(failed)} failed (failed.json), {time.perf_counter() - t0:.0f}s")
    return records
