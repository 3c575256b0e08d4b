"""Checkpoints of a pruning run at epoch ends, and resuming from one.

NNI's scheduled pruners run the whole training inside one ``compress()`` call through the evaluator's
training function, so the checkpoint is taken there (:func:`nni_bap.pruning.training.make_training_func`'s hooks).
``checkpoint.pt`` holds everything the rest of the run depends on:

- the NNI-wrapped model's state: weights, masks (buffers of NNI's wrappers), other buffers;
- the optimizer's (and learning-rate schedulers') state;
- the schedule's progress: the step counters NNI's optimizer-step hooks keep in the scheduled pruner
  (``_current_step``, ``_remaining_times``) and in its base pruner (also ``_is_first_step``), and the sparsity
  goals set so far in the target spaces; the pruner's per-step ``statistics``; the AE generator's warm starts;
- the random number generators: torch (CPU and CUDA), Python, numpy, and the data loader's generator;
- epochs and steps done, seconds spent, and a signature of the run's settings and starting weights.

On resume NNI first sets its hooks up afresh (counters at zero, goals at the start); the checkpoint then
overwrites all of it before the first step, and training continues with the next epoch. On the CPU with the
same thread count a resumed run ends bit-identical to an uninterrupted one (tested). Only rank 0 writes
(``atomic``: a kill leaves the previous checkpoint whole); every process reads it on resume.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import CheckpointError, brief
from ..utils.atomic import atomic_write, ordered
from ..utils.device import model_device
from ..utils.distributed import is_main

__all__ = ['CHECKPOINT', 'Checkpointer', 'check_state', 'data_digest', 'pruner_state', 'restore_pruner_state',
           'restore_rng_state', 'rng_state', 'signature']

_logger = logging.getLogger(__name__)

#: File name of the checkpoint in a run folder.
CHECKPOINT = 'checkpoint.pt'
_COUNTERS = ('_current_step', '_remaining_times', '_is_first_step')
_FORMAT = 1


def signature(settings: Dict[str, Any], model: nn.Module) -> str:
    """Hash of a run's settings (JSON-able, others by ``repr``) and of ``model``'s starting state."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=repr).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def data_digest(dataset) -> str:
    """Hash of a training set's content (the tensors of a ``TensorDataset``; else its length): part of a run's
    :func:`signature`, so that a checkpoint is never resumed on other data of the same size."""
    tensors = getattr(dataset, 'tensors', None)
    if not isinstance(tensors, tuple) or not all(isinstance(t, torch.Tensor) for t in tensors):
        return f'{type(dataset).__name__} of {len(dataset)} samples'
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


#: What every checkpoint holds: key -> (what it must be, check).
_SHAPE = {
    'epoch': ('an integer >= 0', lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    'step': ('an integer >= 0', lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    'seconds': ('a number', lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    'model': ('a dict of tensors', lambda v: isinstance(v, dict) and all(isinstance(t, torch.Tensor)
                                                                         for t in v.values())),
    'optimizers': ('a list of state dicts', lambda v: isinstance(v, list) and all(isinstance(o, dict) for o in v)),
    'lr_schedulers': ('a list of state dicts or null', lambda v: v is None or (isinstance(v, list) and all(
        isinstance(o, dict) for o in v))),
    'pruner': ('a dict of counters, goals, statistics and warm starts', lambda v: isinstance(v, dict) and isinstance(
        v.get('counters'), dict) and isinstance(v.get('goals'), dict) and isinstance(v.get('statistics'), list)
        and (v.get('warm') is None or isinstance(v.get('warm'), torch.Tensor))),
    'rng': ('a dict of random states', lambda v: isinstance(v, dict) and isinstance(v.get('torch'), torch.Tensor)
            and isinstance(v.get('python'), tuple) and isinstance(v.get('numpy'), tuple) and len(v['numpy']) == 5),
}


def check_state(path: Path, state: Dict[str, Any]) -> None:
    """:class:`CheckpointError` naming the first key of a checkpoint that is missing or not what it must be."""
    for key, (what, ok) in _SHAPE.items():
        if key not in state:
            raise CheckpointError(f'{path} has no {key!r}: damaged or not written by bap; delete it to start again')
        if not ok(state[key]):
            raise CheckpointError(f'{path}: {key!r} must be {what}, got {brief(state[key], 80)}; delete it to start '
                                  'again')


def _each(objs) -> list:
    return [] if objs is None else list(objs) if isinstance(objs, (list, tuple)) else [objs]


def pruner_state(scheduled) -> Dict[str, Any]:
    """The schedule's progress in an NNI scheduled pruner (counters, current goals, statistics, warm starts)."""
    parts = {'scheduled': scheduled, 'bound': getattr(scheduled, 'bound_pruner', None)}
    counters = {k: {a: getattr(p, a) for a in _COUNTERS if hasattr(p, a)} for k, p in parts.items() if p is not None}
    goals = {m: {t: {key: getattr(scheduled._target_spaces[m][t], key) for key in keys} for t, keys in tg.items()}
             for m, tg in getattr(scheduled, 'sparse_goals', {}).items()}
    warm = getattr(getattr(scheduled, 'generator', None), 'warm', None)
    return {'counters': counters, 'goals': goals, 'statistics': list(getattr(scheduled, 'statistics', [])),
            'warm': getattr(warm, 'eta', None)}


def restore_pruner_state(scheduled, state: Dict[str, Any], device: Optional[torch.device] = None) -> None:
    """Put :func:`pruner_state`'s result back (after NNI set its hooks up for a fresh run); tensors to ``device``."""
    parts = {'scheduled': scheduled, 'bound': getattr(scheduled, 'bound_pruner', None)}
    for key, values in state['counters'].items():
        for attr, value in values.items():
            if attr not in _COUNTERS:  # a checkpoint sets NNI's step counters, nothing else
                raise KeyError(f'counter {attr!r}')
            setattr(parts[key], attr, value)
    live = getattr(scheduled, 'sparse_goals', {})
    for m, tg in state['goals'].items():
        for t, goals in tg.items():
            for key, value in goals.items():
                if key not in live[m][t]:
                    raise KeyError(f'goal {key!r} of {m}.{t}')
                setattr(scheduled._target_spaces[m][t], key, value)
    if hasattr(scheduled, 'statistics'):
        scheduled.statistics = list(state['statistics'])
    warm = getattr(getattr(scheduled, 'generator', None), 'warm', None)
    if warm is not None:
        warm.eta = state['warm'].to(device) if state['warm'] is not None and device is not None else state['warm']


def rng_state(loader: Optional[DataLoader] = None) -> Dict[str, Any]:
    """Every random number generator a training run draws from, the loader's included."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {'torch': torch.get_rng_state(), 'python': random.getstate(),
             'numpy': (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
             'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
             'loader': loader.generator.get_state() if loader is not None and loader.generator is not None else None}
    return state


def restore_rng_state(state: Dict[str, Any], loader: Optional[DataLoader] = None) -> None:
    """Put :func:`rng_state`'s result back."""
    torch.set_rng_state(state['torch'])
    random.setstate(state['python'])
    kind, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if state['cuda'] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    if state['loader'] is not None and loader is not None and loader.generator is not None:
        loader.generator.set_state(state['loader'])


def _states(objs) -> Optional[list]:
    return None if objs is None else [o.state_dict() for o in _each(objs)]


def _load_states(objs, states: Optional[list]) -> None:
    objs = _each(objs)
    if len(objs) != len(states or []):
        raise ValueError(f'{len(states or [])} states for {len(objs)} objects')
    for o, s in zip(objs, states or []):
        o.load_state_dict(s)


class Checkpointer:
    """The training function's hooks that write ``checkpoint.pt`` at epoch ends and resume from it.

    Parameters
    ----------
    path
        The checkpoint file, or ``None``: no checkpoint (``on_epoch_end`` is still called).
    signature
        What the run must match to resume (:func:`signature` of its settings and starting weights).
    resume
        Continue from ``path`` when it exists (otherwise start from the beginning, and say so).
    on_epoch_end
        ``f(epochs done, steps done)``, called on every process after the checkpoint of that epoch is written;
        it may raise to stop the run (the checkpoint stays).
    """

    def __init__(self, path: Optional[Path], signature: str = '', resume: bool = False,
                 on_epoch_end: Optional[Callable[[int, int], None]] = None):
        self.path = Path(path) if path is not None else None
        self.signature, self.resume, self.callback = signature, bool(resume), on_epoch_end
        self.scheduled, self.loader = None, None
        self.resumed_from: Optional[int] = None
        self.seconds_before, self._start = 0.0, time.perf_counter()
        self._pending: Optional[Dict[str, Any]] = None
        self._prepared = False

    def bind(self, scheduled, loader: DataLoader) -> 'Checkpointer':
        """The scheduled pruner and the training loader whose state the checkpoint holds."""
        self.scheduled, self.loader = scheduled, loader
        return self

    @property
    def seconds(self) -> float:
        """Training seconds so far, those before the resume included."""
        return self.seconds_before + time.perf_counter() - self._start

    def prepare(self) -> 'Checkpointer':
        """Read and check the checkpoint to resume from now, before any work (:meth:`load`)."""
        self._pending, self._prepared = self.load(), True
        return self

    def load(self) -> Optional[Dict[str, Any]]:
        """The checkpoint to resume from, on the CPU (``None``: start from the beginning);
        :class:`CheckpointError` when it is damaged or was written by another run."""
        if self.path is not None and not self.resume and self.path.is_file() and is_main():
            _logger.info('%s is there but not resuming: starting from the beginning (it will be overwritten)',
                         self.path)
        if not self.resume or self.path is None:
            return None
        if not self.path.is_file():
            _logger.info('no %s: starting from the beginning', self.path)
            return None
        try:
            state = torch.load(self.path, map_location='cpu', weights_only=True)
        except Exception as exc:  # torch raises many types for damaged files
            raise CheckpointError(f'{self.path} is damaged: {str(exc).splitlines()[0]}; delete it to start '
                                  'again') from None
        if not isinstance(state, dict) or state.get('format') != _FORMAT:
            raise CheckpointError(f'{self.path} was not written by this version of bap; delete it to start again')
        if state.get('signature') != self.signature:
            raise CheckpointError(f'{self.path} was written by another run (settings, data, process count or '
                                  'starting weights differ); delete it or run without --resume')
        check_state(self.path, state)
        return state

    def begin(self, model: nn.Module, optimizers, lr_schedulers=None) -> Tuple[int, int]:
        """Restore the checkpoint, if resuming from one; (epochs done, steps done)."""
        state = self._pending if self._prepared else self.load()
        self._pending, self._prepared, self._start = None, False, time.perf_counter()
        if state is None:
            return 0, 0
        steps = (('model', lambda: model.load_state_dict(state['model'])),
                 ('optimizers', lambda: _load_states(optimizers, state['optimizers'])),
                 ('lr_schedulers', lambda: _load_states(lr_schedulers, state['lr_schedulers'])),
                 ('pruner', lambda: restore_pruner_state(self.scheduled, state['pruner'], model_device(model))),
                 ('rng', lambda: restore_rng_state(state['rng'], self.loader)))
        for key, restore in steps:
            try:
                restore()
            except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
                raise CheckpointError(f'{self.path}: its {key!r} does not fit this run '
                                      f'({" ".join(str(exc).split())[:200]}); delete it to start again') from None
        self.resumed_from, self.seconds_before = int(state['epoch']), float(state['seconds'])
        _logger.info('resuming from %s: epoch %d done, step %d', self.path, state['epoch'], state['step'])
        return int(state['epoch']), int(state['step'])

    def end(self, epoch: int, step: int, model: nn.Module, optimizers, lr_schedulers=None) -> None:
        """Write the checkpoint of ``epoch`` (rank 0), then call ``on_epoch_end``."""
        if self.path is not None and is_main():
            state = {'format': _FORMAT, 'signature': self.signature, 'epoch': epoch, 'step': step,
                     'seconds': self.seconds, 'model': model.state_dict(), 'optimizers': _states(optimizers),
                     'lr_schedulers': _states(lr_schedulers), 'pruner': pruner_state(self.scheduled),
                     'rng': rng_state(self.loader)}
            state = ordered(state)  # sorted dicts: the same run writes the same bytes
            atomic_write(self.path, lambda fh: torch.save(state, fh))
            _logger.debug('checkpoint of epoch %d (step %d) written to %s', epoch, step, self.path)
        if self.callback is not None:
            self.callback(epoch, step)
