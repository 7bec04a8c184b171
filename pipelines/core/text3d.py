"""The student of the text-to-3D methods (DreamFusion; Magic3D's coarse stage): a NeRF of density and albedo in
a bounding sphere, a background network of the view direction, and volume rendering with per-point shading.

Contract: ``AlbedoField(x (N, 3)) -> (sigma (N,) >= 0, albedo (N, 3) in [0, 1])`` with zero density outside the
sphere of ``radius``; ``density(x)`` alone for meshing. Normals are -grad sigma / |grad sigma| (DreamFusion),
taken with autograd inside ``render_shaded``, which composites with ``core.volume`` (dense, per ray).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .encodings import HarmonicEncoding, HashGridEncoding
from .fields import mlp
from .volume import composite, intervals, sample_pdf, stratified_samples

SHADINGS = ("albedo", "diffuse", "textureless")


class AlbedoField(nn.Module):
    """Density and albedo from an MLP on harmonic embeddings of x (sin/cos of 2^k pi x / radius) or on a
    multiresolution hash grid, plus a density blob (Magic3D's: blob_density (1 - |x| / blob_radius)) added
    before the softplus, so training starts from a soft ball at the centre."""

    def __init__(self, radius: float = 1.0, encoding: str = "harmonic", width: int = 64, depth: int = 3,
                 n_freqs: int = 6, hash_levels: int = 16, hash_log2_size: int = 19, blob_density: float = 10.0,
                 blob_radius: float = 0.5):
        super().__init__()
        self.radius, self.hash = float(radius), encoding == "hash"
        self.blob_density, self.blob_radius = float(blob_density), float(blob_radius)
        if self.hash:
            self.encoding = HashGridEncoding(hash_levels, 2, hash_log2_size, 16, 2048)
            self.net = mlp(self.encoding.out_dim, width, 4, 1)
        else:
            self.encoding = HarmonicEncoding(3, n_freqs, scale=math.pi)
            self.net = mlp(self.encoding.out_dim, width, 4, depth)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = x / self.radius
        h = self.net(self.encoding((u + 1) / 2 if self.hash else u)).float()
        r = x.norm(dim=-1)
        blob = self.blob_density * (1 - r / self.blob_radius)
        sigma = F.softplus(h[:, 0] + blob) * (r <= self.radius)
        return sigma, torch.sigmoid(h[:, 1:])

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)[0]


class BackgroundField(nn.Module):
    """d (N, 3) unit view directions -> (N, 3) colour: what a ray that leaves the sphere empty sees."""

    def __init__(self, n_freqs: int = 4, width: int = 32):
        super().__init__()
        self.encoding = HarmonicEncoding(3, n_freqs)
        self.net = mlp(self.encoding.out_dim, width, 3, 1)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(self.encoding(d)))


def ray_sphere(o: torch.Tensor, d: torch.Tensor, radius: float,
               min_near: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """near, far (R,) where rays (o, unit d: (R, 3)) cross the sphere |x| = radius; near == far on a miss."""
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - radius ** 2)
    s = disc.clamp_min(0).sqrt()
    near = (-b - s).clamp_min(min_near)
    far = torch.maximum(-b + s, near)
    return near, torch.where(disc > 0, far, near)


def render_shaded(field: AlbedoField, o: torch.Tensor, d: torch.Tensor, background: torch.Tensor, n_samples: int,
                  n_importance: int = 0, shading: str = "albedo", light: torch.Tensor | None = None,
                  ambient: float = 0.1, perturb: bool = False, train: bool = False) -> dict[str, torch.Tensor]:
    """Volume-renders rays through the field's sphere with DreamFusion's per-point shading.

    Args:
        o, d: (R, 3) origins and unit directions.
        background: (R, 3) or (3,) colour behind the object (a tensor on the rays' device).
        n_samples: stratified samples per ray; n_importance: more, drawn from a density-only first pass.
        shading: 'albedo' (the colour itself), 'diffuse' (albedo x (ambient + (1 - ambient) max(0, n.l))) or
            'textureless' (the same with a white albedo).
        light: (R, 3) point-light position per ray, for the diffuse shadings.
        train: keep the graph through the normals (create_graph), so losses on them train the density.
    Returns:
        rgb (R, 3), opacity (R,), depth (R,), normal (R, 3) (opacity-weighted sum) and orient (R,):
        DreamFusion's orientation penalty sum_i sg(w_i) max(0, n_i . d)^2 (normals facing away from the camera).
    """
    near, far = ray_sphere(o, d, field.radius)
    t = stratified_samples(near, far, n_samples, perturb)
    if n_importance > 0:
        with torch.no_grad():
            x = o[:, None] + t[..., None] * d[:, None]
            sigma = field.density(x.reshape(-1, 3)).reshape(t.shape)
            black = o.new_zeros(3)  # a tensor already on the device: a Python 0.0 would be copied there (a sync)
            w = composite(sigma, torch.zeros_like(x), t, intervals(t, far), black).extras["weights"]
            t_fine = sample_pdf(0.5 * (t[:, 1:] + t[:, :-1]), w[:, 1:-1], n_importance, perturb)
            t = torch.sort(torch.cat([t, t_fine], -1), -1).values
    n_rays, n_pts = t.shape
    with torch.enable_grad():
        x = (o[:, None] + t[..., None] * d[:, None]).reshape(-1, 3).detach().requires_grad_(True)
        sigma, albedo = field(x)
        grad = torch.autograd.grad(sigma.sum(), x, create_graph=train)[0]
    normal = -F.normalize(grad, dim=-1).reshape(n_rays, n_pts, 3)
    albedo = albedo.reshape(n_rays, n_pts, 3)
    if shading == "albedo":
        rgb = albedo
    elif shading in SHADINGS:
        to_light = F.normalize(light[:, None, :] - x.reshape(n_rays, n_pts, 3), dim=-1)
        lambert = (normal * to_light).sum(-1, keepdim=True).clamp_min(0)
        base = albedo if shading == "diffuse" else torch.ones_like(albedo)
        rgb = base * (ambient + (1 - ambient) * lambert)
    else:
        raise ValueError(f"unknown shading {shading!r}; one of {SHADINGS}")
    out = composite(sigma.reshape(n_rays, n_pts), rgb, t, intervals(t, far), background)
    w = out.extras["weights"]
    facing_away = (normal * d[:, None]).sum(-1).clamp_min(0)  # n . d > 0: the camera sees the back side
    res = {"rgb": out.rgb, "opacity": out.opacity, "depth": out.depth,
           "normal": (w[..., None] * normal).sum(1), "orient": (w.detach() * facing_away ** 2).sum(-1)}
    return res if train else {k: v.detach() for k, v in res.items()}
