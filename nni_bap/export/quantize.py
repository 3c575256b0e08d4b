"""int8 static quantisation of an exported classifier, validated against its fp32 model before it is written.

:func:`quantize_int8` calibrates onnxruntime's static quantiser (QDQ format, per-channel weights, MinMax
ranges by default) on at least 256 training inputs, then compares the int8 model with the fp32 one on the
validation (test) split: argmax agreement >= 99% and clean accuracy within one point (the gate). When the whole
model fails the gate, the other calibration methods onnxruntime offers are tried (:data:`CALIBRATION_METHODS`);
if none passes, every quantisable layer's sensitivity is measured (the model with that layer alone quantised,
its agreement with fp32) and the most sensitive layers are kept in fp32 (``nodes_to_exclude``), one more at a
time, until the gate passes or half the layers would be fp32: then :class:`~nni_bap.errors.QuantizationError`
and no file. The result says which layers stayed fp32 and why, and every attempt. With latency measured, an int8
model slower than fp32 (by more than 5%) at every batch size measured is not written either (``keep_slower``
forces it). The file is written atomically (a temporary file moved into place only after every check passed).

:func:`robustness_recheck` re-checks robustness in onnxruntime: adversarial inputs crafted on the fp32
*torch* model (so for the int8 model they are transferred, not adaptive, attacks) and uniform random
noise at the same budgets, each classified by the fp32 and the int8 model side by side.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..attacks import ATTACKS
from ..errors import ConfigError, QuantizationError
from ..utils.atomic import atomic_path
from ..utils.timing import alternating_ms
from .cpu import int8_settings
from .metadata import read_metadata, write_metadata
from .runtime import OnnxClassifier

__all__ = ['CALIBRATION_METHODS', 'MIN_CALIBRATION', 'QuantizationResult', 'SLOWER_MARGIN', 'TRANSFER_NOTE',
           'craft_transfer_inputs', 'int8_latency', 'onnx_precision', 'quantizable_nodes', 'quantize_int8',
           'robustness_recheck']

_logger = logging.getLogger(__name__)
#: Fewest calibration inputs accepted.
MIN_CALIBRATION = 256
#: onnxruntime's calibration methods, in the order the fallback tries them after the requested one.
CALIBRATION_METHODS = ('MinMax', 'Percentile', 'Entropy', 'Distribution')
#: int8 counts as slower than fp32 when it takes this much longer (timing noise on a shared machine stays below).
SLOWER_MARGIN = 0.05
#: Operators whose weights are quantised: the layers the fallback can keep in fp32.
QUANTIZED_OPS = ('Conv', 'Gemm', 'MatMul')
TRANSFER_NOTE = ('adversarial inputs were crafted on the fp32 torch model and transferred to both onnxruntime '
                 'models (not an adaptive attack on the int8 model); noise is uniform random at the same budgets')


@dataclass
class QuantizationResult:
    """What :func:`quantize_int8` wrote and measured (accuracies and agreement on the validation split).

    ``fp32_layers`` maps every layer kept in fp32 to why; ``attempts`` lists every model tried (calibration
    method, layers kept in fp32, agreement, accuracies, whether it passed); ``sensitivity`` is each layer's
    agreement with fp32 when it alone is quantised (measured only when the fallback needed it). ``skipped`` says
    why nothing was written although the gate passed (int8 slower than fp32 here); ``path`` is then ``''``.
    """

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
    fp32_layers: Dict[str, str] = field(default_factory=dict)
    attempts: List[Dict[str, object]] = field(default_factory=list)
    sensitivity: Dict[str, float] = field(default_factory=dict)
    skipped: str = ''

    def to_dict(self) -> Dict:
        return asdict(self)


class _Reader:
    """onnxruntime ``CalibrationDataReader``: the calibration inputs in batches."""

    def __init__(self, name: str, x: np.ndarray, batch_size: int):
        self._batches = iter([{name: x[i:i + batch_size]} for i in range(0, len(x), batch_size)])

    def get_next(self):
        return next(self._batches, None)


@contextlib.contextmanager
def _printed_to_log():
    """onnxruntime's quantiser prints its progress (shape inference, calibration histograms) to stdout: to this
    module's log at DEBUG instead, so a library call stays quiet."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield
    finally:
        for line in out.getvalue().splitlines():
            _logger.debug('onnxruntime: %s', line)


def _preprocess(src: str, folder: str) -> str:
    """Shape inference and graph clean-up of ``src`` (onnxruntime's ``quant_pre_process``) into ``folder``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    pre = os.path.join(folder, 'pre.onnx')
    with _printed_to_log():
        quant_pre_process(src, pre)
    return pre


def quantizable_nodes(path: str) -> List[str]:
    """Names of the nodes of ``path`` whose weights int8 quantisation stores as int8 (:data:`QUANTIZED_OPS`)."""
    import onnx
    return [n.name for n in onnx.load(path).graph.node if n.op_type in QUANTIZED_OPS]


def _quantize(pre: str, dst: str, name: str, calibration: np.ndarray, settings: Dict, cache: Optional[str] = None,
              exclude: Sequence[str] = (), only: Optional[Sequence[str]] = None) -> None:
    """Quantise the pre-processed model ``pre`` into ``dst``; calibration ranges are kept in ``cache`` (one file per
    calibration method) and reused by the next call; ``exclude`` layers stay fp32, ``only`` (if given) alone are
    quantised."""
    # onnxruntime's quantiser loads in seconds: only when a model is quantised
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    with _printed_to_log():
        quantize_static(pre, dst, _Reader(name, calibration, settings['calibration_batch']),
                        quant_format=QuantFormat.QDQ, per_channel=settings['per_channel'],
                        activation_type=getattr(QuantType, settings['activation_type']),
                        weight_type=getattr(QuantType, settings['weight_type']),
                        calibrate_method=getattr(CalibrationMethod, settings['calibrate_method']),
                        reduce_range=settings['reduce_range'], nodes_to_exclude=list(exclude) or None,
                        nodes_to_quantize=list(only) if only is not None else None, calibration_cache_path=cache)


def _compare(fp32: OnnxClassifier, int8: OnnxClassifier, x: np.ndarray, y: np.ndarray) -> Dict[str, float]:
    a, b = fp32.logits(x).argmax(1), int8.logits(x).argmax(1)
    return {'agreement': float((a == b).mean()), 'fp32_accuracy': float((a == y).mean()),
            'int8_accuracy': float((b == y).mean())}


def _problems(measured: Dict[str, float], min_agreement: float, max_accuracy_drop: float) -> List[str]:
    problems = []
    if not measured['agreement'] >= min_agreement:
        problems.append(f'argmax agreement {measured["agreement"]:.4f} < {min_agreement:g}')
    drop = measured['fp32_accuracy'] - measured['int8_accuracy']
    if not drop <= max_accuracy_drop:
        problems.append(f'clean accuracy fell by {drop:.4f} ({measured["fp32_accuracy"]:.4f} -> '
                        f'{measured["int8_accuracy"]:.4f}) > {max_accuracy_drop:g}')
    return problems


def _check(measured: Dict[str, float], min_agreement: float, max_accuracy_drop: float) -> None:
    problems = _problems(measured, min_agreement, max_accuracy_drop)
    if problems:
        raise QuantizationError('int8 model refused, nothing written: ' + '; '.join(problems), measured)


@dataclass
class _Search:
    """The state of one quantisation: the pre-processed model, the gate, the attempts so far."""

    pre: str
    tmp: str
    folder: str
    name: str
    calibration: np.ndarray
    settings: Dict
    fp32: OnnxClassifier
    x: np.ndarray
    y: np.ndarray
    gate: tuple
    threads: int
    attempts: List[Dict] = field(default_factory=list)

    def run(self, method: str, exclude: Sequence[str] = (), only: Optional[Sequence[str]] = None) -> Dict:
        """Quantise with ``method`` (into the output file unless ``only`` is given) and measure it against fp32."""
        dst = self.tmp if only is None else os.path.join(self.folder, 'probe.onnx')
        _quantize(self.pre, dst, self.name, self.calibration, {**self.settings, 'calibrate_method': method},
                  os.path.join(self.folder, f'{method}.calibration.json'), exclude, only)
        measured = _compare(self.fp32, OnnxClassifier(dst, threads=self.threads), self.x, self.y)
        if only is None:
            self.attempts.append({'calibrate_method': method, 'fp32_layers': list(exclude), **measured,
                                  'passed': not _problems(measured, *self.gate)})
        return measured

    def passed(self) -> bool:
        return bool(self.attempts) and bool(self.attempts[-1]['passed'])


def _fallback(search: _Search, max_fp32_layers: Optional[int]) -> Dict[str, object]:
    """After the first attempt failed: the other calibration methods, then the most sensitive layers in fp32, one
    more at a time. Returns ``{'fp32_layers', 'sensitivity'}`` of the attempt that passed; raises otherwise."""
    for method in CALIBRATION_METHODS:
        if search.passed():
            return {'fp32_layers': {}, 'sensitivity': {}}
        if method not in {a['calibrate_method'] for a in search.attempts}:
            search.run(method)
    if search.passed():
        return {'fp32_layers': {}, 'sensitivity': {}}
    best = max(search.attempts, key=lambda a: (a['agreement'], a['int8_accuracy']))
    method, nodes = best['calibrate_method'], quantizable_nodes(search.pre)
    sensitivity = {n: search.run(method, only=[n])['agreement'] for n in nodes}
    order = sorted(nodes, key=lambda n: sensitivity[n])
    cap = len(nodes) // 2 if max_fp32_layers is None else min(max_fp32_layers, len(nodes))
    for k in range(1, cap + 1):
        measured = search.run(method, exclude=order[:k])
        if search.passed():
            why = {n: (f'most sensitive {i + 1} of {len(nodes)}: quantised alone it agrees {sensitivity[n]:.4f} with '
                       f'fp32; the whole model agreed at best {best["agreement"]:.4f} ({method} calibration)')
                   for i, n in enumerate(order[:k])}
            return {'fp32_layers': why, 'sensitivity': sensitivity}
    tried = '; '.join(f'{a["calibrate_method"]} with {len(a["fp32_layers"])} fp32 layers: agreement '
                      f'{a["agreement"]:.4f}' for a in search.attempts)
    raise QuantizationError(f'int8 model refused, nothing written: no attempt passed the gate with at most {cap} of '
                            f'{len(nodes)} layers in fp32 ({tried}); last: '
                            + '; '.join(_problems(measured, *search.gate)), measured)


def quantize_int8(onnx_path: str, out_path: str, calibration_inputs: np.ndarray, validation_inputs: np.ndarray,
                  validation_labels: np.ndarray, min_agreement: float = 0.99, max_accuracy_drop: float = 0.01,
                  per_channel: bool = True, calibrate_method: str = 'MinMax', activation_type: str = 'QUInt8',
                  weight_type: str = 'QInt8', latency_batches: Sequence[int] = (1, 64), threads: int = 1,
                  min_calibration: int = MIN_CALIBRATION, target_cpu: str = 'auto', fallback: bool = True,
                  max_fp32_layers: Optional[int] = None, keep_slower: bool = False) -> QuantizationResult:
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
    calibrate_method
        The calibration tried first (:data:`CALIBRATION_METHODS`).
    latency_batches
        Batch sizes at which fp32 and int8 latency are measured side by side (``()``: none), with ``threads``.
    target_cpu
        ``'auto'`` (this CPU's kind), ``'vnni'`` or ``'no-vnni'``: the CPU kind whose onnxruntime int8 kernels
        the model is quantised for (:mod:`nni_bap.export.cpu`). ``'no-vnni'`` (7-bit weights) gives the same results on
        every x86 CPU: choose it for a model that will run on another CPU than this one.
    fallback
        When the whole model fails the gate, try the other calibration methods, then keep the most sensitive
        layers in fp32 (at most ``max_fp32_layers``, default half of them) until it passes.
    keep_slower
        Write the int8 model even when it is slower than fp32 at every batch size of ``latency_batches``;
        otherwise such a model is not written and the result says so in ``skipped``.

    Raises
    ------
    QuantizationError
        Too few calibration inputs, or no attempt passes the gate; ``out_path`` is then not written.
    """
    x_cal = np.ascontiguousarray(calibration_inputs, dtype=np.float32)
    if len(x_cal) < min_calibration:
        raise QuantizationError(f'{len(x_cal)} calibration inputs given, at least {min_calibration} needed')
    if calibrate_method not in CALIBRATION_METHODS:
        raise ConfigError(f'calibrate_method must be one of {", ".join(CALIBRATION_METHODS)}, got {calibrate_method!r}')
    settings = {'format': 'QDQ', 'per_channel': bool(per_channel), 'calibrate_method': calibrate_method,
                'activation_type': activation_type, 'weight_type': weight_type, 'calibration_batch': 64,
                **int8_settings(target_cpu)}
    fp32 = OnnxClassifier(onnx_path, threads=threads)
    x_val, y_val = fp32._check(validation_inputs), np.asarray(validation_labels)
    try:
        with atomic_path(out_path) as tmp, tempfile.TemporaryDirectory(prefix='bap-int8-') as folder:
            search = _Search(_preprocess(onnx_path, folder), tmp, folder, fp32.input_name, x_cal, settings, fp32,
                             x_val, y_val, (min_agreement, max_accuracy_drop), threads)
            measured = search.run(calibrate_method)
            found = _fallback(search, max_fp32_layers) if fallback else {'fp32_layers': {}, 'sensitivity': {}}
            measured = {k: search.attempts[-1][k] for k in ('agreement', 'fp32_accuracy', 'int8_accuracy')}
            _check(measured, min_agreement, max_accuracy_drop)
            settings['calibrate_method'] = search.attempts[-1]['calibrate_method']
            latency = int8_latency(onnx_path, tmp, latency_batches, threads, x_val) if latency_batches else {}
            _skip_slower(latency, keep_slower)
            write_metadata(tmp, {**read_metadata(onnx_path), 'precision': 'int8', 'quantization': settings,
                                 'calibration_inputs': len(x_cal), 'int8_validation': measured,
                                 'fp32_layers': sorted(found['fp32_layers'])}, replace=True)
    except _Slower as slow:
        return _result('', onnx_path, measured, len(x_cal), len(x_val), settings, search, found, slow.latency,
                       str(slow))
    result = _result(str(out_path), onnx_path, measured, len(x_cal), len(x_val), settings, search, found, latency)
    _logger.info('int8 model %s: agreement %.4f, accuracy %.4f -> %.4f, %d -> %d bytes, %d layers in fp32', out_path,
                 result.agreement, result.fp32_accuracy, result.int8_accuracy, result.fp32_bytes, result.int8_bytes,
                 len(result.fp32_layers))
    return result


class _Slower(Exception):
    """The int8 model passed the gate but runs slower than fp32 at every batch size measured."""

    def __init__(self, latency: Dict[str, Dict[str, float]]):
        self.latency = latency
        super().__init__('int8 skipped: slower than fp32 on this CPU (' + ', '.join(
            f'{b}: int8 {v["int8"]:.3f} ms vs fp32 {v["fp32"]:.3f} ms' for b, v in latency.items()) + ')')


def _skip_slower(latency: Dict[str, Dict[str, float]], keep_slower: bool) -> None:
    """Raise :class:`_Slower` when int8 is slower than fp32 by more than :data:`SLOWER_MARGIN` at every batch size."""
    if latency and not keep_slower and all(v['int8'] > v['fp32'] * (1 + SLOWER_MARGIN) for v in latency.values()):
        raise _Slower(latency)


def _result(path, onnx_path, measured, n_cal, n_val, settings, search, found, latency, skipped=''):
    return QuantizationResult(path, str(onnx_path), measured['agreement'], measured['fp32_accuracy'],
                              measured['int8_accuracy'], os.path.getsize(onnx_path),
                              os.path.getsize(path) if path else 0, n_cal, n_val, settings, latency,
                              found['fp32_layers'], list(search.attempts), found['sensitivity'], skipped)


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
