"""Fast Minimum-Norm attack (FMN; Pintor, Roli, Brendel, Biggio, NeurIPS 2021), L2 and Linf.

FMN looks for the smallest adversarial perturbation of each sample: it takes normalised gradient
steps on the logit difference ``max_{j!=y} z_j - z_y`` inside an ``eps``-ball whose radius it adapts
per sample. Before the first adversarial point is found ``eps`` jumps to the current norm plus a
linear estimate of the distance to the boundary (overshot by ``1 + gamma`` here, see
:meth:`FMN._update_eps`); afterwards it shrinks by ``1 - gamma`` while the iterate is adversarial
and grows by ``1 + gamma`` while it is not. Step size ``alpha`` and ``gamma`` are cosine-annealed
from their initial to their final values. Gradient components that would push a pixel already at a
range limit further out are dropped (:meth:`FMN._free`), as in this project's DeepFool. Batched and
vectorised: one forward and one backward pass over the whole batch per iteration.

One run gives every sample's smallest adversarial norm, so robust accuracy at any budget follows
from it: ``accuracy(eps) = mean(norms > eps)`` (:func:`accuracy_from_norms`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import (
    MinNormAttack,
    check_count,
    check_norm,
    check_number,
    flat_norm,
    project_l2,
)
from .registry import register_attack

__all__ = ['FMN', 'FMNResult', 'accuracy_from_norms']


@dataclass
class FMNResult:
    """What one FMN run found.

    Attributes
    ----------
    x_adv
        Per sample the smallest adversarial input found; ``x`` itself where none was found.
    norms
        Its perturbation norm (the attack's norm): 0 for samples misclassified at the start,
        ``inf`` where no adversarial input was found.
    found
        Boolean per sample: an adversarial input was found (``norms`` finite).
    """

    x_adv: Tensor
    norms: Tensor
    found: Tensor


def accuracy_from_norms(norms: Tensor, eps: float) -> float:
    """Robust accuracy at budget ``eps`` implied by minimal adversarial norms: ``mean(norms > eps)``."""
    return float((norms > eps).float().mean())


@register_attack('fmn', norms=('linf', 'l2'))
class FMN(MinNormAttack):
    """Fast Minimum-Norm attack, untargeted.

    Parameters
    ----------
    model
        Classifier returning logits.
    norm
        ``'l2'`` or ``'linf'`` (plain per-example norms over all input elements).
    steps
        Iterations (one forward and one backward pass each, plus one final forward pass).
    alpha_init, alpha_final
        Step size, cosine-annealed from ``alpha_init`` to ``alpha_final`` (``None``: ``alpha_init / 100``).
        Steps move along the L2-normalised gradient, for both norms (as in the paper).
    gamma_init, gamma_final
        Relative ``eps`` update, cosine-annealed.
    clip_min, clip_max
        Valid input range (``None``: unbounded).
    """

    def __init__(self, model: nn.Module, norm: str = 'l2', steps: int = 100, alpha_init: float = 1.0,
                 alpha_final: Optional[float] = None, gamma_init: float = 0.05, gamma_final: float = 0.001,
                 clip_min: float | None = 0.0, clip_max: float | None = 1.0):
        super().__init__(model, clip_min, clip_max)
        self.norm, self.steps = check_norm(norm), check_count('steps', steps)
        self.alpha_init = check_number('alpha_init', alpha_init, strict=True)
        self.alpha_final = self.alpha_init / 100 if alpha_final is None else check_number('alpha_final', alpha_final,
                                                                                          strict=True)
        self.gamma_init, self.gamma_final = _check_gamma('gamma_init', gamma_init), _check_gamma('gamma_final', gamma_final)

    def min_norm(self, x: Tensor, y: Tensor) -> Tensor:
        """Each sample's smallest adversarial norm found (0: misclassified at the start, inf: none found)."""
        return self.attack(x, y).norms

    def run(self, x: Tensor, y: Tensor) -> FMNResult:
        """FMN without mode handling (the caller owns the model's mode)."""
        view = (-1,) + (1,) * (x.dim() - 1)
        n = x.shape[0]
        x_adv = x.clone()
        eps = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
        worst = self._worst_norm(x)
        best_norm, best_adv = torch.full_like(eps, math.inf), x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        for i in range(self.steps):
            alpha, gamma = self._schedule(i)
            norm = flat_norm(x_adv - x, self.norm)
            margin, grad, wrong = self._margin(x_adv, y)
            grad = self._free(grad, x_adv)
            best_norm, best_adv = _keep_smaller(x_adv, norm, wrong, best_norm, best_adv)
            found = found | wrong
            eps = self._update_eps(eps, norm, margin, grad, wrong, found, best_norm, gamma)
            eps = torch.minimum(eps, worst)
            delta = x_adv - x + alpha * grad / flat_norm(grad, 'l2').clamp_min(1e-12).view(view)
            x_adv = self.clamp(x + self._project(delta, eps))
        with torch.no_grad():
            wrong = self.logits(x_adv).argmax(dim=1) != y
        best_norm, best_adv = _keep_smaller(x_adv, flat_norm(x_adv - x, self.norm), wrong, best_norm, best_adv)
        return FMNResult(x_adv=best_adv.detach(), norms=best_norm.detach(), found=torch.isfinite(best_norm))

    def _schedule(self, i: int) -> Tuple[float, float]:
        """Cosine-annealed step size and eps factor at iteration ``i``."""
        cosine = (1 + math.cos(math.pi * i / self.steps)) / 2
        alpha = self.alpha_final + (self.alpha_init - self.alpha_final) * cosine
        gamma = self.gamma_final + (self.gamma_init - self.gamma_final) * cosine
        return alpha, gamma

    def _margin(self, x_adv: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``max_{j!=y} z_j - z_y`` per sample, its input gradient and whether it is > 0 (misclassified)."""
        x_adv = x_adv.detach().requires_grad_(True)
        logits = self.logits(x_adv)
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        rival = logits.scatter(1, y[:, None], -math.inf).amax(dim=1)
        margin = rival - z_y
        (grad,) = torch.autograd.grad(margin.sum(), x_adv)
        wrong = logits.detach().argmax(dim=1) != y
        return margin.detach(), grad.detach(), wrong

    def _free(self, grad: Tensor, x_adv: Tensor) -> Tensor:
        """Zero the gradient components that would push a pixel already at a range limit further out.

        Clamping would undo them anyway; left in, they shrink the real step and inflate the gradient's
        dual norm, so the boundary estimate stalls short of the boundary (3% of digits samples were never
        fooled in L2, as DeepFool once stalled, see NOTES.md).
        """
        if self.clip_max is not None:
            grad = grad.masked_fill((x_adv >= self.clip_max) & (grad > 0), 0.0)
        if self.clip_min is not None:
            grad = grad.masked_fill((x_adv <= self.clip_min) & (grad < 0), 0.0)
        return grad

    def _update_eps(self, eps: Tensor, norm: Tensor, margin: Tensor, grad: Tensor, wrong: Tensor,
                    found: Tensor, best_norm: Tensor, gamma: float) -> Tensor:
        """Shrink while adversarial, grow after a first success, else jump past a linear boundary estimate.

        The estimate (norm plus margin over the gradient's dual norm) is overshot by ``1 + gamma``: on a
        locally linear model it is exact, and an iterate projected onto it ties the label with its rival,
        which ``argmax`` may still resolve to the label for ever (seen on 11% of a linear model's samples).
        """
        dual = flat_norm(grad, 'l2') if self.norm == 'l2' else grad.reshape(grad.shape[0], -1).abs().sum(dim=1)
        estimate = (norm + margin.abs() / dual.clamp_min(1e-12)) * (1 + gamma)
        grown = torch.where(found, eps * (1 + gamma), estimate)
        return torch.where(wrong, torch.minimum(eps * (1 - gamma), best_norm), grown)

    def _project(self, delta: Tensor, eps: Tensor) -> Tensor:
        if self.norm == 'l2':
            return project_l2(delta, eps)
        bound = eps.view(-1, *([1] * (delta.dim() - 1)))
        return torch.maximum(torch.minimum(delta, bound), -bound)

    def _worst_norm(self, x: Tensor) -> Tensor:
        """Largest norm a perturbation can have inside the box (inf when a side is unbounded)."""
        if self.clip_min is None or self.clip_max is None:
            return torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)
        return flat_norm(torch.maximum(x - self.clip_min, self.clip_max - x), self.norm)


def _keep_smaller(x_adv: Tensor, norm: Tensor, wrong: Tensor, best_norm: Tensor,
                  best_adv: Tensor) -> Tuple[Tensor, Tensor]:
    """Keep ``x_adv`` for the samples where it is misclassified and smaller than the best so far."""
    better = wrong & (norm < best_norm)
    view = (-1,) + (1,) * (x_adv.dim() - 1)
    return torch.where(better, norm, best_norm), torch.where(better.view(view), x_adv, best_adv)


def _check_gamma(name: str, value) -> float:
    """A number in (0, 1)."""
    v = check_number(name, value, strict=True)
    if v >= 1:
        raise ConfigError(f'{name} must be in (0, 1), got {value!r}')
    return v
