"""The UNet++ (segmentation-models-pytorch) and its export to ONNX.

``encoder_weights=None`` always: nothing is downloaded, every weight is trained here.
Input: one gray channel, ``(x - 0.5) / 0.25`` for x in [0, 1]. Output: per-pixel logits,
channel 0 = particle, channel 1 (optional) = border between touching particles. The
exported ONNX graph ends in a sigmoid, so it gives probabilities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

__all__ = ["ModelConfig", "build_model", "export_onnx", "INPUT_NAME", "OUTPUT_NAME", "normalize"]

INPUT_NAME, OUTPUT_NAME = "image", "probabilities"


@dataclass
class ModelConfig:
    encoder: str = "resnet18"
    encoder_depth: int = 4
    decoder_channels: list[int] = field(default_factory=lambda: [64, 32, 16, 8])
    classes: int = 2  # 1: particle only; 2: particle + border

    def validate(self) -> None:
        if len(self.decoder_channels) != self.encoder_depth:
            raise ValueError(f"decoder_channels needs {self.encoder_depth} entries (one per encoder stage), "
                             f"got {self.decoder_channels}")
        if self.classes not in (1, 2):
            raise ValueError("classes must be 1 (particle) or 2 (particle + border)")


def normalize(gray):
    from ...inference.onnx_graph import MEAN, STD  # the same constants the exported graph carries

    return (gray - MEAN) / STD


def build_model(cfg: ModelConfig) -> nn.Module:
    import segmentation_models_pytorch as smp

    cfg.validate()
    return smp.UnetPlusPlus(encoder_name=cfg.encoder, encoder_depth=cfg.encoder_depth, encoder_weights=None,
                            in_channels=1, classes=cfg.classes, decoder_channels=list(cfg.decoder_channels))


class _Probabilities(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.sigmoid(self.net(x))


def export_onnx(model: nn.Module, path: str | os.PathLike, *, opset: int = 17) -> None:
    """Write ``model`` (+ sigmoid) as ONNX with dynamic batch, height and width (multiples of 32)."""
    model = _Probabilities(model).eval()
    x = torch.zeros(1, 1, 256, 256)
    tmp = f"{path}.tmp"
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(model, x, tmp, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                          dynamic_axes={INPUT_NAME: {0: "n", 2: "h", 3: "w"}, OUTPUT_NAME: {0: "n", 2: "h", 3: "w"}},
                          dynamo=False)
    os.replace(tmp, path)
