"""View-dependent prompts against the Janus problem (DreamFusion Sec. 3.2): the text names the side a camera
sees, "front view / side view / back view / overhead view", chosen from its azimuth and elevation.

Contract: angles in degrees in the convention of ``core.cameras`` (azimuth from +x towards +y, elevation
above the xy-plane); the object's front faces the camera at azimuth ``front_azimuth_deg``. Pure Python.

Also the one rule for text a person types (a prompt, a negative prompt, a caption), in the app and the CLI:
``check_prompt`` refuses text longer than ``MAX_PROMPT_CHARS``, and ``fit_view_prompt`` shortens a prompt whose
view-dependent version is longer than the text encoder reads, so that the view suffix is what survives.
"""
from __future__ import annotations

from typing import Callable

from ...config import UserInputError

VIEWS = ("front", "side", "back", "overhead")
DEFAULT_TEMPLATE = "{prompt}, {view} view"
MAX_PROMPT_CHARS = 400
"""Longest prompt, negative prompt or caption accepted: the text encoders read 77 tokens (CLIP, Stable
Diffusion) or 32 (the embedded priors), about 300 and 130 characters of English."""


def check_prompt(text: object, what: str = "prompt", required: bool = True) -> str:
    """``text`` stripped, or a UserInputError a person can act on (empty when required, or too long)."""
    text = " ".join(str(text or "").split())
    if required and not text:
        raise UserInputError(f"write a {what}: a short description of one object, e.g. 'a wooden chair'")
    if len(text) > MAX_PROMPT_CHARS:
        raise UserInputError(f"the {what} is {len(text)} characters long; keep it under {MAX_PROMPT_CHARS} (the "
                             "text encoders read about 77 tokens: a sentence or two)")
    return text


def fit_view_prompt(prompt: str, view: str, template: str, n_tokens: Callable[[str], int],
                    max_tokens: int) -> tuple[str, bool]:
    """(the view prompt, whether the prompt was shortened): words are dropped from the end of ``prompt``, never
    from the view suffix, until ``n_tokens(view prompt) <= max_tokens`` (a text encoder cuts from the end)."""
    full = view_prompt(prompt, view, template)
    if n_tokens(full) <= max_tokens:
        return full, False
    words = prompt.split()
    lo, hi = 1, len(words) - 1  # the longest prefix that fits, by bisection (n_tokens grows with the prefix)
    best = words[:1]
    while lo <= hi:
        mid = (lo + hi) // 2
        if n_tokens(view_prompt(" ".join(words[:mid]), view, template)) <= max_tokens:
            best, lo = words[:mid], mid + 1
        else:
            hi = mid - 1
    return view_prompt(" ".join(best).rstrip(",;:"), view, template), True


def view_direction(elevation_deg: float, azimuth_deg: float, front_width_deg: float = 90.0,
                   overhead_elevation_deg: float = 60.0, front_azimuth_deg: float = 0.0) -> str:
    """One of ``VIEWS`` for a camera.

    Args:
        elevation_deg, azimuth_deg: the camera's position seen from the origin.
        front_width_deg: width of the azimuth sector centred on the front that counts as "front"; the
            sector of the same width opposite it is "back", the rest "side".
        overhead_elevation_deg: cameras at or above this elevation see the "overhead" view.
        front_azimuth_deg: azimuth of the camera that sees the object's front.
    """
    if elevation_deg >= overhead_elevation_deg:
        return "overhead"
    off = abs((azimuth_deg - front_azimuth_deg + 180.0) % 360.0 - 180.0)  # angle to the front, in [0, 180]
    if off <= front_width_deg / 2:
        return "front"
    if off >= 180.0 - front_width_deg / 2:
        return "back"
    return "side"


def view_prompt(prompt: str, view: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The prompt for a view: ``template`` with {prompt} and {view} filled in ('' or no {view}: unchanged)."""
    if not template or "{view}" not in template:
        return prompt
    return template.replace("{prompt}", prompt).replace("{view}", view)
