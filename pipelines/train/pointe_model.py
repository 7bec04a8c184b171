"""What each embedded Point-E model is trained as: the shipped sizes (``MODELS``) and the tiny ones of the CPU
tests (``TINY``), the diffusion schedules and loss weightings, the training options (``TrainOptions``: the flags of
``python -m pipelines pointe train``) and the network config a run builds (``model_config``). Kept apart from the
loop (``pointe_train``), which imports them, as do the batches (``pointe_batches``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.point_sampler import CHANNEL_BIASES, CHANNEL_SCALES
from .pointe_data import DEFAULT_ROOT

MODELS = {
    "base": dict(name="CLIPImagePointDiffusionTransformer", input_channels=6, output_channels=12, n_ctx=1024,
                 width=192, layers=6, heads=4, init_scale=0.25, time_token_cond=True, cond_drop_prob=0.1,
                 token_cond=True, clip_dim=256),
    "upsample": dict(name="UpsamplePointDiffusionTransformer", input_channels=6, output_channels=12, n_ctx=3072,
                     cond_ctx=1024, width=128, layers=4, heads=4, init_scale=0.25, time_token_cond=True,
                     cond_drop_prob=0.0, channel_scales=list(CHANNEL_SCALES), channel_biases=list(CHANNEL_BIASES)),
    "sdf": dict(name="CrossAttentionPointCloudSDFModel", n_ctx=4096, width=128, encoder_layers=4, encoder_heads=4,
                decoder_layers=2, decoder_heads=4, init_scale=0.25),
}
"""The shipped sizes: 3.0M, 0.8M and 1.2M parameters (about 5 MB in int8), against 40M for base40M; small enough
for ~800 shapes and a few minutes of one GPU."""
TINY = {"base": dict(width=32, layers=1, heads=2, n_ctx=256), "upsample": dict(width=32, layers=1, heads=2, n_ctx=768,
                                                                              cond_ctx=256),
        "sdf": dict(width=32, encoder_layers=1, decoder_layers=1, encoder_heads=2, decoder_heads=2, n_ctx=1024)}
"""For CPU tests: the same classes, milliseconds per step."""
SCHEDULES = {"base": "cosine", "upsample": "linear"}
LOSS_WEIGHTS = ("v", "v20", "eps")
"""As the released models (``point_sampler.schedule_of``)."""


@dataclass
class TrainOptions:
    model: str = "base"
    """base | upsample | sdf."""
    data: str = str(DEFAULT_ROOT / "pointe.npz")
    out: str = ""
    """Checkpoint folder (default runs/pointe/MODEL)."""
    steps: int = 200_000
    minutes: float = 5.0
    """Wall-clock budget of the loop; training stops at whichever of steps or minutes comes first."""
    batch: int = 0
    """Clouds per step (0: 128 base, 32 upsample, 32 sdf; 4 with ``tiny``)."""
    lr: float = 3e-4
    warmup: int = 200
    ema: float = 0.999
    cond_drop: float = 0.1
    image_prob: float = 0.5
    """Of the conditioned samples, the share with an image embedding (the rest: a caption's)."""
    queries: int = 2048
    """SDF query points per cloud."""
    log_every: int = 200
    ckpt_every: int = 2000
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    """bfloat16 autocast on CUDA."""
    loss_weight: str = "v20"
    """Diffusion models: 'v20' (each sample's noise MSE times min(1 / alpha_bar_t, 20), batch-normalised:
    v-prediction's weighting capped, which trains the x0 the sampler reads at high noise, where the global shape
    and the condition matter and plain eps MSE hardly looks; the second shipped base), 'v' (a v-prediction base:
    its plain v MSE, the cap lifted; an eps model: as 'v20') or 'eps' (each timestep alike: the released models,
    and the first shipped base). On the CPU test of ``bench/pointe_condition.py tiny`` (8 shapes, 2 seeds x 4
    clouds) a v base sampled clouds of F1@5 % 0.357 to their own shape with 'v20', 0.321 with 'v' (43 and 38 of
    64 nearest their own shape), though 'v' had the lower x0 error at t >= 900."""
    prediction: str = "v"
    """base: what the network predicts, 'v' (the default: ``CLIPImagePointDiffusionTransformer``'s v-prediction,
    still eps to the sampler) or 'eps' (the released models, and the bases shipped before). On a CPU test (8
    training shapes, width 64, 1000 steps, the same v-weighted loss) the eps network's x0 error at t = 1000 was
    0.95 against 0.33 for v (0.25 the best possible): eps nets cannot denoise precisely enough at high noise,
    where the condition is the only thing that says what the shape is."""
    cond_token: bool = False
    """base: the condition as one token in front of the points (the released vec models' layout). Off (the
    default): added to every point's features (the official code's other layout, ``token_cond=False``): the
    first shipped base, a token model trained 8 minutes, had learned to ignore its token (the same denoising
    error with the true, another shape's or no condition: ``bench/pointe_diagnose.py loss``)."""
    cond: str = "vec"
    """base: 'vec' (one scorer embedding: the shipped v3 layout) or 'grid' (the embedded grid base: the view's grid
    of ``grid`` features as tokens plus the embedding; see the module docstring)."""
    grid: str = "fmap"
    """--cond grid: the image grid, 'fmap' (the scorer's feature map before pooling), 'patches' (8 x 8 pixel
    patches of the 64 px view) or 'sv' (the single-view model's encoder's feature map: ``GRID_FEATURES``)."""
    grid_add: bool = True
    """--cond grid: also the whole grid, flattened and projected, added to every point beside its tokens
    (``EmbeddedGridPointDiffusionTransformer.grid_add``; 'fmap': 4096 values, 0.8M parameters at width 192): on
    the CPU a tiny base read grid tokens alone only slowly."""
    tiny: bool = False
    init: str = ""
    """Start from an exported model folder (e.g. ``assets/pointe/base``; its int8 weights dequantised) instead of
    random weights: to adapt a base when the features it reads change (a new single-view model behind 'sv')."""
    export: str = ""
    """Also write the EMA weights, int8, to this folder when done."""
    command: str = ""


def model_config(name: str, tiny: bool = False, cond_token: bool = True, prediction: str = "eps",
                 cond: str = "vec", grid: tuple[int, int] | None = None, grid_add: bool = False) -> dict:
    """``grid``: (grid_dim, grid_tokens) of the image grid, for ``cond='grid'``."""
    cfg = dict(MODELS[name], **(TINY[name] if tiny else {}))
    if name == "base" and cond == "grid":
        vec_dim = cfg.pop("clip_dim")
        cfg.pop("token_cond")
        cfg.update(name="EmbeddedGridPointDiffusionTransformer", grid_dim=grid[0], grid_tokens=grid[1],
                   pos_embed=True, vec_dim=vec_dim, grid_add=grid_add, prediction=prediction)
    elif name == "base":
        cfg["token_cond"] = cond_token
        if prediction != "eps":  # left out for eps: the configs of the bases shipped before stay as they were
            cfg["prediction"] = prediction
    return cfg


def points_needed(name: str, cfg: dict) -> int:
    """Samples a shape the pack must hold to train this model."""
    return {"base": cfg["n_ctx"], "upsample": cfg.get("cond_ctx", 0) + cfg["n_ctx"], "sdf": cfg["n_ctx"]}[name]
