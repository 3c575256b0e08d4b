"""Channel alignment: channel-pruned layers keep a multiple of ``align`` channels, so that pruning pays where the
model runs.

onnxruntime runs convolutions in its blocked NCHWc layout (16 channels per block on a CPU with AVX-512, 8 with
AVX2): a convolution left with 8 of 16 channels computes a whole block anyway and adds layout reorders, so it
costs about what the unpruned one did. Alignment rounds every channel-pruned layer's kept width to a multiple of
the block (:func:`aligned_width`): never below one block, never above the layer's channels. Layers that share
channels (NNI dependency groups, residual adds) share one width. A layer whose *input* has fewer channels than a
block (a stem reading 3 colour channels) computes one block whatever its width: it is left alone, with its whole
dependency group, unless the config_list names it in ``op_names``.

Everything here is a pure function over NNI's config_list (plus the model's layer shapes): the aligned list is a
plain config_list that every NNI pruner (and a scheduled one: AGP reaches its targets exactly at the end) takes
as is. Which block width this CPU uses is decided above this package (:mod:`nni_bap.deploy.block`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Set, Tuple

from torch import nn

from ..errors import ConfigError
from .channel_mask import channel_groups
from .compat import nni_config_list
from .dependency import structured_dependency_config

__all__ = ['ChannelUnit', 'align_config_list', 'aligned_ratio', 'aligned_width', 'channel_units', 'unit_entries']

_logger = logging.getLogger(__name__)
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def aligned_width(channels: int, sparse_ratio: float, align: int) -> int:
    """Channels a layer of ``channels`` keeps at ``sparse_ratio`` when widths are multiples of ``align``.

    The kept count ``channels * (1 - sparse_ratio)`` is rounded to the nearest multiple of ``align`` (halves up),
    at least one block (``align``) and at most ``channels`` (a layer narrower than one block is not pruned).
    ``align`` 1 gives NNI's own count, ``channels - int(channels * sparse_ratio)``.
    """
    if align <= 1:
        return channels - int(channels * sparse_ratio)
    blocks = math.floor(channels * (1.0 - sparse_ratio) / align + 0.5)
    return int(min(channels, max(align, blocks * align)))


def aligned_ratio(channels: int, kept: int) -> float:
    """The ``sparse_ratio`` with which NNI's channel pruners (``int(channels * ratio)`` channels removed) keep
    exactly ``kept`` of ``channels``."""
    if not 0 < kept <= channels:
        raise ValueError(f'cannot keep {kept} of {channels} channels')
    ratio = (channels - kept) / channels
    while int(channels * ratio) < channels - kept:  # float rounding, e.g. 1 - 16/48
        ratio = math.nextafter(ratio, 1.0)
    return ratio


@dataclass(frozen=True)
class ChannelUnit:
    """Output channels that are pruned together: one layer, or the layers of one dependency group.

    Attributes
    ----------
    name
        The group id (``channels-N``), or the layer's name for a layer in no group.
    layers
        The layers the config_list selects in this unit.
    channels
        Output channels of each of them.
    sparse_ratio
        The config_list's target for the unit.
    left_alone
        Why the unit is not pruned (``''`` when it is).
    """

    name: str
    layers: Tuple[str, ...]
    channels: int
    sparse_ratio: float
    left_alone: str = ''


def _out_channels(module: nn.Module) -> int:
    return int(module.out_features if isinstance(module, nn.Linear) else module.out_channels)


def _in_channels(module: nn.Module) -> int:
    return int(module.in_features if isinstance(module, nn.Linear) else module.in_channels)


def _named(config_list: Sequence[Dict[str, Any]]) -> Set[str]:
    """Layers a config_list names in ``op_names`` of a pruning (not exclude) entry: what the user asked for."""
    return {n for e in config_list if e.get('exclude') is not True for n in e.get('op_names') or []}


def _thin(members: Set[str], modules: Dict[str, nn.Module], align: int, asked: Set[str]) -> List[str]:
    """Members whose input has fewer channels than a block and that the config_list does not name."""
    return sorted(n for n in members if isinstance(modules.get(n), _LAYERS) and not isinstance(modules[n], nn.Linear)
                  and _in_channels(modules[n]) < align and n not in asked)


def channel_units(model: nn.Module, config_list: Sequence[Dict[str, Any]], align: int) -> List[ChannelUnit]:
    """The channel units a structured config_list prunes, in the model's order, each with why it is left alone.

    ``config_list`` is NNI's (``exclude: true`` entries included). A unit is left alone when one of its layers (any
    layer of its dependency group in the model, selected or not) reads fewer channels than ``align`` and is not named
    in ``op_names``, or when it has no more than ``align`` channels.
    """
    entries = structured_dependency_config(model, nni_config_list([dict(e) for e in config_list]))
    modules = dict(model.named_modules())
    group_of = {name: g for g in channel_groups(model) for name in g}
    asked, order = _named(config_list), {name: i for i, name in enumerate(modules)}
    by_unit: Dict[str, List[Dict[str, Any]]] = {}
    for e in entries:
        by_unit.setdefault(e.get('dependency_group_id') or e['op_names'][0], []).append(e)
    units = []
    for key, members in by_unit.items():
        layers = tuple(sorted((e['op_names'][0] for e in members), key=order.get))
        channels = _out_channels(modules[layers[0]])
        thin = _thin(set().union(*(group_of.get(n, {n}) for n in layers)), modules, align, asked) if align > 1 else []
        why = (f'{", ".join(thin)} read{"s" if len(thin) == 1 else ""} fewer than {align} channels (one block)'
               if thin else f'{channels} channels, no more than one block of {align}' if channels <= align else '')
        units.append(ChannelUnit(key, layers, channels, float(members[0]['sparse_ratio']), why))
    return sorted(units, key=lambda u: order[u.layers[0]])


def unit_entries(unit: ChannelUnit, kept: int) -> List[Dict[str, Any]]:
    """NNI config_list entries that prune ``unit`` to ``kept`` channels (none when it keeps them all); a group's
    entries carry its ``dependency_group_id``."""
    if kept >= unit.channels:
        return []
    ratio = aligned_ratio(unit.channels, kept)
    extra = {} if unit.name in unit.layers else {'dependency_group_id': unit.name}
    return [{'op_names': [name], 'sparse_ratio': ratio, **extra} for name in unit.layers]


def align_config_list(model: nn.Module, config_list: Sequence[Dict[str, Any]], align: int) -> List[Dict[str, Any]]:
    """``config_list`` with one entry per layer whose ``sparse_ratio`` keeps a multiple of ``align`` channels.

    Parameters
    ----------
    model
        The dense model (its layer shapes and residual adds decide widths and groups).
    config_list
        NNI's config_list for a channel pruner (``exclude: true`` entries included).
    align
        The block width; 1 gives :func:`~nni_bap.pruning.dependency.structured_dependency_config` unchanged.

    Returns
    -------
    list of dict
        Entries ``{'op_names': [layer], 'sparse_ratio': r}`` (with ``dependency_group_id`` in groups): the
        layers of one group share ``r``; units left alone (:func:`channel_units`) or rounded up to all their
        channels are left out.

    Raises
    ------
    ConfigError
        Nothing is left to prune once aligned.
    """
    if align <= 1:
        return structured_dependency_config(model, nni_config_list([dict(e) for e in config_list]))
    out = []
    for unit in channel_units(model, config_list, align):
        if unit.left_alone:
            _logger.info('channel alignment: %s left alone: %s', ', '.join(unit.layers), unit.left_alone)
            continue
        kept = aligned_width(unit.channels, unit.sparse_ratio, align)
        out += unit_entries(unit, kept)
        _logger.info('channel alignment: %s keep %d of %d channels (target sparsity %.3g, aligned %.3g)',
                     ', '.join(unit.layers), kept, unit.channels, unit.sparse_ratio, 1 - kept / unit.channels)
    if not out:
        raise ConfigError(f'nothing left to prune once channels are aligned to multiples of {align}: every selected '
                          'layer keeps all its channels (a lower sparsity rounds up to them; align: 1 turns '
                          'alignment off)')
    return out
