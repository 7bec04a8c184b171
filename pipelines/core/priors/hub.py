"""Where a pretrained model comes from, and the one-model-per-kind cache: shared by every real-tier loader.

Contract: ``local_path(source, what, help)`` returns the folder a source names, None for a Hub id (owner/name),
and raises UserInputError otherwise; ``hub_error(repo_id, exc, help)`` words a failed download;
``hub_snapshot(repo_id, patterns, help)`` fetches a repository's files, cache first;
``ModelCache.get(key, load)`` returns the cached model for ``key`` or drops the previous one and loads anew;
``ModelCache.load(source, ...)`` does so for a Hub id or local folder, keyed by (folder or id, dtype, device);
``Compilable`` gives a loaded model ``compile(mode)`` over the submodules it names.
No torch or Hugging Face import happens at import time here.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Callable, TypeVar

from ...config import UserInputError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")  # owner/name: never starts with '/', '.' or '~'
T = TypeVar("T")


def hub_cached(repo_id: str, filename: str = "config.json") -> bool:
    """Whether a Hub model's ``filename`` is in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(repo_id, filename), str)


def local_path(source: str, what: str, help_text: str) -> Path | None:
    """The folder ``source`` names, None when it is a Hub id; ``what`` names the expected folder kind."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserInputError(f"{source!r} is a file; give a {what} folder or a Hub id. " + help_text)
        return path.resolve()
    if HUB_ID.match(source):
        return None
    raise UserInputError(f"no {what} folder at {source!r}. " + help_text)


def hub_error(repo_id: str, exc: Exception, help_text: str) -> UserInputError:
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return UserInputError(f"could not get {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: {reason}). "
                          + help_text)


def hub_snapshot(repo_id: str, patterns: list[str], help_text: str) -> Path:
    """A local snapshot of a Hub repository's ``patterns``: the local cache first, then the network."""
    from huggingface_hub import snapshot_download

    try:
        try:
            return Path(snapshot_download(repo_id=repo_id, allow_patterns=patterns, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached: fetch it
            return Path(snapshot_download(repo_id=repo_id, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 - offline, no such repository, ...
        raise hub_error(repo_id, e, help_text) from e


class ModelCache:
    """Holds one loaded model: loading another frees the previous one's memory first. Thread-safe."""

    def __init__(self) -> None:
        self._items: dict = {}
        self._lock = threading.Lock()

    def get(self, key, load: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._items:
                self._items.clear()
                self._items[key] = load()
            return self._items[key]

    def load(self, source: str, what: str, help_text: str, device, dtype: str,
             load_folder: Callable[..., T], download: Callable[[str], Path]) -> T:
        """The model ``source`` (a Hub id or a local folder of a ``what``) names, in ``dtype`` on ``device``:
        ``load_folder(folder, device, torch_dtype, name=...)`` on the folder, or on ``download(source)``."""
        import torch

        dev = torch.device(device)
        dt = resolve_dtype(dtype, dev)
        local = local_path(source, what, help_text)
        key = (str(local) if local is not None else source, str(dt), str(dev))
        return self.get(key, lambda: load_folder(local or download(source), dev, dt,
                                                 name=source if local is None else str(local)))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def resolve_dtype(dtype: str, device):
    """'auto' -> float16 on CUDA; float32 on a CPU whatever was asked (half precision there is slow and partly
    unsupported)."""
    import torch

    names = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float32": torch.float32, "fp32": torch.float32}
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in names:
        raise UserInputError(f"unknown prior dtype {dtype!r}; choose auto, float16, bfloat16 or float32")
    return names[dtype] if device.type == "cuda" else torch.float32


COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


class Compilable:
    """``compile(mode)`` for a frozen model: torch.compile of the submodules named by dotted paths in
    ``COMPILE_PATHS`` (CUDA only; a no-op elsewhere). 'reduce-overhead' adds CUDA graphs, which pay where a
    step is many small kernels; 'off' restores the eager modules. The subclass sets ``device``. Returns whether
    the modules changed (a pipeline logs it)."""

    COMPILE_PATHS: tuple[str, ...] = ()
    compiled = "off"

    def compile(self, mode: str = "default") -> bool:
        if mode not in COMPILE_MODES:
            raise UserInputError(f"unknown compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)}")
        if mode == self.compiled or self.device.type != "cuda":
            return False
        import torch

        if "_eager" not in self.__dict__:
            self._eager = {path: _resolve(self, path) for path in self.COMPILE_PATHS}
        for path, module in self._eager.items():
            owner, _, name = path.rpartition(".")
            setattr(_resolve(self, owner) if owner else self, name,
                    module if mode == "off" else torch.compile(module, mode=mode))
        self.compiled = mode
        return True

    def step_begin(self) -> None:
        """Called at the start of each training step's use of the model: with CUDA graphs, it tells torch that the
        previous step's graph outputs are no longer needed (else a second forward before backward fails)."""
        if self.compiled in ("reduce-overhead", "max-autotune"):  # the modes with CUDA graphs
            import torch

            torch.compiler.cudagraph_mark_step_begin()


def _resolve(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
