"""Adversarial-example generators used inside the pruning loop: what makes one pruning method differ from another.

Each generator is called as ``gen(model, x, y)`` on the *current masked model in eval mode* and returns the
adversarial batch plus a dict of per-step statistics. A generator's constructor holds every setting of its
method, with the defaults (the scheduled pruners take them as keyword arguments and build the generator; a
config is checked by building it, without NNI). Every setting is checked in the constructor, so a bad one
fails when the pruner is built, not at its first training step. Each generator registers itself in
:data:`~nni_bap.pruning.registry.METHODS` with the method-name suffixes it reads (``bap-s1.1``). BAP's generator
extends the paper's AE (:class:`~.deepfool_cut.DeepFoolCut`) with issue 20's levers (:mod:`.bap_levers`); its
named variants are registered in :mod:`.bap_presets`.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

from torch import Tensor, nn

from ..attacks.base import (
    check_candidates,
    check_clip,
    check_count,
    check_number,
    flat_norm,
)
from ..attacks.registry import ATTACKS
from ..errors import ConfigError
from .ae_statistics import quantiles
from .bap_levers import build_levers
from .cutoff import Cutoff
from .deepfool_cut import DeepFoolCut
from .kl_term import check_kl_weight
from .norm_mix import call_generator
from .registry import METHODS
from .warm_start import WarmStarts

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


#: One BAP suffix: scale ``s1.1``, cutoff ``c0.5`` / ``cadaptive``, cap ``k0.3``, noise ``n1``, KL weight ``kl1``.
_BAP_SUFFIX = re.compile(r'^s([0-9.]+)$|^c([0-9.]+|adaptive)$|^k([0-9.]+)$|^n([0-9.]+)$|^kl([0-9.]+)$')


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f'cannot read the number {text!r}') from None


def _one_bap_suffix(part: str) -> Optional[Dict[str, Any]]:
    m = _BAP_SUFFIX.match(part)
    if not m:
        return None
    if m.group(2):
        return {'cutoff': m.group(2) if m.group(2) == 'adaptive' else _number(m.group(2))}
    key, text = next((k, t) for k, t in zip(('scale', None, 'cap', 'noise', 'kl_weight'), m.groups()) if t)
    return {key: _number(text)}


def bap_suffix(suffix: str) -> Optional[Dict[str, Any]]:
    """``'s1.1'`` -> ``{'scale': 1.1}``, ``'c0.5'`` -> ``{'cutoff': 0.5}``, ``'cadaptive'``, ``'k0.3'`` (cap),
    ``'n1'`` (noise), ``'kl1'`` (KL weight); several joined by ``-`` apply left to right (``'s1.5-k0.45'``);
    ``None`` if any part is unreadable."""
    out: Dict[str, Any] = {}
    for part in suffix.split('-'):
        found = _one_bap_suffix(part)
        if found is None:
            return None
        out.update(found)
    return out


@METHODS.register('bap', parse_suffix=bap_suffix, api_only=('warm_start', 'drop_crossed'))
class BlindGenerator(DeepFoolCut):
    """Cutoff-scale AEs (BAT): DeepFool's minimal perturbation, cut at the cutoff, scaled by rho; plus issue 20's
    levers (:mod:`.bap_levers`), whose defaults keep the paper's BAP.

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
        ``'l2'`` or ``'linf'``: DeepFool's and the cut's norm; ``'both'``: an L2 and a Linf generator (see ``mix``).
    clip_min, clip_max
        Valid input range: every training batch must lie in it (normalise inside the model).
    log_interval
        Log the running statistics every this many steps (0: never).
    warm_start
        Begin each sample's DeepFool from its perturbation of the previous epoch (kept by dataset index in
        :attr:`warm`); calls must then pass ``index`` (Python API only: batches of ``(x, y, index)``). One norm
        and ``step='deepfool'`` only.
    drop_crossed
        DeepFool drops samples that crossed from later iterations (``False``: the whole batch every
        iteration, the reference for benchmarks; Python API only).
    step
        ``'deepfool'`` (the cutoff-scale AE) or ``'margin'``: one backward pass gives each sample's linearised
        distance ``d_i``, the AE is one step of ``eps_i = clip(scale * min(d_i, cutoff), 0, cap)`` (signed for
        Linf; :mod:`.margin_step`).
    cap
        Ceiling, > 0, on each sample's budget, in the norm's units, or ``None``; with ``cutoff=None`` budgets
        grow past the batch mean up to it (:mod:`.budget_cap`).
    noise
        Margin step only: uniform noise of ``noise * eps_i`` before the step (N-FGSM-style), >= 0.
    mix
        With ``norm='both'``: ``'alternate'`` (L2 on even steps, Linf on odd ones) or ``'split'`` (first half
        of each batch L2, second half Linf); ``step``, ``cutoff``, ``cap``, ``scale`` and ``noise`` may then be
        mappings ``{'l2': ..., 'linf': ...}`` (:mod:`.norm_mix`).
    kl_weight
        Weight, >= 0, of ``KL(p(x) || p(x_adv))`` the pruner adds to its loss, the clean prediction held fixed
        (:mod:`.kl_term`); 0: no term.

    Attributes
    ----------
    levers
        The composed generator of the levers (:func:`~.bap_levers.build_levers`), ``None`` for the paper's AE.

    Raises
    ------
    ConfigError
        A setting out of range, naming it.
    """

    def __init__(self, cutoff: Cutoff = 'adaptive', scale: float = 1.0, attack_steps: int = 2,
                 overshoot: float = 0.02, candidates: Optional[int] = 2, adv_weight: float = ADV_WEIGHT,
                 norm: str = 'l2', clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0,
                 log_interval: int = LOG_INTERVAL, warm_start: bool = False, drop_crossed: bool = True,
                 step: str = 'deepfool', cap: Optional[float] = None, noise: float = 0.0, mix: str = 'alternate',
                 kl_weight: float = 0.0):
        deepfool = dict(attack_steps=check_count('attack_steps', attack_steps), overshoot=overshoot,
                        candidates=candidates, clip_min=clip_min, clip_max=clip_max, warm_start=warm_start,
                        drop_crossed=drop_crossed)
        self.levers = build_levers(step=step, norm=norm, mix=mix, cutoff=cutoff, cap=cap, scale=scale, noise=noise,
                                   deepfool=deepfool)
        if self.levers is None:
            super().__init__(cutoff=cutoff, scale=scale, norm=norm, **deepfool)
        else:
            self._take_lever_settings(cutoff, scale, norm, deepfool)
        self.adv_weight, self.log_interval = check_adv_weight(adv_weight), check_count('log_interval', log_interval, low=0)
        self.kl_weight = check_kl_weight(kl_weight)
        self.step, self.cap, self.noise, self.mix = step, cap, noise, mix

    def _take_lever_settings(self, cutoff: Any, scale: Any, norm: str, deepfool: Dict[str, Any]) -> None:
        """The attributes a composed generator shares (settings as given; the range and warm starts its own)."""
        self.cutoff, self.scale, self.norm = cutoff, scale, norm
        self.attack_steps, self.overshoot = deepfool['attack_steps'], check_number('overshoot', deepfool['overshoot'])
        self.candidates, self.drop_crossed = check_candidates(deepfool['candidates']), bool(deepfool['drop_crossed'])
        self.clip_min, self.clip_max = self.levers.clip_min, self.levers.clip_max
        self.warm_start = bool(deepfool['warm_start'])
        warm = getattr(self.levers, 'warm', None)
        self.warm = WarmStarts() if warm is None else warm

    @property
    def needs_step(self) -> bool:
        """Whether calls must pass the training step (an ``'alternate'`` norm mix follows it)."""
        return bool(getattr(self.levers, 'needs_step', False))

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, index: Optional[Tensor] = None,
                 step: int = 0) -> Tuple[Tensor, Dict[str, float]]:
        """The adversarial batch and this step's statistics; ``index``: the samples' dataset indices (warm start);
        ``step``: the training step, from 0 (a norm mix alternates by it)."""
        if self.levers is None:
            return super().__call__(model, x, y, index)
        return call_generator(self.levers, model, x, y, index, step)


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
        stats.update(quantiles(flat_norm(x_adv - x, 'l2'), 'cut_norm'))
        return x_adv, stats
