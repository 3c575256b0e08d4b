"""nni-bap: blind adversarial pruning (BAP) for NNI 3.0.

The package is organised by stage, bottom to top: :mod:`nni_bap.errors` and :mod:`nni_bap.registry` (the one
exception root and the name registries), :mod:`nni_bap.utils` (atomic files, safe unpickling, device,
distributed, timing), :mod:`nni_bap.attacks`, :mod:`nni_bap.data` and :mod:`nni_bap.models`, then the pruning
method (:mod:`nni_bap.pruning`) and robustness evaluation (:mod:`nni_bap.evaluation`), then
:mod:`nni_bap.export`, then the command line with its run folders (:mod:`nni_bap.cli`).

Names are imported lazily: ``import nni_bap.export.runtime`` then needs neither torch nor NNI.
"""
from __future__ import annotations

from .utils.lazy import lazy_attributes

__version__ = '0.1.0'

__all__ = ['AdversarialPruner', 'BAPPruner', 'BapError', 'NNIUsageError', 'apply_masks', 'current_sparsity',
           'cutoff_scale', 'finalize', 'l2_to_rms', 'rms_to_l2']

__getattr__ = lazy_attributes(__name__, __all__, ('.errors', '.pruning.cutoff', '.pruning.sparsity',
                                                  '.pruning.compat', '.pruning.pruner'))
