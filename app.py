"""Hugging Face Spaces entry point: build the demo and serve it (``python app.py``).

Host and port come from GRADIO_SERVER_NAME (default 127.0.0.1; Spaces sets 0.0.0.0) and GRADIO_SERVER_PORT
(default 7860). Importing this module builds the demo but neither launches it nor imports torch.
"""
import logging
import os

from gen3d_app.ui import build_demo, launch_kwargs

demo = build_demo()

if __name__ == "__main__":
    # One line per run requested, started, stopped and ended: what a Space's logs need to follow its queue.
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("gen3d").setLevel(logging.INFO)
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), **launch_kwargs())
