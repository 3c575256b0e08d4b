"""Physically shrink a structured-pruned model with NNI's ModelSpeedup, and verify it.

Workarounds (see :mod:`nni_bap.pruning.compat`): ``graph_module=torch.fx.symbolic_trace(model)`` replaces
the crashing default tracer; BatchNorm momentum is frozen during speedup because ModelSpeedup
runs forward passes in train mode that would otherwise overwrite the running statistics; the
whole model is put back in eval mode afterwards (ModelSpeedup leaves submodules in train mode).

A channel whose convolution is masked still carries its BatchNorm shift in the masked model;
once the channel is removed that constant is gone. The parity reference is therefore the masked
model with those BatchNorm channels zeroed too (the *channel-consistent* model); how far that is
from the plain masked model is reported as ``bn_drift``; it is zero by construction when the model was
pruned with :func:`nni_bap.pruning.channel_mask.install_channel_masks` installed.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from ..errors import SpeedupParityError
from ..pruning.channel_mask import apply_channel_masks
from ..pruning.compat import ModelSpeedup, apply_masks, symbolic_trace

__all__ = ['SpeedupResult', 'channel_consistent', 'is_structured', 'speed_up']

#: ModelSpeedup reports every replaced module at INFO; keep that at DEBUG level of detail.
_SPEEDUP_LOG = logging.getLogger(__name__ + '.modelspeedup')
_SPEEDUP_LOG.setLevel(logging.WARNING)
Masks = Dict[str, Dict[str, Optional[Tensor]]]


@dataclass
class SpeedupResult:
    """Outcome of :func:`speed_up`."""

    model: nn.Module
    structured: bool
    max_abs_diff: float
    bn_drift: float
    note: str


def is_structured(masks: Masks) -> bool:
    """True when every weight mask removes whole output channels (rows all zero or all one)."""
    found = False
    for targets in masks.values():
        w = targets.get('weight')
        if w is None:
            continue
        rows = w.reshape(w.shape[0], -1)
        if not bool(((rows == 0).all(1) | (rows == 1).all(1)).all()):
            return False
        found = found or bool((rows == 0).all(1).any())
    return found


def channel_consistent(model: nn.Module, masks: Masks) -> nn.Module:
    """A copy of ``model`` with masks applied and the BatchNorm channels that ModelSpeedup removes zeroed.

    A BatchNorm channel is zeroed when every layer of its source's NNI channel-dependency group masks it
    (:func:`nni_bap.pruning.channel_mask.apply_channel_masks`): a channel that one branch of a residual add still
    uses is kept by ModelSpeedup, shift included.
    """
    ref = apply_masks(copy.deepcopy(model), masks)
    apply_channel_masks(ref, masks)
    return ref.eval()


def _max_diff(a: nn.Module, b: nn.Module, inputs) -> tuple:
    diff, scale = 0.0, 0.0
    with torch.no_grad():
        for x in inputs:
            ya, yb = a(x), b(x)
            diff = max(diff, float((ya - yb).abs().max()))
            scale = max(scale, float(yb.abs().max()))
    return diff, scale


def speed_up(model: nn.Module, masks: Masks, dummy_input: Tensor, check_inputs=None, rtol: float = 1e-5) -> SpeedupResult:
    """Shrink ``model`` (a plain module, not modified) according to NNI ``masks``; verify parity.

    Unstructured masks cannot shrink layers: they are applied to the weights and shapes kept.

    Raises
    ------
    SpeedupParityError
        The result's logits differ from the masked (channel-consistent) model's by more than
        ``rtol`` times the logits' scale, on ``dummy_input`` or any of ``check_inputs``.
    """

    model = copy.deepcopy(model).eval()
    masks = {k: {t: m for t, m in v.items() if m is not None} for k, v in masks.items()}
    inputs = [dummy_input, torch.rand_like(dummy_input)] + list(check_inputs or [])
    if not is_structured(masks):
        out = apply_masks(model, masks)
        return SpeedupResult(out, False, 0.0, 0.0,
                             'unstructured masks: applied to the weights, layer shapes kept (no speed-up)')
    ref = channel_consistent(model, masks)
    bn_drift, _ = _max_diff(apply_masks(copy.deepcopy(model), masks).eval(), ref, inputs)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # NNI prints progress lines
            ModelSpeedup(model, dummy_input, masks, graph_module=symbolic_trace(model),
                         logger=_SPEEDUP_LOG).speedup_model()
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
    model.eval()
    diff, scale = _max_diff(model, ref, inputs)
    if not diff <= rtol * max(scale, 1.0):
        raise SpeedupParityError(f'sped-up model differs from the masked model by {diff:.3g} '
                                 f'(logit scale {scale:.3g}, tolerance {rtol:g} relative)')
    return SpeedupResult(model, True, diff, bn_drift, 'structured masks: layers physically shrunk by NNI ModelSpeedup')
