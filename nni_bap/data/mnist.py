"""MNIST from a folder of IDX files (gz or raw), and the IDX reader."""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import IO, Optional, Tuple

import numpy as np
import torch

from ..errors import DataError
from .registry import DATASETS
from .split import DataSplit

__all__ = ['DEFLATE_MAX_RATIO', 'load_mnist', 'read_idx']


#: Most a gzip (deflate) stream can expand: about 1032 bytes out per byte in. A header announcing more data than
#: this times the file's size is a lie, refused before anything is decompressed.
DEFLATE_MAX_RATIO = 1032


def _header(fh: IO[bytes], path: Path) -> Tuple[int, ...]:
    """The dimensions an unsigned-byte IDX header announces (magic ``00 00 08 ndim``, then ``ndim`` big-endian u32)."""
    magic = fh.read(4)
    if len(magic) < 4 or magic[:3] != b'\x00\x00\x08':
        raise DataError(f'{path} is not an unsigned-byte IDX file (bad magic {magic!r})')
    raw = fh.read(4 * magic[3])
    if len(raw) < 4 * magic[3]:
        raise DataError(f'{path}: truncated IDX header')
    return struct.unpack(f'>{magic[3]}I', raw)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a numpy array; errors name the file.

    Bounded work for any file: the header is read first, the data it announces must fit what the file can hold
    (its size raw, :data:`DEFLATE_MAX_RATIO` times it gzipped), and no more than that is ever decompressed.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, 'rb') as raw:
            packed = raw.read(2) == b'\x1f\x8b'
        with (gzip.open(path, 'rb') if packed else open(path, 'rb')) as fh:
            dims = _header(fh, path)
            count = math.prod(dims)  # Python integers: no wrap-around (np.prod of (2^22, 2^21, 2^21) gave 0)
            if not packed and count != size - 4 - 4 * len(dims):
                raise DataError(f'{path}: expected {count} bytes of data for shape {dims}, found '
                                f'{size - 4 - 4 * len(dims)}')
            if packed and count > size * DEFLATE_MAX_RATIO:
                raise DataError(f'{path}: its header announces shape {dims} ({count} bytes), more than the '
                                f'{size}-byte gzip file can hold')
            data = fh.read(count + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f'cannot read IDX file {path}: {exc}') from None
    if len(data) != count:
        raise DataError(f'{path}: expected {count} bytes of data for shape {dims}, found '
                        f'{"more" if len(data) > count else len(data)}')
    return np.frombuffer(data, dtype=np.uint8, count=count).reshape(dims)


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
