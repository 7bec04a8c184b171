"""Magic3D's mesh, around the two training loops of ``pipelines/magic3d.py``: the conversion of the coarse density
field to a DMTet grid over its surface, the colour field read on the mesh as a volumetric texture, and the
exports (baked texture, turntable of both stages, coarse mesh, checkpoints, run settings).

Contract: ``cfg`` is a ``pipelines.magic3d.Magic3DConfig`` (not imported: methods import core, never the reverse).
``threshold(cfg)`` -> the ``--surface-threshold`` density or None ('auto'); ``coarse_to_dmtet(cfg, student, dev,
metrics)`` is a generator (one Log) returning (DMTet, the coarse marching-cubes Mesh with albedo vertex colours);
``fine_view(cfg)`` -> (distance, field of view in degrees) of the fine cameras' middle; ``texture_radius(cfg, res)``
the colour filter's world-space standard deviation; ``colour_fn(student, cfg, radius)`` points (N, 3) -> albedo
(N, 3); ``export_run(...)`` yields the run's artifacts and writes run.json.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Iterator

from ..config import RunContext, UserInputError
from ..events import Event, Log


def fine_view(cfg) -> tuple[float, float]:
    """(distance, field of view in degrees) of the fine cameras' middle: previews, turntables and the benchmark's
    renders of the mesh frame it as the fine stage's training views did."""
    return (0.5 * (cfg.fine_camera_distance_min + cfg.fine_camera_distance_max),
            0.5 * (cfg.fine_fov_min + cfg.fine_fov_max))


def texture_radius(cfg, res: int) -> float:
    """World-space standard deviation of the colour field's filter: ``texture_blur`` pixels of a res x res fine
    render at the fine cameras' middle distance and field of view."""
    dist, fov = fine_view(cfg)
    return max(0.0, cfg.texture_blur) * 2 * dist * math.tan(math.radians(fov) / 2) / res


def colour_fn(student, cfg, radius: float):
    """The volumetric texture of the fine stage (renders, previews, the baked texture): the coarse field's albedo,
    filtered over ``radius`` (``core.texture.filtered``)."""
    from .texture import filtered

    return filtered(student.albedo, radius, cfg.texture_samples, cfg.seed, cfg.texture_checkpoint)



def threshold(cfg) -> float | None:
    """The surface threshold override, or None for 'auto'."""
    text = str(cfg.surface_threshold).strip().lower()
    if text in ("", "auto"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserInputError(f"--surface-threshold must be 'auto' or a number, not {cfg.surface_threshold!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UserInputError("--surface-threshold must be a positive density (or 'auto')")
    return value


def coarse_to_dmtet(cfg, student, dev, metrics: dict) -> Iterator[Event]:
    """Coarse field -> DMTet grid over its surface's box; returns (DMTet, the coarse marching-cubes mesh)."""
    import torch

    from .dmtet import DMTet, surface_box, surface_threshold
    from .geometry import grid_points, marching_cubes

    r, bound = cfg.mesh_resolution, student.radius  # a refined checkpoint keeps its own sphere
    with torch.no_grad():
        points = grid_points(r, -bound, bound, dev).reshape(-1, 3)
        density = torch.cat([student.density(points[i:i + (1 << 18)]) for i in range(0, len(points), 1 << 18)])
    override = threshold(cfg)
    tau = override if override is not None else surface_threshold(density)
    box = surface_box(points, density, tau)
    if box is None:
        densest = float(density.max())
        raise UserInputError(f"no coarse surface at density {tau:.4g} (the densest point is {densest:.4g}): "
                             f"{'lower --surface-threshold' if override is not None else 'set --surface-threshold'} "
                             f"to a density below {densest:.4g}, or train the coarse stage longer")
    dmtet = DMTet.from_density(student.density, box[0], box[1], cfg.tet_resolution, tau).to(dev)
    if not ((dmtet.sdf < 0).any() and (dmtet.sdf > 0).any()):
        raise UserInputError(f"the tet grid finds no surface at density {tau:.4g}: change --surface-threshold "
                             "(or raise --tet-resolution)")
    coarse_mesh = marching_cubes(density.reshape(r, r, r).cpu(), tau, -bound, bound)
    with torch.no_grad():
        verts, faces = dmtet()
        if len(coarse_mesh.verts):
            coarse_mesh.vert_colors = student.albedo(coarse_mesh.verts.to(dev)).cpu()
    size = (box[1] - box[0]).tolist()
    metrics.update(surface_threshold=tau, tets=float(len(dmtet.tets)), dmtet_faces_start=float(len(faces)),
                   coarse_mesh_faces=float(coarse_mesh.num_faces))
    yield Log(f"conversion: surface at density {tau:.4g} ({'set' if override is not None else 'auto'}), tet grid "
              f"{cfg.tet_resolution}^3 ({len(dmtet.tets):,} tets) over a {size[0]:.2f} x {size[1]:.2f} x "
              f"{size[2]:.2f} box; first mesh {len(faces):,} faces")
    return dmtet, coarse_mesh


def export_run(cfg, ctx: RunContext, student, background, dmtet, coarse_mesh, coarse: tuple,
               metrics: dict, prior_name: str) -> Iterator[Event]:
    """The textured mesh (.glb; .obj + .mtl + .png), the turntable of both stages (``coarse``: the coarse field,
    its occupancy grid and the ray maker), the coarse mesh, the fine checkpoint and the run's settings."""
    import numpy as np
    import torch

    from .budget import export_seconds, turntable
    from .cameras import orbit_cameras
    from .dmtet import surface_view
    from .export import save_mesh, save_textured_obj, save_video
    from .images import normals_to_uint8, to_uint8
    from .text3d import render_view
    from .texture import bake_texture

    yield Log(f"baking the texture ({cfg.texture_size}^2)")
    texture = colour_fn(student, cfg, metrics["texture_radius"])
    with torch.no_grad():
        verts, faces = dmtet()
        mesh, coverage, unwrapper = bake_texture(verts, faces, texture, cfg.texture_size)
    metrics.update(mesh_faces=float(mesh.num_faces), texture_coverage=coverage)
    if unwrapper != "xatlas":
        yield Log("xatlas is not installed (pip install xatlas): the texture has one small chart per face, which "
                  "wastes texels and puts a seam on every edge", "warning")
    yield ctx.artifact("mesh", save_mesh(mesh, ctx.path("mesh.glb")), f"textured mesh (.glb) ({prior_name})")
    labels = {".obj": ("mesh", "textured mesh (.obj)"), ".mtl": ("file", "its material (.mtl)"),
              ".png": ("image", f"its texture ({cfg.texture_size}^2 .png)")}
    for path in save_textured_obj(mesh, ctx.path("mesh.obj")):
        kind, label = labels.get(path.suffix, ("file", path.name))
        yield ctx.artifact(kind, path, label)

    coarse_field, grid, rays = coarse
    dist, fov = fine_view(cfg)  # both stages framed as the fine stage saw the object

    @torch.no_grad()
    def frame(k: int, n: int):
        cam = orbit_cameras(n, dist, 15.0, fov, cfg.preview_size)[k]
        view = render_view(coarse_field, None, rays, cam.c2w, fov, cfg.preview_size, cfg.n_samples,
                           cfg.n_importance, grid)
        fine = surface_view(*dmtet(), texture, cam.c2w.to(ctx.device), fov, cfg.preview_size)
        return np.concatenate([to_uint8(view["rgb"]), normals_to_uint8(view["normal"], view["opacity"][..., None]),
                               fine["rgb"], fine["normal"]], axis=1)

    if coarse_field is not None:  # exports cost in proportion to the run
        budget = export_seconds(metrics.get("coarse_seconds", 0.0) + metrics.get("fine_seconds", 0.0))
        frames = yield from turntable(frame, cfg.turntable_frames, budget)
        yield ctx.artifact("video", save_video(frames, ctx.path("turntable.mp4")),
                           f"turntable: coarse rgb | normals, fine rgb | normals ({prior_name})")
    if coarse_mesh.num_faces:
        yield ctx.artifact("mesh", save_mesh(coarse_mesh, ctx.path("coarse_mesh.glb")), "coarse mesh (.glb)")
    torch.save({"method": "magic3d", "config": asdict(cfg), "student": student.state_dict(),
                "background": background.state_dict(), "dmtet": dmtet.state_dict(),
                "texture_radius": metrics["texture_radius"]}, ctx.path("model.pt"))
    yield ctx.artifact("checkpoint", ctx.path("model.pt"), "fine checkpoint (DMTet and colour field)")
    settings = {"prompt": cfg.prompt, "negative_prompt": cfg.negative_prompt, "prior": prior_name,
                "config": asdict(cfg), "metrics": metrics}
    ctx.path("run.json").write_text(json.dumps(settings, indent=1))
    yield ctx.artifact("json", ctx.path("run.json"), f"run settings: prompt, prior {prior_name}")
