"""PGD with an Linf budget (Madry et al., 2018), random start."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Attack

__all__ = ['PGD']


class PGD(Attack):
    """Projected gradient descent, Linf.

    Parameters
    ----------
    model
        Classifier returning logits.
    eps
        Linf budget.
    alpha
        Step size; ``None`` means ``2.5 * eps / steps``.
    steps
        Number of iterations.
    random_start
        Start from a uniform point in the Linf ball.
    clip_min, clip_max
        Valid input range.
    """

    def __init__(self, model: nn.Module, eps: float = 0.3, alpha: float | None = None, steps: int = 20,
                 random_start: bool = True, clip_min: float | None = 0.0, clip_max: float | None = 1.0):
        super().__init__(model, clip_min, clip_max)
        self.eps = float(eps)
        self.steps = int(steps)
        self.alpha = float(alpha) if alpha is not None else 2.5 * self.eps / max(self.steps, 1)
        self.random_start = random_start

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.eps == 0 or self.steps == 0:
            return x
        x_adv = x
        if self.random_start:
            x_adv = self.clamp(x + torch.empty_like(x).uniform_(-self.eps, self.eps))
        for _ in range(self.steps):
            x_adv = x_adv + self.alpha * self.loss_grad(x_adv, y).sign()
            x_adv = self.clamp(x + (x_adv - x).clamp(-self.eps, self.eps))
        return x_adv
