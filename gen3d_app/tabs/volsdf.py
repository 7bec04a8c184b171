"""VolSDF tab: an example scene or an uploaded .zip, a neural or primitives SDF -> VolSDFConfig; wiring only."""
from __future__ import annotations

import dataclasses

import gradio as gr

from pipelines import UserInputError

from .. import widgets

PIPELINE = "volsdf"
MAX_DOWNSCALE = widgets.MAX_DOWNSCALE
PRESETS = ("custom", "cpu", "fast", "quality", "paper", "primitives", "zerogpu")  # "custom": the config defaults
TINY = dict(steps=30, downscale=4, batch_rays=256, max_views=8, eval_views=1, preview_every=5, n_coarse=16,
            n_fine=16, eikonal_points=128, width=32, hash_levels=4, hash_log2_size=12, mesh_resolution=32,
            turntable_frames=4, preview_size=64)
"""GEN3D_TINY=1 caps (steps is a maximum): seconds on a CPU, for the browser test."""
STEP_SECONDS = {"cpu": {"cpu": 0.36}, "cuda": {"custom": 0.032, "fast": 0.032, "zerogpu": 0.032}}
"""Seconds per step on the cow example: the cpu preset measured on this project's 2-core CPU machine with
OMP_NUM_THREADS=1 (2026-12-01 16:30 UTC, load average about 3.5 from other jobs; steps after the first preview; 1 s
at a load of 8, and the default config over 6 s); on an H200, 31 steps/s with the occupancy sampler at 300
march steps (lego, 3774 steps in 120 s; bench/RESULTS.md)."""
FIXED_SECONDS = {"cpu": 90.0, "cuda": 20.0}
"""Loading the scene, the first preview and the exports (held-out scores, turntable, mesh)."""


def default_preset() -> str:
    return widgets.default_preset(PRESETS)


def estimate(steps, preset) -> str:
    return widgets.estimate_text(steps, STEP_SECONDS, preset, FIXED_SECONDS)


def make_config(cls, scene, upload, field, primitives, preset, steps, seed, downscale, photos=None):
    cfg = widgets.preset_config(cls, preset)
    scene = widgets.scene_source(scene, upload, photos)
    if str(primitives or "").strip().lower().endswith(".json"):
        raise UserInputError("give primitive kinds here (e.g. box,box,sphere); .json starts are for the CLI")
    cfg = dataclasses.replace(cfg, scene=scene, field=field, primitives=primitives or cfg.primitives,
                              steps=int(steps), seed=int(seed or 0), downscale=int(downscale))
    cfg = widgets.tiny_capped(cfg, TINY)
    return cfg


def preset_values(preset):
    return widgets.preset_fields(PIPELINE, preset, "field", "steps", "downscale")


def build() -> None:
    scenes = widgets.example_dirs("scenes")
    first = "cow" if "cow" in scenes else (scenes[0] if scenes else None)
    preset0 = default_preset()
    field0, steps0, downscale0 = preset_values(preset0)
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            scene = gr.Dropdown(scenes, value=first, label="Example scene", elem_id="volsdf-scene",
                                info="Blender-format posed images in assets/scenes/ (primitives: known shapes); "
                                     "photos, a video or a .zip uploaded below are used instead")
            photos, upload = widgets.capture_inputs(PIPELINE)
            field = gr.Radio(["neural", "primitives"], value=field0, label="Field", elem_id="volsdf-field",
                             info="neural: MLP SDF + colour network; primitives: fit shapes' pose, size, colour")
            primitives = gr.Textbox("box,box,sphere", label="Primitives (for the primitives field)",
                                    elem_id="volsdf-primitives", info="comma-separated: sphere, box, torus, capsule")
            preset = gr.Dropdown(list(PRESETS), value=preset0, label="Preset", elem_id="volsdf-preset",
                                 info="cpu: minutes without a GPU; fast/quality/paper: for a GPU; zerogpu: fits a 120 s GPU slot")
            steps = gr.Slider(1, 20000, value=steps0, step=1, label="Steps", elem_id="volsdf-steps")
            eta = gr.Markdown(estimate(steps0, preset0), elem_id="volsdf-estimate")
            with gr.Accordion("More", open=False):
                downscale = gr.Slider(1, MAX_DOWNSCALE, value=downscale0, step=1, label="Downscale images by",
                                      elem_id="volsdf-downscale", info=widgets.DOWNSCALE_INFO)
                seed = gr.Number(0, precision=0, label="Seed", elem_id="volsdf-seed")
            run = widgets.run_panel(PIPELINE)
        with gr.Column(scale=3):
            preview = widgets.preview_panel(PIPELINE, ("rgb", "normal", "depth"))
            cameras = widgets.cameras_plot(PIPELINE)
    arts = widgets.artifacts_panel(PIPELINE)
    examples, labels = [], []
    if "primitives" in scenes:
        # From a ring start, seed 11 puts each kind near its object (other seeds may swap a box and the sphere).
        examples.append(["primitives", "primitives", "box,box,sphere", "primitives", 600, 11, 1])
        labels.append("primitives: fit two boxes and a sphere, 600 steps")
    if "cow" in scenes:
        cow = ["cow", "neural", "box,box,sphere", preset0, steps0, 0, downscale0]
        examples.append(cow if preset0 == "cpu" else ["cow", "neural", "box,box,sphere", "fast", 2000, 0, 1])
        labels.append(f"cow: neural SDF, {preset0} preset, {steps0} steps" if preset0 == "cpu" else
                      "cow: neural SDF, 2000 steps")
    if examples:
        gr.Examples(examples, inputs=[scene, field, primitives, preset, steps, seed, downscale], cache_examples=False,
                    elem_id="volsdf-examples", example_labels=labels)
    preset.input(preset_values, inputs=[preset], outputs=[field, steps, downscale], queue=False)
    steps.change(estimate, inputs=[steps, preset], outputs=[eta], queue=False, show_progress="hidden")
    widgets.wire_run(PIPELINE, make_config, dict(scene=scene, upload=upload, field=field, primitives=primitives,
                                                  preset=preset, steps=steps, seed=seed, downscale=downscale,
                                                  photos=photos), run, preview, arts, {"cameras": cameras})
