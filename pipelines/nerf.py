"""NeRF (Mildenhall et al. 2020) from posed images, plus an Instant-NGP-style ``fast`` model.

STUB: the config is final; run() is being written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator, Literal

from .config import PipelineConfig
from .events import Event

EXAMPLE_SCENE = "assets/scenes/cow"


@dataclass
class NerfConfig(PipelineConfig):
    scene: str = ""
    """A Blender-format folder (transforms_*.json + images) or a .zip of one; empty: the shipped example."""
    model: Literal["vanilla", "fast"] = "fast"
    """'vanilla': MLP with positional encoding, coarse + fine sampling; 'fast': hash grid + occupancy grid."""
    steps: int = 2000
    """Optimisation steps (one batch of rays each)."""
    batch_rays: int = 4096
    """Rays per step."""
    lr: float = 0.0
    """Adam learning rate; 0 picks the model's default (5e-4 vanilla, 1e-2 fast)."""
    downscale: int = 1
    """Load images at 1/N resolution."""
    max_views: int = 0
    """Use at most this many training views (0: all)."""
    eval_views: int = 0
    """Held-out views for the final PSNR/SSIM (0: all of the held-out split)."""
    white_background: bool = True
    """Composite transparent images and renders on white (NeRF-synthetic protocol); else black."""
    n_coarse: int = 64
    """vanilla: stratified samples per ray for the coarse network."""
    n_fine: int = 128
    """vanilla: extra importance samples per ray for the fine network."""
    width: int = 256
    """vanilla: MLP width."""
    depth: int = 8
    """vanilla: MLP layers before the density head (skip connection at the middle)."""
    hash_levels: int = 16
    """fast: hash-grid levels."""
    hash_log2_size: int = 19
    """fast: log2 of entries per hash-grid level."""
    render_step: float = 0.005
    """fast: ray-marching step as a fraction of the scene box side (smaller: more samples)."""
    mesh_resolution: int = 128
    """Marching-cubes grid resolution for the exported mesh."""
    turntable_frames: int = 48
    """Frames in the turntable video."""
    preview_every: int = 200

    PRESETS: ClassVar[dict] = {
        "fast": dict(model="fast", steps=1500, downscale=1),
        "quality": dict(model="fast", steps=10000, batch_rays=8192, mesh_resolution=256, turntable_frames=96),
    }


CONFIG = NerfConfig


def run(cfg: NerfConfig) -> Iterator[Event]:
    raise NotImplementedError
