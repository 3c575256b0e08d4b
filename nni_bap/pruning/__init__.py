"""The pruning method: BAP and uniform-budget adversarial pruning as NNI scheduled pruners.

Bottom to top: the cutoff-scale strategy (:mod:`.cutoff`), schedules (:mod:`.schedule`), the AE generators that
make one method differ from another (:mod:`.generators`, warm starts in :mod:`.warm_start`), the registries and
method names (:mod:`.registry`, :mod:`.methods`, :mod:`.base_pruners`), issue 20's levers of BAP (a budget cap
:mod:`.budget_cap`, the margin step :mod:`.margin_step`, both norms :mod:`.norm_mix`, a KL term :mod:`.kl_term`,
composed by :mod:`.bap_levers` around the paper's AE :mod:`.deepfool_cut`; named ``bap-<preset>`` in
:mod:`.bap_presets`), then the NNI side: every NNI workaround
(:mod:`.compat`), channel-consistent BatchNorm masks (:mod:`.channel_mask`) and dependency groups
(:mod:`.dependency`), training helpers (:mod:`.training`), checkpoints (:mod:`.checkpoint`), the scheduled
pruners (:mod:`.pruner`), sparsity checks (:mod:`.sparsity`) and the one-call :func:`prune` (:mod:`.prune`).

Names are imported lazily: checking a config reads the registries without importing NNI.
"""
from __future__ import annotations

from ..utils.lazy import lazy_attributes

__all__ = ['AdversarialPruner', 'BAPPruner', 'BASE_PRUNERS', 'BlindGenerator', 'METHODS', 'PruneResult', 'SCHEDULES',
           'UniformGenerator', 'apply_masks', 'cutoff_scale', 'finalize', 'make_evaluator', 'parse_method', 'prune']

__getattr__ = lazy_attributes(__name__, __all__, ('.cutoff', '.methods', '.generators', '.compat', '.training',
                                                  '.pruner', '.prune'))
