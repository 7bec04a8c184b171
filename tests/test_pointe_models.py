"""Point-E's networks and their building blocks: the networks against the official state-dict table and the
released forward, the sampler, CLIP grid features, the SDF mesh and point pictures (the method, loading and the
UI: test_pointe_pipeline.py)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pipelines.core import point_diffusion as pd

FIXTURE = Path(__file__).parent / "fixtures" / "point_e_state_dicts.json"


@pytest.mark.parametrize("name", sorted(pd.MODEL_CONFIGS))
def test_configs_match_official_state_dicts(name):
    expected = json.loads(FIXTURE.read_text())[name]
    model = pd.build_model(name, device="meta")
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == expected


def test_output_zero_init_and_shapes():
    cfg = dict(pd.MODEL_CONFIGS["base40M"], width=32, layers=2, heads=4, grid_dim=16, grid_tokens=4)
    model = pd.build_model(cfg)
    x, t, grid = torch.randn(2, 6, 10), torch.tensor([0, 1023]), torch.randn(2, 16, 4)
    out = model(x, t, embeddings=grid)
    assert out.shape == (2, 12, 10) and torch.count_nonzero(out) == 0  # zero-initialised output layer
    torch.nn.init.normal_(model.output_proj.weight)
    perm = torch.randperm(10)
    out, out_perm = model(x, t, embeddings=grid), model(x[..., perm], t, embeddings=grid)
    assert torch.allclose(out[..., perm], out_perm, atol=1e-5)  # points are a set: permutation equivariant


def test_per_head_qkv_layout_matches_reference():
    """The fused projection is [q | k | v] per head; checked against a plain einsum attention."""
    attn = pd.MultiheadAttention(width=12, heads=3, init_scale=0.5)
    x = torch.randn(2, 5, 12)
    qkv = attn.c_qkv(x).view(2, 5, 3, 12)  # (B, N, heads, 3 * c) with c = 4
    q, k, v = qkv.split(4, dim=-1)
    w = torch.softmax(torch.einsum("bthc,bshc->bhts", q, k) / 2.0, dim=-1)
    ref = attn.c_proj(torch.einsum("bhts,bshc->bthc", w, v).reshape(2, 5, 12))
    assert torch.allclose(attn(x), ref, atol=1e-5)


def test_cross_attention_kv_layout_matches_reference():
    """The SDF decoder's key/value projection is [k | v] per head."""
    attn = pd.MultiheadCrossAttention(width=12, heads=3, init_scale=0.5)
    x, data = torch.randn(2, 5, 12), torch.randn(2, 7, 12)
    q = attn.c_q(x).view(2, 5, 3, 4)
    k, v = attn.c_kv(data).view(2, 7, 3, 8).split(4, dim=-1)
    w = torch.softmax(torch.einsum("bthc,bshc->bhts", q, k) / 2.0, dim=-1)
    ref = attn.c_proj(torch.einsum("bhts,bshc->bthc", w, v).reshape(2, 5, 12))
    assert torch.allclose(attn(x, data), ref, atol=1e-5)


def _official_forward(sd, heads, x, t, cond_tokens):
    """The released transformer's forward written from its source with plain ops on a state dict: per-head
    [q|k|v] split, q and k each scaled by c^-1/4, float32 softmax; condition tokens in front, dropped after."""
    import torch.nn.functional as F

    lin = lambda h, name: F.linear(h, sd[name + ".weight"], sd[name + ".bias"])  # noqa: E731
    ln = lambda h, name: F.layer_norm(h, h.shape[-1:], sd[name + ".weight"], sd[name + ".bias"])  # noqa: E731
    width = sd["ln_pre.weight"].shape[0]
    half = width // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    t_embed = lin(F.gelu(lin(emb, "time_embed.c_fc")), "time_embed.c_proj")
    tokens = [tok(t_embed) for tok in cond_tokens]
    h = torch.cat(tokens + [lin(x.permute(0, 2, 1), "input_proj")], 1)
    h = ln(h, "ln_pre")
    n_blocks = len({k.split(".")[2] for k in sd if k.startswith("backbone.resblocks.")})
    for i in range(n_blocks):
        p = f"backbone.resblocks.{i}."
        qkv = lin(ln(h, p + "ln_1"), p + "attn.c_qkv")
        bs, n, w3 = qkv.shape
        c = w3 // heads // 3
        q, k, v = qkv.view(bs, n, heads, -1).split(c, dim=-1)
        scale = 1 / math.sqrt(math.sqrt(c))
        wgt = torch.softmax(torch.einsum("bthc,bshc->bhts", q * scale, k * scale).float(), -1)
        h = h + lin(torch.einsum("bhts,bshc->bthc", wgt, v).reshape(bs, n, -1), p + "attn.c_proj")
        h = h + lin(F.gelu(lin(ln(h, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    h = ln(h, "ln_post")[:, sum(tok.shape[1] for tok in tokens):]
    return lin(h, "output_proj").permute(0, 2, 1)


def test_models_match_the_released_forward():
    """Grid, vec and upsampler models against the released formulation: conditioning tokens, their scalings and
    norms, the attention layout (token order cannot matter: there are no positions)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    small = dict(width=32, layers=2, heads=4)
    x, t = torch.randn(2, 6, 10), torch.tensor([3, 900])
    grid_cfg = dict(pd.MODEL_CONFIGS["base40M"], **small, grid_dim=8, grid_tokens=5)
    up_cfg = dict(pd.MODEL_CONFIGS["upsample"], **small, grid_dim=8, grid_tokens=5, n_ctx=10, cond_ctx=7)
    vec_cfg = dict(pd.MODEL_CONFIGS["base40M-textvec"], **small, clip_dim=6)
    grid, vec, low = torch.randn(2, 8, 5), F.normalize(torch.randn(2, 6), dim=-1), torch.rand(2, 6, 7)
    for cfg, kwargs, tokens in [
        (grid_cfg, dict(embeddings=grid), lambda sd: [lambda te: te[:, None], lambda te: F.linear(F.layer_norm(
            grid.permute(0, 2, 1), (8,), sd["clip_embed.0.weight"], sd["clip_embed.0.bias"]),
            sd["clip_embed.1.weight"], sd["clip_embed.1.bias"])]),
        (vec_cfg, dict(embeddings=vec), lambda sd: [lambda te: F.linear(math.sqrt(6) * vec, sd["clip_embed.weight"],
                                                                        sd["clip_embed.bias"])[:, None],
                                                    lambda te: te[:, None]]),
        (up_cfg, dict(embeddings=grid, low_res=low), lambda sd: [
            lambda te: te[:, None],
            lambda te: F.linear(F.layer_norm(grid.permute(0, 2, 1), (8,), sd["clip_embed.0.weight"],
                                             sd["clip_embed.0.bias"]),
                                sd["clip_embed.1.weight"], sd["clip_embed.1.bias"]),
            lambda te: F.linear((low * sd["channel_scales"][None, :, None] + sd["channel_biases"][None, :, None])
                                .permute(0, 2, 1), sd["cond_point_proj.weight"], sd["cond_point_proj.bias"])]),
    ]:
        model = pd.build_model(cfg)
        torch.nn.init.normal_(model.output_proj.weight)
        sd = model.state_dict()
        with torch.no_grad():
            ref = _official_forward(sd, 4, x, t, tokens(sd))
            assert torch.allclose(model(x, t, **kwargs), ref, atol=1e-4), cfg["name"]


def test_timestep_embedding_cos_then_sin():
    emb = pd.timestep_embedding(torch.tensor([3.0]), 8)
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    assert torch.allclose(emb[0], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]), atol=1e-6)


def test_upsampler_scales_low_res_and_sdf_shapes():
    cfg = dict(pd.MODEL_CONFIGS["upsample"], width=32, layers=1, heads=4, grid_dim=16, grid_tokens=4, n_ctx=12,
               cond_ctx=8)
    model = pd.build_model(cfg)
    low = torch.tensor([0.5, -0.5, 0.25, 255.0, 0.0, 127.5]).view(1, 6, 1).expand(1, 6, 8)
    lin = model.cond_point_proj
    expected = lin(torch.tensor([1.0, -1.0, 0.5, 1.0, -1.0, 0.0]))  # official units -> [-1, 1]
    assert torch.allclose(model.embed_low_res(low)[0, 0], expected, atol=1e-5)
    assert model(torch.randn(1, 6, 12), torch.tensor([5]), low_res=low).shape == (1, 12, 12)
    sdf = pd.build_model(dict(pd.MODEL_CONFIGS["sdf"], width=16, encoder_layers=1, decoder_layers=1))
    assert sdf(torch.randn(2, 3, 7), torch.randn(2, 3, 20)).shape == (2, 7)


# ----------------------------------------------------------------------------------------------- sampler
from pipelines.core import point_sampler as ps  # noqa: E402

TINY_BASE = dict(pd.MODEL_CONFIGS["base40M"], width=32, layers=1, heads=2, grid_dim=8, grid_tokens=4, n_ctx=16)
TINY_UP = dict(pd.MODEL_CONFIGS["upsample"], width=32, layers=1, heads=2, grid_dim=8, grid_tokens=4, n_ctx=32,
               cond_ctx=16)
FEW = ps.Stage(steps=6)


def _tiny(cfg, seed=0):
    torch.manual_seed(seed)
    model = pd.build_model(cfg)
    torch.nn.init.normal_(model.output_proj.weight, std=0.3)  # not the zero init: make the model say something
    return model


def test_sampler_yields_progressively_and_reproduces():
    base, up = _tiny(TINY_BASE), _tiny(TINY_UP, 1)
    grid = torch.randn(2, 8, 4)
    kw = dict(upsampler=up, upsampler_cond={"embeddings": grid}, base_stage=FEW,
              upsample_stage=ps.Stage(steps=4, sigma_max=160.0, s_churn=0.0, guidance_scale=0.0), every=2)
    steps = list(ps.sample_progressive(base, {"embeddings": grid}, 2, seed=3, **kw))
    assert [(s.stage, s.step) for s in steps] == [("base", 2), ("base", 4), ("base", 6), ("upsample", 2),
                                                  ("upsample", 4)]
    final = steps[-1].x0
    assert final.shape == (2, 6, 48) and final.abs().max() <= 1 and torch.isfinite(final).all()
    assert torch.equal(final[..., :16], steps[2].x0)  # the upsampler keeps the coarse points
    again = ps.sample(base, {"embeddings": grid}, 2, seed=3, **kw)
    other = ps.sample(base, {"embeddings": grid}, 2, seed=4, **kw)
    assert torch.equal(final, again) and not torch.allclose(final, other)
    pc = ps.to_point_cloud(final[0])
    assert pc.xyz.shape == (48, 3) and pc.xyz.abs().max() <= 0.5 and 0 <= pc.rgb.min() and pc.rgb.max() <= 1


def test_guidance_combines_x0_predictions():
    base = _tiny(TINY_BASE)
    grid = torch.randn(1, 8, 4)
    x, t, coef = torch.randn(1, 6, 16) * 5, torch.tensor(700), torch.tensor([700.0, 0.2, 3.0, 2.5])
    cond = ps.Denoiser(base, {"embeddings": grid}, 1.0, 6)(x, t, coef)
    uncond = ps.Denoiser(base, {"embeddings": torch.zeros_like(grid)}, 0.0, 6)(x, t, coef)
    guided = ps.Denoiser(base, {"embeddings": grid}, 3.0, 6)(x, t, coef)
    assert not torch.allclose(cond, uncond)
    assert torch.allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-5)


def test_schedules_and_sigma_to_t():
    cos, lin = ps.alphas_cumprod("cosine"), ps.alphas_cumprod("linear")
    assert len(cos) == 1024 and 0.99 < cos[0] < 1 and cos[-1] < 1e-4 and (abs(lin[0] - (1 - 1e-4 * 1000 / 1024)) < 1e-9)
    for t in (0, 10, 500, 1000):
        sigma = math.sqrt(1 / cos[t] - 1)
        assert abs(ps.sigma_to_t(sigma * 1.0001, cos) - t) <= 1
    assert ps.sigma_to_t(1e-6, cos) == 0 and ps.sigma_to_t(1e5, cos) == 1023 and ps.sigma_to_t(1e4, cos) == 1022
    sig = ps.karras_sigmas(64, 1e-3, 120)
    assert len(sig) == 65 and abs(sig[0] - 120) < 1e-9 and abs(sig[63] - 1e-3) < 1e-12 and sig[64] == 0


# ----------------------------------------------------------------------------------------------- CLIP features
def _hand_grid(vision, pixels):
    """The vision tower computed layer by layer from its weights: patches, class token, positions, pre-norm,
    pre-norm residual blocks (quick GELU); patch tokens of the last block, no final norm."""
    import torch.nn.functional as F

    emb = vision.embeddings
    x = F.conv2d(pixels, emb.patch_embedding.weight, stride=emb.patch_embedding.stride).flatten(2).transpose(1, 2)
    x = torch.cat([emb.class_embedding.expand(len(x), 1, -1), x], 1) + emb.position_embedding.weight[None]
    x = F.layer_norm(x, x.shape[-1:], vision.pre_layrnorm.weight, vision.pre_layrnorm.bias, vision.pre_layrnorm.eps)
    for layer in vision.encoder.layers:
        a = layer.self_attn
        h = F.layer_norm(x, x.shape[-1:], layer.layer_norm1.weight, layer.layer_norm1.bias, layer.layer_norm1.eps)
        split = lambda t: t.view(t.shape[0], t.shape[1], a.num_heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = (split(F.linear(h, p.weight, p.bias)) for p in (a.q_proj, a.k_proj, a.v_proj))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
        x = x + F.linear((w @ v).transpose(1, 2).flatten(2), a.out_proj.weight, a.out_proj.bias)
        h = F.layer_norm(x, x.shape[-1:], layer.layer_norm2.weight, layer.layer_norm2.bias, layer.layer_norm2.eps)
        h = F.linear(h, layer.mlp.fc1.weight, layer.mlp.fc1.bias)
        x = x + F.linear(h * torch.sigmoid(1.702 * h), layer.mlp.fc2.weight, layer.mlp.fc2.bias)
    return x[:, 1:].transpose(1, 2)


def test_clip_grid_equals_hand_computation(tmp_path):
    import numpy as np

    from pipelines.core.priors.clip import tiny_clip
    from pipelines.core.priors.point_e_clip import clip_preprocess, load_point_e_clip

    clip = load_point_e_clip(str(tiny_clip(tmp_path / "clip")), "cpu")
    assert clip.model.config.vision_config.hidden_act == "quick_gelu"
    images = [np.random.default_rng(i).integers(0, 256, (40, 56, 3), dtype=np.uint8) for i in range(2)]
    grid = clip.grid(images)
    assert grid.shape == (2, clip.grid_dim, clip.grid_tokens) == (2, 32, 16)
    with torch.no_grad():
        ref = _hand_grid(clip.model.vision_model, clip_preprocess(images, clip.image_size))
    assert torch.allclose(grid, ref, atol=1e-5)
    vec, txt = clip.image_vec(images), clip.text_vec(["a chair", "a red table"])
    assert vec.shape == txt.shape == (2, 16) and torch.allclose(vec.norm(dim=-1), torch.ones(2))


def test_clip_preprocess_resizes_shorter_side_and_centre_crops():
    import numpy as np
    from PIL import Image

    from pipelines.core.priors.clip import CLIP_MEAN, CLIP_STD
    from pipelines.core.priors.point_e_clip import clip_preprocess

    img = np.full((224, 448, 3), 128, np.uint8)
    img[:, :100] = (255, 0, 0)  # left of the centre crop: must not show
    x = clip_preprocess([img])
    assert x.shape == (1, 3, 224, 224)
    grey = (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(x[0, :, :, :].mean((1, 2)), grey, atol=1e-4)
    rgba = Image.new("RGBA", (300, 600), (0, 0, 0, 0))  # fully transparent: white
    white = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(clip_preprocess([rgba])[0].mean((1, 2)), white, atol=1e-4)


# ----------------------------------------------------------------------------------------------- mesh, pictures
class SphereSDF:
    """A stand-in SDF model of the same interface, from the cloud alone: its mean radius about its centroid.
    ``sign`` -1 makes the inside negative (the other convention: the mesh must come out the same)."""

    def __init__(self, sign: float = 1.0):
        self.sign = sign

    def encode_point_clouds(self, points):  # (1, 3, N)
        c = points.mean(-1, keepdim=True)
        return torch.cat([c, (points - c).norm(dim=1, keepdim=True).mean(-1, keepdim=True)], 1)  # (1, 4, 1)

    def predict_sdf(self, query, latents):  # (1, 3, Q) -> (1, Q)
        return self.sign * (latents[:, 3] - (query - latents[:, :3]).norm(dim=1))


def _sphere_cloud(n=2000, r=0.3):
    from pipelines.core.geometry import PointCloud

    g = torch.Generator().manual_seed(0)
    xyz = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * r
    return PointCloud(xyz, (xyz / r + 1) / 2)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_sdf_mesh_of_a_sphere_is_closed_and_sized(sign):
    from pipelines.core.point_clouds import cloud_mesh, signed_volume

    cloud = _sphere_cloud()
    mesh = cloud_mesh(SphereSDF(sign), cloud, resolution=40)
    faces = mesh.faces
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    counts = torch.unique(edges.sort(dim=1).values, dim=0, return_counts=True)[1]
    assert mesh.num_faces > 500 and bool((counts == 2).all())  # closed: every edge shared by two triangles
    extent = mesh.verts.amax(0) - mesh.verts.amin(0)
    assert torch.allclose(extent, torch.full((3,), 0.6), atol=0.03)
    assert abs(signed_volume(mesh) - 4 / 3 * math.pi * 0.3 ** 3) < 0.01  # outward-facing triangles
    # colours come from the nearest points: the top vertex is the colour of the top of the sphere
    top = mesh.verts[:, 2].argmax()
    assert mesh.vert_colors[top, 2] > 0.9


def test_single_sign_volume_still_meshes_and_points_render():
    from pipelines.core.point_clouds import mesh_from_sdf, render_points

    vol = torch.full((16, 16, 16), 2.0)
    vol[4:12, 4:12, 4:12] = 3.0  # positive everywhere: centred on its mean, the block is inside
    mesh = mesh_from_sdf(vol)
    assert mesh.num_faces > 0 and (mesh.verts.abs().max() < 0.4)
    img = render_points(_sphere_cloud(), size=64)
    assert img.shape == (64, 64, 3) and img.dtype.name == "uint8"
    assert (img[32, 32] < 250).any() and (img[0, 0] == 255).all()  # the sphere in the middle, white around it
