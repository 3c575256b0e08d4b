"""Base (scoring) pruners: NNI's, registered by name; the structured ones remove whole output channels.

Each factory imports NNI when a pruner is built, so that checking a config's names needs no NNI (it takes
seconds to import).
"""
from __future__ import annotations

from typing import Any, Dict, List

from torch import nn

from .registry import BASE_PRUNERS

__all__ = ['BASE_PRUNERS', 'fpgm', 'l1', 'l2', 'level']


def _nni(name: str):
    from .compat import (
        nni_pruning,  # NNI takes seconds to import: only when a pruner is really built
    )
    return getattr(nni_pruning, name)


@BASE_PRUNERS.register('level', structured=False)
def level(model: nn.Module, config_list: List[Dict[str, Any]], evaluator=None):
    """NNI's ``LevelPruner``: the smallest weights, element by element."""
    return _nni('LevelPruner')(model, config_list, evaluator=evaluator)


@BASE_PRUNERS.register('l1', structured=True)
def l1(model: nn.Module, config_list: List[Dict[str, Any]], evaluator=None):
    """NNI's ``L1NormPruner``: the output channels of smallest L1 norm."""
    return _nni('L1NormPruner')(model, config_list, evaluator=evaluator)


@BASE_PRUNERS.register('l2', structured=True)
def l2(model: nn.Module, config_list: List[Dict[str, Any]], evaluator=None):
    """NNI's ``L2NormPruner``: the output channels of smallest L2 norm."""
    return _nni('L2NormPruner')(model, config_list, evaluator=evaluator)


@BASE_PRUNERS.register('fpgm', structured=True)
def fpgm(model: nn.Module, config_list: List[Dict[str, Any]], evaluator=None):
    """NNI's ``FPGMPruner``: the output channels nearest the geometric median."""
    return _nni('FPGMPruner')(model, config_list, evaluator=evaluator)
