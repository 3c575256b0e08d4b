"""Issue 12's training fixes: the adaptive cutoff leaves unperturbed samples out; FGSM pruning starts at random."""
import pytest
import torch
from torch import nn

from nni_bap.attacks import ATTACKS, FGSM, flat_norm
from nni_bap.attacks.fgsm import RS_ALPHA
from nni_bap.cutoff import cutoff_scale, resolve_cutoff
from nni_bap.generators import UniformGenerator

EPS = 0.1


def _batch():
    """Four perturbations with L2 norms 0, 0.5, 1.0 and 2.0; the first sample needed none (misclassified)."""
    eta = torch.zeros(4, 1, 2, 2)
    eta[1, 0, 0] = torch.tensor([0.3, 0.4])
    eta[2, 0, 1] = torch.tensor([0.6, 0.8])
    eta[3, 0] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    return eta


def test_adaptive_cutoff_is_the_mean_over_perturbed_samples():
    """Old bias: the zero norm entered the mean, giving 3.5 / 4 = 0.875; now 3.5 / 3."""
    out, cut = cutoff_scale(_batch(), cutoff='adaptive', scale=1.0, norm='l2')
    assert float(cut) == pytest.approx(3.5 / 3, abs=1e-6)
    assert flat_norm(out, 'l2').tolist() == pytest.approx([0.0, 0.5, 1.0, 3.5 / 3], abs=1e-6)
    # the cut keeps the direction of the only sample above the radius
    assert torch.allclose(out[3], _batch()[3] * (3.5 / 3) / 2.0, atol=1e-7)
    # Linf norms 0, 0.4, 0.8, 1.0 -> radius 2.2 / 3
    _, cut = cutoff_scale(_batch(), cutoff='adaptive', scale=1.0, norm='linf')
    assert float(cut) == pytest.approx(2.2 / 3, abs=1e-6)


def test_adaptive_cutoff_is_zero_when_nothing_was_perturbed():
    assert float(resolve_cutoff(torch.zeros(5), 'adaptive')) == 0.0
    assert float(resolve_cutoff(torch.zeros(0), 'adaptive')) == 0.0
    out, cut = cutoff_scale(torch.zeros(3, 4), cutoff='adaptive', scale=1.3)
    assert float(cut) == 0.0 and torch.count_nonzero(out) == 0
    # a fixed number is still itself, zeros or not
    assert float(resolve_cutoff(torch.tensor([0.0, 2.0]), 1.5)) == 1.5


def _linear():
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
    model, x, y = _linear()
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


def test_adversarial_pruning_uses_fgsm_rs_by_default(dense_digits, digits):
    x, y = digits.x_test[:64], digits.y_test[:64]
    gen = UniformGenerator('fgsm', eps=EPS)
    assert gen.random_start is True
    torch.manual_seed(0)
    a, _ = gen(dense_digits, x, y)
    torch.manual_seed(1)
    b, _ = gen(dense_digits, x, y)
    torch.manual_seed(0)
    ref = FGSM(dense_digits, eps=EPS, random_start=True)(x, y)
    assert torch.equal(a, ref) and not torch.equal(a, b)
    assert float(flat_norm(a - x, 'linf').max()) <= EPS + 1e-6
    # the attack table exposes FGSM-RS through the same class
    assert ATTACKS['fgsm'](dense_digits, eps=EPS, random_start=True).alpha == pytest.approx(1.25 * EPS)
