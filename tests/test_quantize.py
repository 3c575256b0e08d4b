"""Issue 13 part 3: int8 static quantisation (QDQ, per-channel), validated against fp32, written only when it passes."""
import copy
import logging
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
        _quantize(fp32, digits, out, min_agreement=1.01, fallback=False)
    assert info.value.measured['agreement'] >= 0.99
    with pytest.raises(QuantizationError, match='no attempt passed the gate with at most 2 of 4 layers in fp32 '
                                                r'\(MinMax with 0 fp32 layers: .*; last: clean accuracy fell by'):
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


def _outliers(model, pairs, scale=1000.0):
    """A copy computing the same function with one channel of each (producer, consumer) pair of layer names scaled by
    ``scale`` and back: ReLU is positively homogeneous, so fp32 is unchanged, but that channel's range swamps the
    other channels' int8 steps."""
    bad = copy.deepcopy(model)
    modules = dict(bad.named_modules())
    with torch.no_grad():
        for producer, consumer in pairs:
            modules[producer].weight[0] *= scale
            modules[producer].bias[0] *= scale
            modules[consumer].weight[:, 0] /= scale
    return bad


@pytest.fixture(scope='module')
def fails_whole_model(dense_digits, digits, tmp_path_factory):
    bad = _outliers(dense_digits, [('features.0', 'features.2')])
    path = str(tmp_path_factory.mktemp('outliers') / 'model.onnx')
    return export_onnx(bad, path, digits.x_test[:8], validation_inputs=digits.x_test).path


@pytest.mark.parametrize('target_cpu', ['vnni', 'no-vnni'])
def test_fallback_passes_the_gate_with_the_sensitive_layers_in_fp32(fails_whole_model, digits, tmp_path, capfd, caplog,
                                                                      target_cpu):
    """Every calibration method fails on the whole model (agreement < 0.2); the two layers around the outlier channel,
    the most sensitive when quantised alone, stay fp32 and the rest passes the gate (for either CPU kind's settings)."""
    caplog.set_level(logging.DEBUG, logger='nni_bap.export.quantize')
    res = _quantize(fails_whole_model, digits, tmp_path / 'model.int8.onnx', target_cpu=target_cpu)
    # the histogram calibrations' progress lines go to the log, not the user's terminal
    assert capfd.readouterr().out == '' and any('making histogram' in r.getMessage() for r in caplog.records)
    whole = [a for a in res.attempts if not a['fp32_layers']]
    assert [a['calibrate_method'] for a in whole] == ['MinMax', 'Percentile', 'Entropy', 'Distribution']
    assert all(not a['passed'] and a['agreement'] < 0.99 for a in whole)  # < 0.2 with this CPU's kernels
    # the two layers around the outlier channel are picked first; int8 kernels of another CPU may need one more
    assert list(res.fp32_layers)[:2] in (['/features/features.0/Conv', '/features/features.2/Conv'],
                                         ['/features/features.2/Conv', '/features/features.0/Conv'])
    assert len(res.fp32_layers) <= 3
    assert all('most sensitive' in why and 'quantised alone it agrees' in why for why in res.fp32_layers.values())
    first = list(res.fp32_layers)[:2]
    assert max(res.sensitivity[n] for n in first) < 0.5 < min(v for n, v in res.sensitivity.items() if n not in first)
    assert res.attempts[-1]['passed'] and res.agreement >= 0.99 and res.fp32_accuracy - res.int8_accuracy <= 0.01
    assert res.settings['calibrate_method'] == res.attempts[-1]['calibrate_method']
    model = onnx.load(res.path)
    quantized = {n.input[0] for n in model.graph.node if n.op_type == 'DequantizeLinear'}
    convs = {n.name: n for n in model.graph.node if n.op_type == 'Conv'}
    assert not any(i in quantized for i in convs['/features/features.2/Conv'].input[1:])  # fp32 weights
    assert sum(1 for n in model.graph.node if n.op_type == 'DequantizeLinear') >= 2  # the dense layers are int8
    assert '"/features/features.0/Conv"' in OnnxClassifier(res.path).metadata['fp32_layers']
    with pytest.raises(QuantizationError, match=r'refused, nothing written: argmax agreement 0\.\d+ < 0\.99'):
        _quantize(fails_whole_model, digits, tmp_path / 'nope.int8.onnx', fallback=False)
    assert not (tmp_path / 'nope.int8.onnx').exists()


def test_a_model_that_cannot_pass_is_refused_after_the_fallback(dense_digits, digits, tmp_path):
    """Outlier channels after both convolutions and the first dense layer: passing would need all four layers in
    fp32, more than half of them; refused, no file."""
    bad = _outliers(dense_digits, [('features.0', 'features.2'), ('classifier.1', 'classifier.3')])
    fp32 = export_onnx(bad, str(tmp_path / 'model.onnx'), digits.x_test[:8], validation_inputs=digits.x_test).path
    out = tmp_path / 'model.int8.onnx'
    refused = 'no attempt passed the gate with at most 2 of 4 layers in fp32'
    with pytest.raises(QuantizationError, match=refused) as info:
        _quantize(fp32, digits, out)
    assert info.value.measured['agreement'] < 0.99 and not out.exists()
    assert sorted(os.listdir(tmp_path)) == ['model.onnx']


def test_int8_slower_than_fp32_is_skipped_unless_kept(fp32, digits, tmp_path):
    """With latency measured, an int8 model slower than fp32 at every batch size is not written (one line says why);
    ``keep_slower`` writes it. The decision follows the measurement, whichever way it falls on this CPU."""
    from nni_bap.export.quantize import _skip_slower, _Slower
    with pytest.raises(_Slower, match=r'int8 skipped: slower than fp32 on this CPU \(b1: int8 2\.000 ms vs fp32 1\.0'):
        _skip_slower({'b1': {'fp32': 1.0, 'int8': 2.0}, 'b64': {'fp32': 10.0, 'int8': 11.0}}, keep_slower=False)
    _skip_slower({'b1': {'fp32': 1.0, 'int8': 2.0}, 'b64': {'fp32': 10.0, 'int8': 9.0}}, keep_slower=False)
    _skip_slower({'b1': {'fp32': 1.0, 'int8': 1.04}}, keep_slower=False)  # within timing noise: not slower
    _skip_slower({'b1': {'fp32': 1.0, 'int8': 2.0}}, keep_slower=True)
    res = quantize_int8(fp32, str(tmp_path / 'a.int8.onnx'), digits.x_train[:512].numpy(), digits.x_test.numpy(),
                        digits.y_test.numpy(), latency_batches=(1, 64))
    slower = all(v['int8'] > 1.05 * v['fp32'] for v in res.latency_ms.values())
    assert set(res.latency_ms) == {'b1', 'b64'} and (tmp_path / 'a.int8.onnx').exists() is not slower
    if slower:
        assert res.skipped.startswith('int8 skipped: slower than fp32') and res.path == ''
    else:
        assert res.skipped == '' and res.path.endswith('a.int8.onnx')
    kept = quantize_int8(fp32, str(tmp_path / 'b.int8.onnx'), digits.x_train[:512].numpy(), digits.x_test.numpy(),
                         digits.y_test.numpy(), latency_batches=(1,), keep_slower=True)
    assert kept.skipped == '' and (tmp_path / 'b.int8.onnx').exists()
