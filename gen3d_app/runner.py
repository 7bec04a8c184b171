"""How the app drives a run: one thread owns the pipeline generator from start to end, on a device of its own.

Contract: ``owned_events(run_fn, cfg, device)`` starts ``run_fn(cfg)`` in a new thread that advances it to the
end and relays its events through a small queue; iterating the result yields them in order, and closing it
(Gradio's Stop) asks the thread to stop after the current step and waits until the pipeline's ``finally:``
has freed its memory. One owner thread is what CUDA graphs need (``--prior-compile reduce-overhead``: graphs
are captured and replayed from the thread that built them), which Gradio's worker threads, a different one
for each step of a generator, cannot give. ``DevicePool`` hands each run a device, free-first, so with
``GEN3D_GPU_SLOTS=N`` and N GPUs, N runs proceed at once, each on its own ``cuda:i``. ``zerogpu(...)``
wraps the function that touches CUDA in ``spaces.GPU`` on Hugging Face ZeroGPU and is inert elsewhere.
No torch at import.
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Iterator

_END = object()


def owned_events(run_fn: Callable[[Any], Iterator[Any]], cfg: Any, device: str | None = None,
                 queue_size: int = 4) -> Iterator[Any]:
    """The events of ``run_fn(cfg)``, produced by one thread that owns the generator (see module docstring).

    Args:
        run_fn: a pipeline's ``run``.
        cfg: its config.
        device: "cuda:i" makes it the thread's current CUDA device before the pipeline starts (so code that
            says "cuda" lands there too); None or "cpu" leaves it.
        queue_size: events held while the consumer is busy; the pipeline waits when the queue is full, so a
            slow browser slows the run rather than letting previews pile up in memory.
    """
    q: queue.Queue = queue.Queue(maxsize=queue_size)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def owner() -> None:
        try:
            if device and device.startswith("cuda"):
                import torch

                torch.cuda.set_device(device)
            events = run_fn(cfg)
            try:
                for ev in events:
                    if not put(ev):
                        break
            finally:
                events.close()  # the pipeline's finally: runs in the thread that ran the pipeline
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put(e)
            return
        put(_END)

    thread = threading.Thread(target=owner, name=f"gen3d-run-{getattr(cfg, 'out_dir', '')}", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = q.get(timeout=0.25)
            except queue.Empty:
                if not thread.is_alive() and q.empty():
                    return  # the owner died without a word (should not happen): end rather than hang
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()  # Stop returns once the run's memory is free: the next queued run may start


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
