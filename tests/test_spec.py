"""The evaluation spec: defaults per input size, and the specs refused before any work."""
import math

import pytest

from nni_bap.evaluation.spec import default_spec, validate_spec


def test_default_spec_scales_l2_with_input_size():
    mnist, digits = default_spec((1, 28, 28)), default_spec((1, 8, 8))
    assert mnist['linf']['budgets'][-1] == 0.3 and mnist['linf']['key_points'] == [0.1, 0.3]
    assert mnist['l2']['budgets'][-1] == 3.0 and mnist['l2']['key_points'] == [1.5]
    assert digits['l2']['key_points'] == [round(1.5 * math.sqrt(64 / 784), 4)]
    assert digits['linf'] == mnist['linf']


@pytest.mark.parametrize('spec, message', [
    ({'fgsm': {'budgets': [0.0, 0.1]}}, "unknown norm 'fgsm'"),
    ({'l2': {'budgets': [0.0, 1.0], 'attacks': {'fgsm': {}}}}, "unknown attack 'fgsm'"),
    ({'linf': {'budgets': [0.0, -0.1], 'attacks': {'fmn': {}}}}, 'budgets must be a non-empty list of numbers >= 0'),
    ({'linf': {'budgets': [0.0, 0.1], 'attacks': {}}}, 'attacks must map attack names'),
])
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        validate_spec(spec)


@pytest.mark.parametrize('spec, message', [
    ({'linf': {'budgets': [0.0], 'attacks': {'pgd': {}}}}, 'need a budget > 0'),
    ({'linf': {'budgets': [0.0, 0.1], 'fixed_budgets': [], 'attacks': {'pgd': {}}}}, 'need a budget > 0'),
    ({'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'fmn': {'stepz': 3}}}}, "unexpected keyword"),
    ({'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'pgd': {'steps': 0}}}}, 'steps must be'),
    ({'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'apgd-ce': {'norm': 'l2'}}}}, "'norm' is set"),
])
def test_attacks_that_would_not_run_or_not_build_are_refused(spec, message):
    """Every attack of a spec runs somewhere, and its settings are checked when the spec is read, not after pruning."""
    with pytest.raises(ValueError, match=message):
        validate_spec(spec)


def test_validated_spec_is_typed_sorted_and_filled():
    spec = validate_spec({'l2': {'budgets': [1.0, 0, 0.5], 'key_points': [1.0], 'attacks': {'fmn': {'steps': 7},
                                                                                            'apgd-dlr': {}}},
                          'linf': {'budgets': [0.2, 0.0, 0.1], 'key_points': [0.1, 0.15], 'attacks': {'fgsm': {}}}})
    assert [n.norm for n in spec] == ['l2', 'linf']  # the order given
    l2, linf = spec.norms
    assert l2.budgets == (0.0, 0.5, 1.0) and l2.fixed_budgets == (0.0, 0.5, 1.0)  # every budget by default
    assert l2.coverage == 'every budget' and spec.coverage == 'every budget'
    assert linf.grid == [0.0, 0.1, 0.15, 0.2]  # key points join the grid
    assert [n for n, _ in l2.min_norm_attacks()] == ['fmn'] and [n for n, _ in l2.fixed_attacks()] == ['apgd-dlr']
    assert validate_spec(spec) is spec and validate_spec(spec.to_dict()) == spec
    reordered = validate_spec({'linf': spec.to_dict()['linf'], 'l2': spec.to_dict()['l2']})
    assert reordered.hash == spec.hash  # the hash is of the content, not of the key order


def test_norm_spec_builds_each_attack_for_its_norm_and_budget():
    from torch import nn
    l2 = validate_spec({'l2': {'budgets': [0.0, 1.0], 'key_points': [1.0],
                               'attacks': {'fmn': {'steps': 7}, 'apgd-dlr': {'steps': 3}}}}).norms[0]
    fmn = l2.build('fmn', {'steps': 7}, nn.Identity())
    assert (type(fmn).__name__, fmn.norm, fmn.steps) == ('FMN', 'l2', 7)
    apgd = l2.build('apgd-dlr', {'steps': 3}, nn.Identity(), 0.5)
    assert (apgd.norm, apgd.eps, apgd.loss, apgd.steps) == ('l2', 0.5, 'dlr', 3)  # preset loss, spec's norm
    linf = validate_spec({'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'fgsm': {}}}}).norms[0]
    assert linf.build('fgsm', {}, nn.Identity(), 0.1).eps == 0.1  # FGSM takes no norm


def test_preset_settings_cannot_be_overridden():
    with pytest.raises(ValueError, match="'loss' is set by the spec"):
        validate_spec({'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'apgd-ce': {'loss': 'dlr'}}}})


def test_named_specs_and_their_coverage():
    from nni_bap.cli.config import RunConfig
    from nni_bap.errors import ConfigError
    from nni_bap.evaluation.spec import named_spec
    every, keys = validate_spec(default_spec()), validate_spec(named_spec('key-points'))
    assert every.coverage == 'every budget' and keys.coverage == 'key points'
    assert keys.norms[0].fixed_budgets == (0.1, 0.3) and every.norms[0].fixed_budgets[1:] == every.norms[0].budgets[1:]
    assert validate_spec(named_spec('worst-case', (1, 8, 8))) == validate_spec(default_spec((1, 8, 8)))
    partial = validate_spec({'linf': {'budgets': [0.0, 0.1, 0.2], 'fixed_budgets': [0.2], 'attacks': {'pgd': {}}}})
    assert partial.coverage == 'partial'
    assert validate_spec({'linf': {'budgets': [0.0, 0.1], 'attacks': {'fmn': {}}}}).coverage == 'none'
    assert RunConfig.from_dict({'eval': 'key-points'}).eval == 'key-points'
    with pytest.raises(ConfigError, match="unknown evaluation spec 'cheap'"):
        RunConfig.from_dict({'eval': 'cheap'})
    with pytest.raises(ConfigError, match="unknown evaluation spec 'cheap'"):
        named_spec('cheap')
