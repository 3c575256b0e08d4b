"""FMN (Pintor et al. 2021): the closed-form distance of a linear classifier, digits, nothing found."""
import math

import pytest
import torch
from cases import distances as _distances
from cases import linear as _linear
from torch import nn
from torch.nn import functional as F

from nni_bap.attacks import FMN, accuracy_from_norms, flat_norm
from nni_bap.pruning.training import accuracy


@pytest.mark.parametrize('norm, dual', [('l2', 2), ('linf', 1)])
def test_fmn_finds_closed_form_distance_on_linear_classifier(norm, dual):
    model, x, y = _linear()
    dist = _distances(model, x, y, dual)
    nearest = dist.min(1).values
    logits = model(x).detach().masked_fill(F.one_hot(y, 5).bool(), -math.inf)
    to_top_rival = dist.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)
    found = FMN(model, norm=norm, steps=100, clip_min=None, clip_max=None).attack(x, y)
    assert bool(found.found.all())
    assert bool((model(found.x_adv).argmax(1) != y).all())
    assert torch.allclose(flat_norm(found.x_adv - x, norm), found.norms, rtol=0, atol=1e-12)
    # never below the true minimum, and within 2% of the boundary FMN descends to: the top rival's
    same = to_top_rival == nearest
    assert bool((found.norms >= nearest * (1 - 1e-9)).all())
    assert bool((found.norms <= 1.02 * to_top_rival).all())
    # where the top rival is the nearest class (62/64 samples in L2, 61/64 in Linf): within 2% of the minimum
    assert int(same.sum()) >= 60
    assert float((found.norms[same] / nearest[same] - 1).max()) < 0.02


@pytest.mark.parametrize('norm, budgets', [('l2', [0.25, 0.5, 1.0, 2.0]), ('linf', [0.05, 0.1, 0.2])])
def test_fmn_on_digits_and_accuracy_from_norms(norm, budgets, dense_digits, digits):
    x, y = digits.x_test[:100], digits.y_test[:100]
    found = FMN(dense_digits, norm=norm, steps=100).attack(x, y)
    correct = dense_digits(x).argmax(1) == y
    assert float(found.found[correct].float().mean()) >= 0.99  # measured: 1.0 in both norms
    assert bool((found.norms[~correct] == 0).all()) and int((~correct).sum()) > 0
    assert float(found.x_adv.min()) >= 0.0 and float(found.x_adv.max()) <= 1.0
    pred = dense_digits(found.x_adv).argmax(1)
    assert bool((pred[found.found] != y[found.found]).all())
    assert torch.allclose(flat_norm(found.x_adv - x, norm)[found.found], found.norms[found.found])
    assert accuracy_from_norms(found.norms, 0.0) == pytest.approx(float(correct.float().mean()))
    accs = [accuracy_from_norms(found.norms, b) for b in budgets]
    assert accs == sorted(accs, reverse=True)
    for b, acc in zip(budgets, accs):
        # the definition: a sample is robust at eps unless an adversarial input within eps was found
        within = (found.norms <= b).view(-1, 1, 1, 1)
        assert accuracy(dense_digits, torch.where(within, found.x_adv, x), y) == pytest.approx(acc)


def test_fmn_reports_inf_and_returns_x_where_nothing_is_found():
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))  # always class 0, whatever the input
    x = torch.rand(8, 4)
    y = torch.zeros(8, dtype=torch.long)
    found = FMN(model, steps=5).attack(x, y)
    assert torch.equal(found.x_adv, x) and not bool(found.found.any())
    assert bool(torch.isinf(found.norms).all()) and accuracy_from_norms(found.norms, 1e6) == 1.0
