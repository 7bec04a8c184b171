"""The app's GPU side: where a run goes, how long it may take, and the one function that touches CUDA.

Contract: ``DevicePool`` hands each run a device, free-first, so with ``GEN3D_GPU_SLOTS=N`` and N GPUs, N runs
proceed at once, each on its own ``cuda:i`` (``stream.drive``'s worker thread, which owns the run from start
to end, makes it that thread's current device); all runs share one Gradio queue (``GPU_QUEUE``, ``gpu_slots()``
wide). ``zerogpu(duration)`` wraps ``gpu_events``, the function that touches CUDA, in ``spaces.GPU`` on ZeroGPU
and is inert elsewhere; ``run_seconds`` and ``gpu_duration`` are the duration rule, from the measured
``GPU_SECONDS_PER_STEP``. ``fast_mode`` says when a tab compiles the prior. ``detect_device`` tells what runs will
use. No torch at import.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from pipelines import PIPELINES

# ------------------------------------------------------------------------------------------------ devices
def visible_devices() -> list[str]:
    """The CUDA devices torch sees ("cuda:0", ...), or ["cpu"]."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(n)] or ["cpu"]


def free_memory(device: str) -> int:
    """Free bytes on a CUDA device (0 for the CPU)."""
    if not device.startswith("cuda"):
        return 0
    import torch

    return int(torch.cuda.mem_get_info(torch.device(device))[0])


class DevicePool:
    """Gives each run a device: the one running the fewest runs, then the one with the most free memory.

    ``slots`` runs at a time in all; with fewer devices than slots, devices take turns (``slots`` = 2 on one
    GPU: two runs share it). Devices and the memory probe are arguments so tests can fake several GPUs.
    """

    def __init__(self, slots: int, devices: Callable[[], list[str]] = visible_devices,
                 memory: Callable[[str], int] = free_memory):
        self.slots, self._devices, self._memory = max(1, slots), devices, memory
        self._busy: dict[str, int] = {}
        self._cond = threading.Condition()

    def try_acquire(self, timeout: float = 0.25) -> str | None:
        """A device for one run (give it back with ``release``), or None if all slots stay taken ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: sum(self._busy.values()) < self.slots, timeout=timeout):
                return None
            devices = self._devices()
            device = min(devices, key=lambda d: (self._busy.get(d, 0), -self._memory(d), devices.index(d)))
            self._busy[device] = self._busy.get(device, 0) + 1
            return device

    def release(self, device: str) -> None:
        with self._cond:
            self._busy[device] -= 1
            if not self._busy[device]:
                del self._busy[device]
            self._cond.notify_all()

    def busy(self) -> dict[str, int]:
        with self._cond:
            return dict(self._busy)


# ------------------------------------------------------------------------------------------------ ZeroGPU
ZEROGPU_MAX_S = 120
"""The longest ZeroGPU call the app asks for: a signed-in visitor's limit on a free Space (longer calls are
refused by the scheduler); presets named ``zerogpu`` fit in it."""


def on_zerogpu() -> bool:
    """Whether this process runs on a Hugging Face ZeroGPU Space (the ``spaces`` package's own test)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def zerogpu(duration: Callable[..., int]) -> Callable[[Callable], Callable]:
    """``spaces.GPU(duration=...)`` on ZeroGPU (the GPU is attached only inside the decorated call, whose
    arguments ``duration`` also receives), the function unchanged elsewhere, so ``spaces`` stays inert."""
    def wrap(fn: Callable) -> Callable:
        if not on_zerogpu():
            return fn
        import spaces

        return spaces.GPU(duration=duration)(fn)

    return wrap


def run_seconds(steps: int, seconds_per_step: float, fixed_s: float = 20.0, margin: float = 1.3,
                cap: int = ZEROGPU_MAX_S) -> int:
    """The duration to ask ZeroGPU for: loading and export (``fixed_s``) plus the steps at the measured cost,
    with a margin, capped at what a call may take (a run that needs more is cut short by its steps cap)."""
    return int(min(cap, max(10.0, margin * (fixed_s + steps * seconds_per_step))))


# ------------------------------------------------------------------------------- the app's GPU side
def detect_device() -> str:
    """What runs will use, without importing torch unless something else already did."""
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            return f"CUDA GPU: {torch.cuda.get_device_name(0)}"
        return "CPU (no CUDA GPU visible to torch)"
    smi = shutil.which("nvidia-smi")
    if not (smi or Path("/proc/driver/nvidia/version").exists()):
        return "CPU (no NVIDIA GPU found): runs are slow, use few steps"
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = ""
    if "+cpu" in torch_version:
        return "CPU (a GPU is present but torch is a CPU-only build)"
    name = ""
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=5)
            name = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
        except (OSError, subprocess.SubprocessError):
            pass
    return f"CUDA GPU: {name}" if name else "CUDA GPU"


def has_cuda() -> bool:
    return detect_device().startswith("CUDA")


def device_class() -> str:
    """'cuda' or 'cpu': which table of measured step costs applies."""
    return "cuda" if has_cuda() else "cpu"


GPU_QUEUE = "gpu"
RELEASE_WAIT_S = 300.0
"""How long a run waits for a stopped run to reach its finally: before it starts anyway."""
log = logging.getLogger("gen3d.app")


def gpu_slots() -> int:
    return max(1, int(os.environ.get("GEN3D_GPU_SLOTS", "1")))


POOL = DevicePool(gpu_slots())
"""A run holds its device from its start until its pipeline's finally: has run (``drive``'s ``on_closed``).
Gradio frees the queue slot of a cancelled run at once, while the run's current step finishes before the
pipeline can stop; this keeps the next run from loading onto that GPU before the stopped one has let go."""

GPU_SECONDS_PER_STEP = {"nerf": 0.021, "volsdf": 0.035, "single_view": 0.01, "dreamfusion": 0.045,
                        "dreamfields": 0.044, "magic3d": 0.068, "pointe": 0.03}
"""Measured seconds per step on one H200, eager (bench/RESULTS.md): what a ZeroGPU call's duration is computed
from. DreamFusion: the SD 2.1-base guidance step, 44.6 ms; DreamFields: the default step, 43.9 ms; NeRF fast
47 steps/s in its 60 and 120 s runs (53 in the 30 s one), VolSDF 29 steps/s (its occupancy sampler: fewer, larger
steps, 3460 in 120 s); Magic3D: 65.4 ms a coarse step and
78.2 a fine one at 512 px (SD 2.1-base architecture), weighted 4:1 as its zerogpu preset; the others are
estimates until measured."""


def wait_for_device(wait_s: float = RELEASE_WAIT_S) -> Iterator[str | None]:
    """Yields None every 0.25 s while every slot is taken, then the device acquired (the caller gives it back
    with ``POOL.release``), or "" after ``wait_s`` (then nothing is held and the run starts anyway)."""
    end = time.monotonic() + wait_s
    while (device := POOL.try_acquire(timeout=0.25)) is None:
        if time.monotonic() > end:
            log.warning("a stopped run still holds the GPU after %.0fs; starting the next one anyway", wait_s)
            yield ""
            return
        yield None
    yield device


GPU_FIXED_SECONDS = {"pointe": 60.0, "magic3d": 40.0}
"""Loading and export per run where they outweigh the steps: Point-E loads Stable Diffusion, CLIP ViT-L/14 and
three point models for a run whose sampling takes 2.5 s (bench/pointe.py on an H200); Magic3D bakes a texture."""


COMPILE_BREAKEVEN_STEPS = {"dreamfusion": 2500, "dreamfields": 3000, "magic3d": 2500}
"""Steps from which the tab compiles the prior with CUDA graphs ('reduce-overhead') on a GPU: where the time saved
pays for compiling. DreamFusion: 13.2 against 44.6 ms a guidance step after about 75 s of compiling (H200,
bench/RESULTS.md), even at ~2400 steps; DreamFields: 24.2 against 43.9 ms a step, its compile about as long;
Magic3D (coarse + fine steps): 30.0 / 39.2 against 65.4 / 78.2 ms a coarse / fine step after about 80 s."""


def fast_mode(pipeline: str, steps: int) -> str:
    """The compile mode a tab's run uses: 'reduce-overhead' on CUDA for runs long enough to pay for compiling
    (``COMPILE_BREAKEVEN_STEPS``), 'off' on a CPU, for short runs, and on ZeroGPU (which forbids torch.compile)."""
    if on_zerogpu() or not has_cuda() or steps < COMPILE_BREAKEVEN_STEPS.get(pipeline, 10 ** 9):
        return "off"
    return "reduce-overhead"


def fast_mode_note(pipeline: str) -> str:
    """What a tab says about its compile mode."""
    if on_zerogpu():
        return " On ZeroGPU runs are not compiled (ZeroGPU forbids torch.compile)."
    if not has_cuda():
        return ""
    n = COMPILE_BREAKEVEN_STEPS.get(pipeline)
    return (f" On this GPU, runs of {n} steps or more compile the prior with CUDA graphs (about a minute of "
            "compiling, then about 2-3x faster steps); shorter runs stay eager.") if n else ""


def gpu_duration(pipeline: str, cfg: Any, device: str | None = None) -> int:
    """Seconds a ZeroGPU call asks for: the run's steps at the measured cost, plus loading and export."""
    return run_seconds(int(getattr(cfg, "steps", 0) or 0), GPU_SECONDS_PER_STEP.get(pipeline, 0.05),
                              fixed_s=GPU_FIXED_SECONDS.get(pipeline, 20.0))


@zerogpu(gpu_duration)
def gpu_events(pipeline: str, cfg: Any, device: str | None = None) -> Iterator[Any]:
    """The one function that touches CUDA, iterated by the one worker thread that owns the run (``stream.drive``;
    on ZeroGPU inside the call that holds the GPU, its events coming back pickled: CPU data and file paths)."""
    _, run_fn = PIPELINES[pipeline].load()
    if device and device.startswith("cuda"):
        import torch

        torch.cuda.set_device(device)  # this thread's current device: code that says "cuda" lands here too
    yield from run_fn(cfg)
