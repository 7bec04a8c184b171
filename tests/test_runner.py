"""gen3d_app/runner.py: the device pool and the ZeroGPU wrapper (no GPU, no browser)."""
from __future__ import annotations

import sys
import threading
import types

from gen3d_app import runner


def test_device_pool_is_free_first_and_bounded():
    free = {"cuda:0": 10, "cuda:1": 50, "cuda:2": 30}
    pool = runner.DevicePool(3, devices=lambda: list(free), memory=lambda d: free[d])
    first = pool.try_acquire(0.01)
    assert first == "cuda:1"  # most free memory
    second, third = pool.try_acquire(0.01), pool.try_acquire(0.01)
    assert {first, second, third} == set(free)  # each run on its own GPU
    assert pool.try_acquire(0.01) is None  # all slots taken
    pool.release("cuda:0")
    assert pool.try_acquire(0.01) == "cuda:0"
    assert pool.busy() == {"cuda:0": 1, "cuda:1": 1, "cuda:2": 1}


def test_device_pool_shares_one_gpu_between_slots():
    pool = runner.DevicePool(2, devices=lambda: ["cuda:0"], memory=lambda d: 1)
    assert pool.try_acquire(0.01) == pool.try_acquire(0.01) == "cuda:0"
    assert pool.try_acquire(0.01) is None
    assert pool.busy() == {"cuda:0": 2}


def test_a_released_slot_wakes_a_waiting_run():
    pool = runner.DevicePool(1, devices=lambda: ["cpu"], memory=lambda d: 0)
    assert pool.try_acquire(0.01) == "cpu"
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.try_acquire(30)))
    waiter.start()
    pool.release("cpu")
    waiter.join(30)
    assert got == ["cpu"]


def test_zerogpu_is_inert_elsewhere(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    fn = lambda x: x  # noqa: E731
    assert runner.zerogpu(lambda *a: 60)(fn) is fn
    assert not runner.on_zerogpu()


def test_zerogpu_applies_spaces_gpu_with_the_duration(monkeypatch):
    seen = {}

    def gpu(duration):
        seen["duration"] = duration
        return lambda fn: ("wrapped", fn)

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    duration = lambda *a: 42  # noqa: E731
    fn = lambda x: x  # noqa: E731
    assert runner.zerogpu(duration)(fn) == ("wrapped", fn)
    assert seen["duration"] is duration


def test_run_seconds():
    assert runner.run_seconds(1000, 0.05) == int(1.3 * (20 + 50))
    assert runner.run_seconds(10, 0.0) == int(1.3 * 20)
    assert runner.run_seconds(10 ** 6, 1.0) == runner.ZEROGPU_MAX_S
    assert runner.run_seconds(0, 0.0, fixed_s=1) == 10


def test_handler_pins_each_run_to_a_free_gpu_and_gives_it_back(monkeypatch, tmp_path):
    """Two runs at once with two faked GPUs: each gets its own cuda:i (as cfg.device and as the worker
    thread's current device), and both devices are free again once the runs end."""
    from dataclasses import dataclass

    import torch

    from gen3d_app import widgets
    from pipelines import PIPELINES, PipelineSpec
    from pipelines.config import PipelineConfig
    from pipelines.events import Done

    @dataclass
    class Cfg(PipelineConfig):
        pass

    seen, inside = [], threading.Barrier(2, timeout=30)

    def run(cfg):
        seen.append((cfg.device, current.get(threading.get_ident())))
        inside.wait()  # both runs are in flight together
        yield Done([], {}, 0.0)

    current: dict[int, str] = {}
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.__setitem__(threading.get_ident(), d))
    mod = types.ModuleType("gen3d_fake_gpu_pipeline")
    mod.CONFIG, mod.run = Cfg, run
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(PIPELINES, "nerf", PipelineSpec("NeRF", mod.__name__, "fake"))
    monkeypatch.setenv("GEN3D_OUTPUTS", str(tmp_path))
    pool = runner.DevicePool(2, devices=lambda: ["cuda:0", "cuda:1"], memory=lambda d: 1)
    monkeypatch.setattr(runner, "POOL", pool)
    handler = widgets.make_handler("nerf", lambda cls, **kw: cls(), {"status": object()}, ())
    req = types.SimpleNamespace(session_hash="s")
    threads = [threading.Thread(target=lambda: list(handler(req))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(seen) == [("cuda:0", "cuda:0"), ("cuda:1", "cuda:1")]
    assert pool.busy() == {}



def test_stop_answers_only_once_the_sessions_run_has_closed(monkeypatch, tmp_path):
    """Issue 15: a Run click made while Gradio's page still holds the cancelled run is deferred and then dropped,
    so "Stopped." must wait for the run handler to close. The handler registers its session's run while open;
    Stop waits on exactly that (and not on another session's run), and closing the handler releases it."""
    from dataclasses import dataclass

    from gen3d_app import widgets
    from pipelines import PIPELINES, PipelineSpec
    from pipelines.config import PipelineConfig
    from pipelines.events import Log

    @dataclass
    class Cfg(PipelineConfig):
        pass

    def run(cfg):
        while True:
            yield Log("working")

    mod = types.ModuleType("gen3d_fake_endless_pipeline")
    mod.CONFIG, mod.run = Cfg, run
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(PIPELINES, "nerf", PipelineSpec("NeRF", mod.__name__, "fake"))
    monkeypatch.setenv("GEN3D_OUTPUTS", str(tmp_path))
    monkeypatch.setattr(widgets, "STOP_SETTLE_S", 0.0)
    handler = widgets.make_handler("nerf", lambda cls, **kw: cls(), {"status": object()}, ())
    mine, other = types.SimpleNamespace(session_hash="mine"), types.SimpleNamespace(session_hash="other")
    gen = handler(mine)
    next(gen)
    key = (widgets.outputs.session_key(mine), "nerf")
    closed = widgets.RUNNING[key]
    assert not closed.is_set()
    waited = []
    monkeypatch.setattr(widgets, "STOP_WAIT_S", 7.0)
    monkeypatch.setattr(closed, "wait", lambda timeout: waited.append(timeout) or True)
    assert widgets.stop_handler("nerf")(mine) == "**Stopped.**" and waited == [7.0]
    assert widgets.stop_handler("nerf")(other) == "**Stopped.**" and waited == [7.0]  # no run: no wait
    gen.close()  # what Gradio's cancel does to the handler
    assert closed.is_set() and key not in widgets.RUNNING


def test_gpu_duration_comes_from_the_steps():

    cfg = types.SimpleNamespace(steps=1000)
    assert runner.gpu_duration("dreamfusion", cfg) == runner.run_seconds(1000, 0.045)
    assert runner.gpu_duration("dreamfusion", types.SimpleNamespace(steps=100_000)) == runner.ZEROGPU_MAX_S


def test_readme_front_matter_preloads_the_default_models():
    """A Space built from the README starts with the real priors in its Hub cache."""
    from pathlib import Path

    import yaml

    from pipelines.core.priors import DEFAULT_DIFFUSION
    from pipelines.core.priors.clip import DEFAULT_CLIP

    meta = yaml.safe_load((Path(__file__).resolve().parents[1] / "README.md").read_text().split("---")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["python_version"]
    preloaded = {line.split()[0]: line.split()[1].split(",") for line in meta["preload_from_hub"]}
    assert "unet/diffusion_pytorch_model.safetensors" in preloaded[DEFAULT_DIFFUSION]
    assert "model.safetensors" in preloaded[DEFAULT_CLIP]
    assert {DEFAULT_DIFFUSION, DEFAULT_CLIP} <= set(meta["models"])


def test_tabs_compile_long_runs_on_a_gpu_only(monkeypatch):
    """The generative tabs use CUDA graphs where a run pays for compiling, never on a CPU or on ZeroGPU."""
    from gen3d_app.tabs import dreamfusion as tab
    from pipelines.dreamfusion import DreamFusionConfig

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.delenv("GEN3D_TINY", raising=False)
    monkeypatch.setattr(runner, "has_cuda", lambda: True)
    long_run = tab.make_config(DreamFusionConfig, "a chair", "", 100.0, 10_000, 0, "embedded", "custom")
    short_run = tab.make_config(DreamFusionConfig, "a chair", "", 100.0, 500, 0, "embedded", "custom")
    assert (long_run.prior_compile, short_run.prior_compile) == ("reduce-overhead", "off")
    assert "CUDA graphs" in runner.fast_mode_note("dreamfusion")
    from gen3d_app.tabs import magic3d
    from pipelines.magic3d import Magic3DConfig

    m3 = [magic3d.make_config(Magic3DConfig, "a chair", "", 100.0, c, f, 32, "auto", 0, "embedded", "custom")
          for c, f in ((2000, 1000), (1000, 500))]
    assert [c.prior_compile for c in m3] == ["reduce-overhead", "off"]  # both stages' steps count
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert runner.fast_mode("dreamfusion", 10_000) == "off" and "ZeroGPU" in runner.fast_mode_note("dreamfusion")
    monkeypatch.delenv("SPACES_ZERO_GPU")
    monkeypatch.setattr(runner, "has_cuda", lambda: False)
    assert runner.fast_mode("dreamfields", 10_000) == "off"


def test_zerogpu_presets_fit_one_call_and_open_the_tabs_on_zerogpu(monkeypatch):
    """On a ZeroGPU Space (its environment variable) each tab that chooses its preset opens on one whose run fits the
    longest call the app asks for, at the measured cost per step plus loading and exports (with no margin to spare
    it would be cut short): its 'zerogpu' preset where it has one, which it does not open on elsewhere."""
    import importlib

    from pipelines import PIPELINES

    tabs = {name: importlib.import_module(f"gen3d_app.tabs.{name}") for name in PIPELINES}
    tabs = {name: tab for name, tab in tabs.items() if hasattr(tab, "default_preset")}
    assert {"nerf", "volsdf", "dreamfusion", "dreamfields", "magic3d"} <= set(tabs), sorted(tabs)
    for name, tab in tabs.items():
        monkeypatch.setenv("SPACES_ZERO_GPU", "true")
        preset = tab.default_preset()
        assert preset == "zerogpu" or "zerogpu" not in tab.PRESETS, (name, preset)
        cls = PIPELINES[name].load()[0]
        cfg = cls().with_preset(preset) if preset in cls.PRESETS else cls()
        steps = cfg.coarse_steps + cfg.fine_steps if name == "magic3d" else cfg.steps
        need = runner.GPU_FIXED_SECONDS.get(name, 20.0) + steps * runner.GPU_SECONDS_PER_STEP[name]
        assert need <= runner.ZEROGPU_MAX_S, (name, preset, need)
        monkeypatch.delenv("SPACES_ZERO_GPU")
        assert tab.default_preset() != "zerogpu"
