"""The paper's AE (BAT's cutoff-scale): DeepFool's minimal perturbation, cut at the cutoff, scaled by rho.

:class:`DeepFoolCut` makes the AEs of one norm; :class:`~nni_bap.pruning.generators.BlindGenerator` (the ``bap``
method) is this generator plus the loss settings and issue 20's levers, which compose it with other pieces
(:mod:`.bap_levers`).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

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
from ..utils.distributed import global_mean
from .ae_statistics import quantiles
from .cutoff import Cutoff, check_cutoff, check_scale, cutoff_scale
from .warm_start import WarmStarts, check_index

__all__ = ['DeepFoolCut']


class DeepFoolCut:
    """Cutoff-scale AEs of one norm: ``gen(model, x, y, index=None) -> (x_adv, statistics)``.

    Parameters
    ----------
    cutoff, scale, attack_steps, overshoot, candidates, norm, clip_min, clip_max, warm_start, drop_crossed
        As in :class:`~nni_bap.pruning.generators.BlindGenerator` (``norm`` is ``'l2'`` or ``'linf'`` here).

    Attributes
    ----------
    warm
        Each sample's last DeepFool perturbation by dataset index (:class:`~.warm_start.WarmStarts`), used with
        ``warm_start``.

    Raises
    ------
    ConfigError
        A setting out of range, naming it.
    """

    def __init__(self, cutoff: Cutoff = 'adaptive', scale: float = 1.0, attack_steps: int = 2,
                 overshoot: float = 0.02, candidates: Optional[int] = 2, norm: str = 'l2',
                 clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0, warm_start: bool = False,
                 drop_crossed: bool = True):
        self.cutoff, self.scale = check_cutoff(cutoff), check_scale(scale)
        self.attack_steps, self.overshoot = check_count('attack_steps', attack_steps), check_number('overshoot', overshoot)
        self.candidates, self.norm = check_candidates(candidates), check_norm(norm)
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
        stats.update(quantiles(norms, 'norm'))
        stats.update(quantiles(flat_norm(x_adv - x, self.norm), 'cut_norm'))
        return x_adv, stats
