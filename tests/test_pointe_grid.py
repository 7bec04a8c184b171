"""Issue 17, the embedded Point-E grid base: the released base40M layout (image-grid tokens after the time token) on
the embedded scorer's feature map, plus the scorer embedding for text. The model's shapes and conditions, the pack's
renders, a tiny training run exported int8 and loaded through the same loader, one sampling step, the app's text
and image paths, and the grid of an image equal to the pack's grid of the same render. Synthetic packs; the shipped
scorer's image tower (3 MB) makes the grids."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.core import point_diffusion as pd
from pipelines.core.priors import point_e_embedded as pee
from pipelines.train import pointe_batches, pointe_data, pointe_model, pointe_train

from test_pointe_pipeline import StandInScorer
from test_pointe_recipe import fake_pack


def grid_pack(path: Path, shapes: int = 4, views: int = 2, seed: int = 0) -> Path:
    """``fake_pack`` with renders: a coloured disc on transparency per view, composited on white as ``pack`` does."""
    fake_pack(path, shapes=shapes, points=512, views=views)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    rgba = np.zeros((shapes, views, 64, 64, 4), np.uint8)
    for s in range(shapes):
        for v in range(views):
            cx, cy, r = rng.integers(20, 44, 2).tolist() + [int(rng.integers(6, 16))]
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            rgba[s, v][disc] = np.append(rng.integers(0, 256, 3), 255)
            rgba[s, v][~disc & ((xx - cx) ** 2 + (yy - cy) ** 2 < (r + 1) ** 2)] = (40, 40, 40, 128)  # soft rim
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(renders=pee.on_white(rgba), test_rgba=rgba[-1:])
    np.savez_compressed(path, **arrays)
    np.save(path.with_suffix(".rgba.npy"), rgba)
    return path


def tiny_grid_model(**kw) -> pd.EmbeddedGridPointDiffusionTransformer:
    torch.manual_seed(0)
    cfg = dict(grid_dim=12, grid_tokens=5, vec_dim=8, width=32, layers=1, heads=2, n_ctx=16, prediction="v")
    m = pd.EmbeddedGridPointDiffusionTransformer(**{**cfg, **kw}).eval()
    torch.nn.init.normal_(m.output_proj.weight)  # zero-initialised: every output would be 0
    return m


def test_grid_model_layout_shapes_and_conditions():
    m = tiny_grid_model()
    x, t = torch.randn(2, 6, 16), torch.tensor([3, 900])
    grid, vec = torch.randn(2, 12, 5), torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    with torch.no_grad():
        out = m(x, t, embeddings=grid, vec=vec)
        raw = m(x, t, embeddings=grid, vec=vec, raw=True)
        # by hand: [time, 5 grid tokens + positions, points + vec]; the v output converted to eps
        tok = m.clip_embed(grid.transpose(1, 2)) + m.pos_embed
        h = m.input_proj(x.transpose(1, 2)) + m.vec_embed(math.sqrt(8) * vec)[:, None]
        t_tok = m.time_embed(pd.timestep_embedding(t, 32))[:, None]
        want = m.output_proj(m.ln_post(m.backbone(m.ln_pre(torch.cat([t_tok, tok, h], 1))))[:, 6:]).transpose(1, 2)
        assert torch.allclose(raw, want, atol=1e-5)
        assert out.shape == (2, 12, 16)
        assert torch.allclose(out, pd.v_to_eps(raw, x, m.ab[t], 6), atol=1e-6)
        # missing conditions are zeros (the unconditional input); each one reaches the output
        assert torch.allclose(m(x, t), m(x, t, embeddings=torch.zeros_like(grid), vec=torch.zeros_like(vec)))
        assert float((m(x, t, embeddings=grid) - m(x, t)).abs().amax()) > 1e-3
        assert float((m(x, t, vec=vec) - m(x, t)).abs().amax()) > 1e-3
        # token positions matter: the same tokens in another order give another output
        assert float((m(x, t, embeddings=grid.flip(-1), vec=vec) - out).abs().amax()) > 1e-3
    assert pd.model_kind(dict(name="EmbeddedGridPointDiffusionTransformer")) == "grid"
    # grid_add: the layer-normed grid, flattened and projected, added to every point beside the tokens
    g = tiny_grid_model(grid_add=True)
    with torch.no_grad():
        normed = g.clip_embed[0](grid.transpose(1, 2))
        h = g.input_proj(x.transpose(1, 2)) + (g.vec_embed(math.sqrt(8) * vec) + g.grid_add(normed.flatten(1)))[:, None]
        tok = g.clip_embed[1](normed) + g.pos_embed
        t_tok = g.time_embed(pd.timestep_embedding(t, 32))[:, None]
        want = g.output_proj(g.ln_post(g.backbone(g.ln_pre(torch.cat([t_tok, tok, h], 1))))[:, 6:]).transpose(1, 2)
        assert torch.allclose(g(x, t, embeddings=grid, vec=vec, raw=True), want, atol=1e-5)


def test_released_grid_configs_keep_their_state_dicts():
    """The new class subclasses the released grid model and adds only its own keys (the released configs against
    the official key table: test_pointe_models.py)."""
    m = tiny_grid_model(pos_embed=False, vec_dim=0, prediction="eps")
    assert set(m.state_dict()) == set(pd.CLIPImageGridPointDiffusionTransformer(
        grid_dim=12, grid_tokens=5, width=32, layers=1, heads=2, n_ctx=16).state_dict())
    assert set(tiny_grid_model().state_dict()) - set(m.state_dict()) == {"pos_embed", "vec_embed.weight",
                                                                         "vec_embed.bias"}


@pytest.fixture(scope="module")
def tower():
    return pee.load_image_tower(None, "cpu")


def test_features_of_an_image_equal_the_packs_features_of_the_same_render(tmp_path, tower):
    from PIL import Image

    pack = grid_pack(tmp_path / "p.npz")
    rgba = np.load(pack.with_suffix(".rgba.npy"))
    data = pointe_data.load_pack(pack)
    assert data.renders.shape == (4, 2, 64, 64, 3) and data.renders.dtype == np.uint8
    grid = pointe_batches.attach_grid(data, "fmap", "cpu")
    assert grid.shape == (4, 2, 256, 16)  # the shipped tower: 4 x 4 cells of 256 channels
    enc = pee.ScorerGridEncoder(None, "fmap", tower[1], tower[0])
    # the render as an app or the bench holds it (RGBA array), and as a PIL image of the view on white: the same
    # pixels exactly, the same features (up to the batch's float order)
    assert np.array_equal(pee.view_pixels([rgba[2, 1], Image.fromarray(data.renders[3, 0])]),
                          data.renders[[2, 3], [1, 0]])
    assert torch.allclose(enc.grid([rgba[2, 1], rgba[0, 0]]), torch.stack([grid[2, 1], grid[0, 0]]), atol=1e-5)
    assert torch.allclose(enc.grid([Image.fromarray(data.renders[3, 0])]), grid[3, :1], atol=1e-5)
    # the grids differ between views, and the pooled end of the same tower is the scorer's embedding path
    assert float((grid[0, 0] - grid[1, 0]).abs().mean()) > 1e-2
    patches = pointe_batches.attach_grid(data, "patches", "cpu")
    assert patches.shape == (4, 2, 192, 64) and float(patches.min()) >= -1 and float(patches.max()) <= 1
    assert torch.allclose(pee.grid_features(tower[0], pee.view_pixels([rgba[1, 0]]), "patches")[0], patches[1, 0])
    assert pee.grid_shape("fmap", 64, tower[0]) == (256, 16) and pee.grid_shape("patches", 64) == (192, 64)


def test_tiny_grid_training_exports_loads_and_samples(tmp_path, capsys):
    from pipelines.core.point_sampler import BASE_STAGE, sample

    pack = grid_pack(tmp_path / "p.npz")
    opts = pointe_model.TrainOptions(model="base", data=str(pack), out=str(tmp_path / "runs" / "base"), steps=3,
                                     tiny=True, device="cpu", warmup=1, log_every=1, batch=4, cond="grid",
                                     export=str(tmp_path / "pointe" / "base"))
    result = pointe_train.train(opts, log=lambda *_: None)
    assert {f"x0_mse_t{t}_{c}" for t in (400, 700) for c in ("true", "shuffled", "null")} <= set(result["metrics"])
    # held-out and training shapes scored alike (the running train_loss is weighted, so it compares with neither)
    assert all(np.isfinite(result["metrics"][k]) and result["metrics"][k] > 0 for k in ("test_loss", "train_eval_loss"))
    config = json.loads((tmp_path / "pointe" / "base" / "config.json").read_text())
    assert config["condition"] == "scorer-grid" and config["grid"] == {"features": "fmap", "image_size": 64}
    assert config["model"]["name"] == "EmbeddedGridPointDiffusionTransformer" and config["weights_dtype"] == "int8"
    assert (config["model"]["grid_dim"], config["model"]["grid_tokens"], config["model"]["vec_dim"]) == (256, 16, 256)
    assert config["model"]["grid_add"] is True  # the default
    model, _ = pee.load_model_folder(tmp_path / "pointe" / "base", "cpu")  # strict, through the same loader
    assert isinstance(model, pd.EmbeddedGridPointDiffusionTransformer) and model.prediction == "v"
    # one sampling step, from an image (grid + embedding) and from a caption (embedding alone)
    stage = BASE_STAGE.__class__(**{**BASE_STAGE.__dict__, "steps": 1})
    data = pointe_data.load_pack(pack)
    pointe_batches.attach_grid(data, "fmap", "cpu")
    for cond in ({"embeddings": data.grid[:1, 0], "vec": data.image_emb[:1, 0]}, {"vec": data.text_emb[:1]}):
        x = sample(model, cond, 1, None, None, stage, seed=0)
        assert x.shape == (1, 6, model.n_ctx) and bool(torch.isfinite(x).all()) and float(x.abs().max()) <= 1
    # resuming with another layout is refused; exporting the run again keeps the layout
    again = pointe_train.export_runs(tmp_path / "runs", tmp_path / "again")
    assert json.loads((again[0] / "config.json").read_text())["condition"] == "scorer-grid"
    # a pack without renders, or unknown options: a clear CLI error
    old = fake_pack(tmp_path / "old.npz")
    for extra in (["--data", str(old)], ["--data", str(pack), "--grid", "pixels"],
                  ["--data", str(pack), "--cond", "tokens"]):
        assert pointe_train.main(["base", "--tiny", "--cond", "grid", "--device", "cpu", "--steps", "1",
                                  "--out", str(tmp_path / "runs" / "x"), *extra]) == 2
    err = capsys.readouterr().err
    assert "pointe data renders" in err and "--grid must be" in err and "--cond must be" in err


def test_add_renders_and_shrink_keep_them(tmp_path, monkeypatch):
    pack = fake_pack(tmp_path / "p.npz", shapes=2, views=2)
    root = tmp_path / "root"
    (root / "shapes").mkdir(parents=True)
    rgba = np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64, 4), dtype=np.uint8)
    for i, sid in enumerate(("shape-0", "shape-1")):
        np.savez_compressed(root / "shapes" / f"{sid}.npz", rgba=rgba[i])
    assert pointe_data.main(["renders", "--data", str(pack), "--root", str(root), "--out",
                             str(tmp_path / "r.npz")]) == 0
    data = pointe_data.load_pack(tmp_path / "r.npz")
    assert np.array_equal(data.renders, pee.on_white(rgba[:, :2]))  # as many views as the embeddings
    small = pointe_data.shrink(tmp_path / "r.npz", tmp_path / "s.npz", points=256)
    assert np.array_equal(pointe_data.load_pack(small).renders, data.renders)
    assert pointe_data.load_pack(pack).renders is None
    assert pointe_data.main(["renders", "--data", str(pack), "--root", str(tmp_path / "none")]) == 2


def test_app_runs_text_and_image_through_an_embedded_grid_base(tmp_path, monkeypatch, tower):
    """The app with a grid base folder: a prompt conditions on the caption's embedding alone, an image on its grid
    (the shipped tower) and its embedding (a stand-in scorer)."""
    from PIL import Image

    from pipelines import run_to_completion
    from pipelines.core.priors import embedded
    from pipelines.core.priors.point_e import clear_cache, load_models
    from pipelines.core.priors.prior_folder import save_prior
    from pipelines.pointe import PointEConfig, run

    cfg = dict(name="EmbeddedGridPointDiffusionTransformer", input_channels=6, output_channels=12, n_ctx=32,
               width=32, layers=1, heads=2, init_scale=0.25, time_token_cond=True, cond_drop_prob=0.1, grid_dim=256,
               grid_tokens=16, pos_embed=True, vec_dim=8, prediction="v")
    folder = tmp_path / "pointe"
    save_prior(folder / "base", "pointe-base", pd.build_model(cfg),
               {"model": cfg, "condition": "scorer-grid", "grid": {"features": "fmap", "image_size": 64}},
               {"data": "test"}, dtype="int8")

    monkeypatch.setattr(embedded, "load_embedded_scorer", lambda device, dtype="auto": StandInScorer(64))
    clear_cache()
    models = load_models(str(folder), "base40M", "cpu", upsample=False, sdf=False)
    assert models.kind == "gridvec" and models.tier == "embedded"
    img = np.full((64, 64, 4), 0, np.uint8)
    img[16:48, 20:44] = (200, 30, 30, 255)
    assert models.encoder.grid([img]).shape == (1, 256, 16)
    Image.fromarray(img).save(tmp_path / "obj.png")
    common = dict(checkpoints=str(folder), steps=2, preview_every=8, preview_size=16, device="cpu", mesh=False,
                  upsample=False)
    for kw in (dict(prompt="a chair"), dict(image=str(tmp_path / "obj.png"))):
        out = tmp_path / ("image" if "image" in kw else "text")
        done = run_to_completion(run(PointEConfig(out_dir=str(out), **common, **kw)))
        assert done.metrics["points"] == 32
        assert json.loads((out / "run.json").read_text())["tier"] == "embedded"
    clear_cache()


def test_single_view_grid_reads_the_views_as_the_single_view_tab_and_records_its_model(tmp_path, monkeypatch):
    """'sv': the single-view model's ResNet-18 feature map (4 x 4 x 512) of each view, prepared as that tab prepares
    an upload; the pack's grid of a render equals an app image's grid of it, the trained base records which model
    made its tokens, and a base of another single-view model is refused with the fix."""
    from pipelines.config import UserInputError
    from pipelines.core.priors import embedded
    from pipelines.core.priors.point_e import clear_cache, load_models
    from pipelines.core.resnet import normalize
    from pipelines.core.single_view_net import load_checkpoint, prepare_array

    pack = grid_pack(tmp_path / "p.npz")
    rgba = np.load(pack.with_suffix(".rgba.npy"))
    data = pointe_data.load_pack(pack)
    grid = pointe_batches.attach_grid(data, "sv", "cpu")
    assert grid.shape == (4, 2, 512, 16) and data.grid_info["features"] == "sv"
    tower = pee.load_single_view_tower(None, "cpu")
    assert data.grid_info["single_view"] == tower.sha256 and pee.grid_shape("sv", 64, tower) == (512, 16)
    # by hand: the view on white, the single-view tab's crop at 128 px, the encoder's last block
    view = data.renders[2, 1].astype(np.float32) / 255
    crop = torch.as_tensor(prepare_array(np.concatenate([view, np.ones((64, 64, 1), np.float32)], -1), 128))
    model, _ = load_checkpoint(pee.SINGLE_VIEW_DIR, "cpu")
    with torch.no_grad():
        hand = model.encoder.feature_map(normalize(crop.permute(2, 0, 1)[None].float())).flatten(2)[0]
    assert torch.allclose(grid[2, 1], hand, atol=1e-4)
    enc = pee.ScorerGridEncoder(None, "sv", 64, tower)
    assert torch.allclose(enc.grid([rgba[2, 1]])[0], grid[2, 1], atol=1e-4)
    assert float((grid[0, 0] - grid[1, 0]).abs().mean()) > 1e-3  # different views, different tokens
    # the app's image path (pointe.py: an upload cropped to a 256 px view with the embedded margin, then a PIL image
    # resized to 64 px) gives tokens nearest the pack's grid of the same render, up to resampling: the six example
    # objects at the pack's 64 px (the discs above differ only in colour, which the encoder is trained to discount)
    from PIL import Image

    from pipelines.core.images import to_uint8
    from pipelines.core.single_view_net import prepare_image
    from pipelines.pointe import EMBEDDED_VIEW_MARGIN
    from pipelines.single_view import ASSETS

    renders = [np.asarray(Image.open(p).convert("RGBA").resize((64, 64), Image.BILINEAR))
               for p in sorted((ASSETS / "examples").glob("*.png"))]
    packed = torch.stack([enc.grid([r])[0].flatten() for r in renders])
    for i, r in enumerate(renders):
        Image.fromarray(r).save(tmp_path / "upload.png")
        view = to_uint8(prepare_image(tmp_path / "upload.png", 256, EMBEDDED_VIEW_MARGIN))
        cos = torch.nn.functional.cosine_similarity(enc.grid([Image.fromarray(view)])[0].flatten()[None], packed)
        assert float(cos[i]) > 0.9 and int(cos.argmax()) == i, (i, cos)  # thin parts resample least alike: 0.95

    opts = pointe_model.TrainOptions(model="base", data=str(pack), out=str(tmp_path / "runs" / "base"), steps=2,
                                     tiny=True, device="cpu", warmup=1, log_every=1, batch=4, cond="grid",
                                     grid="sv", export=str(tmp_path / "pointe" / "base"))
    pointe_train.train(opts, log=lambda *_: None)
    config_path = tmp_path / "pointe" / "base" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["grid"] == {"features": "sv", "image_size": 64, "single_view": tower.sha256}
    assert (config["model"]["grid_dim"], config["model"]["grid_tokens"]) == (512, 16)
    monkeypatch.setattr(embedded, "load_embedded_scorer", lambda device, dtype="auto": StandInScorer(256))
    clear_cache()
    models = load_models(str(tmp_path / "pointe"), "base40M", "cpu", upsample=False, sdf=False)
    assert models.encoder.grid([rgba[0, 0]]).shape == (1, 512, 16)
    assert "single-view model's encoder" in models.describe()
    with pytest.raises(UserInputError, match="retrain the base"):
        pee.load_grid_tower({**config["grid"], "single_view": "0" * 64}, "cpu")
    with pytest.raises(UserInputError, match="does not record which single-view model"):
        pee.load_grid_tower({"features": "sv", "image_size": 64}, "cpu")
    clear_cache()
    # resuming or exporting the run against grids of another single-view model is refused, not laundered
    state = torch.load(tmp_path / "runs" / "base" / "checkpoint.pt", weights_only=False)
    assert state["grid_info"] == config["grid"]
    state["grid_info"] = {**state["grid_info"], "single_view": "0" * 64}
    torch.save(state, tmp_path / "runs" / "base" / "checkpoint.pt")
    with pytest.raises(ValueError, match="another single-view model"):
        pointe_train.train(opts, log=lambda *_: None)
    with pytest.raises(ValueError, match="another single-view model"):
        pointe_train.export_runs(tmp_path / "runs", tmp_path / "again", device="cpu")


def test_bench_scores_the_single_view_point_head_as_the_tab_predicts(tmp_path):
    """``bench/pointe_quality.single_view_rows``: the point head's cloud of a render is the single-view tab's
    prediction for that image (so scored against that prediction it is perfect), and retrieval by the encoder finds
    a training render's own shape when that render is the query."""
    import sys

    from PIL import Image

    from pipelines.core.single_view_net import load_checkpoint, prepare_image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import pointe_quality

    pack = grid_pack(tmp_path / "p.npz")
    rgba = np.load(pack.with_suffix(".rgba.npy"))
    data = pointe_data.load_pack(pack)
    model, _ = load_checkpoint(pee.SINGLE_VIEW_DIR, "cpu")
    Image.fromarray(pee.on_white(rgba[1, 0])).save(tmp_path / "view.png")
    with torch.no_grad():
        tab = model(prepare_image(tmp_path / "view.png", 128).permute(2, 0, 1)[None].float(), ("points",))["points"]
    train = torch.as_tensor(data.train)
    grey = torch.full_like(tab, 0.5)
    rows = pointe_quality.single_view_rows(str(pee.SINGLE_VIEW_DIR), data, train, rgba[1, :1], tab, grey,
                                           torch.device("cpu"), lambda x: {})
    assert rows[0]["method"].startswith("single-view point head") and rows[1]["method"].startswith("retrieval")
    assert rows[0]["f1@1%"] > 0.99 and rows[0]["cd"] < 1e-8  # the tab's own cloud
    k = int(train[0])  # a training render as the query: retrieval returns its own shape
    rows = pointe_quality.single_view_rows(str(pee.SINGLE_VIEW_DIR), data, train, rgba[k, :1], data.xyz[[k]],
                                           data.rgb[[k]].float() / 255, torch.device("cpu"), lambda x: {})
    assert rows[1]["cd"] == 0.0 and rows[0]["cd"] > 0


def test_a_synthetic_view_with_no_object_is_said_in_the_log(tmp_path, monkeypatch):
    """The shipped sv grid base reads a view through the single-view tab's object crop; a synthetic view in which
    that crop finds no object is conditioned on whole, and the run's log says so as a warning."""
    from pipelines import run_to_completion
    from pipelines.core.priors import text_to_image
    from pipelines.events import Log
    from pipelines.pointe import PointEConfig, run

    config = json.loads((Path(__file__).resolve().parents[1] / "assets" / "pointe" / "base" / "config.json").read_text())
    if config.get("grid", {}).get("features") != "sv":
        pytest.skip("the shipped base does not read the single-view encoder")
    blank = lambda *a, **k: torch.ones(64, 64, 3)  # noqa: E731 - a view of nothing: plain white
    monkeypatch.setattr(text_to_image, "text_to_image", blank)
    logs = []
    cfg = PointEConfig(prompt="a chair", text_to_image="embedded", steps=2, mesh=False, upsample=False,
                       device="cpu", preview_every=10 ** 9, out_dir=str(tmp_path / "run"))
    done = run_to_completion(run(cfg), on_event=lambda e: logs.append(e) if isinstance(e, Log) else None)
    assert done.metrics["points"] == 1024
    warned = [e.message for e in logs if e.level == "warning" and "not cropped" in e.message]
    assert len(warned) == 1, [e.message for e in logs]
