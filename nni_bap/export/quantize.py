"""int8 static quantisation of an exported classifier, validated against its fp32 model before it is written.

:func:`quantize_int8` calibrates onnxruntime's static quantiser (QDQ format, per-channel weights, MinMax
ranges by default) on at least 256 training inputs, then compares the int8 model with the fp32 one on the
validation (test) split: argmax agreement >= 99% and clean accuracy within one point, or
:class:`~nni_bap.errors.QuantizationError` and no file. The file is written atomically (a
temporary file moved into place only after every check passed).

:func:`robustness_recheck` re-checks robustness in onnxruntime: adversarial inputs crafted on the fp32
*torch* model (so for the int8 model they are transferred, not adaptive, attacks) and uniform random
noise at the same budgets, each classified by the fp32 and the int8 model side by side.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..attacks import ATTACKS
from ..errors import ConfigError, QuantizationError
from ..utils.atomic import atomic_path
from ..utils.timing import alternating_ms
from .cpu import int8_settings
from .metadata import read_metadata, write_metadata
from .runtime import OnnxClassifier

__all__ = ['MIN_CALIBRATION', 'QuantizationResult', 'TRANSFER_NOTE', 'craft_transfer_inputs', 'int8_latency',
           'onnx_precision', 'quantize_int8', 'robustness_recheck']

_logger = logging.getLogger(__name__)
#: Fewest calibration inputs accepted.
MIN_CALIBRATION = 256
TRANSFER_NOTE = ('adversarial inputs were crafted on the fp32 torch model and transferred to both onnxruntime '
                 'models (not an adaptive attack on the int8 model); noise is uniform random at the same budgets')


@dataclass
class QuantizationResult:
    """What :func:`quantize_int8` wrote and measured (accuracies and agreement on the validation split)."""

    path: str
    fp32_path: str
    agreement: float
    fp32_accuracy: float
    int8_accuracy: float
    fp32_bytes: int
    int8_bytes: int
    calibration_inputs: int
    validation_inputs: int
    settings: Dict[str, object] = field(default_factory=dict)
    latency_ms: Dict[str, Dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> Dict:
        return asdict(self)


class _Reader:
    """onnxruntime ``CalibrationDataReader``: the calibration inputs in batches."""

    def __init__(self, name: str, x: np.ndarray, batch_size: int):
        self._batches = iter([{name: x[i:i + batch_size]} for i in range(0, len(x), batch_size)])

    def get_next(self):
        return next(self._batches, None)


def _quantize(src: str, dst: str, name: str, calibration: np.ndarray, settings: Dict) -> None:
    """Pre-process (shape inference, graph clean-up) ``src`` and quantise it into ``dst``."""
    # onnxruntime's quantiser loads in seconds: only when a model is quantised
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process
    with tempfile.TemporaryDirectory(prefix='bap-int8-') as folder:
        pre = os.path.join(folder, 'pre.onnx')
        quant_pre_process(src, pre)
        quantize_static(pre, dst, _Reader(name, calibration, settings['calibration_batch']),
                        quant_format=QuantFormat.QDQ, per_channel=settings['per_channel'],
                        activation_type=getattr(QuantType, settings['activation_type']),
                        weight_type=getattr(QuantType, settings['weight_type']),
                        calibrate_method=getattr(CalibrationMethod, settings['calibrate_method']),
                        reduce_range=settings['reduce_range'])


def _compare(fp32: OnnxClassifier, int8: OnnxClassifier, x: np.ndarray, y: np.ndarray) -> Dict[str, float]:
    a, b = fp32.logits(x).argmax(1), int8.logits(x).argmax(1)
    return {'agreement': float((a == b).mean()), 'fp32_accuracy': float((a == y).mean()),
            'int8_accuracy': float((b == y).mean())}


def _check(measured: Dict[str, float], min_agreement: float, max_accuracy_drop: float) -> None:
    problems = []
    if not measured['agreement'] >= min_agreement:
        problems.append(f'argmax agreement {measured["agreement"]:.4f} < {min_agreement:g}')
    drop = measured['fp32_accuracy'] - measured['int8_accuracy']
    if not drop <= max_accuracy_drop:
        problems.append(f'clean accuracy fell by {drop:.4f} ({measured["fp32_accuracy"]:.4f} -> '
                        f'{measured["int8_accuracy"]:.4f}) > {max_accuracy_drop:g}')
    if problems:
        raise QuantizationError('int8 model refused, nothing written: ' + '; '.join(problems), measured)



def quantize_int8(onnx_path: str, out_path: str, calibration_inputs: np.ndarray, validation_inputs: np.ndarray,
                  validation_labels: np.ndarray, min_agreement: float = 0.99, max_accuracy_drop: float = 0.01,
                  per_channel: bool = True, calibrate_method: str = 'MinMax', activation_type: str = 'QUInt8',
                  weight_type: str = 'QInt8', latency_batches: Sequence[int] = (1, 64), threads: int = 1,
                  min_calibration: int = MIN_CALIBRATION, target_cpu: str = 'auto') -> QuantizationResult:
    """Static int8 quantisation (QDQ, per-channel) of ``onnx_path``, validated, written atomically to ``out_path``.

    Parameters
    ----------
    onnx_path
        The fp32 model (as written by :func:`~nni_bap.export.export_onnx`).
    calibration_inputs
        Training inputs, float32 NCHW in [0, 1]; at least ``min_calibration`` (256).
    validation_inputs, validation_labels
        The test split: the int8 model must agree with the fp32 one on ``min_agreement`` of it and lose at
        most ``max_accuracy_drop`` clean accuracy.
    latency_batches
        Batch sizes at which fp32 and int8 latency are measured side by side (``()``: none), with ``threads``.
    target_cpu
        ``'auto'`` (this CPU's kind), ``'vnni'`` or ``'no-vnni'``: the CPU kind whose onnxruntime int8 kernels
        the model is quantised for (:mod:`nni_bap.export.cpu`). ``'no-vnni'`` (7-bit weights) gives the same results on
        every x86 CPU: choose it for a model that will run on another CPU than this one.

    Raises
    ------
    QuantizationError
        Too few calibration inputs, or the int8 model fails a check; ``out_path`` is then not written.
    """
    x_cal = np.ascontiguousarray(calibration_inputs, dtype=np.float32)
    if len(x_cal) < min_calibration:
        raise QuantizationError(f'{len(x_cal)} calibration inputs given, at least {min_calibration} needed')
    settings = {'format': 'QDQ', 'per_channel': bool(per_channel), 'calibrate_method': calibrate_method,
                'activation_type': activation_type, 'weight_type': weight_type, 'calibration_batch': 64,
                **int8_settings(target_cpu)}
    fp32 = OnnxClassifier(onnx_path, threads=threads)
    x_val, y_val = fp32._check(validation_inputs), np.asarray(validation_labels)
    with atomic_path(out_path) as tmp:
        _quantize(onnx_path, tmp, fp32.input_name, x_cal, settings)
        measured = _compare(fp32, OnnxClassifier(tmp, threads=threads), x_val, y_val)
        _check(measured, min_agreement, max_accuracy_drop)
        write_metadata(tmp, {**read_metadata(onnx_path), 'precision': 'int8', 'quantization': settings,
                             'calibration_inputs': len(x_cal), 'int8_validation': measured}, replace=True)
    result = QuantizationResult(str(out_path), str(onnx_path), measured['agreement'], measured['fp32_accuracy'],
                                measured['int8_accuracy'], os.path.getsize(onnx_path), os.path.getsize(out_path),
                                len(x_cal), len(x_val), settings)
    if latency_batches:
        result.latency_ms = int8_latency(onnx_path, str(out_path), latency_batches, threads, x_val)
    _logger.info('int8 model %s: agreement %.4f, accuracy %.4f -> %.4f, %d -> %d bytes', out_path,
                 result.agreement, result.fp32_accuracy, result.int8_accuracy, result.fp32_bytes, result.int8_bytes)
    return result


def int8_latency(fp32_path: str, int8_path: str, batches: Sequence[int] = (1, 64), threads: int = 1,
                 x: Optional[np.ndarray] = None, budget_s: float = 2.0) -> Dict[str, Dict[str, float]]:
    """fp32 and int8 onnxruntime latency (median ms, alternating runs) per batch size: ``{'b64': {...}}``."""
    clfs = {'fp32': OnnxClassifier(fp32_path, threads=threads), 'int8': OnnxClassifier(int8_path, threads=threads)}
    out = {}
    for b in batches:
        batch = clfs['fp32']._latency_batch(int(b), x)
        fns = {k: (lambda c=c: c.session.run(None, {c.input_name: batch})) for k, c in clfs.items()}
        start = time.perf_counter()
        for fn in fns.values():
            fn()
        once = max(time.perf_counter() - start, 1e-6)
        ms = alternating_ms(fns, repeats=int(min(max(budget_s / once, 10), 500)))
        out[f'b{int(b)}'] = {**ms, 'int8_speedup': ms['fp32'] / ms['int8']}
    return out


def _noise(x: np.ndarray, budget: float, norm: str, rng: np.random.Generator) -> np.ndarray:
    """``x`` plus uniform random noise of Linf size ``budget`` (or a uniform direction of L2 norm ``budget``)."""
    if norm == 'linf':
        eta = rng.uniform(-budget, budget, size=x.shape)
    elif norm == 'l2':
        eta = rng.standard_normal(x.shape)
        eta *= budget / np.linalg.norm(eta.reshape(len(x), -1), axis=1).reshape(-1, *[1] * (x.ndim - 1))
    else:
        raise ConfigError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return np.clip(x + eta, 0.0, 1.0).astype(np.float32)


def robustness_recheck(fp32_path: str, int8_path: str, x: np.ndarray, y: np.ndarray,
                       adversarial: Mapping[float, np.ndarray], norm: str = 'linf', seed: int = 0,
                       threads: int = 0) -> Dict[str, object]:
    """fp32 and int8 onnxruntime accuracy, side by side, on transferred adversarial inputs and on noise.

    Parameters
    ----------
    x, y
        Clean inputs and labels.
    adversarial
        Budget -> adversarial versions of ``x`` crafted on the fp32 *torch* model (:func:`craft_transfer_inputs`).
    norm
        The budgets' norm, ``'linf'`` or ``'l2'``: the noise at each budget is uniform random of that size.

    Returns
    -------
    dict
        ``note`` (:data:`TRANSFER_NOTE`), ``clean`` (``{'fp32', 'int8'}``) and ``rows``: one per budget with
        ``budget``, ``adversarial`` and ``noise`` (each ``{'fp32', 'int8'}``).
    """
    clfs = {'fp32': OnnxClassifier(fp32_path, threads=threads), 'int8': OnnxClassifier(int8_path, threads=threads)}
    y = np.asarray(y)
    rng = np.random.default_rng(seed)

    def both(inputs: np.ndarray) -> Dict[str, float]:
        return {k: c.accuracy(inputs, y) for k, c in clfs.items()}

    x = np.asarray(x)
    rows = [{'budget': float(b), 'adversarial': both(adversarial[b]), 'noise': both(_noise(x, b, norm, rng))}
            for b in sorted(adversarial)]
    return {'note': TRANSFER_NOTE, 'norm': norm, 'clean': both(x), 'rows': rows}


def craft_transfer_inputs(model, x, y, budgets: Sequence[float], attack: str = 'pgd',
                          **settings) -> Dict[float, np.ndarray]:
    """Adversarial inputs crafted on the fp32 torch ``model`` with ``nni_bap.attacks.ATTACKS[attack]``, per budget."""
    return {float(b): ATTACKS[attack](model, eps=float(b), **settings)(x, y).numpy() for b in budgets}


def onnx_precision(path: str) -> str:
    """``'int8'`` for a model written by :func:`quantize_int8` (its ``precision`` metadata), else ``'fp32'``."""
    return read_metadata(path).get('precision', 'fp32')
