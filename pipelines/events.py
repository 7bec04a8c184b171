"""Typed events that every pipeline generator yields, and the one function that drains them.

Contract: a pipeline is ``run(cfg) -> Iterator[Event]``; it ends with exactly one ``Done``. The UI maps
events to components, the CLI and the tests call ``run_to_completion``: both consume the same generator.

Stopping: a consumer stops a run by closing its generator, which takes effect at the run's next ``yield``. Work
that runs long between yields (a held-out view or a turntable frame on a CPU, a mesh grid, a structure-from-motion
phase) calls ``check_cancelled()`` between its units (a chunk of rays or grid points, a view, a frame): inside a
consumer's ``with cancellable(flag):`` (the app's run worker) it raises ``Cancelled`` once ``flag`` is set, so a
Stop ends the run within one unit; elsewhere (the CLI, tests, ``run_to_completion``) it does nothing.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Union

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



class Cancelled(BaseException):
    """Raised by ``check_cancelled()`` in a run whose consumer has asked it to stop. A BaseException, as
    ``GeneratorExit``: a method's ``except Exception`` does not swallow it, and its ``finally:`` runs (frees)."""


_CANCEL = threading.local()


@contextmanager
def cancellable(flag: threading.Event) -> Iterator[None]:
    """Within the block, ``check_cancelled()`` in this thread raises ``Cancelled`` once ``flag`` is set. The consumer
    that advances a pipeline generator (``next`` runs its code in the consumer's thread) wraps its loop in this."""
    previous = getattr(_CANCEL, "flag", None)
    _CANCEL.flag = flag
    try:
        yield
    finally:
        _CANCEL.flag = previous


def cancel_flag() -> threading.Event | None:
    """The flag of the ``cancellable`` block this thread is in (None outside one): for work that must pass it on,
    e.g. to a library's own cancellation token (structure from motion)."""
    return getattr(_CANCEL, "flag", None)


def check_cancelled() -> None:
    """Raises ``Cancelled`` if this thread's consumer has asked the run to stop; call it between units of work."""
    flag = getattr(_CANCEL, "flag", None)
    if flag is not None and flag.is_set():
        raise Cancelled()
