"""``prune``: one call that builds the base pruner and the scheduled pruner of a method by name, trains while
pruning, checks the sparsity reached and returns the plain pruned model (used by the CLI, the examples and tests)."""
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

from ..errors import ConfigError
from ..utils.device import model_device
from ..utils.distributed import train_loader, world_size
from .channel_mask import install_channel_masks
from .checkpoint import Checkpointer, data_digest, signature
from .compat import (
    check_selects_layers,
    finalize,
    nni_config_error,
    nni_config_list,
    nni_pruning,
)
from .methods import BASE_PRUNERS, METHODS, SCHEDULES, parse_method
from .pruner import pruner_class
from .sparsity import check_sparsity, targets
from .training import check_finite_weights, make_evaluator

__all__ = ['PruneResult', 'check_config_list', 'prune']

_logger = logging.getLogger(__name__)


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


def _scheduled(family: str, base, interval_steps: int, total_times: int, schedule: str, args: Dict[str, Any]):
    """The scheduled pruner of a method family around ``base``: natural pruning is NNI's own pruner of the schedule."""
    generator = METHODS.entry(family).obj
    if generator is None:
        if args:
            raise ConfigError(f'natural pruning takes no method settings, got {sorted(args)}')
        nni_pruner = getattr(nni_pruning, SCHEDULES.entry(schedule).nni_pruner)
        return nni_pruner(base, interval_steps, total_times)
    # the evaluator's training loop shows the progress bar (make_evaluator)
    return pruner_class(generator)(base, interval_steps, total_times, schedule=schedule, progress=False, **args)


def _base_pruner(name: str, model: nn.Module, config_list, evaluator):
    factory = BASE_PRUNERS.entry(name).obj
    try:
        base = factory(model, nni_config_list(config_list), evaluator=evaluator)
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
    (sped-up == masked): our scheduled pruners do it themselves, NNI's natural ones are given the hooks here."""
    own = getattr(scheduled, 'masks_batchnorm', False)
    handle = install_channel_masks(model) if structured and not own else None
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
        A registered method (:data:`~nni_bap.pruning.registry.METHODS`: ``'natural'``, ``'adversarial'``,
        ``'bap'``), optionally with a suffix or as a preset name (``'adversarial-pgd0.1'``, ``'bap-s1.1'``).
    method_args
        Keyword settings of the method's pruner (``eps``, ``attack``, ``cutoff``, ``scale``...); they win over
        the method name's.
    base_pruner
        Scoring pruner (:data:`~nni_bap.pruning.registry.BASE_PRUNERS`).
    schedule
        ``'agp'`` or ``'linear'``.
    epochs
        Training epochs in total (pruning plus fine-tuning).
    interval_steps
        Steps between sparsity updates; by default the schedule spans ``schedule_fraction`` of training.
    total_times
        Number of sparsity updates.
    batch_size
        Per process: in several processes (:mod:`nni_bap.utils.distributed`) the global batch is N x ``batch_size``.
    device
        Where to train (the model is moved there; batches follow); ``None``: the model's device.
    checkpoint
        File written (atomically, by rank 0) at the end of every epoch: weights, masks, optimizer, the
        schedule's progress, random states (:mod:`nni_bap.pruning.checkpoint`).
    resume
        Continue from ``checkpoint`` when it exists; it must come from a run with the same settings and the same
        starting weights (:class:`~nni_bap.pruning.checkpoint.CheckpointError` otherwise).
    on_epoch_end
        ``f(epochs done, steps done)`` after every complete epoch, once its checkpoint is written; raising
        stops the run.

    Raises
    ------
    ConfigError
        Unknown names, or a config_list NNI rejects. :class:`~nni_bap.pruning.compat.NNIUsageError` when it selects
        no layer; :class:`~nni_bap.errors.SparsityError` when the final sparsity misses the target;
        :class:`~nni_bap.errors.DivergenceError` on a non-finite loss.
    """
    family, named = parse_method(method)
    method_args = {**named, **(method_args or {})}
    structured = BASE_PRUNERS.entry(base_pruner).structured
    torch.manual_seed(seed)
    model = copy.deepcopy(model) if copy_model else model
    model.to(device if device is not None else model_device(model))
    loader = train_loader(dataset, batch_size, seed)
    interval_steps, max_steps = _schedule_steps(len(loader), epochs, interval_steps, total_times, schedule_fraction)
    settings = dict(method=method, method_args=method_args, base_pruner=base_pruner, schedule=schedule,
                    epochs=epochs, interval_steps=interval_steps, total_times=total_times, max_steps=max_steps,
                    batch_size=batch_size, lr=lr, seed=seed, config_list=config_list, samples=len(dataset),
                    data=data_digest(dataset) if checkpoint else None, processes=world_size())
    ckpt = Checkpointer(checkpoint, signature(settings, model) if checkpoint else '', resume, on_epoch_end).prepare()
    evaluator = make_evaluator(model, loader, lr=lr, progress=progress, desc=method, on_train_begin=ckpt.begin,
                               on_epoch_end=ckpt.end)
    base = _base_pruner(base_pruner, model, config_list, evaluator)
    goals = targets(base)
    scheduled = _scheduled(family, base, interval_steps, total_times, schedule, method_args)
    ckpt.bind(scheduled, loader)
    start = time.perf_counter()
    masks = _compress(scheduled, model, structured, max_steps)
    seconds = time.perf_counter() - start + ckpt.seconds_before
    sparsity = check_sparsity(masks, goals)
    stats = list(getattr(scheduled, 'statistics', []))
    summary = scheduled.summary() if hasattr(scheduled, 'summary') else {}
    pruned = finalize(scheduled)
    check_finite_weights(pruned, f'{method} pruning')
    _logger.info('%s pruning done in %.1f s (%d steps), sparsity %.4f (target %.4f)', method, seconds, max_steps,
                 sparsity['measured'], sparsity['target'])
    return PruneResult(pruned, {k: dict(v) for k, v in masks.items()}, stats, summary, seconds, sparsity,
                       ckpt.resumed_from)
