"""Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum and an automatic step-size schedule.

Batched and vectorised: every iteration runs one forward and one backward pass over the whole
batch, and the step size, best point and checkpoint conditions are kept per sample.

The step size starts at ``2 * eps`` and is halved at checkpoints
``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22`` and
``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` for the samples where

(a) fewer than ``rho * (w_j - w_{j-1})`` of the steps since the last checkpoint increased the loss, or
(b) neither the step size nor the best loss changed since the last checkpoint;

those samples restart from their best point (without momentum).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ConfigError
from .base import Attack, check_count, check_norm, check_number, flat_norm, project_l2
from .registry import register_attack

__all__ = ['APGD', 'apgd_checkpoints', 'dlr_loss']


def apgd_checkpoints(steps: int) -> List[int]:
    """The iterations ``w_1 < w_2 < ... <= steps`` at which APGD may halve its step size.

    Parameters
    ----------
    steps
        Number of iterations of the attack.

    Returns
    -------
    list of int
        ``ceil(p_j * steps)`` for the paper's ``p_j <= 1``, ``j >= 1``, without duplicates or zeros.
    """
    ps = [0.0, 0.22]
    while True:
        nxt = ps[-1] + max(ps[-1] - ps[-2] - 0.03, 0.06)
        if nxt > 1:
            break
        ps.append(nxt)
    # round first: 0.22 * 100 is 22.000000000000004 in floating point
    ws = {math.ceil(round(p * steps, 6)) for p in ps[1:]}
    return sorted(w for w in ws if 0 < w <= steps)


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio, per sample: ``-(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3 + 1e-12)``.

    ``z_pi1 >= z_pi2 >= z_pi3`` are the sorted logits; it needs at least three classes.
    """
    if logits.shape[1] < 3:
        raise ConfigError(f'the DLR loss needs at least 3 classes, got {logits.shape[1]}')
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    rival = torch.where(logits.argmax(dim=1) == y, top[:, 1], top[:, 0])
    return -(z_y - rival) / (top[:, 0] - top[:, 2] + 1e-12)


@dataclass
class _Best:
    """Per-sample best points of one run: highest loss, and highest-loss misclassified iterate."""

    x: Tensor
    loss: Tensor
    grad: Tensor
    x_fool: Tensor
    fool_loss: Tensor
    fooled: Tensor

    @classmethod
    def start(cls, x: Tensor, loss: Tensor, grad: Tensor, wrong: Tensor) -> '_Best':
        return cls(x, loss, grad, x, torch.where(wrong, loss, -math.inf), wrong)

    def update(self, x: Tensor, loss: Tensor, grad: Tensor, wrong: Tensor) -> None:
        view = (-1,) + (1,) * (x.dim() - 1)
        better = loss > self.loss
        self.x = torch.where(better.view(view), x, self.x)
        self.grad = torch.where(better.view(view), grad, self.grad)
        self.loss = torch.where(better, loss, self.loss)
        fool = wrong & (loss > self.fool_loss)
        self.x_fool = torch.where(fool.view(view), x, self.x_fool)
        self.fool_loss = torch.where(fool, loss, self.fool_loss)
        self.fooled = self.fooled | wrong


@register_attack('apgd-dlr', norms=('linf', 'l2'), preset={'loss': 'dlr'})
@register_attack('apgd-ce', norms=('linf', 'l2'), preset={'loss': 'ce'})
@register_attack('apgd', norms=('linf', 'l2'))
class APGD(Attack):
    """Auto-PGD, untargeted, with the cross-entropy (APGD-CE) or the DLR loss (APGD-DLR).

    Parameters
    ----------
    model
        Classifier returning logits.
    eps
        Budget: plain per-example norm over all input elements (Linf max or L2 Euclidean).
    norm
        ``'linf'`` or ``'l2'``.
    steps
        Iterations per restart (one forward and one backward pass each, plus one at the start).
    restarts
        Random restarts; each later restart attacks only the samples not fooled yet.
    loss
        ``'ce'`` (cross-entropy) or ``'dlr'`` (difference of logits ratio, >= 3 classes).
    rho
        Fraction of loss-increasing steps below which the step size is halved at a checkpoint.
    momentum
        Weight of the new projected step (the paper's alpha); ``1 - momentum`` goes to the previous step.
    random_start
        Start from a uniform random point of the ball (else from ``x``).
    clip_min, clip_max
        Valid input range (``None``: unbounded).

    Notes
    -----
    Returned per sample: the misclassified iterate with the highest loss if any iterate was
    misclassified, otherwise the iterate with the highest loss (over all restarts).
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, norm: str = 'linf', steps: int = 100,
                 restarts: int = 1, loss: str = 'ce', rho: float = 0.75, momentum: float = 0.75,
                 random_start: bool = True, clip_min: float | None = 0.0, clip_max: float | None = 1.0):
        super().__init__(model, clip_min, clip_max)
        if loss not in ('ce', 'dlr'):
            raise ConfigError(f"loss must be 'ce' or 'dlr', got {loss!r}")
        self.eps, self.norm = check_number('eps', eps), check_norm(norm)
        self.steps, self.restarts = check_count('steps', steps), check_count('restarts', restarts)
        self.loss = loss
        self.rho, self.momentum = _check_fraction('rho', rho), _check_fraction('momentum', momentum)
        self.random_start = bool(random_start)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.eps == 0:
            return x
        out = x.clone()
        best_loss = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            idx = (~fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_r, loss_r, fooled_r = self._run(x[idx], y[idx])
            take = fooled_r | (loss_r > best_loss[idx])
            out[idx[take]] = x_r[take]
            best_loss[idx] = torch.maximum(best_loss[idx], loss_r)
            fooled[idx] = fooled_r
        return out

    def _run(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """One APGD run: (returned points, best loss, fooled at some iterate)."""
        view = (-1,) + (1,) * (x.dim() - 1)
        x_cur = self._start(x)
        loss, grad, wrong = self._evaluate(x_cur, y)
        best = _Best.start(x_cur, loss, grad, wrong)
        step = torch.full((x.shape[0],), 2 * self.eps, dtype=x.dtype, device=x.device)
        x_prev, last_w, count = x_cur, 0, torch.zeros_like(step)
        checks = set(apgd_checkpoints(self.steps))
        best_last, reduced = best.loss.clone(), torch.zeros_like(wrong)
        for k in range(self.steps):
            x_new = self._iterate(x, x_cur, x_prev, step.view(view) * self._direction(grad), k == 0)
            loss_new, grad, wrong = self._evaluate(x_new, y)
            count += (loss_new > loss).to(count.dtype)
            x_prev, x_cur, loss = x_cur, x_new, loss_new
            best.update(x_cur, loss, grad, wrong)
            if k + 1 in checks:
                halve = (count < self.rho * (k + 1 - last_w)) | (~reduced & (best.loss <= best_last))
                step = torch.where(halve, step / 2, step)
                x_cur = torch.where(halve.view(view), best.x, x_cur)
                grad = torch.where(halve.view(view), best.grad, grad)
                loss = torch.where(halve, best.loss, loss)
                x_prev = torch.where(halve.view(view), x_cur, x_prev)
                best_last, reduced, last_w = best.loss.clone(), halve, k + 1
                count.zero_()
        x_out = torch.where(best.fooled.view(view), best.x_fool, best.x)
        return x_out, best.loss, best.fooled

    def _iterate(self, x: Tensor, x_cur: Tensor, x_prev: Tensor, move: Tensor, first: bool) -> Tensor:
        """``z = P(x_k + move)``; the first step is ``z``, later ones mix in momentum and project again."""
        z = self._project(x, x_cur + move)
        if first:
            return z
        a = self.momentum
        return self._project(x, x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev))

    def _evaluate(self, x_adv: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-sample loss, its input gradient and whether the sample is misclassified at ``x_adv``."""
        x_adv = x_adv.detach().requires_grad_(True)
        logits = self.logits(x_adv)
        if self.loss == 'ce':
            loss = F.cross_entropy(logits, y, reduction='none')
        else:
            loss = dlr_loss(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        return loss.detach(), grad.detach(), logits.detach().argmax(dim=1) != y

    def _direction(self, grad: Tensor) -> Tensor:
        if self.norm == 'linf':
            return grad.sign()
        return grad / flat_norm(grad, 'l2').clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))

    def _project(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Onto the eps-ball around ``x``, then the box (clamping only shrinks the perturbation)."""
        delta = x_adv - x
        delta = delta.clamp(-self.eps, self.eps) if self.norm == 'linf' else project_l2(delta, self.eps)
        return self.clamp(x + delta)

    def _start(self, x: Tensor) -> Tensor:
        if not self.random_start:
            return x.clone()
        if self.norm == 'linf':
            return self._project(x, x + torch.empty_like(x).uniform_(-self.eps, self.eps))
        n = x.shape[0]
        direction = torch.randn_like(x)
        direction = direction / flat_norm(direction, 'l2').clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        radius = self.eps * torch.rand(n, dtype=x.dtype, device=x.device) ** (1.0 / x[0].numel())
        return self._project(x, x + direction * radius.view(-1, *([1] * (x.dim() - 1))))


def _check_fraction(name: str, value) -> float:
    """A number in (0, 1]."""
    v = check_number(name, value, strict=True)
    if v > 1:
        raise ConfigError(f'{name} must be in (0, 1], got {value!r}')
    return v
