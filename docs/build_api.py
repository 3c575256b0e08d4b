"""Build the API reference from the docstrings with pdoc (numpydoc format): ``python docs/build_api.py [OUT]``.

``make docs`` runs it into ``docs/api/`` (ignored by git: built, never committed); open ``docs/api/index.html``.
Every module of ``nni_bap`` gets a page (``__main__`` modules excepted: importing them runs the command line).
The packages' public names are imported lazily (:mod:`nni_bap.utils.lazy`); they are resolved first so that pdoc
sees them on the package pages too.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from pathlib import Path
from typing import List

DEFAULT_OUT = Path(__file__).resolve().parent / 'api'


def modules(package: str = 'nni_bap') -> List[str]:
    """``package`` and every module below it, ``__main__`` modules left out."""
    root = importlib.import_module(package)
    found = [info.name for info in pkgutil.walk_packages(root.__path__, f'{package}.')
             if not info.name.rsplit('.', 1)[-1] == '__main__']
    return [package] + sorted(found)


def resolve_lazy(names: List[str]) -> None:
    """Put every name of each module's ``__all__`` into the module's namespace (pdoc reads ``__dict__`` only)."""
    for name in names:
        module = importlib.import_module(name)
        for attr in getattr(module, '__all__', ()):
            if attr not in vars(module):
                setattr(module, attr, getattr(module, attr))


def build(out: Path = DEFAULT_OUT) -> Path:
    """Write the HTML reference into ``out``; returns the path of its ``index.html``."""
    import pdoc
    import pdoc.render
    with warnings.catch_warnings():  # NNI's import warns about torch pytree registrations
        warnings.simplefilter('ignore')
        names = modules()
        resolve_lazy(names)
    pdoc.render.configure(docformat='numpy', footer_text='nni-bap API reference, built from the docstrings',
                          search=True, show_source=True)
    with warnings.catch_warnings():
        # a package that imports its submodules brings them into pdoc's walk a second time: one page each anyway
        warnings.filterwarnings('ignore', message='The module specification .* adds a module named')
        # NNI's Evaluator annotates with pytorch-lightning types, not installed
        warnings.filterwarnings('ignore', message='Error parsing type annotation .* pl\\.')
        pdoc.pdoc(*names, output_directory=Path(out))
    return Path(out) / 'index.html'


if __name__ == '__main__':
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT))
