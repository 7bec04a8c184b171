"""The embedded priors' training data in memory: ``priors.npz`` (``python -m pipelines priors data build``)
loaded onto a device, batches of captioned renders on random backgrounds (with DreamFusion's view suffix
from each render's camera), and the frozen text encoder's states of every caption.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

@dataclass
class PriorData:
    """The pack's tensors, all on one device (the batches are drawn there: no host round trip per step)."""
    rgba: "object"  # (S, V, H, W, 4) uint8
    train: "object"  # (S_train,) long: shape indices of the train split
    test: "object"
    captions: list[str]  # unique captions; index 0 is "" (the unconditional one); then their view variants
    shape_caps: "object"  # (S, K) long caption indices, padded with -1
    meta: dict
    sha256: str
    ids: list[str]  # shape ids, in the order of ``rgba`` (keys of ``meta``)
    view_label: "object" = None  # (S, V) long index into VIEW_SUFFIXES of each render, -1 where the front is unknown
    n_base: int = 0  # captions before the view variants; the variant of caption i for view k is view_caption(i, k)

    def view_caption(self, cap, view):
        """Index of caption ``cap`` (>= 1) with the suffix of view ``view`` (index into VIEW_SUFFIXES)."""
        return self.n_base + view * (self.n_base - 1) + cap - 1


VIEW_SUFFIXES = ("front", "side", "back")
"""The views a render of the data can be (its elevations stay under DreamFusion's 60-degree 'overhead')."""
FRONT_AZIMUTH = {"sh3d": 270.0}
"""Azimuth (core.cameras) of the camera that sees a model's front, per source: Sweet Home 3D models face -y
(checked on renders of chairs, sofas, beds and cabinets); pybullet objects have no agreed front."""


def load_data(path: str | Path, device) -> PriorData:
    import torch

    from ..core.priors.prompts import DEFAULT_TEMPLATE, view_direction, view_prompt

    path = Path(path)
    with np.load(path) as z:
        rgba, ids, splits, meta = z["rgba"], list(map(str, z["ids"])), list(map(str, z["splits"])), json.loads(str(z["meta"]))
        angles = (z["azimuth"], z["elevation"]) if "azimuth" in z.files else None
    caps = [""]
    index: dict[str, int] = {"": 0}
    rows = []
    for i in ids:
        row = []
        for c in meta[i]["captions"]:
            if c not in index:
                index[c] = len(caps)
                caps.append(c)
            row.append(index[c])
        rows.append(row)
    k = max(len(r) for r in rows)
    shape_caps = torch.tensor([r + [-1] * (k - len(r)) for r in rows])
    tr = [n for n, s in enumerate(splits) if s == "train"]
    te = [n for n, s in enumerate(splits) if s != "train"]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    n_base = len(caps)
    labels = torch.full(rgba.shape[:2], -1, dtype=torch.long)
    if angles is not None:  # older packs have no cameras: no view variants
        caps += [view_prompt(c, v, DEFAULT_TEMPLATE) for v in VIEW_SUFFIXES for c in caps[1:n_base]]
        for n, i in enumerate(ids):
            front = FRONT_AZIMUTH.get(meta[i].get("source", ""))
            if front is not None:
                labels[n] = torch.tensor([VIEW_SUFFIXES.index(view_direction(float(e), float(a), front_azimuth_deg=front))
                                          for a, e in zip(angles[0][n], angles[1][n])])
    dev = torch.device(device)
    return PriorData(torch.from_numpy(rgba).to(dev), torch.tensor(tr or te, device=dev),
                     torch.tensor(te or tr, device=dev), caps, shape_caps.to(dev), meta, sha, ids, labels.to(dev), n_base)


def sample_batch(data: PriorData, pool, b: int, gen, white_bg: float, size: int, distinct: bool = False,
                 bank=None, view_share: float = 0.0):
    """(images (b, size, size, 3) in [0, 1] on backgrounds, caption indices (b,), shape indices (b,)), all drawn
    with ``gen``, a generator on the data's device (CPU draws copied to a GPU made every step wait for the
    previous one). Textured backgrounds come from ``bank`` ((N, H, W, 3) made once) when given, else are made
    here. A share ``view_share`` of the captions of renders with a known view get its suffix."""
    import torch

    from ..core.backgrounds import random_backgrounds
    from ..core.priors.stable_diffusion import resize_square

    dev = data.rgba.device

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device=dev)

    if distinct and b <= len(pool):
        shapes = pool[torch.randperm(len(pool), generator=gen, device=dev)[:b]]
    else:
        shapes = pool[torch.randint(len(pool), (b,), generator=gen, device=dev)]
    views = torch.randint(data.rgba.shape[1], (b,), generator=gen, device=dev)
    caps = data.shape_caps[shapes]
    n_caps = (caps >= 0).sum(1)
    pick = (rand(b) * n_caps).long().clamp_max(n_caps - 1)
    cap = caps.gather(1, pick[:, None])[:, 0]
    if view_share > 0 and data.view_label is not None:
        label = data.view_label[shapes, views]
        use = (rand(b) < view_share) & (label >= 0)
        cap = torch.where(use, data.view_caption(cap, label.clamp_min(0)), cap)
    x = data.rgba[shapes, views].float() / 255.0  # (b, H, W, 4)
    h, w = x.shape[1:3]
    if bank is None:
        cpu_gen = gen if gen.device.type == "cpu" else torch.Generator().manual_seed(int(rand(1).mul(2 ** 31)))
        bg = random_backgrounds(b, h, w, cpu_gen)[0].to(dev)  # made image by image on the CPU: slow
    else:  # a random bank image, flipped or transposed
        bg = bank[torch.randint(len(bank), (b,), generator=gen, device=dev)]
        bg = torch.where((rand(b) < 0.5).view(b, 1, 1, 1), bg.transpose(1, 2), bg)
    solid = rand(b, 1, 1, 3).expand(b, h, w, 3)
    u = rand(b, 1, 1, 1)
    bg = torch.where(u < white_bg, torch.ones_like(bg), torch.where(u < (1 + white_bg) / 2, solid, bg))
    flip = rand(b) < 0.5
    img = x[..., :3] * x[..., 3:] + bg * (1 - x[..., 3:])
    img = torch.where(flip.view(b, 1, 1, 1), img.flip(2), img)
    if h != size:
        img = resize_square(img.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)
    return img.clamp(0, 1), cap, shapes


def encode_captions(captions: list[str], text_encoder, chunk: int = 256):
    """Token states (C, L, D) and pooled embeddings (C, D) of every caption, once."""
    import torch

    states, pooled = [], []
    from ..core.priors.text_encoder import pool

    for i in range(0, len(captions), chunk):
        s, m = text_encoder.encode(captions[i:i + chunk])
        states.append(s)
        pooled.append(pool(s, m))
    return torch.cat(states), torch.cat(pooled)
