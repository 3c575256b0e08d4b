"""Datasets as tensors in [0, 1]: sklearn digits (embedded default), MNIST (IDX), CIFAR-10 (python batches).

Every loader returns a :class:`DataSplit` and registers itself in :data:`DATASETS`; :func:`load_dataset` also
validates what it loaded (labels in range, finite inputs in [0, 1], matching lengths). Any torch ``Dataset``
can be used directly through the Python API instead.
"""
from .cifar10 import load_cifar10
from .digits import load_digits
from .mnist import load_mnist, read_idx
from .registry import DATASETS, load_dataset
from .split import DataSplit

__all__ = ['DATASETS', 'DataSplit', 'load_cifar10', 'load_dataset', 'load_digits', 'load_mnist', 'read_idx']
