"""DreamFields tab: a caption and a CLIP scorer -> DreamFieldsConfig; wiring only."""
from __future__ import annotations

import dataclasses

import gradio as gr

from pipelines.core.priors import clip

from .. import runner, widgets

PIPELINE = "dreamfields"
PRESETS = ("custom", "cpu", "fast", "quality", "zerogpu")  # "custom": the config defaults
TINY = dict(steps=20, batch_size=1, resolution=32, n_samples=16, width=32, depth=2, preview_every=5,
            mesh_resolution=32, turntable_frames=4, preview_size=64, eval_views=2)
"""GEN3D_TINY=1 caps (steps is a maximum): seconds on a CPU once the scorer is loaded, for browser tests."""
EXAMPLES = ["a bouquet of flowers in a vase", "a red apple", "a small wooden chair", "a blue ceramic teapot"]
EMBEDDED_EXAMPLES = ["a red armchair", "a wooden table", "a yellow duck"]  # in the embedded scorer's data
STEP_SECONDS = {"cpu": {"cpu": 0.13}, "cuda": {"custom": 0.044}}
"""Seconds per step with the embedded scorer, measured on this project's 2-core CPU machine with OMP_NUM_THREADS=1
(2026-12-01 16:30 UTC, load average about 3.5 from other jobs; steps after the first preview; issue 15 measured 24 s
a step for the default config there), and on an H200 with CLIP ViT-B/32, eager (bench/RESULTS.md: 43.9 ms)."""
FIXED_SECONDS = {"cpu": 45.0, "cuda": 30.0}
"""Loading the scorer (5-12 s measured on the CPU machine), the first preview and the exports (a share of the run)."""


def default_preset() -> str:
    return widgets.default_preset(PRESETS)


def estimate(steps, preset) -> str:
    return widgets.estimate_text(steps, STEP_SECONDS, preset, FIXED_SECONDS)


def make_config(cls, caption, steps, seed, scorer, preset):
    caption = widgets.prompt_value(caption, "caption")
    cfg = widgets.preset_config(cls, preset)
    cfg = dataclasses.replace(cfg, caption=caption, steps=int(steps), seed=int(seed or 0),
                              scorer=widgets.model_source(scorer, clip.default_scorer()))
    cfg = dataclasses.replace(cfg, scorer_compile=runner.fast_mode(PIPELINE, cfg.steps))
    cfg = widgets.tiny_capped(cfg, TINY)
    return cfg


def preset_values(preset):
    return widgets.preset_fields(PIPELINE, preset, "steps")


def scorer_note() -> str:
    from pipelines.core.priors.embedded import known_examples

    offline = ("`embedded` is gen3d's own offline scorer, a small CLIP-style model trained on renders of "
               "furniture and household objects: it knows captions like *a red armchair*, *a wooden dining table*, "
               "*a yellow duck*, and little else (real CLIP knows far more). From its training captions: "
               + ", ".join(f"*{e}*" for e in known_examples("scorer")) + "." if clip.embedded_scorer_available()
               else "**No CLIP scorer is available offline:** gen3d does not ship one yet, so a run needs a CLIP "
                    "model from the Hugging Face Hub (downloaded once, ~600 MB) or a local folder.")
    gpu = "" if runner.has_cuda() else (" Without a GPU the tab opens on the `cpu` preset (a smaller field and "
                                         "renders, a few minutes); the default config takes 30x as long a step.")
    return (f"{offline} The scorer: a Hub id, or a folder of a transformers CLIPModel under the model roots "
            f"(GEN3D_MODEL_ROOTS).{gpu}{runner.fast_mode_note(PIPELINE)}")


def build() -> None:
    choices = list(clip.KNOWN_CLIP) + ([clip.EMBEDDED] if clip.embedded_scorer_available() else [])
    embedded = clip.default_scorer() == clip.EMBEDDED
    examples = EMBEDDED_EXAMPLES + EXAMPLES if embedded else EXAMPLES
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            caption = widgets.text_input("Caption", examples[0], elem_id="dreamfields-caption",
                                         info="a sentence: CLIP reads 77 tokens, the embedded scorer 32")
            scorer = gr.Dropdown(choices, value=clip.default_scorer(), allow_custom_value=True, label="Scorer",
                                 elem_id="dreamfields-scorer", info="Hub id or local folder of a CLIP model")
            gr.Markdown(scorer_note(), elem_id="dreamfields-scorer-note")
            preset0 = default_preset()
            preset = gr.Dropdown(list(PRESETS), value=preset0, label="Preset", elem_id="dreamfields-preset",
                                 info="cpu: minutes without a GPU; fast: a smaller field, 2000 steps; quality: bigger "
                                      "field, more crops; zerogpu: fast's field, fits a 120 s GPU slot")
            steps = gr.Slider(1, 30000, value=preset_values(preset0), step=1, label="Steps",
                              elem_id="dreamfields-steps")
            eta = gr.Markdown(estimate(preset_values(preset0), preset0), elem_id="dreamfields-estimate")
            seed = gr.Number(0, precision=0, label="Seed", elem_id="dreamfields-seed")
            run = widgets.run_panel(PIPELINE)
        with gr.Column(scale=3):
            preview = widgets.preview_panel(PIPELINE, ("rgb", "opacity", "background"))
    arts = widgets.artifacts_panel(PIPELINE)
    gr.Examples([[c, preset0, preset_values(preset0), 0] for c in examples], inputs=[caption, preset, steps, seed],
                cache_examples=False, elem_id="dreamfields-examples")
    if clip.embedded_scorer_available():
        from pipelines.core.priors.embedded import credits_markdown

        with gr.Accordion("Embedded scorer: training data credits", open=False):
            gr.Markdown(credits_markdown(), elem_id="dreamfields-credits")
    preset.input(preset_values, inputs=[preset], outputs=[steps], queue=False)
    steps.change(estimate, inputs=[steps, preset], outputs=[eta], queue=False, show_progress="hidden")
    widgets.wire_run(PIPELINE, make_config, dict(caption=caption, steps=steps, seed=seed, scorer=scorer,
                                                  preset=preset), run, preview, arts)
