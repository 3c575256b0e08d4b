import json
import subprocess
import sys

import pytest

from nni_bap.cli.main import main
from nni_bap.cli.rows import AER_KEYS

BAD = [
    ({'modell': 'lenet5'}, "unknown config key 'modell'"),
    ({'config_list': [{'op_types': ['Conv2d'], 'sparse_ratio': 1.2}]}, 'sparse_ratio must be a number in (0, 1)'),
    ({'config_list': [{'op_types': ['Conv2d'], 'sparse_ratio': 0}]}, 'sparse_ratio must be a number in (0, 1)'),
    ({'dataset': 'mnist', 'data_dir': '/nowhere/mnist'}, 'data folder /nowhere/mnist does not exist'),
    ({'model': 'vgg19'}, "unknown model 'vgg19'"),
    ({'method': 'adversarial-foo'}, "cannot read method suffix 'foo'"),
]


@pytest.mark.parametrize('cfg, message', BAD)
def test_bad_config_stops_with_one_line(cfg, message, tmp_path, capsys):
    path = tmp_path / 'cfg.json'
    path.write_text(json.dumps(cfg))
    assert main(['--quiet', 'prune', str(path), '--out', str(tmp_path / 'run')]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / 'run').exists()


def test_bad_sweep_sparsity_and_missing_run(tmp_path, capsys):
    path = tmp_path / 'cfg.yaml'
    path.write_text('model: digits_cnn\n')
    assert main(['--quiet', 'sweep', str(path), '--sparsities', '0.5,1.0', '--out', str(tmp_path / 's')]) == 2
    assert 'sparsity must be in (0, 1), got 1.0' in capsys.readouterr().err
    assert main(['--quiet', 'export', str(tmp_path)]) == 2
    assert 'no model.pt' in capsys.readouterr().err


def test_demo_tiny_writes_valid_aer(tmp_path):
    """The demo prunes by weights (level) and by channels (l1) beside the dense reference (issue 24): channel-pruned
    rows have fewer FLOPs, parameters and bytes than dense, unstructured ones fewer non-zero weights only; every
    export has bn_drift 0; rows say their process in full; a fresh run logs nothing as 'redone'."""
    out = tmp_path / 'demo'
    proc = subprocess.run([sys.executable, '-m', 'nni_bap.cli', '--quiet', 'demo', '--tiny', '--sparsities', '0.5',
                           '--out', str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / 'aer.json').read_text())
    (dense,) = json.loads((out / 'dense.json').read_text())
    assert {(r['method'], r['base_pruner'], r['sparsity']) for r in rows} == {
        (m, bp, 0.5) for m in ('natural', 'adversarial', 'bap') for bp in ('level', 'l1')}
    assert dense['method'] == 'dense' and dense['base_pruner'] is None and dense['flops'] == 1199360
    for r in rows:
        assert set(AER_KEYS) <= set(r) and r['process'] == 'agp@0.7' and r['bn_drift'] == 0.0
        assert 0 <= r['clean_accuracy'] <= 1 and all(0 <= v <= 1 for v in r['robust_auc'].values())
        assert (out / r['onnx']).exists() and r['onnx_max_abs_diff'] <= 1e-4 and r['latency_ms'] > 0
        if r['base_pruner'] == 'l1':  # layers shrunk: conv2 16 -> 8 outputs, conv3 8 inputs and 32 outputs
            assert r['flops'] < 0.5 * dense['flops'] and r['params'] < 0.5 * dense['params']
            assert r['file_bytes'] < 0.5 * dense['file_bytes'] and r['nonzero_params'] == r['params']
        else:
            assert r['flops'] == dense['flops'] and r['params'] == dense['params']
            assert r['nonzero_params'] < 0.6 * r['params']
    assert (out / 'aer.png').stat().st_size > 10000 and (out / 'aer.csv').read_text().startswith('method,base_pruner')
    assert 'bap/l1' in proc.stdout and 'MFLOPs' in proc.stdout and 'Wilson interval' in proc.stdout
    assert 'redone' not in (out / 'bap.log').read_text()


def test_prune_export_eval_roundtrip(tmp_path):
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text('model: digits_cnn\ndense_epochs: 2\nepochs: 1\ntotal_times: 2\ntrain_limit: 256\n'
                   'test_limit: 64\nmethod: bap\nbase_pruner: l1\n'
                   'config_list: [{op_types: [Conv2d], sparse_ratio: 0.5}]\n'
                   'eval: {linf: {budgets: [0.0, 0.1], key_points: [0.1], attacks: {fmn: {steps: 5}, '
                   'apgd-ce: {steps: 3}}}}\n')
    run = tmp_path / 'run'
    assert main(['--quiet', 'prune', str(cfg), '--out', str(run)]) == 0
    assert main(['--quiet', 'export', str(run)]) == 0
    exp = json.loads((run / 'export.json').read_text())
    assert exp['structured'] and exp['efficiency']['flops'] < 675072
    assert main(['--quiet', 'eval', str(run / 'model.onnx')]) == 0
    rep = json.loads((run / 'report.json').read_text())
    assert set(rep['curves']['linf']['accuracy']) == {'torch', 'onnx'}
    assert rep['curves']['linf']['accuracy']['torch'] == rep['curves']['linf']['accuracy']['onnx']
    assert [k['budget'] for k in rep['key_points']] == [0.1] and rep['key_points'][0]['n'] == 64
    assert (run / 'report.md').read_text().startswith('# Robustness report') and (run / 'curves.png').exists()
    assert rep['latency']['batch_64']['median_ms'] > 0 and 0 <= rep['transfer']['onnx_accuracy'] <= 1
    kernels = rep['kernels_batch_64']
    assert 'Conv' in kernels[0]['op'] and [k['median_us'] for k in kernels] == sorted((k['median_us'] for k in kernels), reverse=True)
    assert kernels[0]['node'] in (run / 'report.md').read_text()


def test_export_int8_and_eval_it(tmp_path):
    """`bap export --int8` writes a validated model.int8.onnx with its robustness re-checked next to fp32;
    `bap eval` of that file evaluates it, and the aer row says its precision."""
    from nni_bap.cli.rows import aer_row
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text('model: digits_cnn\ndense_epochs: 10\nepochs: 1\ntotal_times: 2\nmethod: natural\n'
                   'config_list: [{op_types: [Conv2d, Linear], sparse_ratio: 0.5}]\n'
                   'eval: {linf: {budgets: [0.0, 0.1], key_points: [0.1], attacks: {fgsm: {}}}}\n')
    run = tmp_path / 'run'
    assert main(['--quiet', 'prune', str(cfg), '--out', str(run)]) == 0
    # --force-int8: on a CPU where this small CNN's int8 runs slower than fp32 export skips it (tests/test_quantize.py)
    assert main(['--quiet', 'export', str(run), '--int8', '--force-int8']) == 0
    q = json.loads((run / 'export.json').read_text())['int8']
    assert q['onnx'] == 'model.int8.onnx' and (run / 'model.int8.onnx').stat().st_size < (run / 'model.onnx').stat().st_size
    assert q['agreement'] >= 0.99 and abs(q['fp32_accuracy'] - q['int8_accuracy']) <= 0.01
    assert q['settings']['target_cpu'] in ('vnni', 'no-vnni') and 'avx2' in q['settings']['cpu']
    assert 'transfer' in q['robustness']['note'] and len(q['robustness']['rows']) == 3
    assert main(['--quiet', 'eval', str(run / 'model.int8.onnx')]) == 0
    rep = json.loads((run / 'report.json').read_text())
    assert rep['onnx'] == 'model.int8.onnx' and rep['clean_accuracy_by']['onnx'] == pytest.approx(q['int8_accuracy'])
    assert aer_row(run, tmp_path)['precision'] == 'int8'


def test_installed_bap_command_runs_the_cli():
    """pyproject's console script names the CLI's main function, and the installed ``bap`` beside this Python runs
    (the README's `make demo` calls it; the in-process tests above do not go through it)."""
    import importlib
    import shutil
    import tomllib
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    module, func = tomllib.loads((root / 'pyproject.toml').read_text())['project']['scripts']['bap'].split(':')
    assert getattr(importlib.import_module(module), func) is main
    bap = Path(sys.executable).with_name('bap')
    if not bap.exists():
        bap = shutil.which('bap')
    assert bap, 'no installed bap command (pip install -e .)'
    res = subprocess.run([str(bap), '--help'], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and 'demo' in res.stdout, res.stderr[-500:]
