"""The registered datasets: splits, IDX and CIFAR files, what a DataSplit refuses."""
import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nni_bap.cli.config import RunConfig, load_config
from nni_bap.data import (
    DATASETS,
    DataSplit,
    load_cifar10,
    load_dataset,
    load_mnist,
    read_idx,
)
from nni_bap.errors import ConfigError, DataError
from nni_bap.models import build_model


def _write_idx(path, arr, gz=True):
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f'>{arr.ndim}I', *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def _write_cifar(folder, rows=4):
    """A CIFAR-10 python-batch folder in the real format (pickled dicts, b'data' uint8 N x 3072, b'labels')."""
    rng = np.random.default_rng(0)
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        with open(folder / name, 'wb') as fh:
            pickle.dump({b'data': rng.integers(0, 256, (rows, 3072)).astype(np.uint8),
                         b'labels': list(rng.integers(0, 10, rows))}, fh)


def test_digits_split(digits):
    assert digits.x_train.shape == (1437, 1, 8, 8) and digits.x_test.shape == (360, 1, 8, 8)
    assert float(digits.x_train.min()) == 0.0 and float(digits.x_train.max()) == 1.0
    assert sorted(digits.y_test.unique().tolist()) == list(range(10))


def test_shared_mnist_split(mnist_dir):
    sums = dict(line.split()[::-1] for line in (mnist_dir / 'MD5SUMS').read_text().splitlines() if line.strip())
    name = 't10k-images-idx3-ubyte.gz'
    assert hashlib.md5((mnist_dir / name).read_bytes()).hexdigest() == sums[name]
    m = load_mnist(str(mnist_dir))
    assert m.x_train.shape == (8000, 1, 28, 28) and m.x_test.shape == (2000, 1, 28, 28)
    assert 0.0 <= float(m.x_train.min()) and float(m.x_train.max()) <= 1.0
    assert m.meta['split'].startswith('t10k')


@pytest.mark.parametrize('gz', [True, False])
def test_mnist_from_raw_or_gz_and_standard_split(tmp_path, gz):
    rng = np.random.default_rng(0)
    suffix = '.gz' if gz else ''
    _write_idx(tmp_path / f't10k-images-idx3-ubyte{suffix}', rng.integers(0, 256, (30, 28, 28)), gz)
    _write_idx(tmp_path / f't10k-labels-idx1-ubyte{suffix}', rng.integers(0, 10, 30), gz)
    _write_idx(tmp_path / f'train-images-idx3-ubyte{suffix}', rng.integers(0, 256, (50, 28, 28)), gz)
    _write_idx(tmp_path / f'train-labels-idx1-ubyte{suffix}', rng.integers(0, 10, 50), gz)
    m = load_mnist(str(tmp_path))
    assert m.x_train.shape[0] == 50 and m.x_test.shape[0] == 30


def test_bad_files_are_named(tmp_path):
    with pytest.raises(DataError, match='does not exist'):
        load_mnist(str(tmp_path / 'nowhere'))
    with pytest.raises(DataError, match='t10k-images'):
        load_mnist(str(tmp_path))
    bad = tmp_path / 't10k-images-idx3-ubyte'
    bad.write_bytes(b'\x00\x00\x08\x03' + struct.pack('>3I', 10, 28, 28) + b'\x00' * 100)
    with pytest.raises(DataError, match='t10k-images-idx3-ubyte: expected 7840 bytes'):
        read_idx(bad)
    (tmp_path / 'junk.gz').write_bytes(b'\x1f\x8bnot gzip')
    with pytest.raises(DataError, match='junk.gz'):
        read_idx(tmp_path / 'junk.gz')
    with pytest.raises(DataError, match='data_batch_1'):
        load_cifar10(str(tmp_path))
    with pytest.raises(ValueError, match='unknown dataset'):
        load_dataset('imagenet')


def test_cifar10_batches(tmp_path):
    _write_cifar(tmp_path)
    c = load_cifar10(str(tmp_path))
    assert c.x_train.shape == (20, 3, 32, 32) and c.x_test.shape == (4, 3, 32, 32)
    assert 'cifar10' in DATASETS


def test_cifar10_resnet_example_config(tmp_path):
    """examples/configs/cifar10_resnet.yaml validates once data_dir points at a CIFAR-10 folder; its placeholder
    path does not exist here, and validation says so."""
    path = Path(__file__).resolve().parents[1] / 'examples' / 'configs' / 'cifar10_resnet.yaml'
    raw = load_config(str(path))
    if not (path.parent / raw['data_dir']).exists():
        with pytest.raises(ConfigError, match='data folder .*cifar-10-batches-py does not exist'):
            RunConfig.from_dict(raw, base_dir=path.parent)
    _write_cifar(tmp_path)
    cfg = RunConfig.from_dict({**raw, 'data_dir': str(tmp_path)}, base_dir=path.parent)
    assert (cfg.model, cfg.dataset, cfg.base_pruner) == ('resnet_small', 'cifar10', 'l1')
    assert cfg.data_dir == str(tmp_path.resolve())
    plan = cfg.to_dict()['config_list']  # a plan of `bap plan` (issue 21): stages 2 and 3 narrowed to 16 channels
    assert {e['op_names'][0]: e['sparse_ratio'] for e in plan} == {
        'layers.1.conv1': 0.5, 'layers.1.conv2': 0.5, 'layers.1.shortcut.0': 0.5, 'layers.2.conv1': 0.75,
        'layers.2.conv2': 0.75, 'layers.2.shortcut.0': 0.75} and cfg.align in (8, 16)
    data = load_dataset(cfg.dataset, cfg.data_dir)
    assert data.input_shape == (3, 32, 32)
    assert build_model(cfg.model, 3, 10, 32)(data.x_test).shape == (4, 10)


def test_mnist_labels_out_of_range_are_refused(tmp_path):
    """Issue 10 case 10 (labels out of range): an MNIST folder whose labels hold 12 raises DataError naming it."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 20)
    labels[7] = 12
    _write_idx(tmp_path / 't10k-images-idx3-ubyte.gz', rng.integers(0, 256, (20, 28, 28)))
    _write_idx(tmp_path / 't10k-labels-idx1-ubyte.gz', labels)
    with pytest.raises(DataError, match=r'labels out of range: found \[0, 12\], expected \[0, 9\]') as info:
        load_dataset('mnist', str(tmp_path))
    assert str(tmp_path) in str(info.value) and '\n' not in str(info.value)


@pytest.mark.parametrize('field, value, message', [
    ('x_train', torch.full((4, 1, 2, 2), 0.5).index_fill_(0, torch.tensor([1]), float('nan')), 'NaN or infinite'),
    ('x_test', torch.full((3, 1, 2, 2), 1.5), r'inputs lie in \[1\.5, 1\.5\], expected \[0, 1\]'),
    ('y_train', torch.zeros(5, dtype=torch.long), r'has 4 inputs but labels of shape \(5,\)'),
    ('y_test', torch.tensor([0, -1, 2]), r'labels out of range: found \[-1, 2\]'),
    ('x_test', torch.zeros(3, 1, 3, 3), r'inputs have shape \(3, 1, 3, 3\), expected \(N, 1, 2, 2\)'),
])
def test_datasplit_validate_names_the_problem(field, value, message):
    """Issue 10 case 10 (labels out of range): DataSplit.validate checks labels, finite [0, 1] inputs and lengths."""
    parts = dict(x_train=torch.rand(4, 1, 2, 2), y_train=torch.tensor([0, 1, 2, 3]), x_test=torch.rand(3, 1, 2, 2),
                 y_test=torch.tensor([4, 5, 9]))
    assert DataSplit('toy', **parts).validate().name == 'toy'
    parts[field] = value
    with pytest.raises(DataError, match=message):
        DataSplit('toy', **parts, meta={'source': 'here'}).validate()


def test_idx_header_is_checked_before_anything_is_decompressed(tmp_path):
    """Issue 22 case 5: an IDX header with dims (2^22, 2^21, 2^21) made np.prod wrap to 0 (a reshape traceback), and a
    gzip of zeros was decompressed whole before the magic number was read."""
    header = b'\x00\x00\x08\x03' + struct.pack('>3I', 2 ** 22, 2 ** 21, 2 ** 21)
    (tmp_path / 'raw').write_bytes(header)
    with pytest.raises(DataError, match=r'expected 18446744073709551616 bytes of data for shape \(4194304, 2097152, '
                                        r'2097152\), found 0'):
        read_idx(tmp_path / 'raw')
    (tmp_path / 'huge.gz').write_bytes(gzip.compress(header))
    with pytest.raises(DataError, match=r'\(18446744073709551616 bytes\), more than the 31-byte gzip file can hold'):
        read_idx(tmp_path / 'huge.gz')
    (tmp_path / 'zeros.gz').write_bytes(gzip.compress(bytes(1 << 20)))  # no magic: refused after reading 4 bytes
    with pytest.raises(DataError, match=r"zeros.gz is not an unsigned-byte IDX file \(bad magic b'\\x00"):
        read_idx(tmp_path / 'zeros.gz')
    trailing = b'\x00\x00\x08\x01' + struct.pack('>I', 3) + b'\x01\x02\x03' + bytes(1 << 20)
    (tmp_path / 'long.gz').write_bytes(gzip.compress(trailing))
    with pytest.raises(DataError, match=r'expected 3 bytes of data for shape \(3,\), found more'):
        read_idx(tmp_path / 'long.gz')
    (tmp_path / 'ok.gz').write_bytes(gzip.compress(trailing[:11]))
    assert read_idx(tmp_path / 'ok.gz').tolist() == [1, 2, 3]
