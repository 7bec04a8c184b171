"""gen3d pipelines: one generator per method, one registry, no heavy imports here.

``PIPELINES`` maps a name to a spec; ``spec.load()`` imports the method module only when a run needs it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from .config import PipelineConfig, RunContext, UserInputError
from .events import Artifact, ArtifactReady, Done, Log, Preview, Progress, run_to_completion


@dataclass(frozen=True)
class PipelineSpec:
    title: str
    module: str
    """Module that defines ``CONFIG`` (the config dataclass) and ``run(cfg) -> Iterator[Event]``."""
    summary: str
    commands: dict[str, str] = field(default_factory=dict, hash=False)
    """Extra CLI subcommands: ``python -m pipelines <name> <command> ...`` calls ``"module:function"(argv)``."""

    def load(self):
        """Returns (config class, run function), importing the method module now."""
        mod = importlib.import_module(self.module)
        return mod.CONFIG, mod.run


PIPELINES: dict[str, PipelineSpec] = {
    "nerf": PipelineSpec("NeRF", "pipelines.nerf", "posed images to a radiance field: novel views, depth, a mesh"),
    "volsdf": PipelineSpec("VolSDF", "pipelines.volsdf",
                           "posed images to a signed distance field (neural or primitives): a watertight mesh",
                           {"make-scene": "pipelines.train.example_scenes:make_scene_main"}),
    "single_view": PipelineSpec("Single view", "pipelines.single_view",
                                "one image to voxels, a point cloud and a mesh (ResNet-18 encoder, three decoders)",
                                {"data": "pipelines.train.single_view_data:main"}),
    "dreamfusion": PipelineSpec("DreamFusion", "pipelines.dreamfusion",
                                "a text prompt to a NeRF by score distillation from a diffusion model: a turntable "
                                "and a mesh"),
    "dreamfields": PipelineSpec("DreamFields", "pipelines.dreamfields",
                                "a caption to a NeRF that CLIP sees from every pose: a turntable, a mesh, CLIP scores"),
    "magic3d": PipelineSpec("Magic3D", "pipelines.magic3d",
                            "a text prompt to a textured mesh: a coarse hash-grid field, then a DMTet mesh refined by "
                            "differentiable rasterization"),
    "pointe": PipelineSpec("Point-E", "pipelines.pointe",
                           "a prompt or a picture to a coloured point cloud by point diffusion, upsampled, then a mesh",
                           {"data": "pipelines.train.pointe_data:main", "train": "pipelines.train.pointe_train:main",
                            "export": "pipelines.train.pointe_train:export_main"}),
}

__all__ = [
    "PIPELINES", "PipelineSpec", "PipelineConfig", "RunContext", "UserInputError", "Artifact",
    "ArtifactReady", "Done", "Log", "Preview", "Progress", "run_to_completion",
]
