"""A budget that can grow: a fixed ceiling (cap) on each sample's training perturbation (issue 20).

BAT's adaptive cutoff holds every sample's budget at the batch mean of DeepFool's norms, so a margin can
never be trained past that mean. With ``cutoff=None`` and a ``cap`` each sample keeps its own DeepFool
distance (times rho) up to the cap: samples far from the boundary are pushed up to the largest evaluation
budget (MMA training's per-example margin, with its cap). With the cutoff kept, the cap bounds what the
scale rho can add on top of it.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..attacks.base import flat_norm
from ..errors import ConfigError
from .ae_statistics import quantiles

__all__ = ['CappedGenerator', 'cap_norms', 'check_cap']


def check_cap(cap: Any, name: str = 'cap') -> Optional[float]:
    """``cap`` as a float if it is a finite number > 0, or ``None`` (no ceiling).

    Raises
    ------
    ConfigError
        Naming the setting and the value.
    """
    if cap is None:
        return None
    if isinstance(cap, Real) and not isinstance(cap, bool) and math.isfinite(cap) and cap > 0:
        return float(cap)
    raise ConfigError(f'{name} must be a finite number > 0 or None (no ceiling), got {cap!r}')


def cap_norms(eta: Tensor, cap: Optional[float], norm: str = 'l2') -> Tensor:
    """Shrink every perturbation whose norm exceeds ``cap`` onto the cap (direction kept); ``None``: unchanged.

    Parameters
    ----------
    eta
        Per-example perturbations, batch first.
    cap
        The ceiling, in the norm's units (plain per-example norm: L2 Euclidean, Linf max), or ``None``.
    norm
        ``'l2'`` or ``'linf'``.

    Returns
    -------
    Tensor
        The perturbations, each of norm at most ``cap``.
    """
    cap = check_cap(cap)
    if cap is None:
        return eta
    norms = flat_norm(eta, norm)
    factor = torch.where(norms > cap, cap / norms.clamp_min(1e-12), torch.ones_like(norms))
    return eta * factor.view(-1, *([1] * (eta.dim() - 1)))


class CappedGenerator:
    """Any AE generator whose perturbations are then shrunk onto ``cap`` (``x + cap_norms(x_adv - x)``).

    Shrinking a perturbation towards ``x`` keeps it inside the valid range. Every other attribute (``warm``,
    ``warm_start``, ``clip_min``...) is the wrapped generator's; ``cut_norm_*`` statistics are recomputed after
    the cap and ``capped`` (fraction of samples held at the cap) and ``cap`` are added.

    Parameters
    ----------
    inner
        The generator, ``inner(model, x, y, **kw) -> (x_adv, statistics)``.
    cap
        The ceiling, > 0, in ``norm``'s units.
    norm
        ``'l2'`` or ``'linf'``.

    Raises
    ------
    ConfigError
        ``cap`` is not a number > 0.
    """

    def __init__(self, inner: Any, cap: float, norm: str):
        self.inner, self.cap, self.norm = inner, check_cap(cap), norm
        if self.cap is None:
            raise ConfigError('cap must be a finite number > 0 for a capped generator, got None')

    def __getattr__(self, name: str) -> Any:
        if name == 'inner':  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, model, x: Tensor, y: Tensor, **kw) -> Tuple[Tensor, Dict[str, float]]:
        x_adv, stats = self.inner(model, x, y, **kw)
        before = flat_norm(x_adv - x, self.norm)
        eta = cap_norms(x_adv - x, self.cap, self.norm)
        stats = {k: v for k, v in stats.items() if not k.startswith('cut_norm_')}
        stats.update(quantiles(flat_norm(eta, self.norm), 'cut_norm'), cap=self.cap,
                     capped=float((before > self.cap).float().mean()))
        return (x + eta).detach(), stats
