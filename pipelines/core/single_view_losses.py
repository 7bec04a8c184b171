"""The single-view model's training objective (``training_losses``: every head's loss) and the mesh branch's
(``mesh_loss``: Chamfer plus the Laplacian, edge and normal regularisers), which the test-time fitting of a
predicted mesh to the point head's cloud (``fit_mesh_to_points``, issue 21) shares.

Contract: ``cfg`` is a ``pipelines.single_view.SingleViewConfig`` (not imported: methods import core, never the
reverse); ``model`` a ``SingleViewModel`` (its template's faces, edges and face pairs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import UserInputError
from .shape_losses import (balanced_bce, chamfer_distance, density_aware_chamfer, edge_loss, laplacian_smoothing,
                           nn_sq_dists, normal_consistency, repulsion_loss, soft_iou_loss)
from .shapes import sample_surface


def training_losses(out: dict, occ, pts, model, cfg, gen, progress: float = 0.0) -> dict:
    """Each head's loss, and their weighted sum as "loss": voxel BCE (class-balanced with ``voxel_pos_power``)
    plus soft IoU, point Chamfer plus the optional density-aware Chamfer and repulsion, and for the mesh the
    Chamfer of its surface samples (its recall half at ``mesh_recall_weight``) plus the Laplacian (and optional
    edge and normal) regularisers, their weights scaled from 1 to ``mesh_reg_end`` as training ``progress`` goes
    from 0 to 1; coarse to fine, both meshes' Chamfer, the regularisers on the coarse mesh and ``mesh_fine_reg`` of
    them on the fine one."""
    losses = {}
    loss = torch.zeros((), device=occ.device)
    if "voxels" in out:
        logits = out["voxels"].float()
        if cfg.voxel_pos_power:
            losses["voxels_bce"] = balanced_bce(logits, occ, cfg.voxel_pos_power)
        else:
            losses["voxels_bce"] = F.binary_cross_entropy_with_logits(logits, occ.float())
        loss = loss + losses["voxels_bce"]
        if cfg.w_voxel_iou:
            losses["voxels_iou_loss"] = soft_iou_loss(logits, occ)
            loss = loss + cfg.w_voxel_iou * losses["voxels_iou_loss"]
    if "points" in out:
        points = out["points"].float()
        losses["points_cd"] = chamfer_distance(points, pts).mean()
        loss = loss + losses["points_cd"]
        if cfg.w_dcd:
            losses["points_dcd"] = density_aware_chamfer(points, pts, cfg.dcd_alpha).mean()
            loss = loss + cfg.w_dcd * losses["points_dcd"]
        if cfg.w_repulsion:
            losses["repulsion"] = repulsion_loss(points, cfg.repulsion_radius).mean()
            loss = loss + cfg.w_repulsion * losses["repulsion"]
    if "mesh" in out:
        reg = 1.0 + (cfg.mesh_reg_end - 1.0) * progress
        meshes = [("", out["mesh"], model.template_faces, model.template_edges, model.template_pairs, reg)]
        if "mesh_coarse" in out:  # coarse to fine: the full regularisers on the coarse mesh, a share on the fine
            meshes = [("coarse_", out["mesh_coarse"], model.coarse_faces, model.coarse_edges, model.coarse_pairs,
                       reg)] + [meshes[0][:5] + (reg * cfg.mesh_fine_reg,)]
        for prefix, verts, faces, edges, pairs, w in meshes:
            weights = {k: w * v for k, v in cfg.mesh_reg_weights().items()}
            include = {k for k, v in cfg.mesh_reg_weights().items() if v}  # the same terms logged all run
            terms = mesh_loss(verts.float(), pts, faces, edges, pairs, weights, cfg.gt_points, gen, include,
                              recall_weight=cfg.mesh_recall_weight)
            loss = loss + terms.pop("loss")
            losses.update({prefix + k: v for k, v in terms.items()})
    losses["loss"] = loss
    return losses


def mesh_loss(verts: torch.Tensor, target: torch.Tensor, faces, edges, pairs, weights: dict, n_samples: int,
              generator: torch.Generator | None = None, include=None, recall_weight: float = 1.0
              ) -> dict[str, torch.Tensor]:
    """The mesh branch's objective (Pixel2Mesh, PyTorch3D's mesh fitting): the Chamfer distance between
    ``n_samples`` points on the (B, V, 3) mesh and the (B, N, 3) ``target`` points (its target-to-mesh half, the
    recall, times ``recall_weight``), plus the Laplacian smoothing (always computed) and the edge length and
    adjacent faces' normal consistency (computed when named in ``include``; default: when their weight is not 0),
    at ``weights`` (laplacian, edge, normal). Returns the terms (mesh_cd, laplacian, edge, normal) and their
    weighted sum as "loss"."""
    to_target, to_mesh = nn_sq_dists(sample_surface(verts, faces, n_samples, generator=generator), target)
    terms = {"mesh_cd": to_target.mean() + recall_weight * to_mesh.mean(),  # Chamfer's two halves
             "laplacian": laplacian_smoothing(verts, edges)}
    include = {k for k in ("edge", "normal") if weights[k]} if include is None else include
    if "edge" in include:
        terms["edge"] = edge_loss(verts, edges)
    if "normal" in include:
        terms["normal"] = normal_consistency(verts, faces, pairs)
    terms["loss"] = terms["mesh_cd"] + sum(weights[k] * v for k, v in terms.items() if k != "mesh_cd")
    return terms


def check_mesh_fit(cfg) -> None:
    """The test-time fitting's settings, checked before any work (NaN fails too)."""
    if not (cfg.mesh_fit_steps >= 0 and cfg.mesh_fit_reg >= 0 and cfg.mesh_fit_lr > 0 and cfg.mesh_fit_recall > 0):
        raise UserInputError("mesh_fit_steps and mesh_fit_reg must be 0 or more, mesh_fit_lr and mesh_fit_recall "
                             f"above 0 (got {cfg.mesh_fit_steps}, {cfg.mesh_fit_reg}, {cfg.mesh_fit_lr}, "
                             f"{cfg.mesh_fit_recall})")


def fit_mesh_to_points(model, pred: dict, cfg) -> dict:
    """Test-time fitting (``cfg.mesh_fit_steps`` Adam steps, none when 0): the predicted mesh's vertices move
    toward the point head's cloud under the mesh objective, its regularisers at ``cfg.mesh_fit_reg`` of the
    training weights and its recall half at ``cfg.mesh_fit_recall``. The point head reaches thin parts that the
    regularised sphere does not, and the regularisers keep the fitted surface smooth (bench/RESULTS.md, issue 21).
    Returns ``pred`` with the fitted mesh (``pred`` itself when there is nothing to fit); the network is not
    touched. Each mesh's step does not depend on the batch (the loss is summed over it), but the surface samples
    are drawn for the whole batch, so a mesh fitted alone and in a batch differ by sampling noise."""
    check_mesh_fit(cfg)
    if not cfg.mesh_fit_steps or "mesh" not in pred or "points" not in pred:
        return pred
    verts = fit_surface(pred["mesh"], model.template_faces, model.template_edges, model.template_pairs,
                        pred["points"], cfg, cfg.gt_points)
    return {**pred, "mesh": verts}


def fit_surface(verts, faces, edges, pairs, target, cfg, n_samples: int):
    """(B, V, 3) ``verts`` of meshes that share ``faces`` after ``cfg.mesh_fit_steps`` Adam steps on the mesh
    objective toward the (B, N, 3) ``target`` clouds (``n_samples`` surface samples a step)."""
    weights = {k: cfg.mesh_fit_reg * w for k, w in cfg.mesh_reg_weights().items()}
    target = target.detach().float()
    gen = torch.Generator(target.device).manual_seed(0)
    with torch.enable_grad():
        verts = verts.detach().float().clone().requires_grad_(True)
        opt = torch.optim.Adam([verts], lr=cfg.mesh_fit_lr)
        for _ in range(cfg.mesh_fit_steps):
            loss = mesh_loss(verts, target, faces, edges, pairs, weights, n_samples, gen,
                             recall_weight=cfg.mesh_fit_recall)["loss"]
            opt.zero_grad(set_to_none=True)
            (loss * len(verts)).backward()
            opt.step()
    return verts.detach()


CUBIFIED_SAMPLES = 4
"""Surface samples a fitting step of a cubified mesh takes, per point of the training targets (``gt_points``): its
few thousand faces are small, and with as many samples as the icosphere's fitting many go untouched a step (on 10
held-out shapes x 2 views, 4x: F1 higher at 1-5 %, Chamfer distance lower; bench/RESULTS.md, issue 21)."""


CUBIFIED_REACH = 0.1
"""A cubified mesh is fitted only to the cloud's points within this distance of its cubes (a tenth of the object's
size, about three cells): the voxels decide where the surface is, the points its detail, and a stray point farther
out would pull a spike (on 10 held-out shapes x 2 views: F1 higher at 1-5 %, self-intersections fewer;
bench/RESULTS.md, issue 21)."""


def meshes_from_voxels(pred: dict, cfg) -> dict:
    """Mesh R-CNN's mesh (Gkioxari et al. 2019) at test time: the voxel head's solid cells (above
    ``cfg.voxel_threshold``: the grid the app shows) cubified into a closed surface of whatever topology the grid
    has (a chair's legs and the holes between them), then fitted to the point head's cloud near it
    (``CUBIFIED_REACH``) as the icosphere is to all of it (``fit_surface``; Mesh R-CNN refines with a learned graph
    network instead). Returns ``pred`` with "mesh" a list of one ``Mesh`` per image (empty where no cell is solid)."""
    from .dmtet import face_pairs
    from .shapes import cubify, mesh_edges

    check_mesh_fit(cfg)
    meshes = []
    for probs, cloud in zip(torch.sigmoid(pred["voxels"].float()), pred["points"].float()):
        m = cubify(probs > cfg.voxel_threshold)
        if m.num_faces and cfg.mesh_fit_steps:
            gen = torch.Generator(cloud.device).manual_seed(0)
            cubes = sample_surface(m.verts[None], m.faces, CUBIFIED_SAMPLES * cfg.gt_points, gen)
            near = nn_sq_dists(cloud[None], cubes)[0][0] < CUBIFIED_REACH ** 2
            m.verts = fit_surface(m.verts[None], m.faces, mesh_edges(m.faces), face_pairs(m.faces),
                                  cloud[near][None] if bool(near.any()) else cloud[None], cfg,
                                  CUBIFIED_SAMPLES * cfg.gt_points)[0]
        meshes.append(m)
    return {**pred, "mesh": meshes}
