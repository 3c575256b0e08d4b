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
