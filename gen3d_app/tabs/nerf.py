"""NeRF tab: an example scene, an uploaded dataset .zip, or photos/a video -> NerfConfig; wiring only."""
from __future__ import annotations

import dataclasses

import gradio as gr

from .. import widgets

PIPELINE = "nerf"
MAX_DOWNSCALE = widgets.MAX_DOWNSCALE
PRESETS = ("custom", "cpu", "fast", "quality")  # "custom": the config defaults; tests check these match NerfConfig
TINY = dict(steps=30, downscale=8, batch_rays=256, max_views=8, eval_views=1, preview_every=5, n_coarse=16,
            n_fine=16, width=64, depth=4, hash_levels=8, hash_log2_size=14, mesh_resolution=32,
            turntable_frames=4)
"""GEN3D_TINY=1 caps (steps is a maximum): seconds on a CPU, for the browser test."""
STEP_SECONDS = {"cpu": {"cpu": 0.4}, "cuda": {"custom": 0.021, "fast": 0.021, "quality": 0.025}}
"""Seconds per step of the cow example: the cpu preset measured on this project's 2-core CPU machine with
OMP_NUM_THREADS=1 (2026-12-01 16:30 UTC, load average about 3.5 from other jobs; steps after the first preview, 1.6
s at a load of 8); the fast model on an H200 (bench/RESULTS.md: about 50 steps/s on lego)."""
FIXED_SECONDS = {"cpu": 60.0, "cuda": 20.0}
"""Loading the scene and the exports (held-out scores, turntable, mesh), which take a share of the run."""


def estimate(steps, preset) -> str:
    return widgets.estimate_text(steps, STEP_SECONDS, preset, FIXED_SECONDS)


def make_config(cls, scene, upload, model, preset, steps, seed, downscale, mesh_density=0.0, photos=None,
                space="auto"):
    cfg = widgets.preset_config(cls, preset)
    scene = widgets.scene_source(scene, upload, photos)
    cfg = dataclasses.replace(cfg, scene=scene, model=model, steps=int(steps), seed=int(seed or 0),
                              downscale=int(downscale), mesh_density=max(0.0, float(mesh_density or 0.0)),
                              space=space or "auto")
    cfg = widgets.tiny_capped(cfg, TINY)
    return cfg


def preset_values(preset):
    return widgets.preset_fields(PIPELINE, preset, "model", "steps", "downscale")


def default_preset() -> str:
    return widgets.default_preset(PRESETS, gpu="fast")  # cpu: the example in minutes on 2 cores


def build() -> None:
    scenes = widgets.example_dirs("scenes")
    default = default_preset()
    model0, steps0, downscale0 = preset_values(default)
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            scene = gr.Dropdown(scenes, value=scenes[0] if scenes else None, label="Example scene",
                                elem_id="nerf-scene", info="Blender-format posed images in assets/scenes/")
            photos, upload = widgets.capture_inputs(PIPELINE)
            model = gr.Radio(["fast", "vanilla"], value=model0, label="Model", elem_id="nerf-model",
                             info="fast: hash grid + occupancy grid; vanilla: the paper's MLP (slow)")
            preset = gr.Dropdown(list(PRESETS), value=default, label="Preset", elem_id="nerf-preset",
                                 info="cpu: small and quick without a GPU; fast/quality: for a GPU")
            steps = gr.Slider(1, 20000, value=steps0, step=1, label="Steps", elem_id="nerf-steps")
            eta = gr.Markdown(estimate(steps0, default), elem_id="nerf-estimate")
            with gr.Accordion("More", open=False):
                downscale = gr.Slider(1, MAX_DOWNSCALE, value=downscale0, step=1, label="Downscale images by",
                                      elem_id="nerf-downscale", info=widgets.DOWNSCALE_INFO)
                mesh_density = gr.Number(0.0, minimum=0, label="Mesh level (density; 0: auto)",
                                         elem_id="nerf-mesh-level",
                                         info="0 puts the mesh where the field is half opaque seen from outside, "
                                              "whatever its densities (short runs too); higher: a tighter surface")
                space = gr.Dropdown(["auto", "object", "forward", "unbounded"], value="auto", label="Scene space",
                                    elem_id="nerf-space", info="real captures: auto picks forward-facing (NDC) or "
                                    "360 (contracted, fast model) from the cameras; the log says which")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="nerf-seed")
            run = widgets.run_panel(PIPELINE)
        with gr.Column(scale=3):
            preview = widgets.preview_panel(PIPELINE, ("rgb", "depth", "opacity"))
            cameras = widgets.cameras_plot(PIPELINE)
    arts = widgets.artifacts_panel(PIPELINE)
    if scenes:
        gr.Examples([[scenes[0], "fast", default, steps0, 0, 1], [scenes[0], "vanilla", "custom", 500, 0, 2]],
                    inputs=[scene, model, preset, steps, seed, downscale], cache_examples=False,
                    elem_id="nerf-examples",
                    example_labels=[f"{scenes[0]}: fast, {default} preset, {steps0} steps",
                                    f"{scenes[0]}: vanilla, 500 steps, 1/2 res"])
    preset.input(preset_values, inputs=[preset], outputs=[model, steps, downscale], queue=False)
    steps.change(estimate, inputs=[steps, preset], outputs=[eta], queue=False, show_progress="hidden")
    widgets.wire_run(PIPELINE, make_config, dict(scene=scene, upload=upload, model=model, preset=preset,
                                                  steps=steps, seed=seed, downscale=downscale,
                                                  mesh_density=mesh_density, photos=photos, space=space),
                     run, preview, arts, {"cameras": cameras})

