"""Make the git-ignored data the GPU benchmarks carry (under .data/), on a fresh checkout.

A checkout holds no .data/; every GPU call in bench/RESULTS.md carries some of it. This script makes each set the
way RESULTS says it was made (its commands, in one place), and skips a set that is already there:

    python bench/prepare_data.py lego20        # seconds: lego's train split and 20 evenly spaced val views (15 MB)
    python bench/prepare_data.py pointe        # about 4 min on 2 cores: the 1514-shape Point-E pack with renders
    python bench/prepare_data.py single-view   # the augmented training pack and the test split: 8.5-45 min on 2 cores
    python bench/prepare_data.py single-view-default   # about 8 min: the default renders of all shapes (27.9 MiB)
    python bench/prepare_data.py single-view-robust    # under a minute: the held-out shapes out of the render ranges
    python bench/prepare_data.py single-view-pybullet  # about 5 min: pybullet_data's training shapes (30.1 MiB)
    python bench/prepare_data.py single-view-procedural  # about 6 min: 900 procedural furniture shapes
    python bench/prepare_data.py single-view-zeroad  # about 4 min: 555 props of 0 A.D. (needs 0ad-data; 19.1 MiB)
    python bench/prepare_data.py single-view-sh3d-default  # under a minute: 61 models of Sweet Home 3D's own catalog
    python bench/prepare_data.py zeroad-props  # seconds: the props the catalog keeps, as a 3.6 MiB zip to carry
    python bench/prepare_data.py sh3d-default-jar  # seconds: the jar cut to its default catalog, to carry

Needs ../shared/data (lego) and Debian's sweethome3d-furniture (`apt-get install sweethome3d-furniture`) for the
shape sets (`apt-get install 0ad-data`, a 1.4 GB download, for single-view-zeroad; `apt-get install sweethome3d`, the
program, for single-view-sh3d-default). Prints each set's folder,
size and seconds.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEGO = REPO.parent / "shared" / "data" / "nerf_synthetic" / "lego"
DATA = REPO / ".data"


def lego20(src: Path = LEGO, dst: Path = DATA / "lego20", views: int = 20) -> Path:
    """lego's train split and ``views`` val views evenly spaced as ``load_blender(max_views=views)`` picks them, so
    ``--eval-views 20`` scores the same views on the copy as on the whole scene."""
    import numpy as np

    meta = json.loads((src / "transforms_val.json").read_text())
    keep = np.linspace(0, len(meta["frames"]) - 1, views).round().astype(int)
    meta["frames"] = [meta["frames"][i] for i in keep]
    shutil.copytree(src / "train", dst / "train", dirs_exist_ok=True)
    shutil.copy(src / "transforms_train.json", dst)
    (dst / "val").mkdir(parents=True, exist_ok=True)
    for f in meta["frames"]:
        name = Path(f["file_path"]).name + ".png"
        shutil.copy(src / "val" / name, dst / "val" / name)
    (dst / "transforms_val.json").write_text(json.dumps(meta))
    return dst


def run(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=REPO, check=True)


def pointe() -> Path:
    run("pointe", "data", "build", "--workers", "2", "--stretch-copies", "1")
    run("pointe", "data", "shrink", "--points", "2048")
    run("pointe", "data", "renders", "--data", ".data/pointe/pointe_2048.npz",
        "--out", ".data/pointe/pointe_2048_renders.npz")
    return DATA / "pointe" / "pointe_2048_renders.npz"


def single_view() -> Path:
    run("single_view", "data", "build", "--sources", "sh3d", "--workers", "2", "--render", "augment",
        "--render-seed", "0", "--root", ".data/single_view_augment")
    run("single_view", "data", "build", "--sources", "sh3d", "--split", "test", "--workers", "2",
        "--root", ".data/single_view_test")  # a build writes its pack/ too
    return DATA / "single_view_test" / "pack"


def single_view_default() -> Path:
    run("single_view", "data", "build", "--sources", "sh3d", "--workers", "2", "--root", ".data/single_view")
    return DATA / "single_view" / "pack"


def single_view_robust() -> Path:
    run("single_view", "data", "build", "--sources", "sh3d", "--split", "test", "--views", "2", "--render",
        "out-of-range", "--workers", "2", "--root", ".data/single_view_robust_out-of-range")
    return DATA / "single_view_robust_out-of-range" / "pack"


def single_view_pybullet() -> Path:
    run("single_view", "data", "build", "--sources", "pybullet", "--random-limit", "1000", "--split", "train",
        "--workers", "2", "--root", ".data/single_view_pybullet")
    return DATA / "single_view_pybullet" / "pack"


def single_view_procedural() -> Path:
    # 900 of the catalog's 2501 training shapes, spread over the 14 kinds: as many as pybullet's, and with the default
    # pack under the 64 MiB a GPU call carries
    run("single_view", "data", "build", "--sources", "procedural", "--split", "train", "--limit", "900",
        "--workers", "2", "--root", ".data/single_view_procedural")
    return DATA / "single_view_procedural" / "pack"


def single_view_zeroad() -> Path:
    run("single_view", "data", "build", "--sources", "zeroad", "--split", "train", "--workers", "2",
        "--root", ".data/single_view_zeroad")
    return DATA / "single_view_zeroad" / "pack"


def single_view_sh3d_default() -> Path:
    run("single_view", "data", "build", "--sources", "sh3d-default", "--split", "train", "--workers", "2",
        "--root", ".data/single_view_sh3d_default")
    return DATA / "single_view_sh3d_default" / "pack"


def trimmed_copy(src: Path, members: list[str], out: Path) -> Path:
    """``members`` of the archive ``src`` in a zip of the same layout at ``out``: what a GPU machine, which reaches no
    registry, builds shapes from (``bench/gpu_scripts/candidate.sh`` links it at the Debian path)."""
    import zipfile

    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in members:
            dst.writestr(name, zin.read(name))
    return out


def zeroad_props() -> Path:
    """The 0 A.D. props ``zeroad_catalog`` keeps (3.6 MiB where the game data is 3.2 GB)."""
    sys.path.insert(0, str(REPO))  # the other sets run `python -m pipelines`; this one reads the catalog itself
    from pipelines.train.mesh_library import ZEROAD_ZIP, zeroad_catalog

    members = sorted({s.member for s in zeroad_catalog()})
    if not members:
        raise SystemExit(f"no 0 A.D. props at {ZEROAD_ZIP}: apt-get install 0ad-data")
    return trimmed_copy(ZEROAD_ZIP, members, DATA / "zeroad_props.zip")


def sh3d_default_jar(jar: Path | None = None, out: Path | None = None) -> Path:
    """Sweet Home 3D's jar cut to its default catalog: the catalog, the files each model reads
    (``mesh_library.sh3d_default_files``: the catalog's icons left out) and the OBJ loader's class (1 MiB where the
    jar is 17)."""
    import zipfile

    sys.path.insert(0, str(REPO))
    from pipelines.train.mesh_library import (SH3D_JAR, SH3D_JAR_CATALOG, SH3D_JAR_MATERIALS, sh3d_default_catalog,
                                              sh3d_default_files)

    jar = jar or SH3D_JAR
    shapes = sh3d_default_catalog(jar)
    if not shapes:
        raise SystemExit(f"no Sweet Home 3D program at {jar}: apt-get install sweethome3d")
    with zipfile.ZipFile(jar) as zf:
        read = {n for s in shapes for n in sh3d_default_files(zf, s.member)}
    return trimmed_copy(jar, sorted({SH3D_JAR_CATALOG, SH3D_JAR_MATERIALS, *read}), out or DATA / "sh3d_default.jar")


SETS = {"lego20": (lego20, DATA / "lego20"), "pointe": (pointe, DATA / "pointe" / "pointe_2048_renders.npz"),
        "single-view": (single_view, DATA / "single_view_test" / "pack"),
        "single-view-default": (single_view_default, DATA / "single_view" / "pack"),
        "single-view-robust": (single_view_robust, DATA / "single_view_robust_out-of-range" / "pack"),
        "single-view-pybullet": (single_view_pybullet, DATA / "single_view_pybullet" / "pack"),
        "single-view-procedural": (single_view_procedural, DATA / "single_view_procedural" / "pack"),
        "single-view-zeroad": (single_view_zeroad, DATA / "single_view_zeroad" / "pack"),
        "zeroad-props": (zeroad_props, DATA / "zeroad_props.zip"),
        "single-view-sh3d-default": (single_view_sh3d_default, DATA / "single_view_sh3d_default" / "pack"),
        "sh3d-default-jar": (sh3d_default_jar, DATA / "sh3d_default.jar")}


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2 ** 20


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sets", nargs="+", choices=sorted(SETS))
    args = p.parse_args(argv)
    for name in args.sets:
        make, done = SETS[name]
        t0 = time.perf_counter()
        if done.exists():
            print(f"{name}: {done} is there already; skipped")
            continue
        out = make()
        print(f"{name}: {out.relative_to(REPO)}, {size_mb(out):.1f} MiB, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
