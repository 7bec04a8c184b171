"""The inputs of one Point-E training step, drawn on the pack's device (no host round trip per step): random point
subsets of each shape in the diffusion's [-1, 1] space, the base's conditioning (a render's scorer embedding, a
caption's, or zeros; the image grids of ``attach_grid`` for the grid base), the upsampler's low-resolution half,
and the SDF model's query points with their signed distances.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.point_sampler import CHANNEL_BIASES, CHANNEL_SCALES
from ..core.priors.point_e_embedded import GRID_FEATURES
from .pointe_data import PointEData
from .pointe_model import TrainOptions


def random_points(data: PointEData, shapes: torch.Tensor, k: int, gen: torch.Generator):
    """k of each shape's points, a fresh random subset per cloud: (B, k, 3) xyz (dithered within its uint8 cell)
    and (B, k, 3) uint8 colours."""
    b, n = len(shapes), data.xyz.shape[1]
    idx = torch.rand(b, n, generator=gen, device=shapes.device).argsort(1)[:, :k]
    xyz = torch.gather(data.xyz[shapes], 1, idx[..., None].expand(-1, -1, 3))
    rgb = torch.gather(data.rgb[shapes], 1, idx[..., None].expand(-1, -1, 3))
    return xyz + (torch.rand(xyz.shape, generator=gen, device=xyz.device) - 0.5) / 255, rgb


def to_diffusion(xyz: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """(B, K, 3) xyz in [-0.5, 0.5] and uint8 RGB -> (B, 6, K) in [-1, 1] (``point_sampler.CHANNEL_SCALES``)."""
    return torch.cat([xyz * 2, rgb.float() / 127.5 - 1], -1).transpose(1, 2)


def conditioning(data: PointEData, shapes: torch.Tensor, opts: TrainOptions, gen: torch.Generator,
                 grid: torch.Tensor | None = None) -> dict:
    """Per cloud a render's image embedding, a caption's text embedding, or zeros (dropped): {'embeddings': (B, E)};
    with ``grid`` (S, V, D, L), the views' grids of ``attach_grid``: {'embeddings': the render's grid (B, D, L),
    zeros for a caption or a dropped sample, 'vec': the embedding (B, E)}."""
    dev = shapes.device
    u = torch.rand(len(shapes), 3, generator=gen, device=dev)
    views = data.image_emb.shape[1]
    view = (u[:, 1] * views).long().clamp_max(views - 1)
    image = data.image_emb[shapes, view]
    n_caps = (data.shape_caps[shapes] >= 0).sum(1)
    cap = data.shape_caps[shapes, (u[:, 2] * n_caps).long().clamp_max(n_caps - 1)]
    text = data.text_emb[cap]
    dropped = u[:, 0] < opts.cond_drop
    use_image = u[:, 0] < opts.cond_drop + (1 - opts.cond_drop) * opts.image_prob
    emb = torch.where(use_image[:, None], image, text)
    emb = torch.where(dropped[:, None], torch.zeros_like(emb), emb)
    if grid is None:
        return dict(embeddings=emb)
    keep = (use_image & ~dropped).to(grid.dtype)[:, None, None]
    return dict(embeddings=grid[shapes, view].float() * keep, vec=emb)


def attach_grid(data: PointEData, features: str, device, scorer_dir: str | None = None) -> torch.Tensor:
    """(S, V, D, L) float32 grids of every render of the pack (``point_e_embedded.grid_features`` of the scorer's
    image tower, or of the single-view model's encoder for 'sv'), kept as ``data.grid`` with ``data.grid_info`` (what
    the exported base's config records); the pack must hold the renders (``pointe_data`` writes them)."""
    from ..core.priors.point_e_embedded import grid_features, load_image_tower, load_single_view_tower

    if data.renders is None:
        raise ValueError("this pack has no renders of the training shapes, which the grid base reads: add them with "
                         "`python -m pipelines pointe data renders --data PACK` (then shrink again)")
    if features not in GRID_FEATURES:
        raise ValueError(f"--grid must be one of {', '.join(GRID_FEATURES)}, not {features!r}")
    s, v = data.renders.shape[:2]
    if features == "sv":  # it reads the pack's views as an app's image is read: view_pixels at the pack's size
        tower, size = load_single_view_tower(None, device), data.renders.shape[2]
    else:
        tower, size = load_image_tower(scorer_dir, device)
    if data.renders.shape[2] != size:
        raise ValueError(f"the pack's renders are {data.renders.shape[2]} px; the scorer reads {size} px")
    g = grid_features(tower, data.renders.reshape(s * v, *data.renders.shape[2:]), features)
    data.grid = g.reshape(s, v, *g.shape[1:])
    data.grid_info = dict(features=features, image_size=size)
    if features == "sv":
        data.grid_info["single_view"] = tower.sha256
    return data.grid


def make_batch(data: PointEData, shapes: torch.Tensor, cfg: dict, opts: TrainOptions, gen: torch.Generator) -> dict:
    """The inputs of one step: ``x0`` (diffusion models) and the model's conditioning, or the SDF's query points,
    targets and cloud."""
    if opts.model == "base":
        xyz, rgb = random_points(data, shapes, cfg["n_ctx"], gen)
        grid = data.grid if cfg.get("name") == "EmbeddedGridPointDiffusionTransformer" else None
        return dict(x0=to_diffusion(xyz, rgb), cond=conditioning(data, shapes, opts, gen, grid))
    if opts.model == "upsample":
        k = cfg["cond_ctx"]
        xyz, rgb = random_points(data, shapes, k + cfg["n_ctx"], gen)
        x = to_diffusion(xyz, rgb)
        scale = torch.tensor(CHANNEL_SCALES, device=x.device)[None, :, None]
        bias = torch.tensor(CHANNEL_BIASES, device=x.device)[None, :, None]
        return dict(x0=x[..., k:], cond=dict(low_res=(x[..., :k] - bias) / scale))  # low_res in official units
    cloud, _ = random_points(data, shapes, cfg["n_ctx"], gen)
    query, sdf = sdf_targets(data, shapes, cloud, opts.queries, gen)
    return dict(query=query, cloud=cloud, sdf=sdf)


def sdf_targets(data: PointEData, shapes: torch.Tensor, cloud: torch.Tensor, q: int, gen: torch.Generator):
    """Query points (B, q, 3) and their signed distances (B, q), positive inside: half near the cloud (offsets of
    0.01 and 0.05 std), half uniform over the cube of side 1.02 (``point_clouds.SIDE``)."""
    b, dev = len(shapes), cloud.device
    near = q // 2
    pick = torch.randint(0, cloud.shape[1], (b, near), generator=gen, device=dev)
    std = torch.where(torch.rand(b, near, 1, generator=gen, device=dev) < 0.5, 0.01, 0.05)
    query = torch.cat([torch.gather(cloud, 1, pick[..., None].expand(-1, -1, 3))
                       + std * torch.randn(b, near, 3, generator=gen, device=dev),
                       (torch.rand(b, q - near, 3, generator=gen, device=dev) - 0.5) * 1.02], 1)
    dist = torch.cdist(query, cloud).amin(-1)
    occ = data.occupancy[shapes].float()[:, None]  # (B, 1, R, R, R) indexed [x, y, z]: grid_sample wants (z, y, x)
    inside = F.grid_sample(occ, (2 * query).flip(-1)[:, :, None, None], align_corners=False)[:, 0, :, 0, 0] > 0.5
    return query, torch.where(inside, dist, -dist)
