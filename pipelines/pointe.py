"""Point-E (Nichol et al. 2022): a prompt or a picture to a coloured point cloud by point diffusion, then a mesh.

A text-to-image model makes one synthetic view of the prompt (the paper's fine-tuned GLIDE was not released:
Stable Diffusion 2.1-base stands in; the embedded tier uses the project's own diffusion prior), or the user
gives the picture. CLIP ViT-L/14 turns it into a grid of 256 patch features; a transformer diffusion model
denoises 1024 points (xyz + RGB) conditioned on them, 64 Heun steps with classifier-free guidance 3; an upsampler
adds 3072 points conditioned on those, 64 more steps; an SDF regression model turns the 4096 points into a
mesh (marching cubes on a 128^3 grid, vertex colours from the nearest points). ``base40M-textvec`` skips the view
and reads the prompt's CLIP text embedding. Networks: core/point_diffusion.py; sampler: core/point_sampler.py;
mesh and pictures: core/point_clouds.py; loading, tiers: core/priors/point_e.py.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Literal

from .config import PipelineConfig, RunContext, UserInputError, run_guarded
from .core.priors import DEFAULT_DIFFUSION
from .events import Done, Event, Log, Preview, Progress


@dataclass
class PointEConfig(PipelineConfig):
    prompt: str = "a red motorcycle"
    """What to make (ignored when an image is given)."""
    image: str = ""
    """An image file of one object (PNG with transparency, or on a plain background): image to 3D."""
    checkpoints: str = ""
    """Point-E weights: a folder holding the official files (base_40m.pt, upsample_40m.pt, sdf.pt, ...), a Hub
    repository holding them, or 'embedded'; empty: the embedded models when they ship, else ./point_e_model_cache
    (where the official package downloads them)."""
    base_model: Literal["base40M", "base300M", "base1B", "base40M-imagevec", "base40M-textvec"] = "base40M"
    """Base model of the real tier: the image-grid models (40M, 300M, 1B parameters), the CLIP image-vector one, or
    'base40M-textvec', which reads the prompt directly (no synthetic view)."""
    text_to_image: str = DEFAULT_DIFFUSION
    """Prompt runs through a view: the text-to-image prior (a Hub id or local diffusers folder, or 'embedded')."""
    view_template: str = "a 3D render of {prompt}, white background"
    """How the prompt is put to the text-to-image model (Point-E's view model was tuned on 3D renders)."""
    view_steps: int = 50
    """DDIM steps of the synthetic view."""
    view_guidance: float = 7.5
    """Classifier-free guidance of the synthetic view."""
    clip: str = ""
    """CLIP ViT-L/14 (Hub id or folder); empty: <checkpoints>/clip when it exists, else
    openai/clip-vit-large-patch14."""
    guidance_scale: float = 3.0
    """Classifier-free guidance of the base model, on its x0 prediction (Point-E: 3)."""
    upsample_guidance: float = 0.0
    """Guidance of the upsampler (0: none, the text example's setting; the image example uses 3)."""
    steps: int = 64
    """Heun steps per stage (Point-E: 64; each costs two model calls but the last)."""
    upsample: bool = True
    """Add 3072 points to the 1024 of the base model."""
    mesh: bool = True
    """Turn the cloud into a mesh with the SDF model."""
    grid_size: int = 128
    """Marching-cubes grid side of the mesh."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Autocast of the point models: 'auto' is bfloat16 on CUDA (see bench/pointe.py for its effect), float32 on CPU."""
    compile: Literal["off", "default", "reduce-overhead"] = "off"
    """torch.compile the point models on CUDA ('reduce-overhead': CUDA graphs); the first run pays the compile."""
    preview_size: int = 256
    """Side of the preview pictures of the forming cloud."""
    preview_every: int = 8
    """Yield the forming cloud every N Heun steps."""

    PRESETS: ClassVar[dict] = {
        "fast": dict(steps=32, grid_size=96, view_steps=25),
        "quality": dict(base_model="base1B", grid_size=192),
        "text": dict(base_model="base40M-textvec"),
    }


CONFIG = PointEConfig
# The embedded base learned from renders whose object spans 0.73 of the view (the median over the 2048-point
# pack's 3194 renders; 5-95 %: 0.52-0.91): an uploaded image is framed the same, not at the single-view 0.86.
EMBEDDED_VIEW_MARGIN = 0.18
STAGES = ("view", "base", "upsample", "mesh")


def run(cfg: PointEConfig) -> Iterator[Event]:
    return run_guarded("pointe", cfg, _run, "use a smaller --base-model, or --no-mesh / a smaller --grid-size")


def _check(cfg: PointEConfig) -> None:
    if not cfg.image and not cfg.prompt.strip():
        raise UserInputError("write a prompt or give an image: what should the 3D object be?")
    if cfg.image and not Path(cfg.image).is_file():
        raise UserInputError(f"no image file at {cfg.image!r}")
    if cfg.steps < 1 or cfg.view_steps < 1:
        raise UserInputError("steps and view_steps must be at least 1")
    if not 8 <= cfg.grid_size <= 512:
        raise UserInputError("grid_size must be between 8 and 512")
    if cfg.guidance_scale < 0 or cfg.upsample_guidance < 0:
        raise UserInputError("guidance scales must be 0 or more (Point-E uses 3 for the base)")
    if "{prompt}" not in cfg.view_template:
        raise UserInputError("view_template needs a {prompt} placeholder, e.g. 'a 3D render of {prompt}'")


def _run(cfg: PointEConfig, ctx: RunContext) -> Iterator[Event]:
    import torch

    from .core.export import save_image, save_mesh, save_point_cloud
    from .core.images import to_uint8
    from .core.point_clouds import cloud_mesh, render_points
    from .core.point_sampler import BASE_STAGE, UPSAMPLE_STAGE, Stage, sample_progressive, to_point_cloud
    from .core.priors.point_e import load_models, tier_of

    _check(cfg)
    started = time.perf_counter()
    dev = ctx.device
    seconds = dict.fromkeys(STAGES, 0.0)

    def sync() -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)  # peak_gpu_gb: this run's

    tier = tier_of(cfg.checkpoints)
    yield Log(f"Point-E {tier} tier: loading {cfg.checkpoints or 'the default checkpoints'}")
    models = load_models(cfg.checkpoints, cfg.base_model, dev, cfg.clip, cfg.upsample, cfg.mesh)
    yield Log(f"models: {models.describe()}")
    kind = models.kind
    if cfg.image and kind == "uncond":
        raise UserInputError("this base model is unconditional; choose an image-conditioned one for an image")
    if cfg.image and models.base_name == "base40M-textvec":
        raise UserInputError("base40M-textvec reads text only; choose base40M (or base300M, base1B) for an image")

    # 1. The view: the given picture, or one made from the prompt (unless the base reads text directly).
    view, view_prior = None, _view_prior(cfg, models)
    prior = None
    if view_prior:
        from .core.priors import describe_prior, load_guidance

        yield Log(f"text to view: {describe_prior(view_prior)}")
        prior = load_guidance(view_prior, dev)
    t0 = time.perf_counter()  # the view stage: the picture and its CLIP features (loading is not timed)
    if cfg.image:
        from .core.single_view_net import prepare_image

        margin = EMBEDDED_VIEW_MARGIN if models.tier == "embedded" else 0.08
        view = to_uint8(prepare_image(cfg.image, 256, margin))
        yield Log(f"image to 3D: the object cropped and centred on white, spanning {1 / (1 + 2 * margin):.2f} of "
                  "the view")
    elif prior is not None:
        from .core.priors.text_to_image import text_to_image

        view_prompt = cfg.view_template.format(prompt=cfg.prompt.strip())
        view = to_uint8(text_to_image(prior, view_prompt, steps=cfg.view_steps, guidance_scale=cfg.view_guidance,
                                      seed=cfg.seed))
        yield Preview(0, {"view": view}, caption=f"synthetic view: {view_prompt!r}")

    # 2. Conditioning.
    from PIL import Image

    from .core.priors.point_e_embedded import CropWarning

    pil = [Image.fromarray(view)] if view is not None else None
    enc = models.encoder
    with warnings.catch_warnings(record=True) as caught:  # the embedded sv grid's crop, said in the run's log
        warnings.simplefilter("always", CropWarning)
        grid = enc.grid(pil) if pil and hasattr(enc, "grid") else None
    if any(issubclass(w.category, CropWarning) for w in caught):
        yield Log("the view shows no single object on a plain background, so it was not cropped as the base's "
                  "training views were; the cloud may miss the object: try another seed or prompt, or an image",
                  "warning")
    if kind == "gridvec":  # the embedded grid base: the view's grid and embedding, or the prompt's embedding alone
        base_cond = ({"embeddings": grid, "vec": enc.image_vec(pil)} if pil else
                     {"vec": enc.text_vec([cfg.prompt.strip()])})
    elif kind == "grid":
        if grid is None:
            raise UserInputError(f"{models.base_name} is conditioned on a picture: give an image or a text-to-image "
                                 "model for the prompt's view")
        base_cond = {"embeddings": grid}
    elif kind == "vec":
        base_cond = {"embeddings": enc.image_vec(pil) if pil else enc.text_vec([cfg.prompt.strip()])}
    else:
        base_cond = {}
    if not cfg.image and not view_prior:
        yield Log(f"text to 3D straight from the prompt's embedding ({models.base_name})")
    up_cond = {"embeddings": grid} if grid is not None and hasattr(models.upsampler, "clip_embed") else {}
    seconds["view"] = sync() - t0
    if view is not None:
        yield ctx.artifact("image", save_image(view, ctx.path("view.png")), "the view the cloud is conditioned on")

    # 3. Sampling, streamed.
    autocast = torch.bfloat16 if cfg.precision == "bfloat16" or (cfg.precision == "auto" and dev.type == "cuda") \
        else None
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 runs: TF32 matmuls (as the released sampler's timing)
    base, up, sdf = (_variant(models, part, autocast, cfg.compile if dev.type == "cuda" else "off")
                     for part in ("base", "upsampler", "sdf"))
    if cfg.compile != "off" and dev.type == "cuda":
        yield Log(f"compile mode {cfg.compile}: the first run compiles (slow)")
    base_stage = Stage(**{**asdict(BASE_STAGE), "steps": cfg.steps, "guidance_scale": cfg.guidance_scale})
    up_stage = Stage(**{**asdict(UPSAMPLE_STAGE), "steps": cfg.steps, "guidance_scale": cfg.upsample_guidance})
    total = cfg.steps * (2 if up is not None else 1)
    final = None
    t0 = time.perf_counter()
    for st in sample_progressive(base, base_cond, 1, up, up_cond, base_stage, up_stage, cfg.seed, dev,
                                 cfg.preview_every, autocast):
        step = st.step + (cfg.steps if st.stage == "upsample" else 0)
        final = st.x0
        if st.step == st.total:
            now = sync()
            seconds[st.stage] = now - t0
            t0 = now
        cloud = to_point_cloud(st.x0[0])
        images = {"points": render_points(cloud, cfg.preview_size)}
        if view is not None:
            images["view"] = view
        yield Preview(step, images, caption=f"{st.stage}: step {st.step}/{st.total}, {cloud.xyz.shape[0]} points")
        yield Progress(step, total, {}, stage=st.stage)
    cloud = to_point_cloud(final[0])
    yield ctx.artifact("points", save_point_cloud(cloud, ctx.path("points.ply")),
                       f"point cloud ({len(cloud.xyz)} coloured points, .ply)")

    # 4. Mesh.
    metrics = {"points": float(len(cloud.xyz))}
    if cfg.mesh and sdf is not None:
        t0 = time.perf_counter()
        mesh = cloud_mesh(sdf, cloud, cfg.grid_size, autocast)
        seconds["mesh"] = sync() - t0
        metrics["mesh_faces"] = float(mesh.num_faces)
        if mesh.num_faces == 0:
            yield Log("the SDF model found no surface: no mesh written", "warning")
        else:
            yield ctx.artifact("mesh", save_mesh(mesh, ctx.path("mesh.glb")), "mesh (.glb, vertex colours)")
            yield ctx.artifact("mesh", save_mesh(mesh, ctx.path("mesh.obj")), "mesh (.obj)")
    elif cfg.mesh:
        yield Log("no SDF model in these checkpoints: no mesh", "warning")
    metrics.update({f"{k}_seconds": v for k, v in seconds.items()})
    if dev.type == "cuda":
        metrics["peak_gpu_gb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    info = {"prompt": "" if cfg.image else cfg.prompt, "image": Path(cfg.image).name if cfg.image else "",
            "tier": models.tier, "models": models.describe(), "config": asdict(cfg), "metrics": metrics}
    ctx.path("run.json").write_text(json.dumps(info, indent=1))
    yield ctx.artifact("json", ctx.path("run.json"), f"run settings ({models.tier} tier)")
    yield Log(f"done: {models.describe()}")
    yield Done(list(ctx.artifacts), metrics, time.perf_counter() - started)


def _view_prior(cfg: PointEConfig, models) -> str:
    """The text-to-image prior a prompt run goes through, or '' when the base model reads the text itself:
    base40M-textvec, or the embedded tier unless a view prior is named (its base also reads the scorer's caption
    embedding, while a 64 px view of the embedded diffusion prior, on its random backgrounds, is unlike the renders
    it learned from: v5, 40 held-out captions, F1@5 % 0.340 straight against 0.274 through that view;
    bench/RESULTS.md)."""
    if cfg.image or models.base_name == "base40M-textvec" or models.kind == "uncond":
        return ""
    if models.tier == "embedded" and cfg.text_to_image == DEFAULT_DIFFUSION:
        return ""
    return cfg.text_to_image


def _variant(models, part: str, dtype, compile_mode: str):
    """``models.<part>`` with bfloat16 parameters for autocast runs, compiled when asked; made once per loaded
    models object (the cache keeps it with them)."""
    model = getattr(models, part)
    if model is None or (dtype is None and compile_mode == "off"):
        return model
    variants = models.__dict__.setdefault("variants", {})
    key = (part, dtype, compile_mode)
    if key not in variants:
        import torch

        from .core.point_diffusion import cast_parameters

        v = cast_parameters(model, dtype) if dtype is not None else model
        if compile_mode != "off" and part != "sdf":
            v = torch.compile(v, mode=compile_mode)
            v._cuda_graphs = compile_mode == "reduce-overhead"
        variants[key] = v
    return variants[key]
