"""Issue 13 part 3: int8 static quantisation (QDQ, per-channel), validated against fp32, written only when it passes."""
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from nni_bap.export import (
    OnnxClassifier,
    QuantizationError,
    craft_transfer_inputs,
    export_onnx,
    onnx_precision,
    quantize_int8,
    robustness_recheck,
)
from nni_bap.export.cpu import INT8_TARGETS, cpu_features, int8_settings, int8_target
from nni_bap.pruning.training import accuracy


@pytest.fixture(scope='module')
def fp32(dense_digits, digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp('int8')
    res = export_onnx(dense_digits, str(folder / 'model.onnx'), digits.x_test[:8], validation_inputs=digits.x_test)
    return res.path


def _quantize(fp32, digits, out, **kw):
    return quantize_int8(fp32, str(out), digits.x_train[:512].numpy(), digits.x_test.numpy(), digits.y_test.numpy(),
                         latency_batches=(), **kw)


AVX512_VNNI = {'AVX2': True, 'AVX512F': True, 'AVX512BW': True, 'AVX512VNNI': True}
AVX512_NO_VNNI = {'AVX2': True, 'AVX512F': True, 'AVX512BW': True}  # Skylake-X
AVX2_ONLY = {'AVX2': True}  # e.g. AMD EPYC before Zen 4


@pytest.mark.parametrize('found, machine, kind', [(AVX512_VNNI, 'x86_64', 'vnni'), (AVX512_NO_VNNI, 'x86_64', 'no-vnni'),
                                                  (AVX2_ONLY, 'x86_64', 'no-vnni'), ({}, 'x86_64', 'no-vnni'),
                                                  ({}, 'aarch64', 'vnni')])
def test_cpu_kind_decides_the_int8_settings(found, machine, kind, monkeypatch):
    """VNNI (or no x86 at all): full-range int8 weights; x86 without VNNI: 7-bit weights (reduce_range)."""
    monkeypatch.setattr('platform.machine', lambda: machine)
    features = cpu_features(read=lambda: found)
    assert features['machine'] == machine and features['avx512vnni'] == bool(found.get('AVX512VNNI'))
    assert int8_target(features) == kind
    auto = int8_settings('auto', features)
    assert auto['target_cpu'] == kind and auto['chosen_by'] == 'this CPU' and auto['cpu'] == features
    assert auto['reduce_range'] is (kind == 'no-vnni')
    for forced in INT8_TARGETS:
        assert int8_settings(forced, features)['reduce_range'] is (forced == 'no-vnni')
        assert int8_settings(forced, features)['chosen_by'] == 'forced'
    with pytest.raises(ValueError, match="target_cpu must be 'auto', 'vnni' or 'no-vnni'"):
        int8_settings('avx2', features)


def _conv_weight_range(path):
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    return max(int(np.abs(a.astype(np.int32)).max()) for a in inits.values() if a.dtype == np.int8 and a.ndim == 4)


@pytest.mark.parametrize('target_cpu', ['vnni', 'no-vnni'])
def test_each_cpu_kind_forced(target_cpu, fp32, digits, tmp_path):
    """Either kind can be forced on any CPU. 'no-vnni' stores 7-bit weights (|w| <= 64: two u8 x s8 products fit
    in int16, so no kernel saturates and the gate holds on every x86 CPU); 'vnni' uses the full int8 range, whose
    results on a CPU without VNNI differ (agreement 0.989 there on this model, 0.997 with VNNI)."""
    gate = {} if target_cpu == 'no-vnni' else {'min_agreement': 0.97, 'max_accuracy_drop': 0.02}
    res = _quantize(fp32, digits, tmp_path / 'model.int8.onnx', target_cpu=target_cpu, **gate)
    assert res.settings['target_cpu'] == target_cpu and res.settings['chosen_by'] == 'forced'
    assert res.settings['reduce_range'] is (target_cpu == 'no-vnni') and 'avx512vnni' in res.settings['cpu']
    assert OnnxClassifier(res.path).metadata['quantization'].count(f'"target_cpu": "{target_cpu}"') == 1
    top = _conv_weight_range(res.path)
    assert top <= 64 if target_cpu == 'no-vnni' else top == 127


def test_int8_round_trip_on_digits(fp32, digits, dense_digits, tmp_path):
    res = _quantize(fp32, digits, tmp_path / 'model.int8.onnx')
    assert res.settings['target_cpu'] == int8_target() and res.settings['chosen_by'] == 'this CPU'
    torch_acc = accuracy(dense_digits, digits.x_test, digits.y_test)
    assert res.validation_inputs == 360 and res.calibration_inputs == 512
    assert res.agreement >= 0.99
    assert abs(res.fp32_accuracy - torch_acc) <= 1 / 360 and res.fp32_accuracy >= 0.8
    assert res.fp32_accuracy - res.int8_accuracy <= 0.01
    assert res.fp32_bytes == os.path.getsize(fp32) and res.int8_bytes < 0.5 * res.fp32_bytes
    clf = OnnxClassifier(res.path)
    assert clf.accuracy(digits.x_test.numpy(), digits.y_test.numpy()) == res.int8_accuracy
    assert clf.metadata['precision'] == 'int8' and clf.metadata['producer'] == 'nni-bap'
    assert onnx_precision(res.path) == 'int8' and onnx_precision(fp32) == 'fp32'
    assert '"per_channel": true' in clf.metadata['quantization'] and '"QDQ"' in clf.metadata['quantization']


def test_int8_weights_are_per_channel_qdq(fp32, digits, tmp_path):
    res = _quantize(fp32, digits, tmp_path / 'model.int8.onnx')
    model = onnx.load(res.path)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count('QuantizeLinear') >= 4 and ops.count('DequantizeLinear') >= 8
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    int8_weights = [a for a in inits.values() if a.dtype == np.int8 and a.ndim == 4]
    assert sorted(w.shape[0] for w in int8_weights) == [16, 32]  # both conv weights stored as int8
    conv_scales = [inits[n.input[1]] for n in model.graph.node if n.op_type == 'DequantizeLinear'
                   and inits.get(n.input[0]) is not None and inits[n.input[0]].ndim == 4]
    assert sorted(s.size for s in conv_scales) == [16, 32]  # one scale per output channel


def test_refused_int8_writes_nothing(fp32, digits, tmp_path):
    out = tmp_path / 'model.int8.onnx'
    with pytest.raises(QuantizationError, match=r'argmax agreement 1\.0+ < 1\.01') as info:
        _quantize(fp32, digits, out, min_agreement=1.01)
    assert info.value.measured['agreement'] >= 0.99
    with pytest.raises(QuantizationError, match='clean accuracy fell by'):
        _quantize(fp32, digits, out, max_accuracy_drop=-0.5)
    with pytest.raises(QuantizationError, match='255 calibration inputs given, at least 256'):
        quantize_int8(fp32, str(out), digits.x_train[:255].numpy(), digits.x_test.numpy(), digits.y_test.numpy(),
                      latency_batches=())
    assert os.listdir(tmp_path) == []  # no file, no temporary left behind


def test_robustness_recheck_side_by_side(fp32, digits, dense_digits, tmp_path):
    res = _quantize(fp32, digits, tmp_path / 'model.int8.onnx')
    x, y = digits.x_test, digits.y_test
    adv = craft_transfer_inputs(dense_digits, x, y, [0.0, 0.1, 0.2], attack='fgsm')
    torch_adv = {b: accuracy(dense_digits, torch.from_numpy(a), y) for b, a in adv.items()}
    out = robustness_recheck(fp32, res.path, x.numpy(), y.numpy(), adv, norm='linf')
    assert 'crafted on the fp32 torch model' in out['note'] and 'uniform random' in out['note']
    rows = {r['budget']: r for r in out['rows']}
    assert sorted(rows) == [0.0, 0.1, 0.2]
    assert rows[0.0]['adversarial'] == rows[0.0]['noise'] == out['clean']
    for b, row in rows.items():
        assert abs(row['adversarial']['fp32'] - torch_adv[b]) <= 1 / 360
        assert abs(row['adversarial']['int8'] - row['adversarial']['fp32']) <= 0.05
    assert rows[0.2]['adversarial']['fp32'] < out['clean']['fp32'] - 0.3  # FGSM transfers to ORT
    assert rows[0.2]['noise']['int8'] > rows[0.2]['adversarial']['int8'] + 0.2  # noise is far weaker
