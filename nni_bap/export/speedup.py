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

import copy
import logging
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from ..errors import BatchNormDriftError, SpeedupParityError
from ..pruning.channel_mask import apply_channel_masks
from ..pruning.compat import ModelSpeedup, apply_masks, nni_output_to_log, symbolic_trace

__all__ = ['MAX_BN_DRIFT', 'SpeedupResult', 'channel_consistent', 'check_bn_drift', 'is_structured', 'speed_up',
           'zero_channel_masks']

_logger = logging.getLogger(__name__)
#: ModelSpeedup's own logger (it reports every replaced module at INFO): inside NNI's logger tree, so that
#: :func:`nni_output_to_log` catches it with the rest.
_SPEEDUP_LOG = logging.getLogger('nni.compression.speedup.nni_bap')
#: Largest ``bn_drift`` accepted, relative to the logits' scale (``max(|logit|, 1)``).
MAX_BN_DRIFT = 1e-4
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


def _dead_rows(module: nn.Module) -> Optional[Tensor]:
    """Boolean ``(out_channels,)`` of the output channels a conv / linear layer has removed by zeros (weight row and
    bias zero), or ``None`` when it has none or when it has zeros outside such channels (unstructured pruning)."""
    w = module.weight.detach().reshape(module.weight.shape[0], -1)
    dead = (w == 0).all(1)
    if module.bias is not None:
        dead &= module.bias.detach() == 0
    if not bool(dead.any()) or bool((w[~dead] == 0).any()):
        return None
    return dead


def zero_channel_masks(model: nn.Module) -> Masks:
    """NNI masks of the output channels a plain model has zeroed (channel pruning baked in by
    :func:`~nni_bap.finalize`): ``{layer: {'weight': mask, 'bias': mask}}`` for every conv / linear layer whose zero
    weights all lie in whole output channels (weight row and bias zero). Layers with scattered zeros (unstructured
    pruning) or none are left out. What :func:`~nni_bap.export.export_onnx` needs when the pruner's masks are lost.
    """
    masks: Masks = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            continue
        dead = _dead_rows(module)
        if dead is None:
            continue
        keep = (~dead).to(module.weight.dtype)
        masks[name] = {'weight': keep.view(-1, *[1] * (module.weight.dim() - 1)).expand_as(module.weight).clone()}
        if module.bias is not None:
            masks[name]['bias'] = keep.clone()
    return masks


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


def check_bn_drift(drift: float, scale: float, max_bn_drift: float = MAX_BN_DRIFT) -> None:
    """:class:`~nni_bap.errors.BatchNormDriftError` when ``drift`` exceeds ``max_bn_drift * max(scale, 1)``.

    ``drift`` is the largest logit difference between the masked model and the channel-consistent one (what
    ModelSpeedup produces), ``scale`` the largest logit of the latter.
    """
    if drift <= max_bn_drift * max(scale, 1.0):
        return
    raise BatchNormDriftError(
        f'removing the pruned channels would change the model: their BatchNorm shifts still move the masked model\'s '
        f'logits by {drift:.3g} (bn_drift; logit scale {scale:.3g}, tolerance {max_bn_drift:g} relative), so the '
        'exported model would not be the one you validated. Prune with BAPPruner or AdversarialPruner (they mask '
        'BatchNorm with channel pruners), or train inside nni_bap.pruning.channel_mask.install_channel_masks(model) '
        "and call handle.remove() before finalize; max_bn_drift=float('inf') exports the sped-up model anyway", drift)


def speed_up(model: nn.Module, masks: Masks, dummy_input: Tensor, check_inputs=None, rtol: float = 1e-5,
             max_bn_drift: float = MAX_BN_DRIFT) -> SpeedupResult:
    """Shrink ``model`` (a plain module, not modified) according to NNI ``masks``; verify parity.

    Unstructured masks cannot shrink layers: they are applied to the weights and shapes kept.

    Parameters
    ----------
    model
        The pruned model, NNI wrappers removed (:func:`~nni_bap.finalize`).
    masks
        NNI masks, ``{module: {'weight': mask, ...}}``.
    dummy_input
        A batch of inputs of the deployed shape (ModelSpeedup propagates masks with it).
    check_inputs
        More batches the parity and the drift are checked on (besides ``dummy_input`` and uniform noise).
    rtol
        Largest difference sped-up vs channel-consistent model, relative to the logits' scale.
    max_bn_drift
        Largest ``bn_drift`` (masked vs channel-consistent model), relative to the logits' scale
        (:data:`MAX_BN_DRIFT`); ``float('inf')`` accepts any.

    Raises
    ------
    BatchNormDriftError
        Removing the pruned channels would change the logits by more than ``max_bn_drift`` (checked before
        ModelSpeedup runs).
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
    bn_drift, scale = _max_diff(apply_masks(copy.deepcopy(model), masks).eval(), ref, inputs)
    check_bn_drift(bn_drift, scale, max_bn_drift)
    _run_speedup(model, masks, dummy_input)
    diff, scale = _max_diff(model, ref, inputs)
    if not diff <= rtol * max(scale, 1.0):
        raise SpeedupParityError(f'sped-up model differs from the masked model by {diff:.3g} '
                                 f'(logit scale {scale:.3g}, tolerance {rtol:g} relative)')
    return SpeedupResult(model, True, diff, bn_drift, 'structured masks: layers physically shrunk by NNI ModelSpeedup')


def _run_speedup(model: nn.Module, masks: Masks, dummy_input: Tensor) -> None:
    """NNI ModelSpeedup in place, BatchNorm statistics frozen, its output sent to the log; ``model`` left in eval."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        with nni_output_to_log(_logger):
            ModelSpeedup(model, dummy_input, masks, graph_module=symbolic_trace(model),
                         logger=_SPEEDUP_LOG).speedup_model()
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
    model.eval()
