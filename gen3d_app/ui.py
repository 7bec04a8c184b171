"""build_demo(): the Gradio Blocks app (header, one tab per pipeline, one GPU queue). No torch at import.

Launch settings that Gradio 6 takes in ``launch()`` (theme, css) are in ``launch_kwargs()``.
"""
from __future__ import annotations

import os

import gradio as gr

from pipelines import PIPELINES

from . import outputs, runner, widgets
from .tabs import TABS

CSS = """
.gen3d-status { min-height: 2.6em; }
/* Gradio's "Error" badge sat on top of the status text, which already says what went wrong (and a toast too) */
.gen3d-status > [data-testid="status-tracker"]:has(> .error) { display: none; }
#gen3d-header h1 { margin-bottom: 0.1em; }
"""


def header_md() -> str:
    methods = " · ".join(f"**{s.title}** ({s.summary})" for s in PIPELINES.values())
    tiny = "  \n**Tiny mode** (GEN3D_TINY): runs are capped to a few steps at low resolution." \
        if widgets.tiny_mode() else ""
    return (f"# gen3d\nReadable PyTorch implementations of 3D generation methods; every run streams "
            f"live previews, a loss curve and exports (mesh, turntable video).  \n"
            f"Methods: {methods}  \nDevice: **{runner.detect_device()}** · one run at a time, others wait in the "
            f"queue; Stop cancels a run and frees its memory.{tiny}")


def build_demo() -> gr.Blocks:
    outputs.sweep()  # old runs from earlier sessions
    ttl = int(max(outputs.ttl_seconds(), 3600))  # Gradio's own cache of served files: same age limit
    with gr.Blocks(title="gen3d", delete_cache=(3600, ttl)) as demo:
        gr.Markdown(header_md(), elem_id="gen3d-header")
        with gr.Tabs():
            for name, spec in PIPELINES.items():
                with gr.Tab(spec.title, id=name):
                    if name in TABS:
                        TABS[name].build()
                    else:
                        gr.Markdown(f"{spec.summary}.  \nNo web UI yet: run `python -m pipelines {name} --help`.")
    demo.queue(max_size=int(os.environ.get("GEN3D_QUEUE_SIZE", "32")))
    return demo


def launch_kwargs() -> dict:
    """Gradio 6 takes theme and css in launch(). Run folders may live outside the cwd ($GEN3D_OUTPUTS): allowed
    so that Gradio may copy them into its cache; ``outputs.SessionFiles`` serves each session only its own."""
    from starlette.middleware import Middleware

    return dict(theme=gr.themes.Soft(primary_hue="indigo"), css=CSS, show_error=True,
                allowed_paths=[str(outputs.root())], app_kwargs={"middleware": [Middleware(outputs.SessionFiles)]})
