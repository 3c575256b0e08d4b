"""Pruning methods by name: the registries of methods, base pruners and schedules, filled, and the grammar of
method names (``'adversarial-pgd0.1'``, ``'bap-s1.1'``, presets registered by name). Imports no NNI, so configs
are checked without it.

A method is a family (``natural``, ``adversarial``, ``bap``: the AE generator its pruner trains on, registered
where the generator is defined) with settings: the family's config section, then what the method's name says
(a suffix the family reads, or a preset's bound settings).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import ConfigError
from ..registry import Entry
from . import bap_presets, base_pruners, generators, schedule  # noqa: F401  (they register their entries)
from .registry import BASE_PRUNERS, METHODS, SCHEDULES

__all__ = ['BASE_PRUNERS', 'METHODS', 'SCHEDULES', 'check_method_settings', 'config_settings', 'family_of',
           'parse_method']

METHODS.register('natural')(None)  # NNI's own scheduled pruner of the schedule (``SCHEDULES[...].nni_pruner``)


def family_of(entry: Entry) -> str:
    """The family a method belongs to: its own name, or for a preset the family it was registered with."""
    return entry.meta.get('family', entry.name)


def _named(spec: str) -> Tuple[Entry, str]:
    """The registered method a name starts with (the longest: ``'bap-margin-s1.5'`` is ``bap-margin`` with the
    suffix ``'s1.5'``) and the suffix after it; only a family's name or a preset's may carry a suffix."""
    if spec in METHODS:
        return METHODS.entry(spec), ''
    for name in sorted(METHODS, key=len, reverse=True):
        if spec.startswith(name + '-') and len(spec) > len(name) + 1:
            return METHODS.entry(name), spec[len(name) + 1:]
    raise ConfigError(f'unknown method {spec!r}; choose one of {METHODS.names()} (optionally with a suffix)')


def parse_method(spec: str, sections: Optional[Mapping[str, Any]] = None) -> Tuple[str, Dict[str, Any]]:
    """``'bap'``, ``'adversarial-fgsm0.3'``, ``'bap-s1.1'`` (scale), ``'bap-c0.5'`` (cutoff), a preset name
    (``'bap-margin'``), a preset with suffixes (``'bap-margin-s1.5-k0.45'``) -> (family, settings). Settings start
    from ``sections[family]`` (a config's section of that family), then the preset's, then the suffix's.

    Raises
    ------
    ConfigError
        An unknown method or a suffix its family cannot read.
    """
    entry, suffix = _named(str(spec))
    family = family_of(entry)
    args: Dict[str, Any] = dict((sections or {}).get(family) or {}) if METHODS.entry(family).obj else {}
    args.update(copy.deepcopy(entry.preset))
    if suffix:
        read = entry.meta.get('parse_suffix')
        found = read(suffix) if read else None
        if found is None:
            raise ConfigError(f'cannot read method suffix {suffix!r} of {spec!r}')
        args.update(found)
    return family, args


def config_settings(family: str) -> Tuple[str, ...]:
    """The settings a config may give a family (its generator's constructor settings, the API-only ones excluded)."""
    entry = METHODS.entry(family)
    return tuple(k for k in entry.settings if k not in entry.meta.get('api_only', ()))


def check_method_settings(family: str, args: Mapping[str, Any], config: bool = True) -> Dict[str, Any]:
    """Check a family's settings by building its AE generator (the pruner builds the same one); no NNI needed.

    Returns the settings with every default filled in (the generator's signature). With ``config``, settings a
    config may not give (API-only) are refused too.

    Raises
    ------
    ConfigError
        An unknown setting or a value out of range, naming the family and the setting.
    """
    entry = METHODS.entry(family)
    known = config_settings(family) if config else entry.settings
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ConfigError(f'unknown {family} setting {unknown[0]!r}; known: {", ".join(known)}')
    if entry.obj is None:
        return {}
    try:
        entry.obj(**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f'{family}: {exc}') from None
    return {**entry.defaults, **args}
