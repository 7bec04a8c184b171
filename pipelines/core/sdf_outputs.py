"""What a VolSDF run (pipelines/volsdf.py) shows and writes: the preview images of a rendered view, the
marching-cubes mesh's metrics (face count, watertightness, optionally its PSNR), and the exports at the end of a run
(turntable, held-out comparison, coloured mesh, fitted primitives, checkpoint). ``cfg`` is the run's
``VolSDFConfig`` (core does not import the methods)."""
from __future__ import annotations

import dataclasses
import json
from typing import Iterator

from ..config import RunContext
from ..events import Event, Log


def preview_images(view) -> dict:
    """A rendered view (rgb, depth, normal, opacity) -> the uint8 rgb, normal and depth previews."""
    import torch

    from .images import colormap, normals_to_uint8, to_uint8

    opacity = view["opacity"]
    normal = torch.nn.functional.normalize(view["normal"], dim=-1)
    return {"rgb": to_uint8(view["rgb"]), "normal": normals_to_uint8(normal, opacity[..., None]),
            "depth": colormap(view["depth"], mask=opacity > 0.5)}


def mesh_metrics(cfg, field, val, dev) -> dict[str, float]:
    """The marching-cubes mesh's face count and watertightness, and with ``mesh_psnr_views`` its PSNR."""
    from .metrics import mesh_psnr, mesh_stats
    from .sdf import sdf_to_mesh

    mesh = sdf_to_mesh(field, cfg.bound, cfg.mesh_resolution, dev, colors=cfg.mesh_psnr_views > 0)
    stats = mesh_stats(mesh)
    if cfg.mesh_psnr_views > 0:
        stats["mesh_psnr"] = mesh_psnr(mesh, val, cfg.mesh_psnr_views, 1.0 if cfg.white_background else 0.0, dev)
    return stats


def export_run(cfg, ctx: RunContext, modules, mesh_field, render_view, train, val, metrics,
               heldout: dict, space: str = "object", half=None) -> Iterator[Event]:
    """Turntable (forward-facing captures: a small circle in the cameras' plane), held-out comparison (``heldout``:
    view 0's render and truth as scoring made them), coloured mesh of ``mesh_field`` (a capture's: the SDF clipped
    to its box), fitted primitives and checkpoint."""
    import torch

    from .budget import export_seconds, grid_resolution
    from .export import save_mesh
    from .metrics import mesh_stats
    from .sdf import sdf_to_mesh
    from .sdf_primitives import primitives_to_json
    from .training import turntable_and_heldout

    dev, field = ctx.device, modules["field"]
    budget = export_seconds(metrics.get("train_seconds", 0.0))  # exports cost in proportion to the run
    yield from turntable_and_heldout(ctx, cfg, render_view, train, space, heldout, budget)

    with torch.no_grad():
        res = grid_resolution(lambda r: field.sdf(torch.zeros(r ** 3, 3, device=dev)), cfg.mesh_resolution, budget)
    yield Log(f"extracting the mesh ({res}^3 grid)" + ("" if space == "object" else ": the foreground surface, the "
                                                       "SDF inside its box (the background model is not meshed)"))
    mesh = sdf_to_mesh(mesh_field, cfg.bound, res, dev)
    metrics.update(mesh_stats(mesh))
    if mesh.num_faces == 0:
        yield Log("the SDF has no zero crossing inside the scene box: no mesh written", "warning")
    else:
        up = "y" if space == "forward" else "z"  # forward: the average camera's frame, y up (the viewer: its side)
        yield ctx.artifact("mesh", save_mesh(mesh, ctx.path("mesh.glb"), up), "mesh (.glb)")
        yield ctx.artifact("mesh", save_mesh(mesh, ctx.path("mesh.obj"), up), "mesh (.obj)")
    if cfg.field == "primitives":
        path = ctx.path("fitted_primitives.json")
        path.write_text(json.dumps(primitives_to_json(field.primitives(), cfg.smooth), indent=1))
        yield ctx.artifact("json", path, "fitted primitives (.json)")
    yield Log("writing the checkpoint")
    torch.save({"config": dataclasses.asdict(cfg), "state": modules.state_dict(), "space": space,
                "box_half": None if half is None else [float(h) for h in half],
                "cameras": {"train": train.c2w, "val": val.c2w}}, ctx.path("model.pt"))
    yield ctx.artifact("checkpoint", ctx.path("model.pt"), "checkpoint")
