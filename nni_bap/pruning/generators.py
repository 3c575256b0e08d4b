"""Adversarial-example generators used inside the pruning loop: what makes one pruning method differ from another.

Each generator is called as ``gen(model, x, y)`` on the *current masked model in eval mode* and returns the
adversarial batch plus a dict of per-step statistics. A generator's constructor holds every setting of its
method, with the defaults (the scheduled pruners take them as keyword arguments and build the generator; a
config is checked by building it, without NNI). Every setting is checked in the constructor, so a bad one
fails when the pruner is built, not at its first training step. Each generator registers itself in
:data:`~nni_bap.pruning.registry.METHODS` with the method-name suffixes it reads (``bap-s1.1``).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..attacks.base import (
    check_candidates,
    check_clip,
    check_count,
    check_norm,
    check_number,
    flat_norm,
)
from ..attacks.deepfool import DeepFool
from ..attacks.registry import ATTACKS
from ..errors import ConfigError
from ..utils.distributed import global_mean
from .cutoff import Cutoff, check_cutoff, check_scale, cutoff_scale
from .registry import METHODS
from .warm_start import WarmStarts, check_index

__all__ = ['ADV_WEIGHT', 'BlindGenerator', 'LOG_INTERVAL', 'UniformGenerator', 'check_adv_weight']

#: Default weight of the AE loss: ``(1 - w) * clean + w * AE`` (the paper's 0.5 / 0.5).
ADV_WEIGHT = 0.5
#: Default number of training steps between two logged statistics lines.
LOG_INTERVAL = 50


def check_adv_weight(value: Any) -> float:
    """The AE loss weight as a float in ``[0, 1]``, else :class:`~nni_bap.errors.ConfigError`."""
    if check_number('adv_weight', value) > 1.0:
        raise ConfigError(f'adv_weight must be in [0, 1], got {value!r}')
    return float(value)


def _quantiles(v: Tensor, prefix: str) -> Dict[str, float]:
    if v.numel() == 0:
        return {f'{prefix}_mean': 0.0, f'{prefix}_p50': 0.0, f'{prefix}_p90': 0.0}
    q = torch.quantile(v.float(), torch.tensor([0.5, 0.9], device=v.device))
    return {f'{prefix}_mean': float(v.mean()), f'{prefix}_p50': float(q[0]), f'{prefix}_p90': float(q[1])}


_BAP_SUFFIX = re.compile(r'^s([0-9.]+)$|^c([0-9.]+|adaptive)$')


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f'cannot read the number {text!r}') from None


def bap_suffix(part: str) -> Optional[Dict[str, Any]]:
    """``'s1.1'`` -> ``{'scale': 1.1}``, ``'c0.5'`` -> ``{'cutoff': 0.5}``, ``'cadaptive'``; ``None`` if unreadable."""
    m = _BAP_SUFFIX.match(part)
    if not m:
        return None
    if m.group(1):
        return {'scale': _number(m.group(1))}
    return {'cutoff': m.group(2) if m.group(2) == 'adaptive' else _number(m.group(2))}


@METHODS.register('bap', parse_suffix=bap_suffix, api_only=('warm_start', 'drop_crossed'))
class BlindGenerator:
    """Cutoff-scale AEs (BAT): DeepFool's minimal perturbation, cut at the cutoff, scaled by rho.

    Parameters
    ----------
    cutoff
        The cut radius: ``'adaptive'`` (mean DeepFool norm over the samples it had to perturb: those
        misclassified already are left out; over every process's batch under torchrun), a number >= 0 (in
        the norm's units), or ``None`` (no cut).
    scale
        Rho, > 0: the cut perturbation is multiplied by it.
    attack_steps
        DeepFool iterations, >= 1. The default 2 (samples that crossed drop out after their first) with
        ``candidates=2`` prices a BAP step at about 1.4 FGSM-RS steps, with robustness within the seeds'
        noise of 5 iterations over 3 candidates (``benchmarks/bap_parity.py``).
    overshoot
        DeepFool overshoot, >= 0.
    candidates
        Classes DeepFool considers (top-k, label included); ``None`` means all. The default 2 (the label
        and its strongest rival) needs one backward pass per iteration.
    adv_weight
        Weight ``w`` of the AE loss in ``(1 - w) * clean + w * AE``, in [0, 1].
    norm
        ``'l2'`` or ``'linf'``: DeepFool's and the cut's norm.
    clip_min, clip_max
        Valid input range: every training batch must lie in it (normalise inside the model).
    log_interval
        Log the running statistics every this many steps (0: never).
    warm_start
        Begin each sample's DeepFool from its perturbation of the previous epoch (kept by dataset index in
        :attr:`warm`); calls must then pass ``index`` (Python API only: batches of ``(x, y, index)``).
    drop_crossed
        DeepFool drops samples that crossed from later iterations (``False``: the whole batch every
        iteration, the reference for benchmarks; Python API only).

    Raises
    ------
    ConfigError
        A setting out of range, naming it.
    """

    def __init__(self, cutoff: Cutoff = 'adaptive', scale: float = 1.0, attack_steps: int = 2,
                 overshoot: float = 0.02, candidates: Optional[int] = 2, adv_weight: float = ADV_WEIGHT,
                 norm: str = 'l2', clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0,
                 log_interval: int = LOG_INTERVAL, warm_start: bool = False, drop_crossed: bool = True):
        self.cutoff, self.scale = check_cutoff(cutoff), check_scale(scale)
        self.attack_steps, self.overshoot = check_count('attack_steps', attack_steps), check_number('overshoot', overshoot)
        self.candidates, self.norm = check_candidates(candidates), check_norm(norm)
        self.adv_weight, self.log_interval = check_adv_weight(adv_weight), check_count('log_interval', log_interval, low=0)
        self.clip_min, self.clip_max = check_clip(clip_min, clip_max)
        self.drop_crossed, self.warm_start = bool(drop_crossed), bool(warm_start)
        self.warm = WarmStarts()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor,
                 index: Optional[Tensor] = None) -> Tuple[Tensor, Dict[str, float]]:
        """The adversarial batch and this step's statistics; ``index``: the samples' dataset indices (warm start)."""
        attack = DeepFool(model, steps=self.attack_steps, overshoot=self.overshoot, norm=self.norm,
                          candidates=self.candidates, clip_min=self.clip_min, clip_max=self.clip_max,
                          drop_crossed=self.drop_crossed, check_final=False)
        if self.warm_start:
            index = check_index(index, x.shape[0])
            found = attack.attack(x, y, start=self.warm.get(index, x))
            self.warm.put(index, found.eta)
        else:
            found = attack.attack(x, y)
        eta, cut = cutoff_scale(found.eta, self.cutoff, self.scale, self.norm, mean=global_mean)
        x_adv = attack.clamp(x + eta)
        norms = flat_norm(found.eta, self.norm)
        stats = {'cutoff': float(cut), 'deepfool_iterations': float(found.iterations.float().mean()),
                 'perturbed': float((norms > 0).float().mean())}
        stats.update(_quantiles(norms, 'norm'))
        stats.update(_quantiles(flat_norm(x_adv - x, self.norm), 'cut_norm'))
        return x_adv, stats


def adversarial_suffix(part: str) -> Optional[Dict[str, Any]]:
    """``'fgsm0.3'``, ``'pgd0.1'``, ``'apgd-ce0.1'`` -> ``{'attack': name, 'eps': number}`` for any registered
    fixed-budget attack; ``None`` if unreadable."""
    names = sorted((e.name for e in ATTACKS.entries(min_norm=False)), key=len, reverse=True)
    m = re.match(rf'^({"|".join(re.escape(n) for n in names)})([0-9.]+)$', part)
    return {'attack': m.group(1), 'eps': _number(m.group(2))} if m else None


@METHODS.register('adversarial', parse_suffix=adversarial_suffix)
class UniformGenerator:
    """AEs with one prescribed budget for every example (the paper's adversarial pruning).

    Parameters
    ----------
    attack
        Any registered fixed-budget attack (:data:`~nni_bap.attacks.ATTACKS`): ``'fgsm'``, ``'pgd'`` (Linf),
        ``'pgd_l2'``, ``'apgd-ce'``...
    eps
        The uniform budget, > 0 (a zero budget would train on clean data).
    steps
        The attack's iterations, >= 1 (FGSM takes one step).
    alpha
        Step size, > 0, or ``None``: PGD's ``2.5 * eps / steps``; FGSM's ``1.25 * eps`` with a random
        start (FGSM-RS, Wong et al. 2020), ``eps`` without one.
    random_start
        Start from a uniform random point of the ``eps``-ball (default). With ``attack='fgsm'``
        this is FGSM-RS; ``False`` gives plain FGSM (``eps * sign(grad)`` from the clean input).
    adv_weight, clip_min, clip_max, log_interval
        As in :class:`BlindGenerator`.

    Raises
    ------
    ConfigError
        A setting out of range, naming it.
    """

    def __init__(self, attack: str = 'fgsm', eps: float = 0.1, steps: int = 10, alpha: Optional[float] = None,
                 random_start: bool = True, adv_weight: float = ADV_WEIGHT, clip_min: Optional[float] = 0.0,
                 clip_max: Optional[float] = 1.0, log_interval: int = LOG_INTERVAL):
        entry = ATTACKS.entry(attack)
        if entry.min_norm:
            raise ConfigError(f'attack {attack!r} has no budget; choose a fixed-budget attack: '
                              f'{ATTACKS.names(min_norm=False)}')
        self.attack, self.eps, self.steps = attack, check_number('eps', eps, strict=True), check_count('steps', steps)
        self.alpha = None if alpha is None else check_number('alpha', alpha, strict=True)
        self.adv_weight, self.log_interval = check_adv_weight(adv_weight), check_count('log_interval', log_interval, low=0)
        self.clip_min, self.clip_max = check_clip(clip_min, clip_max)
        self.random_start = bool(random_start)
        self._entry = entry

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        offered = {'eps': self.eps, 'alpha': self.alpha, 'steps': self.steps, 'random_start': self.random_start,
                   'clip_min': self.clip_min, 'clip_max': self.clip_max}
        atk = self._entry.build(model, **{k: v for k, v in offered.items() if k in self._entry.defaults})
        x_adv = atk(x, y)
        stats = {'eps': float(self.eps)}
        stats.update(_quantiles(flat_norm(x_adv - x, 'l2'), 'cut_norm'))
        return x_adv, stats
