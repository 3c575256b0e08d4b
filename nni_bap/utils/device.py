"""Where a run computes: the ``device`` setting resolved to a ``torch.device``, and batches moved onto it.

``'auto'`` is CUDA when torch sees a GPU, else the CPU. A process started by ``torchrun`` takes the GPU of its
``LOCAL_RANK`` (``'auto'`` or ``'cuda'``); naming one GPU (``'cuda:1'``) for several processes is refused, as is
a CUDA device this torch build or machine does not have. The syntax is checked with the config
(:data:`DEVICE_PATTERN`); availability here, before any work.
"""
from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ['DEVICE_PATTERN', 'model_device', 'resolve_device', 'to_device']

#: Device names a config (or ``--device``) may give; whether CUDA is there is checked by :func:`resolve_device`.
DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda(:[0-9]+)?)$')


def _cuda_missing(spec: str) -> str:
    if torch.version.cuda is None:
        return f'device {spec!r} is not available: this torch build ({torch.__version__}) has no CUDA; use --device cpu'
    return f'device {spec!r} is not available: torch sees no CUDA GPU (check CUDA_VISIBLE_DEVICES); use --device cpu'


def resolve_device(spec: str | torch.device | None = 'auto') -> torch.device:
    """The ``torch.device`` of a device setting (``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or a device).

    Raises
    ------
    ConfigError
        A malformed name, a CUDA device that is not there, or one GPU named for several processes.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = 'auto' if spec is None else spec
    if not isinstance(spec, str) or not DEVICE_PATTERN.match(spec):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
    if spec == 'cpu' or (spec == 'auto' and not torch.cuda.is_available()):
        return torch.device('cpu')
    if not torch.cuda.is_available():
        raise ConfigError(_cuda_missing(spec))
    processes, local = int(os.environ.get('WORLD_SIZE', '1')), int(os.environ.get('LOCAL_RANK', '0'))
    if ':' in spec and processes > 1:
        raise ConfigError(f'device {spec!r} names one GPU for {processes} processes: give --device cuda '
                          '(each process takes the GPU of its LOCAL_RANK)')
    index = int(spec.partition(':')[2]) if ':' in spec else (local if processes > 1 else 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f'device cuda:{index} is not available: torch sees {torch.cuda.device_count()} CUDA GPU(s)')
    return torch.device('cuda', index)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a model without tensors."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device('cpu')


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it (in tuples, lists and dicts, recursively) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch
