"""bench/single_view_finetune.py: the frozen encoder's features line up with their targets, plain then mirrored."""
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
MINI = str(REPO / "assets" / "single_view" / "mini.npz")


@pytest.fixture(scope="module")
def global_checkpoint(tmp_path_factory):
    """A small model whose decoders read the pooled feature only (the shipped one's voxel decoder reads the feature
    maps, which these checks do not freeze)."""
    from pipelines.core.single_view_net import SingleViewModel, save_checkpoint

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("global")
    save_checkpoint(SingleViewModel(image_size=64, width=8, hidden=32, n_points=64, ico_level=2), folder, "float16",
                    {"data": {}})
    return str(folder)


def test_a_model_with_feature_map_decoders_is_refused():
    from single_view_finetune import _frozen_encoder_data

    args = SimpleNamespace(checkpoint=str(REPO / "assets" / "single_view" / "model"), data=MINI, eval_data=MINI,
                           max_shapes=2)
    with pytest.raises(SystemExit, match="reads the encoder's feature maps"):
        _frozen_encoder_data(args)


def test_frozen_features_are_the_encoders_in_target_order(global_checkpoint):
    from single_view_finetune import _frozen_encoder_data

    from pipelines.core.resnet import normalize

    args = SimpleNamespace(checkpoint=global_checkpoint, data=MINI, eval_data=MINI, max_shapes=2)
    base, _, feats, occ, pts, S, _, test = _frozen_encoder_data(args)
    from pipelines.core.shape_packs import load_packs

    train = load_packs([Path(MINI)], "cpu", base.image_size)
    train = train.select([i for i, s in enumerate(train.splits) if s == "train"])
    n = S * train.images.shape[1]
    assert feats.shape[0] == pts.shape[0] == occ.shape[0] == 2 * n and len(test) == 2
    last = train.images[S - 1, -1][None].float() / 255  # the last plain image, and its mirror n rows later
    with torch.no_grad():
        assert torch.allclose(feats[n - 1], base.encoder(normalize(last))[0], atol=1e-4)
        assert torch.allclose(feats[2 * n - 1], base.encoder(normalize(last.flip(-1)))[0], atol=1e-4)
    assert torch.allclose(pts[2 * n - 1], pts[n - 1] * torch.tensor([-1.0, 1.0, 1.0]))


def test_both_finetunes_train_with_the_pipelines_loss(tmp_path, global_checkpoint):
    """head-finetune and mesh-finetune call the pipeline's training loss (a renamed loss once broke them unseen):
    two steps move the point decoder's weights, and both write scores in range."""
    import json

    from single_view_finetune import head_finetune, mesh_finetune

    from pipelines.core.single_view_net import load_checkpoint

    common = dict(checkpoint=global_checkpoint, data=MINI, eval_data=MINI,
                  max_shapes=2, steps=2, batch_size=4, lr=1e-3, eval_views=1)
    head_finetune(SimpleNamespace(**common, head="points", arms=["shipped"], json=str(tmp_path / "h.json"),
                                  save_dir=str(tmp_path)))
    mesh_finetune(SimpleNamespace(**common, arms=["w_edge=1"], scratch=False, json=str(tmp_path / "m.json")))
    shipped, tuned = (load_checkpoint(f, "cpu")[0] for f in (common["checkpoint"], tmp_path / "shipped"))
    assert any(not torch.allclose(a.float(), b.float(), atol=1e-4)
               for a, b in zip(tuned.point_head.parameters(), shipped.point_head.parameters()))
    for name, key in (("h.json", "points_f1@0.05"), ("m.json", "mesh_f1@0.05")):
        rows = json.loads((tmp_path / name).read_text())["results"]
        assert rows and all(0 < r["metrics"][key] <= 1 for r in rows)
