"""LeNet-5, the paper's MNIST model."""
from __future__ import annotations

from torch import Tensor, nn

from .registry import MODELS

__all__ = ['LeNet5']


@MODELS.register('lenet5')
class LeNet5(nn.Module):
    """LeNet-5 (6/16 channels, 120-84 fully connected), the paper's MNIST model."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28):
        super().__init__()
        pad = 2 if input_size == 28 else 0
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        side = ((input_size + 2 * pad - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * side * side, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
