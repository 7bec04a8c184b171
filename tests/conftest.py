"""Shared test fixtures: paths to the public data in ../shared/data, skipped when it is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LEGO = SHARED_DATA / "nerf_synthetic" / "lego"
"""The NeRF-synthetic lego scene (400x400, train + val)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny tensors on 2 shared cores: one intra-op thread measured ~10x faster than two contending ones."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def lego() -> Path:
    """The lego scene folder; skips the test when ../shared/data is not there."""
    if not (LEGO / "transforms_train.json").is_file():
        pytest.skip(f"shared data not found: {LEGO}")
    return LEGO
