"""The multiresolution hash encoding fused into two Triton kernels: forward (hash or dense index, gather, and
trilinear interpolation of the 8 cell corners of every level) and backward (the feature gradients scattered
into the table with atomic adds). Nothing per (point, level, corner) is stored: the backward recomputes the
indices and weights from the points.

Contract: ``hash_encode(x, table, res, offsets, n_dense, mask)`` equals ``encodings.HashGridEncoding``'s
PyTorch path (the reference) for float32 points (N, 3) in [0, 1]^3 and a float32 table (T, F), F a power of two;
it is differentiable with respect to the table only (points that need a gradient, as in an analytic eikonal
term, take the reference path). Importing this module imports triton; ``encodings`` does so lazily, on CUDA,
after checking the kernels against the reference once (``TRITON_INTERPRET=1`` runs them on the CPU, for tests).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 128


@triton.jit
def _corner(ix, iy, iz, fx, fy, fz, s, dense, mask, C: tl.constexpr):
    """Flat table index (within the level) and trilinear weight of corner C (bits: x, y, z) of each cell."""
    bx: tl.constexpr = (C >> 2) & 1
    by: tl.constexpr = (C >> 1) & 1
    bz: tl.constexpr = C & 1
    cx = ix + bx
    cy = iy + by
    cz = iz + bz
    dense_idx = cx.to(tl.int64) + s * (cy.to(tl.int64) + s * cz.to(tl.int64))
    # Instant-NGP's spatial hash in uint32 arithmetic (wrapping products), masked to the table size.
    hashed = (cx.to(tl.uint32) ^ (cy.to(tl.uint32) * 2654435761) ^ (cz.to(tl.uint32) * 805459861)) & mask
    idx = tl.where(dense, dense_idx, hashed.to(tl.int64))
    w = (fx * bx + (1.0 - fx) * (1 - bx)) * (fy * by + (1.0 - fy) * (1 - by)) * (fz * bz + (1.0 - fz) * (1 - bz))
    return idx, w


@triton.jit
def _cells(x_ptr, rows, m, res_ptr, lvl):
    r = tl.load(res_ptr + lvl)
    rf = r.to(tl.float32)
    px = tl.minimum(tl.maximum(tl.load(x_ptr + rows * 3 + 0, mask=m, other=0.0), 0.0), 1.0) * rf
    py = tl.minimum(tl.maximum(tl.load(x_ptr + rows * 3 + 1, mask=m, other=0.0), 0.0), 1.0) * rf
    pz = tl.minimum(tl.maximum(tl.load(x_ptr + rows * 3 + 2, mask=m, other=0.0), 0.0), 1.0) * rf
    ix = tl.minimum(tl.floor(px).to(tl.int32), r - 1)
    iy = tl.minimum(tl.floor(py).to(tl.int32), r - 1)
    iz = tl.minimum(tl.floor(pz).to(tl.int32), r - 1)
    return ix, iy, iz, px - ix.to(tl.float32), py - iy.to(tl.float32), pz - iz.to(tl.float32), r


@triton.jit
def _hash_forward(x_ptr, table_ptr, out_ptr, res_ptr, off_ptr, n, n_dense, mask,
                  L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr):
    lvl = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = rows < n
    cols = tl.arange(0, F)
    ix, iy, iz, fx, fy, fz, r = _cells(x_ptr, rows, m, res_ptr, lvl)
    s = (r + 1).to(tl.int64)
    off = tl.load(off_ptr + lvl)
    dense = lvl < n_dense
    umask = mask.to(tl.uint32)
    acc = tl.zeros([BLOCK, F], dtype=tl.float32)
    for c in tl.static_range(8):
        idx, w = _corner(ix, iy, iz, fx, fy, fz, s, dense, umask, c)
        ptr = table_ptr + ((off + idx) * F)[:, None] + cols[None, :]
        acc += w[:, None] * tl.load(ptr, mask=m[:, None], other=0.0)
    out = out_ptr + (rows.to(tl.int64) * (L * F) + lvl * F)[:, None] + cols[None, :]
    tl.store(out, acc, mask=m[:, None])


@triton.jit
def _hash_backward(x_ptr, grad_ptr, grad_table_ptr, res_ptr, off_ptr, n, n_dense, mask,
                   L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr):
    lvl = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = rows < n
    cols = tl.arange(0, F)
    ix, iy, iz, fx, fy, fz, r = _cells(x_ptr, rows, m, res_ptr, lvl)
    s = (r + 1).to(tl.int64)
    off = tl.load(off_ptr + lvl)
    dense = lvl < n_dense
    umask = mask.to(tl.uint32)
    g = tl.load(grad_ptr + (rows.to(tl.int64) * (L * F) + lvl * F)[:, None] + cols[None, :], mask=m[:, None],
                other=0.0)
    for c in tl.static_range(8):
        idx, w = _corner(ix, iy, iz, fx, fy, fz, s, dense, umask, c)
        ptr = grad_table_ptr + ((off + idx) * F)[:, None] + cols[None, :]
        tl.atomic_add(ptr, w[:, None] * g, mask=m[:, None])


class _FusedHashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, res, offsets, n_dense: int, mask: int):
        x = x.detach().float().contiguous()
        n, (size, f) = x.shape[0], table.shape
        levels = res.shape[0]
        out = torch.empty(n, levels * f, device=x.device, dtype=torch.float32)
        if n:
            grid = (triton.cdiv(n, BLOCK), levels)
            _hash_forward[grid](x, table.detach().contiguous(), out, res, offsets, n, n_dense, mask,
                                L=levels, F=f, BLOCK=BLOCK)
        ctx.save_for_backward(x, res, offsets)
        ctx.meta = (n_dense, mask, size, f)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, res, offsets = ctx.saved_tensors
        n_dense, mask, size, f = ctx.meta
        grad_table = torch.zeros(size, f, device=x.device, dtype=torch.float32)
        n, levels = x.shape[0], res.shape[0]
        if n and ctx.needs_input_grad[1]:
            grid = (triton.cdiv(n, BLOCK), levels)
            _hash_backward[grid](x, grad.float().contiguous(), grad_table, res, offsets, n, n_dense, mask,
                                 L=levels, F=f, BLOCK=BLOCK)
        return None, grad_table, None, None, None, None


def hash_encode(x: torch.Tensor, table: torch.Tensor, res: torch.Tensor, offsets: torch.Tensor, n_dense: int,
                mask: int) -> torch.Tensor:
    """(N, 3) points in [0, 1]^3 -> (N, L * F) features, level-major as the reference (no gradient to x).

    Args:
        table: (T, F) float32; res: (L,) int32 level resolutions; offsets: (L,) int64 first row of each level;
        n_dense: the first n_dense levels are indexed densely (x + s y + s^2 z, s = res + 1), the rest hashed;
        mask: table size per hashed level minus one (a power of two minus one).
    """
    if table.dtype != torch.float32 or table.shape[1] & (table.shape[1] - 1):
        raise ValueError("the fused hash encoding needs a float32 table with a power-of-two feature count")
    return _FusedHashEncode.apply(x, table, res.to(torch.int32).contiguous(), offsets.to(torch.int64).contiguous(),
                                  int(n_dense), int(mask))
