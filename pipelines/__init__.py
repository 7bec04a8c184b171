"""gen3d pipelines: one generator per method, one registry, no heavy imports here.

``PIPELINES`` maps a name to a spec; ``spec.load()`` imports the method module only when a run needs it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from .config import PipelineConfig, RunContext, UserInputError
from .events import Artifact, ArtifactReady, Done, Log, Preview, Progress, run_to_completion


@dataclass(frozen=True)
class PipelineSpec:
    title: str
    module: str
    """Module that defines ``CONFIG`` (the config dataclass) and ``run(cfg) -> Iterator[Event]``."""
    summary: str

    def load(self):
        """Returns (config class, run function), importing the method module now."""
        mod = importlib.import_module(self.module)
        return mod.CONFIG, mod.run


PIPELINES: dict[str, PipelineSpec] = {
    "nerf": PipelineSpec("NeRF", "pipelines.nerf", "posed images to a radiance field: novel views, depth, a mesh"),
}

__all__ = [
    "PIPELINES", "PipelineSpec", "PipelineConfig", "RunContext", "UserInputError", "Artifact",
    "ArtifactReady", "Done", "Log", "Preview", "Progress", "run_to_completion",
]
