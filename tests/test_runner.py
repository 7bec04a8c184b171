"""gen3d_app/runner.py: the owner thread, the device pool and the ZeroGPU wrapper (no GPU, no browser)."""
from __future__ import annotations

import sys
import threading
import types

import pytest

from gen3d_app import runner
from pipelines.config import UserInputError


def counting_pipeline(n: int, log: list):
    """A fake pipeline: records the thread of every step and whether its finally: ran."""
    def run(cfg):
        try:
            for i in range(n):
                log.append(("step", i, threading.get_ident()))
                yield i
        finally:
            log.append(("finally", None, threading.get_ident()))
    return run


def test_one_thread_owns_the_run_from_start_to_end():
    log: list = []
    events = list(runner.owned_events(counting_pipeline(20, log), cfg=None, queue_size=2))
    assert events == list(range(20))
    threads = {t for _, _, t in log}
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert log[-1][0] == "finally"


def test_closing_stops_the_run_and_waits_for_its_finally():
    log: list = []
    events = runner.owned_events(counting_pipeline(10_000, log), cfg=None, queue_size=2)
    assert [next(events) for _ in range(3)] == [0, 1, 2]
    events.close()
    assert log[-1][0] == "finally"  # close() returned only after the pipeline cleaned up
    assert sum(1 for kind, *_ in log if kind == "step") < 100  # it stopped, it did not run to the end


def test_errors_reach_the_consumer():
    def failing(cfg):
        yield 1
        raise UserInputError("bad prompt")

    events = runner.owned_events(failing, cfg=None)
    assert next(events) == 1
    with pytest.raises(UserInputError, match="bad prompt"):
        next(events)


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
