"""The attack registry: every attack registers itself with the norms it supports.

What the registry knows of an attack (its :class:`~nni_bap.registry.Entry`): ``norms`` (declared),
``min_norm`` (a :class:`~nni_bap.attacks.base.MinNormAttack`: one run gives every sample's smallest
adversarial norm), and its settings with their defaults (its constructor's signature; ``takes_norm`` when
``norm`` is one of them). Configs, the evaluation spec, the pruners' uniform-budget generator and the tests
read it; no other table of attack names exists.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

from ..registry import Entry, Registry
from .base import MinNormAttack, check_norm

__all__ = ['ATTACKS', 'register_attack', 'takes_norm']

#: Attack name -> class (a preset entry such as ``apgd-ce`` -> the class with its preset bound).
ATTACKS = Registry('attack')


def register_attack(name: str, norms: Sequence[str], preset: Optional[Mapping[str, Any]] = None) -> Callable:
    """Class decorator: register an :class:`~nni_bap.attacks.base.Attack` subclass as ``name`` for ``norms``.

    ``preset`` binds constructor arguments (``apgd-ce`` is APGD with ``loss='ce'``); whether it is a minimum-norm
    attack is read from its base class.
    """
    norms = tuple(check_norm(n) for n in norms)

    def decorate(cls):
        return ATTACKS.register(name, preset=preset, norms=norms, min_norm=issubclass(cls, MinNormAttack))(cls)
    return decorate


def takes_norm(entry: Entry) -> bool:
    """Whether the attack's constructor takes a ``norm`` setting (the spec then passes the norm it evaluates)."""
    return 'norm' in entry.defaults
