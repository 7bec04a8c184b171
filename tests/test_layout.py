"""The package's layout (DESIGN.md): the top of ``pipelines/`` shows the protocol and one file per method,
build-time tooling lives in ``pipelines/train/`` and is never needed at run time, and no two files import
each other (directly or through others)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from pipelines import PIPELINES

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pipelines"
PROTOCOL = {"__init__", "__main__", "config", "events"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``path`` imports anywhere (lazy imports inside functions count), except its own
    ancestor packages, which Python has imported before the module runs whatever it says."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def test_top_level_is_protocol_and_methods():
    top = {p.stem for p in PKG.glob("*.py")}
    methods = {spec.module.rpartition(".")[2] for spec in PIPELINES.values()}
    assert top == PROTOCOL | methods, f"not a method or the protocol: {sorted(top - PROTOCOL - methods)}"
    assert {"nerf", "volsdf", "single_view", "dreamfusion", "dreamfields"} <= methods


def test_no_import_cycles():
    mods = modules()
    graph = {n: imports(n, p, set(mods)) for n, p in mods.items()}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_runtime_never_imports_train():
    """Method files and core/ never import the build-time package, and importing every method leaves it out."""
    mods = modules()
    for name, path in mods.items():
        if not name.startswith("pipelines.train") and name != "pipelines.__main__":
            bad = {m for m in imports(name, path, set(mods)) if m.startswith("pipelines.train")}
            assert not bad, f"{name} imports {bad}"
    code = ("import sys, importlib; from pipelines import PIPELINES\n"
            "[importlib.import_module(s.module) for s in PIPELINES.values()]\n"
            "import gen3d_app.ui\n"
            "print(sorted(m for m in sys.modules if m.startswith('pipelines.train')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cycle_finder_finds_a_cycle(tmp_path):
    """The checker itself: two files that import each other lazily are seen."""
    (tmp_path / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "b.py").write_text("def g():\n    from .a import f\n")
    known = {"pipelines.x.a", "pipelines.x.b", "pipelines.x"}
    assert imports("pipelines.x.a", tmp_path / "a.py", known) == {"pipelines.x.b"}
    assert imports("pipelines.x.b", tmp_path / "b.py", known) == {"pipelines.x.a"}



def test_method_configs_declare_shared_fields_once():
    """A field that two methods' configs both declare in their own class bodies with the same default and the same
    docstring is a copy that can drift: it belongs in a shared base (``core.text3d_config.FieldConfig`` for the
    text-to-3D fields). A subclass redeclares a field only to change its default or what it means."""
    import dataclasses
    import importlib

    own = {}
    for name in PIPELINES:
        cls = importlib.import_module(f"pipelines.{name}").CONFIG
        defaults, docs = {f.name: f.default for f in dataclasses.fields(cls)}, cls.field_docs()
        own[name] = {k: (defaults[k], docs.get(k)) for k in vars(cls).get("__annotations__", {}) if k in defaults}
    copies = sorted(f"{a}/{b}: {k}" for a in own for b in own if a < b
                    for k in own[a].keys() & own[b].keys() if own[a][k] == own[b][k])
    # Kept apart on purpose: Magic3D, the third FieldConfig, finds its surface by another rule (surface_threshold).
    allowed = {"dreamfields/dreamfusion: mesh_density"}
    assert set(copies) <= allowed, copies
