"""The released Point-E configs (point_e/models/configs.py) and checkpoint file names, without torch (the UI
reads them at build time); the networks are in ``point_diffusion``."""
from __future__ import annotations

_BASE = dict(cond_drop_prob=0.1, heads=8, init_scale=0.25, input_channels=6, layers=12, n_ctx=1024,
             output_channels=12, time_token_cond=True, width=512)
MODEL_CONFIGS: dict[str, dict] = {
    "base40M-imagevec": dict(_BASE, name="CLIPImagePointDiffusionTransformer", token_cond=True),
    "base40M-textvec": dict(_BASE, name="CLIPImagePointDiffusionTransformer", token_cond=True),
    "base40M-uncond": {k: v for k, v in dict(_BASE, name="PointDiffusionTransformer").items() if k != "cond_drop_prob"},
    "base40M": dict(_BASE, name="CLIPImageGridPointDiffusionTransformer"),
    "base300M": dict(_BASE, name="CLIPImageGridPointDiffusionTransformer", heads=16, layers=24, width=1024),
    "base1B": dict(_BASE, name="CLIPImageGridPointDiffusionTransformer", heads=32, layers=24, width=2048),
    "upsample": dict(_BASE, name="CLIPImageGridUpsamplePointDiffusionTransformer", n_ctx=3072, cond_ctx=1024,
                     channel_biases=[0.0, 0.0, 0.0, -1.0, -1.0, -1.0],
                     channel_scales=[2.0, 2.0, 2.0, 0.007843137255, 0.007843137255, 0.007843137255]),
    "sdf": dict(name="CrossAttentionPointCloudSDFModel", decoder_heads=4, decoder_layers=4, encoder_heads=4,
                encoder_layers=8, init_scale=0.25, n_ctx=4096, width=256),
}
"""The released configs (point_e/models/configs.py). Extra keys a small model may set (the test and embedded
tiers): ``clip_dim`` (vec feature size, 768 for ViT-L/14), ``grid_dim`` and ``grid_tokens`` (1024 and 256: ViT-L/14's
width and its 16 x 16 patch grid)."""
CHECKPOINT_FILES = {"base40M-imagevec": "base_40m_imagevec.pt", "base40M-textvec": "base_40m_textvec.pt",
                    "base40M-uncond": "base_40m_uncond.pt", "base40M": "base_40m.pt", "base300M": "base_300m.pt",
                    "base1B": "base_1b.pt", "upsample": "upsample_40m.pt", "sdf": "sdf.pt"}
"""The official file name of each config's weights."""


def model_kind(config: str | dict) -> str:
    """'grid', 'vec', 'uncond', 'upsample' or 'sdf': what conditioning a config takes."""
    name = (MODEL_CONFIGS[config] if isinstance(config, str) else config)["name"]
    return {"PointDiffusionTransformer": "uncond", "CLIPImagePointDiffusionTransformer": "vec",
            "CLIPImageGridPointDiffusionTransformer": "grid", "EmbeddedGridPointDiffusionTransformer": "grid",
            "UpsamplePointDiffusionTransformer": "upsample",
            "CLIPImageGridUpsamplePointDiffusionTransformer": "upsample",
            "CrossAttentionPointCloudSDFModel": "sdf"}[name]
