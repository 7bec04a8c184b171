"""bench/single_view_eval.py's score command: held-out shapes by default, training shapes with --split train."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _score(tmp_path, split: str, *extra: str) -> dict:
    out = tmp_path / f"{split}{''.join(extra)}.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "single_view_eval.py"), "score", "--checkpoint",
                    str(REPO / "assets" / "single_view" / "model"), "--data",
                    str(REPO / "assets" / "single_view" / "mini.npz"), "--device", "cpu", "--eval-views", "1",
                    "--max-shapes", "2", "--split", split, "--json", str(out), *extra], check=True, cwd=tmp_path,
                   capture_output=True)
    return json.loads(out.read_text())


def test_score_splits_report_what_they_scored(tmp_path):
    test, train = _score(tmp_path, "test"), _score(tmp_path, "train")
    assert test["split"] == "test" and test["heldout_shapes"] == 2
    assert train["split"] == "train" and train["heldout_shapes"] == 0  # never reported as held-out
    # the shipped model fits shapes it learned from far better than held-out ones
    assert train["metrics"]["points_cd"] < test["metrics"]["points_cd"]


def test_score_voxel_threshold_reaches_the_voxels(tmp_path):
    """A lower threshold makes more cells solid: more stray voxel-surface samples; the other heads unchanged."""
    low = _score(tmp_path, "test", "--voxel-threshold", "0.05")
    high = _score(tmp_path, "test", "--voxel-threshold", "0.5")
    assert low["metrics"]["voxels_stray"] > high["metrics"]["voxels_stray"]
    assert low["metrics"]["points_cd"] == high["metrics"]["points_cd"]


def test_score_as_predicted_takes_the_checkpoints_settings(tmp_path):
    """--as-predicted scores as the app predicts: the shipped manifest's settings, recorded in the result."""
    manifest = json.loads((REPO / "assets" / "single_view" / "model" / "manifest.json").read_text())
    want = manifest["scores_as_predicted"]["inference"]
    plain, as_app = _score(tmp_path, "test"), _score(tmp_path, "test", "--as-predicted")
    assert {k: as_app[k] for k in want} == want and plain["voxel_threshold"] == 0.5 and plain["mesh_fit_steps"] == 0
    assert as_app["metrics"]["points_cd"] == plain["metrics"]["points_cd"]  # mirroring is the default in both
    assert as_app["metrics"]["mesh_cd"] != plain["metrics"]["mesh_cd"]  # the mesh was fitted
