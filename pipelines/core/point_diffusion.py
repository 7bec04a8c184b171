"""Point-E's networks (Nichol et al. 2022), state-dict compatible with the released checkpoints.

Contract: ``build_model(name)`` builds a config of ``MODEL_CONFIGS`` (from ``point_configs``; the released ones:
base40M-imagevec, base40M-textvec, base40M-uncond, base40M, base300M, base1B, upsample, sdf); its parameter and
buffer names and shapes are those of the official ``.pt`` files, so ``load_state_dict(..., strict=True)`` takes
them.
The diffusion models map ``x`` (B, C, K) noisy points in the diffusion's [-1, 1] space and ``t`` (B,) integer
timesteps of the 1024-step schedule to (B, 2C, K): C channels of predicted noise, then C learned-range variance
values (which sampling ignores). Conditioning is passed explicitly: ``embeddings`` (B, D) for the vec models,
(B, D, L) CLIP grids for the grid models; ``low_res`` (B, 6, 1024) coarse points in the official output units
(xyz, RGB in 0..255) for the upsampler. The SDF model maps query points (B, 3, Q) and a cloud (B, 3, N) to (B, Q).
The CLIP tower is not part of these modules (the official checkpoints do not hold it either).
``cast_parameters(model, bfloat16)`` is the copy autocast runs use.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .point_configs import CHECKPOINT_FILES, MODEL_CONFIGS, model_kind  # noqa: F401 - re-exported here


TIMESTEPS = 1024
"""Diffusion steps of the released models' schedules."""


def alphas_cumprod(schedule: str, n: int = TIMESTEPS) -> np.ndarray:
    """alpha_bar_t (float64) of the 'cosine' (Nichol & Dhariwal; the base models) or 'linear' (Ho et al., scaled
    to n steps; the upsampler) schedule."""
    if schedule == "cosine":
        f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = np.array([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)])
    elif schedule == "linear":
        betas = np.linspace(1e-4 * 1000 / n, 0.02 * 1000 / n, n, dtype=np.float64)
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return np.cumprod(1.0 - betas)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) sinusoids: cosines then sines of t * max_period^(-i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _init(layer: nn.Linear, std: float) -> None:
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)


class MLP(nn.Module):
    def __init__(self, width: int, init_scale: float):
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        _init(self.c_fc, init_scale)
        _init(self.c_proj, init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads * c) -> (B, heads, N, c)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


class MultiheadAttention(nn.Module):
    """Self-attention whose fused projection is laid out per head: each head's [q | k | v] is contiguous
    (the released weights' layout, not torch's [all q | all k | all v])."""

    def __init__(self, width: int, heads: int, init_scale: float):
        super().__init__()
        self.heads = heads
        self.c_qkv, self.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        _init(self.c_qkv, init_scale)
        _init(self.c_proj, init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = _heads(self.c_qkv(x), self.heads).chunk(3, dim=-1)
        # softmax(q k^T / sqrt(c)): the original scales q and k by c^-1/4 each, the same product.
        return self.c_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, init_scale: float):
        super().__init__()
        self.attn, self.ln_1 = MultiheadAttention(width, heads, init_scale), nn.LayerNorm(width)
        self.mlp, self.ln_2 = MLP(width, init_scale), nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Pre-norm transformer; weights drawn with std init_scale / sqrt(width)."""

    def __init__(self, width: int, layers: int, heads: int, init_scale: float = 0.25):
        super().__init__()
        self.width = width
        std = init_scale / math.sqrt(width)
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, std) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class PointDiffusionTransformer(nn.Module):
    """Points as tokens (no positional encoding: permutation invariant), conditioning as extra tokens in front.

    Args:
        input_channels, output_channels: C and 2C (noise and learned-range variance) for xyz + RGB.
        n_ctx: points per cloud.
        time_token_cond: the timestep embedding is a token (True in every release) rather than added to each point.
    """

    def __init__(self, input_channels: int = 6, output_channels: int = 12, n_ctx: int = 1024, width: int = 512,
                 layers: int = 12, heads: int = 8, init_scale: float = 0.25, time_token_cond: bool = True,
                 cond_drop_prob: float = 0.0):
        super().__init__()
        self.input_channels, self.output_channels, self.n_ctx = input_channels, output_channels, n_ctx
        self.time_token_cond, self.cond_drop_prob = time_token_cond, cond_drop_prob
        self.time_embed = MLP(width, init_scale / math.sqrt(width))
        self.ln_pre = nn.LayerNorm(width)
        self.backbone = Transformer(width, layers, heads, init_scale)
        self.ln_post = nn.LayerNorm(width)
        self.input_proj = nn.Linear(input_channels, width)
        self.output_proj = nn.Linear(width, output_channels)
        nn.init.zeros_(self.output_proj.weight)  # a fresh model predicts zero noise
        nn.init.zeros_(self.output_proj.bias)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, width)."""
        return self.time_embed(timestep_embedding(t, self.backbone.width))

    def run(self, x: torch.Tensor, t_embed: torch.Tensor, after: list[torch.Tensor],
            before: tuple[torch.Tensor, ...] = (), add: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, K), the time embedding (B, W) and conditioning token groups (B, L_i, W) placed before and
        after the time token -> (B, C', K). ``add`` (B, W): a conditioning vector added to every point's
        features (the official ``_forward_with_cond`` for a condition that is not a token)."""
        h = self.input_proj(x.transpose(1, 2))
        if add is not None:
            h = h + add[:, None]
        if self.time_token_cond:
            tokens = [*before, t_embed[:, None], *after]
        else:
            h, tokens = h + t_embed[:, None], [*before, *after]
        n_cond = sum(tok.shape[1] for tok in tokens)
        h = self.ln_post(self.backbone(self.ln_pre(torch.cat(tokens + [h], dim=1) if tokens else h)))
        return self.output_proj(h[:, n_cond:]).transpose(1, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **_) -> torch.Tensor:
        return self.run(x, self.embed_time(t), [])


class VPrediction:
    """``prediction='v'`` (the embedded tier's bases; every release predicts 'eps'): the network's first C outputs are
    v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0 (Salimans & Ho) on the cosine schedule, converted here to the noise
    eps = sqrt(ab_t) v + sqrt(1 - ab_t) x_t, so callers (sampler, losses) still read eps. At high noise an eps
    network must reproduce its input to 1e-3 for a usable x0 (x0 error = eps error x sqrt(1 / ab_t - 1), 27x at
    t = 900); a v network predicts about -x0 there, where only the condition says what x0 is. No parameters are
    added (the schedule is a non-persistent buffer), so the state dict is the same as with 'eps'."""

    def _init_prediction(self, prediction: str) -> None:
        if prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', not {prediction!r}")
        self.prediction = prediction
        if prediction == "v":
            self.register_buffer("ab", self._schedule(None), persistent=False)  # None: build_model's device

    @staticmethod
    def _schedule(device) -> torch.Tensor:
        return torch.tensor(alphas_cumprod("cosine"), dtype=torch.float32, device=device)

    def _apply(self, fn, *args, **kw):
        """``.to(bfloat16)`` would round alpha_bar (1 - ab near t = 0 is lost); the schedule stays float32."""
        out = super()._apply(fn, *args, **kw)
        if getattr(self, "prediction", "eps") == "v" and self.ab.dtype != torch.float32:
            self.ab = self._schedule(self.ab.device)
        return out

    def _eps_out(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor, raw: bool) -> torch.Tensor:
        return out if raw or self.prediction == "eps" else v_to_eps(out, x, self.ab[t], self.input_channels)


class CLIPImagePointDiffusionTransformer(VPrediction, PointDiffusionTransformer):
    """Conditioned on one unit CLIP vector (B, clip_dim) per cloud, image or text (base40M-imagevec/-textvec),
    scaled by sqrt(clip_dim) to unit variance; a zero vector is the unconditional input. ``prediction``: see
    ``VPrediction`` ('eps' in every release, 'v' for the embedded tier's bases)."""

    def __init__(self, token_cond: bool = True, clip_dim: int = 768, prediction: str = "eps", **kw):
        super().__init__(**kw)
        self.token_cond = token_cond
        self.clip_embed = nn.Linear(clip_dim, self.backbone.width)
        self._init_prediction(prediction)

    def forward(self, x: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor | None = None, raw: bool = False,
                **_) -> torch.Tensor:
        """``raw``: the network's outputs as they are (v for a v model: what its training loss compares)."""
        e = self.clip_embed(math.sqrt(embeddings.shape[1]) * embeddings.float())
        if not self.token_cond:  # added to every point, as the official code (the released vec models use a token)
            out = self.run(x, self.embed_time(t), [], add=e)
        else:
            out = self.run(x, self.embed_time(t), [], before=(e[:, None],))  # this model's token precedes the time's
        return self._eps_out(out, x, t, raw)


def v_to_eps(out: torch.Tensor, x: torch.Tensor, ab: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, 2C, K) outputs whose first C channels are v, the inputs x_t (B, C, K) and alpha_bar_t (B,) -> the same
    outputs with eps = sqrt(ab) v + sqrt(1 - ab) x_t in the first C channels (float32; the rest as they are)."""
    a = ab.float()[:, None, None]
    eps = a.sqrt() * out[:, :channels].float() + (1 - a).sqrt() * x.float()
    return torch.cat([eps, out[:, channels:].float()], 1)


class CLIPImageGridPointDiffusionTransformer(PointDiffusionTransformer):
    """Conditioned on a CLIP ViT-L/14 grid (B, grid_dim, grid_tokens): the 256 patch features, layer-normed and
    projected, are tokens after the time token (base40M, base300M, base1B)."""

    def __init__(self, grid_dim: int = 1024, grid_tokens: int = 256, **kw):
        super().__init__(**kw)
        self.grid_tokens = grid_tokens
        self.clip_embed = nn.Sequential(nn.LayerNorm(grid_dim), nn.Linear(grid_dim, self.backbone.width))

    def forward(self, x: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor | None = None, **_) -> torch.Tensor:
        return self.run(x, self.embed_time(t), [self.clip_embed(embeddings.transpose(1, 2))])


class EmbeddedGridPointDiffusionTransformer(VPrediction, CLIPImageGridPointDiffusionTransformer):
    """The embedded tier's grid base: the released base40M layout (grid tokens, layer-normed and projected, after
    the time token) on the project's own image grid (``point_e_embedded.GRID_FEATURES``: the embedded scorer's
    feature map before pooling, or patches of the 64 px view), plus what this tier needs:

    * ``pos_embed``: a learned embedding per grid token (grid_tokens, width) added after the projection. CLIP's
      patch features carry their position (the ViT adds it); a CNN's feature map or raw patches do not, and the
      transformer has no positions of its own (points are a set);
    * ``vec_dim`` > 0: also a unit vector (B, vec_dim) of the scorer's joint space, added to every point's
      features as the vec base does (``vec``): the image embedding with the grid, the caption's without one, so
      one model serves image -> 3D and text -> 3D (the scorer has no text grid);
    * ``grid_add``: also the whole grid (layer-normed per token, flattened: grid_dim x grid_tokens values) projected
      to one vector added to every point, beside the tokens. Read through attention only, a tiny CPU base had not
      learned to use the grid tokens after 500 steps (the same x0 error with another shape's grid); a condition
      added to every point is read at once (as the vec base's; ``bench/pointe_condition.py tiny --cond fmap``);
    * ``prediction`` ('v' for the embedded bases; see ``VPrediction``).

    Missing conditions (``embeddings`` or ``vec`` None) are zeros, the unconditional input guidance pairs with."""

    def __init__(self, grid_dim: int = 256, grid_tokens: int = 16, pos_embed: bool = True, vec_dim: int = 0,
                 grid_add: bool = False, prediction: str = "eps", **kw):
        super().__init__(grid_dim=grid_dim, grid_tokens=grid_tokens, **kw)
        self.grid_dim, self.vec_dim = grid_dim, vec_dim
        w = self.backbone.width
        self.pos_embed = nn.Parameter(torch.randn(grid_tokens, w) * (0.25 / math.sqrt(w))) if pos_embed else None
        self.vec_embed = nn.Linear(vec_dim, w) if vec_dim else None
        self.grid_add = nn.Linear(grid_dim * grid_tokens, w) if grid_add else None
        self._init_prediction(prediction)

    def forward(self, x: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor | None = None,
                vec: torch.Tensor | None = None, raw: bool = False, **_) -> torch.Tensor:
        """x (B, C, K); ``embeddings`` (B, grid_dim, grid_tokens) image grid; ``vec`` (B, vec_dim) unit vector;
        ``raw``: the network's outputs as they are (v for a v model)."""
        b = x.shape[0]
        if embeddings is None:
            embeddings = x.new_zeros(b, self.grid_dim, self.grid_tokens)
        normed = self.clip_embed[0](embeddings.float().transpose(1, 2))  # (B, L, D), the tokens' layer norm
        grid = self.clip_embed[1](normed)
        if self.pos_embed is not None:
            grid = grid + self.pos_embed.to(grid.dtype)
        add = None
        if self.vec_embed is not None:
            v = x.new_zeros(b, self.vec_dim) if vec is None else vec.float()
            add = self.vec_embed(math.sqrt(self.vec_dim) * v)
        if self.grid_add is not None:
            g = self.grid_add(normed.flatten(1))
            add = g if add is None else add + g
        return self._eps_out(self.run(x, self.embed_time(t), [grid], add=add), x, t, raw)


class UpsamplePointDiffusionTransformer(PointDiffusionTransformer):
    """Adds ``n_ctx`` new points to a ``cond_ctx``-point cloud it sees as tokens (low_res (B, C, cond_ctx) in the
    official output units, mapped to [-1, 1] by the stored ``channel_scales`` and ``channel_biases``)."""

    def __init__(self, cond_ctx: int = 1024, n_ctx: int = 3072, channel_scales=None, channel_biases=None,
                 cond_input_channels: int | None = None, **kw):
        super().__init__(n_ctx=n_ctx, **kw)
        self.cond_ctx = cond_ctx
        self.cond_point_proj = nn.Linear(cond_input_channels or self.input_channels, self.backbone.width)
        for name, v in (("channel_scales", channel_scales), ("channel_biases", channel_biases)):
            self.register_buffer(name, None if v is None else torch.tensor(v, dtype=torch.float32))

    def embed_low_res(self, low_res: torch.Tensor) -> torch.Tensor:
        """(B, C, cond_ctx) -> (B, cond_ctx, W)."""
        if self.channel_scales is not None:
            low_res = low_res * self.channel_scales[None, :, None]
        if self.channel_biases is not None:
            low_res = low_res + self.channel_biases[None, :, None]
        return self.cond_point_proj(low_res.transpose(1, 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor, low_res: torch.Tensor | None = None, **_) -> torch.Tensor:
        return self.run(x, self.embed_time(t), [self.embed_low_res(low_res)])


class CLIPImageGridUpsamplePointDiffusionTransformer(UpsamplePointDiffusionTransformer):
    """The released upsampler: tokens are [time, CLIP grid (zeros when there is no image), coarse points]."""

    def __init__(self, grid_dim: int = 1024, grid_tokens: int = 256, **kw):
        super().__init__(**kw)
        self.grid_dim, self.grid_tokens = grid_dim, grid_tokens
        self.clip_embed = nn.Sequential(nn.LayerNorm(grid_dim), nn.Linear(grid_dim, self.backbone.width))

    def forward(self, x: torch.Tensor, t: torch.Tensor, low_res: torch.Tensor | None = None,
                embeddings: torch.Tensor | None = None, **_) -> torch.Tensor:
        if embeddings is None:
            embeddings = x.new_zeros(x.shape[0], self.grid_dim, self.grid_tokens)
        grid = self.clip_embed(embeddings.transpose(1, 2))
        return self.run(x, self.embed_time(t), [grid, self.embed_low_res(low_res)])


# ------------------------------------------------------------------------------------------------ SDF model
class MultiheadCrossAttention(nn.Module):
    """Queries attend to data; the key/value projection is laid out per head ([k | v] per head)."""

    def __init__(self, width: int, heads: int, init_scale: float, data_width: int | None = None):
        super().__init__()
        self.heads = heads
        self.c_q, self.c_kv = nn.Linear(width, width), nn.Linear(data_width or width, 2 * width)
        self.c_proj = nn.Linear(width, width)
        for layer in (self.c_q, self.c_kv, self.c_proj):
            _init(layer, init_scale)

    def forward(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        q = _heads(self.c_q(x), self.heads)
        k, v = _heads(self.c_kv(data), self.heads).chunk(2, dim=-1)
        return self.c_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class ResidualCrossAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, init_scale: float):
        super().__init__()
        self.ln_1, self.ln_2, self.ln_3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn, self.mlp = MultiheadCrossAttention(width, heads, init_scale), MLP(width, init_scale)

    def forward(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), self.ln_2(data))
        return x + self.mlp(self.ln_3(x))


class SimplePerceiver(nn.Module):
    """Cross-attention only: each query point independently reads the encoded cloud."""

    def __init__(self, width: int, layers: int, heads: int, init_scale: float = 0.25):
        super().__init__()
        std = init_scale / math.sqrt(width)
        self.resblocks = nn.ModuleList([ResidualCrossAttentionBlock(width, heads, std) for _ in range(layers)])

    def forward(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, data)
        return x


class CrossAttentionPointCloudSDFModel(nn.Module):
    """Signed distance of query points to the surface a cloud samples: a transformer encodes the cloud's xyz,
    query points cross-attend to it. Units are the official output units (xyz in about [-0.5, 0.5])."""

    def __init__(self, n_ctx: int = 4096, width: int = 256, encoder_layers: int = 8, encoder_heads: int = 4,
                 decoder_layers: int = 4, decoder_heads: int = 4, init_scale: float = 0.25):
        super().__init__()
        self.n_ctx = n_ctx
        self.encoder_input_proj = nn.Linear(3, width)
        self.encoder = Transformer(width, encoder_layers, encoder_heads, init_scale)
        self.decoder_input_proj = nn.Linear(3, width)
        self.decoder = SimplePerceiver(width, decoder_layers, decoder_heads, init_scale)
        self.ln_post = nn.LayerNorm(width)
        self.output_proj = nn.Linear(width, 1)

    def encode_point_clouds(self, points: torch.Tensor) -> torch.Tensor:
        """(B, 3, N) -> (B, N, W) latents."""
        return self.encoder(self.encoder_input_proj(points.transpose(1, 2)))

    def predict_sdf(self, query: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """(B, 3, Q) query points and (B, N, W) latents -> (B, Q)."""
        h = self.decoder(self.decoder_input_proj(query.transpose(1, 2)), latents)
        return self.output_proj(self.ln_post(h))[..., 0]

    def forward(self, query: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self.predict_sdf(query, self.encode_point_clouds(points))


CLASSES = {c.__name__: c for c in (PointDiffusionTransformer, CLIPImagePointDiffusionTransformer,
                                   CLIPImageGridPointDiffusionTransformer, EmbeddedGridPointDiffusionTransformer,
                                   UpsamplePointDiffusionTransformer,
                                   CLIPImageGridUpsamplePointDiffusionTransformer, CrossAttentionPointCloudSDFModel)}


def build_model(config: str | dict, device=None, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A fresh (randomly initialised) model of a released config name or a config dict (``name`` = class).
    ``device='meta'`` builds the shapes without memory (for checking a checkpoint against a config)."""
    cfg = dict(MODEL_CONFIGS[config] if isinstance(config, str) else config)
    cls = CLASSES[cfg.pop("name")]
    if cls is CrossAttentionPointCloudSDFModel:
        cfg.pop("cond_drop_prob", None)
    with torch.device(device or "cpu"):
        model = cls(**cfg)
    return model.to(dtype).eval() if dtype != torch.float32 else model.eval()


def cast_parameters(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy whose linear layers hold ``dtype`` weights (layer norms and buffers, such as the upsampler's channel
    scales, stay float32): run under autocast, it skips the per-call weight casts autocast makes for frozen
    float32 weights."""
    import copy

    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, nn.Linear):
            m.to(dtype)
    return out
