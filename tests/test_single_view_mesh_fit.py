"""Test-time fitting of the single-view mesh to the point head's cloud (issue 21): the shared mesh objective, a
sphere fitted to a larger sphere's points grows onto them and stays smooth, off leaves the prediction as it was,
and predict runs it and says so."""
import math

import pytest
import torch

from pipelines import UserInputError
from pipelines.core.single_view_losses import fit_mesh_to_points, mesh_loss
from pipelines.core.shape_losses import chamfer_distance, nn_sq_dists
from pipelines.core.shapes import sample_surface
from pipelines.core.single_view_net import SingleViewModel
from pipelines.events import Done, Log, run_to_completion
from pipelines.single_view import SHIPPED_MODEL, SingleViewConfig, run

NET = dict(image_size=32, width=8, hidden=32, n_points=64, ico_level=3)
MINI = SHIPPED_MODEL.parent / "mini.npz"


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
    # The recall half weighted: a target twice as big as the sphere is half covered by it, so recall dominates.
    big = sphere_points(256, 0.8)
    terms = [mesh_loss(verts, big, *args, dict(laplacian=0.0, edge=0.0, normal=0.0), 256,
                       torch.Generator().manual_seed(1), recall_weight=w)["mesh_cd"] for w in (1.0, 3.0)]
    to_big, to_sphere = nn_sq_dists(sample_surface(verts, model.template_faces, 256, torch.Generator().manual_seed(1)),
                                    big)
    assert torch.allclose(terms[1] - terms[0], 2 * to_sphere.mean())


def test_fitting_moves_the_sphere_onto_the_points_and_keeps_it_smooth():
    model = SingleViewModel(**NET)
    target = sphere_points(1024, 0.5)  # the template's radius is 0.4
    pred = {"mesh": model.template_verts[None].clone(), "points": target}
    cfg = SingleViewConfig(mesh_fit_steps=60, mesh_fit_lr=0.005, gt_points=1024)
    with torch.no_grad():  # as scoring calls it: the fit turns gradients on for itself
        fitted = fit_mesh_to_points(model, pred, cfg)
    radius = fitted["mesh"].norm(dim=-1)
    assert abs(float(radius.mean()) - 0.5) < 0.02 and float(radius.std()) < 0.02  # a sphere still, grown
    gen = torch.Generator().manual_seed(3)
    samples = lambda verts: sample_surface(verts, model.template_faces, 1024, gen)  # noqa: E731
    assert chamfer_distance(samples(fitted["mesh"]), target) < chamfer_distance(samples(pred["mesh"]), target) / 10
    assert torch.equal(fitted["points"], target) and torch.equal(pred["mesh"], model.template_verts[None])
    assert fit_mesh_to_points(model, pred, SingleViewConfig()) is pred  # 0 steps: untouched
    no_points = {"mesh": pred["mesh"]}
    assert fit_mesh_to_points(model, no_points, cfg) is no_points
    assert math.isclose(float(fitted["mesh"].mean(1).norm()), 0.0, abs_tol=0.02)  # the centre stays
    bad_settings = (dict(mesh_fit_steps=-1), dict(mesh_fit_reg=-0.5), dict(mesh_fit_reg=math.nan),
                    dict(mesh_fit_lr=0.0), dict(mesh_fit_lr=math.nan), dict(mesh_fit_recall=0.0))
    for bad in bad_settings:
        with pytest.raises(UserInputError, match="mesh_fit"):
            fit_mesh_to_points(model, pred, SingleViewConfig(**bad))


def test_predict_fits_the_mesh_when_asked_and_training_checks_the_settings_first(tmp_path):
    example = sorted((SHIPPED_MODEL.parent / "examples").glob("*.png"))[0]
    meshes = {}
    for steps in (0, 3):
        out = tmp_path / str(steps)
        events = list(run(SingleViewConfig(mode="predict", image=str(example), mesh_fit_steps=steps, device="cpu",
                                           out_dir=str(out), checkpoint_inference=False)))
        assert isinstance(events[-1], Done)
        said = any(isinstance(e, Log) and "mesh fitted to the point cloud: 3 steps" in e.message for e in events)
        assert said == (steps == 3)
        meshes[steps] = (out / "mesh.glb").read_bytes()
    assert meshes[0] != meshes[3]  # the fit moved the vertices
    with pytest.raises(UserInputError, match="mesh_fit_reg"):
        list(run(SingleViewConfig(data=str(MINI), steps=1, mesh_fit_reg=-1.0, device="cpu",
                                  out_dir=str(tmp_path / "train"))))
    assert not (tmp_path / "train" / "model").exists()  # refused before any training


def test_training_weighs_the_mesh_chamfers_recall_half_by_mesh_recall_weight():
    from pipelines.core.single_view_losses import training_losses

    model = SingleViewModel(**NET)
    out, big = {"mesh": model.template_verts[None].clone()}, sphere_points(256, 0.8)
    occ = torch.zeros(1, 4, 4, 4)
    terms = {w: training_losses(out, occ, big, model, SingleViewConfig(gt_points=256, mesh_recall_weight=w),
                                torch.Generator().manual_seed(1))["mesh_cd"] for w in (1.0, 3.0)}
    to_target, to_mesh = nn_sq_dists(sample_surface(out["mesh"], model.template_faces, 256,
                                                    torch.Generator().manual_seed(1)), big)
    assert torch.allclose(terms[1.0], to_target.mean() + to_mesh.mean())
    assert torch.allclose(terms[3.0], to_target.mean() + 3 * to_mesh.mean())
    with pytest.raises(UserInputError, match="mesh_recall_weight"):
        run_to_completion(run(SingleViewConfig(mode="train", mesh_recall_weight=0.0, steps=1)))
