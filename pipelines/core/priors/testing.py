"""Test doubles of the priors (DESIGN.md's third tier) and random models with the real architecture.

Contract: ``save_stable_diffusion(folder, TINY_SD)`` writes a complete diffusers Stable Diffusion folder of
tiny random models of the real classes (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, a CLIPTokenizer
on a small character vocabulary written here, since none can be downloaded), so tests load it through the
real loader (``stable_diffusion.load_folder``). ``SD21_BASE`` holds Stable Diffusion 2.1-base's component
configs, written out: ``build_stable_diffusion(SD21_BASE)`` is an architecture-identical, randomly
initialised model with the real one's FLOPs, for benchmarks. For tests and benchmarks only.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch

SD21_BASE = {
    "unet": dict(
        sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
        act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
        use_linear_projection=True, dual_cross_attention=False, only_cross_attention=False, num_class_embeds=None,
        upcast_attention=False),
    "vae": dict(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2, act_fn="silu",
        block_out_channels=[128, 256, 512, 512], norm_num_groups=32,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4),
    "text_encoder": dict(  # OpenCLIP ViT-H/14's text tower without its last layer, as SD 2.x ships it
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=512,
        bos_token_id=0, eos_token_id=2, pad_token_id=1),
    "scheduler": dict(
        _class_name="PNDMScheduler", num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False,
        skip_prk_steps=True, steps_offset=1, trained_betas=None),
}
"""stabilityai/stable-diffusion-2-1-base's unet/, vae/, text_encoder/ and scheduler/ configs."""

TINY_SD = {
    "unet": dict(
        sample_size=8, in_channels=4, out_channels=4, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], block_out_channels=[32, 64], layers_per_block=1,
        norm_num_groups=32, cross_attention_dim=32, attention_head_dim=[2, 4], use_linear_projection=True),
    "vae": dict(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=16, layers_per_block=1,
        block_out_channels=[16, 32], norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2),
    "text_encoder": dict(
        vocab_size=None, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=32),
    "scheduler": SD21_BASE["scheduler"],
}
"""Tiny models of the same classes: a 16 px model (8 x 8 latents) that runs a guidance step in milliseconds on
a CPU. ``vocab_size`` None: the tokenizer's."""


def tokenizer_vocab() -> tuple[dict[str, int], list[str]]:
    """A small CLIP BPE vocabulary: every printable ASCII character, alone and word-final, a few merges, and
    the two special tokens. Any ASCII prompt tokenizes (into characters, mostly)."""
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab: dict[str, int] = {}
    for c in chars + [c + "</w>" for c in chars]:
        vocab[c] = len(vocab)
    merges = ["t h", "th e</w>", "a n", "an d</w>", "v i", "vi e", "vie w</w>", "o f</w>"]
    for m in merges:
        vocab["".join(m.split())] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def write_tokenizer(folder: Path, model_max_length: int = 77) -> dict[str, int]:
    """The files of a Stable Diffusion tokenizer/ folder (vocab.json, merges.txt, configs); returns the vocab."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tokenizer_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length, "do_lower_case": True, **special}))
    return vocab


def build_stable_diffusion(configs: dict = TINY_SD, vocab: dict[str, int] | None = None, seed: int = 0,
                           dtype: torch.dtype = torch.float32, device="cpu") -> dict:
    """Random UNet, VAE and text encoder from ``configs`` (built on ``device``: fast for full-size models)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = vocab or tokenizer_vocab()[0]
    te = dict(configs["text_encoder"])
    if te.get("vocab_size") is None:
        te.update(vocab_size=len(vocab), bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                  pad_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**configs["unet"])
        vae = AutoencoderKL(**configs["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**te))
    parts = {"unet": unet, "vae": vae, "text_encoder": text_encoder}
    return parts if dtype == torch.float32 else {k: m.to(dtype) for k, m in parts.items()}


def save_stable_diffusion(folder: str | Path, configs: dict = TINY_SD, seed: int = 0,
                          dtype: torch.dtype = torch.float32, device="cpu") -> Path:
    """Writes a diffusers Stable Diffusion folder of random models (``save_pretrained`` for each part)."""
    folder = Path(folder)
    vocab = write_tokenizer(folder / "tokenizer", configs["text_encoder"]["max_position_embeddings"])
    parts = build_stable_diffusion(configs, vocab, seed, dtype, device)
    for name, module in parts.items():
        module.save_pretrained(folder / name)
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(configs["scheduler"], indent=1))
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", configs["scheduler"].get("_class_name", "PNDMScheduler")]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))
    return folder


def tiny_stable_diffusion(folder: str | Path, seed: int = 0) -> Path:
    """The test tier: a tiny random Stable Diffusion saved to ``folder`` (seconds on a CPU, ~4 MB)."""
    return save_stable_diffusion(folder, TINY_SD, seed)
