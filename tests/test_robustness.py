"""The worst-case robustness evaluation (issue 11): curves, key points, extra classifiers, sanity checks."""
import numpy as np
import pytest
import torch

from nni_bap.evaluation.robustness import auc, evaluate_robustness, sanity_checks

SPEC = {'linf': {'budgets': [0.0, 0.05, 0.1, 0.2], 'key_points': [0.1],
                 'attacks': {'fmn': {'steps': 30}, 'apgd-ce': {'steps': 10}, 'apgd-dlr': {'steps': 10}}},
        'l2': {'budgets': [0.0, 0.25, 0.5, 1.0], 'key_points': [0.5],
               'attacks': {'deepfool': {'steps': 30}, 'fmn': {'steps': 30}, 'apgd-ce': {'steps': 10}}}}


def test_auc_hand_computed():
    # trapezoids: (1+.8)/2*.1 + (.8+.4)/2*.1 + (.4+0)/2*.2 = .09 + .06 + .04 = .19 over a range of .4
    assert auc([0, 0.1, 0.2, 0.4], [1.0, 0.8, 0.4, 0.0]) == pytest.approx(0.19 / 0.4)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert auc([0.0], [0.7]) == pytest.approx(0.7)


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


def test_worst_case_never_above_an_attacks_own_accuracy(dense_digits, digits):
    """Issue 23's check: it holds by construction on a real evaluation, and a report that broke it is flagged."""
    import copy
    spec = {'linf': {'budgets': [0.0, 0.05, 0.1], 'key_points': [0.1],
                     'attacks': {'fmn': {'steps': 10}, 'apgd-ce': {'steps': 5}}}}
    rep = evaluate_robustness(dense_digits, digits.x_test[:100], digits.y_test[:100], spec, progress=False, huge_eps=0)
    assert rep['coverage'] == 'every budget' and not any('own accuracy' in w for w in rep['warnings'])
    bad = copy.deepcopy(rep)
    bad['curves']['linf']['accuracy']['torch'][1] = bad['curves_by_attack']['linf/fmn'][1] + 0.05
    assert any("above fmn's own accuracy" in w and 'linf 0.05' in w for w in sanity_checks(bad))
    bad = copy.deepcopy(rep)
    step = next(s for s in bad['cascade']['linf'] if s['budget'] == 0.1)
    step['accuracy_after'] = bad['curves']['linf']['accuracy']['torch'][2] - 0.02
    assert any("above APGD's own accuracy" in w and 'linf 0.1' in w for w in sanity_checks(bad))


@pytest.fixture(scope='module')
def default_report(mnist_lenet):
    """The default (every-budget) evaluation of the MNIST LeNet-5 on its 200 test images."""
    model, x, y = mnist_lenet
    torch.manual_seed(0)
    return evaluate_robustness(model, x, y, progress=False, huge_eps=0)


@pytest.mark.parametrize('norm, budgets', [('linf', (0.05, 0.15)), ('l2', (1.0, 2.0))])
def test_every_point_of_the_curve_within_002_of_an_independent_worst_case(norm, budgets, mnist_lenet, default_report):
    """Issue 23: at budgets that are not key points, the default spec's worst case is no weaker (by more than 0.02)
    than an independent one: IBM ART's APGD-CE and APGD-DLR and a PGD-40, per sample, on 200 MNIST images."""
    pytest.importorskip('art')
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    from nni_bap.attacks import PGD, PGDL2
    model, x, y = mnist_lenet
    rep = default_report
    curve = dict(zip(rep['curves'][norm]['budgets'], rep['curves'][norm]['accuracy']['torch']))
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    for eps in budgets:
        assert eps not in [k['budget'] for k in rep['key_points'] if k['norm'] == norm]
        robust = (model(x).argmax(1) == y).numpy()
        for loss in ('cross_entropy', 'difference_logits_ratio'):
            np.random.seed(0)
            art = AutoProjectedGradientDescent(clf, norm=np.inf if norm == 'linf' else 2, eps=eps, eps_step=2 * eps,
                                               max_iter=50, nb_random_init=1, batch_size=200, loss_type=loss,
                                               verbose=False)
            robust &= (model(torch.from_numpy(art.generate(x.numpy(), y=y.numpy()))).argmax(1) == y).numpy()
        pgd = (PGD if norm == 'linf' else PGDL2)(model, eps=eps, steps=40)
        robust &= (model(pgd(x, y)).argmax(1) == y).numpy()
        assert curve[eps] <= robust.mean() + 0.02, (norm, eps, curve[eps], robust.mean())
