"""Typed events that every pipeline generator yields, and the one function that drains them.

Contract: a pipeline is ``run(cfg) -> Iterator[Event]``; it ends with exactly one ``Done``. The UI maps
events to components, the CLI and the tests call ``run_to_completion``: both consume the same generator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Union

import numpy as np


@dataclass
class Progress:
    """A training step (``losses`` set; ``stage`` names a training phase such as Magic3D's "coarse"), or a named
    stage of the end of a run, with no losses: ``Progress(12, 48, stage="rendering the turntable")``."""

    step: int
    total: int
    losses: dict[str, float] = field(default_factory=dict)
    stage: str = ""


@dataclass
class Preview:
    """uint8 HxWx3 images on the CPU, keyed by what they show: rgb, depth, normal, opacity, ..."""

    step: int
    images: dict[str, np.ndarray]
    caption: str = ""


@dataclass
class Artifact:
    kind: str  # mesh | points | voxels | video | image | checkpoint | json
    path: str
    label: str = ""


@dataclass
class ArtifactReady:
    artifact: Artifact


@dataclass
class Log:
    message: str
    level: str = "info"  # info | warning


@dataclass
class Done:
    artifacts: list[Artifact]
    metrics: dict[str, float]
    seconds: float


Event = Union[Progress, Preview, ArtifactReady, Log, Done]


def run_to_completion(events: Iterable[Event], on_event: Callable[[Event], None] | None = None) -> Done:
    """Drain a pipeline generator and return its ``Done`` (the CLI and the tests use this)."""
    done = None
    for ev in events:
        if on_event is not None:
            on_event(ev)
        if isinstance(ev, Done):
            done = ev
    if done is None:
        raise RuntimeError("pipeline ended without a Done event")
    return done

