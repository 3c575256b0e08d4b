"""A dataset as tensors in [0, 1]: train and test inputs (NCHW) and labels, checked for what every loader promises."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
from torch.utils.data import TensorDataset

from ..errors import DataError

__all__ = ['DataSplit']


@dataclass
class DataSplit:
    """Train and test tensors of one dataset (inputs in [0, 1], NCHW, labels int64)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int = 10
    meta: Dict[str, object] = field(default_factory=dict)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def train_set(self) -> TensorDataset:
        return TensorDataset(self.x_train, self.y_train)

    def test_set(self) -> TensorDataset:
        return TensorDataset(self.x_test, self.y_test)

    def validate(self) -> 'DataSplit':
        """Check what every loader promises; raise :class:`DataError` (one line, naming the source) if not.

        Inputs are NCHW with the same sample shape in train and test, finite and in [0, 1]; each
        split has as many labels as inputs, all in ``[0, num_classes)``. Returns ``self``.
        """
        where = f"{self.name} data in {self.meta.get('source', '?')}"
        for part, x, y in (('train', self.x_train, self.y_train), ('test', self.x_test, self.y_test)):
            problem = _split_problem(x, y, self.num_classes, self.input_shape)
            if problem:
                raise DataError(f'{where}: {part} {problem}')
        return self

    def subset(self, train: Optional[int] = None, test: Optional[int] = None) -> 'DataSplit':
        """The first ``train`` / ``test`` samples (for quick runs and tests)."""
        return DataSplit(self.name, self.x_train[:train], self.y_train[:train], self.x_test[:test],
                         self.y_test[:test], self.num_classes, dict(self.meta))


def _split_problem(x: torch.Tensor, y: torch.Tensor, num_classes: int, sample_shape: Tuple[int, ...]) -> str:
    """What is wrong with one split (empty string: nothing)."""
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(sample_shape):
        return f'inputs have shape {tuple(x.shape)}, expected (N, {", ".join(map(str, sample_shape))}) (NCHW)'
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        return f'has {x.shape[0]} inputs but labels of shape {tuple(y.shape)}'
    if y.dtype != torch.int64:
        return f'labels are {y.dtype}, expected torch.int64'
    if x.numel() and not bool(torch.isfinite(x).all()):
        return 'inputs hold NaN or infinite values'
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        return f'inputs lie in [{float(x.min()):g}, {float(x.max()):g}], expected [0, 1]'
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        return f'labels out of range: found [{int(y.min())}, {int(y.max())}], expected [0, {num_classes - 1}]'
    return ''
