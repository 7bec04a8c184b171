"""Packed single-view training data: the reader that Train mode uses (``pipelines.train.single_view_data``
writes the packs) and its train / held-out split, plus the view-frame maths, the object crop and the credits
that training and inference share.

Contract: a pack is one ``.npz`` per source: ``ids``/``splits``/``sources`` (S,), ``jpeg`` + ``jpeg_offsets``
(S * V object-cropped RGB views on white, JPEG), ``occupancy`` (S, V, R^3 / 8) packed bits in each view's
frame, ``points`` (S, P, 3) float16 canonical surface samples, ``view_params`` (S, V, 5): theta, scale and
centre of each view frame (``to_view``), ``resolution`` and ``meta`` (JSON: name, license, creator per id);
optionally ``normals`` (S, P, 3) float16 unit normals of the points (packs written before 2026-12-01 lack them).
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def to_view(points, theta, scale, center):
    """Canonical points (..., N, 3) -> view frame, for arrays (NumPy or torch) of view parameters theta,
    scale (...,) and center (..., 3) (or one view's floats and (3,) centre)."""
    lib = np if isinstance(points, np.ndarray) else __import__("torch")
    theta, scale = lib.as_tensor(theta) if lib is not np else np.asarray(theta), (
        lib.as_tensor(scale) if lib is not np else np.asarray(scale))
    center = lib.as_tensor(center) if lib is not np else np.asarray(center)
    c, s = lib.cos(theta)[..., None], lib.sin(theta)[..., None]
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    out = lib.stack([c * x - s * y, s * x + c * y, z], -1)
    return scale[..., None, None] * (out - center[..., None, :])


def from_view(points, theta, scale, center):
    """Inverse of ``to_view`` for one view (points (N, 3))."""
    import torch

    p = points / scale + torch.as_tensor(center, dtype=points.dtype)
    c, s = math.cos(theta), math.sin(theta)
    return torch.stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1], p[:, 2]], -1)


def crop_to_object(rgba, size: int, margin: float = 0.08, threshold: float = 0.5):
    """(H, W, 4) RGBA (uint8 or float) -> (size, size, 3) float RGB on white: the square around the pixels
    whose alpha exceeds ``threshold``, with ``margin`` of its side added on each side. None if none does."""
    import torch
    import torch.nn.functional as F

    img = torch.as_tensor(np.asarray(rgba))
    img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
    alpha = img[..., 3]
    ys, xs = torch.nonzero(alpha > threshold, as_tuple=True)
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = int(math.ceil(max(y1 - y0, x1 - x0) * (1 + 2 * margin))) + 1
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    top, left = cy - side // 2, cx - side // 2
    rgb = img[..., :3] * alpha[..., None] + (1 - alpha[..., None])  # onto white
    canvas = torch.ones(side, side, 3)
    sy0, sx0 = max(0, top), max(0, left)
    sy1, sx1 = min(img.shape[0], top + side), min(img.shape[1], left + side)
    canvas[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = rgb[sy0:sy1, sx0:sx1]
    out = F.interpolate(canvas.permute(2, 0, 1)[None], size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    return out[0].permute(1, 2, 0).clamp(0, 1)


@dataclass
class ShapeData:
    """Packed shapes loaded for training: S shapes x V views, on one device."""
    ids: list[str]
    splits: list[str]
    sources: list[str]
    images: "object"  # (S, V, 3, H, W) uint8
    occupancy: "object"  # (S, V, R, R, R) bool, view frames
    points: "object"  # (S, P, 3) float32, canonical frame
    view_params: "object"  # (S, V, 5): theta, scale, centre xyz
    meta: dict
    normals: "object" = None  # (S, P, 3) float32 unit normals of ``points`` (canonical frame), if the pack has them

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, keep: list[int]) -> "ShapeData":
        import torch

        idx = torch.as_tensor(keep, dtype=torch.long, device=self.images.device)
        pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
        return ShapeData(pick(self.ids), pick(self.splits), pick(self.sources), self.images[idx],
                         self.occupancy[idx], self.points[idx], self.view_params[idx],
                         {i: self.meta[i] for i in pick(self.ids)},
                         None if self.normals is None else self.normals[idx])

    def targets(self, shape_idx, view_idx):
        """(occupancy (B, R, R, R), points (B, P, 3)) in the chosen views' frames."""
        p = self.view_params[shape_idx, view_idx]
        pts = to_view(self.points[shape_idx], p[:, 0], p[:, 1], p[:, 2:5])
        return self.occupancy[shape_idx, view_idx], pts

    def target_normals(self, shape_idx, view_idx):
        """(B, P, 3) unit normals of ``targets``' points in the chosen views' frames, or None without normals."""
        if self.normals is None:
            return None
        p = self.view_params[shape_idx, view_idx]
        return to_view(self.normals[shape_idx], p[:, 0], p[:, 1].new_ones(len(p)), p[:, 2:5] * 0)


def split_shapes(data: ShapeData, sources: str, eval_sources: str = "",
                 train_fraction: float = 1.0) -> tuple[list[int], list[int], str]:
    """(train shape indices, held-out shape indices, a note when the held-out set had to fall back) of the
    shapes from ``sources`` (comma list or "all"; held out: from ``eval_sources``, empty: the same)."""
    import hashlib

    def wanted(names: str):
        names = {s.strip() for s in names.split(",") if s.strip()}
        return lambda src: "all" in names or src in names

    use_train, use_test = wanted(sources), wanted(eval_sources or sources)
    train = [i for i, (sp, src) in enumerate(zip(data.splits, data.sources)) if sp == "train" and use_train(src)]
    test = [i for i, (sp, src) in enumerate(zip(data.splits, data.sources)) if sp == "test" and use_test(src)]
    if train_fraction < 1.0:  # a fixed order by hash, so smaller fractions are subsets of larger ones
        order = sorted(train, key=lambda i: hashlib.sha1(data.ids[i].encode()).hexdigest())
        train = sorted(order[:max(1, round(len(order) * train_fraction))])
    note = ""
    if not test:
        test, note = train[:8], "no held-out shapes in this data: scores are on training shapes"
    return train, test, note


def scored_on(note: str) -> str:
    """What scores were computed on, from ``split_shapes``' note (not empty when it fell back)."""
    return "training shapes (no held-out shapes in the data)" if note else "held-out shapes"


def load_packs(paths: list[Path], device="cpu", image_size: int = 0) -> ShapeData:
    """Loads pack files (all views; images resized to ``image_size`` if given) into one ``ShapeData``."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    parts = []
    for path in paths:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
        offs, blob = data["jpeg_offsets"], data["jpeg"]
        imgs = np.stack([np.asarray(Image.open(io.BytesIO(blob[offs[i]:offs[i + 1]].tobytes())).convert("RGB"))
                         for i in range(len(offs) - 1)])
        S, V = data["occupancy"].shape[:2]
        R = int(data["resolution"])
        images = torch.from_numpy(imgs).view(S, V, *imgs.shape[1:]).permute(0, 1, 4, 2, 3)
        if image_size and images.shape[-1] != image_size:
            x = F.interpolate(images.flatten(0, 1).float(), size=(image_size, image_size), mode="bilinear",
                              antialias=True, align_corners=False)
            images = x.round().clamp(0, 255).to(torch.uint8).view(S, V, 3, image_size, image_size)
        occ = torch.from_numpy(np.unpackbits(data["occupancy"], axis=-1)[..., :R ** 3].astype(bool)).view(S, V, R, R, R)
        parts.append(ShapeData(list(map(str, data["ids"])), list(map(str, data["splits"])),
                               list(map(str, data["sources"])), images, occ,
                               torch.from_numpy(data["points"].astype(np.float32)),
                               torch.from_numpy(data["view_params"]), json.loads(str(data["meta"])),
                               torch.from_numpy(data["normals"].astype(np.float32)) if "normals" in data else None))
    if not parts:
        raise ValueError("no pack files given")
    V = min(p.images.shape[1] for p in parts)
    cat = lambda xs: torch.cat(xs).to(device)  # noqa: E731
    return ShapeData(sum((p.ids for p in parts), []), sum((p.splits for p in parts), []),
                     sum((p.sources for p in parts), []), cat([p.images[:, :V] for p in parts]),
                     cat([p.occupancy[:, :V] for p in parts]), cat([p.points for p in parts]),
                     cat([p.view_params[:, :V] for p in parts]), {k: v for p in parts for k, v in p.meta.items()},
                     cat([p.normals for p in parts]) if all(p.normals is not None for p in parts) else None)


def credits_markdown(meta: dict, title: str) -> str:
    """Markdown crediting the authors and licenses of the shapes in ``meta`` (id -> record)."""
    by_license: dict[str, dict[str, list[str]]] = {}
    for rec in meta.values():
        by_license.setdefault(rec["license"], {}).setdefault(rec.get("creator") or "unknown", []).append(rec["name"])
    lines = [f"# {title}", ""]
    urls = {"CC0": "https://creativecommons.org/publicdomain/zero/1.0/",
            "CC-BY 3.0": "https://creativecommons.org/licenses/by/3.0/",
            "CC-BY 3.0 US": "https://creativecommons.org/licenses/by/3.0/us/",
            "zlib": "https://zlib.net/zlib_license.html"}
    for lic in sorted(by_license):
        lines.append(f"## {lic}" + (f" ({urls[lic]})" if lic in urls else ""))
        for creator, names in sorted(by_license[lic].items()):
            lines.append(f"- {creator}: {', '.join(sorted(set(names)))}")
        lines.append("")
    lines.append(SOURCES_NOTE)
    return "\n".join(lines)


SOURCES_NOTE = (
    "Sources: Sweet Home 3D furniture libraries as packaged by Debian (`sweethome3d-furniture`; Blend Swap models "
    "cleaned and converted by Emmanuel Puybaret / eTeks; Kator Legaz CC-BY 3.0 US; Reallusion CC-BY 3.0 US; "
    "Scopia CC-BY 3.0; Blend Swap CC0 and CC-BY 3.0 models by the authors named above), Sweet Home 3D's own default "
    "catalog (`sweethome3d`'s jar; models by eTeks, CC-BY 3.0), pybullet_data (bullet3, "
    "zlib license), and this project's procedural furniture ('gen3d (generated)'; "
    "`pipelines/train/procedural_furniture.py`, CC0). Renders, occupancy grids and samples here were made from "
    "those models by this project's code (`python -m pipelines single_view data build`).")


