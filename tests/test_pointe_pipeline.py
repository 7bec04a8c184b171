"""Point-E as a method: checkpoint loading (strict, refused clearly), the pipeline (prompt through a view,
image, textvec, bad inputs), the CLI, the tab, the embedded tier's folder format (the networks, sampler and mesh:
test_pointe_models.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines.core import point_diffusion as pd


# ----------------------------------------------------------------------------------------------- loading
@pytest.fixture(scope="module")
def tiny_point_e(tmp_path_factory):
    from pipelines.core.priors.point_e import save_tiny_point_e

    return save_tiny_point_e(tmp_path_factory.mktemp("point_e"))


class StandInScorer:
    """encode_images (B, S, S, 3) in [0, 1] and encode_text, unit rows, as EmbeddedScorer (S = image_size)."""

    def __init__(self, image_size: int):
        self.device, self.image_size, self.name = torch.device("cpu"), image_size, "stand-in scorer"

    def encode_images(self, x):
        return torch.nn.functional.normalize(x.mean((1, 2)).repeat(1, 3)[:, :8] + 0.1, dim=-1)

    def encode_text(self, texts):
        return torch.nn.functional.normalize(torch.ones(len(texts), 8), dim=-1)

def test_tiny_checkpoints_load_strictly(tiny_point_e):
    from pipelines.core.priors.point_e import load_models, load_point_e, tier_of

    model = load_point_e(str(tiny_point_e), "upsample")
    saved = torch.load(tiny_point_e / "upsample_40m.pt", weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert tier_of(str(tiny_point_e)) == "test"
    models = load_models(str(tiny_point_e), "base40M", "cpu")
    assert models.tier == "test" and models.sdf is not None and models.encoder.grid_dim == 32
    assert "base40M" in models.describe()


def test_wrong_or_missing_checkpoint_is_refused_clearly(tiny_point_e, tmp_path):
    import shutil

    from pipelines import UserInputError
    from pipelines.core.priors.point_e import load_point_e

    bad = tmp_path / "bad"
    shutil.copytree(tiny_point_e, bad)
    # base_40m.pt replaced by the textvec model's weights: other shapes, other names
    shutil.copy(bad / "base_40m_textvec.pt", bad / "base_40m.pt")
    with pytest.raises(UserInputError, match=r"base_40m\.pt does not hold Point-E's base40M weights.*missing"):
        load_point_e(str(bad), "base40M")
    state = torch.load(bad / "upsample_40m.pt", weights_only=True)
    state["cond_point_proj.weight"] = torch.zeros(32, 3)
    torch.save(state, bad / "upsample_40m.pt")
    with pytest.raises(UserInputError, match=r"cond_point_proj.weight: \(32, 3\) in the file, \(32, 6\) expected"):
        load_point_e(str(bad), "upsample")
    (bad / "sdf.pt").unlink()
    with pytest.raises(UserInputError, match=r"has no sdf\.pt.*openaipublic"):
        load_point_e(str(bad), "sdf")
    (bad / "base_1b.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="not a PyTorch checkpoint"):
        load_point_e(str(bad), "base1B")


# ----------------------------------------------------------------------------------------------- the method
@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from pipelines.core.priors.testing import tiny_stable_diffusion

    return tiny_stable_diffusion(tmp_path_factory.mktemp("sd"))


def _object_png(path):
    import numpy as np
    from PIL import Image

    img = np.full((64, 64, 4), 0, np.uint8)
    img[16:48, 20:44] = (200, 40, 40, 255)
    Image.fromarray(img).save(path)
    return path


def test_pointe_prompt_through_a_view_streams_and_exports(tiny_point_e, tiny_sd, tmp_path):
    from pipelines import Preview, Progress, run_to_completion
    from pipelines.pointe import PointEConfig, run

    cfg = PointEConfig(prompt="a red chair", checkpoints=str(tiny_point_e), text_to_image=str(tiny_sd),
                       view_steps=2, steps=4, preview_every=2, grid_size=16, preview_size=32, out_dir=str(tmp_path),
                       device="cpu")
    events = []
    done = run_to_completion(run(cfg), events.append)
    previews = [e for e in events if isinstance(e, Preview)]
    assert "view" in previews[0].images and previews[0].images["view"].shape == (16, 16, 3)
    clouds = [e for e in previews if "points" in e.images]
    assert len(clouds) == 4 and clouds[-1].images["points"].shape == (32, 32, 3)
    assert {e.stage for e in events if isinstance(e, Progress)} == {"base", "upsample"}
    names = {Path(a.path).name for a in done.artifacts}
    assert {"view.png", "points.ply", "run.json"} <= names
    import trimesh

    pts = trimesh.load(tmp_path / "points.ply")
    assert len(pts.vertices) == 64 + 192 and pts.colors.shape[0] == 256  # 1024 + 3072 in the released sizes
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["tier"] == "test" and "base40M" in info["models"]
    assert done.metrics["points"] == 256 and done.metrics["base_seconds"] > 0


def test_pointe_image_and_textvec_runs(tiny_point_e, tmp_path):
    from pipelines import run_to_completion
    from pipelines.pointe import PointEConfig, run

    common = dict(checkpoints=str(tiny_point_e), steps=2, preview_every=8, preview_size=16, device="cpu",
                  grid_size=12)
    done = run_to_completion(run(PointEConfig(image=str(_object_png(tmp_path / "obj.png")), upsample=False,
                                              out_dir=str(tmp_path / "a"), **common)))
    assert done.metrics["points"] == 64
    done = run_to_completion(run(PointEConfig(prompt="a lamp", base_model="base40M-textvec", mesh=False,
                                              out_dir=str(tmp_path / "b"), **common)))
    assert done.metrics["points"] == 256 and not list((tmp_path / "b").glob("mesh*"))


def test_pointe_bad_inputs(tiny_point_e, tmp_path):
    import shutil

    from pipelines import UserInputError, run_to_completion
    from pipelines.pointe import PointEConfig, run

    def go(**kw):
        run_to_completion(run(PointEConfig(device="cpu", steps=1, out_dir=str(tmp_path / "o"), **kw)))

    with pytest.raises(UserInputError, match="write a prompt or give an image"):
        go(prompt="  ", checkpoints=str(tiny_point_e))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(UserInputError, match="not an image"):
        go(image=str(tmp_path / "notes.png"), checkpoints=str(tiny_point_e))
    from PIL import Image

    Image.new("RGB", (64, 64), (250, 250, 250)).save(tmp_path / "blank.png")
    with pytest.raises(UserInputError, match="no object"):
        go(image=str(tmp_path / "blank.png"), checkpoints=str(tiny_point_e))
    partial = tmp_path / "partial"
    shutil.copytree(tiny_point_e, partial)
    (partial / "upsample_40m.pt").unlink()
    with pytest.raises(UserInputError, match=r"has no upsample_40m\.pt.*openaipublic"):
        go(prompt="a cup", checkpoints=str(partial), base_model="base40M-textvec")
    with pytest.raises(UserInputError, match=r"no Point-E checkpoint folder at .*base_40m\.pt"):
        go(prompt="a cup", checkpoints=str(tmp_path / "nowhere"))
    with pytest.raises(UserInputError, match="reads text only"):
        go(image=str(_object_png(tmp_path / "o.png")), checkpoints=str(tiny_point_e), base_model="base40M-textvec")


def test_pointe_cli(tiny_point_e, tmp_path, capsys):
    from pipelines.__main__ import main

    rc = main(["pointe", "--checkpoints", str(tiny_point_e), "--base-model", "base40M-textvec", "--prompt", "a cup",
               "--steps", "2", "--no-upsample", "--grid-size", "12", "--preview-size", "16", "--device", "cpu",
               "--out-dir", str(tmp_path)])
    assert rc == 0 and (tmp_path / "points.ply").is_file() and (tmp_path / "mesh.glb").is_file()
    assert main(["pointe", "--prompt", "", "--checkpoints", str(tiny_point_e), "--device", "cpu", "--out-dir",
                 str(tmp_path / "empty")]) == 2
    assert "write a prompt" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- the tab
def test_tab_maps_inputs_and_shows_the_final_cloud(monkeypatch, tmp_path):
    pytest.importorskip("gradio")
    import sys
    import types

    import numpy as np

    from gen3d_app.tabs import pointe as tab
    from pipelines import PIPELINES, Artifact, ArtifactReady, Done, PipelineSpec, Preview, Progress, UserInputError
    from pipelines.core.export import save_point_cloud
    from pipelines.core.geometry import PointCloud
    from pipelines.pointe import PointEConfig

    assert set(tab.PRESETS) == {"custom"} | set(PointEConfig.PRESETS)
    from PIL import Image

    models = tmp_path / "roots" / "point-e"
    models.mkdir(parents=True)
    monkeypatch.setenv("GEN3D_MODEL_ROOTS", str(tmp_path / "roots"))
    args = dict(checkpoints=f" {models} ", base_model="base300M", text_to_image="", guidance_scale=2.5, steps=10,
                seed=3, upsample=False, mesh=True, grid_size=64)
    cfg = tab.make_config(PointEConfig, " a vase ", None, **args)
    assert (cfg.prompt, cfg.image, cfg.checkpoints, cfg.base_model, cfg.guidance_scale, cfg.steps, cfg.upsample,
            cfg.grid_size, cfg.text_to_image) == ("a vase", "", str(models), "base300M", 2.5, 10, False, 64,
                                                  PointEConfig.text_to_image)
    picture = tmp_path / "x.png"
    Image.new("RGB", (8, 8), "red").save(picture)
    assert tab.make_config(PointEConfig, "", str(picture), **args).image == str(picture)
    with pytest.raises(UserInputError, match="prompt"):
        tab.make_config(PointEConfig, "  ", None, **args)
    with pytest.raises(UserInputError, match="not a model this app may load"):  # a server path outside the roots
        tab.make_config(PointEConfig, "a vase", None, **dict(args, checkpoints="/etc"))
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(UserInputError, match="not an image"):
        tab.make_config(PointEConfig, "", str(tmp_path / "notes.txt"), **args)
    monkeypatch.setenv("GEN3D_TINY", "1")
    assert tab.make_config(PointEConfig, "a cup", None, **args).steps == tab.TINY["steps"]
    monkeypatch.delenv("GEN3D_TINY")
    assert "Point-E" in tab.models_note() or "Models" in tab.models_note()

    def fake_run(cfg):  # what the real pipeline yields, in miniature
        yield Progress(4, 8, {}, stage="base")
        yield Preview(4, {"points": np.zeros((8, 8, 3), np.uint8), "view": np.ones((8, 8, 3), np.uint8)})
        xyz = torch.rand(50, 3) - 0.5
        ply = save_point_cloud(PointCloud(xyz, torch.rand(50, 3)), Path(cfg.out_dir) / "points.ply")
        art = Artifact("points", str(ply), "points")
        yield ArtifactReady(art)
        yield Done([art], {"points": 50.0}, 0.1)

    mod = types.ModuleType("fake_pointe")
    mod.CONFIG, mod.run = PointEConfig, fake_run
    monkeypatch.setitem(sys.modules, "fake_pointe", mod)
    monkeypatch.setitem(PIPELINES, "pointe", PipelineSpec("Point-E", "fake_pointe", "fake"))
    monkeypatch.setenv("GEN3D_OUTPUTS", str(tmp_path / "sessions"))
    from gen3d_app import widgets

    comps = {n: object() for n in ("status", "model3d", "files", "metrics", "image:view", "image:points")}
    files, cloud = comps["files"], object()
    comps["files"] = files
    handler = tab.wrap_handler(widgets.make_handler("pointe", tab.make_config, comps, tab.PREVIEW_KEYS), files, cloud)
    ups = list(handler(types.SimpleNamespace(session_hash="s1"), prompt="a cup", image=None, **args))
    assert any(u.get(comps["image:points"]) is not None for u in ups if isinstance(u, dict))
    figs = [u[cloud] for u in ups if isinstance(u, dict) and u.get(cloud) is not None]
    assert figs and len(figs[-1].data[0].x) == 50 and figs[-1].data[0].marker.color[0].startswith("rgb(")


def test_embedded_tier_folder_format_loads_and_runs(tmp_path, tiny_sd, monkeypatch):
    """The format the embedded tier ships in (point_e's docstring): int8 prior folders per model, conditioned on
    the embedded scorer's space (a stand-in scorer here; the shipped one loads in ~12 s)."""
    from pipelines import run_to_completion
    from pipelines.core.priors import embedded
    from pipelines.core.priors.point_e import tier_of
    from pipelines.core.priors.prior_folder import save_prior
    from pipelines.pointe import PointEConfig, run

    small = dict(width=32, layers=1, heads=4)
    configs = {
        "base": dict(pd.MODEL_CONFIGS["base40M-imagevec"], **small, clip_dim=8, n_ctx=32),
        "upsample": dict(pd.MODEL_CONFIGS["upsample"], **small, name="UpsamplePointDiffusionTransformer", n_ctx=64,
                         cond_ctx=32),
        "sdf": dict(pd.MODEL_CONFIGS["sdf"], width=16, encoder_layers=1, decoder_layers=1),
    }
    folder = tmp_path / "pointe"
    for name, cfg in configs.items():
        save_prior(folder / name, f"pointe-{name}", pd.build_model(cfg), {"model": cfg, "condition": "scorer"},
                   {"data": "test"}, dtype="int8")

    monkeypatch.setattr(embedded, "load_embedded_scorer", lambda device, dtype="auto": StandInScorer(16))
    assert tier_of(str(folder)) == "embedded"
    cfg = PointEConfig(prompt="a chair", checkpoints=str(folder), text_to_image=str(tiny_sd), view_steps=2, steps=2,
                       grid_size=12, preview_size=16, device="cpu", out_dir=str(tmp_path / "out"))
    done = run_to_completion(run(cfg))
    assert done.metrics["points"] == 96 and done.metrics["mesh_faces"] > 0
    assert json.loads((tmp_path / "out" / "run.json").read_text())["tier"] == "embedded"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_and_graphs_agree_with_fp32(tiny_point_e, tmp_path):
    """On CUDA the fast paths (bfloat16 weights under autocast; torch.compile with CUDA graphs) give the float32
    cloud of the same seed, within bfloat16's precision."""
    import trimesh

    from pipelines import run_to_completion
    from pipelines.pointe import PointEConfig, run

    clouds = {}
    for name, kw in {"fp32": dict(precision="float32"), "bf16": dict(precision="bfloat16"),
                     "graphs": dict(precision="bfloat16", compile="reduce-overhead")}.items():
        out = tmp_path / name
        cfg = PointEConfig(image=str(_object_png(tmp_path / "o.png")), checkpoints=str(tiny_point_e), steps=8,
                           grid_size=32, device="cuda", out_dir=str(out), **kw)
        done = run_to_completion(run(cfg))
        assert done.metrics["peak_gpu_gb"] > 0
        clouds[name] = torch.tensor(trimesh.load(out / "points.ply").vertices)
    assert (clouds["bf16"] - clouds["fp32"]).abs().mean() < 0.02
    assert (clouds["graphs"] - clouds["bf16"]).abs().mean() < 0.01


def test_embedded_view_framing_matches_the_training_renders(tmp_path):
    """An upload is framed as the embedded base's renders (object over 0.73 of the side), the single-view
    model's as its own (0.86): the span of the prepared object is measured, not assumed."""
    import numpy as np

    from pipelines.core.single_view_net import prepare_image
    from pipelines.pointe import EMBEDDED_VIEW_MARGIN

    def span(margin):
        img = prepare_image(_object_png(tmp_path / "obj.png"), 128, margin)
        ys, xs = np.nonzero((img < 0.9).any(-1).numpy())
        return (max(np.ptp(ys), np.ptp(xs)) + 1) / 128

    assert abs(span(EMBEDDED_VIEW_MARGIN) - 0.735) < 0.03
    assert abs(span(0.08) - 0.86) < 0.03
