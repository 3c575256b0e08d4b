"""The dataset registry: name -> loader(root) -> :class:`~nni_bap.data.split.DataSplit`; loaders register themselves."""
from __future__ import annotations

from typing import Optional

from ..errors import DataError
from ..registry import Registry
from .split import DataSplit

__all__ = ['DATASETS', 'load_dataset']

#: Dataset name -> loader; metadata ``needs_dir`` (read from files in a folder).
DATASETS = Registry('dataset')


def load_dataset(name: str, root: Optional[str] = None) -> DataSplit:
    """Load dataset ``name`` and :meth:`~DataSplit.validate` it; ``root`` is the folder for file-based datasets.

    Raises
    ------
    ConfigError
        An unknown name (the message lists the registered ones).
    DataError
        A file-based dataset without ``root``, or files that are missing or malformed.
    """
    entry = DATASETS.entry(name)
    if entry.needs_dir and not root:
        raise DataError(f'dataset {name!r} needs a data folder (root)')
    return entry.obj(root).validate()
