"""Base class shared by every attack: mode save/restore, clamping, logits.

Attacks take gradients with :func:`torch.autograd.grad` with respect to the
*inputs only*, so the parameters' ``.grad`` fields are never touched, and the
model is put in eval mode for the duration of the call and restored after it.
A model wrapped by NNI (masks applied in its forward) is attacked as it is.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ['Attack', 'flat_norm', 'project_l2']


def flat_norm(t: Tensor, norm: str) -> Tensor:
    """Per-sample norm of ``t`` (first dimension is the batch): ``'l2'`` or ``'linf'``."""
    flat = t.reshape(t.shape[0], -1)
    if norm == 'l2':
        return flat.norm(p=2, dim=1)
    if norm == 'linf':
        return flat.abs().amax(dim=1)
    raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")


def project_l2(delta: Tensor, eps: float | Tensor) -> Tensor:
    """Shrink each sample of ``delta`` into the L2 ball of radius ``eps``."""
    norms = flat_norm(delta, 'l2').clamp_min(1e-12)
    factor = torch.clamp(torch.as_tensor(eps, dtype=delta.dtype, device=delta.device) / norms, max=1.0)
    return delta * factor.view(-1, *([1] * (delta.dim() - 1)))


class Attack:
    """Base of all attacks.

    Parameters
    ----------
    model
        The classifier under attack; it returns logits.
    clip_min, clip_max
        Valid input range; adversarial inputs are clamped into it. ``None`` disables clamping.
    """

    def __init__(self, model: nn.Module, clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0):
        self.model = model
        self.clip_min = clip_min
        self.clip_max = clip_max

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                x_adv = self.perturb(x.detach(), y.detach())
        finally:
            self.model.train(was_training)
        return x_adv.detach()

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def clamp(self, x: Tensor) -> Tensor:
        if self.clip_min is None and self.clip_max is None:
            return x
        lo = -math.inf if self.clip_min is None else self.clip_min
        hi = math.inf if self.clip_max is None else self.clip_max
        return x.clamp(lo, hi)

    def logits(self, x: Tensor) -> Tensor:
        return self.model(x)

    def loss_grad(self, x: Tensor, y: Tensor) -> Tensor:
        """Gradient of the summed cross-entropy with respect to ``x`` (parameters' ``.grad`` untouched)."""
        x = x.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(self.logits(x), y, reduction='sum')
        (grad,) = torch.autograd.grad(loss, x)
        return grad

    def __repr__(self) -> str:
        keys = ', '.join(f'{k}={v!r}' for k, v in vars(self).items() if k != 'model')
        return f'{type(self).__name__}({keys})'
