"""The diffusion-guidance interface every tier implements, and the score-distillation (SDS) arithmetic.

Contract: ``DiffusionGuidance.encode_prompt`` runs the text encoder once per prompt; ``sds(images, text)``
takes renders (B, H, W, 3) in [0, 1] that require grad and returns an ``SDSOutput`` whose ``loss`` has the
gradient d loss / d latents = w(t) (eps_hat - eps) / B (DreamFusion Eq. 3, averaged over the batch), reaching
the images through the VAE encoder for latent models. eps_hat is classifier-free guided, t ~ U[t_range] in
fractions of the training timesteps, and w(t) = 1 - alpha_bar_t (sigma_t^2, DreamFusion's choice). The
diagnostics stay on the device (no host sync): convert them only when logging.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class TextEmbeddings:
    """Conditional and unconditional (negative-prompt) text embeddings, one row per image."""

    cond: torch.Tensor  # (B, L, D)
    uncond: torch.Tensor  # (B, L, D)
    truncated: bool = False
    """The prompt had more tokens than the text encoder reads; the rest was dropped."""

    @staticmethod
    def cat(items: list["TextEmbeddings"]) -> "TextEmbeddings":
        """One batch from per-view embeddings (e.g. a front and a back view in the same step)."""
        return TextEmbeddings(torch.cat([e.cond for e in items]), torch.cat([e.uncond for e in items]),
                              any(e.truncated for e in items))


@dataclass
class SDSOutput:
    loss: torch.Tensor
    """Scalar; backward() puts the SDS gradient on the images (its value, 0.5 |grad|^2 / B, means little)."""
    t: torch.Tensor
    """(B,) long: the timesteps drawn."""
    grad_norm: torch.Tensor
    """Scalar: mean over the batch of the latent gradient's L2 norm."""
    residual: torch.Tensor
    """(C, h, w) float: eps_hat - eps of the first image, detached; ``residual_image`` shows it."""


class DiffusionGuidance(abc.ABC):
    """A frozen text-to-image diffusion model used as a loss. Subclasses: one per tier."""

    name: str = "diffusion prior"
    """What the UI shows: the model and where it came from."""
    resolution: int = 512
    """Side in pixels the model sees; renders are resized to it."""
    num_train_timesteps: int = 1000
    max_tokens: int = 77
    """Prompt tokens the text encoder reads; longer prompts are cut (``TextEmbeddings.truncated``)."""
    dtype: torch.dtype = torch.float32
    """Precision the model runs in."""

    def n_tokens(self, text: str) -> int:
        """Tokens of ``text`` with the start and end tokens (more than ``max_tokens``: it would be cut)."""
        return len(text.split()) + 2  # subclasses count with their tokenizer

    @abc.abstractmethod
    def encode_prompt(self, prompt: str, negative_prompt: str = "") -> TextEmbeddings:
        """Text embeddings (1, L, D) of the prompt and of the negative prompt (the CFG baseline)."""

    @abc.abstractmethod
    def sds(self, images: torch.Tensor, text: TextEmbeddings, guidance_scale: float = 100.0,
            t_range: tuple[float, float] = (0.02, 0.98)) -> SDSOutput:
        """Score distillation on renders (B, H, W, 3) in [0, 1]; ``text`` has 1 or B rows."""


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: eps_u + s (eps_c - eps_u) (s = 1: the conditional prediction alone)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def sds_loss(latents: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 |latents - sg(latents - grad)|^2 / B: a scalar whose gradient w.r.t. ``latents`` is grad / B.

    This routes a gradient we computed ourselves (with the diffusion model under no_grad) through autograd
    without differentiating the model, as in DreamFusion's and threestudio's implementations.
    """
    target = (latents - grad).detach()
    return 0.5 * F.mse_loss(latents.float(), target.float(), reduction="sum") / latents.shape[0]


def sample_timesteps(batch: int, t_range: tuple[float, float], num_train_timesteps: int,
                     device) -> torch.Tensor:
    """(batch,) long timesteps uniform in [t_range[0] T, t_range[1] T] (at most T - 1), drawn on the device."""
    lo, hi = (min(int(round(min(max(f, 0.0), 1.0) * num_train_timesteps)), num_train_timesteps - 1)
              for f in t_range)
    lo, hi = min(lo, hi), max(lo, hi)
    return torch.randint(lo, hi + 1, (batch,), device=device)


def annealed_t_range(progress: float, t_min: float, t_max: float, t_max_end: float) -> tuple[float, float]:
    """t range at ``progress`` in [0, 1] of training: the upper end moves linearly from t_max to t_max_end
    (large t shapes the whole object, small t its details; equal ends: DreamFusion's fixed U(0.02, 0.98))."""
    hi = t_max + (t_max_end - t_max) * min(max(progress, 0.0), 1.0)
    return t_min, max(hi, t_min)


def residual_image(residual: torch.Tensor) -> torch.Tensor:
    """(C, h, w) noise residual -> (h, w, 3) in [0, 1] for the UI: its first three channels, mid-grey at
    zero, scaled by the largest magnitude (latent channels are not colours: this shows where and how much)."""
    r = residual.detach().float()
    r = r[:3] if r.shape[0] >= 3 else r[:1].expand(3, *r.shape[1:])
    return (0.5 + 0.5 * r / r.abs().amax().clamp_min(1e-8)).permute(1, 2, 0).clamp(0, 1)
