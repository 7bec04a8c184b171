"""DreamFusion tab: a prompt and a diffusion prior -> DreamFusionConfig; wiring only."""
from __future__ import annotations

import dataclasses

import gradio as gr

from pipelines.core import priors

from .. import runner, widgets

PIPELINE = "dreamfusion"
PRESETS = ("custom", "cpu", "fast", "quality", "zerogpu")  # "custom": the config defaults; tests check these match the config
TINY = dict(steps=20, resolution=32, n_samples=16, n_importance=0, width=32, depth=2, preview_every=5,
            mesh_resolution=32, turntable_frames=4, preview_size=64)
"""GEN3D_TINY=1 caps (steps is a maximum): seconds on a CPU once the prior is loaded, for browser tests."""
EXAMPLES = ["a DSLR photo of a hamburger", "a ripe strawberry", "a wooden rocking chair", "a blue ceramic teapot"]
EMBEDDED_EXAMPLES = ["a chair", "a lamp", "a plant", "a bottle"]
"""Prompts the embedded prior turned into the right object (bench/RESULTS.md: ranked first by the scorer)."""
STEP_SECONDS = {"cpu": {"cpu": 0.47, "custom": 3.0}, "cuda": {"custom": 0.045}}
"""Seconds per step with the embedded prior, measured on this project's 2-core CPU machine with OMP_NUM_THREADS=1
(2026-12-01 16:30 UTC, load average about 3.5 from other jobs; steps after the first preview; at a load of 8 they
took 4x as long), and on an H200 with Stable Diffusion 2.1-base, eager (bench/RESULTS.md: 44.6 ms)."""
FIXED_SECONDS = {"cpu": 60.0, "cuda": 30.0}
"""Loading the prior (10-30 s measured on the CPU machine), the first preview and the exports (a share of the run)."""


def default_preset() -> str:
    return widgets.default_preset(PRESETS)


def estimate(steps, preset) -> str:
    return widgets.estimate_text(steps, STEP_SECONDS, preset, FIXED_SECONDS)


def make_config(cls, prompt, negative_prompt, guidance_scale, steps, seed, prior, preset):
    prompt = widgets.prompt_value(prompt, "prompt")
    negative_prompt = widgets.prompt_value(negative_prompt, "negative prompt", required=False)
    cfg = widgets.preset_config(cls, preset)
    cfg = dataclasses.replace(cfg, prompt=prompt, negative_prompt=negative_prompt,
                              guidance_scale=float(guidance_scale), steps=int(steps), seed=int(seed or 0),
                              prior=widgets.model_source(prior, priors.default_diffusion()))
    cfg = dataclasses.replace(cfg, prior_compile=runner.fast_mode(PIPELINE, cfg.steps))
    cfg = widgets.tiny_capped(cfg, TINY)
    return cfg


def preset_values(preset):
    return widgets.preset_fields(PIPELINE, preset, "steps")


def prior_note() -> str:
    if priors.embedded_diffusion_available():
        from pipelines.core.priors.embedded import known_examples

        known = ", ".join(f"*{e}*" for e in known_examples("diffusion"))
        offline = ("`embedded` is gen3d's own offline prior: a small 64 px pixel-space diffusion model trained on "
                   "renders of furniture and household objects. It knows prompts like "
                   + ", ".join(f"*{e}*" for e in EMBEDDED_EXAMPLES)
                   + f" and little else (Stable Diffusion knows far more). From its training captions: {known}.")
    else:
        offline = ("**No diffusion prior is available offline:** a run needs a Stable Diffusion model from the "
                   "Hugging Face Hub (downloaded once, ~5 GB) or a local folder.")
    gpu = "" if runner.has_cuda() else (
        " Without a GPU the tab opens on the `cpu` preset (a smaller render, a few minutes); the default student "
        "takes about ten times as long a step, Stable Diffusion far longer.")
    return (f"{offline} The prior: a Hub id, or a diffusers folder (SD 1.x/2.x) under the model roots "
            f"(GEN3D_MODEL_ROOTS).{gpu}{runner.fast_mode_note(PIPELINE)}")


def build() -> None:
    choices = list(priors.KNOWN_DIFFUSION) + ([priors.EMBEDDED] if priors.embedded_diffusion_available() else [])
    default = priors.default_diffusion()
    examples = EMBEDDED_EXAMPLES + EXAMPLES if default == priors.EMBEDDED else EXAMPLES
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            prompt = widgets.text_input("Prompt", examples[0], elem_id="dreamfusion-prompt",
                                        info="view suffixes (front / side / back / overhead view) are added per camera")
            negative = widgets.text_input("Negative prompt", elem_id="dreamfusion-negative", lines=1,
                                          placeholder="e.g. blurry, low quality")
            prior = gr.Dropdown(choices, value=default, allow_custom_value=True, label="Prior",
                                elem_id="dreamfusion-prior", info="Hub id or local folder of a diffusers model")
            gr.Markdown(prior_note(), elem_id="dreamfusion-prior-note")
            preset0 = default_preset()
            preset = gr.Dropdown(list(PRESETS), value=preset0, label="Preset", elem_id="dreamfusion-preset",
                                 info="cpu: 32 px renders, minutes without a GPU; fast: hash-grid student, 3000 steps; "
                                      "quality: bigger MLP, growing renders; zerogpu: fast's student, fits a 120 s GPU slot")
            steps = gr.Slider(1, 20000, value=preset_values(preset0), step=1, label="Steps",
                              elem_id="dreamfusion-steps")
            eta = gr.Markdown(estimate(preset_values(preset0), preset0), elem_id="dreamfusion-estimate")
            with gr.Accordion("More", open=False):
                scale = gr.Slider(1, 200, value=100, step=0.5, label="Guidance scale", elem_id="dreamfusion-scale",
                                  info="classifier-free guidance (DreamFusion: 100)")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="dreamfusion-seed")
            run = widgets.run_panel(PIPELINE)
        with gr.Column(scale=3):
            preview = widgets.preview_panel(PIPELINE, ("rgb", "normal", "opacity", "sds"))
    arts = widgets.artifacts_panel(PIPELINE)
    gr.Examples([[p, "", preset0, preset_values(preset0), 0] for p in examples],
                inputs=[prompt, negative, preset, steps, seed], cache_examples=False, elem_id="dreamfusion-examples")
    if priors.embedded_diffusion_available():
        from pipelines.core.priors.embedded import credits_markdown

        with gr.Accordion("Embedded prior: training data credits", open=False):
            gr.Markdown(credits_markdown(), elem_id="dreamfusion-credits")
    preset.input(preset_values, inputs=[preset], outputs=[steps], queue=False)
    steps.change(estimate, inputs=[steps, preset], outputs=[eta], queue=False, show_progress="hidden")
    widgets.wire_run(PIPELINE, make_config, dict(prompt=prompt, negative_prompt=negative, guidance_scale=scale,
                                                  steps=steps, seed=seed, prior=prior, preset=preset),
                     run, preview, arts)
