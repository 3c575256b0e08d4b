"""FGSM (Goodfellow et al., 2015) and FGSM with a random start (FGSM-RS; Wong, Rice, Kolter, 2020).

Plain FGSM is one signed-gradient step of size ``eps`` from the clean input. FGSM-RS ("Fast is better
than free") starts at a uniform random point of the Linf ``eps``-ball, takes one signed step of size
``alpha`` (default ``1.25 * eps``), projects back onto the ball and clamps into the valid range: the
cheapest adversarial training that does not overfit to FGSM's own perturbations.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Attack, check_number
from .registry import register_attack

__all__ = ['FGSM', 'RS_ALPHA']

#: FGSM-RS step size as a multiple of ``eps`` (Wong et al., 2020).
RS_ALPHA = 1.25


@register_attack('fgsm', norms=('linf',))
class FGSM(Attack):
    """Fast gradient sign method, Linf, with an optional random start (FGSM-RS).

    Parameters
    ----------
    model
        Classifier returning logits.
    eps
        Linf budget, a finite number >= 0 (0 returns the inputs).
    clip_min, clip_max
        Valid input range.
    random_start
        Start from a uniform random point of the ``eps``-ball (FGSM-RS). ``False`` (default) is plain
        FGSM, ``clamp(x + eps * sign(grad))``, the evaluation attack.
    alpha
        Step size, > 0; the result is projected back onto the ``eps``-ball. ``None``: ``1.25 * eps``
        with a random start (the paper's value), ``eps`` without one.
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, clip_min: float | None = 0.0,
                 clip_max: float | None = 1.0, random_start: bool = False, alpha: float | None = None):
        super().__init__(model, clip_min, clip_max)
        self.eps = check_number('eps', eps)
        self.random_start = bool(random_start)
        if alpha is None:
            self.alpha = RS_ALPHA * self.eps if self.random_start else self.eps
        else:
            self.alpha = check_number('alpha', alpha, strict=True)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.eps == 0:
            return x
        start = self.clamp(x + torch.empty_like(x).uniform_(-self.eps, self.eps)) if self.random_start else x
        eta = start - x + self.alpha * self.loss_grad(start, y).sign()
        return self.clamp(x + eta.clamp(-self.eps, self.eps))
