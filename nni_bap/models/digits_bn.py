"""A small CNN with BatchNorm for sklearn's 8x8 digits: the demo's model."""
from __future__ import annotations

from torch import Tensor, nn

from .registry import MODELS

__all__ = ['DigitsBN']


def _conv_bn(cin: int, cout: int) -> list:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


@MODELS.register('digits_bn')
class DigitsBN(nn.Module):
    """Three 3x3 conv-BatchNorm-ReLU layers (16, 32, 64 channels; max pooling after the second), global average
    pooling and one linear layer: about 24k parameters, 1.2 MFLOPs at 8x8. On sklearn's digits it reaches 0.97-0.98
    test accuracy after 20 epochs (Adam, lr 1e-3, batch 64), against 0.90-0.95 for :class:`DigitsCNN`; channel
    pruning shrinks every layer (the BatchNorm channels go with their convolution's)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 8):
        super().__init__()
        self.features = nn.Sequential(*_conv_bn(in_channels, 16), *_conv_bn(16, 32), nn.MaxPool2d(2),
                                      *_conv_bn(32, 64), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
