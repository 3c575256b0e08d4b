import copy
import math

import pytest
import torch
from cases import RANGE_MESSAGE
from cases import digits_net as _net
from cases import normalised as _normalised
from nni.compression.pruning import LevelPruner
from torch import nn

from nni_bap.attacks import ATTACKS, FGSM, PGD, DeepFool, flat_norm
from nni_bap.attacks.base import Attack
from nni_bap.attacks.fgsm import RS_ALPHA
from nni_bap.attacks.pgd_l2 import PGDL2
from nni_bap.pruning.generators import UniformGenerator
from nni_bap.pruning.training import accuracy

SETTINGS = {'fgsm': dict(eps=0.1), 'pgd': dict(eps=0.1, steps=10), 'pgd_l2': dict(eps=0.8, steps=10),
            'deepfool': dict(steps=20), 'apgd': dict(eps=0.1, steps=10), 'apgd-ce': dict(eps=0.1, steps=10),
            'apgd-dlr': dict(eps=0.1, steps=10), 'fmn': dict(steps=10)}


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
    entry = ATTACKS.entry(name)
    if not entry.min_norm:  # a fixed-budget attack stays in its ball (the first norm it declares is its default)
        norm = entry.defaults.get('norm', entry.norms[0])
        assert float(flat_norm(eta, norm).max()) <= SETTINGS[name]['eps'] + 1e-5
    assert float(flat_norm(eta, 'l2').mean()) > 0


def test_attack_on_nni_wrapped_model_uses_masks(dense_digits, digits):
    model = copy.deepcopy(dense_digits)
    pruner = LevelPruner(model, [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.7}])
    pruner.compress()
    masked = copy.deepcopy(model)
    from nni_bap.pruning.compat import finalize
    plain = finalize(pruner)
    x, y = digits.x_test[:64], digits.y_test[:64]
    a = DeepFool(masked, steps=10).attack(x, y)
    b = DeepFool(plain, steps=10).attack(x, y)
    assert torch.allclose(a.eta, b.eta, atol=1e-5)
    assert float((plain.features[0].weight == 0).float().mean()) == pytest.approx(0.7, abs=0.02)


EPS = 0.1


def _flat_linear():
    """A small linear classifier and inputs far enough from 0 and 1 that no start or step is clamped."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(32, 1, 4, 4) * 0.6 + 0.2          # inside [0.2, 0.8]: no clamping at eps 0.1
    y = torch.randint(0, 3, (32,))
    return model, x, y


def _input_grad(model, x, y):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y, reduction='sum'), x)
    return g


def test_plain_fgsm_is_exactly_eps_sign_grad_clamped(dense_digits, digits):
    x, y = digits.x_test[:64], digits.y_test[:64]
    atk = FGSM(dense_digits, eps=EPS)
    assert atk.random_start is False and atk.alpha == EPS
    expected = (x + EPS * _input_grad(dense_digits, x, y).sign()).clamp(0, 1)
    assert torch.equal(atk(x, y), expected)
    # the generator's plain FGSM is the same attack
    torch.manual_seed(3)
    gen, _ = UniformGenerator('fgsm', eps=EPS, random_start=False)(dense_digits, x, y)
    assert torch.equal(gen, expected)


def test_fgsm_rs_is_the_papers_step():
    model, x, y = _flat_linear()
    atk = FGSM(model, eps=EPS, random_start=True)
    assert atk.alpha == pytest.approx(RS_ALPHA * EPS) and RS_ALPHA == 1.25
    torch.manual_seed(7)
    x_adv = atk(x, y)
    torch.manual_seed(7)
    start = torch.empty_like(x).uniform_(-EPS, EPS)
    sign = _input_grad(model, x + start, y).sign()      # the gradient at the random start
    expected = x + (start + 1.25 * EPS * sign).clamp(-EPS, EPS)
    assert torch.allclose(x_adv, expected, atol=1e-7)
    eta = x_adv - x
    assert float(eta.abs().max()) <= EPS + 1e-7
    plain = FGSM(model, eps=EPS)(x, y)
    assert not torch.allclose(x_adv, plain)
    # every coordinate moves along the gradient's sign by at least 0.25 eps; P(|eta| = eps) = 0.625
    assert bool(((eta * sign) >= 0.25 * EPS - 1e-6).all())
    at_eps = float((eta.abs() >= EPS - 1e-6).float().mean())
    assert at_eps == pytest.approx(0.625, abs=0.05)


def test_fgsm_rs_stays_in_the_ball_and_range_on_saturated_inputs(dense_digits, digits):
    x, y = digits.x_test[:64], digits.y_test[:64]
    torch.manual_seed(0)
    x_adv = FGSM(dense_digits, eps=0.3, random_start=True)(x, y)
    assert float(flat_norm(x_adv - x, 'linf').max()) <= 0.3 + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert FGSM(dense_digits, eps=0.3, random_start=True, alpha=0.1).alpha == 0.1
    with pytest.raises(ValueError, match='alpha'):
        FGSM(dense_digits, eps=0.3, alpha=0.0)








@pytest.mark.parametrize('make', [lambda m: FGSM(m, eps=0.1), lambda m: PGD(m, eps=0.1, steps=2),
                                  lambda m: PGDL2(m, eps=0.5, steps=2), lambda m: DeepFool(m, steps=2)],
                         ids=['fgsm', 'pgd', 'pgd_l2', 'deepfool'])
def test_attacks_refuse_normalised_inputs(make, digits):
    """Issue 10 case 7 (inputs outside [clip_min, clip_max]): every attack refuses a mean/std-normalised batch
    instead of clamping it into [0, 1]; in-range and one-side-open batches pass."""
    model = _net()
    x, y = _normalised(digits)
    attack = make(model)
    with pytest.raises(ValueError, match=RANGE_MESSAGE):
        attack(x, y)
    if isinstance(attack, DeepFool):  # one way in: the base class's call, and attack() through the same guard
        assert DeepFool.__call__ is Attack.__call__
        with pytest.raises(ValueError, match=RANGE_MESSAGE):
            attack.attack(x, y)
    bad = digits.x_train[:4].clone()
    bad[1, 0, 2, 2] = float('nan')
    with pytest.raises(ValueError, match='NaN or infinite'):
        attack(bad, y[:4])
    assert attack(torch.clamp(digits.x_train[:4] + 1e-7, max=1 + 1e-7), y[:4]).shape == (4, 1, 8, 8)
    attack.clip_min = None  # only the upper side is checked now: x - 0.5 lies in [-0.5, 0.5]
    assert attack(digits.x_train[:4] - 0.5, y[:4]).shape == (4, 1, 8, 8)


@pytest.mark.parametrize('make, name', [
    (lambda m: FGSM(m, eps=-0.1), 'eps'), (lambda m: FGSM(m, eps=math.nan), 'eps'),
    (lambda m: PGD(m, steps=0), 'steps'), (lambda m: PGD(m, steps=3.5), 'steps'), (lambda m: PGD(m, alpha=0), 'alpha'),
    (lambda m: PGDL2(m, eps=-1.0), 'eps'), (lambda m: DeepFool(m, steps=0), 'steps'),
    (lambda m: DeepFool(m, overshoot=-0.02), 'overshoot'), (lambda m: DeepFool(m, candidates=2.5), 'candidates'),
    (lambda m: FGSM(m, clip_min=1.0, clip_max=0.0), 'clip_min must be below clip_max'),
    (lambda m: PGD(m, clip_min=math.nan), 'clip_min'),
])
def test_attacks_refuse_bad_settings_at_construction(make, name):
    """Issue 10 case 7 (settings validated at construction): eps < 0, steps < 1 or not an integer, alpha <= 0,
    overshoot < 0, candidates not an integer >= 2 and an empty clip range are refused by the constructor."""
    with pytest.raises(ValueError, match=f'^{name}'):
        make(_net())
