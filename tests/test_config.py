import pytest

from nni_bap.config import ConfigError, parse_method, validate_config, with_sparsity
from nni_bap.methods import METHODS
from nni_bap.runner import parse_process


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
