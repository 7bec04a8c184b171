"""The CLIP ViT-L/14 features Point-E's models are conditioned on, through transformers' CLIPModel.

Contract: ``load_point_e_clip(source, device, dtype)`` takes a Hub id (``openai/clip-vit-large-patch14``) or a
local folder (``CLIPModel.save_pretrained`` + tokenizer files), loads it once per process behind its own
``ModelCache`` and returns a ``PointECLIP``:
- ``grid(images) -> (B, 1024, 256)``: the vision tower's last hidden state, patch tokens only (no class token),
  before the final layer norm, channels first: what the released grid models (base40M/300M/1B, upsample) read;
- ``image_vec(images) / text_vec(texts) -> (B, 768)``: unit-length projected embeddings (base40M-imagevec /
  -textvec).
Images are PIL images (or uint8 HxWx3 arrays), preprocessed as OpenAI's CLIP does with PIL only: bicubic resize
of the shorter side to 224, centre crop, mean/std; transparent pixels are composited on white first.
Importing this module imports neither torch nor transformers.
"""
from __future__ import annotations

from pathlib import Path

from ...config import UserInputError
from .clip import CLIP_MEAN, CLIP_STD, HUB_FILES, check_folder, open_folder
from .hub import ModelCache, hub_snapshot

DEFAULT_CLIP_L = "openai/clip-vit-large-patch14"


def where_to_get_clip() -> str:
    return (f"Point-E reads CLIP ViT-L/14: give the Hub id {DEFAULT_CLIP_L} or a local folder holding it "
            f"(config.json, model.safetensors, vocab.json + merges.txt), e.g. from `hf download {DEFAULT_CLIP_L} "
            "--local-dir DIR` where there is internet.")


def to_pil(image):
    """A PIL RGB image from a PIL image of any mode or a uint8 (H, W, 3|4) array; alpha is composited on white."""
    import numpy as np
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise UserInputError(f"expected an 8-bit image, got an array of {image.dtype}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise UserInputError(f"expected an image, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


def clip_preprocess(images, size: int = 224, mean=CLIP_MEAN, std=CLIP_STD):
    """Images -> (B, 3, size, size) float32: shorter side resized to ``size`` (bicubic), centre crop, normalised."""
    import numpy as np
    import torch
    from PIL import Image

    out = []
    for image in images:
        img = to_pil(image)
        w, h = img.size
        short, long = min(w, h), max(w, h)
        new_long = int(size * long / short)  # the length torchvision's Resize(size) gives the longer side
        nw, nh = (size, new_long) if w <= h else (new_long, size)
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
        out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
    x = torch.stack(out)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


class PointECLIP:
    """A frozen CLIPModel and its tokenizer, giving the grid and vector features Point-E's models take.

    Args:
        model: a transformers CLIPModel; tokenizer: its CLIPTokenizer(Fast); name: what the UI shows.
    """

    def __init__(self, model, tokenizer, name: str = ""):
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        vc = model.config.vision_config
        self.image_size = int(vc.image_size)
        self.grid_dim, self.grid_tokens = int(vc.hidden_size), (int(vc.image_size) // int(vc.patch_size)) ** 2
        self.vec_dim = int(model.config.projection_dim)
        self.name = name or "CLIP"

    def pixel_values(self, images):
        return clip_preprocess(images, self.image_size).to(self.device, self.dtype)

    def grid(self, images):
        """Images -> (B, grid_dim, grid_tokens) float32: patch tokens of the last layer, before post_layernorm."""
        import torch

        with torch.no_grad():
            hidden = self.model.vision_model(pixel_values=self.pixel_values(images)).last_hidden_state
        return hidden[:, 1:].transpose(1, 2).float().contiguous()

    def image_vec(self, images):
        """Images -> (B, vec_dim) unit float32 embeddings."""
        import torch

        from .clip import _features

        with torch.no_grad():
            emb = _features(self.model.get_image_features(pixel_values=self.pixel_values(images))).float()
        return torch.nn.functional.normalize(emb, dim=-1)

    def text_vec(self, texts: list[str]):
        """Captions -> (B, vec_dim) unit float32 embeddings (cut at the text tower's 77 tokens)."""
        import torch

        from .clip import _features

        n = int(min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings))
        with torch.no_grad():
            tok = self.tokenizer(list(texts), padding="max_length", max_length=n, truncation=True,
                                 return_tensors="pt").to(self.device)
            emb = _features(self.model.get_text_features(input_ids=tok.input_ids,
                                                         attention_mask=tok.attention_mask)).float()
        return torch.nn.functional.normalize(emb, dim=-1)


_CACHE = ModelCache()


def load_point_e_clip(source: str, device, dtype: str = "auto") -> PointECLIP:
    """The CLIP for a Hub id or a local folder ('' means ViT-L/14), cached per process."""
    return _CACHE.load((source or "").strip() or DEFAULT_CLIP_L, "CLIP", where_to_get_clip(), device, dtype,
                       load_folder, download)


def clear_cache() -> None:
    _CACHE.clear()


def download(repo_id: str) -> Path:
    return hub_snapshot(repo_id, HUB_FILES, where_to_get_clip())


def load_folder(folder: Path, device, dtype, name: str = "") -> PointECLIP:
    import torch

    folder = Path(folder)
    check_folder(folder, where_to_get_clip())
    model, tokenizer = open_folder(folder, dtype)
    return PointECLIP(model.to(torch.device(device)), tokenizer, name=name or str(folder))
