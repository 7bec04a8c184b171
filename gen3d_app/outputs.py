"""Per-session output folders and their cleanup.

Contract: every UI run writes under ``<root>/<session>/<pipeline>-<stamp>-xxxx/``; ``sweep()`` deletes run
folders older than the TTL (and session folders left empty). It runs at startup and before each run. The
root is ``$GEN3D_OUTPUTS`` (default ``outputs/sessions``), the TTL ``$GEN3D_OUTPUT_TTL_HOURS`` (default 24).

Each session is served only its own files. Gradio copies every file a handler returns into its cache
(``<GRADIO_TEMP_DIR>/<sha256 of the content>/<name>``) and serves that cache, and anything under
``allowed_paths``, to whoever asks. ``SessionFiles``, an ASGI middleware, gives each browser a random
``gen3d_session`` cookie (HttpOnly); the run folder of a session is named by a hash of it (``session_key``), the
handler records which cache folders its files land in (``own``), and a file request for a cache folder some
session owns is answered 404 unless the cookie is that session's; requests for paths under the outputs root
itself (never needed: pages get the cached copies) are always 404.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote

SESSION_COOKIE = "gen3d_session"


def root() -> Path:
    return Path(os.environ.get("GEN3D_OUTPUTS", "outputs/sessions")).resolve()


def ttl_seconds() -> float:
    return float(os.environ.get("GEN3D_OUTPUT_TTL_HOURS", "24")) * 3600.0


def run_dir(session_hash: str | None, pipeline: str, base: Path | None = None) -> Path:
    """A fresh folder for one run of ``pipeline`` in this browser session."""
    session = re.sub(r"[^\w\-]", "", session_hash or "")[:40] or "anonymous"
    folder = (base or root()) / session
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(3):  # another run's sweep() may remove the session folder between the two calls
        folder.mkdir(parents=True, exist_ok=True)
        try:
            return Path(tempfile.mkdtemp(prefix=f"{pipeline}-{stamp}-", dir=folder))
        except FileNotFoundError:
            if attempt == 2:
                raise


def sweep(base: Path | None = None, max_age_s: float | None = None, now: float | None = None) -> int:
    """Delete run folders older than ``max_age_s`` under ``base``; returns how many were removed."""
    base = base or root()
    max_age_s = ttl_seconds() if max_age_s is None else max_age_s
    now = time.time() if now is None else now
    removed = 0
    if not base.is_dir():
        return 0
    for session in base.iterdir():
        if not session.is_dir() or session.is_symlink():
            continue
        for run in session.iterdir():
            try:
                if now - run.stat().st_mtime > max_age_s:
                    if run.is_dir() and not run.is_symlink():
                        shutil.rmtree(run, ignore_errors=True)
                    else:
                        run.unlink(missing_ok=True)
                    removed += 1
            except OSError:
                continue
        try:
            session.rmdir()  # only succeeds when empty
        except OSError:
            pass
    return removed


# ------------------------------------------------------------------------------------ per-session serving
def session_key(request: Any) -> str:
    """The folder name of a request's session: a hash of its ``gen3d_session`` cookie (knowing a folder name
    gives nobody the cookie), else Gradio's session hash (clients that keep no cookies)."""
    cookies = getattr(request, "cookies", None) or {}
    token = cookies.get(SESSION_COOKIE) if hasattr(cookies, "get") else None
    if token:
        return "s" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return re.sub(r"[^\w\-]", "", getattr(request, "session_hash", None) or "")[:40] or "anonymous"


_OWNERS: dict[str, set[str]] = {}
"""Gradio cache folder name (the content hash) -> session keys whose runs returned that content."""
_OWNERS_LOCK = threading.Lock()


def cache_folder_name(path: str | Path) -> str:
    """The cache folder Gradio copies ``path`` into (its ``hash_file``: sha256 of a per-install seed + content)."""
    from gradio.processing_utils import hash_file

    return hash_file(path)


def own(paths: Iterable[str], key: str, base: Path | None = None) -> None:
    """Record that the session ``key`` may fetch the cached copies of ``paths`` (files under the outputs root)."""
    base = (base or root()).resolve()
    for p in paths:
        try:
            path = Path(p).resolve()
            if path.is_file() and path.is_relative_to(base):
                with _OWNERS_LOCK:
                    _OWNERS.setdefault(cache_folder_name(path), set()).add(key)
        except OSError:
            continue


def may_fetch(file_path: str, key: str | None) -> bool:
    """Whether a request with session ``key`` may fetch ``/file=<file_path>``."""
    from gradio.utils import get_upload_folder

    try:
        path = Path(unquote(file_path)).resolve()
    except (OSError, ValueError):
        return True  # Gradio's own route refuses it
    if path.is_relative_to(root()):
        return False
    cache = Path(get_upload_folder()).resolve()
    if not path.is_relative_to(cache) or path == cache:
        return True
    folder = path.relative_to(cache).parts[0]
    with _OWNERS_LOCK:
        owners = _OWNERS.get(folder)
    return owners is None or key in owners


class SessionFiles:
    """ASGI middleware: the session cookie, and the per-session rule for ``/file=`` requests (module docstring)."""

    FILE_ROUTE = re.compile(r"/file=(.+)$")

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        cookie = SimpleCookie()
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                try:
                    cookie.load(value.decode("latin-1"))
                except Exception:  # noqa: BLE001 - a malformed cookie header: treat as none
                    pass
        token = cookie[SESSION_COOKIE].value if SESSION_COOKIE in cookie else None
        m = self.FILE_ROUTE.search(scope.get("path", ""))
        if m:
            key = session_key(type("R", (), {"cookies": {SESSION_COOKIE: token}})()) if token else None
            if not may_fetch(m.group(1), key):
                await send({"type": "http.response.start", "status": 404,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"Not found"})
                return
        if token:
            return await self.app(scope, receive, send)
        new = secrets.token_urlsafe(24)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"set-cookie", f"{SESSION_COOKIE}={new}; Path=/; HttpOnly; SameSite=Lax".encode()))
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)
