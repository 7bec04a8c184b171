"""Getting trained priors out of a run: the prior folder (``prior_folder.save_prior``: int8 (diffusion) or
float16 (scorer) shards, manifest with sha256, data and licenses, command, steps, metrics, the captions'
vocabulary, credits), and what a GPU sitting sends home: ``save_ema_checkpoint`` keeps the EMA weights in
float16 without the optimiser (a third of the size), ``export_checkpoint`` turns it (or a full checkpoint) into
a prior folder with metrics recomputed by the installed text encoder. The CLI is
``python -m pipelines priors ema-checkpoint|export``.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from .priors_dataset import PriorData, encode_captions, load_data
from .priors_model import TrainOptions, evaluate, make_model


def caption_vocabulary(data: PriorData, n_examples: int = 24) -> dict:
    """What the prior was trained to know, for the app: the words of the training captions and examples (the
    plain caption of evenly spaced training shapes)."""
    words = sorted({w for c in data.captions for w in c.lower().replace(",", " ").split()})
    train = data.train.tolist()
    picks = [train[int(i)] for i in np.linspace(0, len(train) - 1, min(n_examples, len(train)))]
    return {"words": words, "examples": sorted({data.captions[int(data.shape_caps[i, 0])] for i in picks})}


def export(opts: TrainOptions, ema, arch: dict, metrics: dict, step: int, data: PriorData, te) -> Path:
    from ..core.priors.prior_folder import save_prior, text_encoder_config
    from .priors_data import data_summary
    from ..core.shape_packs import credits_markdown

    kind = opts.kind
    config = dict(arch, text_encoder=text_encoder_config(opts.text_encoder or None, te.max_tokens))
    manifest = dict(
        model=("pixel-space text-to-image DDPM (diffusers UNet2DConditionModel)" if kind == "diffusion" else
               "CLIP-style dual encoder (CNN image tower, projection on the frozen text encoder)"),
        parameters=sum(p.numel() for p in ema.parameters()), steps=step, metrics=metrics,
        command=opts.command or "python -m pipelines priors train " + kind,
        options=dataclasses.asdict(opts), data=dict(data_summary(data.meta), file=Path(opts.data).name,
                                                    sha256=data.sha256),
        text_encoder=config["text_encoder"], created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        vocabulary=caption_vocabulary(data),
        license="weights: trained by gen3d on renders of CC0 / CC-BY 3.0 (Sweet Home 3D furniture) and zlib "
                "(pybullet_data) models; see CREDITS.md")
    credits = credits_markdown(data.meta, "Embedded priors: training data credits")
    # int8 for the diffusion prior: its 47 MB of float16 would crowd the repository (and what a GPU machine may
    # carry); the scorer is small enough to keep float16.
    return save_prior(opts.export, kind, ema, config, manifest, credits, dtype="int8" if kind == "diffusion" else "float16")


def checkpoint_file(out: str | Path) -> Path:
    """``out/checkpoint.pt``, else the EMA-only ``out/checkpoint-ema.pt`` (``save_ema_checkpoint``)."""
    out = Path(out)
    return out / "checkpoint.pt" if (out / "checkpoint.pt").is_file() or not (out / "checkpoint-ema.pt").is_file() \
        else out / "checkpoint-ema.pt"


def save_ema_checkpoint(out: str | Path) -> Path:
    """``out/checkpoint-ema.pt``: the checkpoint without the model and optimiser, the EMA in float16 (a third of
    the size): what a GPU sitting sends home to be exported there. It cannot resume training."""
    import torch

    out = Path(out)
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    keep = {k: v for k, v in state.items() if k not in ("model", "optim", "gen")}
    keep["ema"] = {k: v.half() if v.is_floating_point() else v for k, v in state["ema"].items()}
    torch.save(keep, out / "checkpoint-ema.pt")
    return out / "checkpoint-ema.pt"


def export_checkpoint(kind: str, out: str, dest: str, command: str = "", text_encoder: str = "") -> Path:
    """Exports ``out/checkpoint.pt``'s EMA weights without training, metrics recomputed with ``text_encoder``
    ('' = the installed package; a checkpoint trained with a vocabulary subset of it gets identical states)."""
    import torch

    from ..core.priors.stable_diffusion import _alphas_cumprod
    from ..core.priors.text_encoder import load_text_encoder

    state = torch.load(checkpoint_file(out), map_location="cpu", weights_only=False)
    opts = TrainOptions(**dict(state["opts"], export=dest, text_encoder=text_encoder,
                               command=state["opts"].get("command", "") or command))
    data = load_data(opts.data, "cpu")
    te = load_text_encoder(opts.text_encoder or None, "cpu")
    states, pooled = encode_captions(data.captions, te)
    ema, arch = make_model(opts, te.hidden_size)
    if "arch" in state and state["arch"] != arch:  # trained with an older architecture config: rebuild that one
        from ..core.priors import embedded

        arch = state["arch"]
        ema = embedded.build_unet(arch["unet"]) if kind == "diffusion" else embedded.build_scorer_model(arch["scorer"])
    ema.load_state_dict({k: v.float() for k, v in state["ema"].items()})
    ema.eval().requires_grad_(False)
    alphas = _alphas_cumprod(arch["schedule"]) if kind == "diffusion" else None
    size = arch["unet"]["sample_size"] if kind == "diffusion" else arch["scorer"]["image_size"]
    metrics = evaluate(kind, ema, data, states, pooled, alphas, size, opts.eval_images)
    return export(opts, ema, arch, metrics, state["step"], data, te)
