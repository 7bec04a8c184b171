"""Radiance fields: NeRF's MLP with positional encoding, and an Instant-NGP hash-grid field.

Contract: ``field(x (N, 3), d (N, 3)) -> (sigma (N,), rgb (N, 3))`` with sigma >= 0 and rgb in [0, 1];
``field.density(x) -> (N,)`` evaluates the density alone (occupancy updates, culling, meshing).
"""
from __future__ import annotations

import torch
from torch import nn

from .encodings import HarmonicEncoding, HashGridEncoding, SHEncoding


class _TruncExp(torch.autograd.Function):
    """exp with a clamped backward: Instant-NGP's density activation, stable at high densities."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


def mlp(in_dim: int, hidden: int, out_dim: int, n_hidden: int, bias: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_hidden):
        layers += [nn.Linear(in_dim if i == 0 else hidden, hidden, bias=bias), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(hidden if n_hidden else in_dim, out_dim, bias=bias))
    return nn.Sequential(*layers)


class VanillaNeRF(nn.Module):
    """The paper's network (Fig. 7): gamma(x) through ``depth`` ReLU layers of ``width`` with gamma(x)
    concatenated again after the first half; sigma from a linear head; the colour from the feature and
    gamma(d) through one more layer of width/2."""

    def __init__(self, width: int = 256, depth: int = 8, pos_freqs: int = 10, dir_freqs: int = 4):
        super().__init__()
        self.pos_enc = HarmonicEncoding(3, pos_freqs)
        self.dir_enc = HarmonicEncoding(3, dir_freqs)
        self.skip = depth // 2
        self.layers = nn.ModuleList(
            nn.Linear(self.pos_enc.out_dim if i == 0 else width + (self.pos_enc.out_dim if i == self.skip else 0), width)
            for i in range(depth))
        self.sigma_head = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.rgb_head = nn.Sequential(nn.Linear(width + self.dir_enc.out_dim, width // 2), nn.ReLU(inplace=True),
                                      nn.Linear(width // 2, 3))
        # Glorot-uniform weights and zero biases, as the official (Keras) code: with PyTorch's default init the
        # 8 ReLU layers shrink activations until the density head's random bias alone decides whether any
        # ReLU density is alive, and on lego at 256 wide it was not: training stayed at the empty scene.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        gx = self.pos_enc(x)
        h = gx
        for i, layer in enumerate(self.layers):
            if i == self.skip:
                h = torch.cat([h, gx], -1)
            h = torch.relu(layer(h))
        return h

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.sigma_head(self._trunk(x)).squeeze(-1).float())

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._trunk(x)
        sigma = torch.relu(self.sigma_head(h).squeeze(-1).float())
        rgb = torch.sigmoid(self.rgb_head(torch.cat([self.feature(h), self.dir_enc(d).to(h.dtype)], -1)).float())
        return sigma, rgb


class NGPField(nn.Module):
    """Instant-NGP's NeRF: hash grid -> 1-hidden-layer MLP -> (log sigma, 15 features); features and the
    SH-encoded direction -> 2-hidden-layer MLP -> rgb. Points outside [-bound, bound]^3 are empty."""

    def __init__(self, bound: float, levels: int = 16, log2_size: int = 19, base_res: int = 16,
                 max_res: int | None = None, hidden: int = 64, geo_features: int = 15):
        super().__init__()
        self.bound = float(bound)
        self.encoding = HashGridEncoding(levels, 2, log2_size, base_res, max_res or int(2048 * bound / 1.5))
        self.sigma_net = mlp(self.encoding.out_dim, hidden, 1 + geo_features, 1)
        self.dir_enc = SHEncoding()
        self.rgb_net = mlp(self.dir_enc.out_dim + geo_features, hidden, 3, 2)

    def _geo(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = (x + self.bound) / (2 * self.bound)
        inside = ((u >= 0) & (u <= 1)).all(-1)
        h = self.sigma_net(self.encoding(u))
        sigma = trunc_exp(h[:, 0].float() - 1.0) * inside  # the -1 bias starts the field nearly empty
        return sigma, h[:, 1:]

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self._geo(x)[0]

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, geo = self._geo(x)
        rgb = torch.sigmoid(self.rgb_net(torch.cat([self.dir_enc(d).to(geo.dtype), geo], -1)).float())
        return sigma, rgb
