"""Issue 10, "Runs you can trust": data is never code, bad inputs and settings are refused where they enter."""
import gzip
import math
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nni.compression.pruning import LevelPruner

from nni_bap import AdversarialPruner, BAPPruner
from nni_bap.attacks.base import Attack
from nni_bap.attacks.deepfool import DeepFool
from nni_bap.attacks.fgsm import FGSM
from nni_bap.attacks.pgd import PGD
from nni_bap.attacks.pgd_l2 import PGDL2
from nni_bap.data import DataError, DataSplit, load_cifar10, load_dataset
from nni_bap.export import CorruptModelError, InputValueError, OnnxClassifier
from nni_bap.models import build_model
from nni_bap.training import make_evaluator

CIFAR_FILES = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']
RANGE_MESSAGE = (r"inputs lie in \[-2\.5, 2\.5\], outside the attack's valid range \[0, 1\]; put normalisation "
                 r'inside the model \(e\.g\. a first layer that normalises\) or set clip_min/clip_max')
CFG = [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.5}]


# ---------------------------------------------------------------- data is data, never code

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


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f'>{arr.ndim}I', *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


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


# ---------------------------------------------------------------- inputs outside [clip_min, clip_max]

def _net():
    torch.manual_seed(0)
    return build_model('digits_cnn', 1, 10, 8).eval()


def _normalised(digits, n=32):
    x = digits.x_train[:n].clone()
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 1.0  # the normalised batch spans exactly [-2.5, 2.5]
    return (x - 0.5) / 0.2, digits.y_train[:n]


@pytest.mark.parametrize('make', [lambda m: FGSM(m, eps=0.1), lambda m: PGD(m, eps=0.1, steps=2),
                                  lambda m: PGDL2(m, eps=0.5, steps=2), lambda m: DeepFool(m, steps=2)],
                         ids=['fgsm', 'pgd', 'pgd_l2', 'deepfool'])
def test_attacks_refuse_normalised_inputs(make, digits):
    """Issue 10 case 7 (inputs outside [clip_min, clip_max]): every attack refuses a mean/std-normalised batch
    instead of clamping it into [0, 1]; in-range and one-side-open batches pass."""
    model = _net()
    x, y = _normalised(digits)
    attack = make(model)
    with pytest.raises(ValueError, match=RANGE_MESSAGE):
        attack(x, y)
    if isinstance(attack, DeepFool):  # one way in: the base class's call, and attack() through the same guard
        assert DeepFool.__call__ is Attack.__call__
        with pytest.raises(ValueError, match=RANGE_MESSAGE):
            attack.attack(x, y)
    bad = digits.x_train[:4].clone()
    bad[1, 0, 2, 2] = float('nan')
    with pytest.raises(ValueError, match='NaN or infinite'):
        attack(bad, y[:4])
    assert attack(torch.clamp(digits.x_train[:4] + 1e-7, max=1 + 1e-7), y[:4]).shape == (4, 1, 8, 8)
    attack.clip_min = None  # only the upper side is checked now: x - 0.5 lies in [-0.5, 0.5]
    assert attack(digits.x_train[:4] - 0.5, y[:4]).shape == (4, 1, 8, 8)


@pytest.mark.parametrize('cls', [BAPPruner, AdversarialPruner])
def test_pruner_step_refuses_normalised_batch(cls, digits):
    """Issue 10 case 7 (inputs outside [clip_min, clip_max]): the pruners' training step refuses a normalised
    batch before crafting AEs, with the one-line message."""
    model = _net()
    x, y = _normalised(digits, 64)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    base = LevelPruner(model, CFG, evaluator=make_evaluator(model, loader, progress=False))
    pruner = cls(base, interval_steps=2, total_times=2, log_interval=0)
    with pytest.raises(ValueError, match=RANGE_MESSAGE):
        pruner.compress(max_steps=4, max_epochs=None)
    assert pruner.statistics == []


# ---------------------------------------------------------------- settings validated at construction

BAD_BAP = [('scale', 0), ('scale', -1.0), ('scale', math.nan), ('cutoff', -0.5), ('cutoff', 'mean'),
           ('cutoff', math.nan), ('cutoff', math.inf), ('attack_steps', 0), ('attack_steps', 2.5),
           ('candidates', 1), ('norm', 'l1'), ('overshoot', -0.1), ('clip_min', 1.0)]
BAD_ADV = [('eps', 0), ('eps', -0.1), ('eps', math.inf), ('steps', 0), ('alpha', 0.0),
           ('alpha', -0.01), ('clip_max', -1.0)]


@pytest.mark.parametrize('cls, setting, value', [(BAPPruner, *s) for s in BAD_BAP] + [(AdversarialPruner, *s)
                                                                                      for s in BAD_ADV])
def test_pruners_refuse_bad_settings_at_construction(cls, setting, value, digits):
    """Issue 10 case 7 (settings validated at construction): scale=0, attack_steps=0, eps<=0, a bad cutoff / norm /
    candidates... raise ValueError naming the setting and value when the pruner is built."""
    model = _net()
    loader = DataLoader(TensorDataset(digits.x_train[:64], digits.y_train[:64]), batch_size=32)
    base = LevelPruner(model, CFG, evaluator=make_evaluator(model, loader, progress=False))
    name = 'clip_min must be below clip_max' if setting.startswith('clip') else setting
    with pytest.raises(ValueError, match=f'^{name}') as info:
        cls(base, interval_steps=2, total_times=2, log_interval=0, **{setting: value})
    assert repr(value) in str(info.value)


@pytest.mark.parametrize('make, name', [
    (lambda m: FGSM(m, eps=-0.1), 'eps'), (lambda m: FGSM(m, eps=math.nan), 'eps'),
    (lambda m: PGD(m, steps=0), 'steps'), (lambda m: PGD(m, steps=3.5), 'steps'), (lambda m: PGD(m, alpha=0), 'alpha'),
    (lambda m: PGDL2(m, eps=-1.0), 'eps'), (lambda m: DeepFool(m, steps=0), 'steps'),
    (lambda m: DeepFool(m, overshoot=-0.02), 'overshoot'), (lambda m: DeepFool(m, candidates=2.5), 'candidates'),
    (lambda m: FGSM(m, clip_min=1.0, clip_max=0.0), 'clip_min must be below clip_max'),
    (lambda m: PGD(m, clip_min=math.nan), 'clip_min'),
])
def test_attacks_refuse_bad_settings_at_construction(make, name):
    """Issue 10 case 7 (settings validated at construction): eps < 0, steps < 1 or not an integer, alpha <= 0,
    overshoot < 0, candidates not an integer >= 2 and an empty clip range are refused by the constructor."""
    with pytest.raises(ValueError, match=f'^{name}'):
        make(_net())


# ---------------------------------------------------------------- OnnxClassifier

def _onnx(path, outputs=1, out_shape=('batch', 3)):
    """A linear classifier 4 -> 3 as an ONNX graph, with ``outputs`` copies of its logits as outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, 'w')
    nodes = [helper.make_node('MatMul', ['x', 'w'], ['logits'])]
    nodes += [helper.make_node('Identity', ['logits'], [f'copy{i}']) for i in range(1, outputs)]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(out_shape))
            for n in ['logits'] + [f'copy{i}' for i in range(1, outputs)]]
    graph = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['batch', 4])],
                              outs, [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=8)
    onnx.save(model, str(path))
    return str(path)


def test_onnx_classifier_refuses_non_finite_inputs(tmp_path):
    """Issue 10 case 4 (OnnxClassifier): an all-NaN batch labelled 0 is refused (it used to score accuracy 1.0)."""
    clf = OnnxClassifier(_onnx(tmp_path / 'm.onnx'), threads=1)
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    assert clf.logits(x).shape == (5, 3)
    with pytest.raises(InputValueError, match='20 NaN or infinite values'):
        clf.accuracy(np.full((5, 4), np.nan, np.float32), np.zeros(5, np.int64))
    x[2, 1] = np.inf
    with pytest.raises(ValueError, match='1 NaN or infinite values'):  # InputValueError is a ValueError
        clf.predict(x)


def test_onnx_latency_runs_the_batch_it_reports(tmp_path):
    """Issue 10 case 4 (OnnxClassifier): latency(batch_size=8, x=2 rows) tiles the rows up to 8 and runs 8
    (it used to run 2 and report 8)."""
    clf = OnnxClassifier(_onnx(tmp_path / 'm.onnx'), threads=1)
    ran, run = [], clf.session.run
    clf.session.run = lambda names, feed: ran.append(next(iter(feed.values())).shape) or run(names, feed)
    x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    lat = clf.latency(batch_size=8, warmup=1, repeats=3, x=x)
    assert ran == [(8, 4)] * 4
    assert lat['batch_size'] == 8 and lat['rows_given'] == 2 and lat['tiled'] is True and lat['median_ms'] > 0
    ran.clear()
    lat = clf.latency(batch_size=1, warmup=0, repeats=2, x=x)
    assert ran == [(1, 4)] * 2 and lat['batch_size'] == 1 and lat['tiled'] is False
    with pytest.raises(InputValueError):
        clf.latency(batch_size=2, x=np.full((2, 4), np.nan, np.float32))


@pytest.mark.parametrize('outputs, out_shape, message', [(3, ('batch', 3), '1 inputs and 3 outputs'),
                                                         (1, ('batch', 3, 2), 'expected \\(batch, classes\\)')])
def test_onnx_classifier_refuses_a_graph_that_is_not_a_classifier(tmp_path, outputs, out_shape, message):
    """Issue 10 case 6 (OnnxClassifier): a 3-output graph (or one whose output is not (batch, classes)) is refused
    at load time instead of silently scoring output 0."""
    path = _onnx(tmp_path / 'multi.onnx', outputs, out_shape)
    with pytest.raises(CorruptModelError, match=message) as info:
        OnnxClassifier(path)
    assert path in str(info.value)
