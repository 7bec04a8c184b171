"""Test-time mirroring of single-view predictions (issue 21): the combined prediction of an image and of its
mirror are mirrors of each other, points come from both passes, the mesh is the image's own, and off changes
nothing."""
from pathlib import Path

import pytest
import torch

from pipelines import UserInputError
from pipelines.events import run_to_completion
from pipelines.core.single_view_net import SingleViewModel
from pipelines.core.single_view_outputs import predict
from pipelines.single_view import SingleViewConfig, run

NET = dict(image_size=32, width=8, hidden=32, n_points=64, ico_level=2, resolution=8)
MIRROR = torch.tensor([-1.0, 1.0, 1.0])
SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "single_view" / "model"


def _model() -> SingleViewModel:
    torch.manual_seed(0)
    model = SingleViewModel(**NET).eval()
    for p in model.parameters():  # the heads start at zero (a sphere): give them something to mirror
        torch.nn.init.normal_(p, std=0.05)
    return model


def test_the_mirrored_image_gets_the_mirrored_prediction():
    model, heads = _model(), ("voxels", "points", "mesh")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cfg = SingleViewConfig(mirror_heads="voxels,points")
    a, b = predict(model, x, heads, cfg), predict(model, x.flip(-1), heads, cfg)
    assert torch.allclose(a["voxels"], b["voxels"].flip(1), atol=1e-5)
    assert a["points"].shape == (2, 2 * NET["n_points"], 3)
    n = NET["n_points"]  # b's two clouds are a's, swapped and mirrored
    assert torch.allclose(a["points"][:, :n], b["points"][:, n:] * MIRROR, atol=1e-5)
    assert torch.allclose(a["points"][:, n:], b["points"][:, :n] * MIRROR, atol=1e-5)
    with torch.no_grad():
        plain, flipped = model(x, heads), model(x.flip(-1), heads)
    assert torch.equal(a["mesh"], plain["mesh"])
    # the network itself is not mirror-symmetric, so the average differs from either pass
    assert not torch.allclose(a["voxels"], plain["voxels"], atol=1e-3)
    p = (torch.sigmoid(plain["voxels"]) + torch.sigmoid(flipped["voxels"].flip(1))) / 2
    assert torch.allclose(torch.sigmoid(a["voxels"]), p, atol=1e-5)


def test_mirror_heads_are_checked_before_training():
    with pytest.raises(UserInputError, match="mirror_heads"):
        run_to_completion(run(SingleViewConfig(mode="train", mirror_heads="mesh", steps=1)))
    with pytest.raises(UserInputError, match="mirror_heads"):
        predict(_model(), torch.rand(1, 3, 32, 32), ("voxels",), SingleViewConfig(mirror_heads="voxel"))


def test_off_is_the_network_alone():
    model, heads = _model(), ("voxels", "points", "mesh")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    out = predict(model, x, heads, SingleViewConfig(mirror_heads=""))
    with torch.no_grad():
        plain = model(x, heads)
    assert all(torch.equal(out[k], plain[k]) for k in heads)


def test_the_tab_shows_the_scores_of_the_prediction_it_makes(tmp_path, monkeypatch):
    """The status line reads scores measured with the tab's inference (mirroring) where the manifest has them."""
    import json

    from gen3d_app.tabs import single_view as tab

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    one_pass = {"voxels_iou": 0.4, "points_f1@0.05": 0.685, "mesh_f1@0.05": 0.684}
    manifest = {"data": {"train_shapes": 704, "sources": "sh3d"}, "metrics": one_pass}
    monkeypatch.setattr(tab, "ASSETS", tmp_path)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert "points F1@5 % 0.685" in tab.model_status() and "mirrored" not in tab.model_status()
    manifest["scores_as_predicted"] = {"metrics": dict(one_pass, **{"points_f1@0.05": 0.726}),
                                       "inference": {"mirror_heads": "points"}, "scored_on": "83 shapes x 2 views"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    status = tab.model_status()
    assert "points F1@5 % 0.726" in status and "83 shapes x 2 views" in status and "points with the mirrored" in status
    manifest["scores_as_predicted"]["inference"].update(mesh_fit_steps=100, voxel_threshold=0.7)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert "mesh fitted to the points (100 steps), voxels solid above 0.7" in tab.model_status()
    assert "where the points are" not in tab.model_status()
    manifest["scores_as_predicted"]["inference"].update(voxel_point_threshold=0.3)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert "voxels solid above 0.7 (0.3 where the points are)" in tab.model_status()
    assert "jittered" not in tab.model_status()
    manifest["scores_as_predicted"]["inference"].update(point_jitters=10)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert "points with the mirrored image's, points with 10 jittered copies'" in tab.model_status()
    shipped = json.loads((SHIPPED / "manifest.json").read_text())  # the shipped manifest says how it was scored
    assert shipped["scores_as_predicted"]["inference"]["mirror_heads"] == SingleViewConfig.mirror_heads
