"""PGD with an Linf budget (Madry et al., 2018), random start."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Attack, check_count, check_number
from .registry import register_attack

__all__ = ['PGD']


@register_attack('pgd', norms=('linf',))
class PGD(Attack):
    """Projected gradient descent, Linf.

    Parameters
    ----------
    model
        Classifier returning logits.
    eps
        The budget, a finite number >= 0 (0 returns the inputs).
    alpha
        Step size, > 0; ``None`` means ``2.5 * eps / steps``.
    steps
        Number of iterations, >= 1.
    random_start
        Start from a uniform random point of the ball.
    clip_min, clip_max
        Valid input range.
    """

    def __init__(self, model: nn.Module, eps: float = 0.3, alpha: float | None = None, steps: int = 20,
                 random_start: bool = True, clip_min: float | None = 0.0, clip_max: float | None = 1.0):
        super().__init__(model, clip_min, clip_max)
        self.eps = check_number('eps', eps)
        self.steps = check_count('steps', steps)
        self.alpha = check_number('alpha', alpha, strict=True) if alpha is not None else 2.5 * self.eps / self.steps
        self.random_start = random_start

    def _start(self, x: Tensor) -> Tensor:
        return x + torch.empty_like(x).uniform_(-self.eps, self.eps)

    def _ascend(self, grad: Tensor) -> Tensor:
        return self.alpha * grad.sign()

    def _project(self, eta: Tensor) -> Tensor:
        return eta.clamp(-self.eps, self.eps)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.eps == 0:
            return x
        x_adv = self.clamp(self._start(x)) if self.random_start else x
        for _ in range(self.steps):
            x_adv = x_adv + self._ascend(self.loss_grad(x_adv, y))
            x_adv = self.clamp(x + self._project(x_adv - x))
        return x_adv
