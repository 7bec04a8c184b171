"""Capture formats (issue 19): nerfstudio/Instant-NGP transforms.json, LLFF poses_bounds.npy, COLMAP text and
binary models, written from the shipped cow scene's known cameras (renders made by project code) and read back;
format detection; corrupt files; the real LLFF fern capture (../shared, skipped without it); a loaded capture's
cameras in the app. The spaces captures train in, and training on them: test_captures_training.py."""
from __future__ import annotations

import json
import shutil
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


def cow_views():
    """The cow scene's first N training views: (PosedImages, PNG bytes per view)."""
    views = load_blender(COW, "train", max_views=N, background=1.0)
    pngs = [(COW / name).read_bytes() for name in views.names]
    return views, pngs


@pytest.fixture(scope="module")
def cow():
    return cow_views()


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
