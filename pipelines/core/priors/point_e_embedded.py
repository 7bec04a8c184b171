"""The embedded tier of Point-E: the project's own small models in ``assets/pointe/`` (format: see
``point_e``'s module docstring), loaded from int8 prior folders, conditioned on the embedded scorer's embeddings.

Contract: ``load_embedded_models(folder, device, upsample, sdf)`` returns the keyword arguments of a
``point_e.PointEModels`` (this module does not import ``point_e``), whose ``encoder`` has ``image_vec(images)``
and ``text_vec(texts)`` (the scorer's unit embeddings), or raises
UserInputError when the folder is incomplete. ``load_model_folder(folder)`` loads one model folder.
"""
from __future__ import annotations

import json
from pathlib import Path

from ...config import UserInputError


def load_model_folder(folder: Path, device):
    """(model, config) of one prior folder written by ``prior_folder.save_prior`` with config["model"]."""
    import torch
    from safetensors.torch import load_file

    from ..point_diffusion import build_model
    from .prior_folder import dequantize, verify

    verify(folder)
    config = json.loads((folder / "config.json").read_text())
    if "model" not in config:
        raise UserInputError(f"{folder / 'config.json'} has no 'model' config: not a Point-E model folder")
    state = {}
    for name in config["weights"]:
        state.update(load_file(str(folder / name)))
    model = build_model(config["model"])
    model.load_state_dict(dequantize(state), strict=True)
    return model.to(torch.device(device)).eval().requires_grad_(False), config


class ScorerEncoder:
    """The embedded scorer as a Point-E conditioning encoder: one unit vector per image or caption."""

    def __init__(self, scorer):
        self.scorer, self.name = scorer, getattr(scorer, "name", "embedded scorer")

    def image_vec(self, images):
        import numpy as np
        import torch

        from .point_e_clip import to_pil

        size = int(getattr(self.scorer, "image_size", 64))
        arrays = [np.asarray(to_pil(im).resize((size, size)), dtype=np.float32) / 255 for im in images]
        x = torch.from_numpy(np.stack(arrays)).to(self.scorer.device)
        with torch.no_grad():
            return self.scorer.encode_images(x).float()

    def text_vec(self, texts):
        return self.scorer.encode_text(list(texts)).float()


def load_embedded_models(folder: Path, device, upsample: bool = True, sdf: bool = True):
    from .embedded import load_embedded_scorer

    folder = Path(folder)
    if not (folder / "base" / "manifest.json").is_file():
        raise UserInputError(f"no embedded Point-E models in {folder} (base/manifest.json is missing): the project "
                             "does not ship them yet. Use the official checkpoints (a folder with base_40m.pt, "
                             "upsample_40m.pt, sdf.pt).")
    base, cfg = load_model_folder(folder / "base", device)
    up = load_model_folder(folder / "upsample", device)[0] if upsample and (folder / "upsample").is_dir() else None
    sdf_model = load_model_folder(folder / "sdf", device)[0] if sdf and (folder / "sdf").is_dir() else None
    condition = cfg.get("condition", "scorer")
    if condition != "scorer":
        raise UserInputError(f"{folder / 'base'}: unknown conditioning {condition!r} (this version reads 'scorer')")
    encoder = ScorerEncoder(load_embedded_scorer(device))
    names = dict(kind="vec", base=cfg["model"].get("name", "base"), upsampler="upsample" if up is not None else "off",
                 sdf="sdf" if sdf_model is not None else "off", clip="embedded scorer")
    return dict(tier="embedded", source=str(folder), base_name="embedded", base=base, upsampler=up, sdf=sdf_model,
                encoder=encoder, names=names)
