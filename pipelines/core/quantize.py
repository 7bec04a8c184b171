"""int8 weights with one float32 scale per output row (symmetric, max-abs): a quarter of float32, for the
checkpoints the repository ships. Small tensors (biases, norms) are not worth it and stay floating point."""
from __future__ import annotations

import torch

MIN_NUMEL = 4096


def quantizable(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.dim() >= 2 and t.numel() >= MIN_NUMEL


def quantize_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 tensor of ``t``'s shape, float32 scale per row of dim 0)."""
    rows = t.detach().float().reshape(t.shape[0], -1)
    scale = rows.abs().amax(1).clamp_min(1e-12) / 127.0
    return torch.round(rows / scale[:, None]).to(torch.int8).reshape(t.shape), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (q.float().reshape(q.shape[0], -1) * scale.float()[:, None]).reshape(q.shape)
