"""Pinhole cameras in NeRF-synthetic (OpenGL/Blender) convention, and camera paths.

Contract: ``Camera.c2w`` is a camera-to-world 4x4 (x right, y up, the camera looks down -z); intrinsics in
pixels. Orbit and random paths look at the origin with +z as the world's up axis, as in Blender scenes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch


@dataclass
class Camera:
    c2w: torch.Tensor  # (4, 4) float32
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @staticmethod
    def from_fov(c2w: torch.Tensor, fov_x_rad: float, width: int, height: int) -> "Camera":
        fx = 0.5 * width / math.tan(0.5 * fov_x_rad)
        return Camera(c2w.float(), fx, fx, width / 2.0, height / 2.0, width, height)

    def scaled(self, factor: float) -> "Camera":
        """The same camera at ``factor`` times the resolution (e.g. 0.5 for half-res previews)."""
        w, h = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        sx, sy = w / self.width, h / self.height
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy, width=w, height=h)

    def to(self, device) -> "Camera":
        return replace(self, c2w=self.c2w.to(device))

    @property
    def position(self) -> torch.Tensor:
        return self.c2w[:3, 3]


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up: torch.Tensor | None = None) -> torch.Tensor:
    """Camera-to-world matrices (..., 4, 4) for cameras at ``eye`` (..., 3) looking at ``target``."""
    eye = eye.float()
    target = torch.zeros_like(eye) if target is None else target.to(eye).expand_as(eye)
    up = eye.new_tensor([0.0, 0.0, 1.0]).expand_as(eye) if up is None else up.to(eye).expand_as(eye)
    back = torch.nn.functional.normalize(eye - target, dim=-1)  # camera +z points away from the target
    right = torch.linalg.cross(up, back, dim=-1)
    # Looking straight down the up axis: any right vector will do.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, eye.new_tensor([1.0, 0.0, 0.0]).expand_as(eye), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    true_up = torch.linalg.cross(back, right, dim=-1)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = right, true_up, back, eye
    c2w[..., 3, 3] = 1.0
    return c2w


def spherical_to_cartesian(radius, elevation_rad, azimuth_rad) -> torch.Tensor:
    """Points at the given radius, elevation above the xy-plane and azimuth from +x towards +y."""
    radius, elev, azim = (torch.as_tensor(v, dtype=torch.float32) for v in (radius, elevation_rad, azimuth_rad))
    return torch.stack([radius * torch.cos(elev) * torch.cos(azim),
                        radius * torch.cos(elev) * torch.sin(azim),
                        radius * torch.sin(elev)], dim=-1)


def orbit_cameras(n: int, radius: float, elevation_deg: float, fov_deg: float, width: int, height: int | None = None,
                  start_azimuth_deg: float = 0.0) -> list[Camera]:
    """``n`` cameras evenly spaced on a circle around the origin: the turntable path."""
    azim = torch.deg2rad(torch.tensor(start_azimuth_deg)) + torch.arange(n) * (2 * math.pi / n)
    eyes = spherical_to_cartesian(radius, torch.full((n,), math.radians(elevation_deg)), azim)
    return [Camera.from_fov(c, math.radians(fov_deg), width, height or width) for c in look_at(eyes)]


@dataclass
class CameraSample:
    camera: Camera
    elevation_deg: float
    azimuth_deg: float
    radius: float


def random_camera(generator: torch.Generator, width: int, height: int | None = None,
                  radius: tuple[float, float] = (3.0, 4.0), elevation_deg: tuple[float, float] = (-10.0, 60.0),
                  fov_deg: tuple[float, float] = (40.0, 70.0), azimuth_deg: tuple[float, float] = (-180.0, 180.0),
                  jitter_target: float = 0.0) -> CameraSample:
    """One camera looking at (about) the origin, uniform in each range: the text-to-3D pose sampler."""
    u = torch.rand(5, generator=generator)
    lerp = lambda rng, x: rng[0] + (rng[1] - rng[0]) * float(x)  # noqa: E731
    r, elev, azim, fov = lerp(radius, u[0]), lerp(elevation_deg, u[1]), lerp(azimuth_deg, u[2]), lerp(fov_deg, u[3])
    eye = spherical_to_cartesian(r, math.radians(elev), math.radians(azim))
    target = (torch.rand(3, generator=generator) * 2 - 1) * jitter_target
    c2w = look_at(eye, target)
    return CameraSample(Camera.from_fov(c2w, math.radians(fov), width, height or width), elev, azim, r)


def pose_errors(est, ref):
    """How far estimated camera poses (N, >=3, 4 camera-to-world, numpy) are from reference ones, up to the
    similarity that structure from motion cannot know: Umeyama's least-squares scale, rotation and translation of
    the camera centres, then per camera the rotation error in degrees and the centre distance (reference units)."""
    import numpy as np

    src, dst = est[:, :3, 3], ref[:, :3, 3]
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, d, vt = np.linalg.svd(b.T @ a / len(src))
    e = np.eye(3)
    e[2, 2] = np.sign(np.linalg.det(u @ vt))
    r = u @ e @ vt
    s = (d * np.diag(e)).sum() / (a ** 2).sum(1).mean()
    centres = s * src @ r.T + (md - s * r @ ms)
    rel = np.einsum("ij,njk->nik", r, est[:, :3, :3])
    cos = ((np.einsum("nji,njk->nik", rel, ref[:, :3, :3]).trace(axis1=1, axis2=2) - 1) / 2).clip(-1, 1)
    return np.degrees(np.arccos(cos)), np.linalg.norm(centres - dst, axis=1)
