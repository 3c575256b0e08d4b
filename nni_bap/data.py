"""Datasets as tensors in [0, 1]: sklearn digits (embedded default), MNIST (IDX), CIFAR-10 (python batches).

Every loader returns a :class:`DataSplit`; :func:`load_dataset` also validates it (labels in range,
finite inputs in [0, 1], matching lengths). Any torch ``Dataset`` can be used directly through the
Python API instead.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .safe_pickle import load_data_pickle

__all__ = ['DATASETS', 'DataError', 'DataSplit', 'load_cifar10', 'load_dataset', 'load_digits', 'load_mnist',
           'read_idx']


class DataError(ValueError):
    """A dataset file is missing or malformed; the message names it."""


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


def load_digits(root: Optional[str] = None) -> DataSplit:
    """sklearn's 8x8 handwritten digits: pixels / 16, train = samples 0-1436, test = 1437-1796."""
    from sklearn.datasets import load_digits as _load
    d = _load()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    return DataSplit('digits', x[:1437], y[:1437], x[1437:], y[1437:], 10,
                     {'source': 'sklearn.datasets.load_digits', 'normalisation': 'pixel / 16'})


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


def load_cifar10(root: str) -> DataSplit:
    """CIFAR-10 from its python batches folder (``data_batch_1..5``, ``test_batch``).

    The batches are unpickled by :func:`nni_bap.safe_pickle.load_data_pickle`: a file that asks for
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


#: Dataset name -> loader(root), shared by the CLI and the tests.
DATASETS: Dict[str, Callable[..., DataSplit]] = {'digits': load_digits, 'mnist': load_mnist, 'cifar10': load_cifar10}


def load_dataset(name: str, root: Optional[str] = None) -> DataSplit:
    """Load ``DATASETS[name]`` and :meth:`~DataSplit.validate` it; ``root`` is the folder for file-based datasets."""
    if name not in DATASETS:
        raise ValueError(f'unknown dataset {name!r}; choose one of {sorted(DATASETS)}')
    if name != 'digits' and not root:
        raise DataError(f'dataset {name!r} needs a data folder (root)')
    return DATASETS[name](root).validate()
