"""Capture formats (issue 19): nerfstudio/Instant-NGP transforms.json, LLFF poses_bounds.npy, COLMAP text and
binary models, written from the shipped cow scene's known cameras (renders made by project code) and read back;
format detection; corrupt files; the real LLFF fern capture (../shared, skipped without it)."""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.config import UserInputError
from pipelines.core import colmap_io
from pipelines.core.captures import detect_format, load_split, open_capture, read_capture, undistort
from pipelines.core.datasets import HOLDOUT, load_blender

REPO = Path(__file__).resolve().parents[1]
COW = REPO / "assets" / "scenes" / "cow"
FERN = Path(__file__).resolve().parents[2] / "shared" / "data" / "captures" / "fern_llff"
N = 12


@pytest.fixture(scope="module")
def cow():
    """The cow scene's first N training views: (PosedImages, PNG bytes per view)."""
    views = load_blender(COW, "train", max_views=N, background=1.0)
    pngs = [(COW / name).read_bytes() for name in views.names]
    return views, pngs


def _write_images(folder: Path, pngs: list[bytes]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"img_{i:03d}.png" for i in range(len(pngs))]
    for name, data in zip(names, pngs):
        (folder / name).write_bytes(data)
    return names


def _same_cameras(views, truth, idx=None):
    idx = np.arange(len(truth)) if idx is None else idx
    assert torch.allclose(views.c2w, truth.c2w[idx], atol=1e-5), (views.c2w - truth.c2w[idx]).abs().max()
    k = views.intrinsics if views.intrinsics is not None else torch.tensor([[views.fx, views.fy, views.cx, views.cy]])
    assert torch.allclose(k, torch.tensor([[truth.fx, truth.fy, truth.cx, truth.cy]]), atol=1e-5)


def write_nerfstudio(root: Path, truth, pngs, per_frame: bool) -> None:
    names = _write_images(root / "images", pngs)
    k = dict(fl_x=truth.fx, fl_y=truth.fy, cx=truth.cx, cy=truth.cy, w=truth.width, h=truth.height)
    frames = [dict(file_path=f"images/{n}", transform_matrix=truth.c2w[i].tolist(), **(k if per_frame else {}))
              for i, n in enumerate(names)]
    meta = dict(camera_model="OPENCV", frames=frames[::-1], **({} if per_frame else k))  # unordered on purpose
    (root / "transforms.json").write_text(json.dumps(meta))


def write_llff(root: Path, truth, pngs) -> None:
    _write_images(root / "images", pngs)
    c2w = truth.c2w.double().numpy()
    p = np.zeros((len(c2w), 3, 5))
    # LLFF's columns: (down, right, backwards) = (-y, x, z) of the OpenGL camera.
    p[:, :, 0], p[:, :, 1], p[:, :, 2], p[:, :, 3] = -c2w[:, :3, 1], c2w[:, :3, 0], c2w[:, :3, 2], c2w[:, :3, 3]
    p[:, :, 4] = [truth.height, truth.width, truth.fx]
    bounds = np.tile([2.0, 6.0], (len(c2w), 1))
    np.save(root / "poses_bounds.npy", np.concatenate([p.reshape(-1, 15), bounds], 1))


def write_colmap(root: Path, truth, pngs, binary: bool, model="PINHOLE", extra=()) -> None:
    names = _write_images(root / "images", pngs)
    params = [truth.fx, truth.fy, truth.cx, truth.cy] if model in ("PINHOLE", "OPENCV") else \
        [truth.fx, truth.cx, truth.cy]
    cam = colmap_io.ColmapCamera(1, model, truth.width, truth.height, np.array(params + list(extra)))
    images = {i + 1: colmap_io.image_from_c2w(i + 1, truth.c2w[i].double().numpy(), 1, n) for i, n in enumerate(names)}
    xyz = np.random.default_rng(0).normal(size=(50, 3))
    colmap_io.write_model(colmap_io.ColmapModel({1: cam}, images, xyz, np.zeros((50, 3), np.uint8)),
                          root / "sparse" / "0", binary=binary)


@pytest.mark.parametrize("fmt", ["nerfstudio-shared", "nerfstudio-per-frame", "llff", "colmap-text", "colmap-bin"])
def test_formats_round_trip(tmp_path, cow, fmt):
    truth, pngs = cow
    if fmt.startswith("nerfstudio"):
        write_nerfstudio(tmp_path, truth, pngs, per_frame=fmt.endswith("frame"))
    elif fmt == "llff":
        write_llff(tmp_path, truth, pngs)
    else:
        write_colmap(tmp_path, truth, pngs, binary=fmt.endswith("bin"))
    expected = fmt.split("-")[0]
    assert detect_format(tmp_path) == expected
    cap = read_capture(tmp_path, expected)
    assert len(cap) == N
    _same_cameras(load_split(cap, "all"), truth)
    held, train = load_split(cap, HOLDOUT, background=1.0), load_split(cap, "train")
    _same_cameras(held, truth, np.array([0, 8]))
    assert len(train) == N - 2 and not set(train.names) & set(held.names)
    assert torch.allclose(held.images[1], truth.images[8], atol=1 / 255)  # the pixels follow their cameras
    if expected == "llff":
        assert torch.allclose(held.bounds, torch.tensor([[2.0, 6.0]] * 2))
    if expected == "colmap":
        assert cap.xyz.shape == (50, 3)


def test_per_frame_intrinsics_and_downscale(tmp_path, cow):
    truth, pngs = cow
    write_nerfstudio(tmp_path, truth, pngs, per_frame=True)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    for f in meta["frames"]:
        if f["file_path"].endswith("003.png"):
            f["fl_x"] = 2 * truth.fx
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    views = load_split(read_capture(tmp_path, "nerfstudio"), "all", downscale=2)
    assert views.width == truth.width // 2 and views.intrinsics is not None
    assert views.camera(3).fx == pytest.approx(truth.fx) and views.camera(2).fx == pytest.approx(truth.fx / 2)
    # LLFF downscale folders: images_2 is picked for downscale 2, its pixels' intrinsics scaled from hwf.
    llff = tmp_path / "llff"
    write_llff(llff, truth, pngs)
    _write_images(llff / "images_2", [_half(p) for p in pngs])
    shutil.rmtree(llff / "images")
    cap = read_capture(llff, "llff", downscale=2)
    assert cap.paths[0].parent.name == "images_2" and cap.folder_scale == 2
    v = load_split(cap, "all", downscale=2)
    assert v.width == truth.width // 2 and v.fx == pytest.approx(truth.fx / 2)


def _half(png: bytes) -> bytes:
    import io

    img = Image.open(io.BytesIO(png))
    out = io.BytesIO()
    img.resize((img.width // 2, img.height // 2), Image.BOX).save(out, format="PNG")
    return out.getvalue()


def test_colmap_distortion_undistorted_or_refused(tmp_path, cow):
    truth, pngs = cow
    write_colmap(tmp_path, truth, pngs, binary=False, model="OPENCV", extra=(0.2, 0.0, 0.0, 0.0))
    cap = read_capture(tmp_path, "colmap")
    assert cap.distortion is not None and cap.distortion[0, 0] == pytest.approx(0.2)
    views = load_split(cap, "all", max_views=2)
    plain = load_blender(COW, "train", max_views=N, background=1.0).images[0]
    # Barrel distortion (k1 > 0 pushes content outwards): undistorting samples farther out, so it changes the image.
    assert (views.images[0] - plain).abs().mean() > 1e-3
    # An image with zero distortion comes back unchanged.
    assert torch.allclose(undistort(plain, truth.fx, truth.fy, truth.cx, truth.cy, [0, 0, 0, 0]), plain, atol=1e-5)
    fish = tmp_path / "fish"
    write_colmap(fish, truth, pngs, binary=True, model="OPENCV", extra=(0, 0, 0, 0))
    cams = colmap_io.read_model(fish / "sparse" / "0")
    cams.cameras[1].model = "OPENCV_FISHEYE"
    colmap_io.write_model(cams, fish / "sparse" / "0", binary=True)
    with pytest.raises(UserInputError, match="OPENCV_FISHEYE.*undistort"):
        read_capture(fish, "colmap")


def test_quaternions_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[0] >= 0 else -q
        assert np.allclose(colmap_io.rotmat_to_qvec(colmap_io.qvec_to_rotmat(q)), q, atol=1e-9)


@pytest.mark.parametrize("damage", ["truncated-bin", "garbage-text", "missing-image", "unknown-camera"])
def test_corrupt_colmap(tmp_path, cow, damage):
    truth, pngs = cow
    write_colmap(tmp_path, truth, pngs, binary=damage.endswith("bin"))
    model = tmp_path / "sparse" / "0"
    if damage == "truncated-bin":
        (model / "images.bin").write_bytes((model / "images.bin").read_bytes()[:100])
        needle = "images.bin"
    elif damage == "garbage-text":
        (model / "cameras.txt").write_text("1 PINHOLE wide 100 1 2 3 4\n")
        needle = "cameras.txt"
    elif damage == "missing-image":
        (tmp_path / "images" / "img_004.png").unlink()
        needle = "img_004.png"
    else:
        text = (model / "images.txt").read_text().replace(" 1 img_002.png", " 7 img_002.png")
        (model / "images.txt").write_text(text)
        needle = "camera 7"
    with pytest.raises(UserInputError, match=needle):
        read_capture(tmp_path, "colmap")


def test_corrupt_llff(tmp_path, cow):
    truth, pngs = cow
    write_llff(tmp_path, truth, pngs)
    np.save(tmp_path / "poses_bounds.npy", np.zeros((N, 15)))
    with pytest.raises(UserInputError, match=r"poses_bounds.npy has shape \(12, 15\)"):
        read_capture(tmp_path, "llff")
    write_llff(tmp_path, truth, pngs)
    (tmp_path / "images" / "img_000.png").unlink()
    with pytest.raises(UserInputError, match="12 poses but images/ holds 11"):
        read_capture(tmp_path, "llff")
    (tmp_path / "poses_bounds.npy").write_bytes(b"not numpy at all")
    with pytest.raises(UserInputError, match="poses_bounds.npy cannot be read"):
        read_capture(tmp_path, "llff")


def test_open_capture_zip_and_formats(tmp_path, cow):
    truth, pngs = cow
    src = tmp_path / "src"
    write_llff(src, truth, pngs)
    up = tmp_path / "capture.zip"
    with zipfile.ZipFile(up, "w") as zf:
        for f in src.rglob("*"):
            if f.is_file():
                zf.write(f, "fern/" + f.relative_to(src).as_posix())
        zf.writestr("../evil.txt", "x")
    with pytest.raises(UserInputError, match=r"capture.zip: entry '../evil.txt'"):
        open_capture(up, tmp_path / "work")
    with zipfile.ZipFile(up, "w") as zf:
        for f in src.rglob("*"):
            if f.is_file():
                zf.write(f, "fern/" + f.relative_to(src).as_posix())
    root, fmt = open_capture(up, tmp_path / "work")
    assert fmt == "llff" and root.name == "fern"
    with pytest.raises(UserInputError, match="not in the colmap format.*llff"):
        open_capture(src, tmp_path / "w2", "colmap")
    photos = tmp_path / "photos"
    _write_images(photos, pngs[:3])
    assert open_capture(photos, tmp_path / "w3") == (photos, "images")
    with pytest.raises(UserInputError, match="single photo"):
        open_capture(photos / "img_000.png", tmp_path / "w4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="'empty'.*found no scene"):
        open_capture(tmp_path / "empty", tmp_path / "w5")


def test_fern_loads(shared_data):
    """The real LLFF capture: 20 photos at 504x378 (images_8), LLFF's bounds, forward-facing."""
    from pipelines.core.scene_space import choose_space

    shared_data(FERN / "poses_bounds.npy")
    assert detect_format(FERN) == "llff"
    cap = read_capture(FERN, "llff")
    train, held = load_split(cap, "train"), load_split(cap, HOLDOUT)
    assert (len(train), len(held)) == (17, 3) and (train.width, train.height) == (504, 378)
    assert 300 < train.fx < 500  # LLFF's 3.5k focal length at 1/8 size
    assert choose_space(cap.poses)[0] == "forward"
    assert float(train.bounds.min()) > 0


def test_without_pycolmap_the_message_says_how_to_get_it(tmp_path, monkeypatch, cow):
    import sys

    from pipelines.core import sfm

    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap now raises ImportError
    assert not sfm.have_pycolmap()
    _, pngs = cow
    _write_images(tmp_path / "photos", pngs[:4])
    with pytest.raises(UserInputError, match=r"pip install pycolmap==4.2.1"):
        list(sfm.reconstruct(tmp_path / "photos", "images", tmp_path / "cache"))


def test_loaded_capture_cameras_shown_in_the_app(tmp_path, cow):
    """A COLMAP capture through load_scene: the space is chosen and logged, cameras normalised, and the app's
    camera view (stream.cameras_figure) draws its frusta and points; photos uploads become one folder."""
    from gen3d_app import stream, widgets
    from pipelines.core.training import PosedImagesConfig, load_scene, write_cameras
    from pipelines.events import ArtifactReady, Artifact, Log

    truth, pngs = cow
    write_colmap(tmp_path / "cap", truth, pngs, binary=True)
    cfg = PosedImagesConfig(scene=str(tmp_path / "cap"))
    gen, events = load_scene(cfg, COW, tmp_path / "run"), []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        scene = stop.value
    logs = " ".join(e.message for e in events if isinstance(e, Log))
    assert "scene format: colmap" in logs and "scene space: unbounded" in logs  # the cow's cameras circle it
    assert scene.space == "unbounded" and scene.background == 0.0
    radius = torch.cat([scene.train.c2w, scene.val.c2w])[:, :3, 3].norm(dim=-1)
    assert float(radius.max()) == pytest.approx(1.0, abs=1e-4)  # the farthest camera at 1 (mip-NeRF 360)
    path = write_cameras(scene, tmp_path / "cameras.json")
    st = stream.RunState()
    assert "cameras" in st.apply(ArtifactReady(Artifact("cameras", str(path))))[0]
    fig = stream.render(st, {"cameras"})["cameras"]
    names = [t.name for t in fig.data]
    assert names == ["training", "held out", "sparse points"] and f"{N} cameras" in fig.layout.title.text
    photos = [tmp_path / "cap" / "images" / f"img_{i:03d}.png" for i in range(3)]
    folder = Path(widgets.photos_source([str(p) for p in photos]))
    assert sorted(p.name[5:] for p in folder.iterdir()) == [p.name for p in photos]
    assert widgets.photos_source([str(p) for p in photos]) == str(folder)  # same photos, same folder
    with pytest.raises(UserInputError, match="at least 3"):
        widgets.photos_source([str(photos[0])])
    assert widgets.scene_source(None, None, [str(tmp_path / "walk.mp4")]) == str(tmp_path / "walk.mp4")


def test_ndc_rays_meet_at_the_point_they_see():
    """Two cameras' rays through the pixels where one world point projects meet at that point's NDC image."""
    from pipelines.core.rays import pixel_rays
    from pipelines.core.scene_space import ndc_rays

    fx, fy, w, h = 60.0, 55.0, 80, 60
    point = torch.tensor([0.4, -0.3, -5.0])
    ndc = torch.tensor([-2 * fx / w * point[0] / point[2], -2 * fy / h * point[1] / point[2], 1 + 2 / point[2]])
    for shift in ([0.0, 0.0, 0.0], [0.3, 0.2, 0.1]):
        c2w = torch.eye(4)
        c2w[:3, 3] = torch.tensor(shift)
        cam = point - c2w[:3, 3]
        u, v = w / 2 + fx * cam[0] / -cam[2], h / 2 - fy * cam[1] / -cam[2]
        o, d = pixel_rays(c2w[None], u[None], v[None], fx, fy, w / 2, h / 2)
        on, dn = ndc_rays(o, d, fx, fy, w, h)
        t = (ndc[2] - on[0, 2]) / dn[0, 2]
        assert torch.allclose(on[0] + t * dn[0], ndc, atol=1e-5)


def test_ndc_box_holds_every_training_ray():
    """Forward-facing cameras spread sideways (as fern's): in plain NDC the side views' rays leave the [-1, 1]^3 box
    through its sides before reaching the far plane, so the field cannot see what they look at (those pixels
    render black; fern at 30 s on an H200 lost about 10 % of each held-out view this way). With ``ndc_extent``
    every ray stays in the box all the way from z = -1 to z = 1."""
    from pipelines.core.cameras import Camera
    from pipelines.core.rays import camera_rays
    from pipelines.core.scene_space import ndc_extent, ndc_rays

    fx, w, h = 50.0, 64, 48
    c2w = torch.eye(4).repeat(3, 1, 1)
    c2w[:, 0, 3] = torch.tensor([-0.3, 0.0, 0.3])  # near bound at 1.33, as normalize() puts it
    extent = ndc_extent(c2w, fx, fx, w, h)
    assert extent[0] > 1.2 and extent[1] < 1.1
    for ext, ok in (((1.0, 1.0), False), (extent, True)):
        exits = []
        for i in range(3):
            o, d = camera_rays(Camera(c2w[i], fx, fx, w / 2, h / 2, w, h))
            on, dn = ndc_rays(o.reshape(-1, 3), d.reshape(-1, 3), fx, fx, w, h, extent=ext)
            t_far = (1 - on[:, 2]) / dn[:, 2]  # where each ray reaches z = 1
            exits += [on[:, :2], (on + t_far[:, None] * dn)[:, :2]]  # a straight line: both ends in, all in
        assert bool((torch.cat(exits).abs() <= 1).all()) == ok


def test_ndc_colour_sees_world_directions():
    """In NDC every ray of the reference camera points along +z (NDC directions carry almost no view direction):
    the fast field's colour must see the world directions, as the NeRF paper's viewdirs."""
    from pipelines.core.cameras import Camera
    from pipelines.core.rays import camera_rays
    from pipelines.nerf import NerfConfig, build_model, make_renderer

    cfg = NerfConfig(hash_levels=2, hash_log2_size=10, grid_resolution=8, march_steps=32, max_samples=0)
    modules, _, _, grid = build_model(cfg, torch.device("cpu"), 1.0)
    cam = Camera(torch.eye(4), 40.0, 40.0, 16.0, 12.0, 32, 24)
    seen = []
    field = modules["field"]
    forward = field.forward
    field.forward = lambda x, d: (seen.append(d), forward(x, d))[1]
    render, _ = make_renderer(cfg, modules, grid, "forward", cam)
    o, d = camera_rays(cam)
    with torch.no_grad():
        render(o.reshape(-1, 3), d.reshape(-1, 3), torch.zeros(3), False)
    dirs = torch.cat(seen)
    assert len(dirs) and dirs[:, :2].abs().max() > 0.3  # the corners look 22 degrees off the axis


def test_contraction_and_spacing():
    from pipelines.core.scene_space import contract, piecewise_distances

    x = torch.tensor([[0.5, 0, 0], [2.0, 0, 0], [1e6, 0, 0]])
    assert torch.allclose(contract(x), torch.tensor([[0.5, 0, 0], [1.5, 0, 0], [2.0, 0, 0]]), atol=1e-5)
    t = piecewise_distances(torch.linspace(0, 1, 9), 0.05, 1000.0)
    assert t[0] == pytest.approx(0.05) and t[4] == pytest.approx(1.0) and t[-1] == pytest.approx(1000.0, rel=1e-4)
    assert (t[1:] > t[:-1]).all()


def test_unbounded_capture_trains_and_exports(tmp_path, cow):
    """A 360-degree COLMAP capture: NeRF chooses the contracted space, trains, renders a turntable, meshes the
    unit ball; VolSDF trains the same capture with its SDF in a box inside the cameras and the background model behind
    it by default (saying so), or without the background model (warning that the background is then fitted in the
    box)."""
    from pipelines.events import Log, run_to_completion
    from pipelines.nerf import NerfConfig, run
    from pipelines.volsdf import VolSDFConfig
    from pipelines.volsdf import run as run_volsdf

    import io

    truth, _ = cow
    pngs = []  # photos have no alpha: the cow on white, as RGB
    for img in truth.images:
        buf = io.BytesIO()
        Image.fromarray((img.numpy() * 255).round().astype(np.uint8)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    write_colmap(tmp_path / "cap", truth, pngs, binary=False)
    cfg = NerfConfig(scene=str(tmp_path / "cap"), steps=12, downscale=4, batch_rays=128, target_samples=2048,
                     max_samples=4096, hash_levels=4, hash_log2_size=12, grid_resolution=16, march_steps=32,
                     unbounded_samples=32, preview_every=6, eval_views=1, mesh_resolution=16, turntable_frames=2,
                     preview_size=16, out_dir=str(tmp_path / "run"))
    events = []
    done = run_to_completion(run(cfg), on_event=events.append)
    logs = " ".join(e.message for e in events if isinstance(e, Log))
    assert "unbounded space" in logs and np.isfinite(done.metrics["psnr"])
    kinds = {a.kind for a in done.artifacts}
    assert {"cameras", "video", "checkpoint"} <= kinds
    vcfg = VolSDFConfig(scene=str(tmp_path / "cap"), steps=4, downscale=4, batch_rays=64, n_coarse=8, n_fine=4,
                        upsample_levels=1, eikonal_points=32, width=16, hash_levels=2, hash_log2_size=10,
                        target_samples=2048, max_samples=2 ** 13, grid_resolution=16, march_steps=64,
                        eval_views=1, export=False, mesh_resolution=0, out_dir=str(tmp_path / "vrun"))
    vevents = []
    vdone = run_to_completion(run_volsdf(vcfg), on_event=vevents.append)
    assert any(isinstance(e, Log) and "background model: a hash-grid" in e.message for e in vevents)
    assert any(isinstance(e, Log) and e.message.startswith("scene space: unbounded") for e in vevents)
    assert np.isfinite(vdone.metrics["psnr"])
    vevents = []
    run_to_completion(run_volsdf(dataclasses.replace(vcfg, steps=2, background_model="none")), on_event=vevents.append)
    assert any(isinstance(e, Log) and e.level == "warning" and "fits the background inside the SDF's box" in e.message
               for e in vevents)


def test_corrupt_nerfstudio(tmp_path, cow):
    truth, pngs = cow
    write_nerfstudio(tmp_path, truth, pngs, per_frame=False)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["camera_model"] = "OPENCV_FISHEYE"
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(UserInputError, match="transforms.json frame 0: camera_model 'OPENCV_FISHEYE'"):
        read_capture(tmp_path, "nerfstudio")
    (tmp_path / "transforms.json").write_text('{"fl_x": 50, "frames": [')
    with pytest.raises(UserInputError, match="transforms.json is not valid JSON"):
        read_capture(tmp_path, "nerfstudio")
    meta["camera_model"], meta["frames"][2]["transform_matrix"] = "OPENCV", [[1, 0], [0, 1]]
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(UserInputError, match="transforms.json frame .*transform_matrix"):
        read_capture(tmp_path, "nerfstudio")


def _bench_captures(monkeypatch):
    """bench/captures.py as a module (its ``common`` import needs bench/ on the path)."""
    import importlib.util

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("bench_captures", REPO / "bench" / "captures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_trains_on_saved_sfm_poses_without_pycolmap(tmp_path, monkeypatch, cow):
    """The captures bench on a GPU machine without pycolmap: SfM's model, saved once (``--sfm-cache``) under the
    capture's own image names, trains with the same held-out images (0, 8) as LLFF's poses; a cache of other photos
    and a missing cache without pycolmap are refused with a message."""
    bench = _bench_captures(monkeypatch)
    truth, pngs = cow
    data = tmp_path / "capture"  # an LLFF capture shipped at 1/8 size, as fern: images_8/ and full-size hwf
    write_llff(data, truth, pngs)
    (data / "images").rename(data / "images_8")
    pb = np.load(data / "poses_bounds.npy")
    pb[:, [4, 9, 14]] *= 8
    np.save(data / "poses_bounds.npy", pb)
    # What sfm.reconstruct leaves: images NNNN_<stem>.png and a model in SfM's own frame (a similarity away).
    sfm_root = tmp_path / "sfm_out"
    c2w = truth.c2w.double().numpy().copy()
    c, s = np.cos(0.4), np.sin(0.4)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    c2w[:, :3, :3] = rot @ c2w[:, :3, :3]
    c2w[:, :3, 3] = 3.0 * c2w[:, :3, 3] @ rot.T + [1.0, 2.0, -0.5]
    names = [f"{i:04d}_img_{i:03d}.png" for i in range(N)]
    cam = colmap_io.ColmapCamera(1, "PINHOLE", truth.width, truth.height,
                                 np.array([truth.fx, truth.fy, truth.cx, truth.cy]))
    images = {i + 1: colmap_io.image_from_c2w(i + 1, c2w[i], 1, n) for i, n in enumerate(names)}
    colmap_io.write_model(colmap_io.ColmapModel({1: cam}, images, np.random.default_rng(0).normal(size=(50, 3)),
                                                np.zeros((50, 3), np.uint8)), sfm_root / "sparse" / "0", binary=True)
    cache = tmp_path / "sfm_cache"
    bench.save_sfm_cache(sfm_root, data, cache, {"sfm_s": 1.5})
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == \
        ["cameras.txt", "images.txt", "points3D.txt", "sfm.json"]  # no image copies
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap raises ImportError, as on the GPU
    scene, meta = bench.sfm_scene(data, cache, tmp_path / "work")
    assert meta["registered"] == f"{N}/{N}" and meta["sfm_s"] == 1.5
    cap, ref = read_capture(scene, "colmap"), read_capture(data, "llff")
    assert [p.name for p in cap.paths] == [p.name for p in ref.paths]
    errors = bench.compare_poses(scene, data)
    assert errors["rot_err_deg"] < 0.05 and errors["centre_err"] < 1e-4
    assert load_split(cap, HOLDOUT).names == ["images/img_000.png", "images/img_008.png"]

    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", [
        "captures.py", "--smoke", "--data", str(data), "--poses", "llff", "sfm", "--sfm-cache", str(cache),
        "--checkpoints", "0.2", "0.4", "--json", str(out), "--set", "unbounded_samples=16"])
    bench.main()
    result = json.loads(out.read_text())
    assert result["held_out_images"] == {"llff": ["img_000.png", "img_008.png"],
                                         "sfm": ["img_000.png", "img_008.png"]}
    assert result["sfm"]["registered"] == f"{N}/{N}" and result["sfm"]["rot_err_deg"] < 0.05
    assert [r["method"] for r in result["rows"]] == ["nerf-fast, llff poses"] * 2 + ["nerf-fast, sfm poses"] * 2
    assert all(np.isfinite(r["psnr"]) for r in result["rows"])

    (data / "images_8" / "img_003.png").write_bytes(pngs[4])  # other photos than SfM saw
    with pytest.raises(SystemExit, match="made from other photos"):
        bench.sfm_scene(data, cache, tmp_path / "work")
    with pytest.raises(SystemExit, match="pip install pycolmap.*--sfm-cache DIR"):
        bench.run_sfm(data, tmp_path / "fresh", 256, 1)
