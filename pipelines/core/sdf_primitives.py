"""Analytic SDF primitives (spheres, boxes, tori, capsules; each in its local frame, centred at the origin, tori
and capsules along local z) and their union as a field with the ``core.sdf`` contract (``PrimitiveSDF``): VolSDF's
primitives scene, fitted by gradient descent, and the example scene's ground truth.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .sdf import safe_norm


def sdf_sphere(p: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """(N, 3) points, radius (...) -> (N,) exact distance."""
    return safe_norm(p) - radius


def sdf_box(p: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Axis-aligned box with half-extents ``half`` (3,): exact distance inside and out."""
    q = p.abs() - half
    return safe_norm(q.clamp_min(0)) + q.amax(-1).clamp_max(0)


def sdf_torus(p: torch.Tensor, major: torch.Tensor, minor: torch.Tensor) -> torch.Tensor:
    """Torus around the z axis: ring radius ``major``, tube radius ``minor``."""
    q = torch.stack([safe_norm(p[..., :2]) - major, p[..., 2]], -1)
    return safe_norm(q) - minor


def sdf_capsule(p: torch.Tensor, half_length: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Capsule: the segment z in [-half_length, half_length] on the z axis, thickened by ``radius``."""
    z = p[..., 2] - p[..., 2].clamp(-half_length, half_length)
    return safe_norm(torch.cat([p[..., :2], z[..., None]], -1)) - radius


PRIMITIVE_SIZES = {"sphere": ("radius",), "box": ("half_x", "half_y", "half_z"),
                   "torus": ("major_radius", "minor_radius"), "capsule": ("half_length", "radius")}
"""The size parameters of each primitive kind, in the order ``PrimitiveSDF`` stores them."""


def smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Polynomial smooth minimum (Quilez): min(a, b) where |a - b| >= k, blended within k; k = 0 is min."""
    if k <= 0:
        return torch.minimum(a, b)
    h = (0.5 + 0.5 * (b - a) / k).clamp(0, 1)
    return b + (a - b) * h - k * h * (1 - h)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z), any norm -> (..., 3, 3) rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


@dataclass
class Primitive:
    """One primitive in world units: ``size`` as named by ``PRIMITIVE_SIZES[kind]``, rotation (w, x, y, z)
    from the local frame to the world, colour in [0, 1]."""

    kind: str
    center: list[float]
    size: list[float]
    rotation: tuple[float, float, float, float] | list[float] = (1.0, 0.0, 0.0, 0.0)
    color: tuple[float, float, float] | list[float] = (0.5, 0.5, 0.5)

    def __post_init__(self):
        if self.kind not in PRIMITIVE_SIZES:
            raise ValueError(f"unknown primitive kind {self.kind!r}; choose from {', '.join(PRIMITIVE_SIZES)}")
        if len(self.size) != len(PRIMITIVE_SIZES[self.kind]) or len(self.center) != 3:
            raise ValueError(f"a {self.kind} needs a 3D center and sizes {PRIMITIVE_SIZES[self.kind]}")


def primitives_from_json(data: dict | list) -> list[Primitive]:
    """``{"primitives": [{kind, center, size[, rotation, color]}, ...]}`` (or the bare list) -> primitives.

    Raises KeyError, TypeError or ValueError on a malformed entry."""
    items = data["primitives"] if isinstance(data, dict) else data
    return [Primitive(p["kind"], list(p["center"]), list(p["size"]), list(p.get("rotation", (1.0, 0.0, 0.0, 0.0))),
                      list(p.get("color", (0.5, 0.5, 0.5)))) for p in items]


def primitives_to_json(primitives: list[Primitive], smooth: float = 0.0) -> dict:
    """The JSON form ``primitives_from_json`` reads, with each kind's size names spelled out."""
    return {"smooth": smooth, "primitives": [{**asdict(p), "size_names": list(PRIMITIVE_SIZES[p.kind])}
                                             for p in primitives]}


class PrimitiveSDF(nn.Module):
    """Union (or smooth union, radius ``smooth``) of analytic primitives with learnable pose, size and colour.

    Parameters: centres (P, 3), rotations (P, 4) quaternions, log sizes (P, 3) (a kind uses its first
    ``len(PRIMITIVE_SIZES[kind])``), colour logits (P, 3). ``features`` are the soft ownership weights
    softmax(-d_i / tau) (N, P), so ``color`` blends primitive colours where they meet and is the nearest
    primitive's colour elsewhere.
    """

    def __init__(self, primitives: list[Primitive], smooth: float = 0.0, tau: float = 0.01):
        super().__init__()
        if not primitives:
            raise ValueError("PrimitiveSDF needs at least one primitive")
        self.kinds = tuple(p.kind for p in primitives)
        self.smooth, self.tau = float(smooth), float(tau)
        sizes = torch.ones(len(primitives), 3)
        for i, p in enumerate(primitives):
            sizes[i, :len(p.size)] = torch.tensor(p.size, dtype=torch.float32)
        if (sizes <= 0).any():
            raise ValueError("primitive sizes must be positive")
        colors = torch.tensor([list(p.color) for p in primitives], dtype=torch.float32).clamp(1e-3, 1 - 1e-3)
        self.centers = nn.Parameter(torch.tensor([list(p.center) for p in primitives], dtype=torch.float32))
        self.rotations = nn.Parameter(torch.tensor([list(p.rotation) for p in primitives], dtype=torch.float32))
        self.log_sizes = nn.Parameter(sizes.log())
        self.color_logits = nn.Parameter(torch.logit(colors))

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N, P) distance to each primitive."""
        rot = quaternion_to_matrix(self.rotations)  # local -> world
        local = torch.einsum("npi,pij->npj", x[:, None, :] - self.centers, rot)  # R^T (x - c), row-wise
        sizes = self.log_sizes.exp()
        ds = []
        for i, kind in enumerate(self.kinds):
            p, s = local[:, i], sizes[i]
            if kind == "sphere":
                ds.append(sdf_sphere(p, s[0]))
            elif kind == "box":
                ds.append(sdf_box(p, s))
            elif kind == "torus":
                ds.append(sdf_torus(p, s[0], s[1]))
            else:
                ds.append(sdf_capsule(p, s[0], s[1]))
        return torch.stack(ds, -1)

    def geometry(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.distances(x)
        sdf = d[:, 0]
        for i in range(1, d.shape[1]):
            sdf = smooth_min(sdf, d[:, i], self.smooth)
        return sdf, torch.softmax(-d / (self.tau + self.smooth), -1)

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        return self.geometry(x)[0]

    def color(self, x, normals, dirs, features) -> torch.Tensor:
        return features @ torch.sigmoid(self.color_logits)

    def primitives(self) -> list[Primitive]:
        """The current parameters as plain ``Primitive``s (for JSON and display)."""
        rot = torch.nn.functional.normalize(self.rotations.detach(), dim=-1).cpu()
        sizes, centers = self.log_sizes.detach().exp().cpu(), self.centers.detach().cpu()
        colors = torch.sigmoid(self.color_logits.detach()).cpu()
        return [Primitive(kind, centers[i].tolist(), sizes[i, :len(PRIMITIVE_SIZES[kind])].tolist(),
                          rot[i].tolist(), colors[i].tolist()) for i, kind in enumerate(self.kinds)]
