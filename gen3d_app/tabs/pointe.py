"""Point-E tab: a prompt or a picture -> PointEConfig; the forming cloud streams, the final one is a plotly
scatter in its own colours, the mesh a Model3D; wiring only."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import gradio as gr

from pipelines.core import priors
from pipelines.core.priors import point_e

from .. import runner, widgets

PIPELINE = "pointe"
PRESETS = ("custom", "fast", "quality", "text")  # "custom": the config defaults; tests check these match PointEConfig
PREVIEW_KEYS = ("view", "points")
TINY = dict(steps=4, view_steps=4, grid_size=32, preview_size=64, preview_every=2)
"""GEN3D_TINY=1 caps (steps is a maximum): seconds on a CPU, for browser tests."""
EXAMPLES = ["a red motorcycle", "a corgi", "a wooden chair", "a green ceramic teapot"]
EMBEDDED_EXAMPLES = ["a red armchair", "a wooden table", "a yellow duck"]
"""What the embedded tier was trained on (furniture and pybullet_data objects, captioned like the scorer's data)."""
IMAGE_EXAMPLES = sorted(str(p) for p in (widgets.REPO / "assets" / "single_view" / "examples").glob("*.png"))[:4]


def make_config(cls, prompt, image, checkpoints, base_model, text_to_image, guidance_scale, steps, seed, upsample,
                mesh, grid_size, preset="custom"):
    image = widgets.image_file(image) if image else ""
    prompt = widgets.prompt_value(prompt, required=not image)
    default = point_e.default_source()
    source = str(checkpoints or "").strip()  # the app names only Hub ids, 'embedded' and folders under model roots
    source = source if source == default else widgets.model_source(source, default, named=(point_e.EMBEDDED,))
    cfg = widgets.preset_config(cls, preset)
    cfg = dataclasses.replace(cfg, prompt=prompt, image=image, checkpoints=source,
                              base_model=str(base_model), guidance_scale=float(guidance_scale), steps=int(steps),
                              seed=int(seed or 0), upsample=bool(upsample), mesh=bool(mesh), grid_size=int(grid_size),
                              text_to_image=widgets.model_source(text_to_image, priors.DEFAULT_DIFFUSION,
                                                                 named=(priors.EMBEDDED,)))
    return widgets.tiny_capped(cfg, TINY)


def models_note() -> str:
    """Which tier a run will use and, when the weights are missing, where to get them (no torch import)."""
    source = point_e.default_source()
    if source == point_e.EMBEDDED:
        return ("**Models:** the project's own embedded Point-E models (`assets/pointe/`), offline: 7 M parameters "
                "trained for minutes on one GPU on 715 furniture shapes and a stretched copy of each; an image is "
                "read through the single-view tab's encoder. Expect coarse clouds of about the right size and "
                "colours, not detailed shapes (held-out F1@5 % 0.55 from an image, 0.43 from a caption, against "
                "the nearest training shape's 0.50; bench/RESULTS.md). A "
                "prompt goes straight to their base model (no synthetic view). Give a folder of the official "
                "checkpoints to use the released ones.")
    found = [f for f in ("base_40m.pt", "upsample_40m.pt", "sdf.pt") if (Path(source) / f).is_file()]
    if len(found) == 3:
        return f"**Models:** the official Point-E checkpoints in `{Path(source).resolve()}` (real tier)."
    return ("**No Point-E weights here yet.** Runs need the official checkpoints: " + point_e.where_to_get()
            + " A prompt run also needs a text-to-image model for its view (or choose base40M-textvec), and "
              "CLIP ViT-L/14 (`openai/clip-vit-large-patch14`, or a `clip/` folder inside the checkpoint folder).")


def points_figure(path: str | None):
    """The final cloud in its own colours, z up, seen from the front and a little to the side."""
    return widgets.points_figure(path, height=420, size=2, eye=(0.8, -1.4, 0.6))


def final_cloud(paths: list[str] | None):
    return points_figure(next((p for p in paths or [] if Path(p).name == "points.ply"), None))


def wrap_handler(inner, files, cloud):
    """The run handler with the final cloud's figure added when the downloads arrive. (A separate clearing event
    on Run is not used: it was served after the run and blanked the figure.)"""

    def run_handler(request: gr.Request, **values):  # the name widgets.make_handler's has (tests look for it)
        for i, update in enumerate(inner(request, **values)):
            if isinstance(update, dict) and (i == 0 or files in update):  # the first update clears the last run's
                update[cloud] = final_cloud(update.get(files))
            yield update

    return run_handler


def preset_values(preset):
    return widgets.preset_fields(PIPELINE, preset, "steps", "base_model", "grid_size")


def build() -> None:
    choices = list(priors.KNOWN_DIFFUSION) + ([priors.EMBEDDED] if priors.embedded_diffusion_available() else [])
    gr.Markdown(models_note(), elem_id="pointe-models")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            examples = EMBEDDED_EXAMPLES if point_e.default_source() == point_e.EMBEDDED else EXAMPLES
            prompt = gr.Textbox(examples[0], label="Prompt", elem_id="pointe-prompt", lines=2,
                                info="text to a cloud, through a synthetic view with the released models "
                                     "(ignored when an image is given)")
            image = gr.Image(type="filepath", label="...or an image of one object (image to 3D)", height=200,
                             elem_id="pointe-image", sources=["upload", "clipboard"])
            preset = gr.Dropdown(list(PRESETS), value="custom", label="Preset", elem_id="pointe-preset",
                                 info="fast: 32 steps; quality: base1B; text: base40M-textvec, no view")
            steps0, base0, grid0 = preset_values("custom")
            grid0 = grid0 if runner.has_cuda() else min(grid0, 64)  # 128^3 SDF queries take ~4 min on 2 cores
            base_model = gr.Dropdown(list(point_e.BASE_MODELS), value=base0, label="Base model (real tier)",
                                     elem_id="pointe-base", info="grid models read the view; textvec reads the prompt")
            steps = gr.Slider(1, 128, value=steps0, step=1, label="Sampling steps per stage", elem_id="pointe-steps")
            scale = gr.Slider(0, 10, value=3.0, step=0.1, label="Guidance scale", elem_id="pointe-scale",
                              info="classifier-free guidance of the base model (Point-E: 3)")
            with gr.Row():
                upsample = gr.Checkbox(True, label="Upsample to 4096 points", elem_id="pointe-upsample")
                mesh = gr.Checkbox(True, label="Mesh (SDF model)", elem_id="pointe-mesh")
            with gr.Accordion("More", open=False):
                grid_size = gr.Slider(16, 256, value=grid0, step=1, label="Mesh grid size", elem_id="pointe-grid")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="pointe-seed")
                checkpoints = gr.Textbox(point_e.default_source(), label="Point-E checkpoints",
                                         elem_id="pointe-checkpoints",
                                         info="a folder with base_40m.pt, upsample_40m.pt, sdf.pt (or a Hub repo id)")
                text_to_image = gr.Dropdown(choices, value=priors.DEFAULT_DIFFUSION, allow_custom_value=True,
                                            label="Text-to-image model (the view)", elem_id="pointe-t2i")
            run = widgets.run_panel(PIPELINE)
        with gr.Column(scale=3):
            with gr.Row(equal_height=True):
                images = {k: gr.Image(label={"view": "view", "points": "forming cloud"}[k], interactive=False,
                                      height=280, elem_id=f"pointe-preview-{k}", placeholder=f"{k} preview")
                          for k in PREVIEW_KEYS}
            cloud = gr.Plot(label="Point cloud (drag to turn)", elem_id="pointe-cloud")
    with gr.Row(equal_height=True):
        model3d = gr.Model3D(label="Mesh (.glb)", height=380, elem_id="pointe-model3d", interactive=False)
        with gr.Column():
            files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="pointe-files")
            metrics = gr.Markdown(elem_id="pointe-metrics")
    gr.Examples([[p, None, "custom", steps0] for p in examples] + [["", p, "custom", steps0] for p in IMAGE_EXAMPLES],
                inputs=[prompt, image, preset, steps], cache_examples=False, elem_id="pointe-examples")
    preset.input(preset_values, inputs=[preset], outputs=[steps, base_model, grid_size], queue=False)

    comps = {"status": run.status, "model3d": model3d, "files": files, "metrics": metrics}
    comps.update({f"image:{k}": img for k, img in images.items()})
    handler = wrap_handler(widgets.make_handler(PIPELINE, make_config, comps, PREVIEW_KEYS), files, cloud)
    inputs = dict(prompt=prompt, image=image, checkpoints=checkpoints, base_model=base_model,
                  text_to_image=text_to_image, guidance_scale=scale, steps=steps, seed=seed, upsample=upsample,
                  mesh=mesh, grid_size=grid_size, preset=preset)
    event = run.run.click(handler, inputs=None, inputs_kwargs=inputs, outputs=list(comps.values()) + [cloud],
                          concurrency_limit=runner.gpu_slots(), concurrency_id=runner.GPU_QUEUE,
                          show_progress="minimal", show_progress_on=[run.status], trigger_mode="always_last",
                          api_name=f"run_{PIPELINE}")
    widgets.wire_stop(PIPELINE, run, event)
