"""The single-view model's optional coarse-to-fine mesh decoder (Pixel2Mesh style, issue 21): graph unpooling
against icosphere's levels, the shipped checkpoint unchanged, forward shapes, the checkpoint round trip and the
loss wiring."""
import json
import math
from pathlib import Path

import pytest
import torch

from pipelines import UserInputError
from pipelines.core.resnet import normalize
from pipelines.core.shapes import icosphere, mesh_edges
from pipelines.core.single_view_decoders import graph_unpool
from pipelines.core.single_view_net import TEMPLATE_RADIUS, SingleViewModel, load_checkpoint, save_checkpoint
from pipelines.events import Progress
from pipelines.core.single_view_losses import training_losses as _losses
from pipelines.single_view import SHIPPED_MODEL, SingleViewConfig, run

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "assets" / "single_view" / "mini.npz"
NET = dict(image_size=32, width=8, hidden=32, n_points=64, ico_level=3)


def test_graph_unpool_is_icosphere_subdivision_before_projection():
    for k in range(3):
        coarse, fine = icosphere(k, TEMPLATE_RADIUS), icosphere(k + 1, TEMPLATE_RADIUS)
        edges = mesh_edges(coarse.faces)
        up = graph_unpool(coarse.verts, edges)
        assert up.shape == fine.verts.shape
        assert torch.equal(up[:len(coarse.verts)], coarse.verts)  # the old vertices first, unchanged
        mids = (coarse.verts[edges[:, 0]] + coarse.verts[edges[:, 1]]) / 2
        assert torch.allclose(up[len(coarse.verts):], mids)
        assert (up[len(coarse.verts):].norm(dim=-1) < TEMPLATE_RADIUS - 1e-4).all()  # not yet on the sphere
        # Projected onto the sphere: icosphere's next level, vertex for vertex (so its faces fit).
        assert torch.allclose(torch.nn.functional.normalize(up, dim=-1) * TEMPLATE_RADIUS, fine.verts, atol=1e-6)
    # Batched, and through the model's levels 1 -> 3: every unpooled vertex is nearest its own template vertex.
    model = SingleViewModel(**NET, mesh_coarse_level=1)
    verts = model.coarse_verts.expand(2, -1, -1)
    for k in (1, 2):
        verts = graph_unpool(verts, getattr(model, f"unpool_edges_{k}"))
    assert verts.shape == (2, 642, 3) and torch.equal(verts[0], verts[1])
    d = torch.cdist(torch.nn.functional.normalize(verts[0], dim=-1) * TEMPLATE_RADIUS, model.template_verts)
    assert torch.equal(d.argmin(1), torch.arange(642))


def test_shipped_checkpoint_loads_and_predicts_as_before():
    config = json.loads((SHIPPED_MODEL / "config.json").read_text())
    assert "mesh_coarse_level" not in config["model"]
    model, _ = load_checkpoint(SHIPPED_MODEL)
    assert model.mesh_coarse_level == 0 and model.hparams == config["model"]
    assert not hasattr(model, "mesh_fine_head") and not hasattr(model, "coarse_verts")
    torch.manual_seed(0)
    x = torch.rand(1, 3, model.image_size, model.image_size)
    with torch.no_grad():
        out = model(x)
        f = model.encoder(normalize(x))
        # Today's head, written out: the level-4 template plus the MLP's offsets, nothing else.
        assert set(out) == {"voxels", "points", "mesh"} and out["mesh"].shape == (1, 2562, 3)
        assert torch.equal(out["mesh"], model.template_verts + model.mesh_head(f).view(1, -1, 3))
        assert torch.equal(out["points"], model.point_head(f).view(1, -1, 3))
    # A default model saves the same config keys as before (older code can load it).
    assert "mesh_coarse_level" not in SingleViewModel(**NET).hparams


def test_coarse_to_fine_forward_starts_as_the_subdivided_sphere():
    with pytest.raises(ValueError, match="mesh_coarse_level"):
        SingleViewModel(**NET, mesh_coarse_level=3)
    model = SingleViewModel(**NET, mesh_coarse_level=2).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, 32, 32))
    assert out["mesh"].shape == (3, 642, 3) and out["mesh_coarse"].shape == (3, 162, 3)
    assert model.template_faces.shape == (1280, 3) and model.coarse_faces.shape == (320, 3)
    # Both heads start at zero: the coarse mesh is the level-2 sphere, the fine one its midpoint subdivision.
    assert torch.equal(out["mesh_coarse"][0], model.coarse_verts)
    assert torch.allclose(out["mesh"][0], graph_unpool(model.coarse_verts, model.unpool_edges_2))
    assert [n for n, _ in model.named_children()][-2:] == ["mesh_head", "mesh_fine_head"]
    assert model.mesh_head[-1].out_features == 162 * 3 and model.mesh_fine_head[-1].out_features == 642 * 3


@pytest.mark.parametrize("fmt", ["float32", "int8"])
def test_coarse_to_fine_checkpoint_round_trip(fmt, tmp_path):
    torch.manual_seed(0)
    model = SingleViewModel(**NET, mesh_coarse_level=1).eval()
    for head in model.mesh_decoder_heads():  # non-zero offsets, so a wrong load shows
        torch.nn.init.normal_(head[-1].weight, std=0.01)
    save_checkpoint(model, tmp_path / "ckpt", fmt)
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model"]["mesh_coarse_level"] == 1
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert loaded.mesh_coarse_level == 1 and loaded.hparams == model.hparams
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for k in ("mesh", "mesh_coarse", "points"):
        err = float((a[k] - b[k]).abs().max() / a[k].abs().max())
        assert err < (1e-6 if fmt == "float32" else 0.05), (k, err)
    assert float((a["mesh"] - a["mesh"][:, :, :1]).abs().max()) > 0  # the check above compares real outputs


def test_losses_regularise_the_coarse_mesh_fully_and_the_fine_one_by_a_share():
    torch.manual_seed(0)
    model = SingleViewModel(**NET, mesh_coarse_level=1)
    for head in model.mesh_decoder_heads():
        torch.nn.init.normal_(head[-1].weight, std=0.01)
    pts = torch.rand(2, 256, 3) - 0.5
    out = model(torch.rand(2, 3, 32, 32), ("mesh",))

    def total(**kw):
        cfg = SingleViewConfig(gt_points=128, **kw)
        return _losses(out, pts.new_zeros(1), pts, model, cfg, torch.Generator().manual_seed(0))

    ls = total()
    assert {"mesh_cd", "coarse_mesh_cd", "laplacian", "coarse_laplacian", "edge", "coarse_edge", "normal",
            "coarse_normal"} <= set(ls)
    assert all(math.isfinite(float(v.detach())) for v in ls.values())
    cfg = SingleViewConfig()
    reg = lambda p: (cfg.w_laplacian * ls[p + "laplacian"] + cfg.w_edge * ls[p + "edge"]  # noqa: E731
                     + cfg.w_normal * ls[p + "normal"])
    expect = ls["mesh_cd"] + ls["coarse_mesh_cd"] + reg("coarse_") + cfg.mesh_fine_reg * reg("")
    assert torch.allclose(ls["loss"], expect, rtol=1e-5)
    no_fine = total(mesh_fine_reg=0.0)["loss"]
    assert torch.allclose(no_fine, expect - cfg.mesh_fine_reg * reg(""), rtol=1e-5)
    ls["loss"].backward()  # both heads learn
    assert all(h[-1].weight.grad.abs().sum() > 0 for h in model.mesh_decoder_heads())
    # Off: only today's terms.
    plain = SingleViewModel(**NET)
    keys = set(_losses(plain(torch.rand(2, 3, 32, 32), ("mesh",)), pts.new_zeros(1), pts, plain,
                       SingleViewConfig(gt_points=128), torch.Generator().manual_seed(0)))
    assert keys == {"mesh_cd", "laplacian", "edge", "normal", "loss"}


def test_training_with_coarse_to_fine_runs_and_saves(tmp_path):
    cfg = SingleViewConfig(data=str(MINI), sources="all", heads="mesh", steps=10, batch_size=4, preview_every=10,
                           device="cpu", out_dir=str(tmp_path), eval_views=1, gt_points=256, mixed_precision=False,
                           mesh_coarse_level=1, **{k: v for k, v in NET.items() if k != "ico_level"}, ico_level=2)
    events = list(run(cfg))
    curve = [e.losses for e in events if isinstance(e, Progress)]
    assert {"mesh_cd", "coarse_mesh_cd", "coarse_laplacian"} <= set(curve[-1])
    assert all(math.isfinite(v) for c in curve for v in c.values())
    done = events[-1]
    assert 0 <= done.metrics["mesh_f1@0.05"] <= 1
    loaded, _ = load_checkpoint(tmp_path / "model")
    assert loaded.mesh_coarse_level == 1 and loaded.template_verts.shape == (162, 3)
    with pytest.raises(UserInputError, match="mesh_coarse_level"):
        list(run(SingleViewConfig(data=str(MINI), device="cpu", out_dir=str(tmp_path / "bad"), mesh_coarse_level=4)))
