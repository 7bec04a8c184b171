"""Input encodings: harmonic (NeRF's positional encoding), spherical harmonics for directions, and the
multiresolution hash grid of Instant-NGP (Mueller et al. 2022) in plain PyTorch, with fused Triton kernels
(``hash_triton.py``) used on CUDA where they apply.

Contract: each encoding is an ``nn.Module`` with ``out_dim``; inputs (N, D) -> (N, out_dim). The hash grid
expects points in [0, 1]^3.
"""
from __future__ import annotations

import math
import os
import warnings

import torch
from torch import nn


class HarmonicEncoding(nn.Module):
    """gamma(p) = (p, sin(2^0 pi p), cos(2^0 pi p), ..., sin(2^{L-1} pi p), cos(2^{L-1} pi p)).

    NeRF feeds raw coordinates (no pi factor) for its Blender scenes; ``scale`` chooses that (1.0) or pi.
    """

    def __init__(self, in_dim: int, n_freqs: int, include_input: bool = True, scale: float = 1.0):
        super().__init__()
        self.include_input = include_input
        self.register_buffer("freqs", scale * 2.0 ** torch.arange(n_freqs, dtype=torch.float32), persistent=False)
        self.out_dim = in_dim * (2 * n_freqs + int(include_input))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = (x[..., None] * self.freqs).flatten(-2)  # (N, D * L)
        parts = [x] if self.include_input else []
        return torch.cat(parts + [torch.sin(xf), torch.cos(xf)], dim=-1)


class SHEncoding(nn.Module):
    """Real spherical harmonics of unit directions up to degree 4 (16 values), as Instant-NGP uses."""

    out_dim = 16

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        x, y, z = d.unbind(-1)
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        return torch.stack([
            torch.full_like(x, 0.28209479177387814),
            -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
            1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.94617469575755997 * zz - 0.31539156525251999,
            -1.0925484305920792 * xz, 0.54627421529603959 * (xx - yy),
            0.59004358992664352 * y * (-3.0 * xx + yy), 2.8906114426405538 * xy * z,
            0.45704579946446572 * y * (1.0 - 5.0 * zz), 0.3731763325901154 * z * (5.0 * zz - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * zz), 1.4453057213202769 * z * (xx - yy),
            0.59004358992664352 * x * (-xx + 3.0 * yy),
        ], dim=-1)


# Instant-NGP's hash primes, as int32 with the same low bits: int32 products wrap like uint32 ones, and the
# table size is a power of two, so masking keeps exactly the bits the uint32 hash would keep.
_PRIMES = (1, 2654435761 - 2 ** 32, 805459861)


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding: L levels of trainable F-dim features, trilinearly interpolated.

    Level l has resolution N_l = floor(N_min * b^l) with b = exp((ln N_max - ln N_min) / (L - 1)); the
    coarse levels whose dense grid fits in 2^log2_size entries are indexed densely, the others by the
    spatial hash XOR_i(x_i * pi_i) mod T. All levels are looked up in one batched gather, and the 8 cell
    corners are formed from per-axis terms (N, L, 2) so no (N, L, 8, 3) integer tensor is ever built.
    """

    def __init__(self, n_levels: int = 16, n_features: int = 2, log2_size: int = 19, base_res: int = 16,
                 max_res: int = 2048):
        super().__init__()
        growth = math.exp((math.log(max_res) - math.log(base_res)) / max(n_levels - 1, 1))
        res = [int(math.floor(base_res * growth ** lvl)) for lvl in range(n_levels)]
        cap = 2 ** log2_size
        sizes = [min((r + 1) ** 3, cap) for r in res]
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.n_levels, self.n_features = n_levels, n_features
        self.n_dense = sum((r + 1) ** 3 <= cap for r in res)  # resolutions grow, so dense levels come first
        self.mask = cap - 1
        self.out_dim = n_levels * n_features
        self.register_buffer("res", torch.tensor(res, dtype=torch.int32), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets[:-1], dtype=torch.int64), persistent=False)
        self.register_buffer("primes", torch.tensor(_PRIMES, dtype=torch.int32), persistent=False)
        self.table = nn.Parameter(torch.empty(offsets[-1], n_features).uniform_(-1e-4, 1e-4))
        self.fused: bool | None = None
        """Use the Triton kernels: None (default) on CUDA when triton imports and passes its check against the
        reference (``GEN3D_FUSED_HASH=0`` turns them off); True forces them (tests, on the CPU under
        ``TRITON_INTERPRET=1``); False never. Points that need a gradient themselves always take this file's path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3) in [0, 1]^3 -> (N, L * F)."""
        if (self.fused is not False and not (x.requires_grad and torch.is_grad_enabled())
                and self.table.dtype == torch.float32 and (self.fused or fused_hash_available(x.device))):
            from .hash_triton import hash_encode

            return hash_encode(x, self.table, self.res, self.offsets, self.n_dense, self.mask)
        return self.reference(x)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The PyTorch path: differentiable to any order in x and the table."""
        n = x.shape[0]
        pos = x.clamp(0, 1)[:, None, :] * self.res[None, :, None].to(x.dtype)  # (N, L, 3)
        cell = pos.detach().floor().to(torch.int32).clamp_max(self.res[None, :, None] - 1)
        frac = pos - cell.to(pos.dtype)  # gradients w.r.t. x flow through here (normals need them)
        two = torch.arange(2, device=x.device, dtype=torch.int32)
        c = cell[..., None] + two  # (N, L, 3, 2): each axis' lower and upper corner coordinate
        d = self.n_dense
        # Dense levels: x + s * y + s^2 * z, with s = N_l + 1.
        s = (self.res[:d] + 1)[None, :, None]
        dense = c[:, :d, 0, :, None, None] + s[..., None, None] * (c[:, :d, 1, None, :, None] + s[..., None, None] * c[:, :d, 2, None, None, :])
        # Hashed levels: (x * p0) ^ (y * p1) ^ (z * p2), masked to the table size.
        h = c[:, d:] * self.primes[None, None, :, None]
        hashed = (h[:, :, 0, :, None, None] ^ h[:, :, 1, None, :, None] ^ h[:, :, 2, None, None, :]) & self.mask
        idx = torch.cat([dense, hashed], 1).reshape(n, self.n_levels, 8) + self.offsets[None, :, None]
        wx, wy, wz = (torch.stack([1 - frac[..., i], frac[..., i]], -1) for i in range(3))  # (N, L, 2) each
        w = (wx[..., :, None, None] * wy[..., None, :, None] * wz[..., None, None, :]).reshape(n, self.n_levels, 8)
        return _InterpolateTable.apply(self.table, idx, w.to(self.table.dtype)).reshape(n, self.out_dim)


class _InterpolateTable(torch.autograd.Function):
    """sum_c w_c * table[idx_c]: (N, L, 8) indices and weights -> (N, L, F).

    Autograd's own backward for ``table[idx]`` sorts all N*L*8 indices (deterministic index_put), which a
    profile on an H200 showed to be most of a training step; this backward scatters with atomic
    ``index_add_`` instead and never stores the (N, L, 8, F) gathered features. The backward is made of
    differentiable ops, so it can be differentiated again (an eikonal loss on d features / dx trains the table).
    """

    @staticmethod
    def forward(ctx, table, idx, w):
        ctx.save_for_backward(table, idx, w)
        return (table[idx] * w[..., None]).sum(2)

    @staticmethod
    def backward(ctx, grad):
        table, idx, w = ctx.saved_tensors
        grad_table = grad_w = None
        if ctx.needs_input_grad[0]:
            contrib = (w[..., None] * grad[:, :, None, :]).reshape(-1, table.shape[1])
            grad_table = torch.zeros_like(table).index_add_(0, idx.reshape(-1), contrib.to(table.dtype))
        if ctx.needs_input_grad[2]:
            # The gather through _GatherRows: differentiated again (an eikonal loss), autograd's own table[idx]
            # backward would sort every index, as in the first-order case above.
            grad_w = (_GatherRows.apply(table, idx) * grad[:, :, None, :]).sum(-1)
        return grad_table, None, grad_w


class _GatherRows(torch.autograd.Function):
    """table[idx] whose backward scatters with an atomic (out-of-place, differentiable) ``index_add``."""

    @staticmethod
    def forward(ctx, table, idx):
        ctx.save_for_backward(idx)
        ctx.rows = table.shape[0]
        return table[idx]

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])
        return flat.new_zeros(ctx.rows, flat.shape[1]).index_add(0, idx.reshape(-1), flat), None


_FUSED_OK: dict[str, bool] = {}


def fused_hash_available(device: torch.device) -> bool:
    """Whether the Triton hash encoding runs on ``device`` (CUDA only, unless forced): triton imports, and on the
    first call its forward and table gradient match the PyTorch path on a small random input; a failure warns
    once and the PyTorch path is used from then on."""
    if device.type != "cuda" or os.environ.get("GEN3D_FUSED_HASH", "1") == "0":
        return False
    key = str(device)
    if key not in _FUSED_OK:
        try:
            _FUSED_OK[key] = True  # (the check below must not recurse into itself)
            err = check_fused_hash(device)
            if err > 1e-4:
                raise RuntimeError(f"differs from the reference by {err:.3g}")
        except Exception as exc:  # noqa: BLE001 - any failure (import, compile, launch) falls back
            _FUSED_OK[key] = False
            warnings.warn(f"fused hash encoding unavailable on {device} ({type(exc).__name__}: {exc}); "
                          "using the PyTorch path", RuntimeWarning, stacklevel=2)
    return _FUSED_OK[key]


def check_fused_hash(device, n: int = 4096, seed: int = 0) -> float:
    """Largest difference between the Triton kernels and the PyTorch path (outputs and table gradients,
    relative to their scale) on random points, with dense and hashed levels and points on the box's faces."""
    from .hash_triton import hash_encode

    gen = torch.Generator().manual_seed(seed)
    enc = HashGridEncoding(n_levels=6, n_features=2, log2_size=10, base_res=4, max_res=64).to(device)
    with torch.no_grad():
        enc.table.copy_(torch.rand(enc.table.shape, generator=gen).to(device) * 2 - 1)
    x = torch.rand(n, 3, generator=gen)
    x[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [1.2, -0.1, 0.5]])
    x = x.to(device)
    grad = torch.randn(n, enc.out_dim, generator=gen).to(device)
    with torch.enable_grad():  # the first use may come under no_grad (an occupancy update)
        ref = enc.reference(x)
        (g_ref,) = torch.autograd.grad((ref * grad).sum(), enc.table)
        out = hash_encode(x, enc.table, enc.res, enc.offsets, enc.n_dense, enc.mask)
        (g_out,) = torch.autograd.grad((out * grad).sum(), enc.table)
    return max(float((out - ref).abs().max()), float((g_out - g_ref).abs().max() / g_ref.abs().max().clamp_min(1e-12)))
