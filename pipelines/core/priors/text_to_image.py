"""One picture from a prompt with a text-to-image diffusion prior: Point-E's synthetic view.

Contract: ``text_to_image(guidance, prompt, ...)`` takes what ``priors.load_guidance`` returns (a
``StableDiffusionGuidance``, whose UNet, VAE and text encoder it samples with deterministic DDIM, or the
embedded prior, which has its own ``sample``) and returns an (H, W, 3) float image in [0, 1] on the CPU. Point-E's
paper used a GLIDE model fine-tuned on 3D renders, which was not released; Stable Diffusion 2.1-base with a
"3D render, white background" prompt is the stand-in.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def text_to_image(guidance, prompt: str, negative_prompt: str = "", steps: int = 50, guidance_scale: float = 7.5,
                  seed: int = 0) -> torch.Tensor:
    """(H, W, 3) in [0, 1] at the prior's resolution."""
    if hasattr(guidance, "sample"):  # the embedded prior samples itself (pixel space, its own DDIM)
        return guidance.sample([prompt], steps=steps, guidance_scale=guidance_scale, seed=seed)[0].float().cpu()
    g = guidance
    text = g.encode_prompt(prompt, negative_prompt)
    ab = g.alphas_cumprod
    ts = torch.linspace(g.num_train_timesteps - 1, 0, steps).round().long().tolist()
    side = g.resolution // g.vae_scale
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, g.unet.config.in_channels, side, side, generator=gen).to(g.device)
    cond = torch.cat([text.uncond, text.cond]).to(g.dtype)
    t_dev = torch.tensor(ts, device=g.device)  # one copy to the device: none inside the loop
    for i, t in enumerate(ts):
        out = g.unet(torch.cat([x, x]).to(g.dtype), t_dev[i].expand(2), encoder_hidden_states=cond).sample.float()
        uncond, cnd = out.chunk(2)
        out = uncond + guidance_scale * (cnd - uncond)
        a = ab[t]
        if g.prediction_type == "v_prediction":
            eps, x0 = a.sqrt() * out + (1 - a).sqrt() * x, a.sqrt() * x - (1 - a).sqrt() * out
        else:
            eps, x0 = out, (x - (1 - a).sqrt() * out) / a.sqrt()
        a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=g.device)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    img = g.vae.decode((x / g.latent_scale).to(g.dtype)).sample.float()
    return ((img[0] + 1) / 2).clamp(0, 1).permute(1, 2, 0).cpu()
