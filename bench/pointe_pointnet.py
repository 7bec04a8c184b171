"""P-FID and P-IS analogues for the Point-E quality bench: a small PointNet classifier of the open data's categories.

Point-E's P-FID / P-IS use PointNet++ trained on ModelNet40 (40 classes, ~12k CAD models, xyz only). Here the
classifier is a plain PointNet (Qi et al. 2017: a shared per-point MLP, max pooling, an MLP head; no input
transform, no set abstraction) trained in seconds on the pack's training shapes with their Sweet Home 3D
categories (Living room, Kitchen, Exterior, ...: about 10 rooms and kinds, overlapping, some vague such as
"Miscellaneous"), xyz only, 1024 random points of each shape per step. So the numbers compare runs of this bench
with each other, not with the paper's.

* P-FID: the Frechet distance between Gaussians fitted to the penultimate features (``FEATURES``-d) of generated
  and of true held-out clouds (with ~80 held-out shapes the estimate is biased upwards; compare like with like).
* P-IS: exp(E_x KL(p(y|x) || p(y))) of the classifier's softmax over generated clouds (at most the number of
  categories).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

FEATURES = 128


class PointNet(nn.Module):
    def __init__(self, classes: int, width: int = 256):
        super().__init__()
        self.point_mlp = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(),
                                       nn.Linear(128, width))
        self.head = nn.Sequential(nn.Linear(width, FEATURES), nn.ReLU())
        self.classify = nn.Linear(FEATURES, classes)

    def features(self, xyz: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, FEATURES): max-pooled point features through the first head layer."""
        return self.head(self.point_mlp(xyz).amax(1))

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(xyz))


def train_pointnet(data, steps: int = 1500, points: int = 1024, batch: int = 64, device="cpu", seed: int = 0):
    """(classifier, category names, held-out accuracy) trained on ``data.train`` shapes' categories."""
    names = sorted(set(data.categories))
    labels = torch.tensor([names.index(c) for c in data.categories], device=device)
    train = torch.as_tensor(data.train, device=device)
    gen = torch.Generator(device).manual_seed(seed)
    torch.manual_seed(seed)
    net = PointNet(len(names)).to(device)
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(steps):
        shapes = train[torch.randint(0, len(train), (batch,), generator=gen, device=device)]
        idx = torch.randint(0, data.xyz.shape[1], (batch, points), generator=gen, device=device)
        xyz = torch.gather(data.xyz[shapes], 1, idx[..., None].expand(-1, -1, 3))
        loss = nn.functional.cross_entropy(net(xyz), labels[shapes])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    net.eval().requires_grad_(False)
    test = torch.as_tensor(data.test, device=device)
    with torch.no_grad():
        accuracy = float((net(data.xyz[test]).argmax(1) == labels[test]).float().mean()) if len(test) else float("nan")
    return net, names, accuracy


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to (N, D) and (M, D) features (the FID formula)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrt(cov_a cov_b) from the eigenvalues of the product (real and >= 0 up to round-off)
    eig = np.linalg.eigvals(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b)
                 - 2 * np.sqrt(np.clip(eig.real, 0, None)).sum())


@torch.no_grad()
def p_scores(net, generated: torch.Tensor, reference: torch.Tensor) -> dict:
    """P-FID of (B, K, 3) generated clouds against (B', N, 3) true ones, and P-IS of the generated."""
    fg, fr = net.features(generated.float()), net.features(reference.float())
    probs = torch.softmax(net.classify(fg), -1).double()
    marginal = probs.mean(0, keepdim=True)
    kl = (probs * (probs.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(-1)
    return {"P-FID": frechet_distance(fg.double().cpu().numpy(), fr.double().cpu().numpy()),
            "P-IS": float(kl.mean().exp())}
