"""Margin -> one step: DeepFool's linearised distance sets each sample's budget for one step (issue 20).

One forward and one backward pass, as DeepFool with two candidates (the label and its strongest rival),
give each sample's margin ``f = z_rival - z_label``, its input gradient ``w`` (box-aware: components that
would push a pixel out of the valid range are zeroed) and so the linearised distance to the boundary
``d = -f / ||w||_*``, the dual norm being L1 for a Linf step and L2 for an L2 step (DeepFool's first step,
without overshoot). The sample then moves ``eps_i = clip(rho * min(d_i, cutoff), 0, cap)`` (BAT's cutoff-scale
on the distance, then the ceiling; with ``cutoff=None``, ``clip(rho * d_i, 0, cap)``) along ``sign(w)`` (Linf) or
``w / ||w||_2`` (L2), after optional uniform noise of ``noise * eps_i`` (N-FGSM takes noise twice its step
and does not project back onto the ball; here the gradient is the clean point's, so one backward pass
serves both the budget and the direction). Samples already misclassified get ``eps_i = 0`` (trained clean).

It costs what an FGSM-RS step costs (one forward and one backward pass to craft), but the budget is the
sample's own: blind, capped, and free to grow up to the cap (MMA training's per-example margin).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..attacks.base import Attack, check_norm, check_number, flat_norm
from .ae_statistics import quantiles
from .budget_cap import check_cap
from .cutoff import Cutoff, check_cutoff, resolve_cutoff

__all__ = ['Margin', 'MarginStep', 'MarginStepGenerator', 'free_components']


def free_components(w: Tensor, x: Tensor, clip_min: Optional[float], clip_max: Optional[float]) -> Tensor:
    """Zero the components of ``w`` that would push a pixel of ``x`` already at a range limit further out."""
    if clip_max is not None:
        w = w.masked_fill((x >= clip_max) & (w > 0), 0.0)
    if clip_min is not None:
        w = w.masked_fill((x <= clip_min) & (w < 0), 0.0)
    return w


@dataclass
class Margin:
    """What one backward pass tells about each sample's nearest (linearised) boundary.

    Attributes
    ----------
    distance
        Linearised distance ``-f / ||w||_*`` in the step's norm; 0 for samples already misclassified and for
        samples without a usable gradient (every component frozen by the box).
    direction
        Unit step direction: ``sign(w)`` (Linf) or ``w / ||w||_2`` (L2); zero where there is no gradient.
    crossed
        Samples misclassified at the clean input.
    """

    distance: Tensor
    direction: Tensor
    crossed: Tensor


class MarginStep(Attack):
    """One step of ``eps_i = clip(scale * min(d_i, cutoff), 0, cap)`` along the margin gradient (module docstring).

    Parameters
    ----------
    model
        Classifier returning logits.
    norm
        ``'linf'`` (signed step, L1 dual norm) or ``'l2'``.
    scale
        Rho, > 0: ``eps_i = scale * d_i`` before the cap (``> 1`` aims past the linearised boundary).
    cutoff
        BAT's cut of the distances before the scale: ``None`` (default, no cut), a number, or ``'adaptive'``
        (the batch mean over the samples with a distance > 0).
    cap
        Largest budget, > 0, in the norm's units, or ``None`` (no ceiling).
    noise
        Uniform noise of ``noise * eps_i`` (>= 0) added before the step (Linf: per pixel; L2: in the ball).
    clip_min, clip_max
        Valid input range.
    """

    def __init__(self, model: nn.Module, norm: str = 'linf', scale: float = 1.0, cap: Optional[float] = None,
                 noise: float = 0.0, cutoff: Cutoff = None, clip_min: Optional[float] = 0.0,
                 clip_max: Optional[float] = 1.0):
        super().__init__(model, clip_min, clip_max)
        self.norm = check_norm(norm)
        self.scale = check_number('scale', scale, strict=True)
        self.cap = check_cap(cap)
        self.noise = check_number('noise', noise)
        self.cutoff = check_cutoff(cutoff)

    def margin(self, x: Tensor, y: Tensor) -> Margin:
        """The linearised distance and direction of every sample (one forward, one backward; caller owns mode)."""
        xa = x.detach().requires_grad_(True)
        logits = self.logits(xa)
        rival = logits.detach().scatter(1, y[:, None], -math.inf).argmax(dim=1)
        f = logits.gather(1, rival[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)
        (w,) = torch.autograd.grad(f.sum(), xa)
        w = free_components(w, x, self.clip_min, self.clip_max)
        flat = w.reshape(w.shape[0], -1)
        dual = flat.abs().sum(dim=1) if self.norm == 'linf' else flat.norm(dim=1)
        crossed = logits.detach().argmax(dim=1) != y
        usable = (dual > 1e-12) & ~crossed
        distance = torch.where(usable, -f.detach() / dual.clamp_min(1e-12), torch.zeros_like(dual)).clamp_min(0.0)
        if self.norm == 'linf':
            direction = w.sign()
        else:
            direction = w / dual.clamp_min(1e-12).view(-1, *([1] * (w.dim() - 1)))
        return Margin(distance, direction * usable.view(-1, *([1] * (w.dim() - 1))), crossed)

    def budgets(self, margin: Margin) -> Tensor:
        """``eps_i = clip(scale * min(d_i, cutoff), 0, cap)`` per sample (``cutoff=None``: no cut)."""
        d = margin.distance
        eps = self.scale * torch.minimum(d, resolve_cutoff(d, self.cutoff))
        return eps if self.cap is None else eps.clamp(max=self.cap)

    def _noise(self, x: Tensor, eps: Tensor) -> Tensor:
        view = (-1,) + (1,) * (x.dim() - 1)
        radius = (self.noise * eps).view(view)
        if self.norm == 'linf':
            return (torch.rand_like(x) * 2 - 1) * radius
        g = torch.randn_like(x)
        g = g / flat_norm(g, 'l2').clamp_min(1e-12).view(view)
        return g * radius * torch.rand(x.shape[0], dtype=x.dtype, device=x.device).view(view)

    def run(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, Margin]:
        """(adversarial inputs, per-sample budgets, the margin) without mode handling."""
        margin = self.margin(x, y)
        eps = self.budgets(margin)
        start = x + self._noise(x, eps) if self.noise > 0 else x
        view = (-1,) + (1,) * (x.dim() - 1)
        return self.clamp(start + eps.view(view) * margin.direction).detach(), eps, margin

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        return self.run(x, y)[0]

    def attack(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, Margin]:
        """Like calling the attack (inputs checked, eval mode, mode restored), but also the budgets and margin."""
        return self.guarded(self.run, x, y)


class MarginStepGenerator:
    """The margin step as a pruner's AE generator: ``gen(model, x, y) -> (x_adv, statistics)``.

    Parameters
    ----------
    norm, scale, cap, noise, cutoff, clip_min, clip_max
        :class:`MarginStep`'s settings.

    Statistics per step: ``norm_*`` (linearised distances of the samples still correctly classified),
    ``eps_*`` (budgets after scale and cap), ``cut_norm_*`` (norms of the AEs' perturbations, noise and
    clamping included), ``perturbed`` (fraction with a budget > 0), ``capped`` (fraction held at the cap),
    ``cap`` (the ceiling, infinity without one).
    """

    needs_index = False

    def __init__(self, norm: str = 'linf', scale: float = 1.0, cap: Optional[float] = None, noise: float = 0.0,
                 cutoff: Cutoff = None, clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0):
        self.settings = dict(norm=norm, scale=scale, cap=cap, noise=noise, cutoff=cutoff, clip_min=clip_min,
                             clip_max=clip_max)
        probe = MarginStep(nn.Identity(), **self.settings)  # every setting checked once, here
        self.norm, self.cap, self.clip_min, self.clip_max = probe.norm, probe.cap, probe.clip_min, probe.clip_max

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        x_adv, eps, margin = MarginStep(model, **self.settings).attack(x, y)
        alive = ~margin.crossed
        stats = {'cap': math.inf if self.cap is None else self.cap, 'perturbed': float((eps > 0).float().mean()),
                 'capped': float((eps >= self.cap).float().mean()) if self.cap is not None else 0.0}
        stats.update(quantiles(margin.distance[alive], 'norm'))
        stats.update(quantiles(eps, 'eps'))
        stats.update(quantiles(flat_norm(x_adv - x, self.norm), 'cut_norm'))
        return x_adv, stats
