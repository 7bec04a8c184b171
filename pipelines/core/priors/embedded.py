"""Embedded tier of the diffusion guidance: the project's own offline prior, shipped in assets/priors/.

Contract: ``available()`` says, without importing torch, whether the prior's files are there;
``load_embedded_guidance(device, dtype)`` returns a ``DiffusionGuidance``. No such prior exists yet (a
separate issue trains one): until then ``available()`` is False and loading raises a ``UserInputError``
that says so and names the real tier's models.
"""
from __future__ import annotations

from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parents[3] / "assets" / "priors" / "diffusion"
"""Where the embedded diffusion prior will live, with its manifest (training command, data, license, sha256)."""


def available() -> bool:
    return (ASSET_DIR / "manifest.json").is_file()


def load_embedded_guidance(device, dtype: str = "auto"):
    from ...config import UserInputError
    from . import DEFAULT_DIFFUSION, where_to_get_models

    if not available():
        raise UserInputError(f"prior 'embedded' is not available. Use Stable Diffusion instead (the default, "
                             f"{DEFAULT_DIFFUSION!r}, is downloaded once). " + where_to_get_models())
    raise UserInputError(f"{ASSET_DIR} has a manifest, but this version of gen3d cannot load an embedded "
                         "diffusion prior yet")
