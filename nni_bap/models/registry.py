"""The model registry: name -> classifier class; models register themselves."""
from __future__ import annotations

from torch import nn

from ..registry import Registry

__all__ = ['MODELS', 'build_model']

#: Model name -> class taking ``in_channels``, ``num_classes`` and ``input_size``.
MODELS = Registry('model')


def build_model(name: str, in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    """Instantiate model ``name`` for inputs of ``in_channels x input_size x input_size``.

    Raises
    ------
    ConfigError
        An unknown name (the message lists the registered ones).
    """
    return MODELS.entry(name).obj(in_channels=in_channels, num_classes=num_classes, input_size=input_size)
