"""DreamFields on CPU with the test-tier CLIP: the random backgrounds, the transmittance loss, the origin update,
the pose sampler, the scorer's tiers, a smoke run end to end, bad captions and scorers, the CLI and the tab.
Nothing touches the network."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines import PIPELINES, UserInputError
from pipelines.core import backgrounds as bgs
from pipelines.core.metrics import r_precision
from pipelines.dreamfields import (DreamFieldsConfig, random_crops, render, run, sample_poses, tau_at,
                                   transmittance_loss, update_origin)
from pipelines.events import Done, Log, Preview, Progress, run_to_completion

pytest.importorskip("transformers")

from pipelines.core.priors.clip import CLIP_MEAN, load_scorer, tiny_clip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(device="cpu", steps=6, batch_size=2, resolution=16, n_samples=12, width=16, depth=1, n_freqs=4,
            preview_every=3, mesh_resolution=16, mesh_density=0.3, turntable_frames=3, preview_size=16,
            eval_views=3, rprecision_prompts="", tau_anneal_steps=4, origin_decay=0.9)


@pytest.fixture(scope="module")
def scorer_dir(tmp_path_factory) -> str:
    return str(tiny_clip(tmp_path_factory.mktemp("tiny-clip")))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------ backgrounds
def test_noise_and_random_backgrounds_shapes_and_ranges():
    x = bgs.noise(3, 10, 12, gen())
    assert x.shape == (3, 10, 12, 3) and x.min() >= 0 and x.max() <= 1
    assert 0.4 < x.mean() < 0.6 and x.std() > 0.2  # uniform noise, not a constant
    imgs, kinds = bgs.random_backgrounds(12, 16, 16, gen(1), blur_prob=0.5)
    assert imgs.shape == (12, 16, 16, 3) and imgs.min() >= 0 and imgs.max() <= 1
    assert set(kinds) == set(bgs.KINDS)  # 12 draws of 3 kinds: each one shows up with this seed
    only, kinds = bgs.random_backgrounds(4, 8, 8, gen(), kinds=("checkerboard",), blur_prob=0.0)
    assert kinds == ["checkerboard"] * 4 and len(torch.unique(only[0].reshape(-1, 3), dim=0)) == 2
    with pytest.raises(ValueError):
        bgs.random_backgrounds(1, 8, 8, gen(), kinds=("plaid",))


def test_checkerboard_period():
    p = 3
    x = bgs.checkerboard(2, 12, 15, gen(), period=p)
    assert x.shape == (2, 12, 15, 3) and x.min() >= 0 and x.max() <= 1
    for b in range(2):
        a, c = x[b, 0, 0], x[b, 0, p]
        assert not torch.allclose(a, c)
        for i in range(12):
            for j in range(15):
                want = a if (i // p + j // p) % 2 == 0 else c
                assert torch.equal(x[b, i, j], want), (b, i, j)
    # random periods stay in the range: the first colour change along a row is at the period
    x = bgs.checkerboard(20, 40, 40, gen(2), period_range=(2, 5))
    first_change = [int((~(x[b, 0] == x[b, 0, :1]).all(-1)).nonzero()[0]) for b in range(20)]
    assert set(first_change) <= {2, 3, 4, 5} and len(set(first_change)) > 1


def test_fourier_texture_spectrum():
    decay = 1.5
    x = bgs.fourier(16, 64, 64, gen(), decay=decay)
    assert x.shape == (16, 64, 64, 3)
    assert torch.isclose(x.amin(dim=(1, 2)), torch.zeros(16, 3), atol=1e-6).all()  # each channel spans [0, 1]
    assert torch.isclose(x.amax(dim=(1, 2)), torch.ones(16, 3), atol=1e-6).all()
    power = torch.fft.rfft2(x.permute(0, 3, 1, 2) - x.mean(dim=(1, 2))[..., None, None]).abs().pow(2).mean((0, 1))
    f = torch.sqrt(torch.fft.fftfreq(64)[:, None] ** 2 + torch.fft.rfftfreq(64)[None] ** 2)
    ok = (f > 0.03) & (f < 0.4)
    slope = torch.linalg.lstsq(torch.stack([f[ok].log(), torch.ones(int(ok.sum()))], 1), power[ok].log()[:, None])
    assert abs(float(slope.solution[0]) + 2 * decay) < 0.3  # power ~ |f|^(-2 decay)
    flat = bgs.fourier(16, 64, 64, gen(), decay=0.0)  # white spectrum: rough; steep: smooth
    rough = lambda y: (y[:, 1:] - y[:, :-1]).abs().mean()  # noqa: E731
    assert rough(flat) > 3 * rough(x)


def test_blur_smooths_and_keeps_the_mean():
    x = bgs.noise(2, 32, 32, gen())
    y = bgs.gaussian_blur(x, 2.0)
    assert y.shape == x.shape and torch.allclose(y.mean(), x.mean(), atol=0.02)
    assert y.std() < 0.4 * x.std()
    assert torch.equal(bgs.gaussian_blur(x, 0.0), x)
    const = torch.full((1, 9, 9, 3), 0.3)
    assert torch.allclose(bgs.gaussian_blur(const, 1.5), const, atol=1e-6)


# ------------------------------------------------------------------------------------- the method's parts
def test_transmittance_loss_gradient_sign_around_tau():
    tau = 0.6
    dense = torch.full((4, 4), 0.8, requires_grad=True)  # transmittance 0.2 < tau: the loss wants it clearer
    transmittance_loss(dense, tau).backward()
    assert (dense.grad > 0).all()  # descent lowers opacity
    torch.testing.assert_close(dense.grad, torch.full((4, 4), 1 / 16))
    clear = torch.full((4, 4), 0.1, requires_grad=True)  # transmittance 0.9 > tau: nothing to gain
    loss = transmittance_loss(clear, tau)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(-tau) and torch.count_nonzero(clear.grad) == 0
    cfg = DreamFieldsConfig(tau_start=0.5, tau_end=0.88, tau_anneal_steps=100)
    assert tau_at(0, cfg) == 0.5 and tau_at(50, cfg) == pytest.approx(0.69) and tau_at(100, cfg) == tau_at(5000, cfg)
    assert tau_at(100, cfg) == pytest.approx(0.88)


def test_origin_update_follows_the_density_weighted_centre():
    origin = torch.zeros(3)
    points = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], [[0.0, 0.0, 4.0], [5.0, 5.0, 5.0]]])
    weights = torch.tensor([[3.0, 1.0], [0.0, 0.0]])  # centre = (3 * (1,0,0) + (0,2,0)) / 4 = (0.75, 0.5, 0)
    new = update_origin(origin, weights, points, decay=0.9)
    torch.testing.assert_close(new, torch.tensor([0.075, 0.05, 0.0]))
    torch.testing.assert_close(update_origin(new, weights, points, 0.0), torch.tensor([0.75, 0.5, 0.0]))
    torch.testing.assert_close(update_origin(new, torch.zeros(2, 2), points, 0.5), new)  # empty scene: stays


def test_origin_shifts_the_rays():
    """A field with a ball at c renders the same from a camera orbiting c as an origin-centred ball does."""
    class Ball(torch.nn.Module):
        bound = 1.0

        def __init__(self, centre):
            super().__init__()
            self.c = torch.tensor(centre)

        def forward(self, x, d=None):
            return 50.0 * ((x - self.c).norm(dim=-1) < 0.3).float(), torch.ones_like(x) * 0.2

    c2w = sample_poses(2, gen(), (4.0, 4.0), (10.0, 30.0))[0]
    bg = torch.ones(3)
    centred = render(Ball([0.0, 0.0, 0.0]), c2w, torch.zeros(3), 16, 1.2, bg, 64, False)
    moved = render(Ball([0.4, -0.3, 0.2]), c2w, torch.tensor([0.4, -0.3, 0.2]), 16, 1.2, bg, 64, False)
    unshifted = render(Ball([0.4, -0.3, 0.2]), c2w, torch.zeros(3), 16, 1.2, bg, 64, False)
    assert centred["opacity"].sum() > 10
    torch.testing.assert_close(moved["opacity"], centred["opacity"], atol=0.05, rtol=0)
    assert (unshifted["opacity"] - centred["opacity"]).abs().max() > 0.5


def test_pose_sampler_ranges():
    c2w, elev, azim, r = sample_poses(500, gen(), radius=(3.0, 4.5), elevation_deg=(5.0, 35.0))
    assert c2w.shape == (500, 4, 4)
    pos = c2w[:, :3, 3]
    torch.testing.assert_close(pos.norm(dim=-1), r)
    assert r.min() >= 3.0 and r.max() <= 4.5 and r.max() - r.min() > 1.0
    measured = torch.rad2deg(torch.asin(pos[:, 2] / pos.norm(dim=-1)))
    torch.testing.assert_close(measured, elev, atol=1e-3, rtol=0)
    assert measured.min() >= 5.0 - 1e-3 and measured.max() <= 35.0 + 1e-3 and measured.max() - measured.min() > 25
    assert azim.min() < -150 and azim.max() > 150  # all round
    forward = -c2w[:, :3, 2]  # cameras look down -z: at the origin
    torch.testing.assert_close(forward, -torch.nn.functional.normalize(pos, dim=-1), atol=1e-5, rtol=0)


def test_random_crops_keep_size_and_take_content():
    img = torch.arange(16.0).view(1, 4, 4, 1).expand(1, 4, 4, 3).contiguous() / 15
    crops = random_crops(img.expand(2, 4, 4, 3), 3, 0.5, gen())
    assert crops.shape == (6, 4, 4, 3)
    assert crops.min() >= 0 and crops.max() <= 1 and not torch.equal(crops[0], img[0])
    assert torch.equal(random_crops(img, 1, 1.0, gen()), img)


# ------------------------------------------------------------------------------------------------ scorer
def test_scorer_embeddings_and_preprocessing(scorer_dir, tmp_path):
    s = load_scorer(scorer_dir, "cpu")
    assert load_scorer(scorer_dir, "cpu") is s  # cached
    t = s.encode_text(["a red ball", "a blue cube"])
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(t[0], t[1])
    img = torch.rand(2, 16, 16, 3, requires_grad=True)
    sc = s.score(img, t)
    assert sc.shape == (2, 2) and sc.abs().max() <= 1 + 1e-5
    sc[:, 0].sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    x = s.preprocess(torch.full((1, 8, 8, 3), 0.5))
    assert x.shape == (1, 3, s.image_size, s.image_size)
    torch.testing.assert_close(x[0, :, 0, 0], (0.5 - torch.tensor(CLIP_MEAN)) / s.std.view(3))
    other = tmp_path / "grey-mean"  # the mean and std come from the folder's preprocessor config
    shutil.copytree(scorer_dir, other)
    cfg = json.loads((other / "preprocessor_config.json").read_text())
    cfg.update(image_mean=[0.5] * 3, image_std=[1.0] * 3)
    (other / "preprocessor_config.json").write_text(json.dumps(cfg))
    assert torch.equal(load_scorer(str(other), "cpu").preprocess(torch.full((1, 8, 8, 3), 0.5)),
                       torch.zeros(1, 3, s.image_size, s.image_size))


def test_bad_scorers_are_user_errors(tmp_path, monkeypatch):
    from pipelines.core.priors import clip, embedded

    # 'embedded' where none ships (a checkout without assets/priors/clip)
    monkeypatch.setattr(clip, "ASSET_DIR", tmp_path / "no-scorer")
    monkeypatch.setattr(embedded, "SCORER_DIR", tmp_path / "no-scorer")
    embedded.clear_cache()
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (bert / "model.safetensors").write_bytes(b"")
    (bert / "tokenizer.json").write_text("{}")
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "file.txt").write_text("x")
    for source, msg in ((str(tmp_path / "missing"), "openai/clip-vit-base-patch32"), (str(empty), "missing config"),
                        (str(bert), "not CLIP"), (str(tmp_path / "file.txt"), "is a file"),
                        ("embedded", "No CLIP scorer is available offline")):
        with pytest.raises(UserInputError, match=msg):
            load_scorer(source, "cpu")


# ---------------------------------------------------------------------------------------------- end to end
def test_dreamfields_smoke_with_the_test_scorer(scorer_dir, tmp_path, monkeypatch):
    import copy

    from pipelines import dreamfields

    initial, original = {}, dreamfields.make_field

    def recording_make_field(cfg):
        field = original(cfg)
        initial.update(copy.deepcopy(field.state_dict()))
        return field

    monkeypatch.setattr(dreamfields, "make_field", recording_make_field)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na blue cube\na green tree\n")
    cfg = DreamFieldsConfig(caption="a red ball", scorer=scorer_dir, out_dir=str(tmp_path / "out"),
                            **{**TINY, "rprecision_prompts": str(prompts)})
    events = list(run(cfg))
    done = events[-1]
    assert isinstance(done, Done)
    logs = [e.message for e in events if isinstance(e, Log)]
    assert any(m.startswith("scorer: ") and scorer_dir in m for m in logs)
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews and set(previews[0].images) == {"rgb", "opacity", "background"}
    assert all(img.dtype.name == "uint8" and img.shape[-1] == 3 for img in previews[0].images.values())
    assert "CLIP score" in previews[0].caption
    progress = [e for e in events if isinstance(e, Progress) and e.losses]
    assert progress[-1].step == cfg.steps and {"loss", "clip", "transmittance", "tau"} <= set(progress[-1].losses)
    assert -1 <= progress[-1].losses["clip"] <= 1 and 0 <= progress[-1].losses["transmittance"] <= 1
    m = done.metrics
    assert -1 <= m["eval_clip_in_sample"] <= 1 and 0 <= m["r_precision_in_sample"] <= 1
    assert m["r_precision_prompts"] == 3 and "eval_clip" not in m  # labelled in-sample wherever it is shown
    assert any(msg.startswith("in-sample scores") for msg in logs)
    kinds = {a.kind for a in done.artifacts}
    assert {"video", "mesh", "checkpoint", "json"} <= kinds
    for a in done.artifacts:
        assert Path(a.path).is_file() and Path(a.path).stat().st_size > 0
    assert [Path(a.path).suffix for a in done.artifacts if a.kind == "mesh"] == [".glb"]
    settings = json.loads((tmp_path / "out" / "run.json").read_text())
    assert len(settings["clip_per_step"]) == cfg.steps and settings["caption"] == "a red ball"
    saved = torch.load(tmp_path / "out" / "model.pt", weights_only=False)
    assert saved["origin"].abs().sum() > 0  # origin tracking moved it
    assert initial.keys() == saved["field"].keys()
    assert all(not torch.equal(v, initial[k]) for k, v in saved["field"].items() if k.startswith("net."))


def test_captions_empty_long_and_overlong(scorer_dir, tmp_path):
    for bad in ("", "   ", "x" * 1001):
        with pytest.raises(UserInputError, match="caption"):
            run_to_completion(run(DreamFieldsConfig(caption=bad, scorer=scorer_dir, out_dir=str(tmp_path / "a"),
                                                    **TINY)))
    long = "a small red wooden toy car " * 8  # < 1000 characters, > 77 tokens of the test vocabulary
    events = list(run(DreamFieldsConfig(caption=long, scorer=scorer_dir, out_dir=str(tmp_path / "b"),
                                        **{**TINY, "steps": 2, "export": False})))
    assert isinstance(events[-1], Done)
    assert any(isinstance(e, Log) and e.level == "warning" and "cut off" in e.message for e in events)
    short = list(run(DreamFieldsConfig(caption="a car", scorer=scorer_dir, out_dir=str(tmp_path / "c"),
                                       **{**TINY, "steps": 1, "export": False})))
    assert not any(isinstance(e, Log) and e.level == "warning" for e in short)


def test_bad_settings_are_user_errors(scorer_dir, tmp_path):
    for bad in (dict(steps=0), dict(backgrounds="plaid"), dict(radius_min=1.0, radius_max=1.0),
                dict(crop_min=0.0), dict(tau_end=1.5), dict(elevation_min=50.0, elevation_max=10.0)):
        with pytest.raises(UserInputError):
            run_to_completion(run(DreamFieldsConfig(scorer=scorer_dir, out_dir=str(tmp_path), **{**TINY, **bad})))
    with pytest.raises(UserInputError, match="prompt set"):
        run_to_completion(run(DreamFieldsConfig(scorer=scorer_dir, out_dir=str(tmp_path),
                                                **{**TINY, "steps": 1, "rprecision_prompts": str(tmp_path / "no")})))


def test_config_cli_and_tab(monkeypatch):
    docs = DreamFieldsConfig.field_docs()
    assert "88 percent" in docs["tau_end"] and "official code" in docs["tau_end"] and "1.2" in docs["focal_scale"]
    assert DreamFieldsConfig().focal_scale == 1.2 and DreamFieldsConfig().tau_end == 0.88
    assert PIPELINES["dreamfields"].load() == (DreamFieldsConfig, run)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "pipelines", "dreamfields", "--help"], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=120)
    assert res.returncode == 0
    assert all(f in res.stdout for f in ("--caption", "--scorer", "--steps", "--seed", "--preset"))
    gr = pytest.importorskip("gradio")
    from gen3d_app.tabs import TABS
    from gen3d_app.tabs import dreamfields as tab

    assert TABS["dreamfields"] is tab
    with gr.Blocks() as demo:
        tab.build()
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    d = DreamFieldsConfig()
    from pipelines.core.priors import clip

    # the form starts on the embedded scorer when it ships and the default CLIP is not cached
    assert by_id["dreamfields-steps"].value == tab.preset_values(tab.default_preset())  # cpu preset without a GPU
    assert by_id["dreamfields-scorer"].value == clip.default_scorer()
    assert {f"dreamfields-preview-{k}" for k in ("rgb", "opacity", "background")} <= set(by_id)
    note = by_id["dreamfields-scorer-note"].value
    if clip.embedded_scorer_available():
        assert "gen3d's own offline scorer" in note and "a red armchair" in by_id["dreamfields-caption"].value
        assert "dreamfields-credits" in by_id  # CC-BY authors of its training data
    else:
        assert "No CLIP scorer is available offline" in note
    assert set(tab.PRESETS) == {"custom"} | set(DreamFieldsConfig.PRESETS)
    assert set(tab.TINY) <= {f.name for f in dataclasses.fields(DreamFieldsConfig)}
    cfg = tab.make_config(DreamFieldsConfig, " a teapot ", 400, 3, "", "fast")
    assert (cfg.caption, cfg.steps, cfg.seed, cfg.scorer) == ("a teapot", 400, 3, clip.default_scorer())
    assert cfg.width == DreamFieldsConfig.PRESETS["fast"]["width"]
    with pytest.raises(UserInputError):
        tab.make_config(DreamFieldsConfig, " ", 10, 0, "", "custom")
    monkeypatch.setenv("GEN3D_TINY", "1")
    assert tab.make_config(DreamFieldsConfig, "a", 5000, 0, "owner/model", "custom").steps == tab.TINY["steps"]
    assert math.isfinite(tab.preset_values("quality"))


def test_r_precision_counts_strict_wins_only():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])  # caption, two distractors
    assert r_precision(img, texts) == 0.5  # view 0 retrieves the caption, view 1 a distractor
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # a distractor identical to the caption: a tie, no retrieval
    assert r_precision(img[:1], same) == 0.0
    assert math.isnan(r_precision(img, texts[:1]))  # no distractors: nothing to retrieve against
