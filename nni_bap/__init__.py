"""nni-bap: blind adversarial pruning (BAP) for NNI 3.0.

Names are imported lazily: ``import nni_bap.export.runtime`` then needs neither torch nor NNI.
"""
from __future__ import annotations

import importlib

__version__ = '0.1.0'

__all__ = ['AdversarialPruner', 'BAPPruner', 'NNIUsageError', 'apply_masks', 'current_sparsity', 'cutoff_scale',
           'finalize', 'l2_to_rms', 'rms_to_l2']

_WHERE = {'AdversarialPruner': 'pruner', 'BAPPruner': 'pruner', 'current_sparsity': 'pruner',
          'NNIUsageError': 'compat', 'apply_masks': 'compat', 'finalize': 'compat',
          'cutoff_scale': 'cutoff', 'l2_to_rms': 'cutoff', 'rms_to_l2': 'cutoff'}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f'.{_WHERE[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
