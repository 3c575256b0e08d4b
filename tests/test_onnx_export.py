import io
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from nni.compression.pruning import L1NormPruner, LevelPruner

from nni_bap.export import (
    BatchNormDriftError,
    CorruptModelError,
    InputShapeError,
    MasksNeededError,
    OnnxClassifier,
    OnnxParityError,
    SpeedupParityError,
    export_onnx,
    onnx_efficiency,
    zero_channel_masks,
)
from nni_bap.export.speedup import speed_up
from nni_bap.models import build_model
from nni_bap.pruning.channel_mask import apply_channel_masks
from nni_bap.pruning.compat import finalize
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


def _structured(model, x, ratio=0.5, consistent=True):
    """L1 channel masks (dependency groups) of ``model``, unwrapped; with ``consistent`` the BatchNorm channels after
    the removed ones are zeroed (what pruning with channel masks gives), else they keep their shifts (drift)."""
    cfg = structured_dependency_config(model, [{'op_types': ['Conv2d'], 'sparse_ratio': ratio}])
    pruner = L1NormPruner(model, cfg)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    if consistent:
        apply_channel_masks(model, masks)
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


def test_speedup_output_goes_to_the_log_not_the_console(tmp_path, capsys, caplog):
    """Issue 24: ModelSpeedup's coloured lines ('replace module...') and NNI's prints reached the user's stdout.
    NNI's own console handler writes to the stdout of import time (pytest's capture cannot see it), so a stand-in
    handler on the 'nni' logger checks that channel too."""
    console = io.StringIO()
    stand_in = logging.StreamHandler(console)
    logging.getLogger('nni').addHandler(stand_in)
    caplog.set_level(logging.INFO, logger='nni')  # NNI's own level (the CLI's set-up, run by earlier tests, raises it)
    caplog.set_level(logging.DEBUG, logger='nni_bap.export.speedup')  # last: it also sets the capture's level
    try:
        model, x = _model('resnet_small')
        masks = _structured(model, x)
        res = export_onnx(model, str(tmp_path / 'm.onnx'), x, masks=masks)
    finally:
        logging.getLogger('nni').removeHandler(stand_in)
    assert res.structured and res.bn_drift == 0.0
    assert console.getvalue() == ''
    assert capsys.readouterr() == ('', '')
    logged = [r.getMessage() for r in caplog.records if r.name == 'nni_bap.export.speedup']
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == 'nni_bap.export.speedup')
    assert sum('replace module' in m for m in logged) >= 10 and any(m.startswith('printed: ') for m in logged)
    assert stand_in not in logging.getLogger('nni').handlers and len(logging.getLogger('nni').handlers) >= 1


def test_pruned_model_without_masks_is_refused_with_what_to_pass(tmp_path):
    """Issue 24: a pruned model exported without masks= was written full size with the note 'no masks'."""
    model, x = _model('lenet5')
    cfg = [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}]
    pruner = L1NormPruner(model, cfg)
    _, masks = pruner.compress()
    with pytest.raises(MasksNeededError, match='NNI wrappers.*masks='):
        export_onnx(model, str(tmp_path / 'wrapped.onnx'), x)
    plain = finalize(pruner)  # conv1 6 -> 3, conv2 16 -> 8 channels, as zeros
    with pytest.raises(MasksNeededError, match=r'11 output channels of features.0, features.3 are zero') as info:
        export_onnx(plain, str(tmp_path / 'plain.onnx'), x)
    assert 'zero_channel_masks' in str(info.value) and 'masks={}' in str(info.value)
    assert not list(tmp_path.glob('*.onnx'))
    derived = zero_channel_masks(plain)
    assert sorted(derived) == ['features.0', 'features.3']
    assert torch.equal(derived['features.0']['weight'], masks['features.0']['weight'])
    small = export_onnx(plain, str(tmp_path / 'small.onnx'), x, masks=derived)
    full = export_onnx(plain, str(tmp_path / 'full.onnx'), x, masks={})
    assert small.structured and small.efficiency['params'] < full.efficiency['params'] == 61706
    level, _ = _model('lenet5')  # unstructured zeros, some rows whole: not taken for channel pruning
    level_pruner = LevelPruner(level, [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.9}])
    level_pruner.compress()
    assert zero_channel_masks(finalize(level_pruner)) == {}
    export_onnx(level, str(tmp_path / 'level.onnx'), x)


def test_export_refuses_a_drifting_model_in_one_line(tmp_path):
    """Issue 24: a channel-pruned model whose BatchNorm shifts were not masked exported a different model (the
    CLI prints the one line, exit 2); max_bn_drift=inf exports it anyway and reports the drift."""
    model, x = _model('resnet_small')
    masks = _structured(model, x, consistent=False)
    with pytest.raises(BatchNormDriftError, match='bn_drift') as info:
        export_onnx(model, str(tmp_path / 'drift.onnx'), x, masks=masks)
    assert '\n' not in str(info.value) and info.value.bn_drift > 1e-3 and not (tmp_path / 'drift.onnx').exists()
    res = export_onnx(model, str(tmp_path / 'drift.onnx'), x, masks=masks, max_bn_drift=float('inf'))
    assert res.bn_drift == pytest.approx(info.value.bn_drift, rel=0.2)  # partly measured on fresh random inputs
