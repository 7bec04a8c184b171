"""Real tier of the diffusion guidance: Stable Diffusion 1.x/2.x through diffusers, frozen, as an SDS teacher.

Contract: ``load_stable_diffusion(source, device, dtype)`` takes a Hub id or a local diffusers folder (the
layout ``save_pretrained`` writes: unet/, vae/, text_encoder/, tokenizer/, scheduler/), loads it once per
process (a cache keyed by (source, dtype, device) that holds one model) and returns a
``StableDiffusionGuidance``. Hub ids are resolved to a local snapshot first, so every model, the tiny test
ones included, goes through ``load_folder``. diffusers and transformers are imported only here, inside
functions. Problems a person can fix (not found, not a Stable Diffusion folder, offline) are
``UserInputError``s naming what to do.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ...config import UserInputError
from . import where_to_get_models
from .hub import Compilable, ModelCache, hub_error
from .guidance import DiffusionGuidance, SDSOutput, TextEmbeddings, cfg_combine, sample_timesteps, sds_loss

HUB_FILES = ["model_index.json", "unet/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*"]
"""What a Hub snapshot fetches: the five components, not the repository's single-file checkpoints."""
HUB_SKIP = ["*.bin", "*.ckpt", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.pb", "*fp16*", "*non_ema*"]
REQUIRED = {
    "unet": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "vae": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "text_encoder": (("config.json",), ("model.safetensors", "pytorch_model.bin")),
    "tokenizer": ((), ("vocab.json", "tokenizer.json")),
    "scheduler": (("scheduler_config.json",), ()),
}
"""Per component: files that must all exist, and files of which one must (the weights)."""


class ChannelsLastGroupNorm(torch.nn.GroupNorm):
    """nn.GroupNorm whose output keeps the input's memory layout (channels-last stays channels-last).

    F.group_norm is traced as returning NCHW, so a compiled channels-last encoder saved its activations for the
    backward in NCHW and copied them back for each convolution. Same arithmetic: statistics in float32, per
    channel (Welford) and then per group by the law of total variance (a group's channels have equal counts).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.affine:
            return super().forward(x)
        n, c, g = x.shape[0], x.shape[1], self.num_groups
        xf = x.float()
        var_c, mean_c = torch.var_mean(xf, dim=tuple(range(2, x.dim())), correction=0)  # (n, c)
        mean_c, var_c = mean_c.view(n, g, -1), var_c.view(n, g, -1)
        mean = mean_c.mean(-1, keepdim=True)
        var = var_c.mean(-1, keepdim=True) + (mean_c - mean).square().mean(-1, keepdim=True)
        scale = (var + self.eps).rsqrt() * self.weight.float().view(1, g, -1)
        shift = self.bias.float().view(1, g, -1) - mean * scale
        shape = (n, c) + (1,) * (x.dim() - 2)
        return (xf * scale.reshape(shape) + shift.reshape(shape)).to(x.dtype)


class StableDiffusionGuidance(Compilable, DiffusionGuidance):
    """SDS with a latent diffusion model: renders -> VAE encoder -> latents; the UNet predicts the noise.
    ``compile(mode)`` compiles the UNet and the VAE encoder (H200, SD 2.1-base, one 64 px render: 13.2 ms per
    guidance step with 'reduce-overhead', CUDA graphs, against 44.6 eager; bench/RESULTS.md).

    Args:
        unet, vae, text_encoder, tokenizer: the diffusers/transformers components, on one device.
        scheduler_config: the scheduler's config (betas, timesteps, prediction type).
        name: what the UI shows.
    """

    COMPILE_PATHS = ("unet", "vae.encoder")
    compiled_group_norm: type = ChannelsLastGroupNorm
    """The VAE encoder's GroupNorm class while compiled: it took the graphs' guidance step from 16.9 to 13.2 ms
    on an H200 (30 layout copies gone from the backward; bench/RESULTS.md). Eager keeps nn.GroupNorm, whose
    one kernel beats this one's five when each launch costs."""

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler_config: dict, name: str = ""):
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        for m in (unet, vae, text_encoder):
            m.eval().requires_grad_(False)  # frozen teacher: gradients reach the images, never the weights
        self.device = next(unet.parameters()).device
        self.dtype = next(unet.parameters()).dtype
        self.name = name or "Stable Diffusion"
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.resolution = int(unet.config.sample_size) * self.vae_scale
        self.latent_scale = float(getattr(vae.config, "scaling_factor", 0.18215) or 0.18215)
        self.num_train_timesteps = int(scheduler_config.get("num_train_timesteps", 1000))
        self.max_tokens = int(tokenizer.model_max_length)
        self.prediction_type = scheduler_config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise UserInputError(f"{self.name}: prediction type {self.prediction_type!r} is not supported "
                                 "(epsilon or v_prediction models only)")
        # alpha_bar_t lives on the device: diffusers' add_noise copies it there on every call, a host sync.
        self.alphas_cumprod = _alphas_cumprod(scheduler_config).to(self.device)

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, truncation=False, verbose=False).input_ids)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative_prompt: str = "") -> TextEmbeddings:
        tok = self.tokenizer
        n_tokens = len(tok(prompt, truncation=False, verbose=False).input_ids)
        ids = tok([prompt, negative_prompt], padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids.to(self.device)
        emb = self.text_encoder(ids)[0].to(self.dtype)
        return TextEmbeddings(emb[:1], emb[1:], truncated=n_tokens > tok.model_max_length)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) in [0, 1] -> (B, 4, r/8, r/8) float latents (the posterior mean, scaled), with grad."""
        x = images.permute(0, 3, 1, 2)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = resize_square(x, self.resolution)
        x = (x * 2 - 1).to(self.dtype)
        return self.vae.encode(x).latent_dist.mean.float() * self.latent_scale

    def compile(self, mode: str = "default") -> bool:
        changed = super().compile(mode)
        group_norm = self.compiled_group_norm if self.compiled != "off" else torch.nn.GroupNorm
        for m in self.vae.encoder.modules() if self.vae is not None else ():  # latent-space priors have no VAE
            if isinstance(m, torch.nn.GroupNorm):
                m.__class__ = group_norm
        return changed

    def sds(self, images: torch.Tensor, text: TextEmbeddings, guidance_scale: float = 100.0,
            t_range: tuple[float, float] = (0.02, 0.98)) -> SDSOutput:
        self.step_begin()
        return self.sds_latents(self.encode_images(images), text, guidance_scale, t_range)

    def sds_latents(self, latents: torch.Tensor, text: TextEmbeddings, guidance_scale: float = 100.0,
                    t_range: tuple[float, float] = (0.02, 0.98)) -> SDSOutput:
        """SDS on latents (B, 4, h, w) directly (renderers that output latents skip the VAE)."""
        b = latents.shape[0]
        with torch.no_grad():
            t = sample_timesteps(b, t_range, self.num_train_timesteps, self.device)
            noise = torch.randn_like(latents)
            a = self.alphas_cumprod[t].view(b, 1, 1, 1)
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            cond, uncond = text.cond.expand(b, -1, -1), text.uncond.expand(b, -1, -1)
            out = self.unet(torch.cat([noisy, noisy]).to(self.dtype), torch.cat([t, t]),
                            encoder_hidden_states=torch.cat([uncond, cond]).to(self.dtype)).sample.float()
            eps_uncond, eps_cond = out.chunk(2)
            if self.prediction_type == "v_prediction":
                # v = sqrt(a) eps - sqrt(1 - a) x0, so eps = sqrt(a) v + sqrt(1 - a) x_t
                eps_uncond, eps_cond = (a.sqrt() * v + (1 - a).sqrt() * noisy for v in (eps_uncond, eps_cond))
            residual = cfg_combine(eps_uncond, eps_cond, guidance_scale) - noise
            grad = torch.nan_to_num((1 - a) * residual, nan=0.0, posinf=0.0, neginf=0.0)
        return SDSOutput(sds_loss(latents, grad), t, grad.flatten(1).norm(dim=1).mean(), residual[0])


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) to size x size (antialiased when shrinking)."""
    shrink = x.shape[-1] > size or x.shape[-2] > size
    return torch.nn.functional.interpolate(x, (size, size), mode="bilinear", align_corners=False, antialias=shrink)


def _alphas_cumprod(config: dict) -> torch.Tensor:
    """alpha_bar_t of the training noise schedule, float32 (the schedules Stable Diffusion uses)."""
    n = int(config.get("num_train_timesteps", 1000))
    b0, b1 = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
    schedule = config.get("beta_schedule", "scaled_linear")
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, n, dtype=torch.float64) ** 2
    elif schedule == "linear":
        betas = torch.linspace(b0, b1, n, dtype=torch.float64)
    else:
        raise UserInputError(f"noise schedule {schedule!r} is not supported (Stable Diffusion uses scaled_linear)")
    return torch.cumprod(1.0 - betas, 0).float()


# --------------------------------------------------------------------------------------------- loading
_CACHE = ModelCache()


def load_stable_diffusion(source: str, device, dtype: str = "auto") -> StableDiffusionGuidance:
    """The guidance for a Hub id or local folder, from the cache when the same one was loaded before."""
    return _CACHE.load(source, "model", where_to_get_models(), device, dtype, load_folder, download)


def clear_cache() -> None:
    _CACHE.clear()


def download(repo_id: str) -> Path:
    """A local snapshot of a Hub repository's diffusers components: the cache first, then the network."""
    from huggingface_hub import snapshot_download

    kw = dict(repo_id=repo_id, allow_patterns=HUB_FILES, ignore_patterns=HUB_SKIP)
    try:
        folder = Path(snapshot_download(local_files_only=True, **kw))
        if not missing_files(folder):
            return folder
    except Exception:  # noqa: BLE001 - not cached (or cached in part): fetch it
        pass
    try:
        folder = Path(snapshot_download(**kw))
        if missing_files(folder):  # a repository with only .bin weights: fetch those instead
            kw["ignore_patterns"] = [p for p in HUB_SKIP if p != "*.bin"]
            folder = Path(snapshot_download(**kw))
    except Exception as e:  # noqa: BLE001 - offline, no such repository, gated, ...
        raise hub_error(repo_id, e, where_to_get_models()) from e
    return folder


def missing_files(folder: Path) -> list[str]:
    """Files of a Stable Diffusion diffusers folder that ``folder`` lacks (empty: complete)."""
    missing = []
    for sub, (all_of, one_of) in REQUIRED.items():
        missing += [f"{sub}/{f}" for f in all_of if not (folder / sub / f).is_file()]
        if one_of and not any((folder / sub / f).is_file() for f in one_of):
            missing.append(f"{sub}/{' or '.join(one_of)}")
    return missing


def load_folder(folder: Path, device: torch.device, dtype: torch.dtype, name: str = "") -> StableDiffusionGuidance:
    """Loads the five components of a diffusers Stable Diffusion folder: the one path every model takes."""
    folder = Path(folder)
    missing = missing_files(folder)
    if missing:
        raise UserInputError(f"{folder} is not a Stable Diffusion diffusers folder: missing {', '.join(missing)}. "
                             + where_to_get_models())
    index = folder / "model_index.json"
    if index.is_file():
        try:
            pipeline_class = json.loads(index.read_text()).get("_class_name", "")
        except (ValueError, OSError) as e:
            raise UserInputError(f"{index} is not valid JSON ({e})") from e
        if "XL" in pipeline_class or "Flux" in pipeline_class or "StableDiffusion3" in pipeline_class:
            raise UserInputError(f"{folder} holds a {pipeline_class}; only Stable Diffusion 1.x/2.x models work here")

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    def part(sub: str, load):
        try:
            return load()
        except Exception as e:  # noqa: BLE001 - malformed configs or weights: say which file
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise UserInputError(f"could not load {sub}/ of {folder}: {type(e).__name__}: {msg}") from e

    try:
        sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    except (ValueError, OSError) as e:
        raise UserInputError(f"could not read scheduler/scheduler_config.json of {folder}: {e}") from e
    common = dict(torch_dtype=dtype)
    unet = part("unet", lambda: UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **common))
    vae = part("vae", lambda: AutoencoderKL.from_pretrained(folder, subfolder="vae", **common))
    text_encoder = part("text_encoder", lambda: CLIPTextModel.from_pretrained(folder, subfolder="text_encoder",
                                                                              **common))
    tokenizer = part("tokenizer", lambda: CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"))
    if unet.config.in_channels != vae.config.latent_channels:
        raise UserInputError(f"{folder}: the UNet takes {unet.config.in_channels} channels but the VAE makes "
                             f"{vae.config.latent_channels} (an inpainting or depth model?); use a text-to-image one")
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise UserInputError(f"{folder}: the UNet attends to {unet.config.cross_attention_dim}-d text features but "
                             f"the text encoder makes {text_encoder.config.hidden_size}-d ones")
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format  # faster fp16 convolutions
    unet.to(device, memory_format=fmt)
    vae.to(device, memory_format=fmt)
    if device.type == "cuda":
        # The VAE's attention is one 512-wide head over 64 x 64 positions: SDPA's kernels for heads over 256 wide
        # are slow (the backward took 5.8 of a 22.8 ms guidance step on an H200); plain matmul + softmax is not.
        from diffusers.models.attention_processor import AttnProcessor

        vae.set_attn_processor(AttnProcessor())
    text_encoder.to(device)
    return StableDiffusionGuidance(unet, vae, text_encoder, tokenizer, sched, name=name or str(folder))
