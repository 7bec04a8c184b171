"""Test-time jitters for the point head (``point_jitters``, issue 21): the input zoomed and shifted on white, the
clouds of the jittered copies added after the image's own; voxels and mesh untouched; bad counts refused."""
import pytest
import torch

from pipelines import UserInputError
from pipelines.events import run_to_completion
from pipelines.core.single_view_net import SingleViewModel
from pipelines.core.single_view_outputs import JITTERS, jitter_images, predict
from pipelines.single_view import SingleViewConfig, run


def _square(size: int = 16, lo: int = 6, hi: int = 10) -> torch.Tensor:
    """(1, 3, size, size): a black square on white."""
    img = torch.ones(1, 3, size, size)
    img[..., lo:hi, lo:hi] = 0
    return img


def test_no_jitter_is_the_image_and_white_stays_white():
    img = _square()
    assert torch.allclose(jitter_images(img, 1, 0, 0), img, atol=1e-5)
    for zoom, dx, dy in JITTERS:
        assert torch.allclose(jitter_images(torch.ones(2, 3, 8, 8), zoom, dx, dy), torch.ones(2, 3, 8, 8), atol=1e-5)


def test_a_shift_moves_the_object_right_or_down_and_a_zoom_grows_it():
    img = _square()
    right = jitter_images(img, 1, 0.25, 0)  # a quarter of 16 px: 4 px to the right
    assert torch.allclose(right[..., 6:10, 10:14], torch.zeros(1, 3, 4, 4), atol=1e-5)
    assert torch.allclose(right[..., 6:10, 6:10], torch.ones(1, 3, 4, 4), atol=1e-5)
    down = jitter_images(img, 1, 0, -0.25)  # up by 4 px
    assert torch.allclose(down[..., 2:6, 6:10], torch.zeros(1, 3, 4, 4), atol=1e-5)
    dark = lambda x: float((x < 0.5).float().sum())  # noqa: E731
    assert dark(jitter_images(img, 2, 0, 0)) == 4 * dark(img)  # twice the side about the centre: 8 x 8 px
    assert dark(jitter_images(img, 0.5, 0, 0)) < dark(img)


@pytest.mark.parametrize("mirror", ["points", ""])
def test_predict_adds_the_jittered_clouds_after_the_images_own(mirror):
    torch.manual_seed(0)
    model = SingleViewModel(image_size=32, width=8, hidden=32, n_points=64, ico_level=2, resolution=8).eval()
    x, heads = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), ("voxels", "points", "mesh")
    off = predict(model, x, heads, SingleViewConfig(mirror_heads=mirror))
    on = predict(model, x, heads, SingleViewConfig(mirror_heads=mirror, point_jitters=3))
    per_pass = 64 * (2 if mirror else 1)
    assert off["points"].shape == (2, per_pass, 3) and on["points"].shape == (2, 4 * per_pass, 3)
    assert torch.equal(on["points"][:, :per_pass], off["points"])  # the image's own cloud first, as before
    with torch.no_grad():  # the first jitter's cloud is the network's for the first jittered copy
        first = model(jitter_images(x, *JITTERS[0]), ("points",))["points"].float()
    assert torch.allclose(on["points"][:, per_pass:per_pass + 64], first, atol=1e-6)
    assert torch.equal(on["voxels"], off["voxels"]) and torch.equal(on["mesh"], off["mesh"])


@pytest.mark.parametrize("count", [-1, len(JITTERS) + 1])
def test_bad_counts_are_refused(count):
    with pytest.raises(UserInputError, match="point_jitters"):
        run_to_completion(run(SingleViewConfig(mode="train", steps=1, point_jitters=count)))
    with pytest.raises(UserInputError, match="point_jitters"):
        predict(SingleViewModel(image_size=32, width=8, hidden=32, n_points=16, ico_level=2, resolution=8),
                torch.rand(1, 3, 32, 32), ("points",), SingleViewConfig(point_jitters=count))
