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

__all__ = ['BlindGenerator', 'UniformGenerator', 'WarmStarts', 'check_index']


def _quantiles(v: Tensor, prefix: str) -> Dict[str, float]:
    if v.numel() == 0:
        return {f'{prefix}_mean': 0.0, f'{prefix}_p50': 0.0, f'{prefix}_p90': 0.0}
    q = torch.quantile(v.float(), torch.tensor([0.5, 0.9], device=v.device))
    return {f'{prefix}_mean': float(v.mean()), f'{prefix}_p50': float(q[0]), f'{prefix}_p90': float(q[1])}


class WarmStarts:
    """Each sample's last DeepFool perturbation, by dataset index, for warm starts across epochs.

    Grows to the largest index seen; rows never written are zero (a cold start). Memory: one input's
    worth of floats per sample of the dataset (MNIST: 60000 x 784 floats, 188 MB).
    """

    def __init__(self):
        self.eta: Optional[Tensor] = None

    def _fit(self, index: Tensor, like: Tensor) -> None:
        size = int(index.max()) + 1
        if self.eta is None:
            self.eta = like.new_zeros((size, *like.shape[1:]))
        elif size > self.eta.shape[0]:
            self.eta = torch.cat([self.eta, self.eta.new_zeros((size - self.eta.shape[0], *like.shape[1:]))])

    def get(self, index: Tensor, like: Tensor) -> Tensor:
        """The stored perturbations of ``index`` (zeros for samples not seen yet)."""
        self._fit(index, like)
        return self.eta[index]

    def put(self, index: Tensor, eta: Tensor) -> None:
        """Remember ``eta`` for the samples ``index``."""
        self._fit(index, eta)
        self.eta[index] = eta.detach()


def check_index(index, batch_size: int) -> Tensor:
    """``index`` if it is a 1-D integer tensor with one dataset index (>= 0) per sample, else ``TypeError``."""
    ok = isinstance(index, Tensor) and index.dim() == 1 and not index.is_floating_point() and index.dtype != torch.bool
    if not ok or index.shape[0] != batch_size or (index.numel() and int(index.min()) < 0):
        raise TypeError('warm_start needs batches of (inputs, labels, index) (or dicts with key index), index a '
                        f'1-D integer tensor of {batch_size} dataset indices >= 0; got {index!r:.80}')
    return index


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
    warm_start
        Begin each sample's DeepFool from its last perturbation (kept in :attr:`warm` by dataset index);
        calls must then pass ``index``.

    Raises
    ------
    ValueError
        A setting out of range, naming it.
    """

    def __init__(self, steps: int = 5, overshoot: float = 0.02, candidates: Optional[int] = None,
                 cutoff: Cutoff = 'adaptive', scale: float = 1.0, norm: str = 'l2',
                 clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0, drop_crossed: bool = True,
                 warm_start: bool = False):
        self.steps, self.overshoot = check_count('steps', steps), check_number('overshoot', overshoot)
        self.candidates, self.norm = check_candidates(candidates), check_norm(norm)
        self.cutoff, self.scale = check_cutoff(cutoff), check_scale(scale)
        self.clip_min, self.clip_max = check_clip(clip_min, clip_max)
        self.drop_crossed, self.warm_start = drop_crossed, bool(warm_start)
        self.warm = WarmStarts()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor,
                 index: Optional[Tensor] = None) -> Tuple[Tensor, Dict[str, float]]:
        """The adversarial batch and this step's statistics; ``index``: the samples' dataset indices (warm start)."""
        attack = DeepFool(model, steps=self.steps, overshoot=self.overshoot, norm=self.norm,
                          candidates=self.candidates, clip_min=self.clip_min, clip_max=self.clip_max,
                          drop_crossed=self.drop_crossed, check_final=False)
        if self.warm_start:
            index = check_index(index, x.shape[0])
            found = attack.attack(x, y, start=self.warm.get(index, x))
            self.warm.put(index, found.eta)
        else:
            found = attack.attack(x, y)
        eta, cut = cutoff_scale(found.eta, self.cutoff, self.scale, self.norm)
        x_adv = attack.clamp(x + eta)
        norms = flat_norm(found.eta, self.norm)
        stats = {'cutoff': float(cut), 'deepfool_iterations': float(found.iterations.float().mean()),
                 'perturbed': float((norms > 0).float().mean())}
        stats.update(_quantiles(norms, 'norm'))
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
    steps
        PGD's iterations, >= 1 (FGSM takes one step).
    alpha
        Step size, > 0, or ``None``: PGD's ``2.5 * eps / steps``; FGSM's ``1.25 * eps`` with a random
        start (FGSM-RS, Wong et al. 2020), ``eps`` without one.
    random_start
        Start from a uniform random point of the ``eps``-ball (default). With ``attack='fgsm'``
        this is FGSM-RS; ``False`` gives plain FGSM (``eps * sign(grad)`` from the clean input).
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
        self.random_start = bool(random_start)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        clip = dict(clip_min=self.clip_min, clip_max=self.clip_max)
        if self.attack == 'fgsm':
            atk = FGSM(model, eps=self.eps, random_start=self.random_start, alpha=self.alpha, **clip)
        else:
            cls = PGD if self.attack == 'pgd' else PGDL2
            atk = cls(model, eps=self.eps, alpha=self.alpha, steps=self.steps, random_start=self.random_start, **clip)
        x_adv = atk(x, y)
        stats = {'eps': float(self.eps)}
        stats.update(_quantiles(flat_norm(x_adv - x, 'l2'), 'cut_norm'))
        return x_adv, stats
