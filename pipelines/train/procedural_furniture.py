"""Procedural furniture for the data builders: tables, chairs, stools, shelves, beds, sofas, cabinets, desks,
benches and lamps assembled from boxes and cylinders, and the household objects beside them (vases and pots,
bottles, glasses and cups, potted plants, appliances) from surfaces of revolution and ellipsoids; their proportions,
part counts and colours drawn from a generator seeded by the shape id (a rebuild makes the same shape).
Unlimited training shapes, CC0 by construction: the one source of more shapes this offline machine has
(bench/RESULTS.md, issue 21: the single-view model's learning curve had not flattened at 704 furniture shapes;
900 of the ten furniture kinds beside them raised voxel IoU by 0.05 and every head's F1).

Contract: ``procedural_ids(count) -> list[str]``; ``procedural_mesh(shape_id) -> (verts, faces, face_material,
colors)`` in metres, z up, the floor at z = 0 (``mesh_library`` makes the catalog and the ``Parts``, centred and
scaled like any shape).
"""
from __future__ import annotations

import hashlib

import numpy as np

KINDS = ("table", "chair", "stool", "shelf", "bed", "sofa", "cabinet", "desk", "bench", "lamp",
         "vase", "bottle", "plant", "appliance")
COUNT = 2800
"""Shapes in the catalog, 200 a kind (``--limit`` builds fewer, spread over the kinds). The first ten kinds' ids
are those of the 2000-shape catalog before the last four kinds came, so packs built then stay valid."""


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

    def lathe(self, x, y, profile, material: int = 0, segments: int = 16, scale=(1.0, 1.0)) -> None:
        """A closed surface of revolution about the vertical through (x, y): ``profile`` is (radius, z) from the
        bottom ring to the top one (radii > 0), each end capped; ``scale`` stretches it in x and y (ellipses)."""
        prof = np.asarray(profile, float)
        k, s = len(prof), segments
        a = np.linspace(0, 2 * np.pi, s, endpoint=False)
        ring = np.stack([np.cos(a) * scale[0], np.sin(a) * scale[1]], 1)
        v = np.concatenate([np.c_[x + r * ring[:, 0], y + r * ring[:, 1], np.full(s, z)] for r, z in prof]
                           + [[[x, y, prof[0, 1]], [x, y, prof[-1, 1]]]])
        i, j = np.arange(s), (np.arange(s) + 1) % s
        sides = [np.c_[i + m * s, j + m * s, j + (m + 1) * s] for m in range(k - 1)]
        sides += [np.c_[i + m * s, j + (m + 1) * s, i + (m + 1) * s] for m in range(k - 1)]
        caps = [np.c_[np.full(s, k * s), j, i], np.c_[np.full(s, k * s + 1), i + (k - 1) * s, j + (k - 1) * s]]
        self._add(v, np.concatenate(sides + caps), material)

    def cylinder(self, x, y, z0, z1, r0, r1=None, material: int = 0, segments: int = 16) -> None:
        """A vertical frustum from (x, y, z0) with radius ``r0`` to z1 with ``r1`` (default the same), capped."""
        self.lathe(x, y, [(r0, z0), (r0 if r1 is None else r1, z1)], material, segments)

    def ellipsoid(self, centre, radii, material: int = 0, rings: int = 8, segments: int = 12) -> None:
        """An ellipsoid with semi-axes ``radii`` (x, y, z), as a lathe of a half ellipse (the poles tiny caps)."""
        t = np.linspace(0.15, np.pi - 0.15, rings)
        cx, cy, cz = centre
        rx, ry, rz = radii
        self.lathe(cx, cy, np.c_[np.sin(t), cz - rz * np.cos(t)], material, segments, (rx, ry))

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


def _profile(heights, radii, rings: int = 14):
    """A smooth lathe profile through control radii at the given heights (cosine-eased between them)."""
    z = np.linspace(heights[0], heights[-1], rings)
    k = np.clip(np.searchsorted(heights, z, side="right") - 1, 0, len(heights) - 2)
    u = (z - np.asarray(heights)[k]) / (np.asarray(heights)[k + 1] - np.asarray(heights)[k])
    u = (1 - np.cos(np.pi * u)) / 2
    r = np.asarray(radii)[k] * (1 - u) + np.asarray(radii)[k + 1] * u
    return np.c_[np.maximum(r, 0.004), z]


def _vase(b, rng):
    """Vases, pots, urns and bowls: a belly between a foot and a lip."""
    h = rng.uniform(0.15, 0.9)
    rb = h * rng.uniform(0.15, 0.45)
    if rng.random() < 0.25:  # a wide, low bowl or planter
        h *= rng.uniform(0.3, 0.6)
    radii = [rb * rng.uniform(lo, hi) for lo, hi in ((0.5, 1.0), (0.9, 1.4), (0.4, 1.3), (0.5, 1.2))]
    b.lathe(0, 0, _profile([0, h * rng.uniform(0.2, 0.5), h * rng.uniform(0.6, 0.85), h], radii), 0, 24)


def _bottle(b, rng):
    """Bottles, wine glasses, cups and candles."""
    h = rng.uniform(0.12, 0.4)
    r = h * rng.uniform(0.12, 0.3)
    form = rng.integers(0, 4)
    if form == 0:  # bottle: body, shoulder, neck
        zs = h * rng.uniform(0.5, 0.7)
        rn = r * rng.uniform(0.2, 0.4)
        b.lathe(0, 0, _profile([0, zs, zs + h * 0.12, h], [r, r, rn, rn]), 0, 20)
    elif form == 1:  # stemmed glass: foot, stem, bowl
        zb = h * rng.uniform(0.3, 0.55)
        b.cylinder(0, 0, 0, h * 0.03, r * rng.uniform(0.7, 1.0), material=0, segments=20)
        b.cylinder(0, 0, h * 0.03, zb, r * 0.08, material=0, segments=8)
        b.lathe(0, 0, _profile([zb, zb + (h - zb) * 0.4, h], [r * 0.2, r * rng.uniform(0.8, 1.1), r]), 1, 20)
    elif form == 2:  # cup or mug with a handle
        b.cylinder(0, 0, 0, h * 0.6, r * rng.uniform(0.7, 0.9), r, material=0, segments=20)
        hz, t = h * 0.3, r * 0.15
        b.box((r * 0.9, -t / 2, hz - h * 0.15), (r * 1.5, t / 2, hz - h * 0.15 + t), 1)
        b.box((r * 0.9, -t / 2, hz + h * 0.15 - t), (r * 1.5, t / 2, hz + h * 0.15), 1)
        b.box((r * 1.5 - t, -t / 2, hz - h * 0.15), (r * 1.5, t / 2, hz + h * 0.15), 1)
    else:  # candle on a holder
        b.cylinder(0, 0, 0, h * 0.08, r * rng.uniform(1.2, 2.0), material=0, segments=20)
        b.cylinder(0, 0, h * 0.08, h, r * 0.6, material=1, segments=16)


def _plant(b, rng):
    """A pot with foliage: a bush of leaf clusters, or a cactus of columns."""
    hp = rng.uniform(0.12, 0.4)
    rp = hp * rng.uniform(0.4, 0.8)
    b.cylinder(0, 0, 0, hp, rp * rng.uniform(0.65, 0.85), rp, material=0, segments=20)
    if rng.random() < 0.3:  # cactus: a column and a few arms, rounded tops
        hc, rc = hp * rng.uniform(1.5, 4.0), rp * rng.uniform(0.3, 0.6)
        b.cylinder(0, 0, hp, hp + hc, rc, material=1, segments=12)
        b.ellipsoid((0, 0, hp + hc), (rc, rc, rc * 0.8), 1)
        for _ in range(int(rng.integers(0, 3))):
            a, z = rng.uniform(0, 2 * np.pi), hp + hc * rng.uniform(0.3, 0.7)
            x, y, ra = (rc * 1.8) * np.cos(a), (rc * 1.8) * np.sin(a), rc * 0.6
            b.ellipsoid((x * 0.6, y * 0.6, z), (rc, rc, ra), 1)
            b.cylinder(x, y, z, z + hc * rng.uniform(0.2, 0.4), ra, material=1, segments=10)
        return
    hf = hp * rng.uniform(1.0, 4.0)  # height of the foliage above the pot
    b.cylinder(0, 0, hp, hp + hf * 0.6, rp * 0.08, material=1, segments=8)
    size = max(rp * 1.5, hf * 0.45)
    for _ in range(int(rng.integers(4, 12))):  # leaf clusters around the stem's top, overlapping into one crown
        s = rng.uniform(0.25, 0.5) * size
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, 1.3) * s
        z = hp + hf * rng.uniform(0.4, 1.0) - s * 0.3
        b.ellipsoid((d * np.cos(a), d * np.sin(a), z), (s, s * rng.uniform(0.6, 1.0), s * rng.uniform(0.4, 0.9)), 1)


def _appliance(b, rng):
    """Refrigerators, ovens, washing machines and radiators: a body with handles, feet, knobs or fins."""
    if rng.random() < 0.3:  # radiator: fins between two bars
        w, h, d = rng.uniform(0.4, 1.4), rng.uniform(0.3, 0.9), rng.uniform(0.06, 0.12)
        z0 = rng.uniform(0.05, 0.2)
        n = int(rng.integers(6, 25))
        t = min(w / n * 0.6, 0.04)
        for k in range(n):
            x = -w / 2 + w * (k + 0.5) / n
            b.box((x - t / 2, -d / 2, z0), (x + t / 2, d / 2, z0 + h), 0)
        for z in (z0 + 0.02, z0 + h - 0.04):  # the pipes along the bottom and top, through the fins
            b.box((-w / 2 - 0.03, -0.015, z), (w / 2 + 0.03, 0.015, z + 0.02), 1)
        for sx in (-1, 1):  # two feet
            b.box((sx * (w / 2 - 0.05) - 0.015, -d / 2, 0), (sx * (w / 2 - 0.05) + 0.015, d / 2, z0), 1)
        return
    w, d, h = rng.uniform(0.45, 0.9), rng.uniform(0.45, 0.75), rng.uniform(0.5, 2.0)
    z0 = rng.uniform(0.01, 0.05)
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.box((sx * w / 2 - sx * 0.06 - 0.02, sy * d / 2 - sy * 0.06 - 0.02, 0),
                  (sx * w / 2 - sx * 0.06 + 0.02, sy * d / 2 - sy * 0.06 + 0.02, z0), 1)
    b.box((-w / 2, -d / 2, z0), (w / 2, d / 2, z0 + h), 0)
    doors = int(rng.integers(1, 3)) if h > 1.0 else 1
    for k in range(doors):  # a handle on each door's front
        za, zb = z0 + h * k / doors, z0 + h * (k + 1) / doors
        x = w / 2 - 0.06
        b.box((x - 0.015, -d / 2 - 0.04, za + (zb - za) * 0.3), (x + 0.015, -d / 2, za + (zb - za) * 0.7), 1)
    if h < 1.0 and rng.random() < 0.6:  # a porthole or a row of knobs on the front
        if rng.random() < 0.5:
            r = min(w, h) * 0.3
            b.box((-r, -d / 2 - 0.02, z0 + h * 0.45 - r), (r, -d / 2, z0 + h * 0.45 + r), 1)
        else:
            for k in range(int(rng.integers(2, 6))):
                x = -w / 2 + 0.08 + k * 0.08
                b.box((x - 0.02, -d / 2 - 0.03, z0 + h - 0.08), (x + 0.02, -d / 2, z0 + h - 0.04), 1)


_MAKERS = {"table": _table, "chair": _chair, "stool": _stool, "shelf": _shelf, "bed": _bed, "sofa": _sofa,
           "cabinet": _cabinet, "desk": lambda b, rng: _table(b, rng, desk=True), "bench": _bench, "lamp": _lamp,
           "vase": _vase, "bottle": _bottle, "plant": _plant, "appliance": _appliance}


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
