"""View-dependent prompts against the Janus problem (DreamFusion Sec. 3.2): the text names the side a camera
sees, "front view / side view / back view / overhead view", chosen from its azimuth and elevation.

Contract: angles in degrees in the convention of ``core.cameras`` (azimuth from +x towards +y, elevation
above the xy-plane); the object's front faces the camera at azimuth ``front_azimuth_deg``. Pure Python.
"""
from __future__ import annotations

VIEWS = ("front", "side", "back", "overhead")
DEFAULT_TEMPLATE = "{prompt}, {view} view"


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
