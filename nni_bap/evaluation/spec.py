"""What a robustness evaluation runs: per norm, a budget grid, key points and the attacks of the worst case.

A spec is written as ``{norm: {'budgets': [...], 'key_points': [...], 'attacks': {name: settings}}}`` for
``norm`` in ``'linf'`` and ``'l2'`` (a config's ``eval`` key), and validated once into a frozen
:class:`EvalSpec`; budgets are plain per-example norms over all input elements (L2 Euclidean, Linf max).
Attacks are any registered in :data:`~nni_bap.attacks.ATTACKS` for that norm: *minimum-norm* ones (``fmn``,
``deepfool``: one run gives each sample's smallest adversarial norm, so every budget at once) or
*fixed-budget* ones (``apgd-ce``, ``apgd-dlr``, ``pgd``, ``fgsm``, ``pgd_l2``), run at ``fixed_budgets``
(default: **every budget of the grid**, so that every point of a curve is a worst case over all the attacks) on
the samples still robust there.

Two named specs (a config's ``eval`` may name one): ``'worst-case'`` (the default: APGD-CE and APGD-DLR at every
budget) and ``'key-points'`` (APGD only at the key points, every other point of the curve from the minimum-norm
attacks alone: cheaper, less strict, and marked as such in reports and plots; :attr:`EvalSpec.coverage`).

Kept free of NNI, so configs are checked cheaply.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

from torch import nn

from ..attacks.registry import ATTACKS, takes_norm
from ..errors import ConfigError
from ..utils.atomic import sha256_json

__all__ = ['EvalSpec', 'NAMED_SPECS', 'NORMS', 'NormSpec', 'default_spec', 'named_spec', 'scale_for', 'validate_spec']

NORMS = ('linf', 'l2')
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


@dataclass(frozen=True)
class NormSpec:
    """The evaluation of one norm: budget grid, key points, the budgets fixed-budget attacks run at, attacks."""

    norm: str
    budgets: Tuple[float, ...]
    key_points: Tuple[float, ...]
    fixed_budgets: Tuple[float, ...]
    attacks: Tuple[Tuple[str, Mapping[str, Any]], ...]

    @property
    def grid(self) -> List[float]:
        """Every budget a curve is reported at: the grid and the key points, sorted."""
        return sorted(set(self.budgets) | set(self.key_points))

    def min_norm_attacks(self) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """``(name, settings)`` of the minimum-norm attacks, in the spec's order."""
        return ((n, dict(s)) for n, s in self.attacks if ATTACKS.entry(n).min_norm)

    def fixed_attacks(self) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """``(name, settings)`` of the fixed-budget attacks, in the spec's order."""
        return ((n, dict(s)) for n, s in self.attacks if not ATTACKS.entry(n).min_norm)

    def build(self, name: str, settings: Mapping[str, Any], model: nn.Module, budget: float | None = None):
        """Attack ``name`` on ``model`` for this norm (at ``budget`` for a fixed-budget attack)."""
        entry = ATTACKS.entry(name)
        kw = {**settings, **({'norm': self.norm} if takes_norm(entry) else {})}
        return entry.build(model, **kw, **({} if entry.min_norm else {'eps': budget}))

    @property
    def coverage(self) -> str:
        """``'every budget'`` when the fixed-budget attacks run at every nonzero point of the curve, ``'key points'``
        when exactly at the key points, else ``'partial'`` (``'none'`` without fixed-budget attacks)."""
        if not any(True for _ in self.fixed_attacks()):
            return 'none'
        fixed, points = set(self.fixed_budgets) - {0.0}, set(self.grid) - {0.0}
        if points <= fixed:
            return 'every budget'
        return 'key points' if fixed == set(self.key_points) - {0.0} else 'partial'

    def to_dict(self) -> Dict[str, Any]:
        return {'budgets': list(self.budgets), 'key_points': list(self.key_points),
                'fixed_budgets': list(self.fixed_budgets), 'attacks': {n: dict(s) for n, s in self.attacks}}


@dataclass(frozen=True)
class EvalSpec:
    """A validated evaluation spec: one :class:`NormSpec` per norm, in the order given."""

    norms: Tuple[NormSpec, ...]

    def __iter__(self) -> Iterator[NormSpec]:
        return iter(self.norms)

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """The spec as a config writes it, normalised (budgets sorted, ``fixed_budgets`` filled)."""
        return {n.norm: n.to_dict() for n in self.norms}

    @property
    def coverage(self) -> str:
        """The coverage shared by every norm (:attr:`NormSpec.coverage`), or ``'partial'`` when they differ."""
        kinds = {n.coverage for n in self.norms}
        return kinds.pop() if len(kinds) == 1 else 'partial'

    @property
    def hash(self) -> str:
        """Content hash of :meth:`to_dict` (what a report records it was evaluated with)."""
        return sha256_json(self.to_dict())


def scale_for(input_shape: Sequence[int]) -> float:
    """Factor from MNIST's L2 budgets to those of inputs of ``input_shape``: ``sqrt(size / 784)``."""
    return math.sqrt(math.prod(input_shape) / _MNIST_SIZE)


def default_spec(input_shape: Sequence[int] = (1, 28, 28)) -> Dict[str, Dict[str, Any]]:
    """The default evaluation for inputs of ``input_shape``: MNIST's grids, L2 budgets scaled by :func:`scale_for`,
    the fixed-budget attacks at every budget (``'worst-case'``)."""
    return named_spec('worst-case', input_shape)


def _key_points_only(spec: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    for entry in spec.values():
        entry['fixed_budgets'] = list(entry['key_points'])
    return spec


#: Spec name -> what it changes in the MNIST defaults (a config's ``eval`` may give the name).
NAMED_SPECS = {'worst-case': lambda spec: spec, 'key-points': _key_points_only}


def named_spec(name: str, input_shape: Sequence[int] = (1, 28, 28)) -> Dict[str, Dict[str, Any]]:
    """The named evaluation (:data:`NAMED_SPECS`) for inputs of ``input_shape``.

    Raises
    ------
    ConfigError
        An unknown name.
    """
    if name not in NAMED_SPECS:
        raise ConfigError(f'unknown evaluation spec {name!r}; choose one of {sorted(NAMED_SPECS)} or give a mapping')
    spec = copy.deepcopy(_DEFAULT)
    s = scale_for(input_shape)
    for key in ('budgets', 'key_points'):
        spec['l2'][key] = [round(b * s, 4) for b in spec['l2'][key]]
    return NAMED_SPECS[name](spec)


def _numbers(value: Any, where: str, allow_empty: bool = False) -> Tuple[float, ...]:
    ok = isinstance(value, list) and (allow_empty or value) and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and b >= 0 for b in value)
    if not ok:
        raise ConfigError(f'{where} must be a {"" if allow_empty else "non-empty "}list of numbers >= 0, got {value!r}')
    return tuple(sorted(float(b) for b in value))


def _validate_norm(norm: str, entry: Any) -> NormSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f'eval.{norm} must be a mapping with budgets, key_points and attacks')
    unknown = sorted(set(entry) - {'budgets', 'key_points', 'attacks', 'fixed_budgets'})
    if unknown:
        raise ConfigError(f'eval.{norm}: unknown key {unknown[0]!r} (budgets, key_points, attacks, fixed_budgets)')
    budgets = _numbers(entry.get('budgets'), f'eval.{norm}.budgets')
    keys = _numbers(entry.get('key_points', []), f'eval.{norm}.key_points', allow_empty=True)
    every = sorted(set(budgets) | set(keys))
    fixed = _numbers(entry.get('fixed_budgets', every), f'eval.{norm}.fixed_budgets', allow_empty=True)
    attacks = entry.get('attacks')
    if not isinstance(attacks, dict) or not attacks:
        raise ConfigError(f'eval.{norm}.attacks must map attack names to settings, got {attacks!r}')
    for name, settings in attacks.items():
        _check_attack(norm, name, settings)
    fixed_attacks = sorted(a for a in attacks if not ATTACKS.entry(a).min_norm)
    if fixed_attacks and not any(b > 0 for b in fixed):
        raise ConfigError(f'eval.{norm}: {", ".join(fixed_attacks)} need a budget > 0 to run at (budgets, key_points '
                          'or fixed_budgets)')
    return NormSpec(norm, budgets, keys, fixed, tuple((k, dict(v or {})) for k, v in attacks.items()))


def _check_attack(norm: str, name: str, settings: Any) -> None:
    """The attack exists for ``norm`` and its constructor accepts ``settings`` (built once on a stand-in model)."""
    if name not in ATTACKS or norm not in ATTACKS.entry(name).norms:
        choices = sorted(e.name for e in ATTACKS.entries() if norm in e.norms)
        raise ConfigError(f'eval.{norm}: unknown attack {name!r}; choose among {choices}')
    if not isinstance(settings or {}, dict):
        raise ConfigError(f'eval.{norm}.attacks.{name} must be a mapping of settings')
    entry = ATTACKS.entry(name)
    reserved = sorted(({'eps', 'norm'} | set(entry.preset)) & set(settings or {}))
    if reserved:
        raise ConfigError(f'eval.{norm}.attacks.{name}: {reserved[0]!r} is set by the spec (its norm, budgets and name)')
    probe = NormSpec(norm, (), (), (), ())
    try:
        probe.build(name, settings or {}, nn.Identity(), 0.1)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f'eval.{norm}.attacks.{name}: {exc}') from None


def validate_spec(spec: Any) -> EvalSpec:
    """A checked, normalised :class:`EvalSpec` of ``spec`` (budgets sorted, ``fixed_budgets`` filled); an
    :class:`EvalSpec` is returned as it is.

    Raises
    ------
    ConfigError
        Naming the problem.
    """
    if isinstance(spec, EvalSpec):
        return spec
    if not isinstance(spec, dict) or not spec:
        raise ConfigError("eval must map a norm ('linf', 'l2') to {budgets, key_points, attacks}")
    unknown = sorted(set(spec) - set(NORMS))
    if unknown:
        raise ConfigError(f"eval: unknown norm {unknown[0]!r}; the spec maps 'linf' and/or 'l2' to "
                          '{budgets, key_points, attacks} (attack names go under attacks)')
    return EvalSpec(tuple(_validate_norm(norm, entry) for norm, entry in spec.items()))
