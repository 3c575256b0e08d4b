"""PGD with an L2 budget (normalised-gradient steps), random start in the L2 ball."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import flat_norm, project_l2
from .pgd import PGD
from .registry import register_attack

__all__ = ['PGDL2']


@register_attack('pgd_l2', norms=('l2',))
class PGDL2(PGD):
    """Projected gradient descent, L2: the budget is the Euclidean norm over all input elements.

    Parameters are those of :class:`~nni_bap.attacks.PGD`; ``eps`` defaults to 1.0.
    """

    def __init__(self, model: nn.Module, eps: float = 1.0, alpha: float | None = None, steps: int = 20,
                 random_start: bool = True, clip_min: float | None = 0.0, clip_max: float | None = 1.0):
        super().__init__(model, eps, alpha, steps, random_start, clip_min, clip_max)

    def _unit(self, t: Tensor) -> Tensor:
        return t / flat_norm(t, 'l2').clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))

    def _start(self, x: Tensor) -> Tensor:
        r = torch.rand(x.shape[0], device=x.device, dtype=x.dtype) ** (1.0 / x[0].numel())
        return x + self._unit(torch.randn_like(x)) * (self.eps * r).view(-1, *([1] * (x.dim() - 1)))

    def _ascend(self, grad: Tensor) -> Tensor:
        return self.alpha * self._unit(grad)

    def _project(self, eta: Tensor) -> Tensor:
        return project_l2(eta, self.eps)
