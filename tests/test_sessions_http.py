"""Each session is served only its own files: two HTTP sessions against `python app.py` on 127.0.0.1.

Session A runs Single view on a shipped example through the queue API and gets its files' URLs; session B (another
cookie) and a client with no cookie ask for them and for the run folder's own path; only A gets its files.
"""
from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_browser import server  # noqa: E402,F401 - the app.py fixture (GEN3D_TINY, tmp outputs, offline)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "assets" / "single_view" / "examples").glob("*.png"))


@pytest.mark.skipif(not EXAMPLES or not (REPO / "assets" / "single_view" / "model" / "config.json").is_file(),
                    reason="needs the shipped single-view model and examples")
def test_a_session_cannot_read_another_sessions_files(server, tmp_path):  # noqa: F811
    httpx = pytest.importorskip("httpx")
    from gradio_client import Client, handle_file

    url, server_log, _ = server
    a = Client(url, verbose=False, download_files=False)  # keeps the cookie of its first response, as a browser
    assert "gen3d_session" in a.cookies
    job = a.submit(mode="predict", image=handle_file(str(EXAMPLES[0])), preset="cpu", steps=10, heads=["voxels"],
                   seed=0, api_name="/run_single_view")
    job.result(timeout=180)
    files = [f for out in job.outputs() for f in (out[2] or []) if isinstance(out[2], list)]
    assert files, f"the run returned no files:\n{server_log()}"
    mesh = next(f for f in files if f["path"].endswith("mesh.glb"))
    file_url = url.rstrip("/") + mesh["url"][mesh["url"].index("/gradio_api/"):]

    with httpx.Client(cookies=a.cookies) as mine, httpx.Client() as stranger:
        assert mine.get(file_url).status_code == 200  # A reads its own file
        stranger.get(url)  # B: a session of its own (the page sets its cookie)
        assert "gen3d_session" in stranger.cookies
        assert stranger.get(file_url).status_code == 404
        assert httpx.get(file_url).status_code == 404  # no cookie at all
        # the run folder itself (the path the issue fetched): never served, not even to its own session
        runs = sorted((tmp_path / "outputs").glob("*/single_view-*/mesh.glb"))
        assert runs, "the run folder is under GEN3D_OUTPUTS"
        direct = url.rstrip("/") + "/gradio_api/file=" + quote(str(runs[0]))
        assert stranger.get(direct).status_code == 404 and mine.get(direct).status_code == 404
