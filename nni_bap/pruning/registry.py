"""The pruning registries: methods (how adversarial examples are made while pruning), base (scoring) pruners
and sparsity schedules. Things register themselves where they are defined (:mod:`.generators`,
:mod:`.base_pruners`, :mod:`.schedule`, :mod:`.methods`); :mod:`.methods` imports them all, so reading these
registries through it sees every entry. Nothing here imports NNI."""
from __future__ import annotations

from ..registry import Registry

__all__ = ['BASE_PRUNERS', 'METHODS', 'SCHEDULES']

#: Method name -> AE generator class (``None`` for natural pruning). Metadata: ``family`` (the config section
#: its settings come from, for presets), ``parse_suffix`` (``'s1.1'`` -> settings), ``api_only`` (settings a
#: config may not give).
METHODS = Registry('method')
#: Base pruner name -> factory ``(model, config_list, evaluator)`` -> NNI pruner. Metadata: ``structured``.
BASE_PRUNERS = Registry('base pruner')
#: Schedule name -> ratio function ``(current_times, total_times, initial_ratio)``. Metadata: ``nni_pruner`` (the
#: NNI scheduled pruner natural pruning uses for it).
SCHEDULES = Registry('schedule')
