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
    # issue 22 case 6: tracebacks, or errors found after the dense model had trained
    ('22-6: seed 2^64', {'seed': 2 ** 64}, 'seed must be a non-negative integer (at most 2^32 - 1'),
    ('22-6: batch_size 10^20', {'batch_size': 10 ** 20}, 'batch_size must be a positive integer (at most 2147483647)'),
    ('22-6: batch_size 1e20', {'batch_size': 1e20}, 'batch_size must be a positive integer'),
    ('22-6: batch_size above the data', {'batch_size': 1000},
     'batch_size 1000 is larger than the 128 training samples'),
    ('22-6: bap log_interval -1', {'method': 'bap', 'bap': {'log_interval': -1}},
     'log_interval must be an integer >= 0'),
    ('22-6: bap clip_min 0.5', {'method': 'bap', 'bap': {'clip_min': 0.5}},
     "bap: clip_min / clip_max do not fit digits: inputs lie in [0, 1], outside the attack's valid range [0.5, 1]"),
    ('22-6: lenet5 on 8x8 digits', {'model': 'lenet5'}, 'model lenet5 cannot take digits inputs of shape (1, 8, 8)'),
    ('22-7: total_times past the steps', {'total_times': 50},
     'total_times 50 is more than the 2 training steps (epochs 1 x 2 batches of 64)'),
]


@pytest.mark.parametrize('case, change, needle', BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_setting_is_one_line_and_writes_nothing(case, change, needle, tmp_path, capsys):
    """Issue 10 cases 3, 7, 10: bad settings were accepted, failed late or ended in a traceback. Issue 22 cases 6 and
    7: the same, checked before the dense model trains (no cache), and the new --out folder is not left behind."""
    cfg = json.dumps({**TINY, **change}).replace('Infinity', '1e999')
    code = main(['--quiet', 'prune', str(_write(tmp_path, cfg)), '--out', str(tmp_path / 'run')])
    _one_line_error(capsys, code, needle)
    assert not (tmp_path / 'run').exists()


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
    _one_line_error(capsys, main(['--quiet', 'eval', str(bad)]), 'model.onnx does not match')  # export.json's hash
    (bad / 'loose.onnx').write_bytes(b'not an onnx file')
    _one_line_error(capsys, main(['--quiet', 'eval', str(bad / 'loose.onnx')]), 'cannot load')
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


# Issue 22: hostile inputs. Every case: one line, exit 2, no partial file and nothing written outside the run.

def _tamper(src: Path, dst: Path, change) -> Path:
    """``src`` with ``change(name, array) -> array or None`` applied to its initializers, metadata kept."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(src))
    for init in model.graph.initializer:
        new = change(init.name, numpy_helper.to_array(init).copy())
        if new is not None:
            init.CopyFrom(numpy_helper.from_array(new, init.name))
    onnx.save(model, str(dst))
    return dst


def _nan_bias(name, a):
    if name.endswith('bias'):
        a[:] = np.nan
        return a
    return None


def test_tampered_onnx_is_refused_and_an_honest_one_accepted(run_dir, tmp_path, capsys):
    """Issue 22 case 1: every initializer negated (metadata kept) was evaluated with exit 0 (torch 0.203, onnxruntime
    0.063, no warning); so were a NaN bias and the folder's model.onnx replaced behind export.json's back."""
    run = tmp_path / 'run'
    shutil.copytree(run_dir, run)
    _tamper(run / 'model.onnx', run / 'alt.onnx', lambda name, a: -a)
    err = _one_line_error(capsys, main(['--quiet', 'eval', str(run / 'alt.onnx')]), 'alt.onnx is not the model it')
    assert 'of the 32 clean test inputs, fp32 needs 0.999' in err
    _tamper(run / 'model.onnx', run / 'nan.onnx', _nan_bias)
    _one_line_error(capsys, main(['--quiet', 'eval', str(run / 'nan.onnx')]), 'nan.onnx holds non-finite weights')
    shutil.copy(run / 'model.onnx', run / 'honest.onnx')
    shutil.copy(run / 'nan.onnx', run / 'model.onnx')
    _one_line_error(capsys, main(['--quiet', 'eval', str(run)]), 'model.onnx does not match')
    assert not (run / 'report.json').exists() and not list(run.glob('.*.tmp'))
    assert main(['--quiet', 'eval', str(run / 'honest.onnx')]) == 0  # the same export under another name
    assert json.loads((run / 'report.json').read_text())['onnx_check']['argmax_agreement'] == 1.0
    assert main(['--quiet', 'export', str(run)]) == 0  # an honest re-export of the same model.pt
    assert main(['--quiet', 'eval', str(run)]) == 0
    rep = json.loads((run / 'report.json').read_text())
    assert rep['onnx'] == 'model.onnx' and rep['onnx_check'] == {'argmax_agreement': 1.0, 'max_abs_diff': 0.0}


def test_symlinks_in_a_run_are_not_followed(run_dir, tmp_path, capsys):
    """Issue 22 case 4: `ln -s /elsewhere/victim.txt RUN/bap.log; bap export RUN` appended log lines to the victim."""
    run, victim, elsewhere = tmp_path / 'run', tmp_path / 'victim.txt', tmp_path / 'elsewhere'
    shutil.copytree(run_dir, run)
    victim.write_text('victim\n')
    (run / 'bap.log').unlink()
    (run / 'bap.log').symlink_to(victim)
    _one_line_error(capsys, main(['--quiet', 'export', str(run)]), 'bap.log is a symbolic link')
    assert victim.read_text() == 'victim\n'
    out = tmp_path / 'out'
    out.mkdir()
    elsewhere.mkdir()
    (out / 'cache').symlink_to(elsewhere)  # the dense cache would be written through it
    _one_line_error(capsys, main(['--quiet', 'prune', str(_write(tmp_path, TINY)), '--out', str(out)]),
                    'cache is a symbolic link')
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in out.iterdir()) == ['bap.log', 'cache']


def _bomb(levels: int) -> str:
    items = ['&a0 [x, x, x, x, x, x, x, x, x]'] + [f'&a{i} [' + ','.join([f'*a{i - 1}'] * 9) + ']'
                                                   for i in range(1, levels)]
    return 'model: [' + ', '.join(items) + ']\n'


@pytest.mark.parametrize('text, needle', [(_bomb(9), 'alias bomb'), (_bomb(6), 'alias bomb'),
                                          ('lr: 0.1\nepochs: 1\nlr: 0.2\n', "line 3, column 1: duplicate key 'lr'")],
                         ids=['9-level alias bomb', '6-level alias bomb', 'duplicate key'])
def test_hostile_yaml_is_one_short_line(text, needle, tmp_path, capsys):
    """Issue 22 cases 5 and 7: a 385-byte alias bomb ran until killed, a 6-level one printed an 8 MB 'line'; a key
    given twice was silently the last one."""
    cfg = _write(tmp_path, text, 'c.yaml')
    err = _one_line_error(capsys, main(['--quiet', 'prune', str(cfg), '--out', str(tmp_path / 'run')]), needle)
    assert len(err) < 300 and not (tmp_path / 'run').exists()


def _mnist_files(folder: Path, images: bytes) -> Path:
    """An MNIST folder whose test images file holds ``images`` (gzip), with 10 valid labels."""
    import gzip
    import struct
    folder.mkdir()
    (folder / 't10k-images-idx3-ubyte.gz').write_bytes(images)
    (folder / 't10k-labels-idx1-ubyte.gz').write_bytes(gzip.compress(b'\x00\x00\x08\x01' + struct.pack('>I', 10)
                                                                     + bytes(range(10))))
    return folder


def test_hostile_idx_files_are_refused_before_decompressing(tmp_path, capsys):
    """Issue 22 case 5: a gzip of zeros named as the MNIST images was decompressed whole before any check
    (MemoryError at 6 GB); an IDX header with dims (2^22, 2^21, 2^21) made np.prod wrap to 0 (traceback)."""
    import gzip
    import struct
    import tracemalloc
    zeros = gzip.compress(bytes(16 << 20), compresslevel=1)  # members concatenate: 16 x 16 MiB = 256 MiB of zeros
    bomb = gzip.compress(b'\x00\x00\x08\x03' + struct.pack('>3I', 10, 28, 28)) + zeros * 16
    data = _mnist_files(tmp_path / 'bomb', bomb)
    cfg = _write(tmp_path, {**TINY, 'model': 'lenet5', 'dataset': 'mnist', 'data_dir': str(data)})
    tracemalloc.start()
    try:
        code = main(['--quiet', 'prune', str(cfg), '--out', str(tmp_path / 'run')])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _one_line_error(capsys, code, 'expected 7840 bytes of data for shape (10, 28, 28), found more')
    assert peak < 32 << 20, peak  # the 256 MiB were never decompressed
    wrap = gzip.compress(b'\x00\x00\x08\x03' + struct.pack('>3I', 2 ** 22, 2 ** 21, 2 ** 21))
    cfg = _write(tmp_path, {**TINY, 'model': 'lenet5', 'dataset': 'mnist',
                            'data_dir': str(_mnist_files(tmp_path / 'wrap', wrap))})
    _one_line_error(capsys, main(['--quiet', 'prune', str(cfg), '--out', str(tmp_path / 'run')]),
                    'announces shape (4194304, 2097152, 2097152) (18446744073709551616 bytes), more than the')
    assert not (tmp_path / 'run').exists()


def test_seed_out_of_range_in_a_sweep_and_a_stored_config(run_dir, tmp_path, capsys):
    """Issue 22 case 6: seed 2^64 through `sweep --seeds` and in a run folder's stored config ended in tracebacks."""
    code = main(['--quiet', 'sweep', str(_write(tmp_path, TINY)), '--seeds', str(2 ** 64),
                 '--out', str(tmp_path / 's')])
    _one_line_error(capsys, code, 'seed must be a non-negative integer')
    assert not (tmp_path / 's').exists()
    run = tmp_path / 'run'
    shutil.copytree(run_dir, run)
    saved = torch.load(run / 'model.pt', weights_only=True)
    saved['config'] = json.dumps({**json.loads(saved['config']), 'seed': 2 ** 64})
    torch.save(saved, run / 'model.pt')
    (run / 'run.json').unlink()
    _one_line_error(capsys, main(['--quiet', 'eval', str(run)]), 'stored config is invalid: seed must be')
    assert not (run / 'report.json').exists()


@pytest.mark.parametrize('key, value, needle', [
    ('input_shape', [], 'input_shape must be three positive sizes (C, H, W), got []'),
    ('num_classes', -3, 'num_classes must be an integer >= 2, got -3'),
    ('masks', [1, 2], 'masks must map module names to masks, got a list'),
    ('masks', {'features.0': {'weight': torch.ones(2, 2)}}, "masks['features.0']['weight'] does not fit the layer"),
])
def test_foreign_model_pt_contents_name_the_key(run_dir, tmp_path, capsys, key, value, needle):
    """Issue 22 case 6: `bap export` of a model.pt whose input_shape is [], num_classes -3 or masks a list ended in
    IndexError / RuntimeError / AttributeError tracebacks."""
    run = tmp_path / 'run'
    shutil.copytree(run_dir, run)
    saved = torch.load(run / 'model.pt', weights_only=True)
    saved[key] = value
    torch.save(saved, run / 'model.pt')
    (run / 'run.json').unlink()  # else the hash check names the rewritten file first
    before = sorted(p.name for p in run.iterdir())
    _one_line_error(capsys, main(['--quiet', 'export', str(run)]), needle)
    assert sorted(p.name for p in run.iterdir()) == before


class _Stop(Exception):
    pass


def _stop_after_first_epoch(epoch, step):
    if epoch == 1:
        raise _Stop


@pytest.mark.parametrize('damage, needle', [
    (lambda s: s.pop('optimizers'), "has no 'optimizers'"),
    (lambda s: s['model'].update({'features.0.weight': s['model']['features.0.weight'][:1]}),
     "its 'model' does not fit this run (Error(s) in loading state_dict for DigitsCNN: size mismatch for "
     'features.0.weight'),
    (lambda s: s['pruner']['counters']['scheduled'].update({'compress': 1}), "its 'pruner' does not fit this run"),
], ids=['no optimizers', 'wrong-shaped tensor', 'foreign counter'])
def test_damaged_checkpoint_names_the_key(tmp_path, capsys, damage, needle):
    """Issue 22 case 6: a checkpoint.pt without optimizers or with a wrong-shaped tensor ended in a KeyError /
    size-mismatch traceback on --resume."""
    from nni_bap.cli.config import RunConfig
    from nni_bap.cli.jobs import run_prune
    cfg = {**TINY, 'epochs': 2, 'method': 'bap'}
    run = tmp_path / 'run'
    with pytest.raises(_Stop):
        run_prune(RunConfig.from_dict(cfg), run, progress=False, cache=run / 'cache',
                  on_epoch_end=_stop_after_first_epoch)
    state = torch.load(run / 'checkpoint.pt', weights_only=True)
    damage(state)
    torch.save(state, run / 'checkpoint.pt')
    code = main(['--quiet', 'prune', str(_write(tmp_path, cfg)), '--out', str(run), '--resume'])
    _one_line_error(capsys, code, needle)
    assert not (run / 'model.pt').exists() and (run / 'checkpoint.pt').exists()


_BATCH = pickle.dumps({b'labels': [1, 2], b'data': np.zeros((2, 3072), np.uint8)}, protocol=2)


@pytest.mark.parametrize('blob, needle', [
    (_BATCH.replace(b'latin1', b'latiQ1'), "not plain data: _codecs.encode with 'latiQ1'"),
    (b'\x80\x04\x8e' + (2 ** 63 + 5).to_bytes(8, 'little') + b'xx.', "BINBYTES8 exceeds system's maximum size"),
    (_BATCH[:-40], 'cannot unpickle'),
], ids=['unknown encoding (LookupError)', 'BINBYTES8 of 2^63 bytes (OverflowError)', 'truncated'])
def test_fuzzed_cifar_batches_are_one_line(tmp_path, capsys, blob, needle):
    """Issue 22 case 6: fuzzed CIFAR-10 pickles raised OverflowError / LookupError past the unpickler's handler."""
    data = tmp_path / 'cifar'
    data.mkdir()
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        (data / name).write_bytes(blob)
    cfg = _write(tmp_path, {**TINY, 'model': 'resnet_small', 'dataset': 'cifar10', 'data_dir': str(data)})
    err = _one_line_error(capsys, main(['--quiet', 'prune', str(cfg), '--out', str(tmp_path / 'run')]),
                          f'cannot read CIFAR-10 batch {data / "data_batch_1"}')
    assert needle in err and not (tmp_path / 'run').exists()


def test_full_disk_names_the_file_and_leaves_nothing(tmp_path, capsys):
    """Issue 22 case 6: a full disk during torch.save ended in the zip writer's RuntimeError traceback (simulated by a
    60 kB file-size limit: writes fail with EFBIG as they would with ENOSPC)."""
    import resource
    import signal
    out = tmp_path / 'run'
    cfg = _write(tmp_path, TINY)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, old_limit[1]))
    try:
        code = main(['--quiet', 'prune', str(cfg), '--out', str(out)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    err = _one_line_error(capsys, code, 'cannot write ')
    assert '/cache/dense-' in err and 'model.pt (disk full or file too large?): ' in err
    assert not list(out.rglob('*.tmp')) and not list(out.rglob('model.pt'))


def test_ctrl_c_is_one_line_and_leaves_no_new_folder(tmp_path, capsys, monkeypatch):
    """Issue 22 case 7: Ctrl-C printed a 69-line traceback and left the new --out folder holding bap.log."""
    import nni_bap.cli.jobs as jobs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(jobs, 'dense_model', interrupted)
    assert main(['--quiet', 'prune', str(_write(tmp_path, TINY)), '--out', str(tmp_path / 'run')]) == 130
    assert capsys.readouterr().err == 'bap: interrupted\n'
    assert not (tmp_path / 'run').exists()


def test_stale_tmp_removed_and_second_writer_refused(run_dir, tmp_path, capsys):
    """Issue 22 case 7: a killed `export --int8` left .model.int8.onnx.*.tmp that no rerun removed; two commands
    writing one run folder raced (the later silently won)."""
    import subprocess
    import sys
    run = tmp_path / 'run'
    shutil.copytree(run_dir, run)
    (run / '.model.int8.onnx.k2j3h4.tmp').write_bytes(b'half an int8 model')
    hold = ('import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); '
            'print("locked", flush=True); time.sleep(60)')
    holder = subprocess.Popen([sys.executable, '-c', hold, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        _one_line_error(capsys, main(['--quiet', 'export', str(run)]), 'is in use by another bap process')
        assert (run / '.model.int8.onnx.k2j3h4.tmp').exists()  # not touched while another process holds the run
    finally:
        holder.kill()
        holder.wait()
    assert main(['--quiet', 'export', str(run)]) == 0
    assert not list(run.glob('.*.tmp')) and 'removed .model.int8.onnx.k2j3h4.tmp' in (run / 'bap.log').read_text()
