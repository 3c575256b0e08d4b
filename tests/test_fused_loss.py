"""The fused clean + AE forward pass gives what two passes give (issue 15; speed is in benchmarks/)."""
import copy

import pytest
import torch
from torch import nn

from nni_bap.pruning.fused_loss import fused_adversarial_loss

CE = nn.functional.cross_entropy


def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))


def _two_passes(model, x, x_adv, y):
    loss = 0.5 * CE(model(x), y) + 0.5 * CE(model(x_adv), y)
    loss.backward()
    return loss


def _fused(model, x, x_adv, y):
    loss, logits = fused_adversarial_loss(model, x, x_adv, y)
    loss.backward()
    assert logits.shape == (2 * len(x), 10)
    return loss


def _naive_cat(model, x, x_adv, y):
    logits = model(torch.cat([x, x_adv]))
    loss = 0.5 * CE(logits[:len(x)], y) + 0.5 * CE(logits[len(x):], y)
    loss.backward()
    return loss


def _compare(make, step, x, x_adv, y):
    a, b = make().train(), make().train()
    la, lb = _two_passes(a, x, x_adv, y), step(b, x, x_adv, y)
    grad = max(float((p.grad - q.grad).abs().max()) for p, q in zip(a.parameters(), b.parameters()))
    stats = max([float((s - t).abs().max()) for s, t in zip(a.buffers(), b.buffers())], default=0.0)
    return abs(float(la) - float(lb)), grad, stats


@pytest.mark.parametrize('kind', ['batchnorm', 'digits_cnn'])
def test_fused_step_equals_two_passes(kind, dense_digits, digits):
    make = _bn_model if kind == 'batchnorm' else (lambda: copy.deepcopy(dense_digits))
    x, y = digits.x_train[:32], digits.y_train[:32]
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    loss, grad, stats = _compare(make, _fused, x, x_adv, y)
    assert loss <= 1e-5 and grad <= 1e-5 and stats <= 1e-6, (loss, grad, stats)


def test_fused_step_keeps_batchnorm_per_half_and_restores_forward(digits):
    """The test above can fail: a plain concatenation mixes the clean and AE statistics."""
    x, y = digits.x_train[:32], digits.y_train[:32]
    x_adv = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    loss, grad, stats = _compare(_bn_model, _naive_cat, x, x_adv, y)
    assert loss > 1e-3 and grad > 1e-3 and stats > 1e-3, (loss, grad, stats)
    model = _bn_model().train()
    fused_adversarial_loss(model, x, x_adv, y)
    assert all('forward' not in m.__dict__ for m in model.modules())
    assert int(model[1].num_batches_tracked) == 2      # two updates, as two passes make
