"""bench/single_view_eval.py compare: two results number by number, with the held-out shapes' sampling noise."""
import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from single_view_compare import compare, paired_bootstrap, per_shape, verdict  # noqa: E402


def test_per_shape_averages_each_shapes_views():
    assert per_shape([1, 3, 5, 7, 0, 2], 2).tolist() == [2, 6, 1]
    with pytest.raises(ValueError, match="do not split"):
        per_shape([1, 2, 3], 2)


def test_paired_bootstrap_of_a_constant_change_is_that_change():
    base = np.random.default_rng(1).random(40)
    change, low, high = paired_bootstrap(base, base + 0.01)
    assert change == pytest.approx(0.01) and low == pytest.approx(0.01) and high == pytest.approx(0.01)


def test_paired_bootstrap_interval_holds_zero_for_noise_around_it():
    rng = np.random.default_rng(2)
    base = rng.random(80)
    noise = rng.normal(0, 0.05, 80)
    change, low, high = paired_bootstrap(base, base + noise - noise.mean())
    assert abs(change) < 1e-12 and low < 0 < high


def test_verdict_knows_which_way_is_better():
    assert verdict("points_f1@0.05", 0.01, 0.02) == "better"
    assert verdict("points_cd", 0.01, 0.02) == "worse"  # a distance that grew
    assert verdict("mesh_self_intersection", -0.02, -0.01) == "better"
    assert verdict("voxels_iou", -0.01, 0.02) == "level"


def _result(path, per_image, ids=("a", "b", "c"), views=2, split="default"):
    path.write_text(json.dumps(dict(shape_ids=list(ids), views_per_shape=views,
                                    rows=[dict(split=split, metrics={}, per_image=per_image)])))
    return str(path)


def test_compare_counts_better_worse_and_level(tmp_path):
    base = {"points_f1@0.05": [0.5, 0.6, 0.7, 0.5, 0.6, 0.4], "points_cd": [0.01] * 6,
            "voxels_iou": [0.3, 0.5, 0.4, 0.4, 0.6, 0.2]}
    cand = {"points_f1@0.05": [v + 0.05 for v in base["points_f1@0.05"]], "points_cd": [0.02] * 6,
            "voxels_iou": [0.5, 0.3, 0.4, 0.4, 0.2, 0.6]}  # each shape's mean the same
    args = Namespace(base=_result(tmp_path / "a.json", base), candidate=_result(tmp_path / "b.json", cand),
                     split="default", resamples=500, json=str(tmp_path / "c.json"))
    out = compare(args)
    got = {r["name"]: r["verdict"] for r in out["rows"]}
    assert got == {"points_f1@0.05": "better", "points_cd": "worse", "voxels_iou": "level"}
    assert out["counts"] == {"better": 1, "level": 1, "worse": 1} and out["plainly_better"] == 1
    assert json.loads((tmp_path / "c.json").read_text())["counts"] == out["counts"]


def test_compare_refuses_other_shapes_and_results_without_per_image_scores(tmp_path):
    scores = {"voxels_iou": [0.1] * 6}
    a = _result(tmp_path / "a.json", scores)
    b = _result(tmp_path / "b.json", scores, ids=("a", "b", "d"))
    with pytest.raises(SystemExit, match="not on the same held-out shapes"):
        compare(Namespace(base=a, candidate=b, split="default", resamples=10, json=""))
    (tmp_path / "old.json").write_text(json.dumps(dict(shape_ids=["a"], views_per_shape=1,
                                                       rows=[dict(split="default", metrics={})])))
    with pytest.raises(SystemExit, match="no per-image scores"):
        compare(Namespace(base=str(tmp_path / "old.json"), candidate=a, split="default", resamples=10, json=""))
    with pytest.raises(SystemExit, match="no 'augment' row"):
        compare(Namespace(base=a, candidate=a, split="augment", resamples=10, json=""))


def test_robustness_writes_per_image_scores_that_compare_reads(tmp_path):
    """The bench end to end on the mini set: per-image scores whose means are the row's, and a model compared with
    itself changes nothing."""
    out = tmp_path / "r.json"
    bench = str(REPO / "bench" / "single_view_eval.py")
    subprocess.run([sys.executable, bench, "robustness", "--checkpoint", str(REPO / "assets" / "single_view" / "model"),
                    "--packs", f"default={REPO / 'assets' / 'single_view' / 'mini.npz'}", "--eval-views", "2",
                    "--max-shapes", "2", "--json", str(out)], check=True, cwd=tmp_path, capture_output=True)
    row = json.loads(out.read_text())["rows"][0]
    assert len(row["per_image"]["voxels_iou"]) == 4  # 2 shapes x 2 views
    for name, values in row["per_image"].items():
        assert np.mean(values) == pytest.approx(row["metrics"][name], abs=1e-5)
    text = subprocess.run([sys.executable, bench, "compare", str(out), str(out)], check=True, cwd=tmp_path,
                          capture_output=True, text=True).stdout
    assert f"0 better, 0 worse, {len(row['per_image'])} level" in text
