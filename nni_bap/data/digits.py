"""sklearn's 8x8 handwritten digits: the embedded default dataset (no file needed)."""
from __future__ import annotations

from typing import Optional

import torch

from .registry import DATASETS
from .split import DataSplit

__all__ = ['load_digits']


@DATASETS.register('digits', needs_dir=False)
def load_digits(root: Optional[str] = None) -> DataSplit:
    """sklearn's 8x8 handwritten digits: pixels / 16, train = samples 0-1436, test = 1437-1796."""
    from sklearn.datasets import (
        load_digits as _load,  # sklearn takes about a second to import; only digits needs it
    )
    d = _load()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    return DataSplit('digits', x[:1437], y[:1437], x[1437:], y[1437:], 10,
                     {'source': 'sklearn.datasets.load_digits', 'normalisation': 'pixel / 16'})
