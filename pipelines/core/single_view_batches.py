"""The single-view model's training batches (pipelines/single_view.py): random images of the training shapes with
their shape targets, mirrored and recoloured as the config asks.

Contract: ``cfg`` is a ``pipelines.single_view.SingleViewConfig`` (not imported: methods import core, never the
reverse); ``train`` a ``shape_packs`` data set on the training device. Nothing here imports torch at import time.
"""
from __future__ import annotations


def training_batch(train, cfg, gen):
    """A random training batch: images (B, 3, H, W) in [0, 1], occupancy (B, R, R, R) and ``gt_points``
    surface points (B, gt_points, 3) in each image's view frame; with ``flip``, half mirrored in x."""
    import torch

    dev, B = train.images.device, cfg.batch_size
    si = torch.randint(0, len(train), (B,), device=dev, generator=gen)
    vi = torch.randint(0, train.images.shape[1], (B,), device=dev, generator=gen)
    images = train.images[si, vi].float() / 255.0
    occ, pts = train.targets(si, vi)
    pts = pts[:, torch.randperm(pts.shape[1], device=dev, generator=gen)[:cfg.gt_points]]
    if cfg.flip:  # mirror x: the image's columns, the grid's first axis, the points' x
        f = torch.rand(B, device=dev, generator=gen) < 0.5
        images = torch.where(f[:, None, None, None], images.flip(-1), images)
        occ = torch.where(f[:, None, None, None], occ.flip(1), occ)
        pts = torch.where(f[:, None, None], pts * pts.new_tensor([-1.0, 1.0, 1.0]), pts)
    if cfg.photometric:
        images = photometric_jitter(images, cfg.photometric, gen)
    return images, occ, pts


def photometric_jitter(images, share: float, gen):
    """Recolour ``share`` of the images (B, 3, H, W) in [0, 1]: a random channel order, saturation scaled by
    0-1.3 about each pixel's grey, and a gamma of 0.7-1.4 (log-uniform). Each maps white to white, so the plain
    backgrounds stay as rendered."""
    import itertools

    import torch

    B, dev = images.shape[0], images.device
    rand = lambda *shape: torch.rand(*shape, device=dev, generator=gen)  # noqa: E731
    perms = torch.tensor(list(itertools.permutations(range(3))), device=dev)  # 6 x 3: a tiny copy a step
    order = perms[torch.randint(0, len(perms), (B,), device=dev, generator=gen)]
    x = torch.gather(images, 1, order[:, :, None, None].expand_as(images))
    grey = x.mean(1, keepdim=True)
    x = (grey + 1.3 * rand(B, 1, 1, 1) * (x - grey)).clamp(0.0, 1.0)
    x = x ** (0.7 * 2.0 ** rand(B, 1, 1, 1))
    return torch.where((rand(B) < share)[:, None, None, None], x, images)
