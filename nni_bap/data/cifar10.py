"""CIFAR-10 from its python batches, unpickled as plain data only."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import torch

from ..errors import BapError, DataError
from ..utils.safe_pickle import load_data_pickle
from .registry import DATASETS
from .split import DataSplit

__all__ = ['load_cifar10']


def _cifar_batch(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one CIFAR-10 python batch, unpickled as data only.

    The structure is checked before anything is converted: ``b'data'`` an array, ``b'labels'`` a list of
    integers (a pickle can make a list of a million references to one list in a few bytes).
    """
    try:
        with open(path, 'rb') as fh:
            d = load_data_pickle(fh, encoding='bytes')
    except OSError as exc:
        raise DataError(f'cannot read CIFAR-10 batch {path}: {exc.strerror or exc}') from None
    except BapError as exc:  # UnsafePickleError, BadPickleError: every failure of the restricted unpickler
        raise DataError(f'cannot read CIFAR-10 batch {path}: {exc}') from None
    if not isinstance(d, dict) or not isinstance(d.get(b'data'), np.ndarray) or not isinstance(d.get(b'labels'), list):
        raise DataError(f"CIFAR-10 batch {path}: expected a dict with an array b'data' and a list b'labels'")
    x, labels = np.asarray(d[b'data']), d[b'labels']
    if not all(type(v) is int or isinstance(v, np.integer) for v in labels):
        raise DataError(f'CIFAR-10 batch {path}: labels must be integers')
    y = np.array(labels, dtype=np.int64) if all(-2 ** 63 <= int(v) < 2 ** 63 for v in labels) else None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y is None or y.shape != (x.shape[0],):
        raise DataError(f'CIFAR-10 batch {path}: expected uint8 data of shape (N, 3072) and N labels, '
                        f'got data {x.dtype} {x.shape} and {len(labels)} labels')
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
