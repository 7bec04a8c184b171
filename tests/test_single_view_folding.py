"""The single-view model's optional mesh decoder shared across vertices (FoldingNet / AtlasNet style, issue 21):
it starts as the sphere, its size does not grow with the template, it round-trips through a checkpoint, it trains,
and the shipped checkpoint's config is unchanged by it."""
import json
from pathlib import Path

import pytest
import torch

from pipelines import UserInputError
from pipelines.core.single_view_net import SingleViewModel, load_checkpoint, save_checkpoint
from pipelines.events import Done
from pipelines.single_view import SHIPPED_MODEL, SingleViewConfig, run

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "assets" / "single_view" / "mini.npz"
NET = dict(image_size=32, width=8, hidden=32, n_points=64, ico_level=3)


def test_folding_decoder_starts_as_the_sphere_and_keeps_its_size_at_any_level():
    model = SingleViewModel(**NET, mesh_decoder="folding").eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out["mesh"].shape == (2, 642, 3) and torch.equal(out["mesh"][1], model.template_verts)
    size = lambda m: sum(p.numel() for p in m.mesh_head.parameters())  # noqa: E731
    assert size(model) == size(SingleViewModel(**dict(NET, ico_level=4), mesh_decoder="folding"))
    assert size(model) < size(SingleViewModel(**NET))  # the per-vertex MLP's last layer alone is 32 x 642 x 3
    fewer = SingleViewModel(**NET, mesh_decoder="folding", mesh_folding_octaves=4)
    assert fewer.mesh_head.position.shape[1] == 3 + 2 * 3 * 4 and fewer.hparams["mesh_folding_octaves"] == 4
    with pytest.raises(ValueError, match="mesh_decoder"):
        SingleViewModel(**NET, mesh_decoder="folding", mesh_coarse_level=1)
    assert "mesh_decoder" not in json.loads((SHIPPED_MODEL / "config.json").read_text())["model"]


@pytest.mark.parametrize("fmt", ["float32", "int8"])
def test_folding_checkpoint_round_trip(fmt, tmp_path):
    torch.manual_seed(0)
    model = SingleViewModel(**NET, mesh_decoder="folding").eval()
    torch.nn.init.normal_(model.mesh_head[-1].weight, std=0.01)  # non-zero offsets, so a wrong load shows
    save_checkpoint(model, tmp_path / "ckpt", fmt)
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert loaded.hparams == model.hparams and loaded.hparams["mesh_decoder"] == "folding"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x)["mesh"], loaded(x)["mesh"]
    offsets = a - model.template_verts
    assert float(offsets.abs().max()) > 0
    assert float((a - b).abs().max() / offsets.abs().max()) < (1e-5 if fmt == "float32" else 0.1)


def test_training_with_the_folding_decoder_moves_the_mesh(tmp_path):
    cfg = SingleViewConfig(data=str(MINI), sources="all", steps=20, batch_size=8, lr=2e-3, preview_every=10,
                           device="cpu", out_dir=str(tmp_path), eval_views=1, mesh_decoder="folding", **NET)
    done = list(run(cfg))[-1]
    assert isinstance(done, Done) and 0 <= done.metrics["mesh_f1@0.05"] <= 1
    model, _ = load_checkpoint(tmp_path / "model")
    with torch.no_grad():
        offsets = model(torch.rand(1, 3, 32, 32), ("mesh",))["mesh"][0] - model.template_verts
    assert float(offsets.abs().max()) > 1e-3
    with pytest.raises(UserInputError, match="folding"):
        list(run(SingleViewConfig(data=str(MINI), device="cpu", out_dir=str(tmp_path / "b"),
                                  mesh_decoder="folding", mesh_coarse_level=2, **NET)))
