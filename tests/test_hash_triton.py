"""The fused Triton hash encoding (core/hash_triton.py) against the PyTorch reference, on the CPU through Triton's
interpreter (TRITON_INTERPRET=1, set before triton is imported, hence a subprocess).

CPU builds of torch do not install triton (the CUDA wheels depend on it), and the project does not require it
(a ~290 MB wheel the app never uses on a CPU): without it the comparison is skipped, saying so. To run it on a
CPU machine: ``pip install triton`` (3.9.0 was checked with torch 2.13.0+cpu) or put an unpacked wheel on
GEN3D_TRITON_PATH.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.core.encodings import HashGridEncoding, fused_hash_available

ROOT = Path(__file__).resolve().parents[1]
TRITON_PATH = os.environ.get("GEN3D_TRITON_PATH", "")


def _triton_importable() -> bool:
    if importlib.util.find_spec("triton") is not None:
        return True
    return bool(TRITON_PATH) and (Path(TRITON_PATH) / "triton" / "__init__.py").is_file()


SCRIPT = r"""
import torch
from pipelines.core.encodings import HashGridEncoding, check_fused_hash
from pipelines.core.fields import NGPField

# The kernels' own check (dense and hashed levels, points on and outside the box's faces).
with torch.no_grad():  # as the first use may be (an occupancy update)
    err = check_fused_hash("cpu", n=512)
assert err < 1e-5, err

# NeRF's field, fused against reference, forward and every parameter gradient.
torch.manual_seed(0)
field = NGPField(1.5, levels=4, log2_size=12)
with torch.no_grad():
    field.encoding.table.uniform_(-0.5, 0.5)
x, d = torch.rand(300, 3) * 3 - 1.5, torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
outs, grads = [], []
for fused in (False, True):
    field.encoding.fused = fused
    field.zero_grad()
    sigma, rgb = field(x, d)
    (sigma.sum() + rgb.sum()).backward()
    outs.append(torch.cat([sigma[:, None], rgb], 1))
    grads.append([p.grad.clone() for p in field.parameters()])
assert torch.allclose(outs[0], outs[1], atol=1e-5), (outs[0] - outs[1]).abs().max()
for a, b in zip(*grads):
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()

# Points that need a gradient (an analytic eikonal term) take the reference path, double backward included.
enc = HashGridEncoding(3, 2, 8, 4, 16)
enc.fused = True
xg = torch.rand(20, 3, requires_grad=True)
(g,) = torch.autograd.grad(enc(xg).pow(2).sum(), xg, create_graph=True)
g.sum().backward()
assert enc.table.grad is not None and torch.isfinite(enc.table.grad).all()
print("FUSED-OK", err)
"""


@pytest.mark.skipif(not _triton_importable(), reason="triton is not installed (CPU torch does not pull it; see the "
                    "module docstring to run this comparison under TRITON_INTERPRET=1)")
def test_fused_hash_encoding_matches_the_reference_in_the_interpreter():
    path = os.pathsep.join(p for p in (TRITON_PATH, str(ROOT)) if p)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=300)
    assert res.returncode == 0 and "FUSED-OK" in res.stdout, res.stdout[-2000:] + res.stderr[-4000:]


def test_cpu_takes_the_reference_path():
    """Without forcing, CPU tensors never reach the Triton kernels (a CPU run must not need triton)."""
    assert not fused_hash_available(torch.device("cpu"))
    enc = HashGridEncoding(3, 2, 8, 4, 16)
    x = torch.rand(50, 3)
    assert torch.equal(enc(x), enc.reference(x))


def test_the_benchmark_times_the_pytorch_path_where_the_kernels_cannot_run(tmp_path):
    """bench/hash_encoding.py --tiny on the CPU runs and writes its JSON: a timed row per point count for the
    PyTorch path, no GPU memory column; the Triton rows need CUDA, so none here."""
    import json

    out = tmp_path / "hash.json"
    res = subprocess.run([sys.executable, "bench/hash_encoding.py", "--tiny", "--device", "cpu", "--repeats", "1",
                          "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["path"], r["points"]) for r in rows] == [("pytorch", 2 ** k) for k in (12, 13, 14)]
    assert all(r["train_ms"] > 0 and r["forward_ms"] > 0 and r["peak_gb_train"] is None for r in rows)
    assert "fwd+bwd ms" in res.stdout
