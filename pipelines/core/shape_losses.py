"""Losses and metrics between shapes: Chamfer distance, F-score, voxel IoU, mesh regularisers.

Contract: point sets are (B, N, 3) tensors (unbatched (N, 3) is accepted where noted); per-sample results
are (B,) tensors so callers can average or report per shape. Nearest neighbours are found exactly (no matmul
trick, so TF32 cannot perturb them) in chunks that bound memory, then distances are recomputed on the
gathered neighbours, which keeps the gradient path O(B * N). Mesh regularisers take (B, V, 3) verts that
share one (F, 3) ``faces``, as PyTorch3D's ``mesh_laplacian_smoothing`` ("uniform"), ``mesh_edge_loss`` and
``mesh_normal_consistency`` do.
"""
from __future__ import annotations

import torch


def _batched(x: torch.Tensor) -> torch.Tensor:
    return x if x.dim() == 3 else x[None]


@torch.no_grad()
def nearest(x: torch.Tensor, y: torch.Tensor, max_elems: int = 1 << 26) -> torch.Tensor:
    """(B, N) index of the nearest point of y (B, M, 3) for each point of x (B, N, 3).

    One code path on every device: the sum of the three squared coordinate differences, exact (no matmul
    trick) and chunked over x so that each (B, chunk, M) block stays under ``max_elems``. On CUDA it made a
    single-view step 34x faster than ``cdist``'s exact kernel; on a CPU it costs about 1.4x ``cdist``.
    """
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    chunk = max(1, max_elems // max(1, B * M))
    out = torch.empty(B, N, dtype=torch.long, device=x.device)
    xf, yf = x.float(), y.float()
    for s in range(0, N, chunk):
        xs = xf[:, s:s + chunk, None, :]  # (B, n, 1, 3) against yf[:, None] (B, 1, M, 3)
        d = (xs[..., 0] - yf[:, None, :, 0]).square_()
        diff = torch.empty_like(d)
        for k in (1, 2):
            torch.sub(xs[..., k], yf[:, None, :, k], out=diff)
            d.addcmul_(diff, diff)
        out[:, s:s + chunk] = d.argmin(-1)
    return out


def nn_sq_dists(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance from each point of x to its nearest in y (B, N), and from y to x (B, M).

    Differentiable w.r.t. both point sets (the neighbour choice is not, as in every Chamfer loss).
    """
    x, y = _batched(x), _batched(y)
    ix, iy = nearest(x, y), nearest(y, x)
    gx = torch.gather(y, 1, ix[..., None].expand(-1, -1, 3))
    gy = torch.gather(x, 1, iy[..., None].expand(-1, -1, 3))
    return (x - gx).pow(2).sum(-1), (y - gy).pow(2).sum(-1)


def chamfer_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) symmetric Chamfer distance with squared distances: mean_x min_y |x-y|^2 + mean_y min_x |x-y|^2
    (PyTorch3D's ``chamfer_distance`` with its default reductions, per sample)."""
    dx, dy = nn_sq_dists(x, y)
    return dx.mean(-1) + dy.mean(-1)


def f_score(pred: torch.Tensor, gt: torch.Tensor,
            thresholds=(0.01, 0.02, 0.03, 0.04, 0.05)) -> dict[float, torch.Tensor]:
    """F-score at each distance threshold (Tatarchenko et al. 2019): the harmonic mean of precision (share
    of predicted points within tau of the truth) and recall (share of true points within tau of the
    prediction). Returns {tau: (B,) tensor in [0, 1]}."""
    with torch.no_grad():
        dp, dg = nn_sq_dists(pred.float(), gt.float())
        dp, dg = dp.sqrt(), dg.sqrt()
        out = {}
        for t in thresholds:
            p = (dp < t).float().mean(-1)
            r = (dg < t).float().mean(-1)
            out[t] = torch.where(p + r > 0, 2 * p * r / (p + r).clamp_min(1e-12), torch.zeros_like(p))
        return out


def voxel_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) intersection over union of (B, R, R, R) boolean grids (1 where both are empty)."""
    pred, gt = pred.bool().flatten(1), gt.bool().flatten(1)
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


# --------------------------------------------------------------------------------------- mesh regularisers
def uniform_laplacian(verts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) uniform Laplacian: the mean of each vertex's neighbours minus the vertex."""
    v = _batched(verts)
    a, b = edges[:, 0], edges[:, 1]
    nbr_sum = torch.zeros_like(v).index_add_(1, a, v[:, b]).index_add_(1, b, v[:, a])
    deg = torch.zeros(v.shape[1], device=v.device, dtype=v.dtype)
    deg = deg.index_add_(0, a, torch.ones_like(a, dtype=v.dtype)).index_add_(0, b, torch.ones_like(b, dtype=v.dtype))
    return nbr_sum / deg.clamp_min(1)[None, :, None] - v


def laplacian_smoothing(verts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean over vertices (and the batch) of the uniform Laplacian's length: 0 for a flat, evenly spaced
    patch; larger where the surface folds."""
    return uniform_laplacian(verts, edges).norm(dim=-1).mean()


def edge_loss(verts: torch.Tensor, edges: torch.Tensor, target_length: float = 0.0) -> torch.Tensor:
    """Mean of (|edge| - target_length)^2: discourages long, stretched edges."""
    v = _batched(verts)
    return ((v[:, edges[:, 0]] - v[:, edges[:, 1]]).norm(dim=-1) - target_length).pow(2).mean()


def edge_face_pairs(faces: torch.Tensor) -> torch.Tensor:
    """(E, 2) the two faces that share each edge of a closed manifold mesh (every edge in exactly 2 faces)."""
    F = faces.shape[0]
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
    _, inverse, counts = torch.unique(edges, dim=0, return_inverse=True, return_counts=True)
    if not bool((counts == 2).all()):
        raise ValueError("edge_face_pairs needs a closed manifold mesh (each edge shared by two faces)")
    order = torch.argsort(inverse, stable=True)
    face_of = torch.arange(3 * F, device=faces.device) % F
    return face_of[order].view(-1, 2)


def normal_consistency(verts: torch.Tensor, faces: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean over edges of 1 - cos(angle between the normals of the two faces that meet there)."""
    v = _batched(verts)
    v0, v1, v2 = v[:, faces[:, 0]], v[:, faces[:, 1]], v[:, faces[:, 2]]
    n = torch.nn.functional.normalize(torch.linalg.cross(v1 - v0, v2 - v0, dim=-1), dim=-1)
    return (1 - (n[:, pairs[:, 0]] * n[:, pairs[:, 1]]).sum(-1)).mean()
