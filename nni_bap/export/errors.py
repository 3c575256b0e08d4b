"""Typed errors of the exporter: each names what failed."""
from __future__ import annotations

from typing import Dict, List, Optional

__all__ = ['CorruptModelError', 'ExportError', 'InputShapeError', 'InputValueError', 'OnnxParityError',
           'QuantizationError', 'SpeedupParityError']


class ExportError(RuntimeError):
    """Base of every exporter error."""


class SpeedupParityError(ExportError):
    """The sped-up model's outputs differ from the masked model's."""


class OnnxParityError(ExportError):
    """onnxruntime disagrees with torch; :attr:`mismatches` lists every check that failed."""

    def __init__(self, mismatches: List[str]):
        self.mismatches = list(mismatches)
        super().__init__('ONNX validation failed:\n  - ' + '\n  - '.join(self.mismatches))


class InputShapeError(ExportError, ValueError):
    """An input does not have the shape the model was exported for."""


class InputValueError(ExportError, ValueError):
    """An input holds values a classifier cannot be scored on (NaN or infinity)."""


class CorruptModelError(ExportError):
    """An ``.onnx`` file cannot be loaded, does not pass the ONNX checker, or is not a classifier with one
    input and one ``(batch, classes)`` output."""


class QuantizationError(ExportError):
    """An int8 model was not written: too few calibration inputs, or it disagrees with the fp32 model.

    :attr:`measured` holds what was measured before the refusal (agreement, accuracies), if anything.
    """

    def __init__(self, message: str, measured: Optional[Dict[str, float]] = None):
        self.measured = dict(measured or {})
        super().__init__(message)
