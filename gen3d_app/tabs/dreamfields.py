"""DreamFields tab: a caption and a CLIP scorer -> DreamFieldsConfig; wiring only."""
from __future__ import annotations

import dataclasses

import gradio as gr

from pipelines import UserInputError
from pipelines.core.priors import clip

from .. import widgets

PIPELINE = "dreamfields"
PRESETS = ("custom", "fast", "quality")  # "custom": the config defaults
TINY = dict(steps=20, batch_size=1, resolution=32, n_samples=16, width=32, depth=2, preview_every=5,
            mesh_resolution=32, turntable_frames=4, preview_size=64, eval_views=2)
"""GEN3D_TINY=1 caps (steps is a maximum): seconds on a CPU once the scorer is loaded, for browser tests."""
EXAMPLES = ["a bouquet of flowers in a vase", "a red apple", "a small wooden chair", "a blue ceramic teapot"]
EMBEDDED_EXAMPLES = ["a red armchair", "a wooden dining table", "a yellow duck"]  # in the embedded scorer's data


def make_config(cls, caption, steps, seed, scorer, preset):
    if not str(caption or "").strip():
        raise UserInputError("write a caption: what should CLIP see from every pose?")
    cfg = widgets.preset_config(cls, preset)
    cfg = dataclasses.replace(cfg, caption=str(caption).strip(), steps=int(steps), seed=int(seed or 0),
                              scorer=str(scorer or "").strip() or clip.DEFAULT_CLIP)
    cfg = widgets.tiny_capped(cfg, TINY)
    return cfg


def preset_values(preset):
    """Preset -> steps shown in the inputs."""
    from pipelines import PIPELINES

    cls, _ = PIPELINES[PIPELINE].load()
    return widgets.preset_config(cls, preset).steps


def scorer_note() -> str:
    from pipelines.core.priors.embedded import known_examples

    offline = ("`embedded` is gen3d's own offline scorer, a small CLIP-style model trained on renders of "
               "furniture and household objects: it knows captions like *a red armchair*, *a wooden dining table*, "
               "*a yellow duck*, and little else (real CLIP knows far more). From its training captions: "
               + ", ".join(f"*{e}*" for e in known_examples("scorer")) + "." if clip.embedded_scorer_available()
               else "**No CLIP scorer is available offline:** gen3d does not ship one yet, so a run needs a CLIP "
                    "model from the Hugging Face Hub (downloaded once, ~600 MB) or a local folder.")
    gpu = "" if widgets.has_cuda() else " Without a GPU each step takes about a second: use few steps."
    return f"{offline} The scorer: a Hub id or a local folder of a transformers CLIPModel.{gpu}"


def build() -> None:
    choices = list(clip.KNOWN_CLIP) + ([clip.EMBEDDED] if clip.embedded_scorer_available() else [])
    embedded = clip.default_scorer() == clip.EMBEDDED
    examples = EMBEDDED_EXAMPLES + EXAMPLES if embedded else EXAMPLES
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            caption = gr.Textbox(examples[0], label="Caption", elem_id="dreamfields-caption", lines=2,
                                 info="CLIP reads 77 tokens: a sentence or two")
            scorer = gr.Dropdown(choices, value=clip.default_scorer(), allow_custom_value=True, label="Scorer",
                                 elem_id="dreamfields-scorer", info="Hub id or local folder of a CLIP model")
            gr.Markdown(scorer_note(), elem_id="dreamfields-scorer-note")
            preset = gr.Dropdown(list(PRESETS), value="custom", label="Preset", elem_id="dreamfields-preset",
                                 info="fast: a smaller field, 2000 steps; quality: bigger field, more crops")
            steps = gr.Slider(1, 30000, value=preset_values("custom"), step=1, label="Steps",
                              elem_id="dreamfields-steps")
            seed = gr.Number(0, precision=0, label="Seed", elem_id="dreamfields-seed")
            run = widgets.run_panel(PIPELINE)
        with gr.Column(scale=3):
            preview = widgets.preview_panel(PIPELINE, ("rgb", "opacity", "background"))
    arts = widgets.artifacts_panel(PIPELINE)
    gr.Examples([[c, "custom", 0] for c in examples], inputs=[caption, preset, seed], cache_examples=False,
                elem_id="dreamfields-examples")
    if clip.embedded_scorer_available():
        from pipelines.core.priors.embedded import credits_markdown

        with gr.Accordion("Embedded scorer: training data credits", open=False):
            gr.Markdown(credits_markdown(), elem_id="dreamfields-credits")
    preset.input(preset_values, inputs=[preset], outputs=[steps], queue=False)
    widgets.wire_run(PIPELINE, make_config, dict(caption=caption, steps=steps, seed=seed, scorer=scorer,
                                                  preset=preset), run, preview, arts)
