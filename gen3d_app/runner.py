"""Where a run goes: a device of its own, and on Hugging Face ZeroGPU a GPU call of a computed duration.

Contract: ``DevicePool`` hands each run a device, free-first, so with ``GEN3D_GPU_SLOTS=N`` and N GPUs, N runs
proceed at once, each on its own ``cuda:i`` (``stream.drive``'s worker thread, which owns the run from start
to end, makes it that thread's current device). ``zerogpu(duration)`` wraps the function that touches CUDA in
``spaces.GPU`` on ZeroGPU and is inert elsewhere; ``run_seconds`` is the duration rule. No torch at import.
"""
from __future__ import annotations

import os
import threading
from typing import Callable

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
