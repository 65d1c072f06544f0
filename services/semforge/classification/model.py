"""The shape classifier network: a small VGG-style CNN on 2-channel crops (gray + particle mask).

The seed used ResNet34 on 224 px crops (~15 crops/s on this CPU): far too slow
for 300 particles per image.  Four 3x3 conv stages (BatchNorm + ReLU, max
pooling) and global average pooling on 48 px crops run thousands of crops per
second on one core (``tests/bench/classifier_check.py --speed``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ShapeNet", "create_model", "ARCHS"]


def _block(cin: int, cout: int, n: int = 2) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for k in range(n):
        layers += [nn.Conv2d(cin if k == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
    return layers


class ShapeNet(nn.Module):
    """Crops ``(N, in_ch, S, S)`` -> logits ``(N, classes)``; ``softmax=True`` returns probabilities (export)."""

    def __init__(self, classes: int, *, in_ch: int = 2, width: int = 16, dropout: float = 0.2):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(in_ch, w), nn.MaxPool2d(2),
            *_block(w, 2 * w), nn.MaxPool2d(2),
            *_block(2 * w, 4 * w), nn.MaxPool2d(2),
            *_block(4 * w, 6 * w, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(6 * w, classes))
        self.softmax = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.features(x))
        return torch.softmax(z, dim=1) if self.softmax else z


ARCHS = {"shapenet": ShapeNet}


def create_model(arch: str = "shapenet", *, classes: int, **kw) -> nn.Module:
    """Build a classifier network by name; unknown names list the valid ones."""
    if arch not in ARCHS:
        raise ValueError(f"unknown classifier architecture {arch!r}; valid: {', '.join(ARCHS)}")
    return ARCHS[arch](classes, **kw)
