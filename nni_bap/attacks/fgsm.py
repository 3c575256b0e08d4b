"""FGSM (Goodfellow et al., 2015): one signed-gradient step of size ``eps`` (Linf)."""
from __future__ import annotations

from torch import Tensor, nn

from .base import Attack, check_number

__all__ = ['FGSM']


class FGSM(Attack):
    """Fast gradient sign method, Linf.

    Parameters
    ----------
    model
        Classifier returning logits.
    eps
        Linf budget, a finite number >= 0 (0 returns the inputs).
    clip_min, clip_max
        Valid input range.
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, clip_min: float | None = 0.0, clip_max: float | None = 1.0):
        super().__init__(model, clip_min, clip_max)
        self.eps = check_number('eps', eps)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.eps == 0:
            return x
        return self.clamp(x + self.eps * self.loss_grad(x, y).sign())
