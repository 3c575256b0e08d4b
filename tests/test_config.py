import inspect
import subprocess
import sys

import pytest

from nni_bap.config import (BASE_PRUNER_NAMES, METHOD_NAMES, METHOD_SETTINGS, ConfigError, config_hash, load_config,
                            parse_method,
                            parse_process, validate_config, with_sparsity)
from nni_bap.methods import BASE_PRUNERS, METHODS


@pytest.mark.parametrize('spec, family, args', [
    ('natural', 'natural', {}),
    ('adversarial', 'adversarial', {'attack': 'fgsm', 'eps': 0.1}),
    ('adversarial-fgsm0.3', 'adversarial', {'attack': 'fgsm', 'eps': 0.3}),
    ('adversarial-pgd0.1', 'adversarial', {'attack': 'pgd', 'eps': 0.1}),
    ('bap', 'bap', {}),
    ('bap-s1.1', 'bap', {'scale': 1.1}),
    ('bap-c0.5', 'bap', {'cutoff': 0.5}),
    ('bap-cadaptive', 'bap', {'cutoff': 'adaptive'}),
])
def test_method_specs(spec, family, args):
    cfg = validate_config({})
    assert family in METHODS
    assert parse_method(spec, cfg) == (family, args)


@pytest.mark.parametrize('spec', ['natural-s1.0', 'bap-fgsm0.1', 'adversarial-xyz', 'greedy'])
def test_bad_method_specs(spec):
    with pytest.raises(ConfigError):
        parse_method(spec, validate_config({}))


def test_processes_and_sparsity():
    assert parse_process('agp@0.3', 0.7) == ('agp', 0.3)
    assert parse_process('linear', 0.7) == ('linear', 0.7)
    for bad in ('cosine@0.3', 'agp@x', 'agp@1.5'):
        with pytest.raises(ConfigError):
            parse_process(bad, 0.7)
    cfg = with_sparsity(validate_config({}), 0.95)
    assert [e['sparse_ratio'] for e in cfg['config_list']] == [0.95]
    with pytest.raises(ConfigError):
        with_sparsity(cfg, 1.0)


def test_defaults_filled_and_types_checked():
    cfg = validate_config({'epochs': 3})
    assert cfg['epochs'] == 3 and cfg['model'] == 'digits_cnn' and cfg['schedule'] == 'agp'
    with pytest.raises(ConfigError, match='epochs must be a positive integer'):
        validate_config({'epochs': 0})
    with pytest.raises(ConfigError, match='needs data_dir'):
        validate_config({'dataset': 'mnist'})


def test_config_validation_does_not_import_nni():
    """Issue 10: spec parsing stays cheap; validating a config imports neither NNI nor the pruners."""
    code = ('import sys; from nni_bap.config import validate_config, parse_method; '
            'validate_config({"method": "bap-s1.1", "bap": {"cutoff": 0.5}}); '
            'print(sorted(m for m in sys.modules if m == "nni" or m.startswith(("nni.", "nni_bap.pruner"))))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'


#: Pruner settings a config cannot use: ``warm_start`` needs batches of (x, y, index), which the CLI's data do not give.
API_ONLY = {'warm_start'}


def test_name_tables_agree():
    """The config's names are the keys of the tables that build the pruners, and each family's settings are
    exactly the keyword arguments its pruner takes (``schedule`` is set by the runner), except the API-only ones."""
    assert tuple(METHODS) == METHOD_NAMES and tuple(BASE_PRUNERS) == BASE_PRUNER_NAMES
    for family in ('adversarial', 'bap'):
        params = set(inspect.signature(METHODS[family].__init__).parameters)
        assert set(METHOD_SETTINGS[family]) == params - {'self', 'pruner', 'interval_steps', 'total_times',
                                                         'evaluator', 'schedule'} - API_ONLY


def test_exclude_entries_and_bad_config_lists():
    cfg = validate_config({'config_list': [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5},
                                           {'exclude': True, 'op_names': ['features.0']}]})
    out = with_sparsity(cfg, 0.9)['config_list']
    assert out == [{'op_types': ['Conv2d'], 'sparse_ratio': 0.9}, {'exclude': True, 'op_names': ['features.0']}]
    for bad, msg in (([{'exclude': True}], 'excludes nothing'),
                     ([{'exclude': True, 'op_names': ['x']}], 'only exclude entries'),
                     ([], 'non-empty list')):
        with pytest.raises(ConfigError, match=msg):
            validate_config({'config_list': bad})


def test_config_hash_ignores_eval_and_key_order():
    a = validate_config({'epochs': 3, 'eval': {'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'fgsm': {}}}}})
    b = validate_config({'epochs': 3})
    assert config_hash(a) == config_hash(dict(reversed(list(b.items()))))
    assert config_hash(a) != config_hash(validate_config({'epochs': 4}))


def test_yaml_reads_exponent_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads `lr: 1e-3` as a string; configs are read as YAML 1.2 numbers."""
    path = tmp_path / 'c.yaml'
    path.write_text('lr: 1e-3\nschedule_fraction: 5E-1\nmodel: digits_cnn\nbap: {cutoff: 2.5e+0}\nseed: 3\n')
    cfg = validate_config(load_config(str(path)))
    assert cfg['lr'] == 0.001 and cfg['schedule_fraction'] == 0.5 and cfg['bap']['cutoff'] == 2.5 and cfg['seed'] == 3
    assert cfg['model'] == 'digits_cnn'
