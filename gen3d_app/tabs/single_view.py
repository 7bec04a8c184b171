"""Single-view tab: an image (upload or example) -> voxels, points and a mesh side by side; or a training
run that streams loss curves and predictions. Inputs -> SingleViewConfig; wiring only."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gradio as gr

from pipelines import UserInputError
from pipelines.core.single_view_outputs import manifest_inference

from .. import runner, widgets

PIPELINE = "single_view"
ASSETS = widgets.REPO / "assets" / "single_view"
PRESETS = ("custom", "cpu", "gpu")  # "custom": the config defaults; tests check these match SingleViewConfig
HEADS = ["voxels", "points", "mesh"]
PREVIEW_KEYS = ("input", "voxels", "points", "mesh")
TINY = dict(steps=6, batch_size=4, image_size=32, width=8, hidden=32, n_points=128, ico_level=2, gt_points=256,
            preview_every=3, mixed_precision=False)
"""GEN3D_TINY=1 caps for train runs (steps is a maximum): seconds on a CPU, for the browser test."""
MESH_FROM = {"icosphere (the mesh head)": "icosphere", "voxels (Mesh R-CNN: the grid cubified, then fitted)": "voxels"}
"""The predict mode's mesh choices (label -> ``SingleViewConfig.mesh_from``)."""
STATUS_SCORES = (("voxels_iou", "voxel IoU"), ("points_f1@0.05", "points F1@5 %"), ("mesh_f1@0.05", "mesh F1@5 %"))


def model_status() -> str:
    """What the predict mode will use; reads the manifest without importing torch."""
    config, manifest = ASSETS / "model" / "config.json", ASSETS / "model" / "manifest.json"
    if not config.is_file():
        return ("**No trained checkpoint is shipped yet** (`assets/single_view/model/`): *Predict* cannot run until "
                "one is trained. Use *Train* below to watch a model learn from the shipped mini set, or train the "
                "real model on a GPU: `python -m pipelines single_view --preset gpu` (see the README).")
    m = json.loads(manifest.read_text()) if manifest.is_file() else {}
    m = m if isinstance(m, dict) else {}
    # Scores of the prediction as this tab makes it (the checkpoint's test-time settings): a manifest that predates
    # a setting carries them measured since under scores_as_predicted; a newer one was scored that way in training.
    shown = m.get("scores_as_predicted") if isinstance(m.get("scores_as_predicted"), dict) else m
    d, met, (inf, _) = m.get("data", {}), shown.get("metrics", {}), manifest_inference(m)
    scores = ", ".join(f"{name} {met[k]:.3f}" for k, name in STATUS_SCORES if k in met) or "see manifest.json"
    mirror, fit, threshold = inf.get("mirror_heads"), inf.get("mesh_fit_steps"), inf.get("voxel_threshold")
    weak, jitters, recall = inf.get("voxel_point_threshold"), inf.get("point_jitters"), inf.get("mesh_fit_recall")
    on = ", ".join(x for x in (shown.get("scored_on", ""), mirror and f"{mirror} with the mirrored image's",
                               jitters and f"points with {jitters} jittered copies'",
                               fit and f"mesh fitted to the points ({fit} steps"
                               + (f", recall weighted {recall:g})" if recall else ")"),
                               threshold is not None and f"voxels solid above {threshold:g}"
                               + (f" ({weak:g} where the points are)" if weak else "")) if x)
    return (f"**Shipped model**: trained on {d.get('train_shapes', '?')} shapes ({d.get('sources', '?')}), "
            f"{m.get('created', '')}. Held-out scores: {scores}" + (f" ({on})." if on else "."))


def make_config(cls, mode, image, preset, steps, heads, seed, mesh_from=None):
    """Inputs arrive unprocessed (the run event skips Gradio's preprocessing, whose error for a non-image shows
    internals): the image as Gradio's file dict, checked here."""
    cfg = widgets.preset_config(cls, preset)
    if mode == "predict":
        if mesh_from is not None and mesh_from not in MESH_FROM:
            raise UserInputError(f"pick the mesh from {' or '.join(MESH_FROM)}")
        # the user's pick, which the checkpoint's own setting must not replace
        picked = {} if mesh_from is None else dict(mesh_from=MESH_FROM[mesh_from], inference_given="mesh_from")
        return dataclasses.replace(cfg, mode="predict", image=widgets.image_file(image), **picked)
    if not heads:
        raise UserInputError("pick at least one decoder to train")
    cfg = dataclasses.replace(cfg, mode="train", steps=int(steps), heads=",".join(heads), seed=int(seed or 0))
    cfg = widgets.tiny_capped(cfg, TINY)
    return cfg


def points_figure(path: str | None):
    """A plotly 3D scatter of a .ply point cloud, seen from the input's side (-y), z up."""
    return widgets.points_figure(path)


def three_paths(paths: list[str] | None) -> tuple:
    """(voxels .glb, points .ply, mesh .glb) among a run's files (None for each one missing)."""
    paths = paths or []
    find = lambda name: next((p for p in paths if Path(p).name == name), None)  # noqa: E731
    return find("voxels.glb"), find("points.ply"), find("mesh.glb")


def three_views(paths: list[str] | None) -> tuple:
    """(voxels .glb, points figure, mesh .glb) from a run's files."""
    vox, pts, mesh = three_paths(paths)
    return vox, points_figure(pts), mesh


def preset_values(preset):
    return widgets.preset_fields(PIPELINE, preset, "steps")


def build() -> None:
    examples = sorted(str(p) for p in (ASSETS / "examples").glob("*.png"))
    default = "gpu" if runner.has_cuda() else "cpu"
    gr.Markdown(model_status(), elem_id="single_view-model-status")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            mode = gr.Radio(["predict", "train"], value="predict", label="Mode", elem_id="single_view-mode",
                            info="predict: reconstruct the image with the trained model; train: watch a model learn")
            image = gr.Image(type="filepath", label="Image (a PNG with transparency, or one object on a plain "
                             "background)", height=240, elem_id="single_view-image", sources=["upload", "clipboard"])
            mesh_from = gr.Radio(list(MESH_FROM), value=next(iter(MESH_FROM)), label="Mesh from",
                                 elem_id="single_view-mesh-from",
                                 info="predict: the icosphere is one closed sphere-like shell; the voxels keep a "
                                      "chair's legs and holes (Mesh R-CNN) but also miss whatever the voxel grid "
                                      "misses, more so on unusual pictures")
            if examples:
                gr.Examples(examples, inputs=[image], elem_id="single_view-examples", cache_examples=False,
                            label="Held-out renders (shapes the model never saw)")
            with gr.Accordion("Training", open=False):
                preset = gr.Dropdown(list(PRESETS), value=default, label="Preset", elem_id="single_view-preset",
                                     info="cpu: a small network on the mini set; gpu: the shipped model's recipe")
                steps = gr.Slider(1, 20000, value=preset_values(default), step=1, label="Steps",
                                  elem_id="single_view-steps")
                heads = gr.CheckboxGroup(HEADS, value=HEADS, label="Decoders to train (jointly)",
                                         elem_id="single_view-heads")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="single_view-seed")
            run = widgets.run_panel(PIPELINE)
        with gr.Column(scale=3):
            preview = widgets.preview_panel(PIPELINE, PREVIEW_KEYS)
    with gr.Row(equal_height=True):
        voxels = gr.Model3D(label="Voxels (.glb)", height=380, elem_id="single_view-voxels", interactive=False)
        points = gr.Plot(label="Point cloud", elem_id="single_view-points")
        mesh = gr.Model3D(label="Mesh (.glb)", height=380, elem_id="single_view-mesh", interactive=False)
    with gr.Row():
        files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="single_view-files")
        metrics = gr.Markdown(elem_id="single_view-metrics")
    credits = [ASSETS / "CREDITS.md", ASSETS / "model" / "CREDITS.md"]  # examples + mini set; the model's data
    with gr.Accordion("Data credits", open=False):
        gr.Markdown("\n\n".join(c.read_text() for c in credits if c.is_file()), elem_id="single_view-credits")
    preset.input(preset_values, inputs=[preset], outputs=[steps], queue=False)

    comps = {"status": run.status, "plot": preview.plot, "files": files, "metrics": metrics}
    comps.update({f"image:{k}": img for k, img in preview.images.items()})
    inner = widgets.make_handler(PIPELINE, make_config, comps, PREVIEW_KEYS)

    def run_handler(request: gr.Request, **values):  # the name widgets.make_handler's has (tests look for it)
        shown: dict = {}  # viewer -> file shown: a Model3D given its value again reloads and may stay blank
        for update in inner(request, **values):
            if isinstance(update, dict) and files in update:
                paths = dict(zip((voxels, points, mesh), (update[files] and three_paths(update[files])) or (None,) * 3))
                for viewer, path in paths.items():
                    if viewer not in shown or shown[viewer] != path:
                        shown[viewer] = path
                        update[viewer] = points_figure(path) if viewer is points else path
            yield update  # make_handler ends with a status-only update: Model3D stays blank when last

    inputs = dict(mode=mode, image=image, preset=preset, steps=steps, heads=heads, seed=seed, mesh_from=mesh_from)
    event = run.run.click(run_handler, inputs=None, inputs_kwargs=inputs,
                          outputs=list(comps.values()) + [voxels, points, mesh], concurrency_limit=runner.gpu_slots(),
                          concurrency_id=runner.GPU_QUEUE, show_progress="minimal", show_progress_on=[run.status],
                          trigger_mode="always_last", api_name=f"run_{PIPELINE}", preprocess=False)
    run.stop.click(lambda: "**Stopped.**", outputs=[run.status], cancels=[event], queue=False,
                   api_visibility="private")
