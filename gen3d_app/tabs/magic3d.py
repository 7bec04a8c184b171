"""Magic3D tab: a prompt and a diffusion prior -> Magic3DConfig (coarse field, then a textured DMTet mesh); wiring
only."""
from __future__ import annotations

import dataclasses

import gradio as gr

from pipelines.core import priors

from .. import runner, widgets
from .dreamfusion import EMBEDDED_EXAMPLES, EXAMPLES

PIPELINE = "magic3d"
PRESETS = ("custom", "cpu", "fast", "quality", "zerogpu")  # "custom": the config defaults; tests check these match
TINY = dict(coarse_steps=10, fine_steps=10, resolution=32, n_samples=16, hash_levels=8, hash_log2_size=14,
            hash_max_res=256, occupancy_resolution=32, tet_resolution=16, fine_resolution=64, mesh_resolution=32,
            texture_size=128, turntable_frames=4, preview_size=64, preview_every=5)
"""GEN3D_TINY=1 caps (the step counts are maxima): seconds on a CPU once the prior is loaded, for browser tests."""
STEP_SECONDS = {"cpu": {"cpu": 1.4}}
"""Seconds per step (coarse and fine alike) with the embedded prior and the cpu preset's sizes, measured on this
project's 2-core CPU machine with OMP_NUM_THREADS=1 while other jobs shared it (2026-12-01: 300 coarse steps at
1.47 s, 150 fine steps at 1.35 s). GPU step times: runner.GPU_SECONDS_PER_STEP, from bench/magic3d.py."""
FIXED_SECONDS = {"cpu": 90.0, "cuda": 40.0}
"""Loading the prior, the conversion to a tet grid, and the exports (texture baking, turntable)."""


def estimate(coarse_steps, fine_steps, preset) -> str:
    return widgets.estimate_text(int(coarse_steps or 0) + int(fine_steps or 0), STEP_SECONDS, preset, FIXED_SECONDS)


def make_config(cls, prompt, negative_prompt, guidance_scale, coarse_steps, fine_steps, tet_resolution,
                surface_threshold, seed, prior, preset, from_coarse=None):
    prompt = widgets.prompt_value(prompt, "prompt")
    negative_prompt = widgets.prompt_value(negative_prompt, "negative prompt", required=False)
    cfg = widgets.preset_config(cls, preset)
    cfg = dataclasses.replace(cfg, prompt=prompt, negative_prompt=negative_prompt,
                              guidance_scale=float(guidance_scale), coarse_steps=int(coarse_steps),
                              fine_steps=int(fine_steps), tet_resolution=int(tet_resolution),
                              surface_threshold=str(surface_threshold or "auto").strip() or "auto",
                              seed=int(seed or 0), prior=widgets.model_source(prior, priors.default_diffusion()),
                              from_coarse=str(from_coarse or ""))
    cfg = dataclasses.replace(cfg, prior_compile=runner.fast_mode(PIPELINE, cfg.coarse_steps + cfg.fine_steps))
    if widgets.tiny_mode():
        cfg = dataclasses.replace(cfg, **{**TINY, "coarse_steps": min(cfg.coarse_steps, TINY["coarse_steps"]),
                                          "fine_steps": min(cfg.fine_steps, TINY["fine_steps"])})
    return cfg


def default_preset() -> str:
    return widgets.default_preset(PRESETS)


def preset_values(preset):
    return widgets.preset_fields(PIPELINE, preset, "coarse_steps", "fine_steps", "tet_resolution")


def prior_note() -> str:
    embedded = ""
    if priors.embedded_diffusion_available():
        embedded = ("`embedded` is gen3d's own offline prior, a 64 px pixel-space model that knows furniture and "
                    "household objects (" + ", ".join(f"*{e}*" for e in EMBEDDED_EXAMPLES) + "). **With it the "
                    "fine stage renders at 64 x 64**, the size it sees, instead of Stable Diffusion's 512 x 512: "
                    "the mesh still gets sharper, but the baked texture only holds the detail a 64 px view "
                    "shows (blurry colours, no fine print). ")
    else:
        embedded = ("**No diffusion prior is available offline:** a run needs a Stable Diffusion model from the "
                    "Hugging Face Hub (downloaded once, ~5 GB) or a local folder. ")
    gpu = "" if runner.has_cuda() else " Without a GPU each step takes seconds: use few steps."
    return (f"{embedded}With Stable Diffusion (the default prior) the coarse stage sees 64 px renders and the fine "
            f"stage 512 px ones, as in the paper. The prior: a Hub id, or a diffusers folder (SD 1.x/2.x) under the "
            f"model roots (GEN3D_MODEL_ROOTS); a run names the prior it used in its log and its files.{gpu}"
            f"{runner.fast_mode_note(PIPELINE)}")


def build() -> None:
    choices = list(priors.KNOWN_DIFFUSION) + ([priors.EMBEDDED] if priors.embedded_diffusion_available() else [])
    default = priors.default_diffusion()
    examples = EMBEDDED_EXAMPLES + EXAMPLES if default == priors.EMBEDDED else EXAMPLES
    coarse0, fine0, tets0 = preset_values(default_preset())
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            prompt = widgets.text_input("Prompt", examples[0], elem_id="magic3d-prompt",
                                        info="view suffixes (front / side / back / overhead view) are added per camera")
            negative = widgets.text_input("Negative prompt", elem_id="magic3d-negative", lines=1,
                                          placeholder="e.g. blurry, low quality")
            prior = gr.Dropdown(choices, value=default, allow_custom_value=True, label="Prior",
                                elem_id="magic3d-prior", info="Hub id or local folder of a diffusers model")
            gr.Markdown(prior_note(), elem_id="magic3d-prior-note")
            preset = gr.Dropdown(list(PRESETS), value=default_preset(), label="Preset", elem_id="magic3d-preset",
                                 info="cpu: small, minutes on a CPU; fast: fewer steps; quality: longer, finer mesh; "
                                      "zerogpu: fits a 120 s GPU slot")
            coarse_steps = gr.Slider(1, 20000, value=coarse0, step=1, label="Coarse steps (hash-grid field)",
                                     elem_id="magic3d-coarse-steps")
            fine_steps = gr.Slider(1, 10000, value=fine0, step=1, label="Fine steps (textured mesh)",
                                   elem_id="magic3d-fine-steps")
            eta = gr.Markdown(estimate(coarse0, fine0, default_preset()), elem_id="magic3d-estimate")
            with gr.Accordion("More", open=False):
                tets = gr.Slider(8, 128, value=tets0, step=1, label="Tet-grid resolution", elem_id="magic3d-tets",
                                 info="cells per side of the DMTet grid (64: 1.6 M tets)")
                threshold = gr.Textbox("auto", label="Surface threshold", elem_id="magic3d-threshold",
                                       info="coarse density at the surface: 'auto' or a number (raise it for a "
                                            "puffy shell, lower it when parts go missing)")
                scale = gr.Slider(1, 200, value=100, step=0.5, label="Guidance scale", elem_id="magic3d-scale")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="magic3d-seed")
                from_coarse = gr.File(label="Refine a coarse checkpoint (Magic3D coarse.pt or DreamFusion model.pt)",
                                      file_types=[".pt"], elem_id="magic3d-from-coarse")
            run = widgets.run_panel(PIPELINE)
        with gr.Column(scale=3):
            preview = widgets.preview_panel(PIPELINE, ("rgb", "normal", "opacity", "sds"))
    arts = widgets.artifacts_panel(PIPELINE)
    gr.Examples([[p, "", default_preset(), coarse0, fine0, 0] for p in examples],
                inputs=[prompt, negative, preset, coarse_steps, fine_steps, seed], cache_examples=False,
                elem_id="magic3d-examples")
    preset.input(preset_values, inputs=[preset], outputs=[coarse_steps, fine_steps, tets], queue=False)
    for steps in (coarse_steps, fine_steps):
        steps.change(estimate, inputs=[coarse_steps, fine_steps, preset], outputs=[eta], queue=False,
                     show_progress="hidden")
    widgets.wire_run(PIPELINE, make_config, dict(prompt=prompt, negative_prompt=negative, guidance_scale=scale,
                                                  coarse_steps=coarse_steps, fine_steps=fine_steps,
                                                  tet_resolution=tets, surface_threshold=threshold, seed=seed,
                                                  prior=prior, preset=preset, from_coarse=from_coarse),
                     run, preview, arts)
