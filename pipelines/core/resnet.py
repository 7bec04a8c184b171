"""ResNet-18 (He et al. 2016) in plain PyTorch, parameter names as in torchvision, without torchvision.

Contract: ``ResNet18()(images)`` takes (B, 3, H, W) ImageNet-normalised images (``normalize``) and returns
(B, 512) pooled features (no classifier). ``load_torchvision_weights(model, path)`` loads a torchvision
``resnet18`` state dict (e.g. ``resnet18-f37072fd.pth``) from a local file, dropping ``fc.*``. ``width``
scales every stage (64 is the real network; tests use less).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> ImageNet-normalised."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w))
        self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_features = 8 * w
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stages' outputs: (B, width * 2^i, H / 2^(i+2), W / 2^(i+2)) for i = 0..3."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        maps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            maps.append(x)
        return maps

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 8 width, H / 32, W / 32): the last block's output, before the pool."""
        return self.feature_maps(x)[-1]

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """The (B, 8 width) feature of the last block's output."""
        return torch.flatten(self.avgpool(fmap), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(x))


def load_torchvision_weights(model: ResNet18, path: str | Path) -> list[str]:
    """Loads torchvision-format ResNet-18 weights from a local ``.pth`` (no download, no torchvision).

    Returns the names of the checkpoint entries that were not used (the classifier ``fc.*``). Raises
    ``ValueError`` when the file is not a ResNet-18 state dict of the model's width.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    unused = [k for k in state if k.startswith("fc.")]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        raise ValueError(f"{path}: not torchvision ResNet-18 weights for this model "
                         f"(missing {missing[:3]}, wrong shape {wrong[:3]})")
    model.load_state_dict({k: state[k] for k in own})
    return unused
