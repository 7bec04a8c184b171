"""The single-view voxel and point decoders that read the encoder's feature maps (issue 21): the lifted voxel
decoder (2D features spread along depth columns of the view grid) and PSGN's two-branch point decoder."""
from __future__ import annotations

import json
import math

import pytest
import torch

from pipelines.core.single_view_decoders import PixelPointBranch, VoxelDecoder, lift_to_view_grid
from pipelines.core.single_view_net import SingleViewModel, load_checkpoint, save_checkpoint
from pipelines.events import Progress
from pipelines.single_view import MINI_PACK, SingleViewConfig, run

NET = dict(image_size=32, width=8, hidden=32, n_points=64, ico_level=2)


def test_lifting_puts_a_pixel_in_its_depth_column_of_the_view_grid():
    # view frame: x the image's columns (left to right), y depth, z its rows bottom-up
    conv = torch.nn.Conv2d(1, 2 * 4, 1, bias=False)
    torch.nn.init.ones_(conv.weight)
    fmap = torch.zeros(1, 1, 4, 4)
    fmap[0, 0, 0, 3] = 1.0  # top row, rightmost column
    grid = lift_to_view_grid(fmap, conv, 4)
    assert grid.shape == (1, 2, 4, 4, 4)
    assert (grid[0, 0] != 0).nonzero().tolist() == [[3, y, 3] for y in range(4)]
    # a map of another size is resized to the grid's: a uniform map stays uniform
    grid = lift_to_view_grid(torch.ones(1, 1, 8, 8), conv, 4)
    assert torch.allclose(grid, torch.ones_like(grid))


def test_lifted_decoder_with_zero_lifts_is_the_global_decoder():
    torch.manual_seed(0)
    lifted = VoxelDecoder(16, 32, 32, lift_channels=(16, 8, 4)).eval()
    plain = VoxelDecoder(16, 32, 32).eval()
    missing = plain.load_state_dict(lifted.state_dict(), strict=False)
    assert not missing.missing_keys
    f = torch.randn(2, 16)
    maps = [torch.randn(2, c, s, s) for c, s in ((16, 1), (8, 2), (4, 4))]
    with torch.no_grad():
        assert not torch.allclose(lifted(f, maps), plain(f))  # the maps are read
        for conv in lifted.lift:
            conv.weight.zero_()
            conv.bias.zero_()
        assert torch.allclose(lifted(f, maps), plain(f), atol=1e-6)
    assert len(VoxelDecoder(16, 32, 32, lift_channels=(16, 8, 4, 2)).lift) == 3  # one a stage before the last
    small = VoxelDecoder(16, 32, 16, lift_channels=(16, 8, 4)).eval()  # 16^3: two stages before the last
    assert len(small.lift) == 2 and small(f, maps).shape == (2, 16, 16, 16)


def test_pixel_point_branch_starts_near_its_cells_and_places_them_on_the_image_plane():
    branch = PixelPointBranch(4, 8, cells=2, per_cell=3)
    with torch.no_grad():
        branch.net[-1].weight.zero_()
        branch.net[-1].bias.zero_()
        pts = branch(torch.randn(1, 4, 4, 4))  # a bigger map is resized to the cells
    assert pts.shape == (1, 12, 3)
    # cells in reading order: top-left, top-right, bottom-left, bottom-right; x right, y depth 0, z up
    want = torch.tensor([[-0.25, 0, 0.25], [0.25, 0, 0.25], [-0.25, 0, -0.25], [0.25, 0, -0.25]])
    assert torch.equal(pts[0], want.repeat_interleave(3, 0))
    with torch.no_grad():
        fresh = PixelPointBranch(4, 8, cells=2, per_cell=3)(torch.randn(1, 4, 2, 2))
    assert len(torch.unique(fresh[0], dim=0)) == 12  # no two points alike at the start
    assert float((fresh - want.repeat_interleave(3, 0)).abs().max()) < 0.5


@pytest.mark.parametrize("fmt", ["float32", "int8"])
def test_lifted_two_branch_checkpoint_round_trip(fmt, tmp_path):
    torch.manual_seed(0)
    model = SingleViewModel(**NET, voxel_decoder="lifted", point_decoder="two-branch").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a = model(x)
    assert a["points"].shape == (2, 64, 3) and a["voxels"].shape == (2, 32, 32, 32)
    save_checkpoint(model, tmp_path / "ckpt", fmt)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())["model"]
    assert config["voxel_decoder"] == "lifted" and config["point_decoder"] == "two-branch"
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        b = loaded(x)
    for k in ("voxels", "points"):
        err = float((a[k] - b[k]).abs().max() / a[k].abs().max())
        assert err < (1e-6 if fmt == "float32" else 0.05), (k, err)
    # defaults keep the keys older code knows
    assert not {"voxel_decoder", "point_decoder"} & set(SingleViewModel(**NET).hparams)
    with pytest.raises(ValueError, match="voxel_decoder"):
        SingleViewModel(**NET, voxel_decoder="lifting")
    with pytest.raises(ValueError, match="n_points >= 8"):  # 32 px: a 2x2 map
        SingleViewModel(**dict(NET, n_points=6), point_decoder="two-branch")


def test_training_with_the_feature_map_decoders_runs(tmp_path):
    cfg = SingleViewConfig(data=str(MINI_PACK), sources="all", steps=6, batch_size=4, preview_every=6, device="cpu",
                           out_dir=str(tmp_path), eval_views=1, gt_points=128, mixed_precision=False,
                           voxel_decoder="lifted", point_decoder="two-branch", **NET)
    events = list(run(cfg))
    curve = [e.losses for e in events if isinstance(e, Progress)]
    assert all(math.isfinite(v) for c in curve for v in c.values())
    assert 0 <= events[-1].metrics["voxels_iou"] <= 1
    loaded, _ = load_checkpoint(tmp_path / "model")
    assert loaded.hparams["voxel_decoder"] == "lifted" and loaded.point_pixel_head is not None
