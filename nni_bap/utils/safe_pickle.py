"""Unpickle data, never code: a restricted unpickler for dataset files (CIFAR-10 python batches).

``pickle.load`` calls whatever global a file names, so a crafted "dataset" runs code when read.
:func:`load_data_pickle` admits only the globals that plain data needs, and those as checked stand-ins:

- builtin containers, strings and numbers (``bytes(n)`` / ``bytearray(n)``, a small file asking for gigabytes,
  refused);
- ``_codecs.encode`` (how protocol-2 pickles store bytes), for Latin-1 only;
- numpy arrays, dtypes and scalars: plain numeric, boolean and fixed-width string dtypes only (no object or
  structured dtype), each state checked before numpy sees it (a forged dtype state corrupts numpy's memory), and
  an array's data must be exactly as long as its shape and dtype say.

Any other global is refused before it is looked up (:class:`~nni_bap.errors.UnsafePickleError`); every other
failure (a truncated or fuzzed file, a length beyond memory, an unknown encoding) is a
:class:`~nni_bap.errors.BadPickleError`: one error, never a traceback of some pickle internal. The file is read
by Python's pure-Python unpickler (``pickle._Unpickler``) without the protocol-5 buffer opcodes: fuzzed buffer
opcodes made the C unpickler print ``SystemError``\ s from deallocated buffers.
"""
from __future__ import annotations

import builtins
import codecs
import io
import math
import os
import pickle
import struct
from typing import IO, Any, Callable, Dict, Tuple

import numpy as np

from ..errors import BadPickleError, BapError, UnsafePickleError, brief

__all__ = ['allowed_globals', 'load_data_pickle']

_BUILTINS = ('dict', 'list', 'tuple', 'str', 'bytes', 'bytearray', 'int', 'float', 'complex', 'bool')
#: dtype kinds an array in a data file may have: booleans, integers, floats, complex, fixed-width strings.
_KINDS = 'biufcSU'
_CORES = ('numpy.core', 'numpy._core')


def _refuse(what: str) -> BadPickleError:
    return BadPickleError(f'not plain data: {what}')


class _Dtype:
    """Stands for a numpy dtype while unpickling: ``dtype(spec, align, copy)`` then its state (byte order only)."""

    def __init__(self, spec: Any = None, align: Any = False, copy: Any = False):
        if isinstance(spec, bytes):
            spec = spec.decode('ascii', 'replace')
        try:
            dtype = np.dtype(spec) if isinstance(spec, str) and len(spec) <= 8 else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in _KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise _refuse(f'dtype {brief(spec)}')
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise _refuse(f'dtype state {brief(state)}')
        order, rest = state[1], tuple(state[2:8])
        if isinstance(order, bytes):
            order = order.decode('ascii', 'replace')
        plain = (None, None, None, rest[3] if rest[3] in (-1, self.dtype.itemsize) else None,
                 rest[4] if rest[4] in (-1, self.dtype.alignment) else None, self.dtype.flags)
        if order not in ('<', '>', '|', '=') or rest != plain or (len(state) == 9 and state[8] is not None):
            raise _refuse(f'dtype state {brief(state)}')
        if self.dtype.itemsize > 1 and order in '<>':
            self.dtype = self.dtype.newbyteorder(order)


def _plain_dtype(value: Any) -> np.dtype:
    if not isinstance(value, _Dtype):
        raise _refuse(f'array dtype {brief(value)}')
    return value.dtype


def _shape(value: Any) -> Tuple[int, ...]:
    if (not isinstance(value, tuple) or len(value) > 32
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        raise _refuse(f'array shape {brief(value)}')
    return value


def _buffer(data: Any, shape: Tuple[int, ...], dtype: np.dtype) -> bytes:
    """``data`` as bytes, exactly as long as ``shape`` and ``dtype`` need."""
    if isinstance(data, str):
        data = data.encode('latin-1')
    if not isinstance(data, (bytes, bytearray)):
        raise _refuse(f'array data of type {type(data).__name__}')
    need = math.prod(shape) * dtype.itemsize
    if len(data) != need:
        raise BadPickleError(f'array of shape {shape} and dtype {dtype} needs {need} bytes, the file holds {len(data)}')
    return bytes(data)


class _Array(np.ndarray):
    """What ``_reconstruct`` returns: an empty array whose state is checked before numpy sets it."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _refuse(f'array state {brief(state)}')
        shape, dtype, fortran, data = state[-4:]
        shape, dtype = _shape(shape), _plain_dtype(dtype)
        if fortran not in (0, 1):
            raise _refuse(f'array order {brief(fortran)}')
        super().__setstate__((1, shape, dtype, bool(fortran), _buffer(data, shape, dtype)))


_NDARRAY = object()  # what the global numpy.ndarray stands for: only _reconstruct accepts it


def _reconstruct(subtype: Any, shape: Any, code: Any) -> _Array:
    if subtype is not _NDARRAY:
        raise _refuse(f'_reconstruct of {brief(subtype)}')
    return np.ndarray.__new__(_Array, (0,), np.uint8)


def _scalar(dtype: Any, data: Any = None) -> Any:
    dtype = _plain_dtype(dtype)
    return np.frombuffer(_buffer(data, (), dtype), dtype)[0]


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    dtype, shape = _plain_dtype(dtype), _shape(shape)
    if order not in ('C', 'F'):
        raise _refuse(f'array order {brief(order)}')
    return np.frombuffer(_buffer(buf, shape, dtype), dtype).reshape(shape, order=order).copy(order=order)


def _encode(text: Any, encoding: Any = 'utf-8', errors: Any = 'strict') -> bytes:
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1') or errors != 'strict':
        raise _refuse(f'_codecs.encode with {brief(encoding)}')
    return codecs.encode(text, 'latin-1')


def _sized(kind: type) -> Callable[..., Any]:
    """``bytes`` / ``bytearray`` that refuse a size argument (a 20-byte pickle asking for gigabytes of zeros)."""
    def make(*args):
        if args and isinstance(args[0], int):
            raise _refuse(f'{kind.__name__}({brief(args[0])})')
        return kind(*args)
    return make


def allowed_globals() -> Dict[Tuple[str, str], Callable[..., Any]]:
    """``(module, name)`` -> stand-in for every global a data pickle may name.

    Both numpy spellings (``numpy.core``, written by numpy 1, and ``numpy._core``, by numpy 2) are admitted;
    ``__builtin__`` is how protocol-2 pickles name ``builtins``.
    """
    table: Dict[Tuple[str, str], Any] = {('numpy', 'ndarray'): _NDARRAY, ('numpy', 'dtype'): _Dtype,
                                         ('_codecs', 'encode'): _encode}
    for core in _CORES:
        table[(f'{core}.multiarray', '_reconstruct')] = _reconstruct
        table[(f'{core}.multiarray', 'scalar')] = _scalar
        table[(f'{core}.numeric', '_frombuffer')] = _frombuffer
    for module in ('builtins', '__builtin__'):
        table.update({(module, name): getattr(builtins, name) for name in _BUILTINS})
        table.update({(module, kind.__name__): _sized(kind) for kind in (bytes, bytearray)})
    return table


#: Protocol-5 out-of-band buffer opcodes: no data file needs them, and fuzzed ones upset CPython's unpickler.
_REFUSED_OPCODES = (pickle.NEXT_BUFFER, pickle.READONLY_BUFFER)


class _DataUnpickler(pickle._Unpickler):  # the pure-Python unpickler: every failure is a Python exception
    dispatch = {k: v for k, v in pickle._Unpickler.dispatch.items() if bytes([k]) not in _REFUSED_OPCODES}

    def __init__(self, fh: IO[bytes], encoding: str, size: int):
        super().__init__(fh, encoding=encoding)
        self._allowed, self._size = allowed_globals(), size

    def load_bytearray8(self) -> None:
        """BYTEARRAY8 allocates the length it announces before reading: refuse more than the file holds."""
        (n,) = struct.unpack('<Q', self.read(8))
        if n > self._size:
            raise BadPickleError(f'a bytearray of {n} bytes announced in a file of {self._size}')
        b = bytearray(n)
        self.readinto(b)
        self.append(b)
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
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
    BadPickleError
        Anything else goes wrong (malformed or truncated data, a dtype or array state that is not plain data, a
        length beyond memory); the message says what.
    """
    try:
        size = os.fstat(fh.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        fh = io.BytesIO(fh.read())
        size = len(fh.getbuffer())
    try:
        return _DataUnpickler(fh, encoding, size).load()
    except BapError:
        raise
    except Exception as exc:  # a fuzzed pickle raises almost any type (OverflowError, LookupError, MemoryError...)
        text = (str(exc).splitlines() or [''])[0][:200]
        raise BadPickleError(f'cannot unpickle: {type(exc).__name__}{": " + text if text else ""}') from None
