"""Adversarial-example generators used inside the pruning loop.

Each generator is called as ``gen(model, x, y)`` on the *current masked model in eval mode*
and returns the adversarial batch plus a dict of per-step statistics. The pruners differ only
in the generator they use. Every setting is checked in the constructor, so a bad one fails when the
pruner is built, not at its first training step.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .attacks.base import check_candidates, check_clip, check_count, check_norm, check_number, flat_norm
from .attacks.deepfool import DeepFool
from .attacks.fgsm import FGSM
from .attacks.pgd import PGD
from .attacks.pgd_l2 import PGDL2
from .cutoff import Cutoff, check_cutoff, check_scale, cutoff_scale

__all__ = ['BlindGenerator', 'UniformGenerator']


def _quantiles(v: Tensor, prefix: str) -> Dict[str, float]:
    if v.numel() == 0:
        return {f'{prefix}_mean': 0.0, f'{prefix}_p50': 0.0, f'{prefix}_p90': 0.0}
    q = torch.quantile(v.float(), torch.tensor([0.5, 0.9], device=v.device))
    return {f'{prefix}_mean': float(v.mean()), f'{prefix}_p50': float(q[0]), f'{prefix}_p90': float(q[1])}


class BlindGenerator:
    """Cutoff-scale AEs (BAT): DeepFool's minimal perturbation, cut at the cutoff, scaled by rho.

    Parameters
    ----------
    steps, overshoot, candidates, norm, clip_min, clip_max, drop_crossed
        DeepFool's settings (see :class:`~nni_bap.attacks.DeepFool`).
    cutoff
        The cut radius: a number >= 0 (in the norm's units), ``'adaptive'`` or ``None``.
    scale
        Rho, > 0.

    Raises
    ------
    ValueError
        A setting out of range, naming it.
    """

    def __init__(self, steps: int = 5, overshoot: float = 0.02, candidates: Optional[int] = None,
                 cutoff: Cutoff = 'adaptive', scale: float = 1.0, norm: str = 'l2',
                 clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0, drop_crossed: bool = True):
        self.steps, self.overshoot = check_count('steps', steps), check_number('overshoot', overshoot)
        self.candidates, self.norm = check_candidates(candidates), check_norm(norm)
        self.cutoff, self.scale = check_cutoff(cutoff), check_scale(scale)
        self.clip_min, self.clip_max = check_clip(clip_min, clip_max)
        self.drop_crossed = drop_crossed

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        attack = DeepFool(model, steps=self.steps, overshoot=self.overshoot, norm=self.norm,
                          candidates=self.candidates, clip_min=self.clip_min, clip_max=self.clip_max,
                          drop_crossed=self.drop_crossed, check_final=False)
        found = attack.attack(x, y)
        eta, cut = cutoff_scale(found.eta, self.cutoff, self.scale, self.norm)
        x_adv = attack.clamp(x + eta)
        stats = {'cutoff': float(cut), 'deepfool_iterations': float(found.iterations.float().mean())}
        stats.update(_quantiles(flat_norm(found.eta, self.norm), 'norm'))
        stats.update(_quantiles(flat_norm(x_adv - x, self.norm), 'cut_norm'))
        return x_adv, stats


class UniformGenerator:
    """AEs with one prescribed budget for every example (the paper's adversarial pruning).

    Parameters
    ----------
    attack
        ``'fgsm'``, ``'pgd'`` (Linf) or ``'pgd_l2'``.
    eps
        The uniform budget, > 0 (a zero budget would train on clean data).
    steps, alpha, random_start
        PGD's settings (ignored by FGSM): ``steps >= 1``, ``alpha > 0`` or ``None``.
    clip_min, clip_max
        Valid input range.

    Raises
    ------
    ValueError
        A setting out of range, naming it.
    """

    def __init__(self, attack: str = 'fgsm', eps: float = 0.1, steps: int = 10, alpha: Optional[float] = None,
                 random_start: bool = True, clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0):
        if attack not in ('fgsm', 'pgd', 'pgd_l2'):
            raise ValueError(f"attack must be 'fgsm', 'pgd' or 'pgd_l2', got {attack!r}")
        self.attack, self.eps, self.steps = attack, check_number('eps', eps, strict=True), check_count('steps', steps)
        self.alpha = None if alpha is None else check_number('alpha', alpha, strict=True)
        self.clip_min, self.clip_max = check_clip(clip_min, clip_max)
        self.random_start = random_start

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        clip = dict(clip_min=self.clip_min, clip_max=self.clip_max)
        if self.attack == 'fgsm':
            atk = FGSM(model, eps=self.eps, **clip)
        else:
            cls = PGD if self.attack == 'pgd' else PGDL2
            atk = cls(model, eps=self.eps, alpha=self.alpha, steps=self.steps, random_start=self.random_start, **clip)
        x_adv = atk(x, y)
        stats = {'eps': float(self.eps)}
        stats.update(_quantiles(flat_norm(x_adv - x, 'l2'), 'cut_norm'))
        return x_adv, stats
