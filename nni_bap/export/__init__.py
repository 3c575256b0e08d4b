"""Exporter: NNI ModelSpeedup -> verified ONNX -> onnxruntime evaluation.

Submodules are imported lazily so that :mod:`nni_bap.export.runtime` works on a device with
only numpy and onnxruntime installed.
"""
from __future__ import annotations

import importlib

__all__ = ['CorruptModelError', 'ExportError', 'ExportResult', 'InputShapeError', 'InputValueError', 'OnnxClassifier',
           'OnnxParityError', 'SpeedupParityError', 'check_onnx', 'export_onnx', 'onnx_efficiency', 'speed_up', 'validate_onnx']

_WHERE = {'CorruptModelError': 'errors', 'ExportError': 'errors', 'InputShapeError': 'errors', 'InputValueError': 'errors',
          'OnnxParityError': 'errors', 'SpeedupParityError': 'errors', 'ExportResult': 'onnx_export',
          'check_onnx': 'onnx_export', 'export_onnx': 'onnx_export', 'validate_onnx': 'onnx_export',
          'OnnxClassifier': 'runtime', 'onnx_efficiency': 'efficiency', 'speed_up': 'speedup'}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f'.{_WHERE[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
