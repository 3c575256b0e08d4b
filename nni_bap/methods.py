"""Pruning methods by name (natural, adversarial, bap) and a one-call ``prune`` used by the CLI and tests."""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nni.compression.pruning import AGPPruner, FPGMPruner, L1NormPruner, L2NormPruner, LevelPruner, LinearPruner

from .compat import finalize
from .pruner import AdversarialPruner, BAPPruner
from .training import make_evaluator

__all__ = ['BASE_PRUNERS', 'METHODS', 'PruneResult', 'prune']

_logger = logging.getLogger(__name__)

#: Base (scoring) pruner name -> NNI class.
BASE_PRUNERS = {'level': LevelPruner, 'l1': L1NormPruner, 'l2': L2NormPruner, 'fpgm': FPGMPruner}

#: Method name -> scheduled pruner class. ``natural`` is NNI's own AGP/Linear pruner.
METHODS = {'natural': AGPPruner, 'adversarial': AdversarialPruner, 'bap': BAPPruner}

_NATURAL = {'agp': AGPPruner, 'linear': LinearPruner}


@dataclass
class PruneResult:
    """A finished pruning run: plain model with zeros baked in, masks, statistics, wall time."""

    model: nn.Module
    masks: Dict[str, Dict[str, Optional[torch.Tensor]]]
    statistics: List[Dict[str, float]] = field(default_factory=list)
    summary: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def prune(model: nn.Module, dataset: Dataset, config_list: List[Dict[str, Any]], method: str = 'bap',
          method_args: Optional[Dict[str, Any]] = None, base_pruner: str = 'level', schedule: str = 'agp',
          epochs: int = 5, interval_steps: Optional[int] = None, total_times: int = 10, schedule_fraction: float = 0.7,
          batch_size: int = 64, lr: float = 1e-3, seed: int = 0, progress: bool = True,
          copy_model: bool = True) -> PruneResult:
    """Prune ``model`` gradually while training on ``dataset``.

    Parameters
    ----------
    model
        Dense model (copied unless ``copy_model=False``).
    dataset
        Training set of ``(inputs, labels)``.
    config_list
        NNI's config list, as is.
    method
        ``'natural'``, ``'adversarial'`` or ``'bap'`` (:data:`METHODS`).
    method_args
        Keyword settings of the method's pruner (``eps``, ``attack``, ``cutoff``, ``scale``...).
    base_pruner
        Scoring pruner (:data:`BASE_PRUNERS`).
    schedule
        ``'agp'`` or ``'linear'``.
    epochs
        Training epochs in total (pruning plus fine-tuning).
    interval_steps
        Steps between sparsity updates; by default the schedule spans ``schedule_fraction`` of training.
    total_times
        Number of sparsity updates.
    """
    if method not in METHODS:
        raise ValueError(f'unknown method {method!r}; choose one of {sorted(METHODS)}')
    if base_pruner not in BASE_PRUNERS:
        raise ValueError(f'unknown base pruner {base_pruner!r}; choose one of {sorted(BASE_PRUNERS)}')
    torch.manual_seed(seed)
    model = copy.deepcopy(model) if copy_model else model
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    max_steps = epochs * len(loader)
    if interval_steps is None:
        interval_steps = max(1, int(max_steps * schedule_fraction) // total_times)
    max_steps = max(max_steps, interval_steps * total_times)
    evaluator = make_evaluator(model, loader, lr=lr, progress=progress, desc=method)
    base = BASE_PRUNERS[base_pruner](model, config_list, evaluator=evaluator)
    args = dict(method_args or {})
    if method == 'natural':
        if args:
            raise ValueError(f'natural pruning takes no method settings, got {sorted(args)}')
        scheduled = _NATURAL[schedule](base, interval_steps, total_times)
    else:
        scheduled = METHODS[method](base, interval_steps, total_times, schedule=schedule, **args)
    start = time.perf_counter()
    _, masks = scheduled.compress(max_steps=max_steps, max_epochs=None)
    seconds = time.perf_counter() - start
    stats = list(getattr(scheduled, 'statistics', []))
    summary = scheduled.summary() if hasattr(scheduled, 'summary') else {}
    pruned = finalize(scheduled)
    _logger.info('%s pruning done in %.1f s (%d steps)', method, seconds, max_steps)
    return PruneResult(pruned, {k: dict(v) for k, v in masks.items()}, stats, summary, seconds)
