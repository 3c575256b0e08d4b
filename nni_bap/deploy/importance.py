"""Channel importance on the dense model, the way the base pruners score channels, and what a width keeps of it.

Each scorer maps a layer's weight (and, for Taylor, its gradient) to one score per output channel:

- ``l1`` / ``l2``: the norm of the channel's weights (NNI's ``L1NormPruner`` / ``L2NormPruner``);
- ``fpgm``: the channel's summed distance to the layer's other channels (NNI's ``FPGMPruner``: channels near
  the geometric median are redundant);
- ``taylor``: first-order Taylor estimate of the loss change when the channel is removed, ``(sum w * dL/dw)^2``
  over a few training batches (Molchanov et al. 2019), comparable across layers as it is.

Norm-based scores are divided by their layer's mean (a layer's channels average 1: norms differ between layers
with their fan-in, not with their importance). A unit's channel scores are summed over its layers (a dependency
group prunes one channel from all of them), and keeping ``w`` channels keeps the top ``w`` of them
(:func:`kept_importance`). Pure functions of tensors, apart from :func:`layer_scores`.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..pruning.align import ChannelUnit
from ..registry import Registry

__all__ = ['IMPORTANCE', 'fpgm', 'kept_importance', 'l1', 'l2', 'layer_scores', 'taylor', 'unit_scores']

#: Importance name -> ``f(weight, grad) -> scores per output channel``. Metadata: ``needs_data`` (gradients),
#: ``normalize`` (divide by the layer's mean).
IMPORTANCE = Registry('importance')


@IMPORTANCE.register('l1', needs_data=False, normalize=True)
def l1(weight: Tensor, grad: Optional[Tensor] = None) -> Tensor:
    """L1 norm of every output channel's weights."""
    return weight.detach().flatten(1).abs().sum(1)


@IMPORTANCE.register('l2', needs_data=False, normalize=True)
def l2(weight: Tensor, grad: Optional[Tensor] = None) -> Tensor:
    """L2 norm of every output channel's weights."""
    return weight.detach().flatten(1).norm(dim=1)


@IMPORTANCE.register('fpgm', needs_data=False, normalize=True)
def fpgm(weight: Tensor, grad: Optional[Tensor] = None) -> Tensor:
    """Summed Euclidean distance of every output channel to the layer's other channels."""
    w = weight.detach().flatten(1)
    return torch.cdist(w, w).sum(1)


@IMPORTANCE.register('taylor', needs_data=True, normalize=False)
def taylor(weight: Tensor, grad: Optional[Tensor] = None) -> Tensor:
    """``(sum over the channel of w * dL/dw)^2``: the first-order loss change of removing the channel."""
    if grad is None:
        raise ValueError('taylor importance needs the loss gradient of the weights')
    return (weight.detach() * grad).flatten(1).sum(1).pow(2)


def _gradients(model: nn.Module, names: Sequence[str], data, batches: int) -> Dict[str, Tensor]:
    """Summed weight gradients of the cross-entropy over ``batches`` batches of ``data`` (pairs ``(x, y)``)."""
    modules = dict(model.named_modules())
    grads = {n: torch.zeros_like(modules[n].weight) for n in names}
    was_training = model.training
    model.eval()
    for i, (x, y) in enumerate(data):
        if i >= batches:
            break
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for n in names:
            grads[n] += modules[n].weight.grad.detach()
    model.zero_grad()
    model.train(was_training)
    return grads


def layer_scores(model: nn.Module, names: Sequence[str], importance: str = 'l1', data=None,
                 batches: int = 8) -> Dict[str, Tensor]:
    """Scores per output channel of the layers ``names``, normalised per layer where the scorer says so.

    ``data`` (an iterable of ``(x, y)`` batches) is needed by scorers with ``needs_data`` (``taylor``).
    """
    entry = IMPORTANCE.entry(importance)
    if entry.needs_data and data is None:
        raise ValueError(f'{importance} importance needs training batches')
    modules = dict(model.named_modules())
    grads = _gradients(model, names, data, batches) if entry.needs_data else {}
    out = {}
    for n in names:
        s = entry.obj(modules[n].weight, grads.get(n)).double().cpu()
        out[n] = s / s.mean().clamp_min(1e-12) if entry.normalize else s
    return out


def unit_scores(units: Sequence[ChannelUnit], scores: Dict[str, Tensor]) -> Dict[str, np.ndarray]:
    """Per unit, its channels' scores summed over its layers, sorted from the most important."""
    return {u.name: np.sort(sum(scores[n] for n in u.layers).numpy())[::-1].copy() for u in units}


def kept_importance(sorted_scores: np.ndarray, width: int) -> float:
    """Importance a unit keeps with ``width`` channels: its ``width`` best channels' scores."""
    return float(sorted_scores[:width].sum())
