import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from nni.compression.pruning import L1NormPruner, LevelPruner

from nni_bap.export import (
    CorruptModelError,
    InputShapeError,
    OnnxClassifier,
    OnnxParityError,
    SpeedupParityError,
    export_onnx,
    onnx_efficiency,
)
from nni_bap.export.speedup import speed_up
from nni_bap.models import build_model
from nni_bap.pruning.dependency import structured_dependency_config

SHAPES = {'lenet5': (1, 28), 'resnet_small': (3, 32)}


def _model(name, seed=0):
    torch.manual_seed(seed)
    c, s = SHAPES[name]
    model = build_model(name, c, 10, s)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for _ in range(3):
            model(torch.rand(32, c, s, s))
    return model.eval(), torch.rand(8, c, s, s)


def _structured(model, x, ratio=0.5):
    cfg = structured_dependency_config(model, [{'op_types': ['Conv2d'], 'sparse_ratio': ratio}])
    pruner = L1NormPruner(model, cfg)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return masks


@pytest.mark.parametrize('name', sorted(SHAPES))
def test_structured_speedup_exports_smaller(name, tmp_path):
    dense, x = _model(name)
    dense_res = export_onnx(dense, str(tmp_path / 'dense.onnx'), x)
    model, _ = _model(name)
    masks = _structured(model, x)
    res = export_onnx(model, str(tmp_path / 'pruned.onnx'), x, masks=masks, validation_inputs=torch.rand(64, *x.shape[1:]))
    assert res.structured and res.speedup_max_abs_diff <= 1e-5 * 10
    assert res.onnx_max_abs_diff <= 1e-4 and res.argmax_agreement == 1.0
    d, p = dense_res.efficiency, res.efficiency
    assert p['file_bytes'] < d['file_bytes'] and p['params'] < d['params']
    if name == 'lenet5':
        # conv1 6->3 (half), conv2 16->8 out and 6->3 in (a quarter), fc1 400->200 inputs (half)
        conv1, conv2, fc1, rest = 28 * 28 * 6 * 25, 10 * 10 * 16 * 6 * 25, 400 * 120, 120 * 84 + 84 * 10
        assert d['macs'] == conv1 + conv2 + fc1 + rest
        assert p['macs'] == conv1 // 2 + conv2 // 4 + fc1 // 2 + rest
    else:
        assert p['flops'] < 0.4 * d['flops']
    clf = OnnxClassifier(res.path)
    assert clf.metadata['producer'] == 'nni-bap' and 0 < float(clf.metadata['total_sparsity']) < 0.5
    first_conv = 'features.0' if name == 'lenet5' else 'stem.0'
    assert json.loads(clf.metadata['layer_sparsity'])[first_conv] == pytest.approx(0.5)


def test_level_pruning_exports_exact_zeros(tmp_path):
    model, x = _model('lenet5')
    pruner = LevelPruner(model, [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.9}])
    _, masks = pruner.compress()
    res = export_onnx(model, str(tmp_path / 'level.onnx'), x, masks=masks)  # still wrapped: handled
    assert not res.structured and 'unstructured' in res.note
    eff = onnx_efficiency(res.path)
    weights = {n: v for n, v in eff['initializers'].items() if v['size'] >= 150}
    assert len(weights) == 5
    for n, v in weights.items():
        assert v['zeros'] / v['size'] == pytest.approx(0.9, abs=0.002), n
    assert eff['params'] == 61706


def test_corrupt_onnx_wrong_shape_and_parity_failure(tmp_path):
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not a model at all')
    with pytest.raises(CorruptModelError):
        OnnxClassifier(str(bad))
    model, x = _model('lenet5')
    res = export_onnx(model, str(tmp_path / 'ok.onnx'), x)
    with pytest.raises(InputShapeError, match=r'\(batch, 1, 28, 28\)'):
        OnnxClassifier(res.path).predict(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(InputShapeError):
        export_onnx(model, str(tmp_path / 'shape.onnx'), torch.rand(2, 1, 8, 8))
    assert not (tmp_path / 'shape.onnx').exists()
    with pytest.raises(OnnxParityError) as info:
        export_onnx(model, str(tmp_path / 'strict.onnx'), x, atol=-1.0)  # no difference can pass
    assert 'max abs difference' in str(info.value) and info.value.mismatches
    assert sorted(os.listdir(tmp_path)) == ['bad.onnx', 'ok.onnx']  # no partial file left


def test_speedup_parity_failure_is_typed():
    model, x = _model('resnet_small')
    masks = _structured(model, x)
    with pytest.raises(SpeedupParityError):
        speed_up(model, masks, x, rtol=-1.0)


def test_runtime_needs_neither_torch_nor_nni(tmp_path):
    model, x = _model('lenet5')
    res = export_onnx(model, str(tmp_path / 'm.onnx'), x)
    np.savez(tmp_path / 'adv.npz', x=x.numpy(), y=model(x).argmax(1).numpy())
    code = textwrap.dedent(f'''
        import sys
        sys.modules['torch'] = None
        sys.modules['nni'] = None
        import numpy as np
        from nni_bap.errors import InputShapeError
        from nni_bap.export.runtime import OnnxClassifier
        clf = OnnxClassifier({res.path!r}, threads=1)
        assert clf.accuracy_npz({str(tmp_path / 'adv.npz')!r}) == 1.0
        lat = clf.latency(batch_size=4, warmup=2, repeats=5)
        assert lat['median_ms'] > 0
        rows = clf.profile(np.random.rand(16, 1, 28, 28).astype(np.float32), repeats=5)
        assert abs(sum(r['share'] for r in rows) - 1) < 1e-6
        assert sum('Conv' in r['op'] for r in rows) == 2 and sum('Gemm' in r['op'] for r in rows) == 3
        assert 'classifier.5' in max(rows, key=lambda r: r['index'] if 'Gemm' in r['op'] else -1)['node']
        try:
            clf.profile(np.zeros((2, 3, 28, 28), np.float32))
            raise SystemExit('no InputShapeError')
        except InputShapeError:
            pass
        assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]
        print('ok')
    ''')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'
