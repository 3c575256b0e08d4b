"""Every workaround for NNI 3.0 on torch 2.13 lives here, each found by a test.

- **Evaluator on the scheduler.** ``AGPPruner(LevelPruner(m, cfg), i, t, evaluator)`` makes
  NNI rebuild the training optimizer with zero parameters: compress "trains" and nothing
  changes. :func:`check_evaluator_placement` refuses that combination and
  :func:`check_optimizers_have_params` refuses any empty optimizer at training time.
- **unwrap restores dense weights.** NNI applies masks in the wrapper's forward and keeps the
  dense weights underneath; ``unwrap_model()`` puts them back. :func:`finalize` bakes the masks
  into the weights first; :func:`apply_masks` does the same for a plain model and a masks dict.
- **ModelSpeedup's tracer.** Its default ``concrete_trace`` crashes on torch 2.13; we pass
  ``graph_module=torch.fx.symbolic_trace(model)`` (:func:`symbolic_trace`).
- **Dependency groups** (``auto_set_denpendency_group_ids``) import tensorboard; it is a
  declared dependency so that import succeeds.
- **deepcopy of a wrapped model** right after ``compress`` can fail ("Only Tensors created
  explicitly by the user support the deepcopy protocol"): call :func:`finalize` first.
- **Scheduled pruners** subclass NNI's private ``_ComboPruner``; it is imported only here.
- **``exclude: true`` entries.** NNI 3.0 translates them only when the *first* entry of the list is
  in its legacy format; after a current-format entry (``sparse_ratio``) its schema rejects them.
  :func:`nni_config_list` does the translation itself (into ``exclude_op_*`` keys on every entry).
- **A config_list that selects nothing** builds a pruner with no target at all, and compress then
  trains an unpruned model without a word: :func:`check_selects_layers` refuses it.
- **Schema errors** (``schema.SchemaError``) are dozens of lines long: :func:`nni_config_error` keeps
  the first line.
- **NNI's console output.** NNI's ``nni`` logger writes coloured lines to the ``sys.stdout`` of the moment it was
  imported, ModelSpeedup logs every replaced module and warns "both dim0 and dim1 masks found", and its channel
  dependency detection ``print``\ s; torch warns during the tracing. :func:`nni_output_to_log` sends all of it
  (records, prints, warnings) to one of our loggers at DEBUG while it runs.
- **Import-time warnings.** Importing NNI's compression package registers torch pytree nodes with calls torch
  2.13 deprecates (FutureWarning, UserWarning on every process start). Every NNI name the package uses is
  imported here, once, with those warnings silenced; the other modules import them from here.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import warnings
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch import nn

with warnings.catch_warnings():  # NNI's import registers torch pytree nodes with deprecated calls
    warnings.simplefilter('ignore')
    import nni
    import nni.compression.pruning as nni_pruning
    from nni.compression.base.compressor import Pruner
    from nni.compression.pruning.scheduled_pruner import _ComboPruner as ComboPruner
    from nni.compression.speedup import ModelSpeedup
    from nni.compression.speedup.dependency import (
        CALL_FUNCTION_REDUCE,
        CALL_METHOD_REDUCE,
        auto_set_denpendency_group_ids,
    )
    from nni.compression.utils import Evaluator, TorchEvaluator

from ..errors import NNIUsageError

__all__ = ['CALL_FUNCTION_REDUCE', 'CALL_METHOD_REDUCE', 'ComboPruner', 'Evaluator', 'ModelSpeedup', 'Pruner',
           'TorchEvaluator', 'apply_masks', 'auto_set_denpendency_group_ids', 'check_evaluator_placement',
           'check_optimizers_have_params', 'check_selects_layers', 'finalize', 'is_wrapped', 'nni', 'nni_config_error',
           'nni_config_list', 'nni_output_to_log', 'nni_pruning', 'symbolic_trace']


def check_evaluator_placement(pruner: Pruner, evaluator) -> None:
    """Refuse an evaluator given to the scheduler instead of the base pruner."""
    if pruner.evaluator is None:
        if evaluator is not None:
            raise NNIUsageError(
                'Give the evaluator to the base pruner, not to the scheduled pruner: '
                f'{type(pruner).__name__}(model, config_list, evaluator=evaluator). '
                'NNI 3.0 would otherwise rebuild an optimizer with zero parameters and nothing would train.')
        raise NNIUsageError(f'The base pruner {type(pruner).__name__} has no evaluator; construct it with '
                            'evaluator=TorchEvaluator(...) so the model can be trained while it is pruned.')


def check_optimizers_have_params(evaluator) -> None:
    """Raise if any optimizer NNI rebuilt for training holds no parameter."""
    for opt in getattr(evaluator, '_optimizers', None) or []:
        if sum(len(g['params']) for g in opt.param_groups) == 0:
            raise NNIUsageError('NNI rebuilt an optimizer with zero parameters: nothing would train. '
                                'Pass the evaluator to the base pruner.')


def is_wrapped(model: nn.Module) -> bool:
    """Whether NNI wrappers are attached to some module of ``model``."""
    return any(hasattr(m, '_nni_wrapper') for m in model.modules())


@torch.no_grad()
def _bake_wrappers(model: nn.Module) -> None:
    for module in model.modules():
        wrapper = getattr(module, '_nni_wrapper', None)
        if wrapper is None:
            continue
        for space in wrapper.pruning_target_spaces.values():
            target = space.target
            if space.mask is not None and isinstance(target, torch.Tensor) and target.shape == space.mask.shape:
                target.mul_(space.mask.to(target.dtype))


def finalize(pruner: Pruner) -> nn.Module:
    """Bake the pruner's masks into the weights, unwrap the model and return it.

    After this the model is a plain ``nn.Module`` whose pruned weights are zeros, safe to
    save, evaluate or export. Calling it twice is harmless.
    """
    model = pruner.bound_model
    if is_wrapped(model):
        _bake_wrappers(model)
        pruner.unwrap_model()
    return model


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Dict[str, Dict[str, Optional[torch.Tensor]]]) -> nn.Module:
    """Multiply the weights of a plain (or NNI-wrapped) model by NNI-format masks, in place.

    Parameters
    ----------
    model
        The model; NNI wrappers, if any, have their masks baked in and stay attached.
    masks
        ``{module_name: {target_name: mask}}`` as returned by ``pruner.compress()``.
    """
    if is_wrapped(model):
        _bake_wrappers(model)
        return model
    modules = dict(model.named_modules())
    for name, targets in masks.items():
        if name not in modules:
            raise KeyError(f'mask for unknown module {name!r}')
        for target_name, mask in targets.items():
            param = getattr(modules[name], target_name, None)
            if mask is None or param is None:
                continue
            if param.shape != mask.shape:
                raise ValueError(f'mask {name}.{target_name} has shape {tuple(mask.shape)}, weight {tuple(param.shape)}')
            param.mul_(mask.to(param.device, param.dtype))
    return model


def symbolic_trace(model: nn.Module) -> torch.fx.GraphModule:
    """The graph module ``ModelSpeedup`` needs (its own concrete tracer crashes on torch 2.13)."""
    return torch.fx.symbolic_trace(model)


def nni_config_list(config_list: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """A copy of ``config_list`` NNI 3.0 accepts: ``exclude: true`` entries become ``exclude_op_*`` keys."""
    keep, excluded = [], {'op_names': set(), 'op_types': set(), 'op_names_re': set()}
    for entry in copy.deepcopy(config_list):
        if entry.get('exclude') is True:
            for key, names in excluded.items():
                names.update(entry.get(key) or [])
        else:
            keep.append(entry)
    for entry in keep:
        for key, names in excluded.items():
            if names:
                entry[f'exclude_{key}'] = sorted(set(entry.get(f'exclude_{key}') or []) | names)
    return keep


def check_selects_layers(pruner: Pruner, config_list: List[Dict[str, Any]]) -> List[str]:
    """Names of the layers ``pruner`` masks; :class:`NNIUsageError` when ``config_list`` selects none."""
    names = sorted(pruner._target_spaces)
    if not names:
        raise NNIUsageError(f'config_list selects no layer of the model: {config_list}')
    return names


def nni_config_error(exc: Exception) -> str:
    """The first lines of an NNI config error (schema errors run to dozens of lines), or its type and text."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if type(exc).__module__.split('.')[0] != 'schema':
        return f'{type(exc).__name__} {lines[0] if lines else ""}'.strip()
    return ': '.join(lines[:2]) if lines else type(exc).__name__


_ANSI = re.compile(r'\x1b\[[0-9;]*m|\$\{[A-Z_]+\}')


class _ToLogger(logging.Handler):
    """Re-emits every record at DEBUG on ``target``, colour codes stripped."""

    def __init__(self, target: logging.Logger):
        super().__init__(logging.DEBUG)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.debug('%s: %s', record.name, _ANSI.sub('', record.getMessage()))


@contextlib.contextmanager
def nni_output_to_log(target: logging.Logger) -> Iterator[None]:
    """While the block runs, everything NNI (and torch under it) would show the user goes to ``target`` at DEBUG.

    That is: records of the ``nni`` logger tree (whose own handler writes coloured lines to the ``sys.stdout`` of
    import time, so ``redirect_stdout`` alone does not catch them), anything printed to ``sys.stdout`` or
    ``sys.stderr``, and warnings raised. The ``nni`` logger's handlers and propagation are restored afterwards,
    also on an exception (which propagates unchanged).
    """
    nni_logger = logging.getLogger('nni')
    handlers, propagate = list(nni_logger.handlers), nni_logger.propagate
    for h in handlers:
        nni_logger.removeHandler(h)
    forward = _ToLogger(target)
    nni_logger.addHandler(forward)
    nni_logger.propagate = False
    out = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(out):
            warnings.simplefilter('always')
            yield
    finally:
        nni_logger.removeHandler(forward)
        for h in handlers:
            nni_logger.addHandler(h)
        nni_logger.propagate = propagate
        for line in out.getvalue().splitlines():
            if line.strip():
                target.debug('printed: %s', _ANSI.sub('', line.strip()))
        for w in caught:
            target.debug('warning: %s: %s', w.category.__name__, w.message)
