"""Unpickle data, never code: a restricted unpickler for dataset files (CIFAR-10 python batches).

``pickle.load`` calls whatever global a file names, so a crafted "dataset" runs code when read.
:func:`load_data_pickle` admits only the globals that plain data needs: builtin containers,
strings, bytes and numbers, numpy arrays, dtypes and scalars, and ``_codecs.encode`` (how
protocol-2 pickles store bytes). Any other global is refused before it is looked up.
"""
from __future__ import annotations

import builtins
import codecs
import importlib
import pickle
from typing import IO, Any, Callable, Dict, Tuple

import numpy as np

from ..errors import UnsafePickleError

__all__ = ['allowed_globals', 'load_data_pickle']

_BUILTINS = ('dict', 'list', 'tuple', 'str', 'bytes', 'bytearray', 'int', 'float', 'complex', 'bool')


def _numpy_core(sub: str):
    """numpy's ``_core.<sub>`` (numpy >= 2) or ``core.<sub>`` (numpy 1), whichever is installed."""
    try:
        return importlib.import_module(f'numpy._core.{sub}')
    except ImportError:  # pragma: no cover - numpy 1
        return importlib.import_module(f'numpy.core.{sub}')


def allowed_globals() -> Dict[Tuple[str, str], Callable[..., Any]]:
    """``(module, name)`` -> object for every global a data pickle may name.

    Both numpy spellings (``numpy.core``, written by numpy 1, and ``numpy._core``, by numpy 2) map to
    the installed numpy; ``__builtin__`` is how protocol-2 pickles name ``builtins``.
    """
    multiarray, numeric = _numpy_core('multiarray'), _numpy_core('numeric')
    table: Dict[Tuple[str, str], Callable[..., Any]] = {
        ('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype, ('_codecs', 'encode'): codecs.encode}
    for core in ('numpy.core', 'numpy._core'):
        table[(f'{core}.multiarray', '_reconstruct')] = multiarray._reconstruct
        table[(f'{core}.multiarray', 'scalar')] = multiarray.scalar
        table[(f'{core}.numeric', '_frombuffer')] = numeric._frombuffer
    for module in ('builtins', '__builtin__'):
        table.update({(module, name): getattr(builtins, name) for name in _BUILTINS})
    return table


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, fh: IO[bytes], encoding: str):
        super().__init__(fh, encoding=encoding)
        self._allowed = allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(f'{module}.{name}') from None


def load_data_pickle(fh: IO[bytes], encoding: str = 'bytes') -> Any:
    """``pickle.load(fh, encoding=encoding)`` restricted to data.

    Parameters
    ----------
    fh
        A binary file opened for reading.
    encoding
        How to decode Python 2 strings (``'bytes'`` keeps them as bytes, as CIFAR-10 needs).

    Raises
    ------
    UnsafePickleError
        The pickle names a global outside :func:`allowed_globals`; nothing it names is called.
    """
    return _DataUnpickler(fh, encoding).load()
