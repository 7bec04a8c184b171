"""Where a pretrained model comes from, and the one-model-per-kind cache: shared by every real-tier loader.

Contract: ``local_path(source, what, help)`` returns the folder a source names, None for a Hub id (owner/name),
and raises UserInputError otherwise; ``hub_error(repo_id, exc, help)`` words a failed download;
``ModelCache.get(key, load)`` returns the cached model for ``key`` or drops the previous one and loads anew.
No torch or Hugging Face import happens here.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Callable, TypeVar

from ...config import UserInputError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")  # owner/name: never starts with '/', '.' or '~'
T = TypeVar("T")


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

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
