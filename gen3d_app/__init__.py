"""gen3d's Gradio app: ``ui.build_demo()`` builds it; no torch or model import happens here."""
