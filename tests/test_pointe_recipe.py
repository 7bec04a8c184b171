"""Issue 17, the embedded Point-E tier's low held-out F1: the conditioning layout the training now uses (the vector
added to every point, as the official code does when it is not a token), the small pack that travels to a GPU
machine, and the trainer's refusals. Synthetic packs only (no meshes, no scorer): a few seconds."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.core.point_diffusion import CLIPImagePointDiffusionTransformer, build_model, timestep_embedding
from pipelines.train import pointe_data, pointe_model, pointe_train


def fake_pack(path: Path, shapes: int = 4, points: int = 512, emb: int = 256, views: int = 2) -> Path:
    """A pack as ``pointe_data.pack`` writes it, of random shapes (the last one held out)."""
    rng = np.random.default_rng(0)
    planes, rgb = [], []
    for _ in range(shapes):
        pl, order = pointe_data.encode_points(rng.random((points, 3)).astype(np.float32) - 0.5)
        planes.append(pl)
        rgb.append(rng.integers(0, 256, (points, 3), dtype=np.uint8)[order])
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    ids = [f"shape-{i}" for i in range(shapes)]
    splits = ["train"] * (shapes - 1) + ["test"]
    meta = {i: dict(name=i, source="test", license="CC0", creator="gen3d", category="box", split=s, colour="red",
                    captions=[f"a {i}"]) for i, s in zip(ids, splits)}
    np.savez_compressed(
        path, xyz_planes=np.stack(planes), rgb=np.stack(rgb),
        occupancy=np.packbits(np.zeros((shapes, 8 ** 3), bool), axis=-1), resolution=np.int32(8),
        image_emb=pointe_data.quantize_unit(unit(rng.normal(size=(shapes, views, emb)))),
        text_emb=pointe_data.quantize_unit(unit(rng.normal(size=(shapes, emb)))),
        shape_caps=np.arange(shapes, dtype=np.int32)[:, None], captions=np.array([f"a {i}" for i in ids]),
        ids=np.array(ids), splits=np.array(splits), categories=np.array(["box"] * shapes),
        test_rgba=np.zeros((1, 1, 8, 8, 4), np.uint8), scorer=np.array(json.dumps({"name": "test"})),
        meta=np.array(json.dumps(meta)))
    return path


def test_vec_condition_not_a_token_is_added_to_every_point():
    """token_cond=False: the official layout (h = input_proj(x) + clip_embed(sqrt(D) e), the time token in front),
    not the condition added to the time token."""
    torch.manual_seed(0)
    m = CLIPImagePointDiffusionTransformer(token_cond=False, clip_dim=16, width=32, layers=1, heads=2, n_ctx=8).eval()
    torch.nn.init.normal_(m.output_proj.weight)  # (zero-initialised: every output would be 0)
    x, t = torch.randn(2, 6, 8), torch.tensor([3, 700])
    e = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    with torch.no_grad():
        h = m.input_proj(x.transpose(1, 2)) + m.clip_embed(math.sqrt(16) * e)[:, None]
        t_tok = m.time_embed(timestep_embedding(t, 32))[:, None]
        want = m.output_proj(m.ln_post(m.backbone(m.ln_pre(torch.cat([t_tok, h], 1))))[:, 1:]).transpose(1, 2)
        got = m(x, t, embeddings=e)
        other = m(x, t, embeddings=e.flip(0))
    assert torch.allclose(got, want, atol=1e-5)
    assert float((got - other).abs().amax()) > 1e-3  # the condition reaches the output


def test_shrink_keeps_a_subset_of_each_shapes_points_with_their_colours(tmp_path):
    src = fake_pack(tmp_path / "full.npz", shapes=3, points=400)
    out = pointe_data.shrink(src, tmp_path / "small.npz", points=100)
    full, small = pointe_data.load_pack(src), pointe_data.load_pack(out)
    assert small.xyz.shape == (3, 100, 3) and small.rgb.shape == (3, 100, 3)
    for s in range(3):
        d = torch.cdist(small.xyz[s], full.xyz[s], compute_mode="donot_use_mm_for_euclid_dist")
        assert float(d.amin(1).max()) < 1e-6  # every kept point is one of the shape's points
        j = d.argmin(1)
        assert torch.equal(small.rgb[s], full.rgb[s][j])  # with its own colour
        assert len(torch.unique(j)) == 100
    assert small.ids == full.ids and torch.equal(small.image_emb, full.image_emb)
    assert out.stat().st_size < src.stat().st_size
    assert pointe_data.main(["shrink", "--data", str(src), "--out", str(tmp_path / "x.npz"), "--points", "999"]) == 2


def test_tiny_training_exports_the_added_condition_and_refuses_a_pack_too_small(tmp_path, capsys):
    pack = fake_pack(tmp_path / "p.npz", points=512)
    opts = pointe_model.TrainOptions(model="base", data=str(pack), out=str(tmp_path / "runs" / "base"), steps=3,
                                     tiny=True, device="cpu", warmup=1, log_every=1, batch=2, loss_weight="v",
                                     export=str(tmp_path / "pointe" / "base"))
    result = pointe_train.train(opts, log=lambda *_: None)
    assert result["step"] == 3
    use = [v for k, v in result["metrics"].items() if k.startswith("x0_mse_t700_")]
    assert len(use) == 3 and all(math.isfinite(v) and v > 0 for v in use)
    config = json.loads((tmp_path / "pointe" / "base" / "config.json").read_text())
    assert config["model"]["token_cond"] is False
    from pipelines.core.priors.point_e_embedded import load_model_folder

    model, _ = load_model_folder(tmp_path / "pointe" / "base", "cpu")
    assert model.token_cond is False
    # resuming with the other layout is refused, not silently mixed
    again = pointe_model.TrainOptions(**{**opts.__dict__, "cond_token": True, "steps": 4, "export": ""})
    try:
        pointe_train.train(again, log=lambda *_: None)
        raise AssertionError("resumed a checkpoint of another config")
    except ValueError as e:
        assert "another model config" in str(e)
    # the upsampler needs 1024 + 3072 points a shape (tiny: 256 + 768); this pack has 512
    code = pointe_train.main(["upsample", "--data", str(pack), "--tiny", "--steps", "1", "--device", "cpu",
                              "--out", str(tmp_path / "runs" / "up")])
    assert code == 2 and "needs 1024" in capsys.readouterr().err


def test_released_vec_configs_keep_the_token():
    for name in ("base40M-imagevec", "base40M-textvec"):
        assert build_model(name, device="meta").token_cond is True


@torch.no_grad()
def test_v_weighting_counts_high_noise_more_and_bad_names_are_refused():
    cfg = pointe_model.model_config("base", tiny=True)
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.nn.init.normal_(model.output_proj.weight, std=0.1)
    x0 = torch.rand(2, 6, cfg["n_ctx"]) * 2 - 1
    batch = dict(x0=x0, cond=dict(embeddings=torch.zeros(2, 256)))
    ab = torch.tensor(pointe_train.alphas_cumprod("cosine"), dtype=torch.float32)
    losses = {}
    for w in ("eps", "v"):
        opts = pointe_model.TrainOptions(loss_weight=w)
        losses[w] = float(pointe_train.loss_of(model, batch, opts, ab, torch.Generator().manual_seed(3)))
    plain = float(pointe_train.loss_of(model, batch, pointe_model.TrainOptions(loss_weight="v"), ab,
                                       torch.Generator().manual_seed(3), weighted=False))
    assert abs(plain - losses["eps"]) < 1e-6 and abs(losses["v"] - losses["eps"]) > 1e-4
    try:
        pointe_train.loss_of(model, batch, pointe_model.TrainOptions(loss_weight="x"), ab, torch.Generator())
        raise AssertionError("accepted loss_weight 'x'")
    except ValueError as e:
        assert "v20" in str(e)


@torch.no_grad()
def test_v_prediction_returns_eps_from_the_same_weights_and_state_dict():
    """prediction='v': the network's first C outputs are v, returned as eps = sqrt(ab) v + sqrt(1 - ab) x_t; no
    parameter or persistent buffer is added (the int8 folders and strict loading are unchanged)."""
    torch.manual_seed(0)
    kw = dict(token_cond=False, clip_dim=16, width=32, layers=1, heads=2, n_ctx=8)
    v_model = CLIPImagePointDiffusionTransformer(prediction="v", **kw).eval()
    torch.nn.init.normal_(v_model.output_proj.weight)
    eps_model = CLIPImagePointDiffusionTransformer(**kw).eval()
    eps_model.load_state_dict(v_model.state_dict(), strict=True)
    assert set(v_model.state_dict()) == set(eps_model.state_dict())
    x, t = torch.randn(2, 6, 8), torch.tensor([10, 1000])
    e = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    raw, got = eps_model(x, t, embeddings=e), v_model(x, t, embeddings=e)
    ab = torch.tensor(pointe_train.alphas_cumprod("cosine"), dtype=torch.float32)[t][:, None, None]
    assert torch.allclose(got[:, :6], ab.sqrt() * raw[:, :6] + (1 - ab).sqrt() * x, atol=1e-5)
    assert torch.equal(got[:, 6:], raw[:, 6:])
    # a zero v means x0 = sqrt(ab) x_t: at t = 1000 nearly 0 (the mean), whatever the noisy input
    zero = CLIPImagePointDiffusionTransformer(prediction="v", **kw).eval()  # zero-initialised output
    eps = zero(x, t, embeddings=e)[:, :6]
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    assert torch.allclose(x0, ab.sqrt() * x, atol=1e-4) and float(x0[1].abs().max()) < 0.1
    half = CLIPImagePointDiffusionTransformer(prediction="v", **kw).to(torch.bfloat16)
    assert half.ab.dtype == torch.float32 and float(1 - half.ab[1]) > 0  # not rounded to 1 in bfloat16
    try:
        CLIPImagePointDiffusionTransformer(prediction="x0", **kw)
        raise AssertionError("accepted prediction 'x0'")
    except ValueError as err:
        assert "'eps' or 'v'" in str(err)


def test_tiny_v_training_exports_a_v_model_that_samples(tmp_path):
    from pipelines.core.point_sampler import BASE_STAGE, sample
    from pipelines.core.priors.point_e_embedded import load_model_folder

    pack = fake_pack(tmp_path / "p.npz", points=512)
    opts = pointe_model.TrainOptions(model="base", data=str(pack), out=str(tmp_path / "runs" / "base"), steps=2,
                                     tiny=True, device="cpu", warmup=1, log_every=1, batch=2,
                                     export=str(tmp_path / "pointe" / "base"))
    assert opts.prediction == "v"  # the default now
    result = pointe_train.train(opts, log=lambda *_: None)
    assert {f"x0_mse_t{t}_{c}" for t in (400, 700) for c in ("true", "shuffled", "null")} <= set(result["metrics"])
    config = json.loads((tmp_path / "pointe" / "base" / "config.json").read_text())
    assert config["model"]["prediction"] == "v"
    model, _ = load_model_folder(tmp_path / "pointe" / "base", "cpu")
    assert model.prediction == "v"
    stage = BASE_STAGE.__class__(**{**BASE_STAGE.__dict__, "steps": 2})
    x = sample(model, {"embeddings": torch.nn.functional.normalize(torch.randn(1, 256), dim=-1)}, 1, None, None,
               stage, seed=0)
    assert x.shape == (1, 6, model.n_ctx) and bool(torch.isfinite(x).all()) and float(x.abs().max()) <= 1
    # the eps recipe still writes the config the bases shipped before have (no 'prediction' key)
    assert "prediction" not in pointe_model.model_config("base", tiny=True, prediction="eps")
    assert pointe_train.main(["base", "--data", str(pack), "--tiny", "--prediction", "x", "--device", "cpu",
                              "--out", str(tmp_path / "runs" / "x")]) == 2


def test_bayes_yardstick_recovers_points_at_low_noise_and_the_mean_at_high(monkeypatch):
    """bench/pointe_condition.py's posterior mean, the best x0 any model could predict given the shape."""
    import importlib.util

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(repo / "bench"))
    spec = importlib.util.spec_from_file_location("bench_pointe_condition", repo / "bench" / "pointe_condition.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    support = torch.tensor([[-0.8, 0.0, 0.0], [0.8, 0.0, 0.0], [0.0, 0.6, 0.2]])
    x0 = support[[0, 2, 1]]
    a = torch.tensor(0.999)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * 0.5 * torch.ones(3, 3)
    assert torch.allclose(bench.posterior_mean(xt, support, a), x0, atol=1e-3)
    a = torch.tensor(1e-6)
    assert torch.allclose(bench.posterior_mean(torch.randn(3, 3), support, a), support.mean(0).expand(3, 3),
                          atol=1e-2)


@torch.no_grad()
def test_v_loss_of_a_v_model_is_its_plain_v_mse():
    cfg = dict(pointe_model.model_config("base", tiny=True, prediction="v"), n_ctx=16)
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.nn.init.normal_(model.output_proj.weight, std=0.1)
    x0 = torch.rand(3, 6, 16) * 2 - 1
    batch = dict(x0=x0, cond=dict(embeddings=torch.zeros(3, 256)))
    ab = torch.tensor(pointe_train.alphas_cumprod("cosine"), dtype=torch.float32)
    got = float(pointe_train.loss_of(model, batch, pointe_model.TrainOptions(loss_weight="v"), ab,
                                     torch.Generator().manual_seed(5)))
    gen = torch.Generator().manual_seed(5)  # the same draws as loss_of: t, then the noise
    t = torch.randint(0, pointe_train.TIMESTEPS, (3,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    a = ab[t][:, None, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    eps_hat = model(xt, t, embeddings=batch["cond"]["embeddings"])[:, :6]
    want = float(((eps_hat - eps) ** 2 / a).mean())  # v error = eps error / sqrt(alpha_bar)
    assert abs(got - want) < 1e-3 * want
    capped = float(pointe_train.loss_of(model, batch, pointe_model.TrainOptions(loss_weight="v20"), ab,
                                        torch.Generator().manual_seed(5)))
    assert abs(capped - got) > 1e-4


def test_prompt_bench_renders_a_saved_cloud_from_every_azimuth(tmp_path, monkeypatch):
    """bench/pointe_prompts.py judges the tab's saved .ply: its colours come back, on white, 8 views of 64 px."""
    import importlib.util

    from pipelines.core.export import save_point_cloud
    from pipelines.core.geometry import PointCloud

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(repo / "bench"))
    spec = importlib.util.spec_from_file_location("bench_pointe_prompts", repo / "bench" / "pointe_prompts.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    xyz = torch.nn.functional.normalize(torch.randn(4096, 3, generator=torch.Generator().manual_seed(0)), dim=1) * 0.3
    xyz[:, 0] *= 0.3  # a flat disc across y-z: wide from x, thin from y
    ply = save_point_cloud(PointCloud(xyz, torch.tensor([0.8, 0.1, 0.1]).expand(4096, 3)), tmp_path / "c.ply")
    views = bench.cloud_renders(ply)
    assert views.shape == (8, 64, 64, 3) and views.dtype == torch.uint8
    red = (views[..., 0] > 150) & (views[..., 1] < 80)
    white = (views > 250).all(-1)
    assert (red | white).all() and (white[:, 0, 0]).all()  # only the cloud's colour on a white ground
    covered = red.flatten(1).float().mean(1)
    assert covered[0] > 2 * covered[2]  # azimuth 0 looks along x at the disc's face; 90 degrees sees its edge


def test_reference_bench_puts_the_official_cloud_beside_ours(tmp_path, monkeypatch):
    """bench/pointe_reference.py: a reference folder in the official examples' format (coords and R, G, B) gives a
    picture of image | 4 views of the official cloud | 4 of ours, and JSON rows for both; a folder missing a
    file is refused by name."""
    import importlib.util

    from PIL import Image

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(repo / "bench"))
    spec = importlib.util.spec_from_file_location("bench_pointe_reference", repo / "bench" / "pointe_reference.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ref = tmp_path / "ref"
    ref.mkdir()
    with pytest.raises(SystemExit, match="pc_corgi.npz"):
        bench.main(["--tiny", "--reference", str(ref), "--out", str(tmp_path / "r.json")])
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-0.5, 0.5, (4096, 3)).astype(np.float32)
    np.savez(ref / "pc_corgi.npz", coords=xyz, R=np.full(4096, 0.9, np.float32), G=np.full(4096, 0.1, np.float32),
             B=np.full(4096, 0.1, np.float32))
    picture = np.full((64, 64, 3), 255, np.uint8)
    picture[16:48, 16:48] = (200, 120, 40)
    Image.fromarray(picture).save(ref / "corgi.jpg")
    bench.main(["--tiny", "--reference", str(ref), "--device", "cpu", "--out", str(tmp_path / "r.json")])
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["source"].split()[0] for r in rows] == ["official", "gen3d"] and all(r["points"] == 4096 for r in rows)
    out = np.asarray(Image.open(tmp_path / "r.jpg"))
    size = bench.SIZE
    assert out.shape == (size, size * (1 + 2 * bench.VIEWS), 3)
    official = out[:, size:size * (1 + bench.VIEWS)].astype(int)
    red = (official[..., 0] > 150) & (official[..., 1] < 90)
    assert red.mean() > 0.1  # the official cloud's own colours, splatted
