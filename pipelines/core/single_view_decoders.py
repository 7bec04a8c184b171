"""The single-view network's decoders (``single_view_net.SingleViewModel`` puts them after its ResNet-18): the
voxel decoder (3D-R2N2's transposed convolutions, optionally with the encoder's feature maps lifted into the view
grid), the mesh decoders' pieces (graph unpooling, the shared FoldingNet decoder) and PSGN's convolutional point
branch. Each maps image features to one representation in the view frame (x the image's columns, y depth, z up).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                         nn.ReLU(inplace=True), nn.Linear(hidden, cout))


def lift_to_view_grid(fmap: torch.Tensor, conv: nn.Module, resolution: int) -> torch.Tensor:
    """(B, C, H, W) image features -> (B, K, r, r, r) indexed [x, y, z] in the view frame (x: the image's columns, y:
    depth away from the camera, z: its rows bottom-up), r = ``resolution``: the map resized to r x r, then a 1x1
    ``conv`` to K * r channels gives every pixel a column of K features at r depths."""
    if fmap.shape[-1] != resolution or fmap.shape[-2] != resolution:
        fmap = F.interpolate(fmap, size=(resolution, resolution), mode="bilinear", align_corners=False,
                             antialias=fmap.shape[-1] > resolution)
    col = conv(fmap)
    b, _, h, w = col.shape
    return col.view(b, -1, resolution, h, w).permute(0, 1, 4, 2, 3).flip(-1)


class VoxelDecoder(nn.Module):
    """(B, F) -> (B, R, R, R) logits: a linear layer to a 2^3 grid, then stride-2 transposed convolutions.

    ``lift_channels`` (the encoder's stage widths, deepest first; empty: off): the 'lifted' decoder. Each of those
    feature maps (as many as there are stages before the last: 3 at 32^3) is lifted into the view frame's grid at one of the first stages' resolutions (``lift_to_view_grid``;
    at 128 px the ResNet's last three stages give 4^3, 8^3 and 16^3) and added there, skip connections from 2D to 3D:
    where the picture shows a part (a leg, a tube) then places it in the grid directly, which the pooled feature alone
    must encode in 512 numbers (issue 21: thin parts dropped)."""

    def __init__(self, features: int, hidden: int, resolution: int = 32, lift_channels: tuple[int, ...] = ()):
        super().__init__()
        n_up = int(round(math.log2(resolution // 2)))
        chans = [max(4, hidden // 2 >> i) for i in range(n_up)]
        self.c0 = chans[0]
        self.fc = nn.Linear(features, self.c0 * 8)
        layers: list[nn.Module] = []
        for cin, cout in zip(chans, chans[1:]):
            layers += [nn.ConvTranspose3d(cin, cout, 4, 2, 1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
        layers.append(nn.ConvTranspose3d(chans[-1], 1, 4, 2, 1))
        self.net = nn.Sequential(*layers)
        lift_channels = lift_channels[:n_up - 1]  # the deepest maps, one a stage before the last
        # stage i (after the (i+1)-th transposed convolution) has chans[i + 1] channels at 2^(i+2) cells a side
        self.lift = nn.ModuleList(nn.Conv2d(c, chans[i + 1] * 2 ** (i + 2), 1) for i, c in enumerate(lift_channels))

    def forward(self, f: torch.Tensor, maps: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``maps``: the encoder's feature maps for the lifted decoder, deepest first (as ``lift_channels``)."""
        x = torch.relu(self.fc(f)).view(-1, self.c0, 2, 2, 2)
        if not len(self.lift):
            return self.net(x)[:, 0]
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i % 3 == 0 and i // 3 < len(self.lift):  # after a transposed convolution, before its BatchNorm
                x = x + lift_to_view_grid(maps[i // 3], self.lift[i // 3], x.shape[-1])
        return x[:, 0]


def graph_unpool(verts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Pixel2Mesh's graph unpooling: (..., V, 3) -> (..., V + E, 3), one new vertex at the midpoint of each of the
    (E, 2) ``edges``, appended in their order. On an icosphere level with ``mesh_edges(faces)`` this gives the next
    level's vertices in ``icosphere``'s order (before its projection onto the sphere)."""
    return torch.cat([verts, verts[..., edges, :].mean(-2)], -2)


class FoldingDecoder(nn.Module):
    """A mesh decoder shared across vertices (FoldingNet / AtlasNet): each template vertex's position, in Fourier
    features, and the image feature go through one MLP to that vertex's offset. Its size does not grow with the
    template's level (its compute does), and one function of position for every vertex ties neighbours' offsets
    together where independent offsets do not. The top octave (32 pi) turns about 3 rad per level-4 edge: fine
    detail is possible, so the regularisers still matter."""

    def __init__(self, cin: int, hidden: int, template: torch.Tensor, frequencies: int = 6):
        super().__init__()
        bands = 2.0 ** torch.arange(frequencies) * math.pi
        x = template[:, :, None] * bands  # (V, 3, L)
        self.register_buffer("position", torch.cat([template, x.sin().flatten(1), x.cos().flatten(1)], 1),
                             persistent=False)
        self.from_feature = nn.Linear(cin, hidden)  # the first layer split in two: per image, and per vertex
        self.from_position = nn.Linear(self.position.shape[1], hidden, bias=False)
        self.mlp = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 3))

    def __getitem__(self, i: int) -> nn.Module:
        """Only ``head[-1]``, the output layer, as the per-vertex MLP heads' (zero-initialised, tested)."""
        if i != -1:
            raise IndexError("a FoldingDecoder exposes only its output layer, head[-1]")
        return self.mlp[-1]

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, V, 3) offsets."""
        return self.mlp(self.from_feature(f)[:, None] + self.from_position(self.position)[None])


class PixelPointBranch(nn.Module):
    """PSGN's convolutional branch (Fan et al. 2017, the two-branch version): ``per_cell`` points from each cell of
    a ``cells`` x ``cells`` feature map, each an offset from its cell's centre on the image plane (the view frame's
    x, z; depth y 0), so a point starts where the picture shows its part and the branch need not learn positions."""

    def __init__(self, cin: int, hidden: int, cells: int, per_cell: int):
        super().__init__()
        self.cells, self.per_cell = cells, per_cell
        self.net = nn.Sequential(nn.Conv2d(cin, hidden, 3, 1, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, per_cell * 3, 1))
        with torch.no_grad():  # small offsets, each point its own (identical points would get identical gradients)
            self.net[-1].weight.mul_(0.1)
            nn.init.uniform_(self.net[-1].bias, -0.1, 0.1)
        c = (torch.arange(cells) + 0.5) / cells - 0.5
        row, col = torch.meshgrid(c, c, indexing="ij")
        anchors = torch.stack([col, torch.zeros_like(col), -row], -1).reshape(-1, 3)
        self.register_buffer("anchors", anchors.repeat_interleave(per_cell, 0), persistent=False)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, cells^2 per_cell, 3)."""
        if fmap.shape[-1] != self.cells:
            fmap = F.interpolate(fmap, size=(self.cells, self.cells), mode="bilinear", align_corners=False,
                                 antialias=fmap.shape[-1] > self.cells)
        o = self.net(fmap)
        b, _, s, _ = o.shape
        return o.view(b, self.per_cell, 3, s, s).permute(0, 3, 4, 1, 2).reshape(b, -1, 3) + self.anchors
