"""Losses and metrics between shapes: Chamfer distance, F-score, voxel IoU, mesh regularisers, mesh quality
(normal consistency with the true surface, self-intersections, edge-length spread).

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
def nearest(x: torch.Tensor, y: torch.Tensor, max_elems: int | None = None) -> torch.Tensor:
    """(B, N) index of the nearest point of y (B, M, 3) for each point of x (B, N, 3).

    One code path on every device: the sum of the three squared coordinate differences, exact (no matmul
    trick) and chunked over x so that each (B, chunk, M) block stays under ``max_elems``. On CUDA it made a
    single-view step 34x faster than ``cdist``'s exact kernel. On a CPU the blocks are kept to 2^20 elements
    (4 MiB, in cache): the same numbers, 2.7x faster than one large block for 2048 x 4096 points.
    """
    if max_elems is None:
        max_elems = 1 << 26 if x.is_cuda else 1 << 20
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


def precision_recall(pred: torch.Tensor, gt: torch.Tensor, thresholds=(0.01, 0.02, 0.03, 0.04, 0.05)
                     ) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """{tau: ((B,) precision, (B,) recall)}: the share of predicted points within tau of the truth, and of true
    points within tau of the prediction."""
    with torch.no_grad():
        dp, dg = nn_sq_dists(pred.float(), gt.float())
        dp, dg = dp.sqrt(), dg.sqrt()
        return {t: ((dp < t).float().mean(-1), (dg < t).float().mean(-1)) for t in thresholds}


def f_score(pred: torch.Tensor, gt: torch.Tensor,
            thresholds=(0.01, 0.02, 0.03, 0.04, 0.05)) -> dict[float, torch.Tensor]:
    """F-score at each distance threshold (Tatarchenko et al. 2019): the harmonic mean of precision (share
    of predicted points within tau of the truth) and recall (share of true points within tau of the
    prediction). Returns {tau: (B,) tensor in [0, 1]}."""
    return {t: f1(p, r) for t, (p, r) in precision_recall(pred, gt, thresholds).items()}


def f1(precision: torch.Tensor, recall: torch.Tensor) -> torch.Tensor:
    """Harmonic mean of precision and recall (0 where both are 0)."""
    p, r = precision, recall
    return torch.where(p + r > 0, 2 * p * r / (p + r).clamp_min(1e-12), torch.zeros_like(p))


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


# ------------------------------------------------------------------------------------- mesh quality metrics
def surface_normal_consistency(pred: torch.Tensor, pred_normals: torch.Tensor, gt: torch.Tensor,
                               gt_normals: torch.Tensor) -> torch.Tensor:
    """(B,) mean |cos| between each predicted surface sample's normal and the normal of its nearest true sample
    (1: the surface is oriented as the truth everywhere; about 0.5 for random directions). The absolute value
    ignores orientation, so inward-facing or unoriented normals score as outward ones.

    Args:
        pred, pred_normals: (B, N, 3) samples on the predicted surface and their unit normals.
        gt, gt_normals: (B, M, 3) samples on the true surface and their unit normals.
    """
    pred, pred_normals, gt, gt_normals = map(_batched, (pred, pred_normals, gt, gt_normals))
    with torch.no_grad():
        idx = nearest(pred.float(), gt.float())
        g = torch.gather(gt_normals.float(), 1, idx[..., None].expand(-1, -1, 3))
        p = torch.nn.functional.normalize(pred_normals.float(), dim=-1)
        return (p * torch.nn.functional.normalize(g, dim=-1)).sum(-1).abs().mean(-1)


def edge_length_spread(verts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(B,) standard deviation over mean of the edge lengths: near 0 for an evenly meshed surface, larger where
    some edges are stretched into spikes and others collapsed."""
    v = _batched(verts)
    with torch.no_grad():
        lengths = (v[:, edges[:, 0]] - v[:, edges[:, 1]]).norm(dim=-1).double()
        return (lengths.std(-1) / lengths.mean(-1).clamp_min(1e-12)).to(v.dtype)


def _orient(a, b, c, d):
    """Sign-carrying volume of the tetrahedron (a, b, c, d): det[b - a, c - a, d - a] (broadcasts over (..., 3))."""
    return (torch.linalg.cross(b - a, c - a, dim=-1) * (d - a)).sum(-1)


def _segment_hits_triangle(p, q, a, b, c):
    """(...,) True where the segment pq passes through triangle abc, its edges included (p and q strictly on
    either side of its plane: a segment that only touches the plane does not count)."""
    s1, s2 = _orient(a, b, c, p), _orient(a, b, c, q)
    straddle = s1 * s2 < 0
    e1, e2, e3 = _orient(p, q, a, b), _orient(p, q, b, c), _orient(p, q, c, a)
    inside = ((e1 >= 0) & (e2 >= 0) & (e3 >= 0)) | ((e1 <= 0) & (e2 <= 0) & (e3 <= 0))
    return straddle & inside


def triangles_intersect(t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    """(P,) True where triangle t1[i] (P, 3, 3) and t2[i] cross: an edge of one passes through the other.

    For triangles in general position this is exact (the segment where two crossing triangles meet ends on
    edges of them); coplanar overlaps and a vertex or edge that only touches the other's plane are not counted.
    """
    t1, t2 = t1.double(), t2.double()
    hit = torch.zeros(t1.shape[0], dtype=torch.bool, device=t1.device)
    for s, t in ((t1, t2), (t2, t1)):
        a, b, c = t.unbind(1)
        for i, j in ((0, 1), (1, 2), (2, 0)):
            hit |= _segment_hits_triangle(s[:, i], s[:, j], a, b, c)
    return hit


@torch.no_grad()
def self_intersecting_faces(verts: torch.Tensor, faces: torch.Tensor, chunk: int = 256,
                            pair_chunk: int = 1 << 18) -> torch.Tensor:
    """(F,) bool: faces that cross at least one other face sharing no vertex with them (neighbours, which
    always touch, are not tested). Sweep and prune picks candidate pairs: faces sorted by their boxes' lowest
    x, each paired with the later ones whose box starts before its own ends (``chunk`` faces at a time), kept
    where the boxes overlap in y and z too; the exact test (``triangles_intersect``) runs on the candidates,
    ``pair_chunk`` at a time.

    Args:
        verts: (V, 3) one mesh.
        faces: (F, 3) long.
    """
    tri = verts.double()[faces]  # (F, 3, 3)
    lo, hi = tri.amin(1), tri.amax(1)
    order = torch.argsort(lo[:, 0])
    lo_x = lo[order, 0].contiguous()
    end = torch.searchsorted(lo_x, hi[order, 0].contiguous(), right=True)  # sorted faces [k+1, end) overlap in x
    F = faces.shape[0]
    hit = torch.zeros(F, dtype=torch.bool, device=verts.device)
    for s in range(0, F, chunk):
        k = torch.arange(s, min(s + chunk, F), device=verts.device)
        count = (end[k] - k - 1).clamp_min(0)
        first = k.repeat_interleave(count)
        starts = (torch.cumsum(count, 0) - count).repeat_interleave(count)
        offset = torch.arange(int(count.sum()), device=verts.device) - starts
        ii, jj = order[first], order[first + 1 + offset]
        keep = ((lo[ii, 1:] <= hi[jj, 1:]) & (hi[ii, 1:] >= lo[jj, 1:])).all(-1)
        ii, jj = ii[keep], jj[keep]
        shared = (faces[ii][:, :, None] == faces[jj][:, None, :]).any(-1).any(-1)
        ii, jj = ii[~shared], jj[~shared]
        for p in range(0, len(ii), pair_chunk):
            a, b = ii[p:p + pair_chunk], jj[p:p + pair_chunk]
            crossed = triangles_intersect(tri[a], tri[b])
            hit[a[crossed]] = True
            hit[b[crossed]] = True
    return hit


def self_intersection_fraction(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B,) share of faces that cross another, non-adjacent face (``self_intersecting_faces``) of each mesh
    (B, V, 3) sharing (F, 3) ``faces``: 0 for an embedded surface, larger where it folds through itself."""
    v = _batched(verts)
    return torch.stack([self_intersecting_faces(m, faces).float().mean() for m in v])


# ---------------------------------------------------------------------------- voxel and point losses (issue 21)
def occupancy_pos_weight(occ: torch.Tensor, power: float = 1.0, max_weight: float = 50.0) -> torch.Tensor:
    """(B,) weight of each grid's occupied cells for ``balanced_bce``: ((1 - f) / f) ** power, f the grid's
    occupied fraction, so that (at power 1) its solid cells weigh as much in total as its empty ones. Capped at
    ``max_weight`` (a grid with a handful of solid cells); 1 for an empty or full grid."""
    f = _batched_grid(occ).float().flatten(1).mean(-1)
    w = ((1 - f) / f.clamp_min(1e-6)).clamp(1.0 / max_weight, max_weight) ** power
    return torch.where((f > 0) & (f < 1), w, torch.ones_like(w))


def _batched_grid(x: torch.Tensor) -> torch.Tensor:
    return x if x.dim() == 4 else x[None]


def balanced_bce(logits: torch.Tensor, occ: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy of (B, R, R, R) occupancy logits in which each grid's solid cells are weighted by
    ``occupancy_pos_weight`` (power 0: plain BCE), then normalised by the weights' sum, so predicting
    "empty everywhere" no longer wins because most cells are empty. Returns the batch mean (a scalar).

    Closed form: for a grid with n1 solid and n0 empty cells all predicted at probability p, power 1 gives
    -(n0 * log(1 - p) + n0 * log p) / (2 n0) (solid weight n0 / n1), minimised at p = 1/2, where plain BCE's
    minimum is at p = n1 / (n0 + n1).
    """
    import torch.nn.functional as F

    logits, occ = _batched_grid(logits).float(), _batched_grid(occ).float()
    w1 = occupancy_pos_weight(occ, power).view(-1, *[1] * (occ.dim() - 1))
    weight = torch.where(occ > 0.5, w1, torch.ones_like(occ))
    per_cell = F.binary_cross_entropy_with_logits(logits, occ, reduction="none")
    return ((per_cell * weight).flatten(1).sum(-1) / weight.flatten(1).sum(-1)).mean()


def soft_iou_loss(logits: torch.Tensor, occ: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft IoU of (B, R, R, R) occupancy logits against the true grid (Rahman & Wang 2016; the IoU with
    probabilities in place of 0/1), batch mean. Empty space counts for nothing: only the solid cells and the
    predicted mass enter. ``eps`` (in cells) keeps an empty grid finite: 0 for exact predictions of any grid.

    Closed form: probabilities equal to the truth give 0; all-empty predictions of a non-empty grid of n
    cells give 1 - eps / (n + eps).
    """
    p = torch.sigmoid(_batched_grid(logits).float()).flatten(1)
    t = _batched_grid(occ).float().flatten(1)
    inter = (p * t).sum(-1)
    union = (p + t - p * t).sum(-1)
    return (1 - (inter + eps) / (union + eps)).mean()


def density_aware_chamfer(x: torch.Tensor, y: torch.Tensor, alpha: float = 1000.0, n_lambda: float = 1.0
                          ) -> torch.Tensor:
    """(B,) density-aware Chamfer distance (Wu et al. 2021, "DCD"), with the squared distances of its
    reference code:

        1/2 [ mean_x (1 - w_x exp(-alpha |x - y_x|^2)) + the same from y to x ],

    y_x the nearest point of y to x and w_x = min(1, max(1, |x| / |y|) / n_x^lambda), n_x the number of
    points of x whose nearest is y_x (the reference's ``non_reg`` weights, its expected count max(1, |x|/|y|)
    dividing, capped at 1 so that every term lies in [0, 1]). A far outlier costs at most 1 / |x| (Chamfer:
    its squared distance, unbounded), and points piled onto one target point share its credit, so clumps
    cost where Chamfer does not see them. Identical sets give 0. Differentiable in both sets through the
    distances (the counts are constants, as in the paper). alpha 1000 (the paper's) on objects of size 1:
    a point 0.03 away keeps exp(-0.9) = 0.41 of its credit, one 0.1 away none.
    """
    x, y = _batched(x).float(), _batched(y).float()
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    ix, iy = nearest(x, y), nearest(y, x)
    dx = (x - torch.gather(y, 1, ix[..., None].expand(-1, -1, 3))).pow(2).sum(-1)
    dy = (y - torch.gather(x, 1, iy[..., None].expand(-1, -1, 3))).pow(2).sum(-1)
    with torch.no_grad():  # n_{y_x}: how many x share x's nearest y (and back), per sample
        cx = torch.zeros(B, M, device=x.device).scatter_add_(1, ix, torch.ones_like(dx))
        cy = torch.zeros(B, N, device=x.device).scatter_add_(1, iy, torch.ones_like(dy))
        wx = (max(1.0, N / M) / torch.gather(cx, 1, ix).pow(n_lambda)).clamp_max(1.0)
        wy = (max(1.0, M / N) / torch.gather(cy, 1, iy).pow(n_lambda)).clamp_max(1.0)
    lx = (1 - torch.exp(-alpha * dx) * wx).mean(-1)
    ly = (1 - torch.exp(-alpha * dy) * wy).mean(-1)
    return (lx + ly) / 2


def knn_dists(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, k) distances from each point of x (B, N, 3) to its k nearest other points (exact, differentiable
    in x; the neighbour choice is not)."""
    x = _batched(x).float()
    with torch.no_grad():  # the matmul form picks the neighbours; their distances are recomputed exactly below
        d = torch.cdist(x, x)
        d.diagonal(dim1=1, dim2=2).fill_(float("inf"))
        idx = d.topk(k, dim=-1, largest=False).indices  # (B, N, k)
    nb = torch.gather(x[:, None].expand(-1, x.shape[1], -1, -1), 2, idx[..., None].expand(-1, -1, -1, 3))
    return (x[:, :, None] - nb).pow(2).sum(-1).clamp_min(1e-12).sqrt()


def repulsion_loss(x: torch.Tensor, radius: float, k: int = 4) -> torch.Tensor:
    """(B,) repulsion between the points of a predicted cloud (after PU-Net, Yu et al. 2018): for each point
    and each of its k nearest neighbours closer than ``radius``, (1 - d / radius)^2; mean over the points.
    A compactly supported kernel in place of PU-Net's Gaussian: exactly 0 once every neighbour is ``radius``
    or more away, 1 per coincident neighbour, with a gradient that pushes clumped points apart (so fewer
    points are spent on one spot and left over to stray)."""
    d = knn_dists(x, k)
    return (1 - d / radius).clamp_min(0).pow(2).sum(-1).mean(-1)


def stray_fraction(pred: torch.Tensor, gt: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """(B,) share of predicted points farther than ``tau`` from every true surface sample (1 - precision at
    tau): the stray points of a cloud. Objects are normalised to a longest side of 1, so 0.05 is 5 % of it."""
    with torch.no_grad():
        dp, _ = nn_sq_dists(pred.float(), gt.float())
        return (dp > tau * tau).float().mean(-1)
