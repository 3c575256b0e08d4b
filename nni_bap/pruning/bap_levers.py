"""BAP's AE generator from issue 20's lever settings: the paper's cutoff-scale DeepFool, composed with the levers.

:func:`build_levers` is what :class:`~nni_bap.pruning.generators.BlindGenerator` calls with its settings: it
returns ``None`` for the paper's AE (one norm, DeepFool, no cap, no noise: the generator then runs
:class:`~.deepfool_cut.DeepFoolCut` itself) and otherwise the composed generator. The levers:

``step``
    ``'deepfool'`` (default, BAT: DeepFool's minimal perturbation, cut and scaled) or ``'margin'`` (one backward
    pass gives each sample's linearised distance ``d_i``; one step of ``eps_i = clip(rho * d_i, 0, cap)``;
    :mod:`.margin_step`).
``cap``
    A ceiling on each sample's budget (:mod:`.budget_cap`); with ``cutoff=None`` a budget can grow past the
    batch mean, up to the cap.
``noise``
    Uniform noise of ``noise * eps_i`` before a margin step (N-FGSM-style).
``norm='both'`` and ``mix``
    An L2 and a Linf generator, alternating by step or splitting each batch (:mod:`.norm_mix`). With ``'both'``,
    ``step``, ``cutoff``, ``cap``, ``scale`` and ``noise`` may each be one value for both norms or a mapping
    ``{'l2': ..., 'linf': ...}``.

The loss lever (``kl_weight``, :mod:`.kl_term`) is the pruner's, not the generator's.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Optional, Tuple

from ..attacks.base import check_number
from ..errors import ConfigError
from .budget_cap import CappedGenerator, check_cap
from .deepfool_cut import DeepFoolCut
from .margin_step import MarginStepGenerator
from .norm_mix import ORDER, NormMix, check_mix

__all__ = ['NORM_CHOICES', 'PER_NORM', 'STEPS', 'build_levers', 'check_step']

#: How the AE is made from DeepFool's output.
STEPS = ('deepfool', 'margin')
#: ``norm`` settings of BAP.
NORM_CHOICES = ('l2', 'linf', 'both')
#: Settings that may differ per norm when ``norm='both'``.
PER_NORM = ('step', 'cutoff', 'cap', 'scale', 'noise')


def check_step(step: Any) -> str:
    """``step`` if it is one of :data:`STEPS`, else :class:`~nni_bap.errors.ConfigError` naming the setting."""
    if not isinstance(step, str) or step not in STEPS:
        raise ConfigError(f"step must be 'deepfool' or 'margin', got {step!r}")
    return step


def _per_norm(name: str, value: Any, norms: Tuple[str, ...]) -> Dict[str, Any]:
    """``{norm: value}`` for every norm in use, from one value or a per-norm mapping (``norm='both'`` only)."""
    if not isinstance(value, Mapping):
        return {n: value for n in norms}
    if norms != ORDER:
        raise ConfigError(f"{name} may map norms to values only with norm='both', got {name}={dict(value)!r}")
    if set(value) != set(ORDER):
        raise ConfigError(f"{name} must map exactly 'l2' and 'linf' to values, got {dict(value)!r}")
    return {n: value[n] for n in norms}


def _one_norm(norm: str, step: str, cutoff: Any, cap: Any, scale: Any, noise: Any, deepfool: Dict[str, Any]):
    """The generator of one norm; ``deepfool``: DeepFool's settings and the valid input range."""
    noise = check_number('noise', noise)
    clip = {'clip_min': deepfool['clip_min'], 'clip_max': deepfool['clip_max']}
    if check_step(step) == 'margin':
        return MarginStepGenerator(norm=norm, scale=scale, cap=cap, noise=noise, cutoff=cutoff, **clip)
    if noise > 0:
        raise ConfigError(f"noise applies to step 'margin' only, got noise={noise!r} with step 'deepfool'")
    gen = DeepFoolCut(cutoff=cutoff, scale=scale, norm=norm, **deepfool)
    return gen if check_cap(cap) is None else CappedGenerator(gen, cap, norm)


def build_levers(*, step: Any = 'deepfool', norm: Any = 'l2', mix: Any = 'alternate', cutoff: Any = 'adaptive',
                 cap: Any = None, scale: Any = 1.0, noise: Any = 0.0,
                 deepfool: Optional[Dict[str, Any]] = None) -> Any:
    """The AE generator of these settings, or ``None`` when they are the paper's (see the module docstring).

    Parameters
    ----------
    step, norm, mix, cutoff, cap, scale, noise
        The settings of :class:`~nni_bap.pruning.generators.BlindGenerator` (per-norm mappings with ``'both'``).
    deepfool
        :class:`~.deepfool_cut.DeepFoolCut`'s other settings (``attack_steps``, ``overshoot``, ``candidates``,
        ``clip_min``, ``clip_max``, ``warm_start``, ``drop_crossed``); the margin step uses the range only.

    Raises
    ------
    ConfigError
        A setting out of range or a combination that does not exist, in one line naming the setting.
    """
    deepfool = dict(deepfool or {'clip_min': 0.0, 'clip_max': 1.0})
    if not isinstance(norm, str) or norm not in NORM_CHOICES:
        raise ConfigError(f"norm must be 'l2', 'linf' or 'both', got {norm!r}")
    check_mix(mix)
    norms = ORDER if norm == 'both' else (norm,)
    values = {'step': step, 'cutoff': cutoff, 'cap': cap, 'scale': scale, 'noise': noise}
    per = {k: _per_norm(k, v, norms) for k, v in values.items()}
    papers = norm != 'both' and check_step(step) == 'deepfool' and check_cap(cap) is None
    if papers and check_number('noise', noise) == 0:
        return None
    if deepfool.get('warm_start') and (norm == 'both' or per['step'][norm] != 'deepfool'):
        raise ConfigError("warm_start works with one norm ('l2' or 'linf') and step 'deepfool' only")
    gens = {n: _one_norm(n, **{k: per[k][n] for k in PER_NORM}, deepfool=deepfool) for n in norms}
    return NormMix(gens, mix) if norm == 'both' else gens[norm]
