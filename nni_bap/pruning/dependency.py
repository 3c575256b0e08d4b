"""Channel-dependency groups for structured pruning: layers whose outputs meet in residual adds prune the same
channels (NNI ``dependency_group_id``), with the chains of adds NNI's own detection misses."""
from __future__ import annotations

import logging

from torch import nn

from .channel_mask import channel_groups
from .compat import auto_set_denpendency_group_ids, nni_config_list, nni_output_to_log, symbolic_trace

_logger = logging.getLogger(__name__)

__all__ = ['structured_dependency_config']


def structured_dependency_config(model: nn.Module, config_list):
    """``config_list`` with NNI dependency-group ids, so that layers meeting in residual adds prune the same channels.

    NNI's ``auto_set_denpendency_group_ids`` (needs tensorboard importable) gives one entry per layer; its
    ``dependency_group_id`` values are replaced by :func:`nni_bap.pruning.channel_mask.channel_groups`, which
    follows chains of residual adds (NNI's own detection stops at the first ``add`` without shape
    propagation, so a second block's ``conv2`` would prune other channels than its stage). Use it for channel
    pruners (``L1NormPruner(model, structured_dependency_config(model, config_list), evaluator=...)``) in place
    of NNI's function; what NNI prints or logs meanwhile goes to this module's logger at DEBUG. ``exclude: true``
    entries are translated first (:func:`~nni_bap.pruning.compat.nni_config_list`).
    """
    graph = symbolic_trace(model)
    with nni_output_to_log(_logger):
        entries = auto_set_denpendency_group_ids(graph, nni_config_list(config_list))
    ids = {name: f'channels-{i}' for i, group in enumerate(channel_groups(model, graph)) for name in group}
    for entry in entries:
        entry.pop('dependency_group_id', None)
        name = entry['op_names'][0]
        if name in ids:
            entry['dependency_group_id'] = ids[name]
    return entries
