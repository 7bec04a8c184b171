"""Shared test fixtures: paths to the public data in ../shared/data (missing: a failure under CI, a skip
elsewhere)."""
from __future__ import annotations

import os
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


def require_shared(path: Path) -> Path:
    """``path`` (a file under ../shared/data) when it is there. Missing, it fails the test under CI (``CI`` set,
    as .ci/run's environment does: a CI run that skipped these would pass without running them) and skips it
    elsewhere (a laptop without the data)."""
    if not path.exists():
        message = f"shared data not found: {path}"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message + " (CI must run the tests that read ../shared/data)", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data():
    """``require_shared`` for tests that name their own file under ../shared/data."""
    return require_shared


@pytest.fixture
def lego() -> Path:
    """The lego scene folder (see ``require_shared``)."""
    return require_shared(LEGO / "transforms_train.json").parent
