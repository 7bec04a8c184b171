"""Point-E beside the official reference clouds, as pictures only.

The released Point-E examples (``../shared/data/point_clouds``: a corgi and a stack of cubes, each the real base40M +
upsampler's 4096 points from the conditioning image beside it) against what gen3d's Point-E pipeline makes from the
same image with the models the tab would use (the embedded tier here: other, far smaller models trained on other
data, so no number compares them; the picture shows the gap). Each cloud is centred, scaled to the same extent and
splatted from 4 azimuths at 20 degrees elevation, z up (both clouds are z-up).

    python bench/pointe_reference.py [--checkpoints DIR] [--steps 64] [--device auto]

Prints a table (example, source, points, seconds), writes ``results/pointe_reference.json`` and the picture
``results/pointe_reference.jpg`` (rows: examples; columns: the image, the official cloud's 4 views, ours).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

REFERENCE = REPO.parent / "shared" / "data" / "point_clouds"
EXAMPLES = ("corgi", "cube_stack")
VIEWS, SIZE = 4, 160


def load_reference(npz: Path):
    """The official example's cloud as a PointCloud (coords and R, G, B in [0, 1])."""
    import numpy as np
    import torch

    from pipelines.core.geometry import PointCloud

    d = np.load(npz)
    missing = [k for k in ("coords", "R", "G", "B") if k not in d.files]
    if missing:
        raise SystemExit(f"{npz} lacks {', '.join(missing)}: a reference cloud holds coords (N, 3) and R, G, B (N,)")
    rgb = np.stack([d["R"], d["G"], d["B"]], 1)
    return PointCloud(torch.as_tensor(d["coords"], dtype=torch.float32), torch.as_tensor(rgb, dtype=torch.float32))


def views(cloud, n: int = VIEWS, size: int = SIZE):
    """(size, n * size, 3) uint8: the cloud centred, its largest half-extent 0.5, splatted from n azimuths."""
    import numpy as np

    from pipelines.core.geometry import PointCloud
    from pipelines.core.point_clouds import render_points

    xyz = cloud.xyz - (cloud.xyz.amax(0) + cloud.xyz.amin(0)) / 2
    xyz = xyz / (xyz.abs().amax().clamp_min(1e-9) / 0.5)
    fitted = PointCloud(xyz, cloud.rgb)
    return np.concatenate([render_points(fitted, size, 20.0, 360.0 * k / n - 60.0, radius=1) for k in range(n)], 1)


def main(argv: list[str] | None = None) -> None:
    import json

    import numpy as np
    from common import print_table, write_json
    from PIL import Image
    from pointe_prompts import load_cloud

    from pipelines.events import run_to_completion
    from pipelines.pointe import PointEConfig, run

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", default=str(REFERENCE), help="folder of pc_<name>.npz and <name>.jpg")
    p.add_argument("--checkpoints", default="", help="Point-E models (empty: what the tab uses)")
    p.add_argument("--steps", type=int, default=64, help="Heun steps a stage (64: the released setting)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="one example, 2 steps")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "pointe_reference.json"))
    args = p.parse_args(argv)
    ref = Path(args.reference)
    names = EXAMPLES[:1] if args.tiny else EXAMPLES
    missing = [f for n in names for f in (ref / f"pc_{n}.npz", ref / f"{n}.jpg") if not f.is_file()]
    if missing:
        raise SystemExit(f"missing reference files: {', '.join(map(str, missing))} (--reference: a folder of "
                         "pc_<name>.npz and <name>.jpg for corgi and cube_stack, as Point-E's examples)")
    steps = 2 if args.tiny else args.steps
    rows, picture, used = [], [], ""
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            official = load_reference(ref / f"pc_{name}.npz")
            cfg = PointEConfig(image=str(ref / f"{name}.jpg"), checkpoints=args.checkpoints, steps=steps, mesh=False,
                               seed=args.seed, device=args.device, preview_every=10 ** 9,
                               out_dir=str(Path(tmp) / name))
            t0 = time.perf_counter()
            done = run_to_completion(run(cfg))
            seconds = time.perf_counter() - t0
            ours = load_cloud(next(Path(a.path) for a in done.artifacts if a.path.endswith(".ply")))
            run_json = next(Path(a.path) for a in done.artifacts if a.path.endswith("run.json"))
            used = json.loads(run_json.read_text())["models"]
            rows += [{"example": name, "source": "official Point-E (reference file)", "points": len(official.xyz),
                      "seconds": None},
                     {"example": name, "source": "gen3d Point-E", "points": len(ours.xyz), "seconds": round(seconds, 1)}]
            image = np.asarray(Image.open(ref / f"{name}.jpg").convert("RGB").resize((SIZE, SIZE)))
            picture.append(np.concatenate([image, views(official), views(ours)], 1))
            print(f"{name}: {seconds:.1f}s", flush=True)
    print_table(rows, [("example", "example", 12), ("source", "source", 34), ("points", "points", 7),
                       ("seconds", "s", 7)])
    out = Path(args.out)
    write_json(out, rows, steps=steps, seed=args.seed, models=used)
    Image.fromarray(np.concatenate(picture, 0)).save(out.with_suffix(".jpg"), quality=88)
    print(f"wrote {out} and {out.with_suffix('.jpg')}")


if __name__ == "__main__":
    main()
