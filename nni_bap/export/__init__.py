"""Exporter: NNI ModelSpeedup -> verified ONNX -> onnxruntime evaluation.

Submodules are imported lazily so that :mod:`nni_bap.export.runtime` works on a device with
only numpy and onnxruntime installed.
"""
from __future__ import annotations

import importlib

__all__ = ['CorruptModelError', 'ExportError', 'ExportResult', 'InputShapeError', 'InputValueError', 'OnnxClassifier',
           'OnnxParityError', 'QuantizationError', 'QuantizationResult', 'SpeedupParityError', 'check_onnx',
           'craft_transfer_inputs', 'export_onnx', 'int8_latency', 'onnx_efficiency', 'onnx_precision', 'quantize_int8',
           'robustness_recheck', 'speed_up', 'validate_onnx']

_WHERE = {'CorruptModelError': 'errors', 'ExportError': 'errors', 'InputShapeError': 'errors', 'InputValueError': 'errors',
          'OnnxParityError': 'errors', 'SpeedupParityError': 'errors', 'ExportResult': 'onnx_export',
          'check_onnx': 'onnx_export', 'export_onnx': 'onnx_export', 'validate_onnx': 'onnx_export',
          'OnnxClassifier': 'runtime', 'onnx_efficiency': 'efficiency', 'speed_up': 'speedup',
          'QuantizationError': 'errors', 'QuantizationResult': 'quantize', 'craft_transfer_inputs': 'quantize',
          'int8_latency': 'quantize', 'onnx_precision': 'quantize', 'quantize_int8': 'quantize',
          'robustness_recheck': 'quantize'}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f'.{_WHERE[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
