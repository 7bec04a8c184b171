"""VolSDF tab: an example scene or an uploaded .zip, a neural or primitives SDF -> VolSDFConfig; wiring only."""
from __future__ import annotations

import dataclasses

import gradio as gr

from pipelines import UserInputError

from .. import widgets

PIPELINE = "volsdf"
PRESETS = ("custom", "fast", "quality", "paper", "primitives")  # "custom": the config defaults
TINY = dict(steps=30, downscale=4, batch_rays=256, max_views=8, eval_views=1, preview_every=5, n_coarse=16,
            n_fine=16, eikonal_points=128, width=32, hash_levels=4, hash_log2_size=12, mesh_resolution=32,
            turntable_frames=4, preview_size=64)
"""GEN3D_TINY=1 caps (steps is a maximum): seconds on a CPU, for the browser test."""


def make_config(cls, scene, upload, field, primitives, preset, steps, seed, downscale):
    cfg = widgets.preset_config(cls, preset)
    scene = widgets.scene_source(scene, upload)
    if str(primitives or "").strip().lower().endswith(".json"):
        raise UserInputError("give primitive kinds here (e.g. box,box,sphere); .json starts are for the CLI")
    cfg = dataclasses.replace(cfg, scene=scene, field=field, primitives=primitives or cfg.primitives,
                              steps=int(steps), seed=int(seed or 0), downscale=int(downscale))
    cfg = widgets.tiny_capped(cfg, TINY)
    return cfg


def preset_values(preset):
    """Preset -> (field, steps, downscale) shown in the inputs, so a person sees what a preset does."""
    from pipelines import PIPELINES

    cls, _ = PIPELINES[PIPELINE].load()
    cfg = widgets.preset_config(cls, preset)
    return cfg.field, cfg.steps, cfg.downscale


def build() -> None:
    scenes = widgets.example_dirs("scenes")
    first = "cow" if "cow" in scenes else (scenes[0] if scenes else None)
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            scene = gr.Dropdown(scenes, value=first, label="Example scene", elem_id="volsdf-scene",
                                info="Blender-format posed images in assets/scenes/ (primitives: known shapes)")
            upload = gr.File(label="…or upload a scene (.zip)", file_types=[".zip"], height=140,
                             elem_id="volsdf-upload")
            field = gr.Radio(["neural", "primitives"], value="neural", label="Field", elem_id="volsdf-field",
                             info="neural: MLP SDF + colour network; primitives: fit shapes' pose, size, colour")
            primitives = gr.Textbox("box,box,sphere", label="Primitives (for the primitives field)",
                                    elem_id="volsdf-primitives", info="comma-separated: sphere, box, torus, capsule")
            preset = gr.Dropdown(list(PRESETS), value="custom", label="Preset", elem_id="volsdf-preset")
            steps = gr.Slider(1, 20000, value=3000, step=1, label="Steps", elem_id="volsdf-steps")
            with gr.Accordion("More", open=False):
                downscale = gr.Slider(1, 8, value=1, step=1, label="Downscale images by", elem_id="volsdf-downscale")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="volsdf-seed")
            run = widgets.run_panel(PIPELINE)
        with gr.Column(scale=3):
            preview = widgets.preview_panel(PIPELINE, ("rgb", "normal", "depth"))
    arts = widgets.artifacts_panel(PIPELINE)
    examples, labels = [], []
    if "primitives" in scenes:
        # From a ring start, seed 11 puts each kind near its object (other seeds may swap a box and the sphere).
        examples.append(["primitives", "primitives", "box,box,sphere", "primitives", 600, 11, 1])
        labels.append("primitives: fit two boxes and a sphere, 600 steps")
    if "cow" in scenes:
        examples.append(["cow", "neural", "box,box,sphere", "fast", 2000, 0, 1])
        labels.append("cow: neural SDF, 2000 steps")
    if examples:
        gr.Examples(examples, inputs=[scene, field, primitives, preset, steps, seed, downscale], cache_examples=False,
                    elem_id="volsdf-examples", example_labels=labels)
    preset.input(preset_values, inputs=[preset], outputs=[field, steps, downscale], queue=False)
    widgets.wire_run(PIPELINE, make_config, dict(scene=scene, upload=upload, field=field, primitives=primitives,
                                                  preset=preset, steps=steps, seed=seed, downscale=downscale),
                     run, preview, arts)
