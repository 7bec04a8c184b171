"""Procedural furniture for the data builders: tables, chairs, stools, shelves, beds, sofas, cabinets, desks,
benches and lamps assembled from boxes and cylinders, their proportions, part counts and colours drawn from a
generator seeded by the shape id (a rebuild makes the same shape). Unlimited training shapes, CC0 by construction:
the one source of more shapes this offline machine has (bench/RESULTS.md, issue 21: the single-view model's
learning curve had not flattened at 704 furniture shapes, and 902 procedural pybullet blocks beside them raised
voxel IoU by 0.024).

Contract: ``procedural_ids(count) -> list[str]``; ``procedural_mesh(shape_id) -> (verts, faces, face_material,
colors)`` in metres, z up, the floor at z = 0 (``mesh_library`` makes the catalog and the ``Parts``, centred and
scaled like any shape).
"""
from __future__ import annotations

import hashlib

import numpy as np

KINDS = ("table", "chair", "stool", "shelf", "bed", "sofa", "cabinet", "desk", "bench", "lamp")
COUNT = 2000
"""Shapes in the catalog (``--limit`` builds fewer, spread over the kinds)."""


def procedural_ids(count: int = COUNT) -> list[str]:
    """The catalog's shape ids, ``procedural-<kind>-<k>``, kind after kind, so ``--limit``'s even spread takes every
    kind (``mesh_library.catalog`` makes them ``ShapeSource``s)."""
    per_kind = -(-count // len(KINDS))
    return [f"procedural-{kind}-{i:04d}" for kind in KINDS for i in range(per_kind)][:count]


class _Builder:
    """Boxes and cylinders as one triangle soup, each primitive tagged with one of the shape's materials."""

    def __init__(self):
        self.verts, self.faces, self.material = [], [], []
        self.n = 0

    def _add(self, v: np.ndarray, f: np.ndarray, material: int) -> None:
        self.verts.append(v)
        self.faces.append(f + self.n)
        self.material.append(np.full(len(f), material))
        self.n += len(v)

    def box(self, lo, hi, material: int = 0) -> None:
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
        f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
        self._add(lo + corners * (hi - lo), f, material)

    def cylinder(self, x, y, z0, z1, r0, r1=None, material: int = 0, segments: int = 16) -> None:
        """A vertical frustum from (x, y, z0) with radius ``r0`` to z1 with ``r1`` (default the same), capped."""
        r1 = r0 if r1 is None else r1
        a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
        ring = np.stack([np.cos(a), np.sin(a)], 1)
        v = np.concatenate([np.c_[x + r0 * ring[:, 0], y + r0 * ring[:, 1], np.full(segments, z0)],
                            np.c_[x + r1 * ring[:, 0], y + r1 * ring[:, 1], np.full(segments, z1)],
                            [[x, y, z0], [x, y, z1]]])
        i, j = np.arange(segments), (np.arange(segments) + 1) % segments
        s = segments
        f = np.concatenate([np.c_[i, j, j + s], np.c_[i, j + s, i + s],
                            np.c_[np.full(s, 2 * s), j, i], np.c_[np.full(s, 2 * s + 1), i + s, j + s]])
        self._add(v, f, material)

    def legs(self, rng, w, d, h, inset, thick, material: int = 0) -> None:
        """Four legs under a w x d footprint centred on the origin, square or round, from the floor to ``h``."""
        round_legs = rng.random() < 0.4
        for sx in (-1, 1):
            for sy in (-1, 1):
                x, y = sx * (w / 2 - inset - thick / 2), sy * (d / 2 - inset - thick / 2)
                if round_legs:
                    self.cylinder(x, y, 0, h, thick / 2, thick / 2 * rng.uniform(0.6, 1.0), material, 10)
                else:
                    self.box((x - thick / 2, y - thick / 2, 0), (x + thick / 2, y + thick / 2, h), material)


def _table(b: _Builder, rng, desk: bool = False) -> None:
    w, d = rng.uniform(0.6, 2.0), rng.uniform(0.5, 1.1)
    h, t = rng.uniform(0.65, 0.8), rng.uniform(0.02, 0.06)
    if not desk and rng.random() < 0.25:  # round table on a pedestal
        r = rng.uniform(0.35, 0.7)
        b.cylinder(0, 0, h - t, h, r, material=0, segments=24)
        b.cylinder(0, 0, 0.03, h - t, rng.uniform(0.03, 0.08), material=0)
        b.cylinder(0, 0, 0, 0.03, rng.uniform(0.2, 0.4), material=0)
        return
    b.box((-w / 2, -d / 2, h - t), (w / 2, d / 2, h), 0)
    if desk and rng.random() < 0.6:  # a drawer pedestal on one side, a panel on the other
        pw = rng.uniform(0.3, 0.45)
        b.box((w / 2 - pw, -d / 2 + 0.02, 0), (w / 2 - 0.01, d / 2 - 0.02, h - t), 1)
        for k in range(int(rng.integers(2, 5))):
            z = (h - t) * (k + 0.5) / 4
            b.box((w / 2 - pw + 0.02, -d / 2, z - 0.005), (w / 2 - 0.03, -d / 2 + 0.02, z + 0.005), 0)
        b.box((-w / 2 + 0.01, -d / 2 + 0.03, 0), (-w / 2 + 0.04, d / 2 - 0.03, h - t), 0)
        return
    thick = rng.uniform(0.03, 0.08)
    b.legs(rng, w, d, h - t, rng.uniform(0, 0.1), thick, 0)
    if rng.random() < 0.35:  # a lower shelf
        z = rng.uniform(0.1, 0.3)
        b.box((-w / 2 + thick, -d / 2 + thick, z), (w / 2 - thick, d / 2 - thick, z + t), int(rng.integers(0, 2)))


def _seat_with_back(b: _Builder, rng, w, d, hs, t, arms: bool) -> None:
    """A seat on four legs, a back of posts and slats or one panel, optionally arms: chairs and benches."""
    thick = rng.uniform(0.025, 0.06)
    b.legs(rng, w, d, hs - t, rng.uniform(0, 0.04), thick, 0)
    b.box((-w / 2, -d / 2, hs - t), (w / 2, d / 2, hs), 1 if rng.random() < 0.5 else 0)
    hb = rng.uniform(0.3, 0.6)
    y0 = d / 2 - thick
    if rng.random() < 0.4:  # one panel
        b.box((-w / 2, y0, hs), (w / 2, d / 2, hs + hb), int(rng.integers(0, 2)))
    else:  # two posts and slats
        for sx in (-1, 1):
            x = sx * (w / 2 - thick / 2)
            b.box((x - thick / 2, y0, hs), (x + thick / 2, d / 2, hs + hb), 0)
        n, xi = int(rng.integers(1, 5)), w / 2 - thick  # slats between the posts, not through them
        if rng.random() < 0.5:
            for k in range(n):
                z = hs + (hb - 0.05) * (k + 1) / (n + 1)
                b.box((-xi, y0, z - 0.03), (xi, d / 2, z + 0.03), 0)
            b.box((-xi, y0, hs + hb - 0.05), (xi, d / 2, hs + hb), 0)
        else:
            for k in range(n):
                x = -xi + 2 * xi * (k + 1) / (n + 1)
                b.box((x - 0.02, y0, hs), (x + 0.02, d / 2, hs + hb - 0.06), 0)
            b.box((-xi, y0, hs + hb - 0.06), (xi, d / 2, hs + hb), 0)
    if arms:
        ha = rng.uniform(0.18, 0.28)
        for sx in (-1, 1):
            x = sx * (w / 2 - thick / 2)
            b.box((x - thick / 2, -d / 2 + 0.02, hs), (x + thick / 2, -d / 2 + 0.06, hs + ha), 0)
            b.box((x - thick, -d / 2, hs + ha), (x + thick, y0, hs + ha + 0.03), 0)


def _chair(b, rng):
    w = rng.uniform(0.4, 0.6)
    _seat_with_back(b, rng, w, w * rng.uniform(0.9, 1.15), rng.uniform(0.4, 0.5), rng.uniform(0.03, 0.08),
                    rng.random() < 0.3)


def _bench(b, rng):
    w, d, hs = rng.uniform(1.0, 2.0), rng.uniform(0.3, 0.5), rng.uniform(0.4, 0.5)
    if rng.random() < 0.5:
        _seat_with_back(b, rng, w, d, hs, rng.uniform(0.03, 0.06), rng.random() < 0.3)
        return
    t = rng.uniform(0.03, 0.06)  # a slab on two panel legs
    b.box((-w / 2, -d / 2, hs - t), (w / 2, d / 2, hs), 0)
    inset = rng.uniform(0.05, 0.2)
    for sx in (-1, 1):
        x = sx * (w / 2 - inset)
        b.box((x - t / 2, -d / 2 + 0.03, 0), (x + t / 2, d / 2 - 0.03, hs - t), 0)


def _stool(b, rng):
    h, r = rng.uniform(0.45, 0.8), rng.uniform(0.15, 0.22)
    t = rng.uniform(0.03, 0.06)
    b.cylinder(0, 0, h - t, h, r, material=1, segments=20)
    if rng.random() < 0.4:  # one pole on a base disc
        b.cylinder(0, 0, 0.02, h - t, rng.uniform(0.02, 0.04))
        b.cylinder(0, 0, 0, 0.03, r * rng.uniform(0.8, 1.2), segments=20)
        return
    n = int(rng.integers(3, 5))
    for k in range(n):
        a = 2 * np.pi * k / n + np.pi / 4
        b.cylinder(r * 0.75 * np.cos(a), r * 0.75 * np.sin(a), 0, h - t, 0.018, segments=8)
    if n == 4 and rng.random() < 0.6:  # a footrest of four bars between the legs (at 45, 135, ... degrees)
        z, c = h * rng.uniform(0.25, 0.4), r * 0.75 / np.sqrt(2)
        for s in (-1, 1):
            b.box((-c, s * c - 0.01, z), (c, s * c + 0.01, z + 0.02))
            b.box((s * c - 0.01, -c + 0.01, z), (s * c + 0.01, c - 0.01, z + 0.02))


def _shelf(b, rng):
    w, d, h = rng.uniform(0.5, 1.5), rng.uniform(0.25, 0.45), rng.uniform(0.6, 2.1)
    t = rng.uniform(0.015, 0.035)
    for sx in (-1, 1):
        b.box((sx * w / 2 - t / 2, -d / 2, 0), (sx * w / 2 + t / 2, d / 2, h), 0)
    n = int(rng.integers(2, 7))
    for k in range(n):
        z = (h - t) * k / (n - 1)
        b.box((-w / 2 + t / 2, -d / 2, z), (w / 2 - t / 2, d / 2 - 0.01, z + t), 0)
    if rng.random() < 0.6:  # a back panel between the sides
        b.box((-w / 2 + t / 2, d / 2 - 0.01, 0), (w / 2 - t / 2, d / 2, h), 1)


def _cabinet(b, rng):
    w, d, h = rng.uniform(0.4, 1.6), rng.uniform(0.35, 0.6), rng.uniform(0.4, 1.3)
    z0 = rng.uniform(0.08, 0.2) if rng.random() < 0.5 else 0.0
    if z0:
        b.legs(rng, w, d, z0, 0.03, rng.uniform(0.03, 0.05), 0)
    b.box((-w / 2, -d / 2, z0), (w / 2, d / 2, z0 + h), 0)
    rows, cols = int(rng.integers(1, 5)), int(rng.integers(1, 3))
    for i in range(rows):
        for j in range(cols):
            x0, x1 = -w / 2 + w * j / cols + 0.02, -w / 2 + w * (j + 1) / cols - 0.02
            za, zb = z0 + h * i / rows + 0.02, z0 + h * (i + 1) / rows - 0.02
            b.box((x0, -d / 2 - 0.015, za), (x1, -d / 2, zb), 1)
    if rng.random() < 0.5:  # a top that overhangs
        o = rng.uniform(0.01, 0.04)
        b.box((-w / 2 - o, -d / 2 - o, z0 + h), (w / 2 + o, d / 2 + o, z0 + h + 0.03), 0)


def _bed(b, rng):
    w, length = rng.uniform(0.9, 1.9), rng.uniform(1.9, 2.2)
    zf = rng.uniform(0.15, 0.35)
    b.legs(rng, w, length, zf, 0.0, 0.06, 0)
    b.box((-w / 2, -length / 2, zf), (w / 2, length / 2, zf + 0.1), 0)
    b.box((-w / 2 + 0.03, -length / 2 + 0.03, zf + 0.1), (w / 2 - 0.03, length / 2 - 0.03,
                                                           zf + 0.1 + rng.uniform(0.12, 0.25)), 1)
    b.box((-w / 2, length / 2, 0), (w / 2, length / 2 + 0.06, zf + rng.uniform(0.5, 1.0)), 0)
    if rng.random() < 0.5:
        b.box((-w / 2, -length / 2 - 0.06, 0), (w / 2, -length / 2, zf + rng.uniform(0.2, 0.5)), 0)


def _sofa(b, rng):
    w, d = rng.uniform(0.8, 2.4), rng.uniform(0.8, 1.0)
    zl = rng.uniform(0.0, 0.15)
    if zl:
        b.legs(rng, w, d, zl, 0.05, 0.04, 0)
    hs, arm = zl + rng.uniform(0.3, 0.45), rng.uniform(0.08, 0.25)
    b.box((-w / 2, -d / 2, zl), (w / 2, d / 2, hs), 1)
    back = rng.uniform(0.15, 0.3)
    b.box((-w / 2, d / 2 - back, hs), (w / 2, d / 2, hs + rng.uniform(0.3, 0.5)), 1)
    if rng.random() < 0.85:  # arms, in front of the back
        ha = rng.uniform(0.15, 0.3)
        for sx in (-1, 1):
            b.box((sx * w / 2 - (arm if sx > 0 else 0), -d / 2, hs),
                  (sx * w / 2 + (arm if sx < 0 else 0), d / 2 - back, hs + ha), 1)
    n = int(rng.integers(1, 4))  # seat cushions
    inner = w - 2 * arm
    for k in range(n):
        x0 = -inner / 2 + inner * k / n
        b.box((x0 + 0.01, -d / 2 + 0.02, hs), (x0 + inner / n - 0.01, d / 2 - back - 0.01, hs + 0.08), 1)


def _lamp(b, rng):
    h = rng.uniform(0.35, 1.8)
    rb = rng.uniform(0.08, 0.2)
    b.cylinder(0, 0, 0, 0.03, rb, material=0, segments=20)
    b.cylinder(0, 0, 0.03, h * 0.7, rng.uniform(0.01, 0.025), material=0, segments=8)
    r0, r1 = rng.uniform(0.1, 0.25), rng.uniform(0.06, 0.2)
    b.cylinder(0, 0, h * 0.7, h, r0, r1, material=1, segments=20)


_MAKERS = {"table": _table, "chair": _chair, "stool": _stool, "shelf": _shelf, "bed": _bed, "sofa": _sofa,
           "cabinet": _cabinet, "desk": lambda b, rng: _table(b, rng, desk=True), "bench": _bench, "lamp": _lamp}


def procedural_mesh(shape_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The shape named by a ``procedural_ids`` id: (verts (V, 3) in metres, faces (F, 3), each face's material
    (F,) in {0, 1}, the two materials' colours (2, 3): frame, and cushion or panel)."""
    kind = shape_id.split("-")[1] if shape_id.count("-") >= 2 else ""
    if kind not in _MAKERS:
        raise ValueError(f"{shape_id}: not a procedural shape id (kinds: {', '.join(KINDS)})")
    rng = np.random.default_rng(int(hashlib.sha1(shape_id.encode()).hexdigest()[:12], 16))
    b = _Builder()
    _MAKERS[kind](b, rng)
    colors = np.stack([rng.uniform(0.15, 0.9, 3), rng.uniform(0.1, 0.95, 3)]).astype(np.float32)
    return (np.concatenate(b.verts), np.concatenate(b.faces).astype(np.int64),
            np.concatenate(b.material).astype(np.int64), colors)
