"""The ``bap`` command line (:mod:`nni_bap.cli.main`) and what it works on: typed run configurations, run
folders, the dense-model cache, the prune / export / eval jobs, sweeps, ``aer.json`` rows and reports.

Names are imported lazily, so that checking a config (:mod:`nni_bap.cli.config`) imports no NNI.
"""
from __future__ import annotations

from ..utils.lazy import lazy_attributes

__all__ = ['RunConfig', 'main']

__getattr__ = lazy_attributes(__name__, __all__, ('.config', '.main'))
