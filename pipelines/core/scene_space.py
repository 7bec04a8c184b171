"""Where a real capture's scene lives while training: an object box, NDC for forward-facing captures, or a
contracted unbounded space for captures taken around something.

Contract: ``choose_space(c2w)`` says 'forward' when the cameras all look one way, else 'unbounded', with the
reason in words; ``normalize(c2w, space, bounds, points)`` returns the similarity (rotation, translation, scale)
that puts the capture in the space's frame: 'object' centres the cameras' look-at point, turns the cameras' mean
up to +z and puts the cameras 4 units out (as NeRF-synthetic's, around a [-1.5, 1.5]^3 box); 'unbounded' the
same with the farthest camera at 1 (mip-NeRF 360: the unit ball is uncontracted); 'forward' recentres on the
average camera (looking down -z) and scales the nearest bound to 1/0.75 (NeRF's LLFF recipe, so NDC's near plane
at 1 clips nothing). ``ndc_rays`` is NeRF's NDC ray warp; ``contract`` mip-NeRF 360's contraction (radius 2);
``render_unbounded`` renders through a hash-grid field and occupancy grid that both live in contracted space,
samples spaced linearly in distance up to 1 and in disparity beyond (nerfacto's piecewise sampler).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .volume import RenderOut, composite_packed

SPACES = ("auto", "object", "forward", "unbounded")
FORWARD_SPREAD = 0.85
"""Cameras count as forward-facing when the mean of their unit view directions is at least this long (all within
about 30 degrees of one direction)."""


@dataclass
class Similarity:
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    scale: float

    def apply_c2w(self, c2w: np.ndarray) -> np.ndarray:
        out = np.array(c2w, dtype=np.float64, copy=True)
        out[..., :3, :3] = self.rotation @ out[..., :3, :3]
        out[..., :3, 3] = self.scale * (out[..., :3, 3] @ self.rotation.T + self.translation)
        return out

    def apply_points(self, x: np.ndarray) -> np.ndarray:
        return self.scale * (np.asarray(x, dtype=np.float64) @ self.rotation.T + self.translation)


def view_dirs(c2w: np.ndarray) -> np.ndarray:
    return -np.asarray(c2w)[:, :3, 2]


def look_at_point(c2w: np.ndarray) -> np.ndarray:
    """The point nearest (least squares) to every camera's optical axis; the cameras' centroid when the axes are
    (nearly) parallel, as in a forward-facing capture."""
    o, d = np.asarray(c2w)[:, :3, 3], view_dirs(c2w)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    a, b = proj.sum(0), (proj @ o[:, :, None]).sum(0)[:, 0]
    if np.linalg.cond(a) > 1e4:
        return o.mean(0)
    p = np.linalg.solve(a, b)
    # A point behind the cameras (they look away from each other) is no look-at point.
    return p if (((p - o) * d).sum(-1) > 0).mean() > 0.5 else o.mean(0)


def camera_layout(c2w: np.ndarray) -> tuple[str, str]:
    """('forward' | 'unbounded', what the cameras do, in words) from the cameras' view directions."""
    mean = view_dirs(c2w).mean(0)
    spread = math.degrees(math.acos(min(1.0, float(np.linalg.norm(mean)))))
    if np.linalg.norm(mean) >= FORWARD_SPREAD:
        return "forward", (f"the cameras all look one way (view directions within about {spread:.0f} degrees of "
                           "their mean): forward-facing")
    return "unbounded", f"the cameras look from many sides (spread about {spread:.0f} degrees): a 360-degree capture"


def choose_space(c2w: np.ndarray) -> tuple[str, str]:
    """('forward' | 'unbounded', why) from the cameras' view directions, with how NeRF renders that space."""
    space, why = camera_layout(c2w)
    how = ("rendered in NDC as the NeRF paper does for LLFF" if space == "forward" else
           "rendered in mip-NeRF 360's contracted unbounded space")
    return space, f"{why}, {how}"


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation taking unit vector a to unit vector b (Rodrigues)."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-9:  # opposite: turn half a circle about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


def near_bound(c2w: np.ndarray, bounds: np.ndarray | None, points: np.ndarray | None) -> float | None:
    """The nearest scene depth: LLFF's bounds, else the 1st percentile of the sparse points' depths in front of the
    cameras; None without either."""
    if bounds is not None and len(bounds):
        return float(np.min(bounds))
    depth = _point_depths(c2w, points)
    return None if depth is None else float(np.percentile(depth, 1))


def _point_depths(c2w: np.ndarray, points: np.ndarray | None) -> np.ndarray | None:
    """Depths of the sparse points in front of the cameras, every camera with every point; None with fewer than
    10 points or none in front."""
    if points is None or len(points) < 10:
        return None
    depth = ((points[None] - c2w[:, None, :3, 3]) * view_dirs(c2w)[:, None]).sum(-1)
    depth = depth[depth > 0]
    return depth if len(depth) else None


def normalize(c2w: np.ndarray, space: str, bounds: np.ndarray | None = None,
              points: np.ndarray | None = None) -> tuple[Similarity, str]:
    """(the similarity into ``space``'s frame, a note on how the scale was chosen)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    pos = c2w[:, :3, 3]
    if space == "forward":
        back = c2w[:, :3, 2].mean(0)
        back /= np.linalg.norm(back)
        up = c2w[:, :3, 1].mean(0)
        right = np.cross(up, back)
        right /= np.linalg.norm(right)
        rot = np.stack([right, np.cross(back, right), back], 1).T  # world -> the average camera's frame
        near = near_bound(c2w, bounds, points)
        note = "the nearest bound"
        if near is None:  # no bounds, no points: half the distance to what the cameras look at
            near = 0.5 * float(np.linalg.norm(pos - look_at_point(c2w), axis=-1).mean())
            note = "half the cameras' distance to their look-at point (no bounds or points given)"
        scale = 1.0 / (0.75 * max(near, 1e-9))
        return Similarity(rot, -rot @ pos.mean(0), scale), f"scaled so {note} ({near:.3g}) sits at 1.33"
    centre = look_at_point(c2w)
    up = c2w[:, :3, 1].mean(0)
    rot = _rotation_between(up if np.linalg.norm(up) > 1e-6 else np.array([0, 0, 1.0]), np.array([0, 0, 1.0]))
    dist = np.linalg.norm(pos - centre, axis=-1)
    if space == "unbounded":
        return Similarity(rot, -rot @ centre, 1.0 / max(dist.max(), 1e-9)), "scaled so the farthest camera is at 1"
    return Similarity(rot, -rot @ centre, 4.0 / max(dist.mean(), 1e-9)), "scaled so the cameras are 4 units out"


# ----------------------------------------------------------------------------------------------------------
# Rays


def ndc_rays(o: torch.Tensor, d: torch.Tensor, fx: float, fy: float, width: int, height: int,
             near: float = 1.0, extent: tuple[float, float] = (1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """NeRF's normalised device coordinates (Appendix C): rays start on the near plane z = -near, and the frustum
    maps to [-1, 1]^3 with depth linear in disparity. Only the reference camera's frustum fills [-1, 1]^2 in x, y:
    the other views' rays reach beyond it, so x and y are divided by ``extent`` (``ndc_extent``) to keep every
    training ray inside the [-1, 1]^3 box the field and occupancy grid cover. Returns origins and unit directions
    (R, 3)."""
    dz = torch.clamp(d[:, 2], max=-1e-6)  # forward-facing rays look down -z
    t = -(near + o[:, 2]) / dz
    o = o + t[:, None] * d
    oz = torch.clamp(o[:, 2], max=-1e-6)
    ax, ay = -2 * fx / width, -2 * fy / height
    o_ndc = torch.stack([ax * o[:, 0] / oz, ay * o[:, 1] / oz, 1 + 2 * near / oz], -1)
    d_ndc = torch.stack([ax * (d[:, 0] / dz - o[:, 0] / oz), ay * (d[:, 1] / dz - o[:, 1] / oz), -2 * near / oz], -1)
    if extent != (1.0, 1.0):
        squash = o_ndc.new_tensor([1 / extent[0], 1 / extent[1], 1.0])
        o_ndc, d_ndc = o_ndc * squash, d_ndc * squash
    return o_ndc, torch.nn.functional.normalize(d_ndc, dim=-1)


def ndc_extent(c2w: torch.Tensor, fx: float, fy: float, width: int, height: int, near: float = 1.0,
               margin: float = 1.05) -> tuple[float, float]:
    """(x, y) half-extents in NDC (at least 1) that the rays of cameras ``c2w`` (N, 4, 4) reach between the near
    plane and infinity (z from -1 to 1), times ``margin`` for views between them. A camera's frustum is convex and a
    ray is a straight line in NDC, so its four corner rays at both ends bound it; fern's views reach about 1.43."""
    from .rays import pixel_rays

    corners = torch.tensor([[0.0, 0.0], [width, 0.0], [0.0, height], [width, height]])
    n = c2w.shape[0]
    px, py = corners[:, 0].repeat(n), corners[:, 1].repeat(n)
    o, d = pixel_rays(c2w.float().repeat_interleave(4, 0), px, py, fx, fy, width / 2, height / 2)
    o_ndc, d_ndc = ndc_rays(o, d, fx, fy, width, height, near)
    t_far = (1 - o_ndc[:, 2]) / d_ndc[:, 2].clamp_min(1e-9)  # where each corner ray reaches z = 1
    ends = torch.cat([o_ndc, o_ndc + t_far[:, None] * d_ndc])[:, :2].abs().amax(0)
    return tuple(max(1.0, margin * float(e)) for e in ends)


def contract(x: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360's contraction: identity inside the unit ball, ``(2 - 1/|x|) x/|x|`` outside (radius < 2)."""
    n = x.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return torch.where(n <= 1, x, (2 - 1 / n) * x / n)


def piecewise_distances(s: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """s in [0, 1] -> distance: linear from near to 1 for s < 1/2, linear in disparity from 1 to far beyond."""
    lin = near + (1 - near) * 2 * s
    disp = 1 / (1 - (2 * s - 1).clamp(0, 1) * (1 - 1 / far))
    return torch.where(s < 0.5, lin, disp)


def render_unbounded(field, grid, o: torch.Tensor, d: torch.Tensor, n_samples: int, background,
                     perturb: bool = False, near: float = 0.05, far: float = 1000.0,
                     early_stop_eps: float = 1e-4, max_samples: int = 0) -> RenderOut:
    """Renders rays through ``field`` and ``grid`` defined on contracted points (both over [-2, 2]^3).

    While training (autograd on) with ``max_samples``, only the leading rays whose samples fit are rendered, as
    ``occupancy.render_rays`` does; extras ``rays`` (rows of the result) and ``samples_per_ray`` as there."""
    n_rays, dev = o.shape[0], o.device
    edges = piecewise_distances(torch.linspace(0, 1, n_samples + 1, device=dev), near, far)
    u = torch.rand(n_rays, n_samples, device=dev) if perturb else torch.full((n_rays, n_samples), 0.5, device=dev)
    s = (torch.arange(n_samples, device=dev) + u) / n_samples
    t = piecewise_distances(s, near, far)
    delta = (edges[1:] - edges[:-1]).expand(n_rays, n_samples)
    x = contract(o[:, None] + t[..., None] * d[:, None])
    keep = grid.occupied(x.reshape(-1, 3)).reshape(n_rays, n_samples)
    ray_idx, k = keep.nonzero(as_tuple=True)
    t, delta, x = t[ray_idx, k], delta[ray_idx, k], x[ray_idx, k]
    if len(t):
        with torch.no_grad():
            sigma = field.density(x).float()
            pre = composite_packed(sigma, sigma.new_zeros(len(t), 3), t, delta, ray_idx, n_rays, 0.0)
            alive = (pre.extras["transmittance"] > early_stop_eps) & (sigma > 0)
        ray_idx, t, delta, x = ray_idx[alive], t[alive], delta[alive], x[alive]
    samples_per_ray = len(t) / max(n_rays, 1)
    n_used = n_rays
    if torch.is_grad_enabled() and max_samples and len(t) > max_samples:
        ends = torch.cumsum(torch.bincount(ray_idx, minlength=n_rays), 0)
        n_used = max(1, int(torch.searchsorted(ends, torch.tensor(max_samples, device=dev), right=True)))
        sel = ray_idx < n_used
        ray_idx, t, delta, x = ray_idx[sel], t[sel], delta[sel], x[sel]
        if isinstance(background, torch.Tensor) and background.dim() == 2:
            background = background[:n_used]
    sigma, rgb = field(x, d[ray_idx])
    out = composite_packed(sigma.float(), rgb.float(), t, delta, ray_idx, n_used, background)
    out.extras.update(rays=n_used, samples_per_ray=samples_per_ray)
    return out


def forward_path(c2w: torch.Tensor, n: int) -> torch.Tensor:
    """(n, 4, 4) cameras on a small circle in the average camera's plane, looking down -z (the NDC frame): the
    'turntable' of a forward-facing capture."""
    pos = c2w[:, :3, 3]
    r = float(pos[:, :2].std(0).mean()) or 0.1
    out = torch.eye(4).repeat(n, 1, 1)
    a = torch.arange(n) * (2 * math.pi / n)
    out[:, 0, 3], out[:, 1, 3], out[:, 2, 3] = r * torch.cos(a), r * torch.sin(a), float(pos[:, 2].mean())
    return out


def render_background(field, o: torch.Tensor, d: torch.Tensor, start: torch.Tensor, n_samples: int, radius: float,
                      perturb: bool = False, far_factor: float = 1000.0) -> RenderOut:
    """A background model for a bounded foreground (NeRF++'s idea, with mip-NeRF 360's contraction): ``field``
    (defined over [-2, 2]^3) sees ``contract(x / radius)`` at samples spaced linearly in disparity from ``start``
    (R,) (where each ray leaves the foreground's box) to ``far_factor * radius``; composited on black, so the
    caller puts it behind the foreground: rgb = fg + (1 - fg opacity) * bg."""
    from .volume import composite

    start = start.clamp_min(1e-2)[:, None]
    far = far_factor * radius
    u = torch.rand(o.shape[0], n_samples, device=o.device) if perturb else 0.5
    s = (torch.arange(n_samples, device=o.device) + u) / n_samples
    edges = torch.linspace(0, 1, n_samples + 1, device=o.device)
    disp = lambda s: 1 / (1 / start - s * (1 / start - 1 / far))  # noqa: E731
    t, bounds = disp(s), disp(edges)
    delta = bounds[:, 1:] - bounds[:, :-1]
    x = contract((o[:, None] + t[..., None] * d[:, None]) / radius)
    sigma, rgb = field(x.reshape(-1, 3), d[:, None].expand_as(x).reshape(-1, 3))
    return composite(sigma.float().reshape(t.shape), rgb.float().reshape(*t.shape, 3), t, delta, 0.0)


# ----------------------------------------------------------------------------------------------------------
# A bounded foreground and a background model behind it (VolSDF on real captures)


@dataclass
class ForegroundBox:
    """An axis-aligned box around what a capture's cameras look at, in the frame ``normalize`` put them in."""

    center: np.ndarray  # (3,)
    half: np.ndarray  # (3,) half extents
    why: str  # how it was chosen, in words

    def similarity(self, bound: float) -> Similarity:
        """The similarity (a shift and a uniform scale: an SDF stays a distance) that centres the box and fits its
        longest side to [-bound, bound]; the box is then ``[-half_in(bound), half_in(bound)]``."""
        return Similarity(np.eye(3), -np.asarray(self.center, dtype=np.float64), bound / float(np.max(self.half)))

    def half_in(self, bound: float) -> np.ndarray:
        return np.asarray(self.half, dtype=np.float64) * bound / float(np.max(self.half))


def far_bound(c2w: np.ndarray, bounds: np.ndarray | None, points: np.ndarray | None) -> float | None:
    """The far scene depth: the median of LLFF's far bounds, else the 99th percentile of the sparse points' depths in
    front of the cameras; None without either."""
    if bounds is not None and len(bounds):
        return float(np.median(np.asarray(bounds)[:, 1]))
    depth = _point_depths(c2w, points)
    return None if depth is None else float(np.percentile(depth, 99))


def foreground_box(c2w: np.ndarray, corners: np.ndarray, space: str, bounds: np.ndarray | None = None,
                   points: np.ndarray | None = None) -> ForegroundBox:
    """The box a bounded model (VolSDF's SDF) reconstructs, the rest of the scene left to a background model: the
    NeRF++ split that VolSDF uses for real scenes, with a box chosen from the capture instead of given.

    ``c2w`` (N, 4, 4) and ``points`` (P, 3) are in ``normalize(..., space)``'s frame, ``bounds`` (N, 2) scaled
    with them, ``corners`` (N, 4, 3) the unit directions of each camera's four image-corner rays.

    - 'forward' (the average camera at the origin looking down -z): the cameras' frusta between 0.9 times the
      nearest depth and the foreground's far depth, the geometric mean of the near and far depths (halfway in
      log depth: fern's near 1.33 and far 5.77 give 2.77, behind the fern and in front of the wall, as its SfM points
      show); no bounds or points: 3 times the near depth.
    - 'unbounded' (the cameras' look-at point at the origin): the cube inscribed in the sphere through the nearest
      camera (no camera inside it), shrunk to the sparse points within that sphere (99th percentile, 10 % margin)
      when there are at least 20 of them.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    pos = c2w[:, :3, 3]
    if space == "forward":
        near = near_bound(c2w, bounds, points)
        far = far_bound(c2w, bounds, points)
        if near is None:
            near = 0.5 * float(np.linalg.norm(pos - look_at_point(c2w), axis=-1).mean())
        if far is None or far <= near:
            fg_far, how = 3.0 * near, "3 times the near depth: no far bound or points"
        else:
            fg_far = max(math.sqrt(near * far), 1.5 * near)
            how = f"the geometric mean of the near and far depths, {near:.3g} and {far:.3g}"
        z0, z1 = 0.9 * near, fg_far
        # Where every corner ray meets the planes z = -z0 and z = -z1 (rays look down -z in this frame).
        dz = np.minimum(corners[..., 2], -1e-6)
        ends = [pos[:, None] + ((-z - pos[:, None, 2:3]) / dz[..., None]) * corners for z in (z0, z1)]
        xy = np.concatenate([e.reshape(-1, 3)[:, :2] for e in ends])
        lo = np.array([*xy.min(0), -z1])
        hi = np.array([*xy.max(0), -z0])
        return ForegroundBox((lo + hi) / 2, (hi - lo) / 2,
                             f"what the cameras see from depth {z0:.3g} (0.9 x the nearest) to {z1:.3g} ({how})")
    if space != "unbounded":
        raise ValueError(f"no foreground box for space {space!r}")
    dist = np.linalg.norm(pos, axis=-1)
    half = float(dist.min()) / math.sqrt(3)
    why = "the cube inside the sphere through the nearest camera"
    if points is not None:
        inside = points[np.linalg.norm(points, axis=-1) < dist.min()]
        if len(inside) >= 20:
            fit = 1.1 * float(np.percentile(np.abs(inside).max(-1), 99))
            if fit < half:
                half, why = max(fit, 0.25 * half), "the sparse points within the cameras (99th percentile, +10 %)"
    return ForegroundBox(np.zeros(3), np.full(3, half), why)


def fit_to_foreground(scene, bound: float) -> ForegroundBox:
    """Moves a real capture (a ``training.LoadedScene`` in the 'forward' or 'unbounded' space) so that the box
    ``foreground_box`` chooses from its training cameras' view frusta, bounds and sparse points is centred in
    [-bound, bound]^3 with its longest side spanning it (shifted and uniformly scaled: an SDF stays a distance);
    cameras, bounds and points are changed in place. Returns the box."""
    train = scene.train
    c2w = train.c2w.double().numpy()
    corners = []  # unit directions of each training image's four corner rays
    for i in range(len(train)):
        cam = train.camera(i)
        d = np.array([[(px - cam.cx) / cam.fx, -(py - cam.cy) / cam.fy, -1.0]
                      for px in (0, cam.width) for py in (0, cam.height)])
        d = d @ c2w[i, :3, :3].T
        corners.append(d / np.linalg.norm(d, axis=-1, keepdims=True))
    bounds = train.bounds.double().numpy() if train.bounds is not None else None
    xyz = scene.points[0] if scene.points is not None else None
    box = foreground_box(c2w, np.stack(corners), scene.space, bounds, xyz)
    sim = box.similarity(bound)
    for views in (train, scene.val):
        views.c2w = torch.from_numpy(sim.apply_c2w(views.c2w.double().numpy())).float()
        if views.bounds is not None:
            views.bounds = views.bounds * sim.scale
    if scene.points is not None:
        scene.points = (sim.apply_points(scene.points[0]), scene.points[1])
    return box


def box_sdf(x: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Signed distance to the box [-half, half] (negative inside)."""
    q = x.abs() - half
    return q.clamp_min(0).norm(dim=-1) + q.amax(-1).clamp_max(0)
