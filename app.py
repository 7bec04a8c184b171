"""Hugging Face Spaces entry point: build the demo and serve it (``python app.py``).

Host and port come from GRADIO_SERVER_NAME (default 127.0.0.1; Spaces sets 0.0.0.0) and GRADIO_SERVER_PORT
(default 7860). Importing this module builds the demo but neither launches it nor imports torch.
"""
import os

from gen3d_app.ui import build_demo, launch_kwargs

demo = build_demo()

if __name__ == "__main__":
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), **launch_kwargs())
