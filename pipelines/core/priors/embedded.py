"""Embedded tier: the project's own offline priors, trained on its renders of open 3D models
(``python -m pipelines priors train``) and shipped in assets/priors/{diffusion,clip}/.

* Diffusion prior: a text-conditioned pixel-space DDPM (a diffusers ``UNet2DConditionModel`` on 64 x 64 RGB in
  [-1, 1], cross-attending to the frozen all-MiniLM-L6-v2 token states, epsilon prediction, trained with
  classifier-free-guidance dropout to the empty caption's states). ``EmbeddedDiffusionGuidance`` is a
  ``DiffusionGuidance``: pixel-space SDS (the "encoder" is resize + 2x - 1), sharing the SDS step of
  ``StableDiffusionGuidance``.
* Image-text scorer: a CLIP-style dual encoder (a small CNN image tower; a projection of the frozen text
  encoder's pooled embedding), trained contrastively. ``EmbeddedScorer`` has ``CLIPScorer``'s interface.

Contract: a prior is a folder in the format of ``prior_folder`` (config, weight shards, manifest with sha256,
credits; ``save_prior`` writes one). ``load_prior`` checks every sha256 (and the text encoder's) before building
the model and raises ``UserInputError`` on any mismatch. ``available()`` / ``scorer_available()`` import no torch.
``load_embedded_guidance(device, dtype, folder=None)`` and ``load_embedded_scorer(...)`` are cached per process.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from ...config import UserInputError
from .hub import resolve_dtype
from .prior_folder import (MAX_TOTAL_BYTES, SHARD_BYTES, dequantize, save_prior,  # noqa: F401 - re-exported
                           sha256_file, text_encoder_config, verify)

ASSETS = Path(__file__).resolve().parents[3] / "assets" / "priors"
ASSET_DIR = ASSETS / "diffusion"
"""The embedded diffusion prior, with its manifest."""
SCORER_DIR = ASSETS / "clip"
"""The embedded image-text scorer (clip.ASSET_DIR)."""

UNET_BASE = dict(
    sample_size=64, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=[64, 128, 192, 256],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    cross_attention_dim=384, attention_head_dim=[2, 4, 6, 8], norm_num_groups=32)
"""The shipped UNet: 64 px, attention at 32, 16 and 8 px, 23.6M parameters (24 MB in int8). One layer per block
rather than two (35M): it trains more steps in a GPU sitting, and its weights fit in what one sitting can return.
diffusers reads ``attention_head_dim`` as the number of heads (a legacy name): [2, 4, 6, 8] makes 32-wide heads.
The first two training sittings had 32 heads of 4 to 8 channels, which SDPA's fast kernels do not take: the
forward ran 1.9x slower on a CPU, and the step was 140 ms on an H200 whatever the GPU count."""
UNET_TINY = dict(
    sample_size=64, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=[16, 32],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"], up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
"""For tests: a 64 px UNet of the same class, milliseconds per step on a CPU."""
SCHEDULE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                prediction_type="epsilon")
"""DDPM's linear schedule (Ho et al. 2020), the pixel-space choice."""
SCORER_BASE = dict(image_size=64, channels=[32, 64, 128, 256], embed_dim=256, text_hidden=512, text_dim=384)
SCORER_TINY = dict(image_size=32, channels=[8, 16], embed_dim=16, text_hidden=32, text_dim=32)


def available() -> bool:
    """Whether the embedded diffusion prior is shipped (cheap: no torch)."""
    return (ASSET_DIR / "manifest.json").is_file()


def scorer_available() -> bool:
    return (SCORER_DIR / "manifest.json").is_file()


STOP_WORDS = {"a", "an", "the", "of", "for", "with", "and", "in", "on", "to", "at", "by", "from", "photo", "render",
              "3d", "dslr", "view", "front", "side", "back", "overhead", "picture", "image", "high", "quality", "is",
              "are", "its", "it", "this", "that", "very", "some", "into", "as", "or", "be", "has", "made"}


def vocabulary(kind: str = "scorer") -> dict:
    """{'words': [...], 'examples': [...]} the shipped prior was trained on ({} when none ships)."""
    path = (SCORER_DIR if kind == "scorer" else ASSET_DIR) / "manifest.json"
    try:
        return json.loads(path.read_text()).get("vocabulary", {})
    except (OSError, ValueError):
        return {}


def known_examples(kind: str = "scorer", n: int = 8) -> list[str]:
    """``n`` training captions of the shipped prior, spread over its (alphabetical) list of examples."""
    examples = vocabulary(kind).get("examples", [])
    return examples[::max(1, len(examples) // n)][:n]


def unknown_words(text: str, kind: str = "scorer") -> list[str]:
    """The content words of ``text`` that no training caption of the shipped prior contains ([] when the
    prior has no vocabulary recorded)."""
    known = set(vocabulary(kind).get("words", []))
    if not known:
        return []
    words = [w.strip(".,;:!?'\"()") for w in text.lower().split()]
    return [w for w in words if w and w not in STOP_WORDS and w not in known]


def vocabulary_warning(text: str, kind: str = "scorer") -> str:
    """A warning naming the content words of ``text`` that no training caption contained ('' when all were)."""
    unknown = list(dict.fromkeys(unknown_words(text, kind)))
    if not unknown:
        return ""
    examples = ", ".join(f"'{e}'" for e in vocabulary(kind).get("examples", [])[:4])
    named = ", ".join(repr(w) for w in unknown[:6]) + (f" and {len(unknown) - 6} more" if len(unknown) > 6 else "")
    return (f"the embedded {kind} never saw {named} in training (it knows furniture and household objects, e.g. "
            f"{examples}): the run goes on, but expect those words to be ignored")


def credits_markdown() -> str:
    """The CREDITS.md of the shipped priors (data authors and licenses), for the app; '' when none ships."""
    texts = [d / "CREDITS.md" for d in (ASSET_DIR, SCORER_DIR)]
    seen, out = set(), []
    for p in texts:
        if p.is_file() and p.read_text() not in seen:
            seen.add(p.read_text())
            out.append(p.read_text())
    return "\n\n".join(out)


# --------------------------------------------------------------------------------------------- models
def build_unet(config: dict):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**config)


def build_scorer_model(config: dict):
    """The dual encoder's trainable parts: a CNN image tower and the text projection."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.GroupNorm(8, cout), nn.SiLU(),
                                      nn.Conv2d(cout, cout, 3, 1, 1), nn.GroupNorm(8, cout))
            self.skip = nn.Conv2d(cin, cout, 1, 2)

        def forward(self, x):
            return torch.nn.functional.silu(self.body(x) + self.skip(x))

    class DualEncoder(nn.Module):
        def __init__(self, image_size, channels, embed_dim, text_hidden, text_dim):
            super().__init__()
            ch = [channels[0]] + list(channels)
            self.image_tower = nn.Sequential(nn.Conv2d(3, ch[0], 3, 1, 1), nn.SiLU(),
                                             *[Block(a, b) for a, b in zip(ch[:-1], ch[1:])],
                                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch[-1], embed_dim))
            self.text_proj = nn.Sequential(nn.Linear(text_dim, text_hidden), nn.GELU(),
                                           nn.Linear(text_hidden, embed_dim))
            self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07), CLIP's start

        def image_features(self, x):  # (B, 3, S, S) in [-1, 1] -> (B, E) unit
            return nn.functional.normalize(self.image_tower(x), dim=-1)

        def text_features(self, pooled):  # (N, text_dim) -> (N, E) unit
            return nn.functional.normalize(self.text_proj(pooled), dim=-1)

    return DualEncoder(**config)


# --------------------------------------------------------------------------------------------- files
def load_prior(folder: str | Path, kind: str, device="cpu"):
    """(model in float32 on ``device``, config, manifest, text encoder) of a verified prior folder."""
    import torch
    from safetensors.torch import load_file

    from .text_encoder import describe_folder, load_text_encoder, resolve_folder

    folder = Path(folder)
    manifest = verify(folder)
    config = json.loads((folder / "config.json").read_text())
    if config.get("kind") != kind:
        raise UserInputError(f"{folder} holds a {config.get('kind')!r} prior, not a {kind!r} one")
    te_cfg = config["text_encoder"]
    te_folder = resolve_folder(te_cfg.get("folder") or None)
    want = te_cfg.get("sha256", "")
    if want and describe_folder(te_folder)["sha256"] != want:
        raise UserInputError(f"the text encoder in {te_folder} is not the one {folder} was trained with "
                             f"(sha256 differs); install the version named in {folder / 'manifest.json'}")
    text_encoder = load_text_encoder(te_folder, device, te_cfg.get("max_tokens", 32))
    model = build_unet(config["unet"]) if kind == "diffusion" else build_scorer_model(config["scorer"])
    state = {}
    for name in config["weights"]:
        state.update(load_file(str(folder / name)))
    model.load_state_dict(dequantize(state))
    return model.to(torch.device(device)).eval().requires_grad_(False), config, manifest, text_encoder


# --------------------------------------------------------------------------------------------- guidance
def _guidance_class():
    import torch

    from .guidance import TextEmbeddings
    from .stable_diffusion import StableDiffusionGuidance, _alphas_cumprod, resize_square

    class EmbeddedDiffusionGuidance(StableDiffusionGuidance):
        """Pixel-space SDS: images are resized to the UNet's side and mapped to [-1, 1]; the rest
        (timesteps, CFG, w(t) = 1 - alpha_bar) is ``StableDiffusionGuidance.sds_latents``."""

        COMPILE_PATHS = ("unet",)  # no VAE

        def __init__(self, unet, text_encoder, schedule: dict, name: str = ""):  # noqa: D107 - no VAE here
            self.unet, self.text_encoder, self.vae = unet.eval().requires_grad_(False), text_encoder, None
            self.device = next(unet.parameters()).device
            self.dtype = next(unet.parameters()).dtype
            self.name = name or "embedded pixel diffusion prior"
            self.resolution = int(unet.config.sample_size)
            self.num_train_timesteps = int(schedule.get("num_train_timesteps", 1000))
            self.max_tokens = text_encoder.max_tokens
            self.prediction_type = schedule.get("prediction_type", "epsilon")
            self.alphas_cumprod = _alphas_cumprod(schedule).to(self.device)

        def n_tokens(self, text: str) -> int:
            return self.text_encoder.n_tokens(text)

        def encode_prompt(self, prompt: str, negative_prompt: str = "") -> TextEmbeddings:
            states, _ = self.text_encoder.encode([prompt, negative_prompt])
            states = states.to(self.device, self.dtype)
            return TextEmbeddings(states[:1], states[1:], truncated=self.text_encoder.n_tokens(prompt) > self.max_tokens)

        def encode_images(self, images: torch.Tensor) -> torch.Tensor:
            """(B, H, W, 3) in [0, 1] -> (B, 3, r, r) in [-1, 1], differentiable."""
            x = images.permute(0, 3, 1, 2)
            if x.shape[-2:] != (self.resolution, self.resolution):
                x = resize_square(x, self.resolution)
            return x.float() * 2 - 1

        @torch.no_grad()
        def denoise_step(self, x_t: torch.Tensor, t: int, t_prev: int, text: TextEmbeddings,
                         guidance_scale: float = 3.0, eta: float = 0.0, generator=None):
            """One DDIM step (eta 1: DDPM-like ancestral) from timestep t to t_prev (-1: the end).
            Returns (x_{t_prev}, predicted x_0), both (B, 3, r, r) in about [-1, 1]."""
            b = x_t.shape[0]
            tt = torch.full((b,), t, device=self.device, dtype=torch.long)
            cond, uncond = text.cond.expand(b, -1, -1), text.uncond.expand(b, -1, -1)
            out = self.unet(torch.cat([x_t, x_t]).to(self.dtype), torch.cat([tt, tt]),
                            encoder_hidden_states=torch.cat([uncond, cond]).to(self.dtype)).sample.float()
            eps = self.cfg(out, guidance_scale)
            a = self.alphas_cumprod[t]
            a_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else torch.ones_like(a)
            x0 = ((x_t - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
            eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()  # consistent with the clamped x0
            sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp_min(0).sqrt()
            x_prev = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp_min(0).sqrt() * eps
            if eta > 0 and t_prev >= 0:
                x_prev = x_prev + sigma * torch.randn(x_t.shape, generator=generator, device="cpu").to(x_t.device)
            return x_prev, x0

        @staticmethod
        def cfg(out: torch.Tensor, guidance_scale: float) -> torch.Tensor:
            from .guidance import cfg_combine

            eps_uncond, eps_cond = out.chunk(2)
            return cfg_combine(eps_uncond, eps_cond, guidance_scale)

        @torch.no_grad()
        def sample(self, prompts: list[str], steps: int = 50, guidance_scale: float = 3.0, seed: int = 0,
                   eta: float = 0.0) -> torch.Tensor:
            """Images (N, r, r, 3) in [0, 1] for the prompts, by ``steps`` DDIM steps."""
            gen = torch.Generator().manual_seed(seed)
            out = []
            ts = torch.linspace(self.num_train_timesteps - 1, 0, steps).round().long().tolist()
            for p in prompts:
                text = self.encode_prompt(p)
                x = torch.randn(1, 3, self.resolution, self.resolution, generator=gen).to(self.device)
                for i, t in enumerate(ts):
                    x, _ = self.denoise_step(x, t, ts[i + 1] if i + 1 < len(ts) else -1, text, guidance_scale, eta,
                                             gen)
                out.append(x)
            return ((torch.cat(out) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)

    return EmbeddedDiffusionGuidance


class EmbeddedScorer:
    """``CLIPScorer``'s interface over the dual encoder: encode_text, encode_images, score, n_tokens."""

    def __init__(self, model, text_encoder, config: dict, name: str = ""):
        import torch

        self.model, self.text_encoder = model.eval().requires_grad_(False), text_encoder
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.image_size = int(config["image_size"])
        self.max_tokens = text_encoder.max_tokens
        self.name = name or "embedded image-text scorer"
        self._torch = torch

    def n_tokens(self, text: str) -> int:
        return self.text_encoder.n_tokens(text)

    def encode_text(self, texts: list[str]):
        """(N,) captions -> (N, E) unit embeddings, float32, no grad."""
        with self._torch.no_grad():
            return self.model.text_features(self.text_encoder.pooled(list(texts)).to(self.device)).float()

    def preprocess(self, images):
        """(B, H, W, 3) in [0, 1] -> (B, 3, S, S) in [-1, 1], resized (antialiased when shrinking)."""
        from .stable_diffusion import resize_square

        x = images.permute(0, 3, 1, 2)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = resize_square(x, self.image_size)
        return (x * 2 - 1).to(self.dtype)

    def encode_images(self, images):
        """(B, H, W, 3) in [0, 1] -> (B, E) unit embeddings, differentiable w.r.t. the images."""
        return self.model.image_features(self.preprocess(images)).float()

    def score(self, images, text_emb):
        """Cosine similarity (B, N) of each image with each text embedding."""
        return self.encode_images(images) @ text_emb.T


# --------------------------------------------------------------------------------------------- loading
_CACHE: dict[tuple, object] = {}
_LOCK = threading.Lock()


class NotShipped(UserInputError):
    """An embedded model folder without its manifest; the loader that was asked (``priors.load_guidance``,
    ``clip.load_scorer``) adds what to use instead, so this module imports neither of them."""


def _not_available(what: str, folder: Path) -> NotShipped:
    name = "prior" if what == "diffusion" else "scorer"
    return NotShipped(f"{name} 'embedded' is not available ({folder} has no manifest.json).")


def _load(kind: str, folder, device, dtype: str):
    import torch

    folder = Path(folder or (ASSET_DIR if kind == "diffusion" else SCORER_DIR)).resolve()
    if not (folder / "manifest.json").is_file():
        raise _not_available(kind, folder)
    dev = torch.device(device)
    dt = resolve_dtype(dtype, dev)
    key = (kind, str(folder), str(dev), str(dt))
    with _LOCK:
        if key not in _CACHE:
            model, config, manifest, te = load_prior(folder, kind, dev)
            # torch's own Module.to: diffusers' override warns on every cast ("modules ... kept in float32: []")
            # though this UNet keeps none in float32
            torch.nn.Module.to(model, dt)
            steps = manifest.get("steps", "?")
            if kind == "diffusion":
                obj = _guidance_class()(model, te, config["schedule"],
                                        name=f"embedded pixel diffusion prior ({folder.name}, {steps} steps)")
            else:
                obj = EmbeddedScorer(model, te, config["scorer"],
                                     name=f"embedded image-text scorer ({folder.name}, {steps} steps)")
            for k in [k for k in _CACHE if k[0] == kind]:
                del _CACHE[k]
            _CACHE[key] = obj
        return _CACHE[key]


def load_embedded_guidance(device, dtype: str = "auto", folder: str | Path | None = None):
    """The embedded diffusion prior (``folder`` None: assets/priors/diffusion) as a ``DiffusionGuidance``."""
    return _load("diffusion", folder, device, dtype)


def load_embedded_scorer(device, dtype: str = "auto", folder: str | Path | None = None) -> EmbeddedScorer:
    """The embedded image-text scorer (``folder`` None: assets/priors/clip)."""
    return _load("scorer", folder, device, dtype)


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
