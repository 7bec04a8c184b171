"""Blender-format loading (lego, the shipped cow scene) and hostile uploads: each must fail with a
UserInputError that names the offending file, and nothing may be written outside the work folder."""
from __future__ import annotations

import io
import json
import math
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.config import UserInputError
from pipelines.core import datasets
from pipelines.core.datasets import HOLDOUT, load_blender, open_scene, scene_splits

REPO = Path(__file__).resolve().parents[1]
COW_SCENE = REPO / "assets" / "scenes" / "cow"


# ------------------------------------------------------------------------------------------ lego


def test_lego_downscaled(lego):
    assert scene_splits(lego) == ("train", "val")
    meta = json.loads((lego / "transforms_train.json").read_text())
    p = load_blender(lego, "train", downscale=8, max_views=10)
    assert len(p) == 10 and p.images.shape == (10, 50, 50, 3) and p.alphas.shape == (10, 50, 50, 1)
    assert p.images.dtype == torch.float32 and 0.0 <= float(p.images.min()) and float(p.images.max()) <= 1.0
    assert (p.width, p.height) == (50, 50)
    fx_full = 0.5 * 400 / math.tan(0.5 * meta["camera_angle_x"])
    assert p.fx == pytest.approx(fx_full / 8) and p.fy == pytest.approx(fx_full / 8)
    assert (p.cx, p.cy) == (25.0, 25.0)
    # max_views keeps frames evenly spaced through the list, first and last included.
    assert p.names[0] == "train/r_0.png" and p.names[-1] == "train/r_99.png"
    assert torch.allclose(p.c2w[0], torch.tensor(meta["frames"][0]["transform_matrix"]))
    assert torch.allclose(p.c2w[-1], torch.tensor(meta["frames"][99]["transform_matrix"]))
    # The white background shows in the corners; the object is opaque in the middle.
    assert torch.allclose(p.images[:, 0, 0], torch.ones(10, 3), atol=1e-3)
    assert float(p.alphas[:, 20:30, 20:30].mean()) > 0.5
    cam = p.camera(3)
    assert cam.width == 50 and torch.equal(cam.c2w, p.c2w[3]) and cam.fx == p.fx


def test_lego_background_and_area_downscale(lego):
    full = load_blender(lego, "val", max_views=1, background=0.0)
    small = load_blender(lego, "val", downscale=4, max_views=1, background=0.0)
    assert torch.allclose(full.images[0, 0, 0], torch.zeros(3))
    # Downscaling averages premultiplied colour: the same as pooling the composited full-res image.
    pooled = torch.nn.functional.avg_pool2d(full.images[0].permute(2, 0, 1)[None], 4)[0].permute(1, 2, 0)
    assert torch.allclose(small.images[0], pooled, atol=1e-5)
    assert len(load_blender(lego, "val", downscale=8)) == 100


# ------------------------------------------------------------------------------------------ cow asset


@pytest.mark.skipif(not (COW_SCENE / "transforms_train.json").is_file(), reason="assets/scenes/cow not built")
def test_cow_scene_matches_its_cameras(shared_data):
    """The shipped scene's silhouettes sit where its cameras project the mesh (independent numpy projection)."""
    from pipelines.train.example_scenes import COW_OBJ, load_textured_mesh

    shared_data(COW_OBJ)
    assert scene_splits(COW_SCENE) == ("train", "val")
    train, val = load_blender(COW_SCENE, "train"), load_blender(COW_SCENE, "val")
    assert (len(train), len(val)) == (40, 10) and train.images.shape[1:] == (100, 100, 3)
    size = sum(f.stat().st_size for f in COW_SCENE.rglob("*") if f.is_file())
    assert size < 1.5e6
    verts = load_textured_mesh(COW_OBJ)[0].verts.double().numpy()
    jj, ii = np.mgrid[0:100, 0:100] + 0.5
    for p in (train, val):
        for i in range(0, len(p), 3):
            c2w = p.c2w[i].double().numpy()
            cam = (verts - c2w[:3, 3]) @ c2w[:3, :3]
            u = p.cx + p.fx * cam[:, 0] / -cam[:, 2]
            v = p.cy - p.fy * cam[:, 1] / -cam[:, 2]
            a = p.alphas[i, ..., 0].numpy()
            ys, xs = np.nonzero(a > 0.5)
            # The silhouette's extent matches the projected vertices' extent within a pixel ...
            assert np.allclose([xs.min(), xs.max() + 1, ys.min(), ys.max() + 1],
                               [u.min(), u.max(), v.min(), v.max()], atol=1.0)
            # ... and is whole (not clipped by the frame).
            assert a[0].max() == a[-1].max() == a[:, 0].max() == a[:, -1].max() == 0
            # The centroid of the mesh projects near the silhouette's centroid (vertex density is uneven).
            c = cam.mean(0)
            centroid = np.array([p.cx + p.fx * c[0] / -c[2], p.cy - p.fy * c[1] / -c[2]])
            assert np.linalg.norm(centroid - [(a * ii).sum() / a.sum(), (a * jj).sum() / a.sum()]) < 8


# ------------------------------------------------------------------------------------------ uploads

IDENTITY = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]


def _png(w: int = 8, h: int = 8, mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), (200, 100, 50, 255)[:len(mode)]).save(buf, format="PNG")
    return buf.getvalue()


def _scene(n: int = 3, prefix: str = "", **frame0) -> dict[str, bytes]:
    """A tiny valid scene as {zip entry name: bytes}; ``frame0`` overrides keys of the first train frame."""
    files: dict[str, bytes] = {}
    for split in ("train", "val"):
        frames = [{"file_path": f"./{split}/r_{i}", "transform_matrix": IDENTITY} for i in range(n)]
        if split == "train":
            frames[0].update(frame0)
        files[f"{prefix}transforms_{split}.json"] = json.dumps({"camera_angle_x": 0.7, "frames": frames}).encode()
        for i in range(n):
            files[f"{prefix}{split}/r_{i}.png"] = _png()
    return files


def _zip(path: Path, files: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _load(upload: Path, work: Path):
    root = open_scene(upload, work)
    train, held = scene_splits(root)
    return load_blender(root, train), load_blender(root, held)


def _outside(tmp_path: Path, work: Path) -> set[Path]:
    """Every path under tmp_path except work and what lies inside it."""
    return {p for p in tmp_path.rglob("*") if p != work and work not in p.parents}


@pytest.fixture
def upload_env(tmp_path):
    """(upload folder, work folder) side by side in tmp_path."""
    up, work = tmp_path / "upload", tmp_path / "work"
    up.mkdir()
    work.mkdir()
    return up, work


def _expect_error(upload: Path, work: Path, needle: str) -> str:
    """Loading ``upload`` raises a UserInputError mentioning ``needle`` and writes nothing outside work."""
    before = _outside(work.parent, work)
    with pytest.raises(UserInputError) as err:
        _load(upload, work)
    msg = str(err.value)
    assert needle in msg, msg
    assert _outside(work.parent, work) == before, "written outside work_dir"
    return msg


def _hostile(upload_env, files: dict[str, bytes], needle: str, name: str = "scene.zip") -> str:
    up, work = upload_env
    return _expect_error(_zip(up / name, files), work, needle)


def test_good_zip_one_folder_down(tmp_path, upload_env):
    up, work = upload_env
    files = _scene(prefix="mycow/")
    files["__MACOSX/mycow/._transforms_train.json"] = b"junk"
    train, val = _load(_zip(up / "scene.zip", files), work)
    assert (len(train), len(val)) == (3, 3) and train.images.shape == (3, 8, 8, 3)
    assert torch.allclose(train.images[0, 0, 0], torch.tensor([200, 100, 50]) / 255.0)
    assert train.fx == pytest.approx(4 / math.tan(0.35))
    assert open_scene(work / "scene" / "mycow", tmp_path / "unused") == work / "scene" / "mycow"
    # A second upload replaces the first scene.
    root = open_scene(_zip(up / "other.zip", _scene(n=2)), work)
    assert root == work / "scene" and not (work / "scene" / "mycow").exists()


def test_single_frame_list_holds_out_every_8th(tmp_path):
    frames = [{"file_path": f"images/{i:03d}.png", "transform_matrix": IDENTITY} for i in range(20)]
    (tmp_path / "images").mkdir()
    for i in range(20):
        Image.new("RGB", (6, 4), (i, 0, 0)).save(tmp_path / "images" / f"{i:03d}.png")
    (tmp_path / "transforms.json").write_text(json.dumps(
        {"fl_x": 5.0, "fl_y": 6.0, "cx": 3.5, "cy": 2.5, "w": 6, "h": 4, "frames": frames}))
    assert scene_splits(tmp_path) == ("train", HOLDOUT)
    train, held = load_blender(tmp_path, "train"), load_blender(tmp_path, HOLDOUT)
    assert [n[-7:-4] for n in held.names] == ["000", "008", "016"]
    assert len(train) == 17 and not set(train.names) & set(held.names)
    assert len(load_blender(tmp_path, "all")) == 20
    assert train.alphas is None and (train.fx, train.fy, train.cx, train.cy) == (5.0, 6.0, 3.5, 2.5)


def test_corrupt_upload(tmp_path, upload_env):
    up, work = upload_env
    bad = up / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    _expect_error(bad, work, "broken.zip")


def test_zip_slip_dotdot(tmp_path, upload_env):
    files = _scene()
    files["train/../../evil.txt"] = b"owned"
    _hostile(upload_env, files, "train/../../evil.txt")
    assert not (tmp_path / "evil.txt").exists()


def test_zip_absolute_path(tmp_path, upload_env):
    files = _scene()
    files[str(tmp_path / "abs_evil.txt")] = b"owned"
    _hostile(upload_env, files, "abs_evil.txt")
    assert not (tmp_path / "abs_evil.txt").exists()


def test_zip_symlink_entry(tmp_path, upload_env):
    up, work = upload_env
    path = _zip(up / "scene.zip", _scene())
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("train/link.png")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../../etc/passwd")
    _expect_error(path, work, "train/link.png")


def test_zip_bomb_ratio(tmp_path, upload_env):
    files = _scene()
    files["train/padding.bin"] = bytes(8 << 20)  # 8 MiB of zeros deflates about 1000x
    _hostile(upload_env, files, "train/padding.bin")


def test_zip_bomb_total_and_entries(tmp_path, upload_env, monkeypatch):
    monkeypatch.setattr(datasets, "MAX_ZIP_TOTAL_BYTES", 100)
    msg = _hostile(upload_env, _scene(), "scene.zip")
    assert "MiB" in msg
    monkeypatch.setattr(datasets, "MAX_ZIP_TOTAL_BYTES", 2 << 30)
    monkeypatch.setattr(datasets, "MAX_ZIP_ENTRIES", 5)
    _hostile(upload_env, _scene(), "many.zip", name="many.zip")


def test_zip_lying_sizes(tmp_path, upload_env):
    """Declared sizes smaller than the data: extraction stops at the declared size and reports the entry."""
    up, work = upload_env
    files = _scene()
    files["train/big.bin"] = bytes(range(256)) * 64
    path = _zip(up / "scene.zip", files, compression=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    # Patch the central directory's uncompressed size of train/big.bin to 16 bytes.
    cd = data.rfind(b"PK\x01\x02", 0, data.find(b"train/big.bin", data.find(b"PK\x01\x02")) + 1)
    struct.pack_into("<I", data, cd + 24, 16)
    path.write_bytes(bytes(data))
    _expect_error(path, work, "train/big.bin")


def test_no_transforms(tmp_path, upload_env):
    _hostile(upload_env, {"pics/r_0.png": _png()}, "transforms_train.json")


def test_malformed_json(tmp_path, upload_env):
    files = _scene()
    files["transforms_train.json"] = b"{'camera_angle_x': 0.7, frames: ["
    _hostile(upload_env, files, "transforms_train.json")


@pytest.mark.parametrize("matrix", [
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]],  # 3x3
    [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, "x"], [0, 0, 0, 1]],  # not numbers
    [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, float("nan")], [0, 0, 0, 1]],  # not finite
    [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 4], [0, 0, 0, 1]],  # scaled: not rigid
    [[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]],  # a reflection
    "identity",
])
def test_bad_transform_matrix(tmp_path, upload_env, matrix):
    msg = _hostile(upload_env, _scene(transform_matrix=matrix), "transforms_train.json frame 0")
    assert "transform_matrix" in msg


@pytest.mark.parametrize("angle", [None, "wide", -0.5, 4.0])
def test_bad_camera_angle(tmp_path, upload_env, angle):
    files = _scene()
    meta = json.loads(files["transforms_train.json"])
    if angle is None:
        del meta["camera_angle_x"]
    else:
        meta["camera_angle_x"] = angle
    files["transforms_train.json"] = json.dumps(meta).encode()
    msg = _hostile(upload_env, files, "transforms_train.json")
    assert "camera_angle_x" in msg


def test_missing_image(tmp_path, upload_env):
    files = _scene()
    del files["train/r_1.png"]
    _hostile(upload_env, files, "./train/r_1")


def test_undecodable_image(tmp_path, upload_env):
    files = _scene()
    files["train/r_2.png"] = b"\x89PNG\r\n\x1a\n but then nothing sensible"
    _hostile(upload_env, files, "train/r_2.png")


def test_inconsistent_sizes(tmp_path, upload_env):
    files = _scene()
    files["train/r_1.png"] = _png(16, 8)
    _hostile(upload_env, files, "train/r_1.png")


def test_huge_image(tmp_path, upload_env):
    files = _scene()
    files["train/r_0.png"] = _png(5000, 2, mode="L")  # tiny file, huge side: refused from the header
    msg = _hostile(upload_env, files, "train/r_0.png")
    assert "downscale" in msg


def test_file_path_escapes_scene(tmp_path, upload_env):
    (tmp_path / "secret.png").write_bytes(_png())
    msg = _hostile(upload_env, _scene(file_path="../../../secret"), "transforms_train.json frame 0")
    assert "../../../secret" in msg


def test_not_a_scene_folder(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserInputError, match="empty_dir"):
        open_scene(tmp_path / "empty_dir", tmp_path / "w")
    with pytest.raises(UserInputError, match="nowhere"):
        open_scene(tmp_path / "nowhere", tmp_path / "w")
