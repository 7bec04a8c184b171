"""The training clock that NeRF and VolSDF share (core/training.py): paused time, schedule progress, benchmark
checkpoints, the time budget, held-out scores; and both methods' runs through it."""
import pytest
import torch

from pipelines.core import training
from pipelines.core.training import TrainClock, at_seconds, heldout_scores
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
