"""A small CNN for sklearn's 8x8 digits."""
from __future__ import annotations

from torch import Tensor, nn

from .registry import MODELS

__all__ = ['DigitsCNN']


@MODELS.register('digits_cnn')
class DigitsCNN(nn.Module):
    """A small CNN sized for sklearn's 8x8 digits (about 40k parameters)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        side = input_size // 2
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * side * side, 64), nn.ReLU(),
                                        nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
