"""What other pictures vary, drawn per training render (issue 21): lighting, lens, framing, elevation, image
size, JPEG compression and the background, then framed by the project's own object crop as an upload is.

Contract: ``ranges_for(mode)`` (``"augment"``: the training ranges; ``"out-of-range"``: an evaluation split whose
every setting lies outside them; ``"out-of-range:GROUP"``: only ``GROUPS[GROUP]`` outside) -> ``RenderRanges``; ``draw_settings(ranges, rng) -> ViewSettings`` (one view,
uniform in each range, reproducible from a NumPy ``Generator``); ``camera_and_light(settings, azimuth, radius)``
-> (c2w, fov, light direction, light colour); ``photograph(rgba, settings, ranges, rng)`` -> (H, W, 4) uint8: the
render over its background, JPEG-compressed and decoded, with alpha from ``single_view_net.object_mask``
(what an upload without transparency gets), so ``shape_packs.crop_to_object`` frames it as it frames uploads.

The ranges (uniform; degrees, pixels, RGB in [0, 1]):

| setting | training (``augment``) | out of range (evaluation only) | default (the shipped pack) |
|---|---|---|---|
| camera elevation | 0-50 deg | 55-75 deg | 5-40 deg |
| horizontal field of view | 25-55 deg | 60-80 deg | 40 deg |
| fill: sin(object's bounding-sphere angular radius) / sin(half the field of view) | 0.35-0.85 | 0.88-0.95 | - |
| camera distance = r / (fill sin(fov / 2)), r the bounding-sphere radius | 2.55 r - 13.2 r | 1.64 r - 2.27 r | 2.2 (2.5 r - 4.4 r) |
| key light: azimuth from the camera's direction (left or right at random) | 0-75 deg | 90-120 deg (side / rim light) | 32-39 deg |
| key light: elevation above the horizon | 15-70 deg | 75-85 deg (overhead) | about 45-60 deg |
| key light colour: saturation of a random hue (HSV, value 1) | 0-0.25 | 0.30-0.45 | white |
| ambient share of the light | 0.25-0.60 | 0.10-0.20 (hard light) | 0.4 |
| image side (square) | 96-256 px | 64-88 px | 128 px |
| JPEG quality (PIL) | 40-95 | 10-30 | none |
| background | plain (p 0.5) or lightly textured | textured | transparent (alpha) |
| background colour (HSV) | saturation 0-0.5, value 0.35-1 | the same | - |
| texture amplitude (largest colour distance from the mean) | 0.01-0.05 | 0.055-0.07 | - |
| texture frequency (cycles across the image) | 1-6 | 8-24 | - |

Texture amplitudes stay below ``object_mask``'s tolerance (0.12: alpha is 0 below a distance of 0.06 from the
border's median colour and 0.5 at 0.09): training textures are removed entirely, out-of-range ones leak faintly
into the crop. A background is redrawn (up to ``ATTEMPTS`` times, seeded) when the object crop would not find the
object: ``object_mask`` refuses the image, the box of its mask's pixels above 0.5 overlaps the box of the
render's own alpha by less than ``MIN_BOX_IOU`` (an object coloured like its background), or more than
``MAX_STRAY`` of the object's area in background pixels is taken for the object (texture and JPEG blocks).
"""
from __future__ import annotations

import colorsys
import io
import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

ATTEMPTS = 8
MIN_BOX_IOU = 0.8
MAX_STRAY = 0.1


@dataclass(frozen=True)
class RenderRanges:
    """(low, high) of each per-view draw (uniform); integers for image size and JPEG quality (inclusive)."""
    elevation_deg: tuple[float, float]
    fov_deg: tuple[float, float]
    fill: tuple[float, float]
    light_azimuth_deg: tuple[float, float]
    light_elevation_deg: tuple[float, float]
    light_saturation: tuple[float, float]
    ambient: tuple[float, float]
    image_size: tuple[int, int]
    jpeg_quality: tuple[int, int]
    plain_background: float  # probability of a plain background (else textured)
    background_saturation: tuple[float, float]
    background_value: tuple[float, float]
    texture_amplitude: tuple[float, float]
    texture_cycles: tuple[float, float]


RANGES = {
    "augment": RenderRanges(
        elevation_deg=(0.0, 50.0), fov_deg=(25.0, 55.0), fill=(0.35, 0.85), light_azimuth_deg=(0.0, 75.0),
        light_elevation_deg=(15.0, 70.0), light_saturation=(0.0, 0.25), ambient=(0.25, 0.6), image_size=(96, 256),
        jpeg_quality=(40, 95), plain_background=0.5, background_saturation=(0.0, 0.5), background_value=(0.35, 1.0),
        texture_amplitude=(0.01, 0.05), texture_cycles=(1.0, 6.0)),
    "out-of-range": RenderRanges(
        elevation_deg=(55.0, 75.0), fov_deg=(60.0, 80.0), fill=(0.88, 0.95), light_azimuth_deg=(90.0, 120.0),
        light_elevation_deg=(75.0, 85.0), light_saturation=(0.30, 0.45), ambient=(0.10, 0.20), image_size=(64, 88),
        jpeg_quality=(10, 30), plain_background=0.0, background_saturation=(0.0, 0.5), background_value=(0.35, 1.0),
        texture_amplitude=(0.055, 0.07), texture_cycles=(8.0, 24.0)),
}
OUTSIDE = ("elevation_deg", "fov_deg", "fill", "light_azimuth_deg", "light_elevation_deg", "light_saturation",
           "ambient", "image_size", "jpeg_quality", "texture_amplitude", "texture_cycles")
"""The settings whose out-of-range draws lie outside the training ranges (the background colour is shared)."""
MODE_SALT = {"augment": 1, "out-of-range": 2}
GROUPS = {"camera": ("elevation_deg", "fov_deg", "fill"),
          "light": ("light_azimuth_deg", "light_elevation_deg", "light_saturation", "ambient"),
          "image": ("image_size", "jpeg_quality"),
          "background": ("plain_background", "texture_amplitude", "texture_cycles")}
"""Settings that go out of range together in the ``out-of-range:GROUP`` splits (which one hurts)."""
MODES = ("default", "augment", "out-of-range") + tuple(f"out-of-range:{g}" for g in GROUPS)


def ranges_for(mode: str) -> RenderRanges:
    """``RANGES[mode]``; for ``out-of-range:GROUP`` the training ranges with that group's settings out of range
    (drawn from the out-of-range split's seed stream)."""
    if mode in RANGES:
        return RANGES[mode]
    base, _, group = mode.partition(":")
    if base != "out-of-range" or group not in GROUPS:
        raise ValueError(f"unknown render mode {mode!r}: one of {', '.join(MODES[1:])}")
    return replace(RANGES["augment"], **{f: getattr(RANGES["out-of-range"], f) for f in GROUPS[group]})


@dataclass(frozen=True)
class ViewSettings:
    elevation_deg: float
    fov_deg: float
    fill: float
    light_azimuth_deg: float
    light_side: int  # +1: the light is to the camera's right, -1: left
    light_elevation_deg: float
    light_hue: float
    light_saturation: float
    ambient: float
    image_size: int
    jpeg_quality: int
    background: str  # "plain" | "textured"
    background_hue: float
    background_saturation: float
    background_value: float
    texture_amplitude: float  # 0 for plain backgrounds
    texture_cycles: float  # 0 for plain backgrounds

    def as_dict(self) -> dict:
        return asdict(self)


def view_rng(seed: int, shape_id: str, mode: str) -> np.random.Generator:
    """The per-shape generator of the draws: reproducible from (seed, shape id, mode)."""
    import hashlib

    return np.random.default_rng([int(seed), int(hashlib.sha1(shape_id.encode()).hexdigest()[:8], 16),
                                  MODE_SALT[mode.partition(":")[0]]])


def _u(rng, lo_hi) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def draw_background(ranges: RenderRanges, rng: np.random.Generator) -> dict:
    """The background fields of ``ViewSettings``: kind, colour and texture."""
    textured = bool(rng.random() >= ranges.plain_background)
    return dict(background="textured" if textured else "plain", background_hue=float(rng.random()),
                background_saturation=_u(rng, ranges.background_saturation),
                background_value=_u(rng, ranges.background_value),
                texture_amplitude=_u(rng, ranges.texture_amplitude) if textured else 0.0,
                texture_cycles=_u(rng, ranges.texture_cycles) if textured else 0.0)


def draw_settings(ranges: RenderRanges, rng: np.random.Generator) -> ViewSettings:
    """One view's settings, each uniform in its range."""
    return ViewSettings(
        elevation_deg=_u(rng, ranges.elevation_deg), fov_deg=_u(rng, ranges.fov_deg), fill=_u(rng, ranges.fill),
        light_azimuth_deg=_u(rng, ranges.light_azimuth_deg), light_side=1 if rng.random() < 0.5 else -1,
        light_elevation_deg=_u(rng, ranges.light_elevation_deg), light_hue=float(rng.random()),
        light_saturation=_u(rng, ranges.light_saturation), ambient=_u(rng, ranges.ambient),
        image_size=int(rng.integers(ranges.image_size[0], ranges.image_size[1] + 1)),
        jpeg_quality=int(rng.integers(ranges.jpeg_quality[0], ranges.jpeg_quality[1] + 1)),
        **draw_background(ranges, rng))


def within(settings: ViewSettings, ranges: RenderRanges) -> dict[str, bool]:
    """For each ranged setting: whether ``settings`` lies in ``ranges`` (texture fields: textured views only)."""
    out = {}
    for f in fields(RenderRanges):
        if f.name == "plain_background" or (f.name.startswith("texture") and settings.background == "plain"):
            continue
        lo, hi = getattr(ranges, f.name)
        out[f.name] = lo <= getattr(settings, f.name) <= hi
    return out


def camera_distance(settings: ViewSettings, radius: float) -> float:
    """The distance at which a sphere of ``radius`` spans ``fill`` of the view (in the sine of the angles)."""
    return radius / (settings.fill * math.sin(math.radians(settings.fov_deg) / 2))


def camera_and_light(settings: ViewSettings, azimuth_deg: float, radius: float):
    """(c2w (4, 4), horizontal field of view in radians, light direction (3,), light colour (3,)) of one view."""
    import torch

    from ..core.cameras import look_at, spherical_to_cartesian

    dist = camera_distance(settings, radius)
    eye = spherical_to_cartesian(dist, torch.tensor(math.radians(settings.elevation_deg)),
                                 torch.tensor(math.radians(azimuth_deg)))
    c2w = look_at(eye)
    back = c2w[:3, 2].clone()  # towards the camera
    back[2] = 0.0
    back = back / back.norm().clamp_min(1e-9)
    right = c2w[:3, 0]
    phi, psi = math.radians(settings.light_azimuth_deg), math.radians(settings.light_elevation_deg)
    horizontal = math.cos(phi) * back + math.sin(phi) * settings.light_side * right
    light = math.cos(psi) * horizontal + math.sin(psi) * torch.tensor([0.0, 0.0, 1.0])
    color = torch.tensor(colorsys.hsv_to_rgb(settings.light_hue, settings.light_saturation, 1.0))
    return c2w, math.radians(settings.fov_deg), light, color


def background_image(settings: ViewSettings, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) float: a plain colour, or that colour plus a texture (a few random plane waves and a
    fine grain along one random colour direction) whose largest distance from the colour is the amplitude."""
    base = np.array(colorsys.hsv_to_rgb(settings.background_hue, settings.background_saturation,
                                        settings.background_value), np.float32)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    if settings.background != "textured" or settings.texture_amplitude <= 0:
        return img
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    pattern = np.zeros((size, size), np.float32)
    for _ in range(3):
        a = rng.uniform(0, 2 * math.pi)
        cycles = settings.texture_cycles * rng.uniform(0.7, 1.0)
        pattern += np.sin(2 * math.pi * cycles * (x * math.cos(a) + y * math.sin(a)) + rng.uniform(0, 2 * math.pi))
    pattern += 0.5 * rng.standard_normal((size, size)).astype(np.float32)  # grain
    pattern /= np.abs(pattern).max() + 1e-9
    direction = np.abs(rng.standard_normal(3)).astype(np.float32) * 0.5 + 1.0  # mostly brightness, a little hue
    direction /= np.linalg.norm(direction)
    # Keep the texture inside [0, 1] around the base colour, so clipping does not shift its median.
    room = float(np.min(np.minimum(base, 1 - base) / np.maximum(direction, 1e-6)))
    amp = min(settings.texture_amplitude, max(room, 0.0))
    if amp < settings.texture_amplitude:  # too close to black or white for the texture: move the colour inwards
        base = np.clip(base, settings.texture_amplitude * direction, 1 - settings.texture_amplitude * direction)
        amp = settings.texture_amplitude
    return (base + amp * pattern[..., None] * direction).astype(np.float32)


def _box(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    return None if len(ys) == 0 else (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)


def box_iou(a, b) -> float:
    if a is None or b is None:
        return 0.0
    h = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    w = max(0, min(a[3], b[3]) - max(a[2], b[2]))
    inter = h * w
    area = lambda r: (r[1] - r[0]) * (r[3] - r[2])  # noqa: E731
    return inter / float(area(a) + area(b) - inter)


def jpeg_roundtrip(rgb_uint8: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb_uint8).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def photograph(rgba, settings: ViewSettings, ranges: RenderRanges,
               rng: np.random.Generator) -> tuple[np.ndarray, ViewSettings, float]:
    """A render (H, W, 4) float straight alpha -> (the "photo" as (H, W, 4) uint8 with alpha from ``object_mask``,
    the settings with the background actually used, the box IoU of the mask against the render's alpha).

    Composites over the drawn background, JPEG-compresses; redraws the background (seeded, up to ``ATTEMPTS``)
    while the object crop would miss the object; the best attempt is kept when none succeeds."""
    from ..config import UserInputError
    from ..core.single_view_net import object_mask

    rgba = np.asarray(rgba, np.float32)
    alpha = rgba[..., 3:]
    truth = _box(alpha[..., 0] > 0.5)
    size = rgba.shape[0]
    best = None
    for attempt in range(ATTEMPTS):
        if attempt:  # another background from the same ranges
            settings = replace(settings, **draw_background(ranges, rng))
        bg = background_image(settings, size, rng)
        rgb = rgba[..., :3] * alpha + bg * (1 - alpha)
        photo = jpeg_roundtrip((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), settings.jpeg_quality)
        try:
            mask = object_mask(photo.astype(np.float32) / 255.0)
            iou = box_iou(_box(mask > 0.5), truth)
            stray = float(((mask > 0.5) & ~(alpha[..., 0] > 0.01)).sum()) / max(1.0, float((alpha > 0.5).sum()))
        except UserInputError:
            mask, iou, stray = np.zeros(photo.shape[:2], np.float32), 0.0, 1.0
        out = np.concatenate([photo, (mask * 255 + 0.5).astype(np.uint8)[..., None]], -1)
        if best is None or iou - stray > best[2] - best[3]:
            best = (out, settings, iou, stray)
        if iou >= MIN_BOX_IOU and stray <= MAX_STRAY:
            break
    return best[:3]
