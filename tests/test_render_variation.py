"""Issue 21, robustness: the single-view builder's varied renders (``train/render_variation.py``): the draws stay
in their stated ranges and repeat by seed, the out-of-range split lies outside every training range, and a
JPEG-compressed render on a textured background still crops to the object."""
from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from pipelines.core.shape_packs import crop_to_object
from pipelines.train.mesh_library import Parts
from pipelines.train.render_variation import (GROUPS, MIN_BOX_IOU, OUTSIDE, RANGES, RenderRanges, box_iou,
                                              camera_and_light, camera_distance, draw_settings, photograph, ranges_for,
                                              view_rng, within)


def _draws(mode, seed=0, n=300, shape="sh3d-test-chair"):
    rng = view_rng(seed, shape, mode)
    return [draw_settings(RANGES[mode], rng) for _ in range(n)]


def _box_parts(size=(0.6, 1.0, 0.45), color=(0.75, 0.3, 0.2)) -> Parts:
    """A coloured box, centred, longest side 1 (a shape in the canonical frame)."""
    h = np.asarray(size, np.float64) / 2
    verts = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64) * h
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))], np.int64)
    return Parts(verts, faces, np.zeros((8, 2)), np.zeros(len(faces), np.int64), np.array([color], np.float32), [None])


def test_draws_stay_in_the_stated_ranges_and_repeat_by_seed():
    for mode in RANGES:
        draws = _draws(mode)
        bad = [(k, s) for s in draws for k, ok in within(s, RANGES[mode]).items() if not ok]
        assert not bad, bad[:3]
        assert draws == _draws(mode), "the same seed and shape must give the same settings"
        assert draws != _draws(mode, seed=1) and draws != _draws(mode, shape="another"), "seed and shape must matter"
    aug = _draws("augment")
    plain = np.mean([s.background == "plain" for s in aug])
    assert 0.4 < plain < 0.6  # half plain, half lightly textured
    # the draws cover their ranges (not a constant): both ends of the elevation range are reached
    elev = [s.elevation_deg for s in aug]
    assert min(elev) < 5 and max(elev) > 45


def test_out_of_range_split_lies_outside_every_training_range():
    train, out = RANGES["augment"], RANGES["out-of-range"]
    for name in OUTSIDE:  # the ranges themselves are disjoint
        (a0, a1), (b0, b1) = getattr(train, name), getattr(out, name)
        assert b1 < a0 or b0 > a1, name
    assert {f.name for f in fields(RenderRanges)} - set(OUTSIDE) == {
        "plain_background", "background_saturation", "background_value"}
    for s in _draws("out-of-range"):
        assert s.background == "textured"
        inside = [k for k, ok in within(s, train).items() if ok and k in OUTSIDE]
        assert not inside, inside
    # and so does the camera distance, in units of the object's bounding-sphere radius
    d_train = [camera_distance(s, 1.0) for s in _draws("augment")]
    d_out = [camera_distance(s, 1.0) for s in _draws("out-of-range")]
    assert max(d_out) < min(d_train)


def _photo(settings, mode, seed=0):
    parts = _box_parts()
    radius = float(np.linalg.norm(parts.verts, axis=1).max())
    c2w, fov, light, color = camera_and_light(settings, 30.0, radius)
    from pipelines.core.cameras import Camera
    from pipelines.train.mesh_library import render_parts

    cam = Camera.from_fov(c2w, fov, settings.image_size, settings.image_size)
    with torch.no_grad():
        rgba = render_parts(parts, cam, light, 1, ambient=settings.ambient, light_color=color).numpy()
    return rgba, photograph(rgba, settings, RANGES[mode], np.random.default_rng(seed))


@pytest.mark.parametrize("mode, quality, amplitude", [("augment", 40, 0.05), ("out-of-range", 10, 0.07)])
def test_jpeg_textured_render_still_crops_to_the_object(mode, quality, amplitude):
    s = replace(_draws(mode, n=1)[0], background="textured", texture_amplitude=amplitude, jpeg_quality=quality,
                background_value=0.9, background_saturation=0.1)
    rgba, (photo, used, iou) = _photo(s, mode)
    assert used.background == "textured" and used.jpeg_quality == quality
    assert iou >= MIN_BOX_IOU
    # the photo really is textured and compressed: its background is not the render's (transparent) one
    bg = photo[..., :3][rgba[..., 3] < 0.01].astype(np.float32) / 255
    assert bg.std(0).max() > 0.005
    # the crop the pack makes from the photo's mask frames the object as the crop of the render's own alpha does
    size = 64
    want, got = crop_to_object(rgba, size), crop_to_object(photo, size)
    assert got is not None
    want, got = want.numpy(), got.numpy()
    box = lambda img: tuple(np.argwhere((img < 0.8).any(-1)).min(0)) + tuple(np.argwhere((img < 0.8).any(-1)).max(0))  # noqa: E731
    (y0, x0, y1, x1), (v0, u0, v1, u1) = box(want), box(got)
    assert box_iou((y0, y1 + 1, x0, x1 + 1), (v0, v1 + 1, u0, u1 + 1)) > 0.8
    assert np.abs(got - want).mean() < 0.12  # same object, same place (JPEG and light halos aside)


def test_varied_views_repeat_by_seed_and_keep_the_azimuths():
    from pipelines.train.single_view_data import varied_views

    parts = _box_parts()
    azim = np.array([10.0, 200.0])
    a = varied_views(parts, "sh3d-test-box", azim, "out-of-range", 3, ssaa=1)
    b = varied_views(parts, "sh3d-test-box", azim, "out-of-range", 3, ssaa=1)
    assert np.array_equal(a["images"], b["images"]) and a["render_settings"] == b["render_settings"]
    for k in range(2):  # each view sits in its top-left image_sizes[k] square; the rest is transparent padding
        n = int(a["image_sizes"][k])
        assert 64 <= n <= 88 and a["images"][k, n:, :, 3].max() == 0 and a["images"][k, :n, :n, 3].max() == 255
        assert a["render_alpha"][k, n:].max() == 0 and a["render_alpha"][k, :n, :n].max() == 255
        eye = a["c2w"][k, :3, 3].numpy()
        assert abs(np.degrees(np.arctan2(eye[1], eye[0])) % 360 - azim[k]) < 1e-3
        assert np.isclose(np.linalg.norm(eye), a["distance"][k], rtol=1e-4)


def test_one_group_out_of_range_splits():
    assert sorted(f for g in GROUPS.values() for f in g) == sorted(OUTSIDE + ("plain_background",))
    for group, names in GROUPS.items():
        r = ranges_for(f"out-of-range:{group}")
        for f in fields(RenderRanges):
            src = RANGES["out-of-range"] if f.name in names else RANGES["augment"]
            assert getattr(r, f.name) == getattr(src, f.name), (group, f.name)
    with pytest.raises(ValueError):
        ranges_for("out-of-range:weather")
