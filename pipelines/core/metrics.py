"""Image metrics: PSNR and SSIM (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5, as in NeRF papers).

Contract: images are float tensors in [0, 1], (H, W, 3) or (B, H, W, 3); results are Python floats.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import UserInputError


def mse_to_psnr(mse: float | torch.Tensor) -> float:
    return -10.0 * math.log10(max(float(mse), 1e-10))


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    return mse_to_psnr(F.mse_loss(pred.float(), target.float()))


def _gaussian_window(size: int, sigma: float, channels: int, device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM over the valid (unpadded) region, per channel then averaged, data range 1."""
    p = pred.float().reshape(-1, *pred.shape[-3:]).permute(0, 3, 1, 2)
    t = target.float().reshape(-1, *target.shape[-3:]).permute(0, 3, 1, 2)
    window = min(window, p.shape[-1], p.shape[-2])
    c = p.shape[1]
    w = _gaussian_window(window, sigma, c, p.device)
    conv = lambda x: F.conv2d(x, w, groups=c)  # noqa: E731
    mu_p, mu_t = conv(p), conv(t)
    var_p = conv(p * p) - mu_p ** 2
    var_t = conv(t * t) - mu_t ** 2
    cov = conv(p * t) - mu_p * mu_t
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2))
    return float(s.mean())


# ------------------------------------------------------------------------------------- text-to-3D (CLIP)
PROMPT_SET = Path(__file__).resolve().parents[3] / "shared" / "data" / "prompts" / "prompt_library.json"
"""The shared prompt library (benchmarks; absent from a deployed app, where 'auto' means none)."""


def r_precision(image_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """Share of images (V, D) whose caption (row 0 of ``text_emb`` (1 + distractors, D)) scores strictly above
    every distractor. A tie is not a retrieval (prompts that a small tokenizer maps alike would otherwise
    count for whichever index argmax picks). NaN without distractors: the caption would be retrieved whatever
    the images show, so no score measures anything there."""
    if text_emb.shape[0] < 2:
        return float("nan")
    sims = image_emb @ text_emb.T
    return float((sims[:, 0] > sims[:, 1:].max(-1).values).float().mean())


def load_prompt_set(spec: str) -> list[str]:
    """The R-precision prompt set named by ``spec`` ('auto', '' or a path): a list of unique prompts."""
    if not spec:
        return []
    path = PROMPT_SET if spec == "auto" else Path(spec).expanduser()
    if not path.is_file():
        if spec == "auto":
            return []
        raise UserInputError(f"no prompt set at {spec!r} (a JSON list or dict of lists, or a .txt of lines)")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise UserInputError(f"{path} is not valid JSON ({e})") from e
        items = [p for v in data.values() for p in v] if isinstance(data, dict) else list(data)
    else:
        items = text.splitlines()
    return list(dict.fromkeys(str(p).strip() for p in items if str(p).strip()))


# ----------------------------------------------------------------------------------------------------------
# Meshes: what a reconstruction's exported mesh is worth


def mesh_psnr(mesh, views, n_views: int, background: float, device) -> float:
    """Mean PSNR of a vertex-coloured mesh rasterized unlit (``core.raster.render_mesh`` with ambient 1, 2x2
    supersampled edges) from ``n_views`` evenly spaced cameras of ``views`` against their images."""
    from .geometry import Mesh
    from .raster import render_mesh

    n = min(n_views, len(views))
    picks = sorted({round(i * (len(views) - 1) / max(n - 1, 1)) for i in range(n)})
    total = 0.0
    for i in picks:
        gt = views.images[i].to(device)
        if mesh.num_faces == 0:
            rgb = torch.full_like(gt, background)
        else:
            colors = mesh.vert_colors if mesh.vert_colors is not None else torch.full_like(mesh.verts, 0.5)
            m = Mesh(mesh.verts.to(device).float(), mesh.faces.to(device), colors.to(device).float())
            with torch.no_grad():
                rgb, _ = render_mesh(m, views.camera(i).to(device), background=background, ambient=1.0, ssaa=2)
        total += psnr(rgb, gt)
    return total / len(picks)


def mesh_stats(mesh) -> dict[str, float]:
    """Face count and watertightness (every edge shared by exactly two faces)."""
    f = mesh.faces
    if len(f) == 0:
        return {"mesh_faces": 0.0, "mesh_watertight": 0.0}
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(-1).values
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    return {"mesh_faces": float(len(f)), "mesh_watertight": float(bool((counts == 2).all()))}
