"""The AE generators of the pruning methods (issue 19: their constructors hold every setting and its default)."""
import inspect

import pytest
import torch

from nni_bap import BAPPruner
from nni_bap.attacks import ATTACKS, FGSM, flat_norm
from nni_bap.errors import ConfigError
from nni_bap.pruning.generators import BlindGenerator, UniformGenerator
from nni_bap.pruning.warm_start import check_index

EPS = 0.1


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


def test_check_index_and_generator_settings():
    assert torch.equal(check_index(torch.arange(3), 3), torch.arange(3))
    for bad in (None, torch.arange(4), torch.tensor([0.0, 1.0, 2.0]), torch.tensor([-1, 0, 1])):
        with pytest.raises(TypeError, match='index'):
            check_index(bad, 3)
    assert BlindGenerator().warm_start is False
    defaults = {k: p.default for k, p in inspect.signature(BAPPruner).parameters.items()}
    assert defaults['candidates'] == 2 and defaults['attack_steps'] == 2 and defaults['warm_start'] is False


class _Linear2(torch.nn.Module):
    """Two classes, logit difference ``w . x + b``: DeepFool's distance is exact after one step."""

    def __init__(self):
        super().__init__()
        self.w = torch.zeros(4)
        self.w[0] = 2.0

    def forward(self, x):
        s = x.flatten(1) @ self.w - 1.0  # class 1 when x[0] > 0.5
        return torch.stack([-s, s], dim=1)


def _points(first):
    x = torch.full((len(first), 1, 2, 2), 0.5)
    x[:, 0, 0, 0] = torch.tensor(first)
    return x, torch.zeros(len(first), dtype=torch.long)


def test_blind_generator_cuts_at_the_mean_distance_and_scales():
    """DeepFool's L2 distances 0.4 and 0.2 (0.02 overshoot), the third sample already wrong: adaptive cutoff is
    their mean 0.306, the first AE is cut to it and everything is scaled by rho."""
    x, y = _points([0.1, 0.3, 0.8])
    gen = BlindGenerator(scale=0.5, attack_steps=1)
    x_adv, stats = gen(_Linear2(), x, y)
    moved = (x_adv - x).flatten(1).norm(dim=1)
    assert stats['perturbed'] == pytest.approx(2 / 3) and stats['cutoff'] == pytest.approx(0.306, abs=1e-4)
    assert moved.tolist() == pytest.approx([0.306 * 0.5, 0.204 * 0.5, 0.0], abs=1e-4)
    assert stats['norm_mean'] == pytest.approx((0.408 + 0.204) / 3, abs=1e-4)
    fixed, _ = BlindGenerator(cutoff=0.1, attack_steps=1)(_Linear2(), x, y)
    assert (fixed - x).flatten(1).norm(dim=1).tolist() == pytest.approx([0.1, 0.1, 0.0], abs=1e-5)
    uncut, _ = BlindGenerator(cutoff=None, attack_steps=1)(_Linear2(), x, y)
    assert (uncut - x).flatten(1).norm(dim=1).tolist() == pytest.approx([0.408, 0.204, 0.0], abs=1e-4)


def test_uniform_generator_stays_in_its_ball_for_every_registered_fixed_budget_attack(dense_digits, digits):
    x, y = digits.x_test[:16], digits.y_test[:16]
    for entry in ATTACKS.entries(min_norm=False):
        torch.manual_seed(0)
        x_adv, stats = UniformGenerator(entry.name, eps=0.05, steps=3)(dense_digits, x, y)
        norm = entry.defaults.get('norm', entry.norms[0])
        assert float(flat_norm(x_adv - x, norm).max()) <= 0.05 + 1e-5, entry.name
        assert stats['eps'] == 0.05


@pytest.mark.parametrize('make, message', [
    (lambda: UniformGenerator('fmn'), "attack 'fmn' has no budget"),
    (lambda: UniformGenerator('nope'), "unknown attack 'nope'"),
    (lambda: UniformGenerator(eps=0), 'eps must be a finite number > 0'),
    (lambda: BlindGenerator(adv_weight=1.5), r'adv_weight must be in \[0, 1\]'),
    (lambda: BlindGenerator(log_interval=-1), 'log_interval must be an integer >= 0'),
    (lambda: BlindGenerator(attack_steps=0), 'attack_steps must be an integer >= 1'),
])
def test_generator_settings_are_checked_at_construction(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
