"""Point-E's sampler: Karras et al.'s Heun sampler over the models' discrete Gaussian diffusion, as a generator.

Contract: ``sample_progressive(base, base_cond, upsampler=..., ...)`` yields ``SampleStep``s, the forming cloud
every ``every`` steps of each stage and the finished stage at its end; ``sample(...)`` drains it (the CLI, the
tests and the UI run the same generator). Clouds are (B, 6, K) in the diffusion's space: xyz and RGB all in
[-1, 1] (``to_point_cloud`` gives the official units: xyz in about [-0.5, 0.5], colours in [0, 1]). The upsampler
stage's clouds start with the base stage's points, unchanged. All per-step constants (noise levels, the integer
timesteps they map to, the eps -> x0 coefficients) are computed on the host before the loop: the loop itself
never waits for the device.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .geometry import PointCloud
from .point_diffusion import TIMESTEPS, UpsamplePointDiffusionTransformer, alphas_cumprod  # noqa: F401 - re-exported

CHANNEL_SCALES = (2.0, 2.0, 2.0, 2.0 / 255.0, 2.0 / 255.0, 2.0 / 255.0)
CHANNEL_BIASES = (0.0, 0.0, 0.0, -1.0, -1.0, -1.0)
"""Official output units (xyz, RGB 0..255) -> the diffusion's [-1, 1] space: x * scale + bias."""


@dataclass(frozen=True)
class Stage:
    """One stage's sampler settings (the released defaults: 64 Heun steps, sigma 1e-3 .. 120 with churn 3 and
    guidance 3 for the base; sigma up to 160, no churn, no guidance for the upsampler)."""

    steps: int = 64
    sigma_min: float = 1e-3
    sigma_max: float = 120.0
    s_churn: float = 3.0
    guidance_scale: float = 3.0
    """Classifier-free guidance on the x0 prediction; 0 or 1: none (one model call per evaluation)."""
    rho: float = 7.0


BASE_STAGE = Stage()
UPSAMPLE_STAGE = Stage(sigma_max=160.0, s_churn=0.0, guidance_scale=0.0)


@dataclass
class SampleStep:
    stage: str  # "base" | "upsample"
    step: int  # Heun steps done in this stage
    total: int
    x0: torch.Tensor  # (B, 6, K) in [-1, 1]: the current x0 prediction (the finished cloud when step == total)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    """Karras et al.'s noise levels, high to low, then 0: ``steps + 1`` floats."""
    ramp = np.linspace(0.0, 1.0, steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [float(s) for s in (hi + ramp * (lo - hi)) ** rho] + [0.0]


def sigma_to_t(sigma: float, ab: np.ndarray) -> int:
    """The integer timestep whose alpha_bar = 1 / (sigma^2 + 1), truncated down as the released sampler does."""
    a = 1.0 / (sigma ** 2 + 1)
    if a > ab[0]:
        return 0
    if a <= ab[-1]:
        return len(ab) - 1
    return int(np.interp(a, ab[::-1], np.arange(len(ab))[::-1]))


def heun_plan(stage: Stage, ab: np.ndarray):
    """Host-side constants of every model evaluation of a stage.

    Returns:
        plan: per step (sigma, sigma_hat, sigma_next, eval index at sigma_hat, eval index at sigma_next or -1);
        evals: (E, 4) float64 rows (t, c_in, sqrt(1/ab_t), sqrt(1/ab_t - 1)).
    """
    sig = karras_sigmas(stage.steps, stage.sigma_min, stage.sigma_max, stage.rho)
    gamma = min(stage.s_churn / stage.steps, math.sqrt(2) - 1) if stage.s_churn > 0 else 0.0
    plan, evals = [], []

    def add(sigma: float) -> int:
        t = sigma_to_t(sigma, ab)
        evals.append((t, 1 / math.sqrt(sigma ** 2 + 1), math.sqrt(1 / ab[t]), math.sqrt(1 / ab[t] - 1)))
        return len(evals) - 1

    for i in range(stage.steps):
        s_hat = sig[i] * (1 + gamma)
        first = add(s_hat)
        plan.append((sig[i], s_hat, sig[i + 1], first, add(sig[i + 1]) if sig[i + 1] > 0 else -1))
    return plan, np.array(evals, dtype=np.float64)


def _double(cond: dict) -> dict:
    """Conditioning for a guided batch: the real inputs, then zeros (the released models' unconditional input)."""
    return {k: torch.cat([v, torch.zeros_like(v)]) for k, v in cond.items() if v is not None}


class Denoiser:
    """x_sigma -> x0 through a model trained on the discrete diffusion: the input is scaled to unit variance
    (c_in = 1 / sqrt(sigma^2 + 1)), the model predicts the noise at the matching integer timestep t, and
    x0 = sqrt(1 / ab_t) x_in - sqrt(1 / ab_t - 1) eps, clamped to [-1, 1]. With guidance scale s (not 0 or 1) the
    batch is run twice, with the conditioning and with zeros: x0 = x0_uncond + s (x0_cond - x0_uncond).

    Args:
        model: called as ``model(x (B', C, K), t (B',), **cond)`` -> (B', 2C, K).
        cond: conditioning tensors, batch first (None values are left out).
        channels: C, the predicted-noise channels.
        autocast: run the model under autocast to this dtype (the state stays float32).
    """

    def __init__(self, model, cond: dict, guidance_scale: float, channels: int, autocast: torch.dtype | None = None):
        self.model, self.scale, self.channels, self.autocast = model, guidance_scale, channels, autocast
        self.guided = guidance_scale not in (0.0, 1.0)
        cond = {k: v for k, v in cond.items() if v is not None}
        self.cond = _double(cond) if self.guided else cond
        self.graphs = getattr(model, "_cuda_graphs", False)  # set by whoever compiled it with CUDA graphs

    def __call__(self, x: torch.Tensor, t: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """x (B, C, K) at noise level sigma, t () its integer timestep, coef (4,) the row of ``heun_plan``'s evals."""
        b = x.shape[0]
        x_in = x * coef[1]
        if self.guided:
            x_in = torch.cat([x_in, x_in])
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()
        ctx = torch.autocast(x.device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        with ctx:
            out = self.model(x_in, t.expand(len(x_in)), **self.cond)
        eps = out[:, :self.channels].float()  # the other C channels are the learned variance, unused here
        x0 = (coef[2] * x_in - coef[3] * eps).clamp(-1, 1)
        if self.guided:
            cond_x0, uncond_x0 = x0[:b], x0[b:]
            x0 = uncond_x0 + self.scale * (cond_x0 - uncond_x0)
        return x0


def sample_stage(model, shape: tuple[int, int, int], cond: dict, stage: Stage, schedule: str,
                 generator: torch.Generator, device, name: str = "base", every: int = 8,
                 autocast: torch.dtype | None = None, prefix: torch.Tensor | None = None) -> Iterator[SampleStep]:
    """Heun sampling of one model (Karras et al. 2022, Algorithm 2) with the model's eps turned into x0.

    Args:
        model: a point diffusion transformer; called as ``model(x (B', C, K), t (B',), **cond)``.
        shape: (B, C, K) of the points it makes.
        cond: its conditioning tensors (batch B first); with guidance they are paired with zeros.
        schedule: 'cosine' or 'linear', the diffusion the model was trained on.
        generator: random numbers for the start noise and the churn, on ``device``.
        every: yield the x0 prediction every this many steps (and always at the end).
        autocast: run the model under autocast to this dtype (the sampler's state stays float32).
        prefix: (B, C, K0) points put in front of every yielded cloud (the upsampler's coarse cloud).
    """
    ab = alphas_cumprod(schedule)
    plan, evals = heun_plan(stage, ab)
    ev = torch.tensor(evals, dtype=torch.float32, device=device)
    ts = torch.tensor(evals[:, 0], dtype=torch.long, device=device)
    denoise = Denoiser(model, cond, stage.guidance_scale, shape[1], autocast)

    def emit(step: int, x0: torch.Tensor) -> SampleStep:
        return SampleStep(name, step, stage.steps, x0 if prefix is None else torch.cat([prefix, x0], dim=-1))

    x = torch.randn(shape, generator=generator, device=device) * stage.sigma_max
    for i, (sigma, s_hat, s_next, e_hat, e_next) in enumerate(plan):
        if s_hat > sigma:  # churn: add noise up to sigma_hat
            x = x + torch.randn(shape, generator=generator, device=device) * math.sqrt(s_hat ** 2 - sigma ** 2)
        x0 = denoise(x, ts[e_hat], ev[e_hat])
        d = (x - x0) / s_hat
        if e_next < 0:
            x = x0  # Euler to sigma = 0: x + d * (0 - sigma_hat) is x0
        else:
            x2 = x + d * (s_next - s_hat)
            d2 = (x2 - denoise(x2, ts[e_next], ev[e_next])) / s_next
            x = x + (d + d2) * (0.5 * (s_next - s_hat))
        if (i + 1) % every == 0 and i + 1 < stage.steps:
            yield emit(i + 1, x0)
    yield emit(stage.steps, x.clamp(-1, 1))  # (guidance can push x0 past the range; colours must not)


def to_official_units(x: torch.Tensor) -> torch.Tensor:
    """(B, 6, K) in [-1, 1] -> official units (xyz in about [-0.5, 0.5], RGB in 0..255): the upsampler's ``low_res``.
    (Python scalars only: no host-to-device copy, which would wait for the queued work.)"""
    return torch.cat([(x[:, :3] - CHANNEL_BIASES[0]) / CHANNEL_SCALES[0],
                      (x[:, 3:] - CHANNEL_BIASES[3]) / CHANNEL_SCALES[3]], dim=1)


def to_point_cloud(x: torch.Tensor) -> PointCloud:
    """One cloud (6, K) in [-1, 1] -> PointCloud(xyz (K, 3) in official units, rgb (K, 3) in [0, 1], quantised to
    8 bits as the released sampler does)."""
    xyz = x[:3].t().float() / 2
    rgb = ((x[3:].t().float() + 1) * 127.5).clamp(0, 255).round() / 255
    return PointCloud(xyz, rgb)


def sample_progressive(base, base_cond: dict, batch_size: int = 1, upsampler=None, upsampler_cond: dict | None = None,
                       base_stage: Stage = BASE_STAGE, upsample_stage: Stage = UPSAMPLE_STAGE, seed: int = 0,
                       device="cpu", every: int = 8, autocast: torch.dtype | None = None) -> Iterator[SampleStep]:
    """Base cloud, then (with an upsampler) the upsampled one: the released two-stage sampler.

    Args:
        base: a base model (n_ctx points); base_cond: its conditioning, e.g. ``{"embeddings": (B, 1024, 256)}``.
        upsampler: an upsampler or None; upsampler_cond: e.g. the same grid, or {} (zeros: text runs).
        seed: the whole run's random numbers come from it (same device, same seed: same clouds).
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    x = None
    shape = (batch_size, base.input_channels, base.n_ctx)
    for st in sample_stage(base, shape, base_cond, base_stage, schedule_of(base), gen, device, "base", every,
                           autocast):
        x = st.x0
        yield st
    if upsampler is None:
        return
    cond = dict(upsampler_cond or {}, low_res=to_official_units(x))
    shape = (batch_size, upsampler.input_channels, upsampler.n_ctx)
    yield from sample_stage(upsampler, shape, cond, upsample_stage, schedule_of(upsampler), gen, device, "upsample",
                            every, autocast, prefix=x)


def sample(*args, **kwargs) -> torch.Tensor:
    """The final (B, 6, K) cloud of ``sample_progressive`` (same arguments)."""
    last = None
    for st in sample_progressive(*args, **kwargs):
        last = st.x0
    return last


def schedule_of(model) -> str:
    """The released models' training schedules: linear for the upsampler, cosine for every base model."""
    model = getattr(model, "_orig_mod", model)  # through torch.compile's wrapper
    return "linear" if isinstance(model, UpsamplePointDiffusionTransformer) else "cosine"

