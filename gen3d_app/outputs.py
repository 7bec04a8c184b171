"""Per-session output folders and their cleanup.

Contract: every UI run writes under ``<root>/<session>/<pipeline>-<stamp>-xxxx/``; ``sweep()`` deletes run
folders older than the TTL (and session folders left empty). It runs at startup and before each run. The
root is ``$GEN3D_OUTPUTS`` (default ``outputs/sessions``), the TTL ``$GEN3D_OUTPUT_TTL_HOURS`` (default 24).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path


def root() -> Path:
    return Path(os.environ.get("GEN3D_OUTPUTS", "outputs/sessions")).resolve()


def ttl_seconds() -> float:
    return float(os.environ.get("GEN3D_OUTPUT_TTL_HOURS", "24")) * 3600.0


def run_dir(session_hash: str | None, pipeline: str, base: Path | None = None) -> Path:
    """A fresh folder for one run of ``pipeline`` in this browser session."""
    session = re.sub(r"[^\w\-]", "", session_hash or "")[:40] or "anonymous"
    folder = (base or root()) / session
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.mkdtemp(prefix=f"{pipeline}-{stamp}-", dir=folder))


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
