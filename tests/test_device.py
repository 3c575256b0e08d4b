"""The ``device`` setting: resolved once where it enters, refused in one line before any work when unusable."""
import json

import pytest
import torch

from nni_bap.cli.config import RunConfig
from nni_bap.cli.main import main
from nni_bap.errors import ConfigError
from nni_bap.utils.device import resolve_device, to_device

CONFIG = ('model: digits_cnn\ndense_epochs: 1\nepochs: 1\ntotal_times: 2\ntrain_limit: 256\ntest_limit: 64\n'
          'method: bap\nconfig_list: [{op_types: [Conv2d, Linear], sparse_ratio: 0.5}]\n'
          'eval: {linf: {budgets: [0.0, 0.1], key_points: [0.1], attacks: {fmn: {steps: 5}}}}\n')
NO_CUDA = not torch.cuda.is_available()


def _weights(run):
    return torch.load(run / 'model.pt', weights_only=True)['state_dict']


def test_prune_and_eval_on_cpu_end_to_end(tmp_path):
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text(CONFIG)
    assert main(['--quiet', 'prune', str(cfg), '--out', str(tmp_path / 'cpu'), '--device', 'cpu']) == 0
    info = json.loads((tmp_path / 'cpu' / 'run.json').read_text())
    assert info['device'] == 'cpu' and info['processes'] == 1 and 0 <= info['clean_accuracy'] <= 1
    stored = json.loads(torch.load(tmp_path / 'cpu' / 'model.pt', weights_only=True)['config'])
    assert stored['device'] == 'cpu'
    # where a run computes is not what it computes: same config hash as 'auto', and here (no GPU) the same weights
    assert info['config_hash'] == RunConfig.from_dict({**stored, 'device': 'auto'}).config_hash()
    if NO_CUDA:
        assert main(['--quiet', 'prune', str(cfg), '--out', str(tmp_path / 'auto')]) == 0
        a, b = _weights(tmp_path / 'cpu'), _weights(tmp_path / 'auto')
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert main(['--quiet', 'eval', str(tmp_path / 'cpu'), '--device', 'cpu']) == 0
    assert json.loads((tmp_path / 'cpu' / 'report.json').read_text())['samples'] == 64


BAD = [(['--device', 'gpu'], "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
       (['--device', 'cuda:x'], "got 'cuda:x'")]
if NO_CUDA:
    BAD += [(['--device', 'cuda'], "device 'cuda' is not available"),
            (['--device', 'cuda:1'], "device 'cuda:1' is not available")]


@pytest.mark.parametrize('command', ['prune', 'sweep'])
@pytest.mark.parametrize('option, message', BAD)
def test_bad_device_is_refused_in_one_line_before_any_work(tmp_path, capsys, command, option, message):
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text(CONFIG)
    assert main(['--quiet', command, str(cfg), '--out', str(tmp_path / 'out'), *option]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith('bap: error:')
    assert not (tmp_path / 'out').exists()


def test_bad_device_in_the_config_and_for_eval(tmp_path, capsys):
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text(CONFIG + 'device: tpu\n')
    assert main(['--quiet', 'prune', str(cfg), '--out', str(tmp_path / 'out')]) == 2
    assert "got 'tpu'" in capsys.readouterr().err and not (tmp_path / 'out').exists()
    assert main(['--quiet', 'eval', str(tmp_path / 'nowhere'), '--device', 'gpu']) == 2
    err = capsys.readouterr().err  # refused before the run folder is even looked at
    assert "got 'gpu'" in err and 'nowhere' not in err


def test_resolve_device_with_and_without_gpus(monkeypatch):
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert resolve_device('auto') == torch.device('cpu') and resolve_device(None) == torch.device('cpu')
    with pytest.raises(ConfigError, match='not available'):
        resolve_device('cuda')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert resolve_device('auto') == torch.device('cuda', 0) and resolve_device('cuda:1') == torch.device('cuda', 1)
    assert resolve_device('cpu') == torch.device('cpu')
    with pytest.raises(ConfigError, match='torch sees 2 CUDA GPU'):
        resolve_device('cuda:2')
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('LOCAL_RANK', '1')
    assert resolve_device('auto') == torch.device('cuda', 1) and resolve_device('cuda') == torch.device('cuda', 1)
    with pytest.raises(ConfigError, match='one GPU for 2 processes'):
        resolve_device('cuda:0')


def test_batches_follow_the_device():
    t = torch.ones(2, 3)
    moved = to_device({'x': t, 'pair': (t, [t, 7]), 'name': 'a'}, torch.device('meta'))
    assert moved['x'].is_meta and moved['pair'][0].is_meta and moved['pair'][1][0].is_meta
    assert moved['pair'][1][1] == 7 and moved['name'] == 'a' and isinstance(moved['pair'], tuple)
    assert to_device(t, torch.device('cpu')) is t  # no copy on the device the data is on already
