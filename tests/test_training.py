"""The training clock that NeRF and VolSDF share (core/training.py): paused time, schedule progress, benchmark
checkpoints, the time budget, held-out scores; and both methods' runs through it."""
import pytest
import torch

from pipelines.core import training
from pipelines.core.datasets import PosedImages
from pipelines.core.training import RayBatches, TrainClock, at_seconds, heldout_scores, preview_target
from pipelines.events import Done, Log, run_to_completion


class FakeTime:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def fake_time(monkeypatch):
    t = FakeTime()
    monkeypatch.setattr(training.time, "perf_counter", t)
    return t


def test_clock_pauses_counts_progress_and_checkpoints(fake_time):
    clock = TrainClock(steps=10, eval_at_seconds="5, 2,")
    assert clock.checkpoints == [2.0, 5.0] and clock.progress(1) == 0.0 and clock.progress(6) == 0.5
    fake_time.now += 3
    with clock.paused():
        fake_time.now += 50  # a preview or scoring: not training time
        assert clock.seconds == 3
    assert clock.seconds == 3
    assert clock.checkpoint_due() == 2.0 and clock.checkpoint_due() is None  # each checkpoint once
    fake_time.now += 2
    assert clock.checkpoint_due() == 5.0 and clock.checkpoints == [] and not clock.out_of_time()

    timed = TrainClock(steps=10, max_seconds=8)
    fake_time.now += 2
    assert timed.progress(1) == pytest.approx(0.25)  # with a time budget, progress follows the clock
    fake_time.now += 6
    assert timed.out_of_time() and timed.progress(2) == 1.0


def test_at_seconds_and_heldout_scores():
    assert at_seconds(30, psnr=25.5, steps=1200) == {"psnr@30s": 25.5, "steps@30s": 1200.0}

    class Views:
        images = torch.full((2, 12, 12, 3), 0.5)

        def __len__(self):
            return 2

        def camera(self, i):
            return i

    renders = [torch.full((12, 12, 3), 0.5), torch.full((12, 12, 3), 0.6)]  # PSNR inf-capped 100, then 20 dB
    scores = heldout_scores(lambda cam: {"rgb": renders[cam]}, Views())
    assert scores["psnr"] == pytest.approx((100 + 20) / 2, abs=1e-3) and 0.9 < scores["ssim"] < 1


def test_ray_batches_recomposite_targets_and_crop():
    n, h, w = 2, 8, 8
    alphas = torch.zeros(n, h, w, 1)
    alphas[:, :, : w // 2] = 1.0  # opaque left half, empty right half
    colour = torch.tensor([0.2, 0.4, 0.6])
    images = colour * alphas + 1.0 * (1 - alphas)  # composited on white, as load_blender does
    views = PosedImages(images, alphas, torch.eye(4).expand(n, 4, 4), 4.0, 4.0, 4.0, 4.0, w, h, ["a", "b"])
    torch.manual_seed(0)
    o, d, target, ray_bg = RayBatches(views, 1.0, True, "cpu").sample(500, central=True)
    assert o.shape == d.shape == target.shape == ray_bg.shape == (500, 3)
    px = d[:, 0] / -d[:, 2] * 4.0 + 4.0 - 0.5  # back from the direction to the pixel column
    py = -d[:, 1] / -d[:, 2] * 4.0 + 4.0 - 0.5
    assert px.round().min() >= 2 and px.round().max() <= 5 and py.round().min() >= 2 and py.round().max() <= 5
    left = px < w // 2
    assert torch.allclose(target[left], colour.expand(int(left.sum()), 3))  # opaque: the image's colour
    assert torch.allclose(target[~left], ray_bg[~left])  # empty: the ray's random background
    plain = RayBatches(views, 1.0, False, "cpu").sample(10)
    assert plain[3].shape == (3,) and torch.equal(plain[3], torch.ones(3))
    cam, gt = preview_target(views, 4, "cpu")
    assert (cam.width, cam.height) == (4, 4) and gt.shape == (4, 4, 3)
    assert torch.allclose(gt[:, :2], colour.expand(4, 2, 3)) and torch.allclose(gt[:, 2:], torch.ones(4, 2, 3))


@pytest.mark.parametrize("method", ["nerf", "volsdf"])
def test_runs_score_at_checkpoints_and_stop_at_the_budget(method, tmp_path):
    if method == "nerf":
        from pipelines.nerf import NerfConfig as Config, run
        extra = dict(model="fast", batch_rays=64, target_samples=2048, hash_levels=2, hash_log2_size=10,
                     grid_resolution=8, march_steps=24)
    else:
        from pipelines.volsdf import VolSDFConfig as Config, run
        extra = dict(field="primitives", batch_rays=32, n_coarse=8, n_fine=4, eikonal_points=16, mesh_resolution=12)
    # Checkpoint "0" is due after the first step; a budget of 1 ns is spent by then, so the run stops at step 1.
    cfg = Config(out_dir=str(tmp_path), device="cpu", steps=50, downscale=8, max_views=2, eval_views=1,
                 preview_every=1000, export=False, eval_at_seconds="0", max_seconds=1e-9, **extra)
    logs = []
    done = run_to_completion(run(cfg), on_event=lambda e: logs.append(e.message) if isinstance(e, Log) else None)
    assert isinstance(done, Done) and done.metrics["steps"] == 1.0 and done.metrics["steps@0s"] == 1.0
    assert done.metrics["psnr@0s"] == pytest.approx(done.metrics["psnr"], abs=1e-4)  # the same model, scored twice
    assert any("stopped training at the 1e-09s budget after 1 steps" in m for m in logs)
    if method == "volsdf":
        assert "mesh_faces@0s" in done.metrics


def test_cpu_scoring_cap_renders_smaller_and_compares_with_downsampled_truth():
    """A held-out view above the cap is rendered at reduced size and scored against its area-downsampled truth; the
    cap applies to UI/CLI runs on a CPU, not to benchmarks."""
    import dataclasses

    from pipelines.core.cameras import Camera
    from pipelines.core.training import CPU_SCORE_PIXELS, score_pixels, score_view, scored_size
    from pipelines.nerf import NerfConfig

    def ramp(w, h):  # a horizontal ramp sampled at pixel centres: area-downsampling by an integer factor keeps it
        x = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        return x[None, :, None].expand(h, w, 3).clone()

    class Views:
        width, height = 400, 300
        images = ramp(400, 300)[None]

        def camera(self, i):
            return Camera(torch.eye(4), 300.0, 300.0, 200.0, 150.0, 400, 300)

        def __len__(self):
            return 1

    sizes = []

    def render_view(cam):
        sizes.append((cam.width, cam.height))
        return {"rgb": ramp(cam.width, cam.height)}

    p, q, rgb, gt = score_view(render_view, Views(), 0, max_pixels=100 * 75)
    assert sizes == [(100, 75)] and rgb.shape == gt.shape == (75, 100, 3)
    assert p > 50 and q > 0.99
    p_full, _, rgb_full, _ = score_view(render_view, Views(), 0)
    assert sizes[-1] == (400, 300) and rgb_full.shape == (300, 400, 3) and p_full > 50
    assert scored_size(Views(), 100 * 75) == " at 100x75, reduced from 400x300 on the CPU"
    assert scored_size(Views(), 0) == "" and scored_size(Views(), 10 ** 6) == ""
    cpu = torch.device("cpu")
    assert score_pixels(NerfConfig(), cpu) == CPU_SCORE_PIXELS
    assert score_pixels(dataclasses.replace(NerfConfig(), eval_at_seconds="30"), cpu) == 0  # a benchmark
    assert score_pixels(dataclasses.replace(NerfConfig(), export=False), cpu) == 0
    assert score_pixels(NerfConfig(), torch.device("meta")) == 0
