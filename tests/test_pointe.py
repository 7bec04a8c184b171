"""Point-E: the networks against the official state-dict table, the sampler, CLIP grid features, loading,
the SDF mesh, the pipeline, the CLI."""
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
