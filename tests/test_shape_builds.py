"""The data builders' shared build loop (train/shape_builds.py): restartable, failures recorded, not fatal."""
import json
from types import SimpleNamespace

from pipelines.train.shape_builds import build_shapes, built_records, spread


def _build(src, out_dir, size: int):
    if src.id == "bad":
        raise ValueError("no faces")
    (out_dir / f"{src.id}.json").write_text(json.dumps({"id": src.id, "size": size}))
    (out_dir / f"{src.id}.npz").write_bytes(b"done")  # last, as a real builder's os.replace


def test_build_shapes_records_failures_and_restarts(tmp_path):
    shapes = [SimpleNamespace(id=i) for i in ("a", "bad", "c")]
    logs = []
    records = build_shapes(tmp_path, shapes, _build, {"size": 4}, log=logs.append)
    assert [r["id"] for r in records] == ["a", "c"] and records[0]["size"] == 4
    assert json.loads((tmp_path / "failed.json").read_text()) == {"bad": "ValueError: no faces"}
    assert any("bad FAILED ValueError" in m for m in logs)
    (tmp_path / "shapes" / ".x.tmp.npz").write_bytes(b"half")  # a killed worker's leftover is not a record
    again = build_shapes(tmp_path, shapes[:1] + shapes[2:], _build, {"size": 9}, log=logs.append)
    assert [r["size"] for r in again] == [4, 4]  # built ones are kept, not rebuilt
    assert any("2 already built, building 0" in m for m in logs)
    assert json.loads((tmp_path / "failed.json").read_text()) == {}
    assert len(built_records(tmp_path)) == 2


def test_spread_keeps_an_even_sample():
    assert spread(list(range(10)), 0) == list(range(10))
    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8] and spread(list(range(3)), 5) == [0, 1, 2]
