"""Config base class shared by every method, the per-run context, and the user-facing error type.

Contract: each method defines ``@dataclass class XConfig(PipelineConfig)`` whose fields carry attribute
docstrings (they become CLI help and UI hints) and a ``PRESETS`` dict of overrides. ``RunContext`` owns the
run's folder, device and the artifacts recorded so far.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from .events import Artifact, ArtifactReady


class UserInputError(ValueError):
    """Bad input a person can fix (a malformed upload, an empty prompt). The UI shows it as ``gr.Error``,
    the CLI prints it and exits with status 2; it never becomes a traceback."""


@dataclass
class PipelineConfig:
    seed: int = 0
    """Random seed for initialisation and ray/camera sampling."""
    steps: int = 1000
    """Optimisation steps."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda[:N]'."""
    preview_every: int = 100
    """Yield preview renders every N steps (each costs a render and a GPU sync)."""
    out_dir: str = ""
    """Folder for this run's files; empty: a fresh folder under outputs/."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def with_preset(self, name: str) -> "PipelineConfig":
        if name not in self.PRESETS:
            raise UserInputError(f"unknown preset {name!r}; choose one of {sorted(self.PRESETS)}")
        return dataclasses.replace(self, **self.PRESETS[name])

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """Attribute docstrings of the dataclass fields, base classes first."""
        docs: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            if not dataclasses.is_dataclass(klass):
                continue
            try:
                tree = ast.parse(inspect.getsource(klass).lstrip())
            except (OSError, TypeError, SyntaxError):
                continue
            body = tree.body[0].body  # type: ignore[attr-defined]
            for node, nxt in zip(body, body[1:]):
                if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                        and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                        and isinstance(nxt.value.value, str)):
                    docs[node.target.id] = " ".join(nxt.value.value.split())
        return docs



@dataclass
class OutputsConfig(PipelineConfig):
    """What a method that optimises a field for a while writes at the end (NeRF, VolSDF, the text-to-3D methods):
    a turntable of renders and a marching-cubes mesh, beside the streamed previews."""

    mesh_resolution: int = 128
    """Marching-cubes grid resolution for the exported mesh."""
    turntable_frames: int = 48
    """Frames in the turntable video (0: no video)."""
    preview_size: int = 128
    """Side of preview and turntable renders, in pixels."""
    export: bool = True
    """Write the turntable, mesh and checkpoint at the end (benchmarks turn this off)."""

def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
    return dev


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def new_run_dir(root: str | Path = "outputs", prefix: str = "run") -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-{stamp}-", dir=root))


class RunContext:
    """What one run owns: its folder, its torch device, and the artifacts it has written."""

    def __init__(self, cfg: PipelineConfig, name: str):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else new_run_dir(prefix=name)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.artifacts: list[Artifact] = []
        seed_everything(cfg.seed)

    def path(self, name: str) -> Path:
        """A path inside the run folder; names are ours, never user-supplied."""
        if not re.fullmatch(r"[\w.\-]+", name):
            raise ValueError(f"bad artifact file name {name!r}")
        return self.out_dir / name

    def artifact(self, kind: str, path: Path | str, label: str = "") -> ArtifactReady:
        art = Artifact(kind=kind, path=str(path), label=label or Path(path).name)
        self.artifacts.append(art)
        return ArtifactReady(art)

    def preview_due(self, step: int) -> bool:
        every = max(1, self.cfg.preview_every)
        return step % every == 0 or step == self.cfg.steps

    def free(self) -> None:
        """Release cached GPU memory; called from each generator's ``finally`` so Stop cleans up."""
        import gc

        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


def run_guarded(name: str, cfg: PipelineConfig, body: Callable[[PipelineConfig, RunContext], Iterator],
                oom_hint: str) -> Iterator:
    """Runs a method's body inside its RunContext and frees memory however it ends.

    The body runs as a sub-generator so that, when a consumer closes us (Stop), its frame and tensors are
    gone before ``ctx.free()`` empties the CUDA cache; out-of-memory becomes a UserInputError with a hint.
    """
    import torch

    ctx = RunContext(cfg, name)
    out_of_memory = False
    try:
        yield from body(cfg, ctx)
    except torch.cuda.OutOfMemoryError:
        out_of_memory = True  # raised below, once this handler has dropped the traceback and its tensors
    finally:
        ctx.free()
    if out_of_memory:
        raise UserInputError(f"out of GPU memory: {oom_hint}")
