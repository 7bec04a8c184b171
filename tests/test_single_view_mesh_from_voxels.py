"""The mesh from the voxels (``mesh_from`` voxels, Mesh R-CNN at test time; issue 21): the solid cells cubified,
then fitted to the point cloud. A ball's surface comes out smooth, unfolded and closer to the truth than the
cubes; two blocks stay two pieces (a topology the icosphere cannot have); the predictions, scores and files carry
the per-image meshes; settings a checkpoint cannot use are refused."""
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipelines import UserInputError
from pipelines.core.dmtet import face_pairs
from pipelines.core.shape_losses import chamfer_distance, self_intersection_fraction, surface_normal_consistency
from pipelines.core.shapes import cubify, mesh_edges, sample_surface
from pipelines.core.single_view_losses import meshes_from_voxels
from pipelines.core.single_view_net import SingleViewModel, prediction_geometry, save_checkpoint
from pipelines.core.single_view_outputs import checkpoint_inference, evaluate, predict
from pipelines.events import Log, run_to_completion
from pipelines.single_view import SingleViewConfig, run

R = 16


def _cells() -> torch.Tensor:
    """(R, R, R, 3) the cell centres of the grid over [-0.5, 0.5]^3, indexed [x, y, z]."""
    c = (torch.arange(R) + 0.5) / R - 0.5
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1)


def _logits(solid: torch.Tensor) -> torch.Tensor:
    return (solid.float() * 8 - 4)[None]  # probability 0.98 inside, 0.02 outside


def _sphere_points(n: int, radius: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return d * radius


def _components(faces: torch.Tensor) -> int:
    """Connected pieces of a mesh (faces joined through shared vertices)."""
    parent = list(range(int(faces.max()) + 1))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b, c in faces.tolist():
        parent[find(b)] = find(a)
        parent[find(c)] = find(a)
    return len({find(int(v)) for v in faces.unique()})


def test_a_balls_cubes_fitted_to_its_surface_points_become_a_smooth_closed_sphere():
    radius = 0.3
    solid = _cells().norm(dim=-1) < radius
    cloud = _sphere_points(2048, radius)
    cfg = SingleViewConfig(mesh_fit_steps=100, mesh_fit_recall=4.0, gt_points=1024)
    mesh = meshes_from_voxels({"voxels": _logits(solid), "points": cloud[None]}, cfg)["mesh"][0]
    cubes = cubify(solid)
    assert torch.equal(mesh.faces, cubes.faces)  # the grid's surface, its vertices moved
    edges = torch.cat([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]]).sort(1).values
    assert bool((torch.unique(edges, dim=0, return_counts=True)[1] == 2).all())  # closed: two faces an edge
    g = torch.Generator().manual_seed(1)
    pts, normals = sample_surface(mesh.verts[None], mesh.faces, 4096, g, return_normals=True)
    box_pts, box_normals = sample_surface(cubes.verts[None], cubes.faces, 4096, g, return_normals=True)
    true_normals = torch.nn.functional.normalize(cloud, dim=-1)[None]
    fitted_nc = float(surface_normal_consistency(pts, normals, cloud[None], true_normals))
    cubes_nc = float(surface_normal_consistency(box_pts, box_normals, cloud[None], true_normals))
    assert fitted_nc > 0.95 and fitted_nc > cubes_nc + 0.1  # the staircase's normals are axis-aligned
    assert float(chamfer_distance(pts, cloud[None])) < float(chamfer_distance(box_pts, cloud[None]))
    assert float((pts.norm(dim=-1) - radius).abs().mean()) < 0.01  # on the sphere, within a sixth of a cell
    assert float(self_intersection_fraction(mesh.verts[None], mesh.faces)) == 0.0
    assert len(face_pairs(mesh.faces)) == len(mesh_edges(mesh.faces))  # every edge between exactly two faces


def test_two_blocks_stay_two_pieces_and_no_solid_cell_gives_an_empty_mesh():
    x = _cells()
    solid = ((x[..., 0] + 0.25).abs() < 0.1) | ((x[..., 0] - 0.25).abs() < 0.1)  # two slabs, like two legs
    solid &= (x[..., 1].abs() < 0.2) & (x[..., 2].abs() < 0.3)
    cloud = x[solid][None]
    cfg = SingleViewConfig(mesh_fit_steps=5, gt_points=256)
    pred = meshes_from_voxels({"voxels": torch.cat([_logits(solid), _logits(torch.zeros_like(solid))]),
                               "points": torch.cat([cloud, cloud])}, cfg)
    two, none = pred["mesh"]
    assert _components(two.faces) == 2
    assert none.num_faces == 0
    unfitted = meshes_from_voxels({"voxels": _logits(solid), "points": cloud},
                                  SingleViewConfig(mesh_fit_steps=0))["mesh"][0]
    assert torch.equal(unfitted.verts, cubify(solid).verts)  # 0 steps: the cubes as they are


def _tiny_model() -> SingleViewModel:
    torch.manual_seed(0)
    return SingleViewModel(image_size=32, width=8, hidden=32, n_points=64, ico_level=2, resolution=8).eval()


class _Data:
    """Two held-out images with targets, as ``evaluate`` reads them (``ShapeData``'s interface)."""

    def __init__(self):
        self.images = (torch.rand(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
        d = torch.nn.functional.normalize(torch.randn(2, 256, 3, generator=torch.Generator().manual_seed(3)), dim=-1)
        self.points, self.normals = 0.3 * d, d

    def __len__(self):
        return 2

    def targets(self, si, vi):
        occ = torch.zeros(len(si), 8, 8, 8, dtype=torch.bool)
        occ[:, 2:6, 2:6, 2:6] = True
        return occ, self.points[si]

    def target_normals(self, si, vi):
        return self.normals[si]


def test_predict_scores_and_geometry_carry_each_images_own_mesh():
    model, x = _tiny_model(), torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cfg = SingleViewConfig(mesh_from="voxels", mesh_fit_steps=3, voxel_threshold=0.45, gt_points=128)
    pred = predict(model, x, ("voxels", "points", "mesh"), cfg)
    assert isinstance(pred["mesh"], list) and len(pred["mesh"]) == 2
    solid = torch.sigmoid(pred["voxels"].float()) > 0.45
    assert 0 < int(solid.sum()) < solid.numel()  # an untrained grid near 0.5: some cells solid
    for m, s in zip(pred["mesh"], solid):
        assert m.num_faces == cubify(s).num_faces  # each image's own grid, not the template
    scores = evaluate(model, _Data(), ("voxels", "points", "mesh"), cfg, "cpu", per_image=True)
    for key in ("mesh_f1@0.05", "mesh_cd", "mesh_normal_consistency", "mesh_self_intersection", "mesh_edge_spread"):
        assert len(scores[key]) == 2 and all(math.isfinite(v) for v in scores[key])
    geo = prediction_geometry(pred, model)
    assert torch.equal(geo["mesh"].faces, pred["mesh"][0].faces)
    sphere = predict(model, x, ("voxels", "points", "mesh"), SingleViewConfig(mesh_fit_steps=0))
    assert torch.equal(prediction_geometry(sphere, model)["mesh"].faces, model.template_faces)


def test_settings_a_checkpoint_cannot_use_are_refused_and_the_manifest_carries_the_choice():
    model, x = _tiny_model(), torch.rand(1, 3, 32, 32)
    with pytest.raises(UserInputError, match="voxel and point heads"):
        predict(model, x, ("mesh",), SingleViewConfig(mesh_from="voxels"))
    with pytest.raises(UserInputError, match="mesh_from"):
        predict(model, x, ("voxels", "points", "mesh"), SingleViewConfig(mesh_from="marching"))
    cfg, notes = checkpoint_inference(SingleViewConfig(), {"inference": {"mesh_from": "voxels"}})
    assert cfg.mesh_from == "voxels" and "mesh_from voxels" in notes[0]
    # a choice made on purpose stays, even the default one (the tab's icosphere against such a manifest)
    cfg, notes = checkpoint_inference(SingleViewConfig(inference_given="mesh_from"),
                                      {"inference": {"mesh_from": "voxels", "voxel_threshold": 0.7}})
    assert cfg.mesh_from == "icosphere" and cfg.voxel_threshold == 0.7
    assert "kept as given: mesh_from 'icosphere'" in notes[-1]
    with pytest.raises(UserInputError, match="inference_given"):
        checkpoint_inference(SingleViewConfig(inference_given="mesh"), {"inference": {"mesh_from": "voxels"}})


def test_the_tab_passes_the_mesh_choice_and_refuses_an_unknown_one():
    from gen3d_app.tabs import single_view as tab

    example = str(sorted((tab.ASSETS / "examples").glob("*.png"))[0])
    label = next(k for k, v in tab.MESH_FROM.items() if v == "voxels")
    assert tab.make_config(SingleViewConfig, "predict", example, "cpu", 10, ["voxels"], 0, label).mesh_from == "voxels"
    assert tab.make_config(SingleViewConfig, "predict", example, "cpu", 10, ["voxels"], 0).mesh_from == "icosphere"
    sphere = next(k for k, v in tab.MESH_FROM.items() if v == "icosphere")
    picked = tab.make_config(SingleViewConfig, "predict", example, "cpu", 10, ["voxels"], 0, sphere)
    assert picked.mesh_from == "icosphere" and picked.inference_given == "mesh_from"  # a manifest cannot undo it
    with pytest.raises(UserInputError, match="mesh from"):
        tab.make_config(SingleViewConfig, "predict", example, "cpu", 10, ["voxels"], 0, "marching cubes")


def test_no_solid_voxel_writes_no_mesh_and_says_why(tmp_path):
    save_checkpoint(_tiny_model(), tmp_path / "ckpt", "float32")
    image = tmp_path / "square.png"
    canvas = Image.new("RGB", (64, 64), "white")
    canvas.paste((90, 60, 40), (20, 16, 44, 48))  # one object on a plain background
    canvas.save(image)
    logs = []
    cfg = SingleViewConfig(mode="predict", image=str(image), checkpoint=str(tmp_path / "ckpt"), device="cpu",
                           out_dir=str(tmp_path / "out"), mesh_from="voxels", voxel_threshold=0.99)
    done = run_to_completion(run(cfg), lambda ev: logs.append(ev.message) if isinstance(ev, Log) else None)
    assert done.metrics["voxels_solid"] == 0  # an untrained grid lies near 0.5
    names = {Path(a.path).name for a in done.artifacts}
    assert "mesh.glb" not in names and "voxels.glb" not in names and "points.ply" in names
    assert any("no voxel mesh and mesh from the voxels written" in m and "icosphere" in m for m in logs)
