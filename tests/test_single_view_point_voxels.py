"""Hysteresis thresholding of the voxel grid by the point head's cloud (``voxel_point_threshold``, issue 21): a cell
holding a predicted point is solid above the lower threshold, every other cell only above ``voxel_threshold``;
off changes nothing, and bad thresholds stop before any work."""
import math

import pytest
import torch

from pipelines import UserInputError
from pipelines.events import run_to_completion
from pipelines.core.single_view_net import SingleViewModel
from pipelines.core.single_view_outputs import point_supported_voxels, predict
from pipelines.single_view import SingleViewConfig, run

R = 4


def _grid(probs: dict) -> torch.Tensor:
    """(1, R, R, R) logits: probability 0.01 everywhere but at the given cells."""
    p = torch.full((1, R, R, R), 0.01)
    for cell, v in probs.items():
        p[(0, *cell)] = v
    return torch.logit(p)


def _centre(cell) -> list[float]:
    """The point at a cell's centre, in the grid's [-0.5, 0.5]^3."""
    return [(c + 0.5) / R - 0.5 for c in cell]


def test_a_cell_holding_a_point_is_solid_above_the_lower_threshold():
    strong, weak, weak_alone, too_weak = (0, 0, 0), (1, 2, 3), (3, 3, 3), (2, 1, 0)
    voxels = _grid({strong: 0.9, weak: 0.4, weak_alone: 0.4, too_weak: 0.2})
    points = torch.tensor([[_centre(weak), _centre(too_weak), _centre((3, 0, 1)), [0.9, 0.0, 0.0]]])
    out = point_supported_voxels(dict(voxels=voxels, points=points), 0.7, 0.3)
    solid = torch.sigmoid(out["voxels"][0]) > 0.7
    # the strong cell by the voxel head alone, the weak one by its point; the point in an empty cell (0.01),
    # the weak cell without a point and the one below 0.3 stay empty; the point outside the grid is ignored
    assert solid.nonzero().tolist() == sorted([list(strong), list(weak)])
    assert torch.equal(out["points"], points)
    assert torch.equal(out["voxels"][0][strong], voxels[0][strong])  # cells above the threshold keep their logits


def test_each_grid_reads_its_own_cloud():
    cell = (1, 1, 1)
    voxels = torch.cat([_grid({cell: 0.5}), _grid({cell: 0.5})])
    points = torch.tensor([[_centre(cell)], [_centre((2, 2, 2))]])
    out = point_supported_voxels(dict(voxels=voxels, points=points), 0.7, 0.3)
    solid = torch.sigmoid(out["voxels"]) > 0.7
    assert solid[0][cell] and not solid[1].any()


def test_predict_applies_it_and_off_changes_nothing():
    torch.manual_seed(0)
    model = SingleViewModel(image_size=32, width=8, hidden=32, n_points=256, ico_level=2, resolution=8).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, heads = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), ("voxels", "points")
    off = predict(model, x, heads, SingleViewConfig(voxel_threshold=0.7))
    on = predict(model, x, heads, SingleViewConfig(voxel_threshold=0.7, voxel_point_threshold=0.3))
    with torch.no_grad():
        plain = model(x, heads)
    assert torch.equal(off["voxels"], plain["voxels"])
    before, after = torch.sigmoid(off["voxels"]) > 0.7, torch.sigmoid(on["voxels"]) > 0.7
    assert (after & ~before).any() and not (before & ~after).any()  # it only adds cells
    # without the point head there is nothing to read: the grid is the voxel head's
    alone = predict(model, x, ("voxels",), SingleViewConfig(voxel_threshold=0.7, voxel_point_threshold=0.3))
    assert torch.equal(alone["voxels"], plain["voxels"])


@pytest.mark.parametrize("fields", [dict(voxel_point_threshold=1.0), dict(voxel_point_threshold=-0.1),
                                    dict(voxel_point_threshold=math.nan), dict(voxel_threshold=1.5)])
def test_bad_thresholds_are_refused(fields):
    with pytest.raises(UserInputError, match="voxel_point_threshold"):
        run_to_completion(run(SingleViewConfig(mode="train", steps=1, **fields)))
    with pytest.raises(UserInputError, match="voxel_point_threshold"):
        predict(SingleViewModel(image_size=32, width=8, hidden=32, n_points=16, ico_level=2, resolution=8),
                torch.rand(1, 3, 32, 32), ("voxels",), SingleViewConfig(**fields))
