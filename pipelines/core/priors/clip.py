"""Image-text scorer (DreamFields' prior): CLIP through transformers' CLIPModel, in the three tiers.

Contract: ``load_scorer(source, device, dtype)`` takes a Hub id, a local folder (what ``CLIPModel.save_pretrained``
plus a tokenizer writes: config.json, model.safetensors, vocab.json + merges.txt or tokenizer.json, optionally
preprocessor_config.json) or "embedded", loads it once per process (a cache holding one model) and returns a
``CLIPScorer``: ``encode_text(list[str]) -> (N, D)`` unit rows (no grad), ``encode_images((B, H, W, 3) in [0, 1])
-> (B, D)`` unit rows, differentiable (CLIP's resize and mean/std normalisation inside), ``score = cosine``.
The test tier, ``tiny_clip(folder)``, saves a tiny random CLIPModel and a small tokenizer that load through the
same path. Importing this module imports neither torch nor transformers. Problems a person can fix are
``UserInputError``s.
"""
from __future__ import annotations

import json
from pathlib import Path

from ...config import UserInputError
from .hub import Compilable, ModelCache, hub_cached, hub_snapshot

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
KNOWN_CLIP = {
    DEFAULT_CLIP: "OpenAI CLIP ViT-B/32 (the default; ~600 MB download once)",
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K": "LAION-2B CLIP ViT-B/32",
    "openai/clip-vit-base-patch16": "OpenAI CLIP ViT-B/16 (slower, sharper)",
}
"""Hub ids offered in the UI; any transformers CLIPModel repository or folder works."""
EMBEDDED = "embedded"
AUTO = "auto"
"""The CLI's and the app's default: the default CLIP when it is in the local Hugging Face cache, else the embedded
scorer when it ships (``resolve_scorer``)."""
ASSET_DIR = Path(__file__).resolve().parents[3] / "assets" / "priors" / "clip"
"""Where the project's own embedded scorer lives, with its manifest (``embedded.load_embedded_scorer``)."""
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's normalisation, used when a folder has no preprocessor_config.json."""
HUB_FILES = ["config.json", "*.safetensors", "vocab.json", "merges.txt", "tokenizer*.json",
             "special_tokens_map.json", "preprocessor_config.json"]


def embedded_scorer_available() -> bool:
    return (ASSET_DIR / "manifest.json").is_file()


def default_scorer() -> str:
    """The scorer a form starts on: the default CLIP when it is cached, else the embedded one when it ships."""
    if embedded_scorer_available() and not hub_cached(DEFAULT_CLIP):
        return EMBEDDED
    return DEFAULT_CLIP


def resolve_scorer(source: str) -> tuple[str, str]:
    """(the scorer to load, why) for a scorer name: 'auto' (or '') picks by ``default_scorer``; others are kept."""
    name = (source or "").strip()
    if name.lower() not in ("", AUTO):
        return name, ""
    chosen = default_scorer()
    why = (f"{DEFAULT_CLIP} is in the local Hugging Face cache" if chosen == DEFAULT_CLIP else
           f"{DEFAULT_CLIP} is not in the local Hugging Face cache; the embedded offline scorer ships")
    return chosen, f"'auto' picked {chosen} ({why})"


def where_to_get_scorers() -> str:
    ids = ", ".join(KNOWN_CLIP)
    return (f"Give a Hugging Face Hub id ({ids}; any transformers CLIPModel works) or a local folder holding one "
            f"(config.json, model.safetensors, vocab.json + merges.txt), e.g. from `hf download {DEFAULT_CLIP} "
            "--local-dir DIR` where there is internet. "
            + ("'embedded' is the offline scorer in assets/." if embedded_scorer_available() else
               "No CLIP scorer is available offline: the project does not ship one yet."))


def describe_scorer(source: str) -> str:
    source = resolve_scorer(source)[0]
    if source.lower() == EMBEDDED:
        return "embedded offline scorer (gen3d's own, trained on furniture renders; assets/priors/clip)"
    if source in KNOWN_CLIP:
        return f"{KNOWN_CLIP[source]}: {source}"
    return f"local CLIP folder {source}" if Path(source).expanduser().is_dir() else f"Hub model {source}"


class CLIPScorer(Compilable):
    """A frozen CLIPModel and its tokenizer: text and image embeddings, cosine scores. ``compile(mode)``
    compiles the image tower, the part every training step runs forward and backward.

    Args:
        model: a transformers CLIPModel (any device; frozen here).
        tokenizer: its CLIPTokenizer(Fast).
        mean, std: per-channel normalisation of the image tower's input; image_size: its input side.
        name: what the UI shows.
    """

    COMPILE_PATHS = ("model.vision_model",)

    def __init__(self, model, tokenizer, mean=CLIP_MEAN, std=CLIP_STD, image_size: int | None = None, name: str = ""):
        import torch

        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.image_size = int(image_size or model.config.vision_config.image_size)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.max_tokens = int(min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings))
        self.name = name or "CLIP"

    def n_tokens(self, text: str) -> int:
        """Tokens of ``text`` with the start and end tokens (more than ``max_tokens``: it will be cut)."""
        return len(self.tokenizer(text, truncation=False, verbose=False).input_ids)

    def encode_text(self, texts: list[str]):
        """(N,) captions -> (N, D) unit embeddings, float32, no grad; captions past max_tokens are cut."""
        import torch

        with torch.no_grad():
            tok = self.tokenizer(list(texts), padding="max_length", max_length=self.max_tokens, truncation=True,
                                 return_tensors="pt").to(self.device)
            emb = self.model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
        return _unit(_features(emb).float())

    def preprocess(self, images):
        """(B, H, W, 3) in [0, 1] -> (B, 3, S, S) CLIP input: resized (antialiased when shrinking), normalised."""
        import torch.nn.functional as F

        x = images.permute(0, 3, 1, 2)
        if x.shape[-2:] != (self.image_size, self.image_size):
            shrink = max(x.shape[-2:]) > self.image_size
            x = F.interpolate(x, (self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=shrink)
        return ((x - self.mean) / self.std).to(self.dtype)

    def encode_images(self, images):
        """(B, H, W, 3) in [0, 1] -> (B, D) unit embeddings (float32), differentiable w.r.t. the images."""
        return _unit(_features(self.model.get_image_features(pixel_values=self.preprocess(images))).float())

    def score(self, images, text_emb):
        """Cosine similarity of each image with each text: (B, H, W, 3), (N, D) -> (B, N)."""
        self.step_begin()
        return self.encode_images(images) @ text_emb.T


def _features(out):
    """transformers 5 may return a model output object instead of a tensor from get_*_features."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for key in ("pooler_output", "text_embeds", "image_embeds"):
        v = getattr(out, key, None)
        if v is not None:
            return v
    return out[0]


def _unit(x):
    import torch

    return torch.nn.functional.normalize(x, dim=-1)


# --------------------------------------------------------------------------------------------- loading
_CACHE = ModelCache()


def load_scorer(source: str, device, dtype: str = "auto") -> CLIPScorer:
    """The scorer for a Hub id, a local folder, 'embedded' or 'auto' ('' too: ``resolve_scorer``), cached per
    process."""
    source = resolve_scorer(source)[0]
    if source.lower() == EMBEDDED:
        from .embedded import NotShipped, load_embedded_scorer

        try:
            return load_embedded_scorer(device, dtype)
        except NotShipped as e:
            raise UserInputError(f"{e} Use CLIP instead (the default, {DEFAULT_CLIP!r}, is downloaded once). "
                                 + where_to_get_scorers()) from None
    return _CACHE.load(source, "CLIP", where_to_get_scorers(), device, dtype, load_folder, download)


def clear_cache() -> None:
    _CACHE.clear()


def download(repo_id: str) -> Path:
    return hub_snapshot(repo_id, HUB_FILES, where_to_get_scorers())


def missing_files(folder: Path) -> list[str]:
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        missing.append("model.safetensors")
    if not ((folder / "tokenizer.json").is_file() or ((folder / "vocab.json").is_file()
                                                       and (folder / "merges.txt").is_file())):
        missing.append("vocab.json + merges.txt (or tokenizer.json)")
    return missing


def check_folder(folder: Path, where: str) -> None:
    """A message that names what is missing or wrong in a CLIP folder, and ``where`` to get one, before any
    weights are read (the scorers' and Point-E's one check)."""
    missing = missing_files(folder)
    if missing:
        raise UserInputError(f"{folder} is not a CLIP folder: missing {', '.join(missing)}. " + where)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (ValueError, OSError) as e:
        raise UserInputError(f"{folder / 'config.json'} is not valid JSON ({e})") from e
    model_type = config.get("model_type", "") if isinstance(config, dict) else ""
    if model_type != "clip":
        raise UserInputError(f"{folder} holds a {model_type or 'unknown'!r} model, not CLIP (model_type 'clip'). "
                             + where)


def open_folder(folder: Path, dtype):
    """CLIPModel and tokenizer from a checked folder (``check_folder``)."""
    from transformers import CLIPModel, CLIPTokenizer, CLIPTokenizerFast

    try:
        model = CLIPModel.from_pretrained(folder, dtype=dtype)
        tok_cls = CLIPTokenizerFast if (folder / "tokenizer.json").is_file() else CLIPTokenizer
        return model, tok_cls.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001 - malformed config, weights or tokenizer files
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise UserInputError(f"could not load the CLIP model in {folder}: {type(e).__name__}: {msg}") from e


def load_folder(folder: Path, device, dtype, name: str = "") -> CLIPScorer:
    """CLIPModel, tokenizer and preprocessing constants from a folder: the one path every scorer takes."""
    import torch

    folder = Path(folder)
    check_folder(folder, where_to_get_scorers())
    mean, std, size = CLIP_MEAN, CLIP_STD, None
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        try:
            p = json.loads(pre.read_text())
        except (ValueError, OSError) as e:
            raise UserInputError(f"{pre} is not valid JSON ({e})") from e
        mean, std = tuple(p.get("image_mean", mean)), tuple(p.get("image_std", std))
        crop = p.get("crop_size")
        size = crop.get("height") if isinstance(crop, dict) else crop
    model, tokenizer = open_folder(folder, dtype)
    model.to(torch.device(device))
    return CLIPScorer(model, tokenizer, mean, std, size, name=name or str(folder))


# --------------------------------------------------------------------------------------------- test tier
VIT_B32 = dict(
    text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                     bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
    vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32, hidden_act="quick_gelu"),
    projection_dim=512, logit_scale_init_value=2.6592)
"""openai/clip-vit-base-patch32's config: ``CLIPModel(CLIPConfig(**VIT_B32))`` has the real one's FLOPs."""
TINY_CLIP = dict(
    text_config=dict(vocab_size=None, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=77),
    vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                       image_size=32, patch_size=8),
    projection_dim=16)
"""A tiny CLIP of the same class: 32 px images, milliseconds per call on a CPU. ``vocab_size`` None: the
tokenizer's."""


def build_clip(config: dict = TINY_CLIP, vocab: dict[str, int] | None = None, seed: int = 0, device="cpu"):
    """A random CLIPModel from ``config`` (token ids from ``vocab``, the small test vocabulary by default)."""
    import copy

    import torch
    from transformers import CLIPConfig, CLIPModel

    from .testing import tokenizer_vocab

    vocab = vocab or tokenizer_vocab()[0]
    config = copy.deepcopy(config)
    text = config["text_config"]
    if text.get("vocab_size") is None:
        text.update(vocab_size=len(vocab), bos_token_id=vocab["<|startoftext|>"],
                    eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(seed)
    with torch.device(device):
        return CLIPModel(CLIPConfig(**config)).eval()


def save_clip(folder: str | Path, config: dict = TINY_CLIP, seed: int = 0, device="cpu") -> Path:
    """Writes a CLIP folder of a random model: save_pretrained, the small tokenizer, a preprocessor config."""
    from .testing import write_tokenizer

    folder = Path(folder)
    vocab = write_tokenizer(folder, config["text_config"]["max_position_embeddings"])
    build_clip(config, vocab, seed, device).save_pretrained(folder)
    size = config["vision_config"]["image_size"]
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "crop_size": {"height": size, "width": size},
         "size": {"shortest_edge": size}, "image_processor_type": "CLIPImageProcessor"}))
    return folder


def tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """The test tier: a tiny random CLIP saved to ``folder`` (under a second on a CPU)."""
    return save_clip(folder, TINY_CLIP, seed)
