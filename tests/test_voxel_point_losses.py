"""The voxel and point heads' losses against closed forms (issue 21): class-balanced BCE and soft IoU (thin parts
must not lose to empty space), the density-aware Chamfer distance and repulsion (no stray points), and the
stray-point measure."""
import math

import pytest
import torch
import torch.nn.functional as F

from pipelines.core.shape_losses import (balanced_bce, chamfer_distance, density_aware_chamfer, knn_dists,
                                         occupancy_pos_weight, repulsion_loss, soft_iou_loss, stray_fraction)
from pipelines.core.single_view_losses import training_losses as _losses
from pipelines.single_view import SingleViewConfig


def thin_grid(R=16):
    """A (1, R, R, R) grid with one solid line of R cells (a thin leg: 1/R^2 of the cells)."""
    occ = torch.zeros(1, R, R, R)
    occ[0, R // 2, R // 2, :] = 1
    return occ


def test_positive_weight_from_the_occupied_fraction():
    occ = torch.zeros(3, 4, 4, 4)
    occ[0, :1] = 1  # a quarter solid: (1 - 1/4) / (1/4) = 3
    occ[2] = 1  # full; occ[1] empty
    assert occupancy_pos_weight(occ).tolist() == pytest.approx([3.0, 1.0, 1.0])
    assert occupancy_pos_weight(occ, 0.5)[0].item() == pytest.approx(math.sqrt(3))
    assert occupancy_pos_weight(occ, 0.0)[0].item() == pytest.approx(1.0)


def test_balanced_bce_closed_forms_and_no_reward_for_empty_space():
    occ = thin_grid()
    # Power 0 is plain BCE.
    logits = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    assert balanced_bce(logits, occ, 0.0).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, occ).item(), rel=1e-5)
    # One probability p everywhere on a grid an eighth solid: power 1 gives -(log p + log(1 - p)) / 2, minimised
    # at p = 1/2, where plain BCE's best constant is the occupied fraction.
    slab = torch.zeros(1, 16, 16, 16)
    slab[0, :2] = 1
    for p in (0.01, 0.3, 0.5):
        const = torch.full_like(slab, math.log(p / (1 - p)))
        assert balanced_bce(const, slab, 1.0).item() == pytest.approx(-(math.log(p) + math.log(1 - p)) / 2, rel=1e-4)
    x = torch.zeros((), requires_grad=True)
    (g,) = torch.autograd.grad(balanced_bce(x.expand_as(slab), slab, 1.0), x)
    assert abs(g.item()) < 1e-6  # p = 1/2 is stationary for the constant
    # The thin leg is 1/256 of its grid: its weight is capped at 50 (not 255).
    p = 0.3
    n1, n0 = 16, 4096 - 16
    const = torch.full_like(occ, math.log(p / (1 - p)))
    assert balanced_bce(const, occ, 1.0).item() == pytest.approx(
        -(n0 * math.log(1 - p) + 50 * n1 * math.log(p)) / (n0 + 50 * n1), rel=1e-4)
    # "Empty everywhere" (p = 0.01) against a half-right guess that keeps the leg (p = 0.6 on it, 0.2 off it):
    # plain BCE prefers dropping the leg, the balanced loss prefers keeping it.
    empty = torch.full_like(occ, math.log(0.01 / 0.99))
    keep = torch.where(occ > 0, math.log(0.6 / 0.4), math.log(0.2 / 0.8))
    assert F.binary_cross_entropy_with_logits(empty, occ) < F.binary_cross_entropy_with_logits(keep, occ)
    assert balanced_bce(empty, occ, 1.0) > balanced_bce(keep, occ, 1.0)


def test_soft_iou_closed_forms_and_empty_space_counts_for_nothing():
    occ = thin_grid()
    n, N = int(occ.sum()), occ.numel()
    big = 40.0
    assert soft_iou_loss((2 * occ - 1) * big, occ).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_iou_loss(torch.full_like(occ, -big), occ, eps=1.0).item() == pytest.approx(1 - 1 / (n + 1), rel=1e-5)
    half = soft_iou_loss(torch.zeros_like(occ), occ, eps=0.0).item()  # p = 1/2: 1 - (n/2) / (N/2 + n/2)
    assert half == pytest.approx(1 - n / (N + n), rel=1e-5)
    # The same prediction of the same leg in a grid eight times larger, the extra cells empty and predicted
    # empty: the soft IoU does not move (BCE falls, rewarded for the empty cells).
    pred = torch.where(occ > 0, 1.0, -3.0)
    occ2, pred2 = torch.zeros(1, 32, 32, 32), torch.full((1, 32, 32, 32), -big)
    occ2[:, :16, :16, :16], pred2[:, :16, :16, :16] = occ, pred
    assert soft_iou_loss(pred2, occ2).item() == pytest.approx(soft_iou_loss(pred, occ).item(), abs=1e-3)
    assert F.binary_cross_entropy_with_logits(pred2, occ2) < F.binary_cross_entropy_with_logits(pred, occ) / 4
    # An empty grid predicted empty is perfect.
    assert soft_iou_loss(torch.full_like(occ, -big), torch.zeros_like(occ)).item() == pytest.approx(0.0, abs=1e-6)


def lattice(n=6, spacing=0.1):
    """(n^3, 3) points of a cubic lattice."""
    r = torch.arange(n, dtype=torch.float32) * spacing
    return torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)


def test_dcd_of_identical_sets_is_zero_and_of_a_small_shift_exp():
    y = lattice()
    assert density_aware_chamfer(y[None], y[None]).item() == pytest.approx(0.0, abs=1e-7)
    # Every point moved by delta (well under the spacing): each keeps exp(-alpha delta^2) of its credit.
    d, alpha = 0.01, 1000.0
    x = y + torch.tensor([d, 0.0, 0.0])
    assert density_aware_chamfer(x[None], y[None], alpha).item() == pytest.approx(1 - math.exp(-alpha * d * d),
                                                                                  rel=1e-4)


def test_dcd_far_outlier_costs_boundedly_and_clumps_cost():
    y = lattice()
    N = len(y)
    costs = []
    for far in (1.0, 10.0, 1000.0):
        x = torch.cat([y, torch.tensor([[far, 0.0, 0.0]])])
        costs.append(density_aware_chamfer(x[None], y[None]).item())
    # x = y plus one outlier: its own term is 1, the lattice point it is nearest to is shared by two points of x
    # (weight max(1, (N+1)/N) / 2); the y side is exact. Whatever the distance.
    expected = (1 + 1 - (N + 1) / N / 2) / (N + 1) / 2
    assert costs == pytest.approx([expected] * 3, rel=1e-5)
    assert costs[-1] < 1 / (N + 1)
    cd = [chamfer_distance(torch.cat([y, torch.tensor([[f, 0.0, 0.0]])])[None], y[None]).item() for f in (10.0, 1000.0)]
    assert cd[1] > 1000 * cd[0]  # Chamfer: the outlier's squared distance
    # The outlier's gradient is bounded (and vanishes when it is far); nothing is NaN.
    x = torch.cat([y, torch.tensor([[1000.0, 0.0, 0.0]])]).requires_grad_()
    (g,) = torch.autograd.grad(density_aware_chamfer(x[None], y[None]).sum(), x)
    assert torch.isfinite(g).all() and g[-1].abs().max().item() < 1e-6
    # All points piled on one true point: Chamfer's x side is 0, DCD's x side keeps 1/N of the credit.
    clump = y[:1].expand(N, 3)
    assert density_aware_chamfer(clump[None], y[None]).item() > 0.49


def test_repulsion_zero_beyond_its_radius_and_closed_form_inside():
    y = lattice(spacing=0.1)
    x = y.clone().requires_grad_()
    loss = repulsion_loss(x[None], radius=0.099, k=4)
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert loss.item() == 0.0 and g.abs().max().item() == 0.0
    # Two points d apart, k = 1: each has one neighbour inside the radius, (1 - d / r)^2 each.
    r, d = 0.05, 0.02
    pair = torch.tensor([[[0.0, 0.0, 0.0], [d, 0.0, 0.0]]], requires_grad=True)
    loss = repulsion_loss(pair, r, k=1)
    assert loss.item() == pytest.approx((1 - d / r) ** 2, rel=1e-5)
    (g,) = torch.autograd.grad(loss.sum(), pair)
    moved = pair.detach() - 0.01 * g
    assert (moved[0, 1] - moved[0, 0]).norm().item() > d  # descent pushes them apart
    # knn_dists finds the true neighbours: a lattice point's nearest are at the spacing.
    assert knn_dists(y[None], 6).min().item() == pytest.approx(0.1, rel=1e-4)


def test_stray_fraction():
    gt = lattice()[None]
    pred = gt.clone()
    pred[0, :30] += torch.tensor([0.0, 0.0, 1.0])  # 30 of 216 points lifted far above the lattice
    pred[0, :30, 2] += 10.0
    assert stray_fraction(gt, gt).item() == 0.0
    assert stray_fraction(pred, gt, 0.05).item() == pytest.approx(30 / 216)


def test_training_losses_use_the_options():
    g = torch.Generator().manual_seed(0)
    occ = (torch.rand(2, 8, 8, 8, generator=g) < 0.1).float()
    pts = torch.rand(2, 64, 3, generator=g)
    out = {"voxels": torch.randn(2, 8, 8, 8, generator=g, requires_grad=True),
           "points": torch.rand(2, 32, 3, generator=g, requires_grad=True)}
    plain = SingleViewConfig(voxel_pos_power=0.0, w_voxel_iou=0.0, w_dcd=0.0, w_repulsion=0.0)
    losses = _losses(out, occ, pts, None, plain, g)
    assert set(losses) == {"voxels_bce", "points_cd", "loss"}
    assert losses["voxels_bce"].item() == pytest.approx(
        F.binary_cross_entropy_with_logits(out["voxels"], occ).item(), rel=1e-5)
    full = SingleViewConfig(voxel_pos_power=1.0, w_voxel_iou=2.0, w_dcd=0.5, w_repulsion=3.0, repulsion_radius=0.2)
    losses = _losses(out, occ, pts, None, full, g)
    assert set(losses) == {"voxels_bce", "voxels_iou_loss", "points_cd", "points_dcd", "repulsion", "loss"}
    total = (losses["voxels_bce"] + 2 * losses["voxels_iou_loss"] + losses["points_cd"] + 0.5 * losses["points_dcd"]
             + 3 * losses["repulsion"])
    assert losses["loss"].item() == pytest.approx(total.item(), rel=1e-5)
    assert losses["repulsion"].item() > 0
    losses["loss"].backward()
    assert out["voxels"].grad.abs().sum() > 0 and out["points"].grad.abs().sum() > 0
