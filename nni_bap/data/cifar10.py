"""CIFAR-10 from its python batches, unpickled as plain data only."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Tuple

import numpy as np
import torch

from ..errors import DataError
from ..utils.safe_pickle import load_data_pickle
from .registry import DATASETS
from .split import DataSplit

__all__ = ['load_cifar10']


def _cifar_batch(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one CIFAR-10 python batch, unpickled as data only."""
    try:
        with open(path, 'rb') as fh:
            d = load_data_pickle(fh, encoding='bytes')
        if not isinstance(d, dict) or b'data' not in d or b'labels' not in d:
            raise ValueError("not a dict with keys b'data' and b'labels'")
        x, y = np.asarray(d[b'data']), np.asarray(d[b'labels'], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError,
            AttributeError) as exc:  # what a malformed pickle can raise
        raise DataError(f'cannot read CIFAR-10 batch {path}: {exc}') from exc
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y.shape != (x.shape[0],):
        raise DataError(f'CIFAR-10 batch {path}: expected uint8 data of shape (N, 3072) and N labels, '
                        f'got data {x.dtype} {x.shape} and labels {y.shape}')
    return x.reshape(-1, 3, 32, 32), y


@DATASETS.register('cifar10', needs_dir=True)
def load_cifar10(root: str) -> DataSplit:
    """CIFAR-10 from its python batches folder (``data_batch_1..5``, ``test_batch``).

    The batches are unpickled by :func:`nni_bap.utils.safe_pickle.load_data_pickle`: a file that asks for
    anything but containers, strings, numbers and numpy arrays raises :class:`DataError` unread.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f'CIFAR-10 folder {folder} does not exist')
    parts = [_cifar_batch(folder / f'data_batch_{i}') for i in range(1, 6)]
    xt, yt = _cifar_batch(folder / 'test_batch')
    x = torch.tensor(np.concatenate([p[0] for p in parts]), dtype=torch.float32).div_(255.0)
    y = torch.tensor(np.concatenate([p[1] for p in parts]))
    return DataSplit('cifar10', x, y, torch.tensor(xt, dtype=torch.float32).div_(255.0), torch.tensor(yt), 10,
                     {'source': str(folder), 'normalisation': 'pixel / 255'})
