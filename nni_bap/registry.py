"""Name -> thing tables that fill themselves where things are defined (``@ATTACKS.register('fgsm', ...)``).

Every name a config, the command line or a test accepts (attacks, pruning methods, base pruners, models,
datasets, schedules) comes from one :class:`Registry`: the object is registered with a decorator beside its
definition, with its metadata, and no other table of names exists. A registry is a read-only mapping from
name to the registered object (a preset entry maps to the object with its preset arguments bound); its
:class:`Entry` objects carry the metadata and the settings the object takes, read from its constructor's
signature.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, Mapping, Tuple

from .errors import ConfigError

__all__ = ['Entry', 'Registry']

#: Constructor parameters that are never settings: what every call passes positionally.
_NOT_SETTINGS = ('self', 'model', 'pruner', 'interval_steps', 'total_times', 'evaluator')


@dataclass(frozen=True)
class Entry:
    """One registered thing: its name, the object, preset arguments and metadata."""

    name: str
    obj: Any
    preset: Dict[str, Any] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def defaults(self) -> Dict[str, Any]:
        """Every keyword setting the object takes, with its default (the object's own signature), presets applied."""
        if self.obj is None:
            return {}
        params = inspect.signature(self.obj).parameters.values()
        out = {p.name: p.default for p in params if p.name not in _NOT_SETTINGS
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty}
        out.update(self.preset)
        return out

    @property
    def settings(self) -> Tuple[str, ...]:
        """The names of the keyword settings a user may give (the preset ones excluded)."""
        return tuple(k for k in self.defaults if k not in self.preset)

    def build(self, *args, **kwargs):
        """Call the object with the preset arguments and ``kwargs`` (``kwargs`` win)."""
        return self.obj(*args, **{**self.preset, **kwargs})

    def __getattr__(self, name: str) -> Any:
        try:
            return self.meta[name]
        except KeyError:
            raise AttributeError(f'{self.name!r} has no metadata {name!r}') from None


class Registry(Mapping[str, Any]):
    """Registered objects of one kind (``'attack'``, ``'model'``...) by name, in registration order.

    Parameters
    ----------
    kind
        What the registry holds, for error messages (``unknown attack 'x'; choose one of ...``).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Entry] = {}

    def register(self, name: str, *, preset: Mapping[str, Any] | None = None, **meta) -> Callable[[Any], Any]:
        """Decorator registering the decorated class or function under ``name``; returns it unchanged.

        ``preset`` arguments are bound when the entry is built (``apgd-ce`` is APGD with ``loss='ce'``);
        ``meta`` is free-form metadata read back as attributes of :meth:`entry`. A name is registered once.
        """
        def decorate(obj):
            self.add(Entry(name, obj, dict(preset or {}), dict(meta)))
            return obj
        return decorate

    def add(self, entry: Entry) -> Entry:
        """Register ``entry``; a second entry with the same name is refused (``ValueError``)."""
        if entry.name in self._entries:
            raise ValueError(f'{self.kind} {entry.name!r} is registered twice')
        self._entries[entry.name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Forget ``name`` (for tests that register a throwaway entry)."""
        self._entries.pop(name, None)

    def entry(self, name: Any) -> Entry:
        """The entry of ``name``; :class:`~nni_bap.errors.ConfigError` listing the names when there is none."""
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(f'unknown {self.kind} {name!r}; choose one of {self.names()}')
        return self._entries[name]

    def entries(self, **meta) -> Iterator[Entry]:
        """The entries whose metadata has every given value, in registration order."""
        for e in self._entries.values():
            if all(e.meta.get(k) == v for k, v in meta.items()):
                yield e

    def names(self, **meta) -> list:
        """Sorted names (of the entries with the given metadata)."""
        return sorted(e.name for e in self.entries(**meta))

    def __getitem__(self, name: str) -> Any:
        e = self.entry(name)
        return functools.partial(e.obj, **e.preset) if e.preset else e.obj

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self._entries else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f'Registry({self.kind!r}, {list(self._entries)})'
