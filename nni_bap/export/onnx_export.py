"""``export_onnx``: speed up, convert to ONNX, check, validate against torch, write atomically."""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .. import __version__
from ..errors import CorruptModelError, InputShapeError, MasksNeededError, OnnxParityError
from ..pruning.compat import apply_masks, is_wrapped
from ..utils.atomic import atomic_path, ordered
from .efficiency import onnx_efficiency
from .metadata import encode, write_metadata
from .runtime import OnnxClassifier
from .speedup import MAX_BN_DRIFT, SpeedupResult, speed_up, zero_channel_masks

__all__ = ['ExportResult', 'check_masks_given', 'check_onnx', 'export_onnx', 'layer_sparsity', 'validate_onnx']

_logger = logging.getLogger(__name__)
INPUT_NAME, OUTPUT_NAME = 'input', 'logits'


@dataclass
class ExportResult:
    """What :func:`export_onnx` produced and measured."""

    path: str
    structured: bool
    note: str
    speedup_max_abs_diff: float
    bn_drift: float
    onnx_max_abs_diff: float
    argmax_agreement: float
    efficiency: Dict = field(default_factory=dict)
    metadata: Dict[str, str] = field(default_factory=dict)
    model: Optional[nn.Module] = field(default=None, repr=False)

    def to_dict(self) -> Dict:
        d = asdict(self)
        d.pop('model')
        d['efficiency'] = {k: v for k, v in self.efficiency.items() if k != 'initializers'}
        return d


def layer_sparsity(model: nn.Module) -> Dict[str, float]:
    """Fraction of zero weights of every conv and linear layer, plus ``'total'``."""
    out, zeros, total = {}, 0, 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            out[name] = float((w == 0).float().mean())
            zeros += int((w == 0).sum())
            total += w.numel()
    out['total'] = zeros / total if total else 0.0
    return out


def check_onnx(path: str) -> None:
    """Load and run ``onnx.checker.check_model(full_check=True)``; :class:`CorruptModelError` if it fails."""
    import onnx  # onnx loads in about a second: imported where a model is checked
    try:
        onnx.checker.check_model(onnx.load(path), full_check=True)
    except Exception as exc:  # onnx raises several untyped errors
        raise CorruptModelError(f'{path} is not a valid ONNX model: {exc}') from exc


def validate_onnx(path: str, model: nn.Module, x: Tensor, atol: float = 1e-4, batch_size: int = 256) -> Dict[str, float]:
    """Compare onnxruntime with torch on ``x``: output names, shapes, max abs difference, argmax agreement.

    Raises
    ------
    OnnxParityError
        Listing every failed check.
    """
    clf = OnnxClassifier(path)
    problems: List[str] = []
    if clf.input_name != INPUT_NAME:
        problems.append(f'input name {clf.input_name!r} != {INPUT_NAME!r}')
    if clf.output_names != [OUTPUT_NAME]:
        problems.append(f'output names {clf.output_names} != {[OUTPUT_NAME]}')
    with torch.no_grad():
        ref = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()
    got = clf.logits(x.numpy(), batch_size)
    diff, agree = float('inf'), 0.0
    if got.shape != ref.shape:
        problems.append(f'output shape {got.shape} != torch {ref.shape}')
    else:
        diff = float(np.abs(got - ref).max())
        agree = float((got.argmax(1) == ref.argmax(1)).mean())
        if not diff <= atol:
            problems.append(f'max abs difference {diff:.3g} > {atol:g}')
        if agree < 1.0:
            problems.append(f'argmax agreement {agree:.4f} < 1 ({int(round((1 - agree) * len(x)))} samples)')
    if problems:
        raise OnnxParityError(problems)
    return {'max_abs_diff': diff, 'argmax_agreement': agree}


def _plain(model: nn.Module, masks) -> nn.Module:
    """A plain copy of a possibly NNI-wrapped model, masks baked in, wrappers removed."""
    if not is_wrapped(model):
        return copy.deepcopy(model)
    apply_masks(model, masks or {})  # bakes the wrappers' own masks into the weights
    wrappers = [m._nni_wrapper for m in model.modules() if hasattr(m, '_nni_wrapper')]
    for w in wrappers:
        w.unwrap()
    return copy.deepcopy(model)


def check_masks_given(model: nn.Module, masks) -> None:
    """:class:`~nni_bap.errors.MasksNeededError` when a pruned model comes without ``masks=``: one still wrapped by
    NNI, or one with whole output channels zeroed (it would be written full size). ``masks={}`` means "export as
    is" and passes."""
    if masks is not None:
        return
    if is_wrapped(model):
        raise MasksNeededError('the model still has NNI wrappers and no masks= were given: pass the pruner\'s masks '
                               '(`_, masks = pruner.compress(...)`) with the model of finalize(pruner), or masks={} to '
                               'export it full size with its zeros')
    zeroed = zero_channel_masks(model)
    if zeroed:
        n = sum(int((m['weight'].reshape(m['weight'].shape[0], -1)[:, 0] == 0).sum()) for m in zeroed.values())
        raise MasksNeededError(f'{n} output channels of {", ".join(sorted(zeroed))} are zero but no masks= were given, '
                               'so the model would be written full size: pass the pruner\'s masks (`_, masks = '
                               'pruner.compress(...)`), or masks=nni_bap.export.zero_channel_masks(model) to remove '
                               'the zeroed channels, or masks={} to export it full size')


def export_onnx(model: nn.Module, path: str, dummy_input: Tensor, masks=None, validation_inputs: Optional[Tensor] = None,
                opset: int = 17, metadata: Optional[Dict[str, object]] = None, atol: float = 1e-4,
                max_bn_drift: float = MAX_BN_DRIFT) -> ExportResult:
    """Speed up (with NNI masks), convert to ONNX, check, validate with onnxruntime, write atomically.

    Parameters
    ----------
    model
        The pruned model (plain, after :func:`~nni_bap.finalize`; a model still wrapped by NNI has its masks baked
        in and its wrappers removed, in place). Inputs are pixels in [0, 1] (normalisation inside the model).
    path
        Destination ``.onnx``; written only when every check passed (a temporary file beside it until then).
    dummy_input
        A ``torch.Tensor`` batch of real inputs of the deployed shape, ``(N, C, H, W)`` (float32, any ``N >= 1``;
        a few test images): ModelSpeedup propagates masks with it and the ONNX graph is traced from it. The
        exported batch dimension is dynamic.
    masks
        The pruner's NNI masks (``_, masks = pruner.compress(...)``, ``{module: {target: mask}}``): structured
        ones (whole output channels) shrink the layers with ModelSpeedup, unstructured ones are applied to the
        weights. ``{}``: export as is. ``None`` (default) for a dense model; a pruned model (NNI wrappers, or
        output channels all zero) without masks is refused (:class:`~nni_bap.errors.MasksNeededError`).
    validation_inputs
        Real inputs to validate onnxruntime against torch (default: ``dummy_input``); same shape but ``N``.
    opset
        ONNX opset.
    metadata
        Extra ``metadata_props`` (values are JSON-encoded unless strings).
    atol
        Largest accepted max abs logit difference onnxruntime vs torch.
    max_bn_drift
        Largest accepted ``bn_drift`` relative to the logits' scale (:func:`~nni_bap.export.speed_up`).

    Returns
    -------
    ExportResult
        ``path``; ``structured`` (layers shrunk) and ``note``; ``speedup_max_abs_diff`` (sped-up vs masked torch
        model); ``bn_drift`` (0 when BatchNorm was kept consistent with the channel masks); ``onnx_max_abs_diff``
        and ``argmax_agreement`` (onnxruntime vs torch on ``validation_inputs``); ``efficiency`` (``params``,
        ``nonzero_params``, ``macs``, ``flops``, ``file_bytes``); ``metadata`` (the ONNX ``metadata_props``);
        ``model`` (the exported torch model, sped up).

    Raises
    ------
    MasksNeededError
        A pruned model without ``masks=``.
    BatchNormDriftError
        Removing the pruned channels would change the logits (``bn_drift`` beyond ``max_bn_drift``).
    InputShapeError, SpeedupParityError, CorruptModelError, OnnxParityError
        A dummy input the model rejects; a sped-up model that differs; an ONNX file that fails the checker; an
        onnxruntime result that differs from torch (every mismatch listed).
    """
    check_masks_given(model, masks)
    x_val = validation_inputs if validation_inputs is not None else dummy_input
    if tuple(x_val.shape[1:]) != tuple(dummy_input.shape[1:]):
        raise InputShapeError(f'validation inputs have shape {tuple(x_val.shape)}, dummy input {tuple(dummy_input.shape)}')
    # exported from a CPU copy, whatever device the model trained on
    dummy_input, x_val = dummy_input.cpu(), x_val.cpu()
    masks = {k: {t: m.cpu() for t, m in v.items() if m is not None} for k, v in masks.items()} if masks else masks
    plain = _plain(model, masks).cpu().eval()
    try:
        with torch.no_grad():
            plain(dummy_input)
    except RuntimeError as exc:
        raise InputShapeError(f'model rejects a dummy input of shape {tuple(dummy_input.shape)}: {exc}') from exc
    sparsity = layer_sparsity(apply_masks(copy.deepcopy(plain), masks) if masks else plain)
    if masks:
        sp = speed_up(plain, masks, dummy_input, check_inputs=[x_val[:256]], max_bn_drift=max_bn_drift)
    else:
        sp = SpeedupResult(plain, False, 0.0, 0.0, 'no masks: exported as is')
    final = sp.model.eval()
    meta = {'producer': 'nni-bap', 'producer_version': __version__, 'input_shape': list(dummy_input.shape[1:]),
            'input_range': [0.0, 1.0], 'normalisation': 'none: inputs are pixels scaled to [0, 1]',
            'num_classes': int(final(dummy_input[:1]).shape[1]), 'layer_sparsity': sparsity,
            'total_sparsity': sparsity['total'], 'speedup': sp.note, **(metadata or {})}
    meta = encode(ordered(meta))  # sorted at every level: identical runs write identical files
    parity, eff = _write_verified(final, path, dummy_input, x_val, meta, opset, atol)
    _logger.info('exported %s: %d params (%d non-zero), %d FLOPs, max |ORT - torch| %.2e', path, eff['params'],
                 eff['nonzero_params'], eff['flops'], parity['max_abs_diff'])
    return ExportResult(path, sp.structured, sp.note, sp.max_abs_diff, sp.bn_drift, parity['max_abs_diff'],
                        parity['argmax_agreement'], eff, meta, final)


def _write_verified(final: nn.Module, path: str, dummy_input: Tensor, x_val: Tensor, meta: Dict[str, str],
                    opset: int, atol: float):
    """Export to a temporary file beside ``path``, check and validate it, then move it into place."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        torch.onnx.export(final, (dummy_input,), tmp, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}})
        write_metadata(tmp, meta)
        check_onnx(tmp)
        parity = validate_onnx(tmp, final, x_val, atol=atol)
        eff = onnx_efficiency(tmp)
    eff['file_bytes'] = os.path.getsize(path)
    return parity, eff


