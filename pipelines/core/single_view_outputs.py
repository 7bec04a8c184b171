"""What a single-view run (pipelines/single_view.py) predicts, scores and writes: the reconstruction the app,
the CLI and the scores share (``predict``: the network, its mirrored pass, the mesh's fitting), the held-out
scores of a trained model (``evaluate``: voxel IoU, Chamfer distance, F-score at ``THRESHOLDS``, stray points,
``MESH_QUALITY``), the files of one prediction (``export_prediction``) and a trained checkpoint's manifest
(``checkpoint_manifest``, with the ``command_line`` that reproduces the run).

Contract: ``cfg`` is a ``pipelines.single_view.SingleViewConfig`` (not imported: methods import core, never the
reverse). Nothing here imports torch at import time: the method imports ``HEADS`` from this module.
"""
from __future__ import annotations

from typing import Iterator

from ..config import RunContext, UserInputError
from ..events import Event, Log

HEADS = ("voxels", "points", "mesh")
THRESHOLDS = (0.01, 0.02, 0.03, 0.04, 0.05)
PR_THRESHOLDS = (0.02, 0.05)  # precision and recall reported apart at these (issue 21: what an F1 is made of)
MESH_QUALITY = {
    "mesh_normal_consistency": "mean |cos| between each mesh sample's normal and its nearest true sample's (1 best)",
    "mesh_self_intersection": "share of faces crossing a non-adjacent face (0 best)",
    "mesh_edge_spread": "std / mean of the edge lengths (the level-4 template icosphere: 0.065)",
}


def command_line(cfg) -> str:
    """The CLI command that reproduces this config (flags that differ from the defaults)."""
    import dataclasses

    flags = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name not in ("out_dir", "device") and v != f.default:
            flag = "--" + f.name.replace("_", "-")
            flags.append(flag if v is True else f"--no-{flag[2:]}" if v is False else f"{flag} {v}")
    return " ".join(["python -m pipelines single_view", *flags])


def checkpoint_manifest(cfg, dev, data_info: dict, metrics: dict, n_scored: int, scored: str) -> dict:
    """What a trained checkpoint's manifest.json records: data, command, device, scores and what they were on."""
    import torch

    return dict(data={**data_info, "built_by": "python -m pipelines single_view data build"},
                command=command_line(cfg), device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev),
                metrics=metrics, scored_on=f"{n_scored} {scored}",
                inference={k: getattr(cfg, k) for k in INFERENCE},  # how the scores were predicted
                metrics_note=f"scores on {scored} of the float32 model, before it was stored as {cfg.weights_format}; "
                             "bench/single_view_eval.py score --as-predicted re-scores the files")


MESH_FROM = ("icosphere", "voxels")  # the mesh head's sphere, or the voxels cubified (``meshes_from_voxels``)
MIRRORED = ("voxels", "points")  # heads a mirrored pass can be combined with; the mesh's vertex slots do not follow


INFERENCE = {"mirror_heads": str, "mesh_from": str, "mesh_fit_steps": int, "mesh_fit_reg": float,
             "mesh_fit_recall": float, "mesh_fit_lr": float, "voxel_threshold": float, "voxel_point_threshold": float,
             "point_jitters": int}
"""Test-time settings a checkpoint's manifest records with its scores ('inference': how they were predicted)."""


def manifest_inference(manifest) -> tuple[dict, list[str]]:
    """(settings, problems): the test-time settings a manifest's scores were predicted with (its
    'scores_as_predicted' inference, else its own), and what in them is not a setting of the right type."""
    shown = manifest.get("scores_as_predicted") if isinstance(manifest, dict) else None
    want = (shown if isinstance(shown, dict) else manifest if isinstance(manifest, dict) else {}).get("inference")
    if not isinstance(want, dict):
        return {}, [] if want is None else [f"'inference' is {want!r}, not a mapping"]
    good = {k: v for k, v in want.items() if k in INFERENCE and not isinstance(v, bool) and (
        isinstance(v, INFERENCE[k]) or INFERENCE[k] is float and isinstance(v, int))}
    return good, [f"{k} {v!r}" for k, v in want.items() if k in INFERENCE and k not in good]


def checkpoint_inference(cfg, manifest) -> tuple:
    """(cfg, notes): ``cfg`` with the test-time settings the checkpoint's scores were predicted with
    (``manifest_inference``) where ``cfg`` left them at their defaults and did not name them in
    ``inference_given``: they belong to the model (one trained with an IoU loss wants a higher voxel threshold). Off
    with ``cfg.checkpoint_inference``."""
    import dataclasses

    if not cfg.checkpoint_inference:
        return cfg, []
    want, problems = manifest_inference(manifest)
    if problems:
        raise UserInputError(f"the checkpoint's manifest.json has unusable test-time settings ({', '.join(problems)}): "
                             "fix them there, or predict with --no-checkpoint-inference")
    given = set(parse_heads(cfg.inference_given, tuple(INFERENCE), "inference_given", empty_ok=True))
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    chosen = {k for k in want if k in given or getattr(cfg, k) != defaults[k]}
    take = {k: INFERENCE[k](v) for k, v in want.items() if k not in chosen and v != defaults[k]}
    kept = [f"{k} {getattr(cfg, k)!r} (the checkpoint's: {v!r})" for k, v in want.items()
            if k in chosen and getattr(cfg, k) != v]
    notes = ([f"the checkpoint's test-time settings: {', '.join(f'{k} {v}' for k, v in take.items())}"] if take else [])
    notes += [f"kept as given: {', '.join(kept)}"] if kept else []
    return dataclasses.replace(cfg, **take), notes


def parse_heads(text: str, allowed=HEADS, field: str = "heads", empty_ok: bool = False) -> tuple[str, ...]:
    """A config's comma list of head names as a tuple, checked against ``allowed``."""
    heads = tuple(h.strip() for h in text.split(",") if h.strip())
    if [h for h in heads if h not in allowed] or not (heads or empty_ok):
        raise UserInputError(f"{field} must be a comma list of {', '.join(allowed)}" + (" or empty" if empty_ok else "")
                             + f" (got {text!r})")
    return heads


def parse_mirror_heads(text: str) -> tuple[str, ...]:
    """``SingleViewConfig.mirror_heads`` as a tuple, checked (the mesh head's vertices do not follow the mirror)."""
    return parse_heads(text, MIRRORED, "mirror_heads", empty_ok=True)


def mirror_average(pred: dict, mirrored: dict) -> dict:
    """Test-time mirroring: ``pred`` for an image combined with ``mirrored``, the prediction for the image flipped
    left-right, mirrored back (targets live in the view's frame, so a flipped image is a shape mirrored in x:
    the grid's first axis, the points' x), for the heads ``mirrored`` has. Voxels: the mean occupancy probability
    (as logits); points: both clouds, twice the points. The mesh is never combined: the mesh head's vertex slots
    do not follow the mirror (averaging them lowered mesh F1@5 % by 0.01-0.06; bench/RESULTS.md, issue 21)."""
    import torch

    out = dict(pred)
    if "voxels" in mirrored:
        p = (torch.sigmoid(pred["voxels"].float()) + torch.sigmoid(mirrored["voxels"].float().flip(1))) / 2
        out["voxels"] = torch.logit(p, eps=1e-6)
    if "points" in mirrored:
        flipped = mirrored["points"].float() * mirrored["points"].new_tensor([-1.0, 1.0, 1.0])
        out["points"] = torch.cat([pred["points"].float(), flipped], 1)
    return out


# Test-time jitters of the input for the point head (``point_jitters``): (zoom, shift right, shift down), the shifts
# as a share of the image's side; the first ones the gentlest. Within what training's renders and crops vary.
JITTERS = ((0.95, 0, 0), (1.05, 0, 0), (1, 0.03, 0), (1, -0.03, 0), (1, 0, 0.03), (1, 0, -0.03), (0.9, 0, 0),
           (1.1, 0, 0), (1, 0.03, 0.03), (1, -0.03, -0.03))


def jitter_images(images, zoom: float, dx: float, dy: float):
    """Images (B, 3, H, W) in [0, 1] on white, zoomed about their centre (above 1: the object larger) and shifted
    by ``dx``, ``dy`` of their side; what comes in from outside is white, as the crop's margin."""
    import torch.nn.functional as F

    theta = images.new_tensor([[1 / zoom, 0, -2 * dx], [0, 1 / zoom, -2 * dy]]).expand(len(images), 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return 1 - F.grid_sample(1 - images, grid, align_corners=False, padding_mode="zeros")


def jittered_points(model, images, n: int, mirror: bool):
    """(B, k, 3): the point head's clouds for the first ``n`` of ``JITTERS`` of the images (each with its mirror when
    ``mirror``), one after another: a test-time augmentation whose union covers more of the surface (issue 21)."""
    import torch

    clouds = []
    for zoom, dx, dy in JITTERS[:n]:
        x = jitter_images(images, zoom, dx, dy)
        pred = model(x, ("points",))
        if mirror:
            pred = mirror_average(pred, model(x.flip(-1), ("points",)))
        clouds.append(pred["points"].float())
    return torch.cat(clouds, 1)


def check_inference_settings(cfg) -> None:
    """The test-time settings that take numbers, checked before any work (NaN fails too)."""
    if not (0 <= cfg.voxel_threshold < 1 and 0 <= cfg.voxel_point_threshold < 1):
        raise UserInputError("voxel_threshold and voxel_point_threshold are occupancy probabilities from 0 to below 1 "
                             f"(got {cfg.voxel_threshold}, {cfg.voxel_point_threshold}; 0 turns the second off)")
    if not 0 <= cfg.point_jitters <= len(JITTERS):
        raise UserInputError(f"point_jitters is 0 (off) to {len(JITTERS)} (got {cfg.point_jitters})")
    if cfg.mesh_from not in MESH_FROM:
        raise UserInputError(f"mesh_from is one of {', '.join(MESH_FROM)} (got {cfg.mesh_from!r})")


def check_heads_for(cfg, heads) -> None:
    """A mesh from the voxels needs the voxel and point heads (the grid to cubify, the cloud to fit it to)."""
    if cfg.mesh_from == "voxels" and not {"voxels", "points"} <= set(heads):
        raise UserInputError("mesh_from 'voxels' needs a checkpoint with the voxel and point heads (this one has "
                             f"{', '.join(heads)}): use mesh_from 'icosphere'")


def point_supported_voxels(pred: dict, threshold: float, point_threshold: float) -> dict:
    """Hysteresis thresholding of the voxel grid: a cell holding a point of ``pred``'s cloud (the grid spans the
    points' [-0.5, 0.5]^3, indexed [x, y, z]) is solid above ``point_threshold``, the others above ``threshold``.
    The supported cells' logits are raised to just above ``threshold``'s, so every later reader of the grid (scores,
    export, previews) thresholds one grid the same way."""
    import math

    import torch

    from .shapes import voxelize_points

    voxels = pred["voxels"].float()
    held = torch.stack([voxelize_points(p, voxels.shape[-1]) for p in pred["points"].float()])
    weak = held & (torch.sigmoid(voxels) > point_threshold)
    above = math.log(max(threshold, 1e-6) / (1 - threshold)) + 1e-3  # the logit of threshold, a little above
    return dict(pred, voxels=torch.where(weak, voxels.clamp(min=above), voxels))


def predict(model, images, heads, cfg) -> dict:
    """The reconstruction of images (B, 3, H, W) in [0, 1] that the app, the CLI and ``evaluate`` share: the
    network's prediction, combined for ``cfg.mirror_heads`` with its prediction for the mirrored images
    (``mirror_average``), with ``cfg.voxel_point_threshold`` the cells holding a point solid above it
    (``point_supported_voxels``), with ``cfg.mesh_fit_steps`` the mesh fitted to the point cloud, and with
    ``cfg.point_jitters`` the clouds of jittered copies of the images added to the points last (the voxels and the
    fitting read the image's own cloud: fitting to the union would cost up to 11x a step)."""
    import torch

    from .single_view_losses import fit_mesh_to_points, meshes_from_voxels

    check_inference_settings(cfg)
    check_heads_for(cfg, heads)
    if cfg.mesh_from == "voxels":  # the mesh head's sphere is not needed
        heads = tuple(h for h in heads if h != "mesh")
    mirror = [h for h in parse_mirror_heads(cfg.mirror_heads) if h in heads]
    with torch.no_grad():
        pred = model(images, heads)
        if mirror:
            pred = mirror_average(pred, model(images.flip(-1), mirror))
        if cfg.voxel_point_threshold and "voxels" in pred and "points" in pred:
            pred = point_supported_voxels(pred, cfg.voxel_threshold, cfg.voxel_point_threshold)
    if cfg.mesh_from == "voxels":
        pred = meshes_from_voxels(pred, cfg)  # fitted as the icosphere would be
    else:
        pred = fit_mesh_to_points(model, pred, cfg)
    if cfg.point_jitters and "points" in pred:
        with torch.no_grad():
            more = jittered_points(model, images, cfg.point_jitters, "points" in mirror)
        pred = dict(pred, points=torch.cat([pred["points"].float(), more], 1))
    return pred


def evaluate(model, data, heads, cfg, device, batch: int = 32, on_batch=None, per_image: bool = False) -> dict:
    """Mean IoU (voxels), Chamfer distance and F-score at 1-5% of the object's size (its precision and recall apart
    at ``PR_THRESHOLDS``) over held-out views, the share of stray predicted points (``*_stray``: farther than 5 %
    of the object's size from the truth), and the mesh's quality (``MESH_QUALITY``; normal consistency only where
    the data has true normals). With ``per_image`` each score's list over the images instead of its mean, shape by
    shape and view by view (for paired comparisons of two models: ``bench/single_view_eval.py compare``)."""
    import torch

    from .shape_losses import (chamfer_distance, edge_length_spread, f1, precision_recall,
                               self_intersection_fraction, stray_fraction, surface_normal_consistency, voxel_iou)
    from .shapes import cubify, mesh_edges, sample_surface
    from .single_view_net import mesh_items

    V = data.images.shape[1] if not cfg.eval_views else min(cfg.eval_views, data.images.shape[1])
    pairs = [(s, v) for s in range(len(data)) for v in range(V)]
    scores: dict[str, list] = {}

    def add(name, values):
        scores.setdefault(name, []).append(values.float().cpu())

    gen = torch.Generator(device).manual_seed(0)
    for i in range(0, len(pairs), batch):
        si = torch.tensor([p[0] for p in pairs[i:i + batch]], device=device)
        vi = torch.tensor([p[1] for p in pairs[i:i + batch]], device=device)
        occ, gt = data.targets(si, vi)
        out = predict(model, data.images[si, vi].float() / 255.0, heads, cfg)
        with torch.no_grad():
            clouds = {}
            if "voxels" in out:
                solid = torch.sigmoid(out["voxels"].float()) > cfg.voxel_threshold
                add("voxels_iou", voxel_iou(solid, occ))
                samples = []
                for g in solid:
                    m = cubify(g)
                    samples.append(sample_surface(m.verts, m.faces, gt.shape[1], gen) if m.num_faces
                                   else torch.zeros(gt.shape[1], 3, device=device))
                clouds["voxels"] = torch.stack(samples)
            if "points" in out:
                clouds["points"] = out["points"].float()
            if "mesh" in out:
                samples, normals, quality = [], [], {k: [] for k in MESH_QUALITY if k != "mesh_normal_consistency"}
                for m in mesh_items(out, model):  # one at a time: a cubified mesh has its own faces
                    if not m.num_faces:
                        samples.append(torch.zeros(gt.shape[1], 3, device=device))
                        normals.append(torch.zeros(gt.shape[1], 3, device=device))
                        quality["mesh_self_intersection"].append(torch.zeros(1, device=device))
                        quality["mesh_edge_spread"].append(torch.zeros(1, device=device))
                        continue
                    pc, n = sample_surface(m.verts[None].float(), m.faces, gt.shape[1], gen, return_normals=True)
                    samples.append(pc[0])
                    normals.append(n[0])
                    edges = model.template_edges if m.faces is model.template_faces else mesh_edges(m.faces)
                    quality["mesh_self_intersection"].append(self_intersection_fraction(m.verts[None], m.faces))
                    quality["mesh_edge_spread"].append(edge_length_spread(m.verts[None], edges))
                clouds["mesh"], normals = torch.stack(samples), torch.stack(normals)
                gt_normals = data.target_normals(si, vi)
                if gt_normals is not None:
                    add("mesh_normal_consistency", surface_normal_consistency(clouds["mesh"], normals, gt, gt_normals))
                for k, v in quality.items():
                    add(k, torch.cat(v))
            for name, pc in clouds.items():
                add(f"{name}_cd", chamfer_distance(pc, gt))
                add(f"{name}_stray", stray_fraction(pc, gt, 0.05))
                for t, (p, r) in precision_recall(pc, gt, THRESHOLDS).items():
                    add(f"{name}_f1@{t:g}", f1(p, r))
                    if t in PR_THRESHOLDS:
                        add(f"{name}_precision@{t:g}", p)
                        add(f"{name}_recall@{t:g}", r)
        if on_batch is not None:
            on_batch(min(i + batch, len(pairs)), len(pairs))
    order = (["voxels_iou"] + [f"{h}_f1@{t:g}" for h in HEADS for t in THRESHOLDS] + [f"{h}_cd" for h in HEADS]
             + [f"{h}_stray" for h in HEADS] + list(MESH_QUALITY)
             + [f"{h}_{m}@{t:g}" for h in HEADS for m in ("precision", "recall") for t in PR_THRESHOLDS])
    if per_image:
        return {k: torch.cat(scores[k]).tolist() for k in order if k in scores}
    return {k: float(torch.cat(scores[k]).mean()) for k in order if k in scores}


def export_prediction(ctx: RunContext, model, image, pred, threshold: float) -> Iterator[Event]:
    """input.png, voxels.glb (cubes), points.ply, mesh.glb of one prediction."""
    from .export import save_image, save_mesh, save_point_cloud
    from .images import to_uint8
    from .single_view_net import prediction_geometry

    yield ctx.artifact("image", save_image(to_uint8(image.permute(1, 2, 0)), ctx.path("input.png")), "input (cropped)")
    geo = prediction_geometry(pred, model, threshold)
    empty = [k for k in ("voxels", "mesh") if k in geo and not geo[k].num_faces]  # an empty mesh: from the voxels
    if empty:
        files = " and ".join({"voxels": "voxel mesh", "mesh": "mesh from the voxels"}[k] for k in empty)
        yield Log(f"no voxel above probability {threshold}: no {files} written"
                  + ("; pick the icosphere for a mesh" if "mesh" in empty else ""), "warning")
    if "voxels" in geo and "voxels" not in empty:
        yield ctx.artifact("voxels", save_mesh(geo["voxels"], ctx.path("voxels.glb")), "voxels (.glb)")
    if "points" in geo:
        yield ctx.artifact("points", save_point_cloud(geo["points"], ctx.path("points.ply")), "point cloud (.ply)")
    if "mesh" in geo and "mesh" not in empty:
        yield ctx.artifact("mesh", save_mesh(geo["mesh"], ctx.path("mesh.glb")), "mesh (.glb)")
