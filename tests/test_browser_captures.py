"""Issue 19 in headless Chromium: one's own capture uploaded as a dataset .zip in the NeRF tab. The page names the
detected format and the chosen scene space, draws the cameras (plotly frusta) before training, streams previews
and ends with a held-out PSNR.

Uses test_browser's fixtures (`python app.py` with GEN3D_TINY=1 on a free port, offline; Debian's chromium) and
test_captures' LLFF writer on the shipped cow scene's known cameras. Every wait polls a condition against a deadline.
"""
from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_browser  # noqa: E402
from test_browser import CHROMEDRIVER, CHROMIUM, RUN_DEADLINE_S, page_helpers, wait_for  # noqa: E402

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="headless Chromium not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    gen = test_browser.server.__wrapped__(tmp_path_factory.mktemp("app"))
    yield next(gen)
    gen.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    gen = test_browser.browser.__wrapped__(tmp_path_factory.mktemp("chrome"))
    yield next(gen)
    gen.close()


def llff_zip(tmp_path: Path, n: int = 8) -> Path:
    """The cow's first ``n`` training views written as an LLFF capture (poses_bounds.npy + images/), zipped."""
    from pipelines.core.datasets import load_blender
    from test_captures import COW, write_llff

    views = load_blender(COW, "train", max_views=n, background=1.0)
    write_llff(tmp_path / "cow_llff", views, [(COW / name).read_bytes() for name in views.names])
    up = tmp_path / "cow_llff.zip"
    with zipfile.ZipFile(up, "w") as zf:
        for f in sorted((tmp_path / "cow_llff").rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(tmp_path).as_posix())
    return up


def test_nerf_trains_on_an_uploaded_llff_zip(server, browser, tmp_path):
    url, server_log, server_alive = server
    d = browser
    d.get(url)
    find, no_error = page_helpers(d, server_log, server_alive)
    wait_for(lambda: find("#nerf-run"), 60, "the NeRF tab")
    find("#nerf-upload input[type=file]").send_keys(str(llff_zip(tmp_path)))
    wait_for(lambda: "cow_llff.zip" in "".join(find("#nerf-upload").text.split()), 30,  # stem and suffix apart
             "the uploaded zip listed")
    find("#nerf-run").click()
    wait_for(lambda: find("#nerf-cameras .js-plotly-plot"), RUN_DEADLINE_S, "the cameras plot", check=no_error)
    log = find("#nerf-metrics").text
    assert "scene format: llff" in log, log
    assert "scene space:" in log and "cameras" in log, log  # which space, and why (from the cameras)
    assert "cameras" in find("#nerf-cameras").text  # the plot's title: "N cameras · SPACE space"
    wait_for(lambda: find("#nerf-preview-rgb img").get_attribute("src"), RUN_DEADLINE_S, "a preview",
             check=no_error)
    wait_for(lambda: "Done" in find("#nerf-status").text, 2 * RUN_DEADLINE_S, "the run to finish", check=no_error)
    wait_for(lambda: "held-out PSNR" in find("#nerf-metrics").text, 30, "the held-out PSNR", check=no_error)
    shots = Path(os.environ.get("GEN3D_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(shots / "browser_nerf_capture.png"))
