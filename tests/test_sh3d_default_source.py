"""Sweet Home 3D's own default catalog as a shape source (issue 21: more openly licensed shapes): its models live in
the program's jar, share one folder and name materials that only the OBJ loader's class defines. On a small jar
written here: a catalog, two OBJ files and a class file whose constant pool holds the material library."""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.train.mesh_formats import class_strings
from pipelines.train.mesh_library import (SH3D_JAR, SH3D_JAR_CATALOG, SH3D_JAR_MATERIALS, catalog, load_parts,
                                          sh3d_default_catalog, sh3d_default_materials)

MTL = "newmtl red\nKa 0.2 0 0\nKd 1.0 0.0 0.0\nillum 1\n\nnewmtl blue\nKd 0.0 0.0 1.0\nillum 1\n"
BOX = "".join(f"v {x} {y} {z}\n" for x in (0, 2) for y in (0, 1) for z in (0, 4)) + (
    "f 1 2 4 3\nf 5 7 8 6\nf 1 5 6 2\nf 3 4 8 7\nf 1 3 7 5\n" "usemtl blue\nf 2 6 8 4\n")


def class_file(*strings: str) -> bytes:
    """A Java class file's header and constant pool: the strings as CONSTANT_Utf8 between an Integer, a Long (two
    slots) and a Class entry, as javac interleaves them (nothing after the pool is read)."""
    pool = struct.pack(">BI", 3, 7) + struct.pack(">BQ", 5, 1)
    for s in strings:
        b = s.encode()
        pool += struct.pack(">BH", 1, len(b)) + b + struct.pack(">BH", 7, 1)
    count = 1 + 1 + 2 + 2 * len(strings)
    return b"\xca\xfe\xba\xbe" + struct.pack(">HHH", 0, 52, count) + pool + b"\x00" * 8


def write_jar(path: Path) -> Path:
    props = "\n".join([
        "id#1=eTeks#chest", "name#1=Chest", "category#1=Bedroom", "creator#1=eTeks",
        "model#1=/com/eteks/sweethome3d/io/resources/chest.obj", "width#1=100", "depth#1=50", "height#1=80",
        "modelRotation#1=1 0 0 0 1 0 0 0 1",
        "id#2=eTeks#door", "name#2=Door", "doorOrWindow#2=true",
        "model#2=/com/eteks/sweethome3d/io/resources/door.obj",
        "id#3=eTeks#chest2", "name#3=Chest", "model#3=/com/eteks/sweethome3d/io/resources/chest2.obj"])
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(SH3D_JAR_CATALOG, props)
        zf.writestr("com/eteks/sweethome3d/io/resources/", "")
        zf.writestr("com/eteks/sweethome3d/io/resources/chest.obj", "g body\nusemtl red\n" + BOX)
        zf.writestr("com/eteks/sweethome3d/io/resources/chest.png", b"an icon, not a texture")
        zf.writestr("com/eteks/sweethome3d/io/resources/door.obj", BOX)
        zf.writestr("com/eteks/sweethome3d/io/resources/chest2.obj", BOX)
        zf.writestr(SH3D_JAR_MATERIALS, class_file("OBJLoader", MTL, "newmtl"[:3]))
    return path


def test_class_strings_reads_the_constant_pool():
    assert class_strings(class_file("a", "b c", "")) == ["a", "b c", ""]
    with pytest.raises(ValueError, match="not a Java class"):
        class_strings(b"PK\x03\x04" + b"\x00" * 20)
    whole = class_file("a long enough text")
    with pytest.raises(ValueError, match="truncated"):
        class_strings(whole[:30])
    with pytest.raises(ValueError, match="unknown constant tag 2"):
        class_strings(whole[:10] + b"\x02" + whole[11:])


def test_sources_problem_names_each_missing_source(tmp_path: Path, monkeypatch):
    import argparse

    from pipelines.train import shape_builds

    monkeypatch.setattr(shape_builds, "SH3D_JAR", tmp_path / "missing.jar")
    args = lambda sources: argparse.Namespace(sources=sources, furniture_dir=tmp_path)  # noqa: E731
    # sh3d-default does not need the furniture libraries (the names are parsed, not searched for "sh3d")
    assert "apt-get install sweethome3d " in shape_builds.sources_problem(args("sh3d-default"))
    assert "sweethome3d-furniture" in shape_builds.sources_problem(args("sh3d, procedural"))
    assert shape_builds.sources_problem(args("procedural")) == ""
    monkeypatch.setattr(shape_builds, "SH3D_JAR", write_jar(tmp_path / "sweethome3d.jar"))
    assert shape_builds.sources_problem(args("procedural,sh3d-default")) == ""


@pytest.mark.skipif(not SH3D_JAR.is_file(), reason="needs Debian's sweethome3d (apt-get install sweethome3d)")
def test_the_real_catalog_has_distinct_furniture_with_the_loaders_colours():
    shapes = sh3d_default_catalog()
    ids = [s.id for s in shapes]
    assert len(ids) == len(set(ids)) >= 60  # 72 distinct models of 79 entries without doors and windows
    assert "newmtl flltgrey" in sh3d_default_materials()
    chair = load_parts(next(s for s in shapes if s.id == "sh3d-default-chair"))
    assert len(chair.faces) > 50 and (chair.verts.max(0) - chair.verts.min(0)).max() == pytest.approx(1.0)


def test_a_library_member_outside_its_model_folder_is_not_written(tmp_path: Path):
    """A hostile .sh3f (``--furniture-dir`` takes any folder): a ``../`` member of the model's folder stays unread."""
    import uuid

    from pipelines.train.mesh_library import sh3d_catalog

    escape = Path("/") / f"gen3d_escape_{uuid.uuid4().hex}.txt"
    lib = tmp_path / "lib.sh3f"
    with zipfile.ZipFile(lib, "w") as zf:
        zf.writestr("PluginFurnitureCatalog.properties", "name=lib\nid#1=x\nname#1=Box\nmodel#1=/box/box.obj\n")
        zf.writestr("box/box.obj", BOX)
        zf.writestr("box/" + "../" * 40 + escape.name, "escaped")
    try:
        (src,) = sh3d_catalog(lib)
        assert len(load_parts(src).faces) == 12
        assert not escape.exists()
    finally:
        escape.unlink(missing_ok=True)


def test_catalog_names_each_model_after_its_file_and_leaves_doors_out(tmp_path: Path):
    jar = write_jar(tmp_path / "sweethome3d.jar")
    shapes = sh3d_default_catalog(jar)
    assert [s.id for s in shapes] == ["sh3d-default-chest", "sh3d-default-chest2"]  # one folder, distinct ids
    s = shapes[0]
    assert (s.source, s.license, s.creator, s.category, s.size) == ("sh3d-default", "CC-BY 3.0", "eTeks", "Bedroom",
                                                                    [100.0, 50.0, 80.0])
    assert [x.id for x in catalog("sh3d-default", sh3d_jar=jar)] == [s.id for s in shapes]
    assert catalog("sh3d", furniture_dir=tmp_path, sh3d_jar=jar) == []  # the libraries' source does not read the jar
    assert sh3d_default_catalog(tmp_path / "missing.jar") == []
    assert "newmtl red" in sh3d_default_materials(jar)


def test_models_load_with_the_loaders_materials_and_their_catalog_size(tmp_path: Path):
    jar = write_jar(tmp_path / "sweethome3d.jar")
    chest, plain = sh3d_default_catalog(jar)
    parts = load_parts(chest)
    colors = {tuple(np.round(c, 3)) for c in parts.colors}
    assert colors == {(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)}  # red and blue from the class's library, not a fallback
    ext = parts.verts.max(0) - parts.verts.min(0)
    # stretched to width 100 x depth 50 x height 80 (y up in the catalog, z up here), longest side 1
    assert np.allclose(ext, [1.0, 0.5, 0.8], atol=1e-6)
    plain_parts = load_parts(plain)  # no usemtl for most faces: the shape's fallback colour, and blue for one
    assert len(plain_parts.faces) == 12
    assert len(plain_parts.colors) == 2 and any(np.allclose(c, [0.0, 0.0, 1.0]) for c in plain_parts.colors)


def test_the_jar_cut_for_the_gpu_machine_builds_the_same_shapes(tmp_path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_prepare_data",
                                                  Path(__file__).resolve().parents[1] / "bench" / "prepare_data.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    jar = write_jar(tmp_path / "sweethome3d.jar")
    with zipfile.ZipFile(jar, "a") as zf:  # a model of its own folder, with its MTL beside it
        zf.writestr("com/eteks/sweethome3d/io/resources/frame/frame.obj", "mtllib frame.mtl\nusemtl gold\n" + BOX)
        zf.writestr("com/eteks/sweethome3d/io/resources/frame/frame.mtl", "newmtl gold\nKd 1.0 0.8 0.0\n")
        props = zf.read(SH3D_JAR_CATALOG).decode() + "\nmodel#4=/com/eteks/sweethome3d/io/resources/frame/frame.obj\n"
    with zipfile.ZipFile(jar) as zf:
        files = {n: zf.read(n) for n in zf.namelist() if n != SH3D_JAR_CATALOG}
    with zipfile.ZipFile(jar, "w") as zf:
        zf.writestr(SH3D_JAR_CATALOG, props)
        for n, b in files.items():
            zf.writestr(n, b)
    cut = bench.sh3d_default_jar(jar, tmp_path / "cut.jar")
    with zipfile.ZipFile(cut) as zf:
        names = set(zf.namelist())
    assert "com/eteks/sweethome3d/io/resources/chest.png" not in names  # the catalog's icon
    whole, small = sh3d_default_catalog(jar), sh3d_default_catalog(cut)
    assert [s.id for s in whole] == [s.id for s in small] == ["sh3d-default-chest", "sh3d-default-chest2",
                                                               "sh3d-default-frame"]
    for a, b in zip(whole, small):
        pa, pb = load_parts(a), load_parts(b)
        assert np.array_equal(pa.verts, pb.verts) and np.array_equal(pa.colors, pb.colors)
    assert any(np.allclose(c, [1.0, 0.8, 0.0]) for c in load_parts(small[2]).colors)  # from its own MTL
