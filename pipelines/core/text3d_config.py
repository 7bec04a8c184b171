"""The settings of the text-to-3D methods that optimise a field, declared once.

``FieldConfig``: what all three (DreamFusion, Magic3D's coarse stage, Dream Fields) read: views per step, the
scene's bound, the renders and their samples, the cameras' elevation range (and ``OutputsConfig``'s exports).
``Text3DConfig``: what the score-distillation methods (DreamFusion; Magic3D's coarse stage) add: the prompt and
the prior, the diffusion-time range, view prompts, the student's blob, the random cameras' distance and field
of view, DreamFusion's shading and regularisers.

Contract: the loop pieces of ``core.text3d`` read ``Text3DConfig``'s fields by name (``load_prior``,
``distill_step``); each method subclasses one of the two with its own fields and presets, and redeclares a field
to change its default. Nothing here imports torch (the app imports the configs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import OutputsConfig
from .priors import AUTO


@dataclass
class FieldConfig(OutputsConfig):
    batch_size: int = 1
    """Random views per step."""
    bound: float = 1.0
    """Radius of the bounding sphere the object lives in (nothing is rendered outside it)."""
    resolution: int = 64
    """Side of the training renders in pixels (resized to the prior's or the scorer's input size)."""
    n_samples: int = 64
    """Stratified samples per ray."""
    elevation_min: float = -10.0
    """Random cameras: lowest elevation in degrees."""
    elevation_max: float = 80.0
    """Random cameras: highest elevation in degrees."""
    preview_every: int = 250


@dataclass
class Text3DConfig(FieldConfig):
    prompt: str = "a DSLR photo of a hamburger"
    """What to make."""
    negative_prompt: str = ""
    """What to steer away from: the unconditional side of classifier-free guidance."""
    prior: str = AUTO
    """Diffusion prior: a Hugging Face Hub id, a local diffusers folder (SD 1.x/2.x), 'embedded', or 'auto' (Stable
    Diffusion 2.1-base when it is in the local Hugging Face cache, else the embedded prior; the log says which)."""
    prior_dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    """Precision of the prior on CUDA ('auto': float16); always float32 on CPU."""
    prior_compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    """torch.compile the prior's UNet (and VAE encoder) on CUDA. 'reduce-overhead' (CUDA graphs) measured on an
    H200 with SD 2.1-base: 13.2 ms per guidance step against 44.6 eager, 10k steps in 3.3 min, after about 75 s
    of compiling; 'default' compiles without graphs. Off by default: the compile time outweighs it for short
    runs, and CUDA graphs want one thread to drive the run (the CLI does)."""
    guidance_scale: float = 100.0
    """Classifier-free guidance scale (DreamFusion: 100)."""
    t_min: float = 0.02
    """Smallest diffusion time drawn, as a fraction of the training timesteps."""
    t_max: float = 0.98
    """Largest diffusion time drawn at the start."""
    t_max_end: float = 0.98
    """Largest diffusion time at the end: it moves linearly from t_max (equal: DreamFusion's fixed range)."""
    view_prompts: bool = True
    """Append the view ('front', 'side', 'back', 'overhead') to the prompt, from each camera's angles."""
    view_template: str = "{prompt}, {view} view"
    """How a view-dependent prompt is written."""
    front_width_deg: float = 90.0
    """Azimuth sector (centred on azimuth 0, the +x side) that is the front; as wide a sector opposite is the back."""
    overhead_elevation_deg: float = 60.0
    """Cameras at or above this elevation get the 'overhead' prompt."""
    blob_density: float = 10.0
    """Density added at the centre, falling linearly to 0 at blob_radius (Magic3D's blob): the start shape."""
    blob_radius: float = 0.5
    """Radius of the initial density blob."""
    n_importance: int = 32
    """Extra samples per ray drawn from a density-only first pass (0: none)."""
    camera_distance_min: float = 1.5
    """Random cameras: nearest distance from the origin."""
    camera_distance_max: float = 2.0
    """Random cameras: farthest distance."""
    fov_min: float = 40.0
    """Random cameras: narrowest field of view in degrees."""
    fov_max: float = 70.0
    """Random cameras: widest field of view in degrees."""
    albedo_warmup: float = 0.2
    """Fraction of training shaded with the albedo only, before random shading starts."""
    albedo_prob: float = 0.2
    """After the warm-up: probability of albedo-only shading."""
    textureless_prob: float = 0.4
    """After the warm-up: probability of textureless (white albedo) diffuse shading; the rest is diffuse."""
    ambient: float = 0.1
    """Ambient light of diffuse shading."""
    background: Literal["mlp", "random", "white"] = "mlp"
    """'mlp': a small network of the view direction; 'random': a random colour per view; 'white'."""
    lambda_orient: float = 1000.0
    """Weight of the orientation loss (normals facing away from the camera), ramped up from a hundredth of it
    over the first half of training."""
    lambda_opacity: float = 1.0
    """Weight of the opacity regulariser mean(sqrt(opacity^2 + 0.01)) (DreamFusion's sparsity term)."""
