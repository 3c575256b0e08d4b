"""Both norms at single-norm cost: an L2 and a Linf AE generator, alternating by step or splitting each batch.

BAT trains on L2 DeepFool perturbations only, and a model trained on one norm is weak under the other.
E-AT's way out is to train one norm per batch: the cost stays that of a single-norm step. Here:

- ``'alternate'``: training step ``t`` uses the L2 generator when ``t`` is even, the Linf one when odd
  (the step count is the pruner's, restored on resume, so a resumed run alternates as the uninterrupted one);
- ``'split'``: every batch is halved, the first half perturbed in L2, the second in Linf (the loader shuffles).

Each norm has its own generator, hence its own cutoff, cap and step (DeepFool-cut or margin step).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ['MIXES', 'NormMix', 'ORDER', 'call_generator', 'check_mix']

#: How two norms share the training steps.
MIXES = ('alternate', 'split')
#: The two norms, in the order an ``'alternate'`` mix visits them (and a ``'split'`` one fills a batch).
ORDER = ('l2', 'linf')


def check_mix(mix: Any) -> str:
    """``mix`` if it is one of :data:`MIXES`, else :class:`~nni_bap.errors.ConfigError` naming the setting."""
    if mix not in MIXES:
        raise ConfigError(f"mix must be 'alternate' or 'split', got {mix!r}")
    return mix


def call_generator(gen: Any, model: nn.Module, x: Tensor, y: Tensor, index: Optional[Tensor] = None,
                   step: int = 0) -> Tuple[Tensor, Dict[str, float]]:
    """``gen(model, x, y)``, plus ``index`` for generators that keep per-sample state (``needs_index`` or
    ``warm_start``) and ``step`` (the training step, from 0) for those that follow the step (``needs_step``)."""
    kw: Dict[str, Any] = {}
    if getattr(gen, 'needs_index', False) or getattr(gen, 'warm_start', False):
        kw['index'] = index
    if getattr(gen, 'needs_step', False):
        kw['step'] = step
    return gen(model, x, y, **kw)


def _slice(index: Optional[Tensor], part: slice) -> Optional[Tensor]:
    return None if index is None else index[part]


class NormMix:
    """An L2 and a Linf generator sharing the training steps (see the module docstring).

    Parameters
    ----------
    generators
        ``{'l2': gen, 'linf': gen}``.
    mix
        ``'alternate'`` or ``'split'``.

    Attributes
    ----------
    visits
        Per norm, how many training steps used it (a split step counts for both).

    Statistics are the generators' own, prefixed with their norm (``l2_cut_norm_mean``...), plus
    ``linf_share`` (fraction of this step's samples perturbed in Linf).

    Raises
    ------
    ConfigError
        Not one generator per norm, or an unknown ``mix``.
    """

    needs_step = True

    def __init__(self, generators: Dict[str, Any], mix: str = 'alternate'):
        if set(generators) != set(ORDER):
            raise ConfigError(f"norm mixing needs one generator per norm ('l2', 'linf'), got {sorted(generators)}")
        self.generators, self.mix = dict(generators), check_mix(mix)
        self.needs_index = any(getattr(g, 'needs_index', False) or getattr(g, 'warm_start', False)
                               for g in generators.values())
        self.clip_min = generators['l2'].clip_min
        self.clip_max = generators['l2'].clip_max
        self.visits = {n: 0 for n in ORDER}

    def norm_at(self, step: int) -> str:
        """The norm an ``'alternate'`` mix uses at training step ``step`` (from 0)."""
        return ORDER[step % 2]

    def _run(self, norm: str, model: nn.Module, x: Tensor, y: Tensor, index: Optional[Tensor],
             step: int) -> Tuple[Tensor, Dict[str, float]]:
        self.visits[norm] += 1
        x_adv, stats = call_generator(self.generators[norm], model, x, y, index, step)
        return x_adv, {f'{norm}_{k}': v for k, v in stats.items()}

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, index: Optional[Tensor] = None,
                 step: int = 0) -> Tuple[Tensor, Dict[str, float]]:
        """The AEs of training step ``step`` (from 0) and their statistics; ``index`` goes to warm-started parts."""
        if self.mix == 'alternate':
            norm = self.norm_at(step)
            x_adv, stats = self._run(norm, model, x, y, index, step)
            return x_adv, {**stats, 'linf_share': float(norm == 'linf')}
        half = x.shape[0] // 2
        first, second = slice(0, half), slice(half, None)
        a, sa = self._run('l2', model, x[first], y[first], _slice(index, first), step)
        b, sb = self._run('linf', model, x[second], y[second], _slice(index, second), step)
        return torch.cat([a, b]), {**sa, **sb, 'linf_share': (x.shape[0] - half) / max(x.shape[0], 1)}
