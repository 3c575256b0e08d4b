"""APGD (Croce & Hein 2020): linear classifiers, PGD, IBM ART, checkpoints, the DLR loss, settings."""
import math

import numpy as np
import pytest
import torch
from cases import distances as _distances
from cases import linear as _linear
from torch import nn
from torch.nn import functional as F

from nni_bap.attacks import APGD, ATTACKS, FMN, PGD, PGDL2, flat_norm
from nni_bap.attacks.apgd import apgd_checkpoints, dlr_loss
from nni_bap.pruning.training import accuracy


def _crossing_point(model, x, y, dist, norm, scale):
    """``x`` moved ``scale`` times the distance towards its nearest boundary (past it when scale > 1)."""
    d, k = dist.min(1)
    w = model.weight.detach()
    u = w[k] - w[y]
    u = u / u.norm(dim=1, keepdim=True) if norm == 'l2' else u.sign()
    return x + scale * d[:, None] * u


@pytest.mark.parametrize('norm, dual', [('l2', 2), ('linf', 1)])
def test_apgd_on_linear_classifier(norm, dual):
    model, x, y = _linear(n=32)
    dist = _distances(model, x, y, dual)
    nearest = dist.min(1).values
    ce_at_crossing = F.cross_entropy(model(_crossing_point(model, x, y, dist, norm, 1.02)), y, reduction='none')
    fooled = {}
    for scale, loss, restarts in [(0.98, 'ce', 1), (0.98, 'dlr', 1), (1.02, 'ce', 1), (1.02, 'dlr', 5)]:
        torch.manual_seed(0)
        hits, ce = [], []
        for i in range(len(x)):  # the budget is per sample
            eps = float(scale * nearest[i])
            atk = APGD(model, eps=eps, norm=norm, steps=100, loss=loss, restarts=restarts, clip_min=None, clip_max=None)
            xa = atk(x[i:i + 1], y[i:i + 1])
            assert float(flat_norm(xa - x[i:i + 1], norm)) <= eps * (1 + 1e-9)
            hits.append(bool(model(xa).argmax(1) != y[i]))
            ce.append(float(F.cross_entropy(model(xa), y[i:i + 1])))
        fooled[scale, loss] = sum(hits)
        if (scale, loss) == (1.02, 'ce'):
            # CE's maximiser in the ball need not cross the nearest boundary (it fools 0/64 in L2), but
            # APGD-CE must reach at least the CE of the known point that does
            assert all(c >= float(ce_at_crossing[i]) - 1e-9 for i, c in enumerate(ce))
    assert fooled[0.98, 'ce'] == 0 and fooled[0.98, 'dlr'] == 0
    # DLR > 0 exactly where a sample is misclassified, so its maximiser fools whenever the ball allows it
    assert fooled[1.02, 'dlr'] >= 31


@pytest.mark.parametrize('eps, norm, pgd', [(0.1, 'linf', PGD), (1.0, 'l2', PGDL2)])
def test_apgd_at_least_as_strong_as_pgd(eps, norm, pgd, dense_digits, digits):
    x, y = digits.x_test[:100], digits.y_test[:100]
    torch.manual_seed(0)
    acc_pgd = accuracy(dense_digits, pgd(dense_digits, eps=eps, steps=20)(x, y), y)
    torch.manual_seed(0)
    x_adv = APGD(dense_digits, eps=eps, norm=norm, steps=20)(x, y)
    acc_apgd = accuracy(dense_digits, x_adv, y)
    assert acc_apgd <= acc_pgd + 0.01, (acc_apgd, acc_pgd)  # measured: 0.63 vs 0.63 (Linf), 0.08 vs 0.10 (L2)
    assert acc_apgd < accuracy(dense_digits, x, y)
    assert float(flat_norm(x_adv - x, norm).max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_apgd_restarts_only_help_and_zero_budget_is_identity(dense_digits, digits):
    x, y = digits.x_test[:100], digits.y_test[:100]
    accs = {}
    for restarts in (1, 3):
        torch.manual_seed(0)  # the first restart is the same run in both
        accs[restarts] = accuracy(dense_digits, APGD(dense_digits, eps=0.05, steps=10, restarts=restarts)(x, y), y)
    assert accs[3] <= accs[1]
    assert torch.equal(APGD(dense_digits, eps=0.0)(x, y), x)


@pytest.mark.parametrize('eps, norm, art_norm', [(0.1, 'linf', np.inf), (1.5, 'l2', 2)])
def test_apgd_not_weaker_than_ibm_art(eps, norm, art_norm, mnist_lenet):
    pytest.importorskip('art')
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier
    model, x, y = mnist_lenet
    steps = 50
    torch.manual_seed(0)
    ours = accuracy(model, APGD(model, eps=eps, norm=norm, steps=steps)(x, y), y)
    np.random.seed(0)
    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    art = AutoProjectedGradientDescent(clf, norm=art_norm, eps=eps, eps_step=2 * eps, max_iter=steps,
                                       nb_random_init=1, batch_size=200, loss_type='cross_entropy', verbose=False)
    theirs = accuracy(model, torch.from_numpy(art.generate(x.numpy(), y=y.numpy())), y)
    # measured (clean 0.96): Linf 0.605 vs 0.610, L2 0.530 vs 0.530
    assert ours <= theirs + 0.01, (ours, theirs)


def test_checkpoints_and_dlr():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1) == [1]
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [1.0, 3.0, 0.0, -1.0]])
    y = torch.tensor([0, 0])
    # correct: -(3 - 1) / (3 - 0); wrong: -(1 - 3) / (3 - 0)
    assert torch.allclose(dlr_loss(logits, y), torch.tensor([-2 / 3, 2 / 3]))
    assert ATTACKS['apgd'] is APGD and ATTACKS['fmn'] is FMN


@pytest.mark.parametrize('cls, kwargs, word', [
    (APGD, dict(eps=-0.1), 'eps'), (APGD, dict(eps=math.nan), 'eps'), (APGD, dict(eps=math.inf), 'eps'),
    (APGD, dict(steps=0), 'steps'), (APGD, dict(restarts=0), 'restarts'), (APGD, dict(norm='l1'), 'norm'),
    (APGD, dict(loss='hinge'), 'loss'), (APGD, dict(rho=0.0), 'rho'), (APGD, dict(momentum=1.5), 'momentum'),
    (FMN, dict(steps=0), 'steps'), (FMN, dict(norm='l0'), 'norm'), (FMN, dict(alpha_init=0.0), 'alpha_init'),
    (FMN, dict(alpha_final=-1.0), 'alpha_final'), (FMN, dict(gamma_init=1.0), 'gamma_init'),
    (FMN, dict(gamma_final=0.0), 'gamma_final'),
])
def test_invalid_settings_name_the_setting(cls, kwargs, word):
    with pytest.raises(ValueError, match=word):
        cls(nn.Linear(4, 3), **kwargs)
