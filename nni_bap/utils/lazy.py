"""Lazy package attributes (PEP 562): a package's public names are imported from its submodules on first use.

A package lists its public names in ``__all__`` and the submodules that define them, lightest first; the first
submodule whose ``__all__`` holds a name provides it. No name -> module table is kept by hand, and importing the
package imports none of its submodules (``import nni_bap.export.runtime`` needs neither torch nor NNI).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Sequence

__all__ = ['lazy_attributes']


def lazy_attributes(package: str, names: Sequence[str], submodules: Sequence[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that finds each of ``names`` in ``submodules`` (relative names)."""
    public = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name in public:
            for sub in submodules:
                module = importlib.import_module(sub, package)
                if name in getattr(module, '__all__', ()):
                    return getattr(module, name)
        raise AttributeError(f'module {package!r} has no attribute {name!r}')
    return __getattr__
