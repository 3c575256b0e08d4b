"""Every user error of the ``bap`` command: one line on stderr, exit code 2, nothing lost or half-written (issue 10)."""
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nni_bap.cli.main import main

TINY = {'model': 'digits_cnn', 'dense_epochs': 1, 'epochs': 1, 'total_times': 2, 'train_limit': 128, 'test_limit': 32,
        'method': 'natural', 'config_list': [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.5}],
        'eval': {'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'fgsm': {}}}}}


def _write(tmp_path: Path, cfg, name='cfg.json') -> Path:
    path = tmp_path / name
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return path


def _one_line_error(capsys, code: int, needle: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith('bap: error: ') and 'Traceback' not in err, err
    assert needle in err, err
    return err


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A pruned and exported tiny run."""
    tmp = tmp_path_factory.mktemp('run')
    cfg = _write(tmp, TINY)
    assert main(['--quiet', 'prune', str(cfg), '--out', str(tmp / 'run')]) == 0
    assert main(['--quiet', 'export', str(tmp / 'run')]) == 0
    return tmp / 'run'


BAD_CONFIGS = [
    ('case 3: an infinite lr', {'lr': float('inf')}, 'lr must be a positive finite number'),
    ('case 10: lr abc', {'lr': 'abc'}, 'lr must be a positive finite number'),
    ('case 7: scale 0', {'method': 'bap', 'bap': {'scale': 0}}, 'scale'),
    ('case 7: attack_steps 0', {'method': 'bap', 'bap': {'attack_steps': 0}}, 'steps'),
    ('case 7: a negative eps', {'method': 'adversarial', 'adversarial': {'attack': 'fgsm', 'eps': -0.1}}, 'eps'),
    ('case 7: a bad cutoff', {'method': 'bap', 'bap': {'cutoff': 'mean'}}, 'cutoff'),
    ('case 7: a bad norm', {'method': 'bap', 'bap': {'norm': 'l3'}}, 'norm'),
    ('case 7: one candidate', {'method': 'bap', 'bap': {'candidates': 1}}, 'candidates'),
    ('case 7: an unknown bap setting', {'method': 'bap', 'bap': {'scael': 1.0}}, "unknown bap setting 'scael'"),
    ('case 10: NNI rejects the config_list', {'config_list': [{'op_types': 'Conv2d', 'sparse_ratio': 0.5}]},
     'NNI rejects config_list'),
]


@pytest.mark.parametrize('case, change, needle', BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_setting_is_one_line_and_writes_nothing(case, change, needle, tmp_path, capsys):
    """Issue 10 cases 3, 7, 10: bad settings were accepted, failed late or ended in a traceback."""
    cfg = json.dumps({**TINY, **change}).replace('Infinity', '1e999')
    code = main(['--quiet', 'prune', str(_write(tmp_path, cfg)), '--out', str(tmp_path / 'run')])
    _one_line_error(capsys, code, needle)
    assert not (tmp_path / 'run' / 'model.pt').exists()


def test_divergence_stops_naming_the_step(tmp_path, capsys):
    """Issue 10 case 3: a diverging lr gave an all-NaN model, exit 0, and a cached NaN dense model.

    (lr 1e6 diverges in longer runs; this two-step run needs 1e30 to overflow.)"""
    code = main(['--quiet', 'prune', str(_write(tmp_path, {**TINY, 'lr': 1e30})), '--out', str(tmp_path / 'run')])
    err = _one_line_error(capsys, code, 'training diverged')
    assert 'at step' in err or 'after training' in err
    assert not list((tmp_path / 'run').rglob('model.pt'))


def test_config_list_selecting_nothing_fails(tmp_path, capsys):
    """Issue 10 case 5: op_types [Conv7d] gave an unpruned model labelled sparsity 0.5, exit 0."""
    cfg = {**TINY, 'config_list': [{'op_types': ['Conv7d'], 'sparse_ratio': 0.5}]}
    code = main(['--quiet', 'prune', str(_write(tmp_path, cfg)), '--out', str(tmp_path / 'run')])
    _one_line_error(capsys, code, 'selects no layer')
    assert not (tmp_path / 'run' / 'model.pt').exists()


def test_nni_exclude_entry_is_accepted(tmp_path):
    """Issue 10 case 10: a valid NNI `exclude: true` entry was rejected."""
    cfg = {**TINY, 'config_list': [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.5},
                                   {'exclude': True, 'op_names': ['classifier.3']}]}
    assert main(['--quiet', 'prune', str(_write(tmp_path, cfg)), '--out', str(tmp_path / 'run')]) == 0
    sd = torch.load(tmp_path / 'run' / 'model.pt', weights_only=True)['state_dict']
    assert float((sd['classifier.3.weight'] == 0).float().mean()) == 0.0
    assert float((sd['classifier.1.weight'] == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert json.loads((tmp_path / 'run' / 'run.json').read_text())['measured_sparsity'] == pytest.approx(0.5, abs=0.01)


def test_malformed_yaml_names_the_line(tmp_path, capsys):
    """Issue 10 case 10: malformed YAML gave no line number."""
    code = main(['--quiet', 'prune', str(_write(tmp_path, 'model: lenet5\nepochs: [1, 2\nlr: 0.1\n', 'c.yaml')),
                 '--out', str(tmp_path / 'run')])
    _one_line_error(capsys, code, 'c.yaml line 3')


def test_out_naming_a_file(tmp_path, capsys):
    """Issue 10 case 10: --out naming a file ended in a traceback."""
    (tmp_path / 'taken').write_text('x')
    code = main(['--quiet', 'prune', str(_write(tmp_path, TINY)), '--out', str(tmp_path / 'taken')])
    _one_line_error(capsys, code, 'is not a folder')
    assert (tmp_path / 'taken').read_text() == 'x'


def test_mistyped_eval_path_creates_nothing(tmp_path, capsys):
    """Issue 10 case 10: a mistyped eval path created folders."""
    _one_line_error(capsys, main(['--quiet', 'eval', str(tmp_path / 'nowhere' / 'run')]), 'is not a folder')
    _one_line_error(capsys, main(['--quiet', 'eval', str(tmp_path / 'nowhere' / 'model.onnx')]), 'does not exist')
    assert list(tmp_path.iterdir()) == []


def test_damaged_files_are_one_line(run_dir, tmp_path, capsys):
    """Issue 10 case 10: a corrupt model.pt and a corrupt ONNX file (CorruptModelError) ended in tracebacks."""
    bad = tmp_path / 'bad'
    shutil.copytree(run_dir, bad)
    (bad / 'model.onnx').write_bytes(b'not an onnx file')
    _one_line_error(capsys, main(['--quiet', 'eval', str(bad)]), 'cannot load')
    (bad / 'model.pt').write_bytes((bad / 'model.pt').read_bytes()[:200])
    _one_line_error(capsys, main(['--quiet', 'export', str(bad)]), 'damaged')


def test_eval_of_an_onnx_file_evaluates_that_file(run_dir, tmp_path, capsys):
    """Issue 10 case 6: `bap eval run/other.onnx` evaluated run/model.onnx and never checked where it came from."""
    run = tmp_path / 'run'
    shutil.copytree(run_dir, run)
    shutil.copy(run / 'model.onnx', run / 'other.onnx')
    (run / 'model.onnx').unlink()
    assert main(['--quiet', 'eval', str(run / 'other.onnx')]) == 0
    rep = json.loads((run / 'report.json').read_text())
    assert rep['onnx'] == 'other.onnx' and set(rep['curves']['linf']['accuracy']) == {'torch', 'onnx'}
    # an ONNX file exported from another model is refused
    other = tmp_path / 'other'
    cfg = _write(tmp_path, {**TINY, 'seed': 1})
    assert main(['--quiet', 'prune', str(cfg), '--out', str(other)]) == 0
    shutil.copy(run / 'other.onnx', other / 'stranger.onnx')
    _one_line_error(capsys, main(['--quiet', 'eval', str(other / 'stranger.onnx')]), 'was not exported from')


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), 'pwned'))


def test_run_folder_cannot_run_code(run_dir, tmp_path, capsys):
    """Issue 10 case 1: model.pt's stored config led `bap eval` into pickle.load of crafted CIFAR-10 batch files."""
    data = tmp_path / 'cifar'
    data.mkdir()
    marker = tmp_path / 'MARKER'
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        (data / name).write_bytes(pickle.dumps({b'data': np.zeros((2, 3072), np.uint8), b'labels': [0, 1],
                                                b'evil': _Evil(str(marker))}))
    run = tmp_path / 'run'
    shutil.copytree(run_dir, run)
    saved = torch.load(run / 'model.pt', weights_only=True)
    saved['config'] = json.dumps({**json.loads(saved['config']), 'dataset': 'cifar10', 'data_dir': str(data)})
    torch.save(saved, run / 'model.pt')
    for name in ('run.json', 'model.onnx'):
        (run / name).unlink()
    _one_line_error(capsys, main(['--quiet', 'eval', str(run)]), "refused global 'pathlib")
    assert not marker.exists()


def test_config_list_naming_a_missing_layer_fails_before_training(tmp_path, capsys):
    """NNI raises KeyError for an op_name the model lacks: one line, before the dense model is trained."""
    cfg = {**TINY, 'config_list': [{'op_names': ['nonexist'], 'sparse_ratio': 0.5}]}
    code = main(['--quiet', 'prune', str(_write(tmp_path, cfg)), '--out', str(tmp_path / 'run')])
    _one_line_error(capsys, code, 'NNI rejects config_list: KeyError')
    assert not list((tmp_path / 'run').rglob('model.pt'))


def test_run_json_that_is_not_an_object(run_dir, tmp_path, capsys):
    bad = tmp_path / 'bad'
    shutil.copytree(run_dir, bad)
    (bad / 'run.json').write_text('[1, 2]')
    _one_line_error(capsys, main(['--quiet', 'export', str(bad)]), 'holds a list, not a dict')


def test_empty_sweep_lists_are_refused(tmp_path, capsys):
    """An empty --sparsities or --methods ran the dense model and wrote an empty aer.json."""
    for flag, needle in (('--sparsities', 'numbers'), ('--methods', 'names')):
        with pytest.raises(SystemExit) as stop:
            main(['--quiet', 'sweep', str(_write(tmp_path, TINY)), flag, ',', '--out', str(tmp_path / 's')])
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and len(err.splitlines()) == 1 and f'expected comma-separated {needle}' in err
    assert not (tmp_path / 's').exists()
