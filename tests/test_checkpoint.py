"""Interrupted pruning runs resume from checkpoint.pt and end bit-identical to uninterrupted ones (CPU, fixed seed)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from nni_bap.cli.main import main
from nni_bap.errors import CheckpointError
from nni_bap.models import build_model
from nni_bap.pruning.prune import prune

CONFIG_LIST = [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.6}]


class Stop(Exception):
    """Stands for the process dying right after a checkpoint."""


def _stop_after(k):
    def on_epoch_end(epoch, step):
        if epoch == k:
            raise Stop(f'stopped after epoch {epoch}, step {step}')
    return on_epoch_end


def _same(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    masks = {(k, t) for k, v in a.masks.items() for t in v} == {(k, t) for k, v in b.masks.items() for t in v}
    return (sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa) and masks
            and all(torch.equal(m, b.masks[k][t]) for k, v in a.masks.items() for t, m in v.items() if m is not None))


@pytest.fixture(scope='module')
def setting(digits):
    torch.manual_seed(0)
    return build_model('digits_cnn', 1, 10, 8), digits.subset(512, 64).train_set()


# adversarial: FGSM-RS draws random starts, so the torch RNG must come back too; stopped after the last epoch,
# the resumed run has nothing left to train
@pytest.mark.parametrize('method, args, k', [('bap', {}, 2), ('adversarial', {'attack': 'fgsm', 'eps': 0.1}, 2),
                                             ('bap', {}, 4)])
def test_resumed_run_is_bit_identical(setting, tmp_path, method, args, k):
    model, data = setting
    kw = dict(method=method, method_args=args, epochs=4, total_times=4, config_list=CONFIG_LIST, progress=False)
    reference = prune(model, data, **kw)
    ckpt = tmp_path / 'checkpoint.pt'
    with pytest.raises(Stop):
        prune(model, data, checkpoint=ckpt, on_epoch_end=_stop_after(k), **kw)
    assert torch.load(ckpt, weights_only=True)['epoch'] == k
    resumed = prune(model, data, checkpoint=ckpt, resume=True, **kw)
    assert resumed.resumed_from == k and reference.resumed_from is None
    assert _same(reference, resumed)
    assert resumed.statistics == reference.statistics and len(resumed.statistics) == 4 * 8
    assert resumed.sparsity == reference.sparsity


def test_resume_refuses_another_runs_checkpoint(setting, tmp_path):
    model, data = setting
    kw = dict(method='natural', epochs=2, total_times=2, config_list=CONFIG_LIST, progress=False)
    ckpt = tmp_path / 'checkpoint.pt'
    with pytest.raises(Stop):
        prune(model, data, checkpoint=ckpt, on_epoch_end=_stop_after(1), **kw)
    with pytest.raises(CheckpointError, match='written by another run'):
        prune(model, data, checkpoint=ckpt, resume=True, **{**kw, 'lr': 0.01})
    ckpt.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='is damaged'):
        prune(model, data, checkpoint=ckpt, resume=True, **kw)


CLI_CONFIG = ('model: digits_cnn\ndense_epochs: 1\nepochs: 6\ntotal_times: 4\ntrain_limit: 768\ntest_limit: 64\n'
              'method: bap\nconfig_list: [{op_types: [Conv2d, Linear], sparse_ratio: 0.6}]\n')


def _bap(*args, **kw):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.Popen([sys.executable, '-m', 'nni_bap', '--quiet', *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _kill_at_first_checkpoint(proc, ckpt, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not ckpt.exists():
        assert proc.poll() is None, f'ended before its first checkpoint: {proc.communicate()[1][-2000:]}'
        assert time.monotonic() < deadline, 'no checkpoint.pt in time'
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_cli_run_resumes_to_the_same_model(tmp_path):
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text(CLI_CONFIG)
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    reference = _bap('prune', cfg, '--out', ref)
    assert reference.wait(timeout=300) == 0, reference.communicate()[1]
    _kill_at_first_checkpoint(_bap('prune', cfg, '--out', run), run / 'checkpoint.pt')
    assert not (run / 'model.pt').exists() and not (run / 'run.json').exists()  # killed mid-run
    resumed = _bap('prune', cfg, '--out', run, '--resume')
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1]
    a, b = (torch.load(d / 'model.pt', weights_only=True) for d in (ref, run))
    assert all(torch.equal(a['state_dict'][k], b['state_dict'][k]) for k in a['state_dict'])
    assert all(torch.equal(m, b['masks'][k][t]) for k, v in a['masks'].items() for t, m in v.items())
    assert (ref / 'stats.json').read_text() == (run / 'stats.json').read_text()
    info = json.loads((run / 'run.json').read_text())
    assert info['resumed_from_epoch'] >= 1 and not (run / 'checkpoint.pt').exists()
    # a finished run is reused as it is
    before = (run / 'model.pt').stat().st_mtime_ns
    assert main(['--quiet', 'prune', str(cfg), '--out', str(run), '--resume']) == 0
    assert (run / 'model.pt').stat().st_mtime_ns == before
