"""VolSDF's primitives field, fitted: the primitives a run starts from (``parse_primitives``: a .json file or kinds
at seeded places), a one-line description for the log, and the recovery errors against a scene's ground truth.
The field itself (``PrimitiveSDF``, ``Primitive``) is in core/sdf_primitives.py."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..config import UserInputError


def parse_primitives(spec: str, bound: float, seed: int):
    """``cfg.primitives`` -> list of core.sdf_primitives.Primitive: a .json file, or kinds at seeded random places."""
    import torch

    from .sdf_primitives import PRIMITIVE_SIZES, Primitive, primitives_from_json

    spec = spec.strip()
    if spec.lower().endswith(".json"):
        path = Path(spec)
        if not path.is_file():
            raise UserInputError(f"primitives file {path.name!r} not found")
        try:
            return primitives_from_json(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"{path.name} is not a primitives file ({exc}); it needs a list 'primitives' "
                                 "of {kind, center, size[, rotation, color]}") from None
    kinds = [k.strip().lower() for k in spec.split(",") if k.strip()]
    bad = [k for k in kinds if k not in PRIMITIVE_SIZES]
    if not kinds or bad:
        raise UserInputError(f"primitives {spec!r}: give comma-separated kinds from {', '.join(PRIMITIVE_SIZES)} "
                             "or a .json file")
    # Spread on a ring around the z axis (a seeded turn and jitter), so each starts near a different part.
    gen = torch.Generator().manual_seed(seed)
    defaults = {"sphere": [0.2], "box": [0.15, 0.15, 0.15], "torus": [0.2, 0.06], "capsule": [0.12, 0.1]}
    turn = float(torch.rand(1, generator=gen)) * 2 * math.pi
    prims = []
    for i, k in enumerate(kinds):
        angle = turn + 2 * math.pi * i / len(kinds)
        ring = torch.tensor([math.cos(angle), math.sin(angle), 0.0]) * 0.3 * bound * (len(kinds) > 1)
        center = ring + (torch.rand(3, generator=gen) * 2 - 1) * 0.05 * bound
        prims.append(Primitive(k, center.tolist(), [s * bound for s in defaults[k]]))
    return prims



def describe_primitives(field) -> str:
    parts = []
    for i, p in enumerate(field.primitives()):
        fmt = lambda v: "(" + ", ".join(f"{x:.3f}" for x in v) + ")"  # noqa: E731
        parts.append(f"{p.kind}{i} c{fmt(p.center)} size{fmt(p.size)}")
    return " · ".join(parts)


def recovery_errors(field, root: Path) -> dict[str, float]:
    """Largest centre and size errors against a scene's ground-truth ``primitives.json`` (the primitives example
    has one), under the best matching of fitted to true primitives of the same kinds."""
    import itertools

    truth_path = Path(root) / "primitives.json"
    if not truth_path.is_file():
        return {}
    truth, fitted = parse_primitives(str(truth_path), 1.0, 0), field.primitives()
    if sorted(p.kind for p in truth) != sorted(p.kind for p in fitted) or len(truth) > 8:
        return {}
    best = None
    for perm in itertools.permutations(range(len(fitted))):
        pairs = [(truth[i], fitted[j]) for i, j in enumerate(perm)]
        if any(a.kind != b.kind for a, b in pairs):
            continue
        c_err = max(math.dist(a.center, b.center) for a, b in pairs)
        s_err = max(max(abs(x - y) for x, y in zip(a.size, b.size)) for a, b in pairs)
        best = min(best or (c_err, s_err), (c_err, s_err))
    return {"center_error": best[0], "size_error": best[1]}
