"""PGD with an L2 budget, random start in the L2 ball."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Attack, flat_norm, project_l2

__all__ = ['PGDL2']


class PGDL2(Attack):
    """Projected gradient descent, L2 (normalised-gradient steps).

    Parameters
    ----------
    model
        Classifier returning logits.
    eps
        L2 budget (Euclidean norm over all input elements).
    alpha
        Step size; ``None`` means ``2.5 * eps / steps``.
    steps
        Number of iterations.
    random_start
        Start from a uniform random point of the L2 ball.
    clip_min, clip_max
        Valid input range.
    """

    def __init__(self, model: nn.Module, eps: float = 1.0, alpha: float | None = None, steps: int = 20,
                 random_start: bool = True, clip_min: float | None = 0.0, clip_max: float | None = 1.0):
        super().__init__(model, clip_min, clip_max)
        self.eps = float(eps)
        self.steps = int(steps)
        self.alpha = float(alpha) if alpha is not None else 2.5 * self.eps / max(self.steps, 1)
        self.random_start = random_start

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.eps == 0 or self.steps == 0:
            return x
        view = (-1,) + (1,) * (x.dim() - 1)
        x_adv = x
        if self.random_start:
            d = torch.randn_like(x)
            d = d / flat_norm(d, 'l2').clamp_min(1e-12).view(view)
            r = torch.rand(x.shape[0], device=x.device, dtype=x.dtype) ** (1.0 / x[0].numel())
            x_adv = self.clamp(x + d * (self.eps * r).view(view))
        for _ in range(self.steps):
            g = self.loss_grad(x_adv, y)
            g = g / flat_norm(g, 'l2').clamp_min(1e-12).view(view)
            x_adv = self.clamp(x + project_l2(x_adv + self.alpha * g - x, self.eps))
        return x_adv
