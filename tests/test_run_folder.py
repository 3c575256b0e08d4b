"""Run folders you can trust (issue 10): atomic writes, hashes, resume, determinism, the dense cache."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nni_bap.cli.config import RunConfig
from nni_bap.cli.dense import dense_key
from nni_bap.cli.main import main
from nni_bap.cli.rows import AER_KEYS, aer_row
from nni_bap.cli.run_folder import RunFolder
from nni_bap.data import load_digits
from nni_bap.errors import RunFolderError
from nni_bap.utils.atomic import atomic_write, sha256_file, write_json

TINY = {'model': 'digits_cnn', 'dense_epochs': 1, 'epochs': 1, 'total_times': 2, 'train_limit': 128, 'test_limit': 32,
        'method': 'natural', 'config_list': [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.5}],
        'eval': {'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'fgsm': {}}}}}


def _config(tmp_path: Path, **changes) -> Path:
    path = tmp_path / f'cfg-{len(list(tmp_path.glob("cfg-*")))}.json'
    path.write_text(json.dumps({**TINY, **changes}))
    return path


def _sweep(cfg: Path, out: Path, *extra: str) -> int:
    return main(['--quiet', 'sweep', str(cfg), '--sparsities', '0.5', '--methods', 'natural', '--out', str(out),
                 *extra])


def _mtimes(out: Path, name: str):
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob(f'*/*/{name}')}


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    """Issue 10 case 9: a write that dies midway leaves the complete old file and no temporary file."""
    path = tmp_path / 'report.json'
    write_json(path, {'a': 1})

    def dies(fh):
        fh.write(b'{"a": 2, "trunc')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies)
    assert json.loads(path.read_text()) == {'a': 1}
    assert [p.name for p in tmp_path.iterdir()] == ['report.json']


def test_json_is_strict(tmp_path):
    """Issue 10 case 3: no bare NaN in a report; non-finite numbers are written as null."""
    write_json(tmp_path / 'r.json', {'x': float('nan'), 'y': [1.0, float('inf')]})
    assert json.loads((tmp_path / 'r.json').read_text()) == {'x': None, 'y': [1.0, None]}
    assert 'NaN' not in (tmp_path / 'r.json').read_text()


def test_dense_cache_key_covers_what_determines_the_model():
    """Issue 10 case 3: the dense-model cache key left out lr and batch_size."""
    data = load_digits().subset(64, 8)
    base = RunConfig.from_dict({'train_limit': 64})
    keys = {dense_key(base.replace(**change), data) for change in
            ({}, {'lr': 0.01}, {'batch_size': 32}, {'seed': 1}, {'dense_epochs': 3}, {'model': 'lenet5'})}
    assert len(keys) == 6
    assert dense_key(base, data) == dense_key(base.replace(epochs=99, method='bap'), data)
    assert dense_key(base, data) != dense_key(base, load_digits().subset(63, 8))


def test_resume_reruns_only_what_is_stale(tmp_path):
    """Issue 10 cases 2 and 9: --resume after a config change reruns, after a truncated report.json reruns the eval of
    that run only, after a half-rewritten folder (new model.pt, old model.onnx / report.json) redoes export and eval."""
    out = tmp_path / 'sweep'
    cfg = _config(tmp_path)
    assert main(['--quiet', 'sweep', str(cfg), '--sparsities', '0.5,0.8', '--methods', 'natural', '--out', str(out)]) == 0
    first = _mtimes(out, 'report.json')
    assert set(first) == {'natural-0.5', 'natural-0.8'}
    run = out / 'agp-seed0' / 'natural-0.5'
    text = (run / 'report.json').read_text()
    (run / 'report.json').write_text(text[:len(text) // 2])  # as if killed mid-write by a non-atomic writer
    model_mtime = (run / 'model.pt').stat().st_mtime_ns
    assert main(['--quiet', 'sweep', str(cfg), '--sparsities', '0.5,0.8', '--methods', 'natural', '--out', str(out),
                 '--resume']) == 0
    second = _mtimes(out, 'report.json')
    assert second['natural-0.8'] == first['natural-0.8'] and second['natural-0.5'] > first['natural-0.5']
    assert (run / 'model.pt').stat().st_mtime_ns == model_mtime  # not pruned again
    assert 'report.json is damaged' in (out / 'bap.log').read_text()
    # a half-rewritten folder: another model.pt under the old run.json, model.onnx and report.json
    other = out / 'agp-seed0' / 'natural-0.8' / 'model.pt'
    (run / 'model.pt').write_bytes(other.read_bytes())
    assert main(['--quiet', 'sweep', str(cfg), '--sparsities', '0.5,0.8', '--methods', 'natural', '--out', str(out),
                 '--resume']) == 0
    info = json.loads((run / 'run.json').read_text())
    rows = json.loads((out / 'aer.json').read_text())
    row = next(r for r in rows if r['sparsity'] == 0.5)
    assert row['clean_accuracy'] == pytest.approx(info['clean_accuracy']) and info['sparsity'] == 0.5
    assert info['model_hash'] == sha256_file(run / 'model.pt')
    assert json.loads((run / 'export.json').read_text())['model_hash'] == info['model_hash']
    # a changed config reruns every run and the rows follow the new runs
    cfg2 = _config(tmp_path, epochs=2)
    assert main(['--quiet', 'sweep', str(cfg2), '--sparsities', '0.5,0.8', '--methods', 'natural', '--out', str(out),
                 '--resume']) == 0
    assert 'config changed' in (out / 'bap.log').read_text()
    for r in json.loads((out / 'aer.json').read_text()):
        folder = out / 'agp-seed0' / f'natural-{r["sparsity"]:g}'
        assert r['clean_accuracy'] == json.loads((folder / 'run.json').read_text())['clean_accuracy']
        assert RunFolder(folder).check_export() is None
    assert set(AER_KEYS) == set(aer_row(run, out))


def test_damaged_dense_cache_is_retrained(tmp_path):
    """Issue 10 case 9: a truncated dense cache broke every later run until deleted by hand."""
    out = tmp_path / 'sweep'
    cfg = _config(tmp_path)
    assert _sweep(cfg, out) == 0
    (cache,) = (out / 'cache').glob('dense-*')
    (cache / 'model.pt').write_bytes((cache / 'model.pt').read_bytes()[:100])
    assert _sweep(cfg, out, '--resume') == 0
    assert 'dense cache' in (out / 'bap.log').read_text() and 'not reused' in (out / 'bap.log').read_text()
    RunFolder(cache).load_model()  # whole again


def test_eval_spec_without_pgd_writes_table_and_plot(tmp_path, capsys):
    """Issue 10 case 8: an eval spec without pgd crashed the sweep in plot_aer after every run had finished."""
    out = tmp_path / 'sweep'
    assert _sweep(_config(tmp_path), out) == 0
    assert (out / 'aer.png').stat().st_size > 10000 and 'natural' in capsys.readouterr().out


#: One run in a fresh process: prune (keeping a copy of the checkpoint of epoch 1), then export.
_RUN = """
import shutil, sys
from pathlib import Path
from nni_bap.cli.config import RunConfig, load_config
from nni_bap.cli.jobs import run_prune
from nni_bap.cli.main import main
cfg, out = RunConfig.from_dict(load_config(sys.argv[1])), Path(sys.argv[2])
keep = lambda epoch, step: epoch == 1 and shutil.copy(out / 'checkpoint.pt', out.parent / (out.name + '-epoch1.pt'))
run_prune(cfg, out, progress=False, cache=out / 'cache', on_epoch_end=keep)
sys.exit(main(['--quiet', 'export', str(out)]))
"""


def _run_in_subprocess(cfg: Path, out: Path, hash_seed: str) -> None:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONHASHSEED': hash_seed}
    proc = subprocess.run([sys.executable, '-c', _RUN, str(cfg), str(out)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr


def _checkpoint_bytes(path: Path) -> bytes:
    """The checkpoint as saved, its one measured field (wall seconds) set to 0; re-saved in the order it was read."""
    import io
    state = torch.load(path, weights_only=True)
    state['seconds'] = 0.0
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_same_run_same_bytes_whatever_the_hash_seed(tmp_path):
    """Issue 10 case 4: the same config and seed in two fresh folders gave different dense models. Issue 22 case 2:
    equal tensors but different model.pt bytes (the masks dict followed Python's string hashing), so model_hash and
    the ONNX model_sha256 differed between identical runs; two processes with other hash seeds now write the same
    bytes."""
    cfg = _config(tmp_path, method='bap', dense_epochs=2, epochs=2, total_times=2)
    a, b = tmp_path / 'a', tmp_path / 'b'
    _run_in_subprocess(cfg, a, '1')
    _run_in_subprocess(cfg, b, '2')
    for name in ('model.pt', 'stats.json', 'model.onnx'):
        assert sha256_file(a / name) == sha256_file(b / name), name
    (dense_a,), (dense_b,) = (list((p / 'cache').glob('dense-*')) for p in (a, b))
    assert sha256_file(dense_a / 'model.pt') == sha256_file(dense_b / 'model.pt')
    assert _checkpoint_bytes(tmp_path / 'a-epoch1.pt') == _checkpoint_bytes(tmp_path / 'b-epoch1.pt')
    ra, rb = (json.loads((p / 'run.json').read_text()) for p in (a, b))
    assert ra['model_hash'] == rb['model_hash'] and ra['config_hash'] == rb['config_hash']
    assert list(torch.load(a / 'model.pt', weights_only=True)['masks']) == sorted(
        torch.load(a / 'model.pt', weights_only=True)['masks'])


def test_load_model_refuses_a_model_pt_that_run_json_does_not_know(tmp_path):
    """Issue 10 case 2: a rewritten model.pt is not silently paired with another run's files."""
    cfg = _config(tmp_path)
    run = tmp_path / 'run'
    assert main(['--quiet', 'prune', str(cfg), '--out', str(run)]) == 0
    folder = RunFolder(run)
    assert folder.check_prune(json.loads((run / 'run.json').read_text())['config_hash']) is None
    torch.save(torch.load(run / 'model.pt', weights_only=True), run / 'model.pt', _use_new_zipfile_serialization=False)
    with pytest.raises(RunFolderError, match='does not match'):
        folder.load_model()
    assert 'does not match' in folder.check_prune(json.loads((run / 'run.json').read_text())['config_hash'])


def test_dense_epochs_zero_trains_nothing():
    """`dense_epochs: 0` is valid and must leave the model as built (it trained one epoch)."""
    from nni_bap.models import build_model
    from nni_bap.pruning.training import train
    data = load_digits().subset(64, 8)
    torch.manual_seed(0)
    model = build_model('digits_cnn', 1, 10, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, data.train_set(), epochs=0, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_changed_data_reruns_and_the_log_says_why(tmp_path, mnist_dir):
    """Issue 22 case 3: MNIST's pixels inverted in data_dir (same path, same size): `bap prune --resume` said 'pruning
    already done for this config, reused' and kept the clean accuracy measured on the old data."""
    import gzip
    import shutil

    import numpy as np
    data = tmp_path / 'mnist'
    data.mkdir()
    for f in mnist_dir.glob('t10k-*.gz'):
        shutil.copy(f, data / f.name)
    cfg = _config(tmp_path, model='lenet5', dataset='mnist', data_dir=str(data), train_limit=256, test_limit=64)
    run = tmp_path / 'run'
    assert main(['--quiet', 'prune', str(cfg), '--out', str(run)]) == 0
    first = json.loads((run / 'run.json').read_text())
    images = data / 't10k-images-idx3-ubyte.gz'
    raw = np.frombuffer(gzip.decompress(images.read_bytes()), np.uint8).copy()
    raw[16:] = 255 - raw[16:]
    images.write_bytes(gzip.compress(raw.tobytes(), compresslevel=1))
    assert main(['--quiet', 'prune', str(cfg), '--out', str(run), '--resume']) == 0
    second = json.loads((run / 'run.json').read_text())
    assert second['data_hash'] != first['data_hash'] and second['model_hash'] != first['model_hash']
    assert 'pruning redone (--resume): the data changed since the run' in (run / 'bap.log').read_text()
    assert len(list((run / 'cache').glob('dense-*'))) == 2  # the dense model retrained on the new data
    assert main(['--quiet', 'prune', str(cfg), '--out', str(run), '--resume']) == 0  # now reused
    assert json.loads((run / 'run.json').read_text()) == second


def test_missing_or_damaged_stage_file_makes_its_stage_stale(tmp_path):
    """Issue 22 case 3: `sweep --resume` with a run's stats.json deleted logged '(reused)' and left it missing; a
    damaged curves.png (not hashed) was reused too."""
    out, cfg = tmp_path / 'sweep', _config(tmp_path)
    assert _sweep(cfg, out) == 0
    run = out / 'agp-seed0' / 'natural-0.5'
    (run / 'stats.json').unlink()
    assert _sweep(cfg, out, '--resume') == 0
    assert (run / 'stats.json').is_file()
    assert 'redone from prune: stats.json is missing or does not match run.json' in (out / 'bap.log').read_text()
    model = (run / 'model.pt').stat().st_mtime_ns
    (run / 'curves.png').write_bytes(b'not a png')
    assert _sweep(cfg, out, '--resume') == 0
    assert 'redone from eval: curves.png is missing or does not match report.json' in (out / 'bap.log').read_text()
    assert (run / 'model.pt').stat().st_mtime_ns == model and (run / 'curves.png').stat().st_size > 1000
    assert RunFolder(run).check_report(json.loads((run / 'report.json').read_text())['spec_hash'], onnx=True) is None
