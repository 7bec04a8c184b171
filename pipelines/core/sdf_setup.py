"""What a VolSDF run (pipelines/volsdf.py) builds before its loop: the field a config asks for (``build_field``) and
its optimiser (``make_optimizer``), the scene with the SDF's box placed in the field's cube [-bound, bound]^3
(``load_sdf_scene``: objects fill the cube, a real capture's foreground box is moved into it) and the SDF clipped to
that box for meshing (``BoxedSDF``). ``cfg`` is the run's ``VolSDFConfig`` (core does not import the methods)."""
from __future__ import annotations

from pathlib import Path

from ..config import RunContext
from ..events import Log


def build_field(cfg, device):
    from .primitive_fit import parse_primitives
    from .sdf import NeuralSDF
    from .sdf_primitives import PrimitiveSDF

    if cfg.field == "primitives":
        return PrimitiveSDF(parse_primitives(cfg.primitives, cfg.bound, cfg.seed), cfg.smooth).to(device)
    return NeuralSDF(cfg.bound, cfg.encoding, cfg.width, cfg.depth, cfg.feature_dim, cfg.n_freqs, cfg.hash_levels,
                     cfg.hash_log2_size, int(2048 * cfg.bound / 1.5), init_radius=cfg.init_radius).to(device)


def make_optimizer(cfg, field, density, background: bool = False):
    """Adam. primitives: lr on pose, size and beta, 5 lr on the colours (so they settle before the shapes
    chase colour errors); neural hash: lr on the grid, lr * mlp_lr_factor on the MLPs and beta; harmonic: lr on
    all."""
    import torch

    if cfg.field == "primitives":
        lr = cfg.lr or 1e-2
        colors = [field.color_logits]
        rest = [p for p in field.parameters() if p is not field.color_logits]
        groups = [{"params": rest + [density.b], "lr": lr}, {"params": colors, "lr": 5 * lr}]
    elif cfg.encoding == "hash":
        lr = cfg.lr or 1e-2
        grid = list(field.encoding.parameters())
        rest = [p for n, p in field.named_parameters() if not n.startswith("encoding.")]
        factor = cfg.mlp_lr_factor or (1.0 if background else 0.1)
        groups = [{"params": grid, "lr": lr}, {"params": rest + [density.b], "lr": lr * factor}]
    else:
        groups = [{"params": list(field.parameters()) + [density.b], "lr": cfg.lr or 5e-4}]
    if not cfg.tie_alpha:
        groups[-1]["params"].append(density.log_alpha)
    return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15)


def load_sdf_scene(cfg, ctx: RunContext, example: Path):
    """Generator of load_scene's events returning (LoadedScene, half (3,)): the scene (``cfg.scene``, empty:
    ``example``) with its cameras (and points, bounds) moved so that the SDF's box is [-half, half], centred in the
    field's [-bound, bound]^3.

    Objects (Blender scenes, images with alpha, ``space='object'``) fill the cube as before. A real capture in the
    'forward' or 'unbounded' space gets the box ``scene_space.foreground_box`` chooses from its cameras, bounds and
    sparse points, shifted and uniformly scaled (an SDF stays a distance) so its longest side spans the cube; what
    lies outside is the background model's (``scene_space.fit_to_foreground``). The choice is logged: the space, why,
    and the box."""
    import numpy as np

    from .scene_space import camera_layout, fit_to_foreground
    from .training import load_scene

    scene, space_line = None, ""
    gen = load_scene(cfg, example, ctx.out_dir, cfg.space, ("object", "forward", "unbounded"))
    try:
        while True:
            ev = next(gen)
            if isinstance(ev, Log) and ev.message.startswith("scene space:"):
                space_line = ev.message  # NeRF's wording (NDC, contraction): said below in VolSDF's
                continue
            yield ev
    except StopIteration as stop:
        scene = stop.value
    cube = np.full(3, float(cfg.bound))
    if scene.space == "object":
        if space_line:
            yield Log(space_line.replace("; this method renders", "; VolSDF renders")
                      + f"; the SDF's box is [-{cfg.bound:g}, {cfg.bound:g}]^3")
        return scene, cube
    c2w = scene.train.c2w.double().numpy()  # (before the move: the layout is the capture's)
    box = fit_to_foreground(scene, cfg.bound)
    half = box.half_in(cfg.bound)
    layout = "chosen from the cameras: " + camera_layout(c2w)[1] if cfg.space == "auto" else "as asked"
    yield Log(f"scene space: {scene.space}, {layout}. The SDF's box: {box.why}, "
              f"{' x '.join(f'{2 * h:.2f}' for h in half)} in the field's [-{cfg.bound:g}, {cfg.bound:g}]^3; beyond it "
              + ("the background model" if cfg.background_model != "none" else "nothing (--background-model none)"))
    return scene, half


class BoxedSDF:
    """An SDF field clipped to the box [-half, half] (the intersection: max of the two distances), for meshing a
    capture's foreground: outside the box the field was never trained. Colours and features are the field's."""

    def __init__(self, field, half):
        self.field, self.half = field, half

    def sdf(self, x):
        from .scene_space import box_sdf

        return self.field.sdf(x).maximum(box_sdf(x, self.half.to(x.device)))

    def geometry(self, x):
        return self.field.geometry(x)

    def color(self, x, normals, dirs, features):
        return self.field.color(x, normals, dirs, features)
