"""bench/prepare_data.py: the lego20 copy holds the very val views that ``--eval-views N`` scores on the whole scene."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_copy_with_fewer_val_views_scores_the_same_views(tmp_path):
    from pipelines.core.datasets import load_blender

    spec = importlib.util.spec_from_file_location("bench_prepare_data", REPO / "bench" / "prepare_data.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    src = REPO / "assets" / "scenes" / "cow"
    dst = bench.lego20(src, tmp_path / "cow3", views=3)
    whole = load_blender(src, "val", 4, 3)
    copy = load_blender(dst, "val", 4, 3)
    assert len(list((dst / "val").glob("*.png"))) == 3
    assert torch.equal(whole.c2w, copy.c2w) and torch.equal(whole.images, copy.images)
    assert len(list((dst / "train").iterdir())) == len(list((src / "train").iterdir()))
