"""bench/single_view_finetune.py: the frozen encoder's features line up with their targets, plain then mirrored."""
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def test_frozen_features_are_the_encoders_in_target_order():
    from single_view_finetune import _frozen_encoder_data

    from pipelines.core.resnet import normalize

    mini = str(REPO / "assets" / "single_view" / "mini.npz")
    args = SimpleNamespace(checkpoint=str(REPO / "assets" / "single_view" / "model"), data=mini, eval_data=mini,
                           max_shapes=2)
    base, _, feats, occ, pts, S, _, test = _frozen_encoder_data(args)
    from pipelines.core.shape_packs import load_packs

    train = load_packs([Path(mini)], "cpu", base.image_size)
    train = train.select([i for i, s in enumerate(train.splits) if s == "train"])
    n = S * train.images.shape[1]
    assert feats.shape[0] == pts.shape[0] == occ.shape[0] == 2 * n and len(test) == 2
    last = train.images[S - 1, -1][None].float() / 255  # the last plain image, and its mirror n rows later
    with torch.no_grad():
        assert torch.allclose(feats[n - 1], base.encoder(normalize(last))[0], atol=1e-4)
        assert torch.allclose(feats[2 * n - 1], base.encoder(normalize(last.flip(-1)))[0], atol=1e-4)
    assert torch.allclose(pts[2 * n - 1], pts[n - 1] * torch.tensor([-1.0, 1.0, 1.0]))
