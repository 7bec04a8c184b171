"""The embedded tier of Point-E: the project's own small models in ``assets/pointe/`` (format: see
``point_e``'s module docstring), loaded from int8 prior folders, conditioned on the embedded scorer's embeddings.

Contract: ``load_embedded_models(folder, device, upsample, sdf)`` returns the keyword arguments of a
``point_e.PointEModels`` (this module does not import ``point_e``), whose ``encoder`` has ``image_vec(images)``
and ``text_vec(texts)`` (the scorer's unit embeddings), or raises
UserInputError when the folder is incomplete. ``load_model_folder(folder)`` loads one model folder.

Two base layouts, told apart by the base's config.json: ``"condition": "scorer"`` (a
``CLIPImagePointDiffusionTransformer`` reading one scorer embedding, image or caption: kind 'vec') and
``"condition": "scorer-grid"`` with ``"grid": {"features": F, "image_size": 64}`` (an
``EmbeddedGridPointDiffusionTransformer``: the image's grid of features F of ``GRID_FEATURES`` as tokens, plus the
scorer embedding added to every point; a prompt gives the caption's embedding and no grid: kind 'gridvec'). The
grid is ``grid_features(tower, view_pixels(images))``, the one function the pack's renders go through at training
time, so an image and the pack's render of it give the same tokens.
"""
from __future__ import annotations

import json
import warnings
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


GRID_FEATURES = ("fmap", "patches", "sv")
"""Image grids of the embedded grid base: 'fmap', the embedded scorer's image-tower feature map before its average
pool (4 x 4 cells of 256 channels for the shipped 64 px tower: 16 tokens); 'patches', the 64 px view on white cut
into 8 x 8 pixel patches (64 tokens of 192 values in [-1, 1]); 'sv', the single-view tab's model's ResNet-18 feature
map (4 x 4 cells of 512 channels) of the view put through that tab's preprocessing (the object cropped with its
margin, 128 px): an encoder trained to predict shapes, whose pooled feature retrieves better training shapes than
the scorer embedding does (bench/RESULTS.md)."""
GRID_NAMES = {"fmap": "the scorer's feature map", "patches": "pixel patches", "sv": "the single-view model's encoder"}
PATCH = 8
SINGLE_VIEW_DIR = Path(__file__).resolve().parents[3] / "assets" / "single_view" / "model"


def on_white(rgba):
    """(..., H, W, 4) uint8 straight-alpha renders -> (..., H, W, 3) uint8 on white (float, rounded once)."""
    import numpy as np

    x = np.asarray(rgba, dtype=np.float32) / 255
    return np.round((x[..., :3] * x[..., 3:] + (1 - x[..., 3:])) * 255).astype(np.uint8)


def view_pixels(images, size: int = 64):
    """Images (uint8 (H, W, 3|4) arrays, RGBA on white as ``on_white``, or PIL images, composited on white by
    ``to_pil``) -> (B, size, size, 3) uint8, resized bicubic when not ``size`` already."""
    import numpy as np
    from PIL import Image

    from .point_e_clip import to_pil

    out = []
    for im in images:
        if isinstance(im, np.ndarray) and im.ndim == 3 and im.shape[-1] == 4 and im.dtype == np.uint8:
            arr = on_white(im)
        elif isinstance(im, np.ndarray) and im.ndim == 3 and im.shape[-1] == 3 and im.dtype == np.uint8:
            arr = im
        else:
            arr = np.asarray(to_pil(im))
        if arr.shape[:2] != (size, size):
            arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BICUBIC))
        out.append(arr)
    return np.stack(out)


def load_image_tower(folder=None, device="cpu"):
    """The embedded scorer's image tower (an ``nn.Sequential`` ending in pool, flatten, linear) and its image size,
    from the verified scorer folder without its text encoder (what a bare GPU machine can load)."""
    import torch
    from safetensors.torch import load_file

    from .embedded import SCORER_DIR, build_scorer_model
    from .prior_folder import dequantize, verify

    folder = Path(folder or SCORER_DIR)
    if not (folder / "manifest.json").is_file():
        raise UserInputError(f"no embedded scorer in {folder} (manifest.json is missing): the grid base needs its "
                             "image tower")
    verify(folder)
    config = json.loads((folder / "config.json").read_text())
    model = build_scorer_model(config["scorer"])
    state = {}
    for name in config["weights"]:
        state.update(load_file(str(folder / name)))
    model.load_state_dict(dequantize(state))
    tower = model.image_tower.to(torch.device(device)).eval().requires_grad_(False)
    return tower, int(config["scorer"]["image_size"])


def load_single_view_tower(folder=None, device="cpu"):
    """The 'sv' grid's encoder: the single-view model's ResNet-18 (default the shipped one), with ``image_size`` and
    ``sha256`` (of its config.json, which holds its shards' sha256s: a base records the encoder it was trained on)."""
    import hashlib

    from ..single_view_net import load_checkpoint

    folder = Path(folder or SINGLE_VIEW_DIR)
    model, _ = load_checkpoint(folder, device)
    tower = model.encoder.eval().requires_grad_(False)
    tower.image_size = model.image_size
    tower.sha256 = hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()
    return tower


def load_grid_tower(grid: dict, device, where: str = "this Point-E base"):
    """The encoder of a grid base's tokens (``grid``: its config's {'features', 'image_size'[, 'single_view']}): the
    scorer's image tower, or for 'sv' the single-view model, which must be the one the base was trained on."""
    if grid.get("features") != "sv":
        return load_image_tower(None, device)[0]
    tower = load_single_view_tower(None, device)
    want = grid.get("single_view")
    if not want:
        raise UserInputError(f"{where} reads single-view features but does not record which single-view model made "
                             "them (its config.json has no grid 'single_view' sha256): re-export it with "
                             "`python -m pipelines pointe export`")
    if want != tower.sha256:
        raise UserInputError(f"{where} reads the features of another single-view model than the one in "
                             f"assets/single_view/model (its config.json sha256 {want[:12]}, found {tower.sha256[:12]}): "
                             "restore that model, or retrain the base on this one (`python -m pipelines pointe train "
                             "base --cond grid --grid sv`)")
    return tower


class CropWarning(UserWarning):
    """A view in which the single-view crop found no object (resized whole, framed unlike the training renders)."""


def single_view_crops(pixels, size: int):
    """(B, S, S, 3) uint8 views on white -> (B, 3, size, size) float in [0, 1]: the single-view tab's preprocessing
    (``prepare_array``); a view where it finds no object is resized whole."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ..single_view_net import prepare_array

    out, whole = [], 0
    for v in np.asarray(pixels):
        rgba = np.concatenate([v.astype(np.float32) / 255, np.ones((*v.shape[:2], 1), np.float32)], -1)
        try:
            out.append(torch.as_tensor(prepare_array(rgba, size)).permute(2, 0, 1).float())
        except UserInputError:
            whole += 1
            out.append(F.interpolate(torch.from_numpy(rgba[..., :3]).permute(2, 0, 1)[None], size=(size, size),
                                     mode="bilinear", align_corners=False)[0])
    if whole:  # framed unlike the rest: worth knowing when it happens to training renders
        warnings.warn(f"single-view crop: no object found in {whole} of {len(out)} views; those were resized whole",
                      CropWarning)
    return torch.stack(out)


def grid_features(tower, pixels, features: str = "fmap", batch: int = 256):
    """(B, S, S, 3) uint8 views on white (``view_pixels``; S the tower's image size, or any for 'sv') -> (B, grid_dim,
    grid_tokens) float32 tokens, on the tower's device: ``GRID_FEATURES``."""
    import torch

    from ..resnet import normalize

    if features not in GRID_FEATURES:
        raise UserInputError(f"unknown grid features {features!r}; choose one of {', '.join(GRID_FEATURES)}")
    dev = next(tower.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            if features == "sv":
                x = single_view_crops(pixels[i:i + batch], tower.image_size).to(dev)
                out.append(tower.feature_map(normalize(x)).flatten(2).float())
                continue
            v = torch.as_tensor(pixels[i:i + batch]).to(dev).permute(0, 3, 1, 2).float() / 255 * 2 - 1  # the scorer's
            if features == "fmap":
                out.append(tower[:-3](v).flatten(2).float())
            else:
                out.append(torch.nn.functional.unfold(v, PATCH, stride=PATCH))
    return torch.cat(out) if out else torch.zeros(0, device=dev)


def grid_shape(features: str, image_size: int, tower=None) -> tuple[int, int]:
    """(grid_dim, grid_tokens) of ``features`` for views of ``image_size`` (the tower's output for 'fmap' and 'sv')."""
    import torch

    if features == "patches":
        return 3 * PATCH * PATCH, (image_size // PATCH) ** 2
    dev = next(tower.parameters()).device
    with torch.no_grad():
        if features == "sv":
            f = tower.feature_map(torch.zeros(1, 3, tower.image_size, tower.image_size, device=dev))
        else:
            f = tower[:-3](torch.zeros(1, 3, image_size, image_size, device=dev))
    return int(f.shape[1]), int(f.shape[2] * f.shape[3])


class ScorerGridEncoder(ScorerEncoder):
    """``ScorerEncoder`` plus ``grid(images)``: the image grid of the embedded grid base (``grid_features``)."""

    def __init__(self, scorer, features: str = "fmap", image_size: int = 64, tower=None):
        super().__init__(scorer)
        self.features, self.image_size = features, image_size
        self.tower = tower if tower is not None else scorer.model.image_tower

    def grid(self, images):
        return grid_features(self.tower, view_pixels(images, self.image_size), self.features)


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
    if condition not in ("scorer", "scorer-grid"):
        raise UserInputError(f"{folder / 'base'}: unknown conditioning {condition!r} (this version reads 'scorer' "
                             "and 'scorer-grid')")
    scorer = load_embedded_scorer(device)
    if condition == "scorer-grid":
        grid = {"features": "fmap", **cfg.get("grid", {})}
        tower = load_grid_tower(grid, device, str(folder / "base"))  # float32, as at training time
        encoder = ScorerGridEncoder(scorer, grid["features"], int(grid.get("image_size", 64)), tower)
    else:
        encoder = ScorerEncoder(scorer)
    names = dict(kind="gridvec" if condition == "scorer-grid" else "vec", base=cfg["model"].get("name", "base"),
                 upsampler="upsample" if up is not None else "off", sdf="sdf" if sdf_model is not None else "off",
                 clip="embedded scorer")
    if condition == "scorer-grid":
        names["grid"] = GRID_NAMES.get(grid["features"], grid["features"])
    return dict(tier="embedded", source=str(folder), base_name="embedded", base=base, upsampler=up, sdf=sdf_model,
                encoder=encoder, names=names)
