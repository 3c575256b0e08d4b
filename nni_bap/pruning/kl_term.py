"""A TRADES-style KL term: pull the AE's prediction towards the clean one (issue 20's loss lever).

TRADES trains ``CE(clean) + beta * KL(p(x) || p(x_adv))``. NNI's ``patch_loss`` hands the pruner the clean
loss already computed, not the clean logits; the term here takes the clean prediction from one forward pass
without gradients (eval mode, mode restored): the target is held fixed, only the AE side is pulled (a
stop-gradient TRADES). The cost is one forward pass, about a third of an FGSM-RS step's extra work.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..attacks.base import check_number

__all__ = ['check_kl_weight', 'clean_logits', 'kl_divergence']


def check_kl_weight(value) -> float:
    """The KL term's weight as a float ``>= 0`` (0: no term), else :class:`~nni_bap.errors.ConfigError` naming it."""
    return check_number('kl_weight', value)


def kl_divergence(target_logits: Tensor, logits: Tensor) -> Tensor:
    """Batch mean of ``KL(softmax(target_logits) || softmax(logits))`` (natural log), differentiable in ``logits``.

    Examples
    --------
    Two classes, target probabilities (0.5, 0.5) against (0.8, 0.2): ``0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2)``
    ``= 0.2231``.
    """
    target = F.log_softmax(target_logits.detach(), dim=1)
    return F.kl_div(F.log_softmax(logits, dim=1), target, reduction='batchmean', log_target=True)


def clean_logits(model: nn.Module, x: Tensor) -> Tensor:
    """The model's logits at ``x`` in eval mode without gradients (the model's mode is restored)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.train(was)
