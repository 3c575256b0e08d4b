"""The worst-case robustness evaluation (issue 11): cascade, curves, key points, intervals, sanity checks."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from nni_bap.eval_spec import default_spec, validate_spec
from nni_bap.evaluate import auc, evaluate_robustness, sanity_checks
from nni_bap.intervals import wilson

SPEC = {'linf': {'budgets': [0.0, 0.05, 0.1, 0.2], 'key_points': [0.1],
                 'attacks': {'fmn': {'steps': 30}, 'apgd-ce': {'steps': 10}, 'apgd-dlr': {'steps': 10}}},
        'l2': {'budgets': [0.0, 0.25, 0.5, 1.0], 'key_points': [0.5],
               'attacks': {'deepfool': {'steps': 30}, 'fmn': {'steps': 30}, 'apgd-ce': {'steps': 10}}}}


def test_auc_hand_computed():
    # trapezoids: (1+.8)/2*.1 + (.8+.4)/2*.1 + (.4+0)/2*.2 = .09 + .06 + .04 = .19 over a range of .4
    assert auc([0, 0.1, 0.2, 0.4], [1.0, 0.8, 0.4, 0.0]) == pytest.approx(0.19 / 0.4)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert auc([0.0], [0.7]) == pytest.approx(0.7)


def test_wilson_interval_hand_computed():
    lo, hi = wilson(50, 100)
    assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_worst_case_curves_are_monotone_and_below_every_attack(dense_digits, digits):
    x, y = digits.x_test[:200], digits.y_test[:200]
    rep = evaluate_robustness(dense_digits, x, y, SPEC, progress=False)
    assert rep['clean_accuracy'] == pytest.approx(float((dense_digits(x).argmax(1) == y).float().mean()))
    assert rep['clean_interval'][0] < rep['clean_accuracy'] < rep['clean_interval'][1]
    for norm, c in rep['curves'].items():
        acc = c['accuracy']['torch']
        assert acc[0] == pytest.approx(rep['clean_accuracy'])
        assert all(b <= a for a, b in zip(acc, acc[1:])), norm
        assert rep['robust_auc'][norm] == pytest.approx(auc(c['budgets'], acc))
        alone = {k: v for k, v in rep['curves_by_attack'].items() if k.startswith(norm)}
        assert len(alone) == (1 if norm == 'linf' else 3)  # fmn; deepfool, deepfool-cut, fmn
        for name, curve in alone.items():
            assert all(w <= a + 1e-12 for w, a in zip(acc, curve)), name
    assert acc[-1] < 0.25  # L2 1.0 on 8x8 digits breaks most samples
    kp = {(k['norm'], k['budget']): k for k in rep['key_points']}
    assert set(kp) == {('linf', 0.1), ('l2', 0.5)}
    for (norm, b), k in kp.items():
        assert k['n'] == 200 and k['interval'][0] <= k['accuracy'] <= k['interval'][1]
        assert k['accuracy'] == rep['curves'][norm]['accuracy']['torch'][rep['curves'][norm]['budgets'].index(b)]
    assert rep['huge_eps_accuracy'] < 0.05 and rep['warnings'] == []
    assert 0 < rep['median_deepfool_l2'] < 3


def _mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return model.eval()


def test_cascade_gives_the_worst_case_of_every_attack_on_every_sample(digits):
    """The cascade attacks only the samples still robust, yet its worst case equals running every attack on
    every correctly classified sample (deterministic attacks: no random start)."""
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(digits.x_train), digits.y_train).backward()
        opt.step()
    spec = {'linf': {'budgets': [0.0, 0.05, 0.1, 0.15], 'key_points': [0.05, 0.1],
                     'attacks': {'fmn': {'steps': 10}, 'apgd-ce': {'steps': 10, 'random_start': False},
                                 'apgd-dlr': {'steps': 10, 'random_start': False}, 'fgsm': {}}},
            'l2': {'budgets': [0.0, 0.3, 0.6], 'key_points': [0.3, 0.6], 'fixed_budgets': [0.3, 0.6],
                   'attacks': {'deepfool': {'steps': 10}, 'apgd-ce': {'steps': 10, 'random_start': False},
                               'pgd_l2': {'steps': 5, 'random_start': False}}}}
    x, y = digits.x_test[:150], digits.y_test[:150]
    fast = evaluate_robustness(model, x, y, spec, progress=False, huge_eps=0)
    full = evaluate_robustness(model, x, y, spec, progress=False, huge_eps=0, cascade=False)
    assert fast['curves'] == full['curves'] and fast['key_points'] == full['key_points']
    ran = lambda rep: sum(s['ran_on'] for log in rep['cascade'].values() for s in log if s['budget'])
    assert ran(fast) < 0.8 * ran(full)


def test_extra_classifier_side_by_side(dense_digits, digits):
    x, y = digits.x_test[:100], digits.y_test[:100]
    zero = lambda a: np.zeros(len(a), dtype=np.int64)  # a classifier that always says 0
    spec = {'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'fgsm': {}}}}
    rep = evaluate_robustness(dense_digits, x, y, spec, classifiers={'zero': zero}, progress=False, huge_eps=0)
    assert rep['clean_accuracy_by']['zero'] == pytest.approx(float((y == 0).float().mean()))
    assert rep['curves']['linf']['accuracy']['zero'] == [rep['clean_accuracy_by']['zero']] * 2


def test_sanity_checks_flag_suspicious_reports():
    rep = {'cascade': {'l2': [{'attack': 'FMN', 'budget': None, 'ran_on': 90, 'found': 0.9}]},
           'key_points': [{'norm': 'l2', 'budget': 1.5, 'accuracy': 0.30, 'n': 100, 'interval': [0.2, 0.4]}],
           'curves': {'l2': {'budgets': [0.0, 1.5]}},
           'curves_by_attack': {'l2/deepfool-cut': [0.9, 0.61]}, 'huge_eps_accuracy': 0.4}
    w = sanity_checks(rep)
    assert any('FMN (l2) found adversarial inputs for only 0.900' in s for s in w)
    assert any('DeepFool cut to l2 1.5 gives 0.610, the worst case 0.300' in s for s in w)
    assert any('huge Linf budget' in s for s in w)
    assert len(w) == 3
    rep['curves_by_attack']['l2/deepfool-cut'] = [0.9, 0.34]
    rep['cascade']['l2'][0]['found'] = 1.0
    rep['huge_eps_accuracy'] = 0.0
    assert sanity_checks(rep) == []


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


def test_wilson_interval_is_exact_at_the_ends_and_contains_the_estimate():
    for k, n in ((0, 2000), (2000, 2000), (1, 3), (7, 2000)):
        lo, hi = wilson(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert wilson(0, 2000)[0] == 0.0 and wilson(2000, 2000)[1] == 1.0


@pytest.mark.parametrize('spec, message', [
    ({'linf': {'budgets': [0.0, 0.1], 'attacks': {'pgd': {}}}}, 'run only at key_points'),
    ({'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'fmn': {'stepz': 3}}}}, "unexpected keyword"),
    ({'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'pgd': {'steps': 0}}}}, 'steps must be'),
    ({'linf': {'budgets': [0.0, 0.1], 'key_points': [0.1], 'attacks': {'apgd-ce': {'norm': 'l2'}}}}, "'norm' is set"),
])
def test_attacks_that_would_not_run_or_not_build_are_refused(spec, message):
    """Every attack of a spec runs somewhere, and its settings are checked when the spec is read, not after pruning."""
    with pytest.raises(ValueError, match=message):
        validate_spec(spec)
