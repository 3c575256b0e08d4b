"""Pruning methods by name (natural, adversarial, bap) and a one-call ``prune`` used by the CLI and tests."""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import Dataset

from nni.compression.pruning import AGPPruner, FPGMPruner, L1NormPruner, L2NormPruner, LevelPruner, LinearPruner

from .channel_mask import install_channel_masks
from .checkpoint import Checkpointer, signature
from .compat import check_selects_layers, finalize, nni_config_error, nni_config_list
from .config import STRUCTURED, ConfigError
from .device import model_device
from .distributed import train_loader, world_size
from .errors import SparsityError
from .pruner import AdversarialPruner, BAPPruner
from .training import check_finite_weights, make_evaluator

__all__ = ['BASE_PRUNERS', 'METHODS', 'PruneResult', 'check_config_list', 'check_sparsity', 'prune']

_logger = logging.getLogger(__name__)

#: Base (scoring) pruner name -> NNI class (names: :data:`nni_bap.config.BASE_PRUNER_NAMES`).
BASE_PRUNERS = {'level': LevelPruner, 'l1': L1NormPruner, 'l2': L2NormPruner, 'fpgm': FPGMPruner}

#: Method name -> scheduled pruner class. ``natural`` is NNI's own AGP/Linear pruner.
METHODS = {'natural': AGPPruner, 'adversarial': AdversarialPruner, 'bap': BAPPruner}

_NATURAL = {'agp': AGPPruner, 'linear': LinearPruner}
#: Largest allowed difference between a layer's measured and target sparsity, beyond one pruning unit.
SPARSITY_TOLERANCE = 0.01


@dataclass
class PruneResult:
    """A finished pruning run: plain model with zeros baked in, masks, statistics, wall time."""

    model: nn.Module
    masks: Dict[str, Dict[str, Optional[torch.Tensor]]]
    statistics: List[Dict[str, float]] = field(default_factory=list)
    summary: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    sparsity: Dict[str, float] = field(default_factory=dict)
    #: Epochs done in the checkpoint the run resumed from (``None``: it ran from the beginning).
    resumed_from: Optional[int] = None


def _targets(pruner) -> Dict[str, Tuple]:
    """Layer name -> (target sparsity, granularity, global group id or None) of every weight NNI masks."""
    return {name: (float(ts['weight'].sparse_ratio), str(ts['weight'].granularity), ts['weight'].global_group_id)
            for name, ts in pruner._target_spaces.items() if 'weight' in ts}


def _measured(mask, granularity: str) -> Tuple[float, float, float]:
    """(zeros, elements, pruning units) of one weight mask (a missing mask has no zeros)."""
    if mask is None:
        return 0.0, 0.0, 1.0
    n = float(mask.numel())
    return float((mask == 0).sum()), n, float(mask.shape[0] if 'channel' in granularity else n)


def check_sparsity(masks, targets: Dict[str, Tuple], tolerance: float = SPARSITY_TOLERANCE) -> Dict[str, float]:
    """Measured sparsity of every masked weight, or of every global group (``global_group_id``), against its target.

    A layer (a group) may miss its target by ``tolerance`` plus one pruning unit (one output channel for
    channel pruning, one weight otherwise). Returns ``{'target': ..., 'measured': ...}`` over all
    weights; raises :class:`~nni_bap.errors.SparsityError` naming the first layer or group that misses.
    """
    checks: Dict[str, list] = {}  # what is checked -> [zeros, elements, units, target]
    zeros = total = expected = 0.0
    for name, (ratio, granularity, *group) in sorted(targets.items()):
        z, n, units = _measured((masks.get(name) or {}).get('weight'), granularity)
        key = f'global group {group[0]}' if group and group[0] is not None else f'layer {name}'
        c = checks.setdefault(key, [0.0, 0.0, 0.0, ratio])
        c[0], c[1], c[2] = c[0] + z, c[1] + n, c[2] + units
        zeros, total, expected = zeros + z, total + n, expected + ratio * n
    for key, (z, n, units, ratio) in checks.items():
        got = z / n if n else 0.0
        if abs(got - ratio) > tolerance + 1.0 / max(units, 1.0):
            raise SparsityError(f'{key} reached sparsity {got:.3f}, target {ratio:.3f}: the schedule did not '
                                'finish (more epochs or a larger schedule_fraction) or the pruner cannot reach it')
    return {'target': expected / total if total else 0.0, 'measured': zeros / total if total else 0.0}


def _scheduled(method: str, base, interval_steps: int, total_times: int, schedule: str, args: Dict[str, Any]):
    if method == 'natural':
        if args:
            raise ConfigError(f'natural pruning takes no method settings, got {sorted(args)}')
        return _NATURAL[schedule](base, interval_steps, total_times)
    return METHODS[method](base, interval_steps, total_times, schedule=schedule, **args)


def _base_pruner(name: str, model: nn.Module, config_list, evaluator):
    try:
        base = BASE_PRUNERS[name](model, nni_config_list(config_list), evaluator=evaluator)
    except Exception as exc:  # NNI validates config_list with `schema`, and fails on unknown names with KeyError
        raise ConfigError(f'NNI rejects config_list: {nni_config_error(exc)}') from exc
    check_selects_layers(base, config_list)
    return base


def check_config_list(model: nn.Module, config_list: List[Dict[str, Any]], base_pruner: str) -> List[str]:
    """Build the base pruner on ``model`` (a throwaway copy: NNI wraps it) to check ``config_list`` before any
    training; the names of the layers it selects, else :class:`ConfigError` / :class:`NNIUsageError`."""
    return check_selects_layers(_base_pruner(base_pruner, copy.deepcopy(model), config_list, None), config_list)


def _schedule_steps(batches: int, epochs: int, interval_steps: Optional[int], total_times: int,
                    schedule_fraction: float) -> Tuple[int, int]:
    """(interval steps, max steps): by default the schedule spans ``schedule_fraction`` of training."""
    max_steps = epochs * batches
    if interval_steps is None:
        interval_steps = max(1, int(max_steps * schedule_fraction) // total_times)
    return interval_steps, max(max_steps, interval_steps * total_times)


def _compress(scheduled, model: nn.Module, structured: bool, max_steps: int):
    """Run the schedule; masks. Channel pruning masks the BatchNorm channels after each removed conv channel too
    (sped-up == masked)."""
    handle = install_channel_masks(model) if structured else None
    try:
        _, masks = scheduled.compress(max_steps=max_steps, max_epochs=None)
    except BaseException:
        if handle:
            handle.remove(bake=False)
        raise
    if handle:
        handle.remove()
    return masks


def prune(model: nn.Module, dataset: Dataset, config_list: List[Dict[str, Any]], method: str = 'bap',
          method_args: Optional[Dict[str, Any]] = None, base_pruner: str = 'level', schedule: str = 'agp',
          epochs: int = 5, interval_steps: Optional[int] = None, total_times: int = 10, schedule_fraction: float = 0.7,
          batch_size: int = 64, lr: float = 1e-3, seed: int = 0, progress: bool = True,
          copy_model: bool = True, device: Optional[Union[str, torch.device]] = None,
          checkpoint: Optional[Union[str, Path]] = None, resume: bool = False,
          on_epoch_end: Optional[Callable[[int, int], None]] = None) -> PruneResult:
    """Prune ``model`` gradually while training on ``dataset``; check that the target sparsity is reached.

    Parameters
    ----------
    model
        Dense model (copied unless ``copy_model=False``).
    dataset
        Training set of ``(inputs, labels)``.
    config_list
        NNI's config list, as is (``exclude: true`` entries included). It must select at least one layer.
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
    batch_size
        Per process: in several processes (:mod:`nni_bap.distributed`) the global batch is N x ``batch_size``.
    device
        Where to train (the model is moved there; batches follow); ``None``: the model's device.
    checkpoint
        File written (atomically, by rank 0) at the end of every epoch: weights, masks, optimizer, the
        schedule's progress, random states (:mod:`nni_bap.checkpoint`).
    resume
        Continue from ``checkpoint`` when it exists; it must come from a run with the same settings and the same
        starting weights (:class:`~nni_bap.checkpoint.CheckpointError` otherwise).
    on_epoch_end
        ``f(epochs done, steps done)`` after every complete epoch, once its checkpoint is written; raising
        stops the run.

    Raises
    ------
    ConfigError
        Unknown names, or a config_list NNI rejects. :class:`~nni_bap.compat.NNIUsageError` when it selects
        no layer; :class:`~nni_bap.errors.SparsityError` when the final sparsity misses the target;
        :class:`~nni_bap.errors.DivergenceError` on a non-finite loss.
    """
    if method not in METHODS:
        raise ConfigError(f'unknown method {method!r}; choose one of {sorted(METHODS)}')
    if base_pruner not in BASE_PRUNERS:
        raise ConfigError(f'unknown base pruner {base_pruner!r}; choose one of {sorted(BASE_PRUNERS)}')
    torch.manual_seed(seed)
    model = copy.deepcopy(model) if copy_model else model
    model.to(device if device is not None else model_device(model))
    loader = train_loader(dataset, batch_size, seed)
    interval_steps, max_steps = _schedule_steps(len(loader), epochs, interval_steps, total_times, schedule_fraction)
    settings = dict(method=method, method_args=method_args, base_pruner=base_pruner, schedule=schedule,
                    epochs=epochs, interval_steps=interval_steps, total_times=total_times, max_steps=max_steps,
                    batch_size=batch_size, lr=lr, seed=seed, config_list=config_list, samples=len(dataset),
                    processes=world_size())
    ckpt = Checkpointer(checkpoint, signature(settings, model) if checkpoint else '', resume, on_epoch_end).prepare()
    evaluator = make_evaluator(model, loader, lr=lr, progress=progress, desc=method, on_train_begin=ckpt.begin,
                               on_epoch_end=ckpt.end)
    base = _base_pruner(base_pruner, model, config_list, evaluator)
    targets = _targets(base)
    scheduled = _scheduled(method, base, interval_steps, total_times, schedule, dict(method_args or {}))
    ckpt.bind(scheduled, loader)
    start = time.perf_counter()
    masks = _compress(scheduled, model, base_pruner in STRUCTURED, max_steps)
    seconds = time.perf_counter() - start + ckpt.seconds_before
    sparsity = check_sparsity(masks, targets)
    stats = list(getattr(scheduled, 'statistics', []))
    summary = scheduled.summary() if hasattr(scheduled, 'summary') else {}
    pruned = finalize(scheduled)
    check_finite_weights(pruned, f'{method} pruning')
    _logger.info('%s pruning done in %.1f s (%d steps), sparsity %.4f (target %.4f)', method, seconds, max_steps,
                 sparsity['measured'], sparsity['target'])
    return PruneResult(pruned, {k: dict(v) for k, v in masks.items()}, stats, summary, seconds, sparsity,
                       ckpt.resumed_from)
