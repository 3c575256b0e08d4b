import numpy as np
import pytest

from nni_bap.evaluate import auc, evaluate_robustness, sanity_checks

SPEC = {'deepfool': {'budgets': [0.0, 0.05, 0.1, 0.2], 'steps': 30},
        'fgsm': {'budgets': [0.0, 0.05, 0.1, 0.2]},
        'pgd': {'budgets': [0.0, 0.05, 0.1, 0.2], 'steps': 10},
        'pgd_l2': {'budgets': [0.0, 0.05, 0.1], 'steps': 10}}


def test_auc_hand_computed():
    # trapezoids: (1+.8)/2*.1 + (.8+.4)/2*.1 + (.4+0)/2*.2 = .09 + .06 + .04 = .19 over a range of .4
    assert auc([0, 0.1, 0.2, 0.4], [1.0, 0.8, 0.4, 0.0]) == pytest.approx(0.19 / 0.4)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert auc([0.0], [0.7]) == pytest.approx(0.7)


def test_curves_non_increasing_and_consistent(dense_digits, digits):
    x, y = digits.x_test[:200], digits.y_test[:200]
    rep = evaluate_robustness(dense_digits, x, y, SPEC, progress=False)
    assert rep['clean_accuracy'] == pytest.approx(float((dense_digits(x).argmax(1) == y).float().mean()))
    for name, c in rep['curves'].items():
        acc = c['accuracy']['torch']
        assert acc[0] == pytest.approx(rep['clean_accuracy'])
        assert all(b <= a for a, b in zip(acc, acc[1:])), name
        assert all(a <= r + 1e-12 for a, r in zip(acc, c['raw_accuracy']['torch']))
        assert c['auc']['torch'] == pytest.approx(auc(c['budgets'], acc))
    worst = rep['worst_linf']['accuracy']['torch']
    for i, b in enumerate(rep['worst_linf']['budgets']):
        assert worst[i] <= rep['curves']['pgd']['accuracy']['torch'][i] + 1e-12
    assert rep['curves']['deepfool']['accuracy']['torch'][-1] < 0.1   # 0.2 RMS breaks nearly everything
    assert rep['huge_eps_accuracy'] < 0.05 and rep['warnings'] == []
    assert 0 < rep['median_deepfool_l2'] < 3


def test_extra_classifier_side_by_side(dense_digits, digits):
    x, y = digits.x_test[:100], digits.y_test[:100]
    flip = lambda a: np.zeros(len(a), dtype=np.int64)  # a classifier that always says 0
    rep = evaluate_robustness(dense_digits, x, y, {'fgsm': {'budgets': [0.0, 0.1]}}, classifiers={'zero': flip},
                              progress=False, huge_eps=0)
    assert rep['clean_accuracy_by']['zero'] == pytest.approx(float((y == 0).float().mean()))
    assert rep['curves']['fgsm']['accuracy']['zero'][0] == rep['clean_accuracy_by']['zero']


def test_sanity_checks_flag_suspicious_reports():
    rep = {'curves': {
        'fgsm': {'budgets': [0, 0.1, 0.2], 'raw_accuracy': {'torch': [0.9, 0.5, 0.7]}},
        'pgd': {'budgets': [0, 0.1, 0.2], 'raw_accuracy': {'torch': [0.9, 0.6, 0.3]}}},
        'huge_eps_accuracy': 0.4}
    w = sanity_checks(rep)
    assert any('fgsm: accuracy rises' in s for s in w)
    assert any('PGD weaker than FGSM at eps 0.1' in s for s in w)
    assert any('huge Linf budget' in s for s in w)
    assert len(w) == 3
