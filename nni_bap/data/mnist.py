"""MNIST from a folder of IDX files (gz or raw), and the IDX reader."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataError
from .registry import DATASETS
from .split import DataSplit

__all__ = ['load_mnist', 'read_idx']


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a numpy array; errors name the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b'\x1f\x8b':
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f'cannot read IDX file {path}: {exc}') from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f'{path} is not an unsigned-byte IDX file (bad magic {raw[:4]!r})')
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f'{path}: truncated IDX header')
    dims = struct.unpack(f'>{ndim}I', raw[4:header])
    count = int(np.prod(dims))
    if len(raw) - header != count:
        raise DataError(f'{path}: expected {count} bytes of data for shape {dims}, found {len(raw) - header}')
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + '.gz', stem.replace('-idx', '.idx')):
        if (root / name).exists():
            return root / name
    return None


@DATASETS.register('mnist', needs_dir=True)
def load_mnist(root: str) -> DataSplit:
    """MNIST from a folder of IDX files (gz or raw).

    With the training files present: the standard 60k/10k split. With only the 10k test files
    (as in ``../shared/data/mnist``): train = test images 0-7999, test = 8000-9999.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f'MNIST folder {folder} does not exist')
    test_x, test_y = _find(folder, 't10k-images-idx3-ubyte'), _find(folder, 't10k-labels-idx1-ubyte')
    if test_x is None or test_y is None:
        raise DataError(f'{folder} lacks t10k-images-idx3-ubyte[.gz] / t10k-labels-idx1-ubyte[.gz]')

    def tensors(img: Path, lab: Path):
        xi, yi = read_idx(img), read_idx(lab)
        if xi.ndim != 3 or yi.ndim != 1 or xi.shape[0] != yi.shape[0]:
            raise DataError(f'{img} and {lab} do not match (shapes {xi.shape} and {yi.shape})')
        x = torch.tensor(xi, dtype=torch.float32).div_(255.0).unsqueeze(1)
        return x, torch.tensor(yi, dtype=torch.long)

    xt, yt = tensors(test_x, test_y)
    tr_x, tr_y = _find(folder, 'train-images-idx3-ubyte'), _find(folder, 'train-labels-idx1-ubyte')
    meta = {'source': str(folder), 'normalisation': 'pixel / 255'}
    if tr_x is not None and tr_y is not None:
        x, y = tensors(tr_x, tr_y)
        return DataSplit('mnist', x, y, xt, yt, 10, {**meta, 'split': 'standard 60k/10k'})
    return DataSplit('mnist', xt[:8000], yt[:8000], xt[8000:], yt[8000:], 10,
                     {**meta, 'split': 't10k 0-7999 train / 8000-9999 test'})
