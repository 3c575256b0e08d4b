import copy

import pytest
import torch
from torch import nn

from nni.compression.pruning import LevelPruner

from nni_bap.attacks import ATTACKS, FGSM, PGD, DeepFool, flat_norm
from nni_bap.training import accuracy

SETTINGS = {'fgsm': dict(eps=0.1), 'pgd': dict(eps=0.1, steps=10), 'pgd_l2': dict(eps=0.8, steps=10),
            'deepfool': dict(steps=20), 'apgd': dict(eps=0.1, steps=10), 'fmn': dict(steps=10)}


def _linear(seed=0, d=20, k=5):
    torch.manual_seed(seed)
    model = nn.Linear(d, k).double()
    x = torch.randn(64, d, dtype=torch.double)
    y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize('norm, dual', [('l2', 2), ('linf', 1)])
def test_deepfool_exact_distance_on_linear_classifier(norm, dual):
    model, x, y = _linear()
    w, b = model.weight.detach(), model.bias.detach()
    f = x @ w.T + b
    margins = (f - f.gather(1, y[:, None])).abs()
    wdiff = (w[None, :, :] - w[y][:, None, :]).norm(p=dual, dim=2)
    dist = (margins / wdiff).masked_fill(torch.nn.functional.one_hot(y, 5).bool(), float('inf')).min(1).values
    found = DeepFool(model, steps=1, overshoot=0.0, norm=norm, clip_min=None, clip_max=None).attack(x, y)
    got = flat_norm(found.eta, norm)
    assert torch.allclose(got, dist, rtol=1e-4, atol=0)
    # the point reached is on the boundary: the two top logits tie (up to a 1e-8 offset)
    logits = model(found.x_adv).detach().sort(1, descending=True).values
    assert float((logits[:, 0] - logits[:, 1]).abs().max()) < 1e-4


def test_deepfool_candidates_restrict_rivals():
    model, x, y = _linear(seed=1)
    w, b = model.weight.detach(), model.bias.detach()
    f = x @ w.T + b
    top2 = f.topk(2, dim=1).indices[:, 1]
    expect = (f.gather(1, top2[:, None]) - f.gather(1, y[:, None])).abs().squeeze(1) / (w[top2] - w[y]).norm(dim=1)
    found = DeepFool(model, steps=1, overshoot=0.0, candidates=2, clip_min=None, clip_max=None).attack(x, y)
    assert torch.allclose(flat_norm(found.eta, 'l2'), expect, rtol=1e-4)


def test_deepfool_crosses_and_keeps_range(dense_digits, digits):
    x, y = digits.x_test[:128], digits.y_test[:128]
    found = DeepFool(dense_digits, steps=50).attack(x, y)
    assert float(found.crossed.float().mean()) > 0.95
    pred = dense_digits(found.x_adv).argmax(1)
    assert bool(((pred != y) == found.crossed).all())
    assert float(found.x_adv.min()) >= 0.0 and float(found.x_adv.max()) <= 1.0
    wrong = dense_digits(x).argmax(1) != y
    assert int(wrong.sum()) > 0
    assert float(flat_norm(found.eta[wrong], 'l2').abs().sum()) == 0.0
    assert bool(found.crossed[wrong].all())


def test_pgd_is_at_least_as_strong_as_fgsm(dense_digits, digits):
    x, y = digits.x_test, digits.y_test
    torch.manual_seed(0)
    for eps in (0.05, 0.1, 0.2):
        fgsm = accuracy(dense_digits, FGSM(dense_digits, eps=eps)(x, y), y)
        pgd = accuracy(dense_digits, PGD(dense_digits, eps=eps, steps=20)(x, y), y)
        assert pgd <= fgsm, (eps, pgd, fgsm)


@pytest.mark.parametrize('name', ['pgd', 'pgd_l2'])
def test_robust_accuracy_non_increasing_in_eps(name, dense_digits, digits):
    x, y = digits.x_test, digits.y_test
    torch.manual_seed(0)
    grid = [0.05, 0.1, 0.2, 0.3] if name == 'pgd' else [0.25, 0.5, 1.0, 2.0]
    accs = [accuracy(dense_digits, ATTACKS[name](dense_digits, eps=e, steps=20)(x, y), y) for e in grid]
    assert all(b <= a + 0.005 for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < accs[0]


@pytest.mark.parametrize('name', sorted(ATTACKS))
def test_budget_range_mode_and_grads_preserved(name, dense_digits, digits):
    model = copy.deepcopy(dense_digits).train()
    grads = {n: torch.full_like(p, 0.5) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    x, y = digits.x_test[:64], digits.y_test[:64]
    atk = ATTACKS[name](model, **SETTINGS[name])
    x_adv = atk(x, y)
    assert model.training
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    eta = x_adv - x
    if name in ('fgsm', 'pgd'):
        assert float(flat_norm(eta, 'linf').max()) <= SETTINGS[name]['eps'] + 1e-6
    elif name == 'pgd_l2':
        assert float(flat_norm(eta, 'l2').max()) <= SETTINGS[name]['eps'] + 1e-5
    assert float(flat_norm(eta, 'l2').mean()) > 0


def test_attack_on_nni_wrapped_model_uses_masks(dense_digits, digits):
    model = copy.deepcopy(dense_digits)
    pruner = LevelPruner(model, [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.7}])
    pruner.compress()
    masked = copy.deepcopy(model)
    from nni_bap.compat import finalize
    plain = finalize(pruner)
    x, y = digits.x_test[:64], digits.y_test[:64]
    a = DeepFool(masked, steps=10).attack(x, y)
    b = DeepFool(plain, steps=10).attack(x, y)
    assert torch.allclose(a.eta, b.eta, atol=1e-5)
    assert float((plain.features[0].weight == 0).float().mean()) == pytest.approx(0.7, abs=0.02)
