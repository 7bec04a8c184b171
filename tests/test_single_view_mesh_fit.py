"""Test-time fitting of the single-view mesh to the point head's cloud (issue 21): the shared mesh objective, a
sphere fitted to a larger sphere's points grows onto them and stays smooth, off leaves the prediction as it was,
and predict runs it and says so."""
import math

import pytest
import torch

from pipelines import UserInputError
from pipelines.core.shape_losses import chamfer_distance
from pipelines.core.shapes import icosphere
from pipelines.core.single_view_net import SingleViewModel, fit_mesh_to_points, mesh_loss
from pipelines.events import Done, Log
from pipelines.single_view import SHIPPED_MODEL, SingleViewConfig, run

NET = dict(image_size=32, width=8, hidden=32, n_points=64, ico_level=3)


def sphere_points(n: int, radius: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return radius * torch.nn.functional.normalize(torch.randn(1, n, 3, generator=g), dim=-1)


def test_mesh_loss_is_the_chamfer_plus_the_weighted_regularisers():
    model = SingleViewModel(**NET)
    verts, target = model.template_verts[None], sphere_points(256, 0.4)
    args = (model.template_faces, model.template_edges, model.template_pairs)
    off = mesh_loss(verts, target, *args, dict(laplacian=0.0, edge=0.0, normal=0.0), 256,
                    torch.Generator().manual_seed(1))
    assert set(off) == {"mesh_cd", "laplacian", "loss"} and torch.equal(off["loss"], off["mesh_cd"])
    on = mesh_loss(verts, target, *args, dict(laplacian=2.0, edge=3.0, normal=5.0), 256,
                   torch.Generator().manual_seed(1))
    expected = on["mesh_cd"] + 2 * on["laplacian"] + 3 * on["edge"] + 5 * on["normal"]
    assert torch.allclose(on["loss"], expected) and torch.equal(on["mesh_cd"], off["mesh_cd"])


def test_fitting_moves_the_sphere_onto_the_points_and_keeps_it_smooth():
    model = SingleViewModel(**NET)
    target = sphere_points(1024, 0.5)  # the template's radius is 0.4
    pred = {"mesh": model.template_verts[None].clone(), "points": target}
    cfg = SingleViewConfig(mesh_fit_steps=60, mesh_fit_lr=0.005, gt_points=1024)
    fitted = fit_mesh_to_points(model, pred, cfg)
    radius = fitted["mesh"].norm(dim=-1)
    assert abs(float(radius.mean()) - 0.5) < 0.02 and float(radius.std()) < 0.02  # a sphere still, grown
    before, after = (chamfer_distance(icosphere(3, 1.0).verts[None] * r, target) for r in (0.4, float(radius.mean())))
    assert after < before / 10
    assert torch.equal(fitted["points"], target) and torch.equal(pred["mesh"], model.template_verts[None])
    assert fit_mesh_to_points(model, pred, SingleViewConfig()) is pred  # 0 steps: untouched
    no_points = {"mesh": pred["mesh"]}
    assert fit_mesh_to_points(model, no_points, cfg) is no_points
    assert math.isclose(float(fitted["mesh"].mean(1).norm()), 0.0, abs_tol=0.02)  # the centre stays
    bad_settings = dict(mesh_fit_steps=-1), dict(mesh_fit_reg=-0.5), dict(mesh_fit_lr=0.0), dict(mesh_fit_lr=math.nan)
    for bad in bad_settings:
        with pytest.raises(UserInputError, match="mesh_fit"):
            fit_mesh_to_points(model, pred, SingleViewConfig(**bad))


def test_predict_fits_the_mesh_when_asked(tmp_path):
    image = SHIPPED_MODEL.parent / "examples"
    example = sorted(p for p in image.iterdir() if p.suffix == ".png")[0]
    events = list(run(SingleViewConfig(mode="predict", image=str(example), mesh_fit_steps=3, device="cpu",
                                       out_dir=str(tmp_path))))
    assert isinstance(events[-1], Done) and (tmp_path / "mesh.glb").is_file()
    assert any(isinstance(e, Log) and "mesh fitted to the point cloud: 3 steps" in e.message for e in events)
