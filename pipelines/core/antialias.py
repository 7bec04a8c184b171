"""Analytic silhouette antialiasing for the rasterizer, in the manner of nvdiffrast (Laine et al. 2020), so
that silhouettes pass gradients to vertex positions. Re-exported by ``raster.py``, whose ``Fragments`` it reads.

Contract: ``antialias(color, frags, screen, faces)`` -> the colour with each silhouette pixel pair blended by
where the silhouette edge crosses between the two pixel centres; ``face_neighbours(faces)`` is the edge
adjacency it needs (compute once per topology).
"""
from __future__ import annotations

import torch


def face_neighbours(faces: torch.Tensor) -> torch.Tensor:
    """(F, 3) long: the face across edge k = (faces[:, k], faces[:, k + 1 mod 3]), -1 where that edge is a
    boundary or is shared by more than two faces (both count as silhouette edges for ``antialias``).

    Depends on the faces only: compute it once per topology (the DMTet mesh changes it every step).
    """
    faces = faces.long()
    n_faces = faces.shape[0]
    out = torch.full((3 * n_faces,), -1, dtype=torch.long, device=faces.device)
    if n_faces == 0:
        return out.view(0, 3)
    a, b = faces, faces.roll(-1, dims=1)
    n = int(faces.max()) + 1
    key = (torch.minimum(a, b) * n + torch.maximum(a, b)).reshape(-1)
    order = torch.argsort(key)
    same = key[order][1:] == key[order][:-1]  # (3F - 1,) this sorted edge equals the next one
    no = same.new_zeros(1)
    pair = (same & ~torch.cat([no, same[:-1]]) & ~torch.cat([same[1:], no])).nonzero().squeeze(1)
    first, second = order[pair], order[pair + 1]  # exactly two faces on this edge
    out[first] = torch.div(second, 3, rounding_mode="floor")
    out[second] = torch.div(first, 3, rounding_mode="floor")
    return out.view(n_faces, 3)


@torch.no_grad()
def _find_crossings(ids, depth, scr, faces, nb, facing, B, H, W, V, rings):
    """The adjacent pixel pairs that a silhouette edge crosses. Vertical pairs are handled as horizontal ones
    with x and y swapped (as nvdiffrast does), so both directions go through one pass. For each pair found:
    the front and back pixel (flat), the front pixel's centre (swapped for vertical pairs), the sign from
    front to back along the pair, the edge's two rows of ``scr``, and whether the pair is vertical. The
    front pixel's face is tried first, then its neighbours ring by ring, up to ``rings``."""
    grid = ids.view(B, H, W)
    pairs = []
    for vertical, diff, step in ((0, grid[:, :, :-1] != grid[:, :, 1:], 1), (1, grid[:, :-1, :] != grid[:, 1:, :], W)):
        b_, y_, x_ = diff.nonzero().unbind(1)
        p0 = (b_ * H + y_) * W + x_
        pairs.append(torch.stack([b_, p0, p0 + step, torch.full_like(p0, vertical)], 1))
    b_, p0, p1, vert = torch.cat(pairs).unbind(1)
    front0 = (ids[p0] >= 0) & (depth[p0] <= depth[p1])
    pf, pb = torch.where(front0, p0, p1), torch.where(front0, p1, p0)
    front, back = ids[pf], ids[pb]
    # Most pairs lie inside one surface: the back pixel shows a neighbour of the front face (across an edge,
    # or a vertex: two rings). Integer tests drop them before any geometry is computed.
    ring1 = nb[front]
    same = (ring1 == back[:, None]).any(1)
    if rings >= 2:
        ring2 = torch.where(ring1[..., None] >= 0, nb[ring1.clamp_min(0)], -1)
        same |= (ring2 == back[:, None, None]).flatten(1).any(1)
    keep = ((back < 0) | ~same).nonzero().squeeze(1)  # (an empty back pixel would match a missing neighbour)
    state = torch.stack([b_, pf, pb, back, front0.long(), vert], 1)[keep]  # (K, 6), filtered as pairs settle
    cur = front[keep, None]  # (K, R): this ring's faces, -1 past a boundary
    found = []
    for ring in range(rings + 1):
        b_, pf, pb, back, front0, vert = state.unbind(1)
        loc = pf % (H * W)
        centre = torch.stack([loc % W, torch.div(loc, W, rounding_mode="floor")], -1).to(scr.dtype) + 0.5
        swap = vert.bool()
        centre = torch.where(swap[:, None], centre.flip(-1), centre)
        sgn = (2 * front0 - 1).to(scr.dtype)  # from the front pixel towards the back one
        g = cur.clamp_min(0)
        corner = faces[g] + (b_ * V)[:, None, None]  # (K, R, 3) rows of scr
        tri = scr[corner]  # (K, R, 3, 2), then x <-> y for vertical pairs: the pair runs along x
        tri = torch.where(swap[:, None, None, None], tri.flip(-1), tri)
        ea, eb, opp = tri, tri.roll(-1, dims=2), tri.roll(-2, dims=2)  # edge k: corner k -> k + 1, opposite one
        nbg = nb[g]
        silhouette = (cur[..., None] >= 0) & ((nbg < 0) | (facing[b_[:, None, None], nbg.clamp_min(0)]
                                                           != facing[b_[:, None], g][..., None]))
        c = centre[:, None, None]
        da, db = ea[..., 1] - c[..., 1], eb[..., 1] - c[..., 1]
        straddle = (da * db <= 0) & (da != db)
        s = da / torch.where(straddle, da - db, torch.ones_like(da))
        dist = (ea[..., 0] + s * (eb[..., 0] - ea[..., 0]) - c[..., 0]) * sgn[:, None, None]
        e = eb - ea
        steep = e[..., 1].abs() > e[..., 0].abs()  # closer to perpendicular to the pair than to parallel
        # The edge's face must lie on the front pixel's side of it (always true for the front face itself).
        side = lambda p: e[..., 0] * (p[..., 1] - ea[..., 1]) - e[..., 1] * (p[..., 0] - ea[..., 0])  # noqa: E731
        same_side = side(opp) * side(c.expand_as(ea)) >= 0
        ok = (silhouette & straddle & steep & same_side & (dist >= 0) & (dist <= 1)).flatten(1)  # (K, R * 3)
        hit = ok.any(1)
        idx = hit.nonzero().squeeze(1)
        first = ok[idx].to(torch.int32).argmax(1)  # the first valid edge of this ring
        r, k = torch.div(first, 3, rounding_mode="floor"), first % 3
        found.append((pf[idx], pb[idx], centre[idx], sgn[idx], corner[idx, r, k], corner[idx, r, (k + 1) % 3],
                      swap[idx]))
        if ring == rings:
            break
        # Next ring; a pair whose back pixel shows one of its faces lies on one continuing surface: dropped.
        cur = torch.where(cur[..., None] >= 0, nb[g], -1).flatten(1)
        keep = (~hit & ((back < 0) | ~(cur == back[:, None]).any(1))).nonzero().squeeze(1)
        if len(keep) == 0:
            break
        state, cur = state[keep], cur[keep]
    return tuple(torch.cat(parts) for parts in zip(*found))


def antialias(color: torch.Tensor, frags, screen: torch.Tensor, faces: torch.Tensor,
              neighbours: torch.Tensor | None = None, rings: int = 4) -> torch.Tensor:
    """Analytic silhouette antialiasing in the manner of nvdiffrast's ``antialias`` (Laine et al. 2020).

    For each pair of horizontally or vertically adjacent pixels showing different faces, the face of the
    nearer pixel is tested for a silhouette edge (a boundary edge, or one whose neighbour face turns the
    other way on screen) that crosses the segment between the two pixel centres and is closer to
    perpendicular than to parallel to it (so each edge is handled by one pair direction). With the crossing
    at distance d in [0, 1] from the nearer pixel's centre, the face covers about d - 1/2 of the other pixel
    (if d > 1/2) or leaves 1/2 - d of its own pixel to the background (if d < 1/2); that pixel's colour moves
    towards the other's by |d - 1/2|. The blend is continuous as an edge sweeps over pixel centres, and d is
    a differentiable function of the edge's screen positions, so silhouettes pass gradients to vertices
    (a z-buffer alone gives them none). Apply it to the final shaded colour (and alpha), last.

    Unlike nvdiffrast, when the nearer pixel's own face has no such edge, its neighbours are searched ring by
    ring, up to ``rings`` edge steps away (for pairs whose other pixel does not show one of them, i.e. where
    the surface does not simply go on): on a fine mesh the faces on the rim are foreshortened to slivers that
    rarely cover a pixel centre. Measured on a 5k-face icosphere at 512 px: the mean coverage error of the
    silhouette's pixels against 8x8 supersampling is 0.22 without antialiasing, 0.18 with ``rings=0``
    (nvdiffrast's rule), 0.07 with 2 and 0.025 with 4 (the default); d(coverage)/d(scale) from autograd is
    14 % of the finite difference with ``rings=0`` and 99 % with 4 (256 px: 8 % and 99 %).

    Args:
        color: ([B,] H, W, C) shaded image (concatenate alpha as a channel to get soft coverage).
        frags: the ``Fragments`` the colour was shaded from.
        screen: ([B,] V, 2) pixel coordinates from ``project`` (u right, v down, pixel centres at +0.5), or
            ([B,] V, 4) homogeneous clip coordinates in nvdiffrast's convention (x/w, y/w in [-1, 1], y up).
            Differentiable: the positional gradients arrive here.
        faces: (F, 3) long, the faces that were rasterized.
        neighbours: ``face_neighbours(faces)``, if already computed.
        rings: how many rings of neighbouring faces to search for the silhouette edge.

    Returns:
        ([B,] H, W, C) antialiased colour.
    """
    batched = frags.face_idx.dim() == 3
    ids = (frags.face_idx if batched else frags.face_idx[None]).reshape(-1)
    B, H, W = (frags.face_idx.shape if batched else (1, *frags.face_idx.shape))
    C = color.shape[-1]
    col = color.reshape(B * H * W, C)
    scr = screen if batched else screen[None]
    if scr.shape[-1] == 4:  # clip -> pixels
        ndc = scr[..., :2] / scr[..., 3:4]
        scr = torch.stack([(ndc[..., 0] + 1) * (W / 2), (1 - ndc[..., 1]) * (H / 2)], -1)
    V = scr.shape[1]
    scr = scr.reshape(B * V, 2)
    faces = faces.to(device=color.device, dtype=torch.long)
    nb = face_neighbours(faces) if neighbours is None else neighbours.to(faces.device)
    with torch.no_grad():
        depth = (frags.depth if batched else frags.depth[None]).reshape(-1)
        t = scr.detach().view(B, V, 2)[:, faces]  # (B, F, 3, 2)
        facing = ((t[..., 1, 0] - t[..., 0, 0]) * (t[..., 2, 1] - t[..., 0, 1])
                  - (t[..., 1, 1] - t[..., 0, 1]) * (t[..., 2, 0] - t[..., 0, 0])) > 0  # (B, F) screen winding

    pf, pb, centre, sgn, ia, ib, swap = _find_crossings(ids, depth, scr.detach(), faces, nb, facing, B, H, W, V,
                                                        rings)
    # The crossing again, under autograd, for the chosen edges only (x <-> y for vertical pairs).
    a, b = scr.index_select(0, ia), scr.index_select(0, ib)
    a, b = torch.where(swap[:, None], a.flip(-1), a), torch.where(swap[:, None], b.flip(-1), b)
    s = (a[:, 1] - centre[:, 1]) / (a[:, 1] - b[:, 1])
    d = (a[:, 0] + s * (b[:, 0] - a[:, 0]) - centre[:, 0]) * sgn
    w = 0.5 - d
    own = w.detach() > 0  # the front pixel is partly background, else the back pixel partly front face
    tgt, src = torch.where(own, pf, pb), torch.where(own, pb, pf)
    delta = w.abs()[:, None].to(col.dtype) * (col.index_select(0, src) - col.index_select(0, tgt))
    out = col.index_add(0, tgt, delta)
    return out.view(color.shape)
