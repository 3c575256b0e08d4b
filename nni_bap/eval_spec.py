"""What a robustness evaluation runs: per norm, a budget grid, key points and the attacks of the worst case.

A spec is ``{norm: {'budgets': [...], 'key_points': [...], 'attacks': {name: settings}}}`` for ``norm`` in
``'linf'`` and ``'l2'``; budgets are plain per-example norms over all input elements (L2 Euclidean, Linf
max). Attacks of a norm are either *minimum-norm* (``fmn``, ``deepfool``: one run gives each sample's
smallest adversarial norm, so every budget at once) or *fixed-budget* (``apgd-ce``, ``apgd-dlr``, ``pgd``,
``fgsm``, ``pgd_l2``), run at ``fixed_budgets`` (default: the key points) on the samples still robust there.

Kept free of NNI, so configs are checked cheaply.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Sequence, Tuple

__all__ = ['EVAL_ATTACKS', 'MIN_NORM', 'NORMS', 'default_spec', 'scale_for', 'validate_spec']

NORMS = ('linf', 'l2')
#: Evaluation attack name -> (ATTACKS table name, fixed settings, norms it supports).
EVAL_ATTACKS: Dict[str, Tuple[str, Dict[str, Any], Tuple[str, ...]]] = {
    'fmn': ('fmn', {}, ('linf', 'l2')),
    'deepfool': ('deepfool', {}, ('linf', 'l2')),
    'apgd-ce': ('apgd', {'loss': 'ce'}, ('linf', 'l2')),
    'apgd-dlr': ('apgd', {'loss': 'dlr'}, ('linf', 'l2')),
    'pgd': ('pgd', {}, ('linf',)),
    'fgsm': ('fgsm', {}, ('linf',)),
    'pgd_l2': ('pgd_l2', {}, ('l2',)),
}
MIN_NORM = ('fmn', 'deepfool')
#: MNIST (28 x 28) defaults; L2 budgets scale with sqrt(input size / 784), Linf budgets do not. FMN-L2 has
#: converged by 50 steps on MNIST LeNet-5 (robust accuracy at L2 1/1.5/2 equal at 50, 100 and 200 steps);
#: FMN-Linf needs about 100 (at Linf 0.2: 0.112 after 50 steps, 0.100 after 100, 0.098 after 200). DeepFool
#: looks at the label's two strongest rivals (a third of the all-class cost); FMN and APGD carry the worst case.
_MNIST_SIZE = 784
_DEFAULT = {
    'linf': {'budgets': [round(0.025 * i, 4) for i in range(13)], 'key_points': [0.1, 0.3],
             'attacks': {'fmn': {'steps': 100}, 'apgd-ce': {'steps': 50}, 'apgd-dlr': {'steps': 50}}},
    'l2': {'budgets': [round(0.25 * i, 4) for i in range(13)], 'key_points': [1.5],
           'attacks': {'deepfool': {'steps': 50, 'candidates': 3}, 'fmn': {'steps': 50}, 'apgd-ce': {'steps': 50},
                       'apgd-dlr': {'steps': 50}}},
}


def scale_for(input_shape: Sequence[int]) -> float:
    """Factor from MNIST's L2 budgets to those of inputs of ``input_shape``: ``sqrt(size / 784)``."""
    return math.sqrt(math.prod(input_shape) / _MNIST_SIZE)


def default_spec(input_shape: Sequence[int] = (1, 28, 28)) -> Dict[str, Dict[str, Any]]:
    """The default evaluation for inputs of ``input_shape``: MNIST's grids, L2 budgets scaled by :func:`scale_for`."""
    spec = copy.deepcopy(_DEFAULT)
    s = scale_for(input_shape)
    for key in ('budgets', 'key_points'):
        spec['l2'][key] = [round(b * s, 4) for b in spec['l2'][key]]
    return spec


def _numbers(value: Any, where: str, allow_empty: bool = False) -> List[float]:
    ok = isinstance(value, list) and (allow_empty or value) and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and b >= 0 for b in value)
    if not ok:
        raise ValueError(f'{where} must be a {"" if allow_empty else "non-empty "}list of numbers >= 0, got {value!r}')
    return sorted(float(b) for b in value)


def _validate_norm(norm: str, entry: Any) -> Dict[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError(f'eval.{norm} must be a mapping with budgets, key_points and attacks')
    unknown = sorted(set(entry) - {'budgets', 'key_points', 'attacks', 'fixed_budgets'})
    if unknown:
        raise ValueError(f'eval.{norm}: unknown key {unknown[0]!r} (budgets, key_points, attacks, fixed_budgets)')
    budgets = _numbers(entry.get('budgets'), f'eval.{norm}.budgets')
    keys = _numbers(entry.get('key_points', []), f'eval.{norm}.key_points', allow_empty=True)
    fixed = _numbers(entry.get('fixed_budgets', keys), f'eval.{norm}.fixed_budgets', allow_empty=True)
    attacks = entry.get('attacks')
    if not isinstance(attacks, dict) or not attacks:
        raise ValueError(f'eval.{norm}.attacks must map attack names to settings, got {attacks!r}')
    for name, settings in attacks.items():
        _check_attack(norm, name, settings)
    fixed_attacks = sorted(set(attacks) - set(MIN_NORM))
    if fixed_attacks and not any(b > 0 for b in fixed):
        raise ValueError(f'eval.{norm}: {", ".join(fixed_attacks)} run only at key_points (or fixed_budgets); '
                         'give at least one budget > 0 there')
    return {'budgets': budgets, 'key_points': keys, 'fixed_budgets': fixed,
            'attacks': {k: dict(v or {}) for k, v in attacks.items()}}


def _check_attack(norm: str, name: str, settings: Any) -> None:
    """The attack exists for ``norm`` and its constructor accepts ``settings`` (built once on a stand-in model)."""
    if name not in EVAL_ATTACKS or norm not in EVAL_ATTACKS[name][2]:
        choices = sorted(a for a, (_, _, norms) in EVAL_ATTACKS.items() if norm in norms)
        raise ValueError(f'eval.{norm}: unknown attack {name!r}; choose among {choices}')
    if not isinstance(settings or {}, dict):
        raise ValueError(f'eval.{norm}.attacks.{name} must be a mapping of settings')
    table, fixed, _ = EVAL_ATTACKS[name]
    reserved = sorted({'eps', 'norm', 'loss'} & set(settings or {}))
    if reserved:
        raise ValueError(f'eval.{norm}.attacks.{name}: {reserved[0]!r} is set by the spec (its norm, budgets and name)')
    from torch import nn

    from .attacks import ATTACKS
    kw = {**fixed, **(settings or {})}
    kw.update({'norm': norm} if name in MIN_NORM or table == 'apgd' else {})
    kw.update({} if name in MIN_NORM else {'eps': 0.1})
    try:
        ATTACKS[table](nn.Identity(), **kw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'eval.{norm}.attacks.{name}: {exc}') from None


def validate_spec(spec: Any) -> Dict[str, Dict[str, Any]]:
    """A checked, normalised copy of ``spec`` (budgets sorted, ``fixed_budgets`` filled); ``ValueError`` naming
    the problem otherwise."""
    if not isinstance(spec, dict) or not spec:
        raise ValueError("eval must map a norm ('linf', 'l2') to {budgets, key_points, attacks}")
    unknown = sorted(set(spec) - set(NORMS))
    if unknown:
        raise ValueError(f"eval: unknown norm {unknown[0]!r}; the spec maps 'linf' and/or 'l2' to "
                         '{budgets, key_points, attacks} (attack names go under attacks)')
    return {norm: _validate_norm(norm, entry) for norm, entry in spec.items()}
