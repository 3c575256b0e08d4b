"""Reference classifiers (inputs in [0, 1], logits out) and the name -> class table.

Every model is traceable by ``torch.fx.symbolic_trace`` (needed by NNI's ModelSpeedup).
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ['MODELS', 'DigitsCNN', 'LeNet5', 'SmallResNet', 'build_model']


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


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A small ResNet for CIFAR-10 (three stages of basic blocks, 16/32/64 channels)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32, blocks: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        layers, cin = [], 16
        for i, cout in enumerate((16, 32, 64)):
            for j in range(blocks):
                layers.append(_BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))))


#: Model name -> class, shared by the CLI, the configs and the tests.
MODELS = {'lenet5': LeNet5, 'digits_cnn': DigitsCNN, 'resnet_small': SmallResNet}


def build_model(name: str, in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    """Instantiate ``MODELS[name]`` for inputs of ``in_channels x input_size x input_size``."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f'unknown model {name!r}; choose one of {sorted(MODELS)}') from None
    return cls(in_channels=in_channels, num_classes=num_classes, input_size=input_size)
