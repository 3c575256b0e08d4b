"""Channel-dependency groups for structured pruning: layers whose outputs meet in residual adds prune the same
channels (NNI ``dependency_group_id``), with the chains of adds NNI's own detection misses."""
from __future__ import annotations

import copy

from torch import nn

from .channel_mask import channel_groups
from .compat import auto_set_denpendency_group_ids, symbolic_trace

__all__ = ['structured_dependency_config']


def structured_dependency_config(model: nn.Module, config_list):
    """``config_list`` with NNI dependency-group ids, so that layers meeting in residual adds prune the same channels.

    NNI's ``auto_set_denpendency_group_ids`` (needs tensorboard importable) gives one entry per layer; its
    ``dependency_group_id`` values are replaced by :func:`nni_bap.pruning.channel_mask.channel_groups`, which
    follows chains of residual adds (NNI's own detection stops at the first ``add`` without shape
    propagation, so a second block's ``conv2`` would prune other channels than its stage).
    """
    graph = symbolic_trace(model)
    entries = auto_set_denpendency_group_ids(graph, copy.deepcopy(config_list))
    ids = {name: f'channels-{i}' for i, group in enumerate(channel_groups(model, graph)) for name in group}
    for entry in entries:
        entry.pop('dependency_group_id', None)
        name = entry['op_names'][0]
        if name in ids:
            entry['dependency_group_id'] = ids[name]
    return entries
