"""The restricted unpickler: data files are data, never code (issue 10)."""
import os
import pickle

import numpy as np
import pytest
import torch

from nni_bap.data import load_cifar10, load_dataset
from nni_bap.errors import DataError

CIFAR_FILES = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']


def _write_cifar(folder, protocol, rows=3):
    """A CIFAR-10 python-batch folder in the real format; returns {file: (data, labels)}."""
    rng = np.random.default_rng(protocol)
    written = {}
    for name in CIFAR_FILES:
        data = rng.integers(0, 256, (rows, 3072)).astype(np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, rows)]
        batch = {b'batch_label': f'{name} of 6'.encode(), b'labels': labels, b'data': data,
                 b'filenames': [f'img_{i}.png'.encode() for i in range(rows)]}
        with open(folder / name, 'wb') as fh:
            pickle.dump(batch, fh, protocol=protocol)
        written[name] = (data, labels)
    return written


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


class _Exec:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import builtins
        return builtins.exec, (f'open({str(self.marker)!r}, "w").close()',)


@pytest.mark.parametrize('protocol', [2, 4])
def test_cifar10_real_format_loads_through_the_restricted_unpickler(tmp_path, protocol):
    """Issue 10 case 1 (dataset path is data): real-format CIFAR-10 batches (protocol 2 and 4) still load, exactly.

    The guard for the restriction: it must admit the globals real batches use (numpy arrays,
    ``_codecs.encode`` for protocol-2 bytes), so this passes before and after the fix."""
    written = _write_cifar(tmp_path, protocol)
    c = load_dataset('cifar10', str(tmp_path))
    assert c.x_train.shape == (15, 3, 32, 32) and c.x_test.shape == (3, 3, 32, 32)
    data, labels = written['data_batch_2']
    assert torch.equal(c.x_train[3:6], torch.tensor(data.reshape(3, 3, 32, 32), dtype=torch.float32) / 255)
    assert c.y_train[3:6].tolist() == labels and c.y_test.tolist() == written['test_batch'][1]
    assert c.y_train.dtype == torch.int64


@pytest.mark.parametrize('payload, name', [(_System, 'system'), (_Exec, '.exec')])
@pytest.mark.parametrize('protocol', [2, 4])
def test_malicious_cifar_batch_does_not_run(tmp_path, payload, name, protocol):
    """Issue 10 case 1 (dataset path is data): a batch whose unpickling calls os.system / exec runs nothing
    (no marker file) and raises DataError naming the file and the refused global."""
    folder, marker = tmp_path / 'cifar', tmp_path / 'MARKER'
    folder.mkdir()
    _write_cifar(folder, protocol)
    with open(folder / 'data_batch_3', 'wb') as fh:
        pickle.dump({b'data': payload(marker), b'labels': [0]}, fh, protocol=protocol)
    with pytest.raises(DataError) as info:
        load_cifar10(str(folder))
    assert not marker.exists()
    assert str(folder / 'data_batch_3') in str(info.value) and name in str(info.value)
    assert 'refused global' in str(info.value)


def _fuzzed(good: bytes, rng) -> bytes:
    """``good`` with a few bytes changed, cut short, or with random bytes inserted."""
    b = bytearray(good)
    kind = rng.integers(0, 3)
    if kind == 0:
        for _ in range(rng.integers(1, 3)):
            b[rng.integers(0, len(b))] = rng.integers(0, 256)
    elif kind == 1:
        del b[rng.integers(0, len(b)):]
    else:
        at = rng.integers(0, len(b))
        b[at:at] = rng.integers(0, 256, rng.integers(1, 9)).astype(np.uint8).tobytes()
    return bytes(b)


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_fuzzed_pickles_fail_with_one_error_type(protocol):
    """Issue 22 case 6: fuzzed CIFAR-10 pickles raised OverflowError, LookupError, MemoryError and SystemError past the
    unpickler's handler (and forged dtype states made numpy print internal errors). 1500 mutations of a real-format
    batch: each loads, or fails with UnsafePickleError / BadPickleError, fast."""
    import io
    import time

    from nni_bap.errors import BadPickleError, UnsafePickleError
    from nni_bap.utils.safe_pickle import load_data_pickle
    rng = np.random.default_rng(protocol)
    good = pickle.dumps({b'batch_label': b'x', b'labels': [1, 2, 3], b'filenames': [b'a', b'b', b'c'],
                         b'data': np.arange(12, dtype=np.uint8).reshape(3, 4)}, protocol=protocol)
    kinds, start = set(), time.perf_counter()
    for _ in range(1500):
        try:
            load_data_pickle(io.BytesIO(_fuzzed(good, rng)))
            kinds.add('loaded')
        except (UnsafePickleError, BadPickleError) as exc:
            kinds.add(type(exc).__name__)
    assert kinds == {'loaded', 'UnsafePickleError', 'BadPickleError'} and time.perf_counter() - start < 20


@pytest.mark.parametrize('blob, message', [
    # numpy uint8 dtype state with flags 0x3f (claims object references): numpy would free "pointers" read from data
    (b'\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00u1\x89\x88\x87R(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff'
     b'\xff\xffK?tb.', 'dtype state'),
    (b'\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00O8\x89\x88\x87R.', "dtype 'O8'"),  # object arrays unpickle objects
    (b'\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x40\x85R.', 'bytearray(1073741824)'),  # 1 GiB from 20 bytes
    (b'\x80\x05\x96' + (1 << 40).to_bytes(8, 'little') + b'.', 'a bytearray of 1099511627776 bytes'),
    (b'\x80\x02cnumpy\nndarray\nK\x05\x85R.', 'cannot unpickle: TypeError'),  # ndarray((5,)): uninitialised memory
])
def test_forged_numpy_and_sized_values_are_refused(blob, message):
    """Issue 22 case 5/6: states numpy trusts and sizes a few bytes can claim are checked before anything is built."""
    import io

    from nni_bap.errors import BadPickleError
    from nni_bap.utils.safe_pickle import load_data_pickle
    with pytest.raises(BadPickleError, match=message.replace('(', r'\(').replace(')', r'\)')):
        load_data_pickle(io.BytesIO(blob))


def test_data_arrays_of_every_plain_dtype_load_as_pickle_loads_them():
    import io

    from nni_bap.utils.safe_pickle import load_data_pickle
    values = [np.arange(6, dtype=np.uint8).reshape(2, 3), np.arange(6, dtype='>f4').reshape(2, 3).T,
              np.array(['ab', 'c']), np.array([True, False]), np.float32(3.5), np.int64(7), np.zeros((0, 3), np.int16)]
    for protocol in (2, 3, 4, 5):
        for value in values:
            blob = pickle.dumps({b'x': value}, protocol=protocol)
            got, want = np.asarray(load_data_pickle(io.BytesIO(blob))[b'x']), pickle.loads(blob)[b'x']
            assert got.dtype == want.dtype and np.array_equal(got, want), (protocol, value)
