"""Single-view reconstruction on CPU: the data builder on two tiny meshes, the ResNet, training steps, the
checkpoint round trip and inference on an example image, the CLI, the tab's wiring and bad inputs."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines import PIPELINES, UserInputError
from pipelines.events import Done, Log, Preview, Progress, run_to_completion
from pipelines.core.training import schedule_progress
from pipelines.single_view import SHIPPED_MODEL, SingleViewConfig, run
from pipelines.train.single_view_data import build, built_records
from pipelines.core.shape_packs import from_view, load_packs, to_view
from pipelines.core.single_view_net import SingleViewModel, load_checkpoint, prepare_image, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "assets" / "single_view" / "examples").glob("*.png"))
MINI = ROOT / "assets" / "single_view" / "mini.npz"
TINY_NET = dict(image_size=32, width=8, hidden=32, n_points=128, ico_level=2, gt_points=256, mixed_precision=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two tiny meshes (a 1 x 0.6 x 0.4 box and a cylinder) through the builder, with its packs."""
    import trimesh

    meshes = tmp_path_factory.mktemp("meshes")
    trimesh.creation.box(extents=(1.0, 0.6, 0.4)).export(meshes / "box.obj")
    trimesh.creation.cylinder(radius=0.3, height=0.8, sections=16).export(meshes / "can.obj")
    root = tmp_path_factory.mktemp("data")
    records = build(root, sources="", mesh_dir=str(meshes), log=lambda *_: None, views=3, size=32, resolution=16,
                    n_points=512, ssaa=1)
    return root, records


def test_builder_writes_renders_grids_samples_and_a_pack(built):
    root, records = built
    assert sorted(r["id"] for r in records) == ["mesh-box", "mesh-can"]
    with np.load(root / "shapes" / "mesh-box.npz") as z:
        assert z["images"].shape == (3, 32, 32, 4) and z["images"].dtype == np.uint8
        alpha = z["images"][..., 3]
        assert alpha.max() == 255 and alpha[:, 0, :].max() == 0  # an object, with background around it
        assert z["c2w"].shape == (3, 4, 4) and z["occupancy"].shape == (3, 16 ** 3 // 8)
        pts = z["points"]
        # Canonical frame: the longest side is 1, so the box is 1 x 0.6 x 0.4 and its samples lie on its faces.
        assert np.allclose(np.abs(pts).max(0), [0.5, 0.3, 0.2], atol=1e-4)
        on_face = np.isclose(np.abs(pts), [0.5, 0.3, 0.2], atol=1e-4).any(-1)
        assert on_face.all()
        # Each view's grid is the box seen from that view: cells whose centres are well inside are solid,
        # cells well outside are empty (carving + surface cells, checked against the analytic box).
        from pipelines.core.shapes import cell_centers

        centers = cell_centers(16).reshape(-1, 3).double()
        margin = 1.5 / 16
        for k in range(3):
            occ = torch.from_numpy(np.unpackbits(z["occupancy"][k])[:16 ** 3].astype(bool))
            theta, scale, center = float(z["view_theta"][k]), float(z["view_scale"][k]), z["view_center"][k]
            canon = from_view(centers, theta, scale, center.astype(np.float64)).numpy()
            depth_in = (np.array([0.5, 0.3, 0.2]) - np.abs(canon)).min(-1)  # > 0 inside the box
            cell = 1 / 16 / scale  # a view-frame cell in canonical units
            assert occ[torch.from_numpy(depth_in > cell)].all()
            assert not occ[torch.from_numpy(depth_in < -margin / scale)].any()
            # The view frame fits the unit box: rotated points span exactly 1 along their longest side.
            vp = to_view(pts.astype(np.float64), theta, scale, center)
            assert (vp.max(0) - vp.min(0)).max() == pytest.approx(1.0, abs=0.02)
    data = load_packs(sorted((root / "pack").glob("*.npz")), image_size=32)
    assert len(data) == 2 and data.images.shape == (2, 3, 3, 32, 32) and data.occupancy.shape == (2, 3, 16, 16, 16)
    occ, pts = data.targets(torch.tensor([0, 1]), torch.tensor([2, 0]))
    assert occ.shape == (2, 16, 16, 16) and pts.abs().max() <= 0.5 + 1e-3
    # True normals travel in the pack and turn with each view: the box's stay axis-aligned in its view frames
    # only up to the view's turn about z, so check they are unit and that z normals stay z normals.
    nrm = data.target_normals(torch.tensor([0, 1]), torch.tensor([2, 0]))
    assert nrm.shape == pts.shape and torch.allclose(nrm.norm(dim=-1), torch.ones(2, pts.shape[1]), atol=1e-2)
    canon = data.normals[0]
    assert torch.allclose(nrm[0][:, 2], canon[:, 2]) and not torch.allclose(nrm[0][:, :2], canon[:, :2], atol=1e-2)


def test_builder_is_restartable_and_splits_by_shape(built, tmp_path):
    root, records = built
    stamp = (root / "shapes" / "mesh-box.npz").stat().st_mtime_ns
    (root / "shapes" / ".mesh-can.tmp.npz").write_bytes(b"half-written")  # a killed worker's leftover
    again = build(root, sources="", mesh_dir=str(Path(records[0]["path"]).parent), log=lambda *_: None, pack=False,
                  views=3, size=32, resolution=16, n_points=512, ssaa=1)
    assert (root / "shapes" / "mesh-box.npz").stat().st_mtime_ns == stamp  # finished shapes are not redone
    assert len(again) == 2 and len(built_records(root)) == 2
    from pipelines.train.single_view_data import ShapeSource

    ids = [f"sh3d-x{i}" for i in range(300)]
    splits = [ShapeSource(id=i, name=i, source="sh3d", license="CC0").split for i in ids]
    assert 0.05 < splits.count("test") / len(ids) < 0.16  # about one in ten held out, by id alone
    assert splits == [ShapeSource(id=i, name="other", source="folder", license="").split for i in ids]


def test_resnet18_matches_torchvision_layout_and_loads_its_weights(tmp_path):
    from pipelines.core.resnet import ResNet18, load_torchvision_weights

    assert sum(p.numel() for p in ResNet18().parameters()) == 11_689_512 - 513_000  # torchvision's minus fc
    small = ResNet18(width=8)
    state = {**small.state_dict(), "fc.weight": torch.zeros(1000, 64), "fc.bias": torch.zeros(1000)}
    torch.save(state, tmp_path / "resnet18.pth")
    fresh = ResNet18(width=8).eval()
    assert load_torchvision_weights(fresh, tmp_path / "resnet18.pth") == ["fc.weight", "fc.bias"]
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(fresh(x), small.eval()(x)) and fresh(x).shape == (2, 64)
    with pytest.raises(ValueError, match="not torchvision"):
        load_torchvision_weights(ResNet18(width=16), tmp_path / "resnet18.pth")


def test_training_steps_lower_the_loss(tmp_path):
    cfg = SingleViewConfig(data=str(MINI), sources="all", steps=40, batch_size=8, lr=2e-3, photometric=0.5,
                           preview_every=20, device="cpu", out_dir=str(tmp_path), eval_views=1, **TINY_NET)
    events = list(run(cfg))
    done = events[-1]
    assert isinstance(done, Done)
    curve = [e.losses for e in events if isinstance(e, Progress)]
    assert len(curve) == 4 and {"voxels_bce", "points_cd", "mesh_cd", "laplacian"} <= set(curve[0])
    for key in ("loss", "voxels_bce", "points_cd", "mesh_cd"):
        assert curve[-1][key] < curve[0][key], (key, [c[key] for c in curve])
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews and set(previews[-1].images) == {"input", "voxels", "points", "mesh"}
    assert {"voxels_iou", "points_f1@0.01", "mesh_f1@0.05", "voxels_cd", "mesh_self_intersection",
            "mesh_edge_spread"} <= set(done.metrics)
    assert "mesh_normal_consistency" not in done.metrics  # the shipped mini pack has no true normals
    assert {"mesh_precision@0.05", "mesh_recall@0.02", "points_recall@0.05"} <= set(done.metrics)
    assert done.metrics["schedule_end"] == 1.0  # no time cap: the schedules ended at the last step
    assert all(0 <= done.metrics[k] <= 1 for k in done.metrics if "f1" in k or "iou" in k)
    kinds = {a.kind for a in done.artifacts}
    assert {"checkpoint", "voxels", "points", "mesh", "image"} <= kinds
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["command"].startswith("python -m pipelines single_view") and "--steps 40" in manifest["command"]
    assert manifest["metrics"]["steps"] == 40 and "CC" in (tmp_path / "model" / "CREDITS.md").read_text()
    assert manifest["scored_on"] == "6 held-out shapes" and manifest["data"]["heldout_shapes"] == 6
    assert manifest["data"]["train_shapes"] == manifest["data"]["train_entries"] == 16
    assert manifest["inference"] == {"mirror_heads": "points", "mesh_from": "icosphere",  # how scores were predicted
                                     "mesh_fit_steps": 0,
                                     "mesh_fit_reg": 0.3, "mesh_fit_recall": 3.0, "mesh_fit_lr": 0.002,
                                     "voxel_threshold": 0.5, "voxel_point_threshold": 0.0, "point_jitters": 0}


def test_weight_decay_shrinks_the_weights(tmp_path):
    """weight_decay > 0 trains with AdamW's decoupled decay: the weights shrink."""
    norms = []
    for wd in (0.0, 1e4):
        out = tmp_path / str(wd)
        run_to_completion(run(SingleViewConfig(data=str(MINI), sources="all", steps=3, batch_size=4, lr=1e-3,
                                               weight_decay=wd, preview_every=100, device="cpu", out_dir=str(out),
                                               eval_views=1, **TINY_NET)))
        model = load_checkpoint(out / "model")[0]
        norms.append(sum(float(p.detach().float().norm()) for n, p in model.named_parameters() if n.endswith("weight")))
    assert norms[1] < 0.9 * norms[0], norms  # Adam alone moves them by far less at this warm-up rate


def test_ema_update_is_polyak_averaging_after_a_warm_up():
    from pipelines.core.training import ema_update

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        for p in ema.parameters():
            p.fill_(0.0)
        model[1].running_mean.fill_(2.0)
        model[1].num_batches_tracked.fill_(7)
    ema_update(ema, model, 0.99, step=0)  # warm-up: decay 1/10, not 0.99
    assert all(torch.allclose(p, torch.full_like(p, 0.9)) for p in ema.parameters())
    assert torch.allclose(ema[1].running_mean, torch.full((2,), 1.8)) and int(ema[1].num_batches_tracked) == 7
    ema_update(ema, model, 0.99, step=10_000)  # past the warm-up: the decay asked for
    assert all(torch.allclose(p, torch.full_like(p, 0.99 * 0.9 + 0.01)) for p in ema.parameters())


def test_ema_decay_scores_and_exports_the_averaged_weights(tmp_path):
    weights = {}
    for decay in (0.0, 0.9):
        out = tmp_path / str(decay)
        events = list(run(SingleViewConfig(data=str(MINI), sources="all", steps=3, batch_size=4, lr=1e-2,
                                           ema_decay=decay, weights_format="float32", preview_every=100, device="cpu",
                                           out_dir=str(out), eval_views=1, **TINY_NET)))
        averaged = any(isinstance(e, Log) and "moving average (decay 0.9)" in e.message for e in events)
        assert averaged == bool(decay)
        weights[decay] = load_checkpoint(out / "model")[0].state_dict()
    # the same seed trains the same weights; the export differs only by the averaging
    assert any(not torch.equal(weights[0.0][k], weights[0.9][k]) for k in weights[0.0])
    with pytest.raises(UserInputError, match="ema_decay"):
        run_to_completion(run(SingleViewConfig(ema_decay=1.0, data=str(MINI), device="cpu", out_dir=str(tmp_path))))


def test_scores_on_training_shapes_say_so(tmp_path):
    # No held-out shapes from the named sources: scoring falls back to training shapes, and the manifest says so.
    cfg = SingleViewConfig(data=str(MINI), sources="all", eval_sources="no-such-source", steps=2, batch_size=2,
                           heads="voxels", device="cpu", out_dir=str(tmp_path), eval_views=1, **TINY_NET)
    events = list(run(cfg))
    assert any(isinstance(e, Log) and e.level == "warning" and "training shapes" in e.message for e in events)
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["scored_on"].endswith("training shapes (no held-out shapes in the data)")
    assert manifest["data"]["heldout_shapes"] == 0 and manifest["metrics_note"].startswith("scores on training")


def test_one_head_at_a_time(tmp_path):
    cfg = SingleViewConfig(data=str(MINI), sources="all", steps=3, batch_size=2, heads="points", device="cpu",
                           out_dir=str(tmp_path), eval_views=1, export=False, **TINY_NET)
    done = run_to_completion(run(cfg))
    assert "points_f1@0.01" in done.metrics and "voxels_iou" not in done.metrics and "mesh_cd" not in done.metrics


@pytest.mark.parametrize("fmt", ["int8", "float16"])
def test_checkpoint_round_trip_and_inference_on_an_example(fmt, tmp_path):
    assert EXAMPLES, "assets/single_view/examples is empty"
    torch.manual_seed(0)
    model = SingleViewModel(**{k: TINY_NET[k] for k in ("image_size", "width", "hidden", "n_points", "ico_level")})
    model.eval()
    # Non-trivial BN statistics and mesh offsets, so a wrong load shows up in the outputs.
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            m.running_mean.uniform_(-0.1, 0.1)
    torch.nn.init.normal_(model.mesh_head[-1].weight, std=0.01)
    save_checkpoint(model, tmp_path / "ckpt", fmt, manifest={"data": {}}, credits_meta=None)
    assert all(p.stat().st_size < 16 * 2 ** 20 for p in (tmp_path / "ckpt").iterdir())
    from pipelines.core.single_view_net import _decode, _encode

    rows = torch.randn(64, 128) * torch.logspace(-3, 1, 64)[:, None]  # rows of very different sizes
    back = _decode(_encode(rows, fmt))
    rel = ((back - rows).abs().amax(1) / rows.abs().amax(1)).max()
    assert float(rel) <= (0.5 / 127 + 1e-6 if fmt == "int8" else 1e-3)  # half a step of each row's own scale
    loaded, info = load_checkpoint(tmp_path / "ckpt")
    x = prepare_image(EXAMPLES[0], model.image_size).permute(2, 0, 1)[None]
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for k in ("voxels", "points", "mesh"):
        err = float((a[k] - b[k]).abs().max() / a[k].abs().max())
        assert err < (0.05 if fmt == "int8" else 0.01), (k, err)
    # A tampered shard is refused.
    shard = next((tmp_path / "ckpt").glob("weights-*.pt"))
    shard.write_bytes(shard.read_bytes()[:-8] + b"00000000")
    with pytest.raises(UserInputError, match="sha256"):
        load_checkpoint(tmp_path / "ckpt")
    # Inference through the pipeline (predict mode) from a checkpoint folder: the three outputs.
    save_checkpoint(model, tmp_path / "ckpt", fmt)
    cfg = SingleViewConfig(mode="predict", image=str(EXAMPLES[0]), checkpoint=str(tmp_path / "ckpt"), device="cpu",
                           out_dir=str(tmp_path / "out"))
    done = run_to_completion(run(cfg))
    names = {Path(a.path).name for a in done.artifacts}
    assert {"voxels.glb", "points.ply", "mesh.glb", "input.png"} <= names or (
        "voxels.glb" not in names and done.metrics["voxels_solid"] == 0)
    import trimesh

    mesh = trimesh.load(tmp_path / "out" / "mesh.glb", force="mesh")
    assert len(mesh.faces) == 20 * 4 ** TINY_NET["ico_level"]
    # the cloud of the image and of its mirror (mirror_heads="points", the default)
    assert len(trimesh.load(tmp_path / "out" / "points.ply").vertices) == 2 * TINY_NET["n_points"]


@pytest.mark.skipif(not (SHIPPED_MODEL / "config.json").is_file(), reason="no trained checkpoint shipped yet")
def test_shipped_checkpoint_reconstructs_the_examples(tmp_path):
    # Needs the shipped file: assets/single_view/model (trained on a GPU; see its manifest.json).
    from pipelines.core.shape_losses import voxel_iou

    done = run_to_completion(run(SingleViewConfig(mode="predict", image=str(EXAMPLES[0]), device="cpu",
                                                  out_dir=str(tmp_path))))
    assert {"voxels.glb", "points.ply", "mesh.glb"} <= {Path(a.path).name for a in done.artifacts}
    manifest = json.loads((SHIPPED_MODEL / "manifest.json").read_text())
    assert manifest["metrics"]["voxels_iou"] > 0.2 and {"data", "command", "license"} <= set(manifest)
    assert all(p.stat().st_size < 16 * 2 ** 20 for p in SHIPPED_MODEL.iterdir())
    # The trained model beats the answers that ignore the image, on held-out mini-set views: every cell
    # occupied, and the mean training shape (view frames) thresholded at whichever level scores best here.
    model, _ = load_checkpoint(SHIPPED_MODEL)
    data = load_packs([MINI], image_size=model.image_size)
    test = [i for i, s in enumerate(data.splits) if s == "test"]
    train = [i for i, s in enumerate(data.splits) if s == "train"]
    si, vi = torch.tensor(test), torch.zeros(len(test), dtype=torch.long)
    occ, _ = data.targets(si, vi)
    with torch.no_grad():
        pred = torch.sigmoid(model(data.images[si, vi].float() / 255, ("voxels",))["voxels"]) > 0.5
    mean_shape = data.occupancy[train].float().mean((0, 1))
    baselines = {"all occupied": float(voxel_iou(torch.ones_like(occ), occ).mean())}
    baselines["mean training shape"] = max(float(voxel_iou((mean_shape > q).expand_as(occ), occ).mean())
                                           for q in torch.linspace(0.05, 0.95, 19).tolist())
    iou = float(voxel_iou(pred, occ).mean())  # measured: 0.527 against 0.226 (all) and 0.312 (mean shape)
    assert iou > max(baselines.values()) + 0.1, (iou, baselines)


def test_bad_inputs_are_user_errors(tmp_path):
    from PIL import Image

    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(UserInputError, match="not an image"):
        prepare_image(tmp_path / "notes.png", 32)
    Image.new("RGB", (9000, 16), "white").save(tmp_path / "wide.png")
    with pytest.raises(UserInputError, match="too large"):
        prepare_image(tmp_path / "wide.png", 32)
    Image.new("RGB", (64, 64), (250, 250, 250)).save(tmp_path / "blank.png")
    with pytest.raises(UserInputError, match="no object"):
        prepare_image(tmp_path / "blank.png", 32)
    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    with pytest.raises(UserInputError, match="background"):
        prepare_image(tmp_path / "noise.png", 32)
    # A photo-like input: a dark disc on a light grey background, no alpha -> cropped and centred on white.
    yy, xx = np.mgrid[:100, :160]
    img = np.full((100, 160, 3), 230, np.uint8)
    img[(yy - 40) ** 2 + (xx - 110) ** 2 < 20 ** 2] = (30, 60, 200)
    Image.fromarray(img).save(tmp_path / "disc.jpg")
    crop = prepare_image(tmp_path / "disc.jpg", 32)
    assert crop.shape == (32, 32, 3) and float(crop[0, 0].min()) > 0.95 and float(crop[16, 16, 2]) > 0.6
    with pytest.raises(UserInputError, match="no trained checkpoint"):
        run_to_completion(run(SingleViewConfig(mode="predict", image=str(tmp_path / "disc.jpg"),
                                               checkpoint=str(tmp_path / "none"), device="cpu",
                                               out_dir=str(tmp_path / "o"))))
    with pytest.raises(UserInputError, match="heads"):
        run_to_completion(run(SingleViewConfig(heads="voxels,nope", data=str(MINI), device="cpu",
                                               out_dir=str(tmp_path / "o2"))))
    with pytest.raises(UserInputError, match="no pack files"):
        run_to_completion(run(SingleViewConfig(data=str(tmp_path / "missing.npz"), device="cpu",
                                               out_dir=str(tmp_path / "o3"))))
    with pytest.raises(UserInputError, match="photometric is the share"):
        run_to_completion(run(SingleViewConfig(photometric=1.5, data=str(MINI), device="cpu",
                                               out_dir=str(tmp_path / "o4"))))


def _cli(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pipelines", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


def test_cli_help_data_subcommand_and_predict(tmp_path):
    assert "single_view" in PIPELINES and PIPELINES["single_view"].load()[0] is SingleViewConfig
    top = _cli("single_view", "--help")
    assert top.returncode == 0 and "--train-fraction" in top.stdout and "single_view data" in top.stdout
    data = _cli("single_view", "data", "build", "--help")
    assert data.returncode == 0 and "--workers" in data.stdout and "--limit" in data.stdout
    model = SingleViewModel(**{k: TINY_NET[k] for k in ("image_size", "width", "hidden", "n_points", "ico_level")})
    save_checkpoint(model, tmp_path / "ckpt", "int8")
    res = _cli("single_view", "--mode", "predict", "--image", str(EXAMPLES[0]), "--checkpoint", str(tmp_path / "ckpt"),
               "--device", "cpu", "--out-dir", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert str(tmp_path / "out" / "mesh.glb") in res.stdout and str(tmp_path / "out" / "points.ply") in res.stdout
    bad = _cli("single_view", "--mode", "predict", "--image", str(tmp_path / "ckpt" / "config.json"),
               "--checkpoint", str(tmp_path / "ckpt"), "--device", "cpu", "--out-dir", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "not an image" in bad.stderr


def test_tab_inputs_map_to_the_config(monkeypatch):
    pytest.importorskip("gradio")
    from gen3d_app.tabs import single_view as tab

    assert set(tab.PRESETS) == {"custom"} | set(SingleViewConfig.PRESETS)
    cfg = tab.make_config(SingleViewConfig, "predict", str(EXAMPLES[0]), "cpu", 10, ["mesh"], 0)
    assert cfg.mode == "predict" and cfg.image == str(EXAMPLES[0])
    with pytest.raises(UserInputError, match="image"):
        tab.make_config(SingleViewConfig, "predict", None, "cpu", 10, ["mesh"], 0)
    cfg = tab.make_config(SingleViewConfig, "train", None, "cpu", 123, ["voxels", "mesh"], 3)
    assert (cfg.mode, cfg.steps, cfg.heads, cfg.seed, cfg.width) == ("train", 123, "voxels,mesh", 3,
                                                                      SingleViewConfig.PRESETS["cpu"]["width"])
    monkeypatch.setenv("GEN3D_TINY", "1")
    assert tab.make_config(SingleViewConfig, "train", None, "gpu", 500, ["points"], 0).steps == tab.TINY["steps"]
    status = tab.model_status()
    assert ("No trained checkpoint" in status) != (SHIPPED_MODEL / "config.json").is_file()
    assert tab.three_views(None) == (None, None, None)


def test_stretched_copies_are_training_shapes_stretched_along_their_axes(built, tmp_path):
    import dataclasses

    from pipelines.train.mesh_library import STRETCH_RANGE, ShapeSource, load_parts, stretched_copies

    shapes = [ShapeSource(id=f"sh3d-x{i}", name="x", source="sh3d", license="CC0") for i in range(300)]
    copies = stretched_copies(shapes, 2)
    n_train = sum(s.split == "train" for s in shapes)
    assert len(copies) == 2 * n_train and len({c.id for c in copies}) == len(copies)
    assert all(c.split == "train" and c.base_id in {s.id for s in shapes} for c in copies)  # never a held-out one
    assert all(STRETCH_RANGE[0] <= v <= STRETCH_RANGE[1] for c in copies for v in c.stretch)
    assert [c.stretch for c in stretched_copies(shapes, 2)] == [c.stretch for c in copies]  # seeded
    assert len({tuple(c.stretch) for c in copies}) == len(copies)
    # A copy is its original scaled per axis, then back to a longest side of 1: the 1 x 0.6 x 0.4 box at y x 2.
    root, records = built
    box = next(ShapeSource(**{k: r[k] for k in ("id", "name", "source", "license", "path")})
               for r in records if r["id"] == "mesh-box")
    stretched = load_parts(dataclasses.replace(box, id="mesh-box~stretch1", stretch=[1.0, 2.0, 1.0]))
    assert np.allclose(stretched.verts.max(0) - stretched.verts.min(0), [1 / 1.2, 1.0, 0.4 / 1.2])
    # The builder makes them beside the originals (both test meshes are training shapes).
    again = build(tmp_path, sources="", mesh_dir=str(Path(box.path).parent), log=lambda *_: None, pack=False,
                  stretch_copies=1, views=2, size=24, resolution=8, n_points=128, ssaa=1)
    ids = sorted(r["id"] for r in again)
    assert ids == ["mesh-box", "mesh-box~stretch1", "mesh-can", "mesh-can~stretch1"]
    assert all(r["split"] == "train" and (len(r["stretch"]) == 3) == ("~" in r["id"]) for r in again)


@pytest.mark.skipif(not any(Path("/usr/share/sweethome3d/furniture").glob("*.sh3f")),
                    reason="apt-get install sweethome3d-furniture")
def test_sweet_home_3d_catalog_and_one_model():
    from pipelines.train.single_view_data import catalog, load_parts

    shapes = catalog("sh3d")
    assert len(shapes) > 700 and len({s.id for s in shapes}) == len(shapes)
    assert {s.license for s in shapes} == {"CC0", "CC-BY 3.0", "CC-BY 3.0 US"}
    assert all(s.creator for s in shapes if s.license != "CC0")  # CC-BY authors can be credited
    chair = next(s for s in shapes if s.id == "sh3d-blendswap-cc-by-foldingchair")
    parts = load_parts(chair)
    ext = parts.verts.max(0) - parts.verts.min(0)
    assert ext.max() == pytest.approx(1.0) and np.argmax(ext) == 2  # upright: a chair is taller than wide
    assert any(t is not None for t in parts.textures) or len(parts.colors) > 1


def test_photometric_jitter_recolours_a_share_and_keeps_white_and_shape():
    import torch

    from pipelines.core.single_view_batches import photometric_jitter

    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    images = torch.ones(64, 3, 8, 8)
    images[:, :, 2:6, 2:6] = torch.tensor([0.8, 0.3, 0.1])[:, None, None]  # an orange square on white
    out = photometric_jitter(images, 0.5, g())
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out[:, :, 0, 0], images[:, :, 0, 0])  # the white background stays white
    changed = (out - images).abs().amax(dim=(1, 2, 3)) > 1e-3
    assert 16 < int(changed.sum()) < 48  # about half the images recoloured
    assert torch.equal(out, photometric_jitter(images, 0.5, g()))  # seeded
    assert torch.equal(photometric_jitter(images, 0.0, g()), images)
    square = out[changed][:, :, 2:6, 2:6]
    assert (square.std(dim=(2, 3)) < 1e-6).all()  # one colour per image: recoloured, not reshaped


def test_schedules_end_with_whichever_budget_runs_out_first():
    assert schedule_progress(3000, 6000, 10.0, 0.0) == 0.5            # no time cap: steps alone
    assert schedule_progress(6000, 6000, 100.0, 450.0) == 1.0         # a generous cap: the last step ends it
    assert schedule_progress(1000, 6000, 225.0, 450.0) == 0.5         # a tight cap: time ends it
    assert schedule_progress(1000, 6000, 900.0, 450.0) == 1.0
