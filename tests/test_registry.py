"""Registries instead of name tables (issue 19): a thing registered with its decorator alone is usable everywhere
its kind is named (configs, the eval spec, the command line, the pruners), and every registered name shows up in
the CLI's help and in the config errors."""
import json

import pytest
from torch import Tensor, nn

from nni_bap.attacks import ATTACKS, Attack, register_attack
from nni_bap.attacks.base import check_number
from nni_bap.cli.config import RunConfig
from nni_bap.cli.main import main
from nni_bap.data import DATASETS
from nni_bap.errors import ConfigError
from nni_bap.models import MODELS
from nni_bap.pruning.generators import BlindGenerator
from nni_bap.pruning.methods import METHODS
from nni_bap.registry import Registry


class ToySign(Attack):
    """A fixed-budget toy: one step of ``eps`` against the sign of the input gradient's CE, Linf or L2."""

    def __init__(self, model: nn.Module, eps: float = 0.1, norm: str = 'linf', clip_min: float = 0.0,
                 clip_max: float = 1.0):
        super().__init__(model, clip_min, clip_max)
        self.eps, self.norm = check_number('eps', eps), norm

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        g = self.loss_grad(x, y)
        if self.norm == 'l2':
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            return self.clamp(x + self.eps * g)
        return self.clamp(x + self.eps * g.sign())


class ToyMLP(nn.Module):
    """A toy classifier: one hidden layer."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size * input_size, 32), nn.ReLU(),
                                 nn.Linear(32, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@pytest.fixture
def toys():
    """The toy attack, model and a preset method, registered by their decorators only; forgotten afterwards."""
    register_attack('toy-sign', norms=('linf', 'l2'))(ToySign)
    MODELS.register('toy_mlp')(ToyMLP)
    METHODS.register('bap-toy', family='bap', preset={'scale': 0.5})(BlindGenerator)
    yield
    ATTACKS.remove('toy-sign')
    MODELS.remove('toy_mlp')
    METHODS.remove('bap-toy')


def test_registry_basics():
    reg = Registry('widget')
    reg.register('a', colour='red')(dict)
    reg.register('b', preset={'x': 1})(dict)
    assert list(reg) == ['a', 'b'] and 'a' in reg and 'c' not in reg and reg.get('c') is None
    assert reg.entry('a').colour == 'red' and reg.names(colour='red') == ['a']
    assert reg['b']() == {'x': 1} and reg.entry('b').build(y=2) == {'x': 1, 'y': 2}
    with pytest.raises(ConfigError, match=r"unknown widget 'c'; choose one of \['a', 'b'\]"):
        reg.entry('c')
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register('a')(list)


def test_entry_settings_come_from_the_constructor():
    entry = ATTACKS.entry('apgd-ce')
    assert entry.preset == {'loss': 'ce'} and 'loss' not in entry.settings and entry.defaults['loss'] == 'ce'
    assert entry.defaults['steps'] == 100 and entry.norms == ('linf', 'l2') and not entry.min_norm
    assert ATTACKS.entry('fmn').min_norm and ATTACKS.entry('deepfool').min_norm
    assert METHODS.entry('bap').defaults['attack_steps'] == 2 and METHODS.entry('natural').defaults == {}


def test_toys_are_usable_from_a_config_and_bap_eval(toys, tmp_path):
    """The toy model prunes with the preset method, and the toy attack runs in `bap eval`'s worst case."""
    cfg = {'model': 'toy_mlp', 'dense_epochs': 1, 'epochs': 1, 'total_times': 2, 'train_limit': 128, 'test_limit': 64,
           'method': 'bap-toy', 'config_list': [{'op_types': ['Linear'], 'sparse_ratio': 0.5}],
           'eval': {'linf': {'budgets': [0.0, 0.1, 0.2], 'key_points': [0.1], 'attacks': {'toy-sign': {}}},
                    'l2': {'budgets': [0.0, 0.5], 'key_points': [0.5], 'attacks': {'fmn': {'steps': 5},
                                                                                  'toy-sign': {}}}}}
    path = tmp_path / 'cfg.json'
    path.write_text(json.dumps(cfg))
    parsed = RunConfig.from_dict(cfg)
    assert (parsed.family, parsed.method_args) == ('bap', {'scale': 0.5})
    run = tmp_path / 'run'
    assert main(['--quiet', 'prune', str(path), '--out', str(run)]) == 0
    assert json.loads((run / 'run.json').read_text())['method_args'] == {'scale': 0.5}
    assert main(['--quiet', 'eval', str(run)]) == 0
    rep = json.loads((run / 'report.json').read_text())
    ran = {(norm, step['attack'], step['budget']) for norm, log in rep['cascade'].items() for step in log}
    assert {('linf', 'ToySign', 0.1), ('l2', 'ToySign', 0.5), ('l2', 'FMN', None)} <= ran
    assert rep['key_points'][0]['accuracy'] <= rep['clean_accuracy']


def test_toy_attack_trains_uniform_budget_pruning(toys, digits):
    """A registered fixed-budget attack is an `adversarial` method's attack, by suffix too."""
    cfg = RunConfig.from_dict({'method': 'adversarial-toy-sign0.2'})
    assert cfg.method_args == {'attack': 'toy-sign', 'eps': 0.2}
    gen = METHODS.entry('adversarial').obj(attack='toy-sign', eps=0.2)
    x_adv, stats = gen(ToyMLP(), digits.x_test[:8], digits.y_test[:8])
    assert stats['eps'] == 0.2 and float((x_adv - digits.x_test[:8]).abs().max()) <= 0.2 + 1e-6


KINDS = [('attack', ATTACKS), ('method', METHODS), ('model', MODELS), ('dataset', DATASETS)]


@pytest.mark.parametrize('kind, registry', KINDS, ids=[k for k, _ in KINDS])
def test_every_registered_name_is_in_the_help_and_the_errors(kind, registry, toys, capsys):
    """Nothing names them by hand: the help and the config errors read the registries (the toys included)."""
    with pytest.raises(SystemExit):
        main(['--help'])
    help_text = capsys.readouterr().out
    assert {'attack': 'toy-sign', 'method': 'bap-toy', 'model': 'toy_mlp', 'dataset': 'digits'}[kind] in registry
    for name in registry:
        assert name in help_text, name
    raw = ({'eval': {'linf': {'budgets': [0.1], 'key_points': [0.1], 'attacks': {'nope': {}}}}} if kind == 'attack'
           else {kind: 'nope'})
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(raw)
    for name in [e.name for e in registry.entries() if 'linf' in e.norms] if kind == 'attack' else registry:
        assert name in str(info.value), (name, str(info.value))
