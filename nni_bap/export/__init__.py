"""Exporter: NNI ModelSpeedup -> verified ONNX -> onnxruntime evaluation, and int8.

Names are imported lazily from the submodules, so that :mod:`nni_bap.export.runtime` works on a device with
only numpy and onnxruntime installed.
"""
from __future__ import annotations

from ..utils.lazy import lazy_attributes

__all__ = ['BatchNormDriftError', 'CorruptModelError', 'ExportError', 'ExportResult', 'InputShapeError',
           'InputValueError', 'MasksNeededError', 'OnnxClassifier', 'OnnxParityError', 'QuantizationError',
           'QuantizationResult', 'SpeedupParityError', 'check_onnx', 'craft_transfer_inputs', 'export_onnx',
           'int8_latency', 'onnx_efficiency', 'onnx_precision', 'quantize_int8', 'robustness_recheck', 'speed_up',
           'validate_onnx', 'zero_channel_masks']

__getattr__ = lazy_attributes(__name__, __all__, ('..errors', '.runtime', '.efficiency', '.onnx_export', '.quantize',
                                                  '.speedup'))
