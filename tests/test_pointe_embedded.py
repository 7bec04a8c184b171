"""The embedded Point-E tier's build-time code: data (two pybullet meshes), training (--tiny), export, loading."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pybullet_data")
pytest.importorskip("trimesh")

from pipelines.train import pointe_batches, pointe_data, pointe_model, pointe_train  # noqa: E402
from pipelines.train.priors_data import priors_catalog  # noqa: E402

SHAPES = ("pybullet-bunny", "pybullet-domino-domino")  # one held out, one textured training shape


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pointe_data")
    shapes = [s for s in priors_catalog("pybullet") if s.id in SHAPES]
    assert len(shapes) == 2
    records = pointe_data.build(root, shapes=shapes, log=lambda *_: None, points=1024, views=2, size=24, ssaa=1,
                                resolution=8)
    assert {r["id"] for r in records} == set(SHAPES)
    return pointe_data.pack(root)


def test_points_on_the_surface_with_texture_colours(pack):
    from pipelines.core.shapes import sample_surface
    from pipelines.train.mesh_library import load_parts

    root = pack.parent
    for src in [s for s in priors_catalog("pybullet") if s.id in SHAPES]:
        with np.load(root / "shapes" / f"{src.id}.npz") as z:
            points, colors = z["points"], z["colors"]
        assert points.shape == (1024, 3) and colors.shape == (1024, 3) and colors.dtype == np.uint8
        parts = load_parts(src)
        dense = sample_surface(torch.from_numpy(parts.verts).float(), torch.from_numpy(parts.faces), 30000,
                               torch.Generator().manual_seed(0))
        dist = torch.cdist(torch.from_numpy(points), dense).amin(1)
        assert float(dist.max()) < 0.03 and float(dist.median()) < 0.01  # on the mesh (to the dense samples' spacing)
        assert np.abs(points).max() <= 0.5 + 1e-5 and (points.max(0) - points.min(0)).max() > 0.9  # canonical frame
    with np.load(root / "shapes" / "pybullet-domino-domino.npz") as z:
        assert z["colors"].astype(float).std(0).max() > 5  # from the texture, not one material colour


def test_pack_round_trip_and_split_by_shape(pack):
    data = pointe_data.load_pack(pack)
    splits = {s.id: s.split for s in priors_catalog("pybullet")}
    assert [splits[i] for i in data.ids] == list(data.splits)
    assert set(data.splits) == {"train", "test"}
    assert data.test_rgba.shape[0] == len(data.test) == 1
    root = pack.parent
    for k, sid in enumerate(data.ids):
        with np.load(root / "shapes" / f"{sid}.npz") as z:
            true = torch.from_numpy(z["points"])
        err = torch.cdist(true, data.xyz[k]).amin(1).max()
        assert float(err) <= 3 ** 0.5 / 510 + 1e-6  # uint8 cells: the decoded point is the cell centre
    assert torch.allclose(data.image_emb.norm(dim=-1), torch.ones(1), atol=1e-4)
    assert torch.allclose(data.text_emb.norm(dim=-1), torch.ones(1), atol=1e-4)
    caps = data.shape_caps[0][data.shape_caps[0] >= 0]
    assert any("bunny" in data.captions[int(c)] for c in caps) or "bunny" not in data.ids[0]


def test_encode_points_round_trip():
    xyz = np.random.default_rng(0).random((500, 3)).astype(np.float32) - 0.5
    planes, order = pointe_data.encode_points(xyz)
    back = pointe_data.decode_points(planes)
    assert planes.dtype == np.uint8 and planes.shape == (3, 500)
    assert np.abs(back - xyz[order]).max() <= 1 / 510 + 1e-6


def test_sdf_targets_sign_follows_the_occupancy():
    """Inside where the grid is occupied (here the half x < 0), whichever axis order grid_sample uses."""
    occ = torch.zeros(1, 8, 8, 8, dtype=torch.bool)
    occ[0, :4] = True  # indexed [x, y, z]
    cloud = torch.rand(1, 64, 3) - 0.5
    data = type("D", (), {"occupancy": occ})()
    query, sdf = pointe_batches.sdf_targets(data, torch.zeros(1, dtype=torch.long), cloud, 256, torch.Generator())
    far = (query[0, :, 0].abs() > 0.1) & (query[0].abs().amax(-1) < 0.45)
    assert bool(far.any())
    assert bool(((sdf[0] > 0) == (query[0, :, 0] < 0))[far].all())
    assert torch.allclose(sdf.abs(), torch.cdist(query, cloud).amin(-1))


def _train(model: str, pack: Path, tmp: Path, steps: int, log=None, **kw) -> dict:
    opts = pointe_model.TrainOptions(model=model, data=str(pack), out=str(tmp / "runs" / model), steps=steps,
                                     tiny=True, device="cpu", warmup=2, lr=2e-3, log_every=1, ckpt_every=1000,
                                     export=str(tmp / "pointe" / model), queries=64, batch=2, **kw)
    return pointe_train.train(opts, log=log or (lambda *_: None))


def test_tiny_training_lowers_the_loss_resumes_and_exports(pack, tmp_path):
    losses = []

    def log(msg: str) -> None:
        if msg.startswith("step "):
            losses.append(float(msg.split("loss ")[1].split()[0]))

    torch.manual_seed(0)
    # an eps base: a fresh one predicts zero noise, far from the target at every t, so 25 steps of batch 2 lower
    # the loss clearly; a fresh v base (the default) starts near x0 = sqrt(ab) x_t, already low at high noise
    result = _train("base", pack, tmp_path, 25, log, prediction="eps")
    assert result["step"] == 25 and len(losses) == 25
    assert np.mean(losses[-5:]) < losses[0]  # the running loss of the last steps is below the first step's
    again = _train("base", pack, tmp_path, 27, prediction="eps")  # resumes from the checkpoint: two more steps
    assert again["step"] == 27
    manifest = json.loads((tmp_path / "pointe" / "base" / "manifest.json").read_text())
    assert manifest["steps"] == 27 and manifest["data"]["shapes"] == 2
    config = json.loads((tmp_path / "pointe" / "base" / "config.json").read_text())
    assert config["condition"] == "scorer" and config["weights_dtype"] == "int8"


def test_init_starts_from_an_exported_folder_and_refuses_another_architecture(pack, tmp_path):
    from pipelines.core.priors.point_e_embedded import load_model_folder

    _train("base", pack, tmp_path / "a", 3, prediction="eps")
    folder = tmp_path / "a" / "pointe" / "base"
    exported, _ = load_model_folder(folder, "cpu")
    # zero steps from the folder: the EMA exported again is the folder's (dequantised) weights, not a fresh net
    torch.manual_seed(1)  # another random start than the folder's
    _train("base", pack, tmp_path / "b", 0, prediction="eps", init=str(folder))
    again, _ = load_model_folder(tmp_path / "b" / "pointe" / "base", "cpu")
    for (name, a), b in zip(exported.state_dict().items(), again.state_dict().values()):
        assert torch.allclose(a, b, atol=2e-2 * float(a.abs().max()) + 1e-6), name  # int8 twice
    with pytest.raises(ValueError, match="another model config"):
        _train("base", pack, tmp_path / "c", 0, prediction="v", init=str(folder))


def test_exported_folder_loads_and_samples_through_the_core_loader(pack, tmp_path):
    from pipelines.core.point_sampler import Stage, sample
    from pipelines.core.priors.point_e import load_models

    for model in pointe_model.MODELS:
        _train(model, pack, tmp_path, 2)
    models = load_models(str(tmp_path / "pointe"), "base40M", "cpu")
    assert models.tier == "embedded" and models.upsampler is not None and models.sdf is not None
    assert str(tmp_path / "pointe") in models.describe()  # a retrained folder is named, not the shipped one
    emb = models.encoder.text_vec(["a bunny"])
    x = sample(models.base, {"embeddings": emb}, 1, models.upsampler, {}, Stage(steps=2),
               Stage(steps=2, sigma_max=160.0, s_churn=0.0, guidance_scale=0.0), device="cpu")
    tiny = pointe_model.TINY
    assert x.shape == (1, 6, tiny["base"]["n_ctx"] + tiny["upsample"]["n_ctx"])
    assert float(x.abs().max()) <= 1.0
    sdf = models.sdf(torch.zeros(1, 3, 5), x[:, :3] / 2)
    assert sdf.shape == (1, 5) and bool(torch.isfinite(sdf).all())


def test_shipped_models_verify_and_sample_one_step():
    """The shipped embedded tier (assets/pointe): each folder's shards match their sha256 (``load_model_folder``
    verifies), the base reads the scorer's 256-d space, and one step of the sampler gives a cloud in range."""
    from pipelines.core.point_sampler import Stage, sample
    from pipelines.core.priors.point_e import EMBEDDED_DIR
    from pipelines.core.priors.point_e_embedded import load_model_folder

    base, cfg = load_model_folder(EMBEDDED_DIR / "base", "cpu")
    up, _ = load_model_folder(EMBEDDED_DIR / "upsample", "cpu")
    sdf, _ = load_model_folder(EMBEDDED_DIR / "sdf", "cpu")
    assert cfg["condition"] in ("scorer", "scorer-grid") and cfg["weights_dtype"] == "int8"
    assert cfg["model"].get("clip_dim", cfg["model"].get("vec_dim")) == 256  # the embedded scorer's space
    emb = torch.nn.functional.normalize(torch.randn(1, 256, generator=torch.Generator().manual_seed(0)), dim=-1)
    cond = {"embeddings": emb}
    if cfg["condition"] == "scorer-grid":  # a grid base: its tower must be the one it was trained on (sha256)
        from pipelines.core.priors.point_e_embedded import grid_features, load_grid_tower

        grid = {"features": "fmap", "image_size": 64, **cfg["grid"]}
        tower = load_grid_tower(grid, "cpu")
        view = np.full((1, grid["image_size"], grid["image_size"], 3), 255, np.uint8)
        view[:, 16:48, 20:44] = (180, 40, 40)
        cond = {"embeddings": grid_features(tower, view, grid["features"]), "vec": emb}
    x = sample(base, cond, 1, up, {}, Stage(steps=1), Stage(steps=1, sigma_max=160.0, s_churn=0.0,
                                                            guidance_scale=0.0), device="cpu")
    assert x.shape == (1, 6, base.n_ctx + up.n_ctx) and bool(torch.isfinite(x).all()) and float(x.abs().max()) <= 1
    assert bool(torch.isfinite(sdf(torch.zeros(1, 3, 4), x[:, :3] / 2)).all())
